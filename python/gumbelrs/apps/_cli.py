"""``gumbelrs run APP``: one application at full size, configured from a JSON
file and ``--key value`` options, with a checkpoint to resume from."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import shutil
import sys
import time
import typing
from pathlib import Path
from typing import Any

from .. import _args
from . import APPS, _dist, _report
from ._common import CheckpointError, field_docs


class ConfigError(ValueError):
    """A configuration value that the application cannot take."""


def _convert(app: str, key: str, kind: Any, value: Any) -> Any:
    """``value`` (a string from the command line, or a JSON value) as ``kind``."""
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        parts = value.split(",") if isinstance(value, str) else value
        if not isinstance(parts, (list, tuple)):
            raise ConfigError(f"gumbelrs run {app}: {key} expects a list, got {value!r}")
        return tuple(_convert(app, key, item, p) for p in parts)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind is int and not isinstance(value, bool):
        try:
            if isinstance(value, (str, int)):
                return int(value)
        except ValueError:
            pass
    elif kind is float and not isinstance(value, bool):
        try:
            if isinstance(value, (str, int, float)):
                return float(value)
        except ValueError:
            pass
    elif kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"gumbelrs run {app}: {key} expects {kind.__name__}, got {value!r}")


def make_config(app: str, config_cls: type, loaded: dict[str, Any], options: list[str]):
    """``config_cls`` from the defaults, then ``loaded`` (the object of a JSON
    file), then the ``--key value`` (or ``--key=value``) pairs of ``options``."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    values = dict(loaded)
    i = 0
    while i < len(options):
        opt = options[i]
        if not opt.startswith("--"):
            raise ConfigError(f"gumbelrs run {app}: expected --key value, got {opt!r}")
        key, eq, value = opt[2:].partition("=")
        if not eq:
            if i + 1 >= len(options):
                raise ConfigError(f"gumbelrs run {app}: --{key} needs a value")
            value = options[i + 1]
            i += 1
        values[key.replace("-", "_")] = value
        i += 1
    for key, value in list(values.items()):
        if key not in names:
            raise ConfigError(f"gumbelrs run {app}: unknown option {key!r}; options: "
                              f"{', '.join(names)}")
        values[key] = _convert(app, key, hints[key], value)
    try:
        return config_cls(**values)
    except ValueError as e:  # the Config's own range checks, which name the app
        raise ConfigError(f"gumbelrs run {e}") from e


