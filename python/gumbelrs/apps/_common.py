"""What the applications share: their result type, progress bars, plots,
tables and the optional dependencies of the ``apps`` extra."""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

import gumbelrs


def require(module: str, app: str) -> Any:
    """Imports ``module`` (an ``apps`` extra) or says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"gumbelrs.apps.{app} needs {module.split('.')[0]}: pip install 'gumbelrs[apps]'"
        ) from e


@dataclasses.dataclass
class AppResult:
    """What an application's ``run`` returns.

    ``metrics``: JSON-ready numbers; ``tables``: title -> Markdown table;
    ``figures``: caption -> path of a PNG written under the output folder.
    """

    name: str
    metrics: dict[str, Any]
    tables: dict[str, str] = dataclasses.field(default_factory=dict)
    figures: dict[str, Path] = dataclasses.field(default_factory=dict)


def progress(iterable: Iterable, total: int | None, desc: str, enabled: bool) -> Iterable:
    """``iterable`` with a progress bar on stderr when ``enabled``."""
    if not enabled:
        return iterable
    tqdm = require("tqdm", "progress").tqdm
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


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; floats with 3 decimals."""
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
