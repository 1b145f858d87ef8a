"""What the applications share: their result type, progress bars, plots,
tables and the optional dependencies of the ``apps`` extra."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import hashlib
import html
import importlib
import inspect
import math
import os
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

import gumbelrs
from gumbelrs import _validate

from . import _dist


def require(module: str, app: str) -> Any:
    """Imports ``module`` (an ``apps`` extra) or says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"gumbelrs.apps.{app} needs {module.split('.')[0]}: pip install 'gumbelrs[apps]'"
        ) from e


@dataclasses.dataclass
class Table:
    """A results table that renders as Markdown or HTML (floats: 3 decimals)."""

    header: Sequence[str]
    rows: list[Sequence[Any]]

    @staticmethod
    def _cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(self._cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(self._cell(v))}</td>" for v in row)
                       + "</tr>" for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclasses.dataclass
class AppResult:
    """What an application's ``run`` returns.

    ``name``: the application's name (one of :data:`gumbelrs.apps.APPS`);
    ``metrics``: JSON-ready numbers; ``tables``: title -> :class:`Table`;
    ``figures``: caption -> path of a PNG written under the output folder;
    ``heading`` and ``text``: the title and a paragraph for the report.
    """

    name: str
    metrics: dict[str, Any]
    tables: dict[str, Table] = dataclasses.field(default_factory=dict)
    figures: dict[str, Path] = dataclasses.field(default_factory=dict)
    heading: str = ""
    text: str = ""


def progress(iterable: Iterable, total: int | None, desc: str, enabled: bool) -> Iterable:
    """``iterable`` with a progress bar on stderr when ``enabled``; in a job of
    several ranks only on rank 0 and not within the units of a map (the job's
    bar, see :meth:`Checkpoint.map`, counts those)."""
    rank, world = _dist.rank_world()
    if not enabled or rank or (world > 1 and _dist.mapping):
        return iterable
    tqdm = require("tqdm", "_common").tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def seeded(seed: int) -> gumbelrs.Generator:
    """Seeds torch (initialisations, data splits) and returns a gumbelrs
    generator for the relaxations: a run is reproducible from ``seed``."""
    torch.manual_seed(seed)
    return gumbelrs.Generator(seed)


def pyplot(app: str):
    """matplotlib's pyplot with the file-only Agg backend."""
    matplotlib = require("matplotlib", app)
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def save_figure(fig, out: Path | None, filename: str) -> Path | None:
    """Writes ``fig`` as ``out/filename`` (nothing when ``out`` is None)."""
    plt = importlib.import_module("matplotlib.pyplot")
    path = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        path = out / filename
        fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    m = sum(values) / n
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, s


def seed_cell(runs: Sequence[dict], *keys: str, digits: int = 3) -> str:
    """A table cell ``mean ± sd`` over the runs (seeds) of ``run[key][key2]...``;
    the mean alone for one run."""
    values = []
    for run in runs:
        for key in keys:
            run = run[key]
        values.append(run)
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(runs) > 1 else f"{m:.{digits}f}"