def cli_value(value: Any) -> str:
    """``value`` as ``--key value`` writes it (a tuple: comma-separated)."""
    if isinstance(value, tuple):
        return ",".join(map(cli_value, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _metavar(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return f"{_metavar(typing.get_args(kind)[0])},..."
    return kind.__name__.upper()


def _fields_help(app: str, prog: str) -> str:
    """The fields of ``app``'s ``Config`` as a section of ``--help``: the
    option, its default and its description."""
    module = importlib.import_module(f"gumbelrs.apps.{app}")
    hints = typing.get_type_hints(module.Config)
    listing = argparse.ArgumentParser(prog=prog, usage=argparse.SUPPRESS, add_help=False)
    group = listing.add_argument_group(
        f"{app} options", f"The fields of gumbelrs.apps.{app}.Config (the defaults are the "
                          f"documented run).")
    defaults = module.Config()
    docs = field_docs(module.Config)
    for field in dataclasses.fields(module.Config):
        text = f"{docs[field.name]} (default: {cli_value(getattr(defaults, field.name))})"
        text = text.strip()
        group.add_argument(f"--{field.name}", metavar=_metavar(hints[field.name]),
                           help=text.replace("%", "%%"))
    return listing.format_help()


class _Help(argparse.Action):
    """``-h``/``--help``: the options and, after the app's name, the fields
    of its ``Config`` with their descriptions."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                         nargs=0, help="show this help (after APP: with the options that set "
                                       "APP's configuration) and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        text = parser.format_help()
        app = getattr(namespace, "app", None)
        if app in APPS:
            text += "\n" + _fields_help(app, parser.prog)
        print(text, end="")
        parser.exit()


def _log_to(folder: Path, rank: int) -> logging.Handler:
    """Sends the ``gumbelrs.apps`` log (which rank computed which unit) to
    ``folder/rank{rank}.log``, appended to across restarts."""
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / f"rank{rank}.log")
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s pid {os.getpid()} restart {restart}: %(message)s"))
    _dist.log.addHandler(handler)
    _dist.log.setLevel(logging.INFO)
    return handler


def _fresh(checkpoint: Path) -> None:
    checkpoint.unlink(missing_ok=True)
    shutil.rmtree(checkpoint.with_name(checkpoint.name + ".units"), ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    launched = _dist.launched()
    rank = int(os.environ.get("RANK", "0")) if launched else 0
    parser = argparse.ArgumentParser(
        prog=f"gumbelrs run (rank {rank})" if launched else "gumbelrs run",
        description="Run one application at full size. Options after the app name set "
                    "fields of its Config (--steps 500, --datasets iris,wine); "
                    "gumbelrs run APP --help lists them with their meaning.",
        add_help=False)
    parser.add_argument("-h", "--help", action=_Help)
    parser.add_argument("app", choices=APPS)
    parser.add_argument("--config", help="JSON file of an object of Config fields")
    parser.add_argument("--out", type=_args.run_folder,
                        help="output folder (default: gumbelrs-runs/APP); the report goes to "
                             "OUT/report, the checkpoint to OUT/checkpoint.pt, the log of "
                             "each rank to OUT/logs")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore and replace an existing checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--show-config", action="store_true",
                        help="print the configuration (the JSON object that --config reads) "
                             "and exit")
    parser.add_argument("--nproc", type=_args.int_in(1, 1024),
                        help="run on N local worker processes (torch.distributed, gloo) "
                             "started by torch's elastic launcher; the cores are shared "
                             "between them")
    parser.add_argument("--max-restarts", type=_args.int_in(0, 1000), default=0,
                        help="with --nproc: restart the workers up to this many times when one "
                             "fails; they resume from the checkpoint (default: 0)")
    args, rest = parser.parse_known_args(argv)
    loaded = _args.default(parser, "--config", _args.json_object, args.config) \
        if args.config is not None else {}
    out = args.out or _args.default(parser, "--out", _args.run_folder,
                                    f"gumbelrs-runs/{args.app}")
    checkpoint = out / "checkpoint.pt"
    if args.nproc is not None and not args.show_config:
        if launched:
            parser.error("--nproc starts the workers from a shell; under torchrun, give "
                         "torchrun --nproc-per-node instead")
        if args.fresh:
            _fresh(checkpoint)
        worker = [args.app, "--out", str(out.absolute()), *rest]
        if args.config is not None:
            worker += ["--config", str(Path(args.config).absolute())]
        if args.no_progress:
            worker.append("--no-progress")
        return _dist.launch(args.nproc, args.max_restarts, worker)
    module = importlib.import_module(f"gumbelrs.apps.{args.app}")
    try:
        config = make_config(args.app, module.Config, loaded, rest)
    except ConfigError as e:
        parser.error(str(e).removeprefix("gumbelrs run "))
    if args.show_config:
        print(json.dumps(dataclasses.asdict(config), indent=2))
        return 0
    if launched:
        # Under torchrun a restarted group gets the same command: only its first start is fresh.
        if args.fresh and rank == 0 and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
            _fresh(checkpoint)
        _dist.join()
        if args.fresh:
            _dist.all_gather(None)  # the others start after rank 0 has deleted the checkpoint
    elif args.fresh:
        _fresh(checkpoint)
    try:
        return _run(parser, args, module, config, out, rank)
    finally:
        _dist.leave()


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, module: Any, config: Any,
         out: Path, rank: int) -> int:
    handler = _log_to(out / "logs", rank)
    _dist.log.info("rank %d of %d started", rank, _dist.rank_world()[1])
    try:
        status = _report_run(parser, args, module, config, out, rank)
        _dist.log.info("rank %d finished", rank)
        return status
    finally:
        _dist.log.removeHandler(handler)
        handler.close()


def _report_run(parser: argparse.ArgumentParser, args: argparse.Namespace, module: Any,
                config: Any, out: Path, rank: int) -> int:
    checkpoint = out / "checkpoint.pt"
    if rank:  # the other ranks compute their share of the units; rank 0 writes the report
        try:
            module.run(config, None, False, checkpoint)
        except CheckpointError as e:
            parser.error(f"{e}; or pass --fresh to start over")
        return 0
    if checkpoint.exists():
        print(f"resuming from {checkpoint}", file=sys.stderr)
    t0 = time.perf_counter()
    with _report.staged(out / "report") as folder:
        try:
            result = module.run(config, folder, not args.no_progress, checkpoint)
        except CheckpointError as e:
            parser.error(f"{e}; or pass --fresh to start over")
        except (ImportError, OSError) as e:  # a missing extra, an unwritable folder
            parser.error(str(e))
        result.metrics["seconds"] = time.perf_counter() - t0
        _report.write(folder, f"gumbelrs run {args.app}", f"Full-size run of gumbelrs.apps."
                      f"{args.app}; resume or rerun with the same command.", [result],
                      {"app": args.app, "checkpoint": str(checkpoint)})
    print(f"report: {out / 'report' / 'report.html'} (and report.md, metrics.json)",
          file=sys.stdout)
    return 0