def seed_summary(runs: Sequence[dict]) -> dict:
    """Mean and sd over the runs (seeds) of every float a run reports (as ``key``
    and ``key_std``), and the same within each of its dict values."""
    out: dict = {}
    for key, v in runs[0].items():
        if isinstance(v, float):
            out[key], out[f"{key}_std"] = mean_std([r[key] for r in runs])
        elif isinstance(v, dict):
            out[key] = seed_summary([r[key] for r in runs])
    return out


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or was written with another configuration."""


#: A unit of work: its key in the checkpoint, a module-level function and its
#: (picklable) arguments; the result must be picklable too.
Unit = tuple[str, Callable[..., Any], tuple]


class Checkpoint:
    """Finished units of work (a seed, a split, ...) of one run, saved after each
    so that a run that stops resumes where it was.

    ``path=None`` keeps nothing. A file written with another ``config`` is an
    error, not a silent mix of two runs.

    In a ``torch.distributed`` job (see :meth:`map`) every rank saves the units
    it computed as one file each in the folder ``PATH.units/`` (a temporary file
    renamed into place, so a killed rank leaves whole files or none, and ranks
    never write the same file); rank 0 alone writes ``PATH``, which takes them
    in at the end of each map. The temporary files a killed rank left are
    deleted when the run resumes.
    """

    def __init__(self, path: Path | None, config: Any) -> None:
        self.path = path
        self.config = dataclasses.asdict(config)
        self.done: dict[str, Any] = {}
        self._maps = 0
        if path is None:
            return
        if path.exists():
            self.done = self._read(path)["done"]
        for file in sorted(self.units.glob("*.pt")) if self.units.is_dir() else ():
            saved = self._read(file)
            self.done.setdefault(saved["key"], saved["value"])
        if _dist.rank_world()[0] == 0:
            # Half-written files of a killed process. No rank of this run writes one before
            # rank 0 has passed here: the others wait for its broadcast in map().
            for tmp in [path.with_suffix(".tmp"), *self.units.glob(".*.tmp")]:
                tmp.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # absent, or holds units not yet merged
                self.units.rmdir()

    @property
    def units(self) -> Path:
        """The folder of the units saved one per file (by the ranks of a job)."""
        assert self.path is not None
        return self.path.with_name(self.path.name + ".units")

    def _read(self, path: Path) -> dict:
        try:
            saved = torch.load(path, weights_only=False)
            config = saved["config"]
        except Exception as e:  # any unpickling failure means the same thing here
            raise CheckpointError(
                f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); delete it or "
                f"use another output folder") from e
        if config != self.config:
            raise CheckpointError(
                f"checkpoint {path} was written by a run with another configuration; "
                f"delete it or use another output folder (saved: {config})"
            )
        return saved

    def get(self, key: str) -> Any:
        return self.done.get(key)

    def unit(self, key: str, fn: Any, *args: Any) -> Any:
        """The saved result of unit ``key``, or ``fn(*args)`` computed and saved."""
        done = self.get(key)
        return self.put(key, fn(*args)) if done is None else done

    def put(self, key: str, value: Any) -> Any:
        self.done[key] = value
        self._save()
        return value

    def _save(self) -> None:
        """Writes the whole checkpoint to ``path`` (atomically), then deletes the
        unit files it now holds; only rank 0 writes."""
        if self.path is None or _dist.rank_world()[0] != 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"config": self.config, "done": self.done}, tmp)
        tmp.replace(self.path)
        if self.units.is_dir():
            for key in self.done:
                self._unit_file(key).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: units of a rank still running
                self.units.rmdir()

    def _unit_file(self, key: str) -> Path:
        return self.units / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.pt"

    def _save_unit(self, key: str, value: Any) -> None:
        if self.path is None:
            return
        self.units.mkdir(parents=True, exist_ok=True)
        file = self._unit_file(key)
        tmp = file.with_name(f".{file.stem}.{os.getpid()}.tmp")
        torch.save({"config": self.config, "key": key, "value": value}, tmp)
        tmp.replace(file)

    def map(self, units: Sequence[Unit], show: bool = False, desc: str = "units") -> list[Any]:
        """The results of ``units`` (``(key, fn, args)``: ``fn(*args)``), in order:
        saved ones read from the checkpoint, the others computed once each.

        In a ``torch.distributed`` job (``gumbelrs run APP --nproc N``, torchrun)
        the units not yet done in rank 0's checkpoint are dealt out in turn
        (the ``i``-th to rank ``i % world_size``), each rank saves what it
        computed, and every rank returns all the results. A unit draws only from
        generators seeded from its arguments, so its result is bitwise the same
        for any number of ranks. Rank 0 shows one progress bar for the job
        (when ``show``); the log ``gumbelrs.apps`` says which rank computed
        which unit."""
        keys = [key for key, _, _ in units]
        if len(set(keys)) != len(keys):
            raise ValueError(f"Checkpoint.map: unit keys must be distinct, got {keys}")
        rank, world = _dist.rank_world()
        self._maps += 1
        pending = [i for i, key in enumerate(keys) if key not in self.done]
        if world > 1:
            pending = _dist.broadcast(pending)  # rank 0's checkpoint decides what is left
        bar = _dist.JobBar(len(units), len(units) - len(pending), desc, show,
                           f"map{self._maps}")
        computed: dict[str, Any] = {}
        _dist.mapping = True
        try:
            for i in pending[rank::world]:
                key, fn, args = units[i]
                t0 = time.perf_counter()
                value = fn(*args)
                if world == 1:
                    self.put(key, value)
                else:
                    self._save_unit(key, value)
                    computed[key] = value
                _dist.log.info("rank %d computed %s in %.2f s", rank, key,
                               time.perf_counter() - t0)
                bar.finished()
        finally:
            _dist.mapping = False
            bar.close()
        if world > 1:
            if rank == 0:
                left = set(pending)
                computed.update((k, self.done[k]) for i, k in enumerate(keys) if i not in left)
            for part in _dist.all_gather(computed):
                self.done.update(part)
            if rank == 0:
                self._save()
        return [self.done[key] for key in keys]


def check_config(app: str, config: Any, *, counts: Sequence[str] = (),
                 maybe_zero: Sequence[str] = (), positive: Sequence[str] = (),
                 non_negative: Sequence[str] = (), fractions: Sequence[str] = (),
                 choices: dict[str, Sequence[str]] | None = None) -> None:
    """Rejects a configuration field out of its range with a ``ValueError`` that
    names the application, the field, the value and the range: ``counts`` are
    ints >= 1 (or non-empty tuples of them; ``maybe_zero``: >= 0), ``positive`` finite numbers > 0,
    ``non_negative`` finite numbers >= 0, ``fractions`` in (0, 1), ``choices`` a value (or a
    non-empty tuple of values) from a list; the ``seed`` of every Config (in ``maybe_zero``) is
    below 2**31."""
    for names, lo in ((counts, 1), (maybe_zero, 0)):
        for name in names:
            v = getattr(config, name)
            if not isinstance(v, tuple):
                _validate.count(app, name, v, lo)
            elif not v or not all(_validate.is_int(x) and x >= lo for x in v):
                raise ValueError(_validate.message(app, name,
                                                   f"a non-empty tuple of ints >= {lo}", v))
    # Runs hand seed + unit index (a seed, a split) to scikit-learn, whose random_state must be
    # below 2**32: 2**31 leaves room for 2**31 units.
    if config.seed >= 2**31:
        raise ValueError(_validate.message(app, "seed", "an int in [0, 2**31)", config.seed))
    for check, names in ((_validate.positive, positive), (_validate.non_negative, non_negative),
                         (_validate.fraction, fractions)):
        for name in names:
            check(app, name, getattr(config, name))
    for name, allowed in (choices or {}).items():
        v = getattr(config, name)
        values = v if isinstance(v, tuple) else (v,)
        if not values or any(x not in allowed for x in values):
            raise ValueError(f"{app}: {name} must be {'some' if isinstance(v, tuple) else 'one'}"
                             f" of {tuple(allowed)}, got {v!r}")


@functools.cache
def field_docs(config_cls: type) -> dict[str, str]:
    """The description of each field of an application's ``Config``, by name
    (in field order): the ``#:`` comment lines right above the field in the
    source, joined into one paragraph. These are the attribute doc comments
    that Sphinx's autodoc renders in the API reference, so the reference and
    ``gumbelrs run APP --help`` read the same text. A
    field without such a comment (or a class whose source is not installed)
    has ``""``."""
    names = [f.name for f in dataclasses.fields(config_cls)]
    try:
        lines = textwrap.dedent(inspect.getsource(config_cls)).splitlines()
    except (OSError, TypeError):
        return dict.fromkeys(names, "")
    docs = {}
    for node in ast.iter_child_nodes(ast.parse("\n".join(lines)).body[0]):  # the class body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above = []
            for line in reversed(lines[:node.lineno - 1]):
                if not line.strip().startswith("#:"):
                    break
                above.append(line.strip()[2:].strip())
            docs[node.target.id] = " ".join(reversed(above))
    return {name: docs.get(name, "") for name in names}


def exponential_anneal(start: float, end: float, steps: int):
    """A temperature schedule from ``start`` at step 0 to ``end`` at step
    ``steps - 1``, geometric in between (then ``end``); ``start == end`` is a
    constant temperature."""
    if start == end:
        return gumbelrs.schedules.Constant(start)
    rate = math.log(start / end) / max(1, steps - 1)
    return gumbelrs.schedules.ExponentialDecay(start, rate, end)


def kl_to_uniform(log_probs: torch.Tensor) -> torch.Tensor:
    """KL(q || uniform) of categorical latents ``(..., latents, classes)`` given
    normalised ``log q``, summed over the latents."""
    classes = log_probs.shape[-1]
    return (log_probs.exp() * (log_probs + math.log(classes))).sum((-2, -1))
