"""The argument types of the ``gumbelrs`` commands, one set for all of them.

Each is an argparse ``type=`` that checks one option's value as it is parsed,
so a bad value stops the command before any work, with status 2 and
``usage: ... error: argument --OPTION: expected ..., got ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._generator import _check_seed

_Error = argparse.ArgumentTypeError


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """The type of an int option in ``[lo, hi]`` (no upper bound when ``hi`` is None)."""
    expected = f"an int >= {lo}" if hi is None else f"an int in [{lo}, {hi}]"

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _Error(f"expected {expected}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise _Error(f"expected {expected}, got {text!r}")
        return value

    return convert


def seed(text: str) -> int:
    """A seed of :class:`gumbelrs.Generator`."""
    try:
        return _check_seed(int(text))
    except ValueError:
        raise _Error(f"expected an int in [0, 2**64), got {text!r}") from None


def shapes(text: str) -> list[tuple[int, ...]]:
    """Comma-separated tensor shapes such as ``4096x1024,8x16``."""
    out = []
    for shape in text.split(","):
        sizes = shape.split("x")
        if not all(s.isascii() and s.isdigit() and int(s) >= 1 for s in sizes):
            raise _Error(f"expected comma-separated shapes of sizes >= 1 such as "
                         f"4096x1024,8x16, got {text!r} ({shape!r} is not a shape)")
        out.append(tuple(int(s) for s in sizes))
    return out


def json_object(text: str) -> dict[str, Any]:
    """The JSON object in the file ``text``."""
    try:
        loaded = json.loads(Path(text).read_text(encoding="utf-8"))
    except OSError as e:
        raise _Error(f"expected a readable JSON file, got {text!r} ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise _Error(f"expected a UTF-8 JSON file, got {text!r} (byte {e.object[e.start]:#04x} "
                     f"at offset {e.start} is not UTF-8)") from None
    except json.JSONDecodeError as e:
        raise _Error(f"expected a JSON file, got {text!r} ({e})") from None
    if not isinstance(loaded, dict):
        raise _Error(f"expected a JSON object, got {text!r}, which holds a "
                     f"{type(loaded).__name__}")
    return loaded


def _check_report_folder(text: str, report: Path) -> None:
    """Checks that a report can be staged beside ``report`` (the report folder
    of option value ``text``) and then replace it."""
    from .apps import _report  # not at the top: `gumbelrs bench`, `estimators` need no apps

    report = report.absolute()
    existing = report
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise _Error(f"expected a folder, got {text!r} ({existing} is not a folder)")
    # The staging folder goes beside the report. Permission bits do not tell whether it can
    # be made (root passes them; /proc and /sys refuse new folders anyway): only making one does.
    beside = report.parent if existing == report else existing
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".gumbelrs-probe-", dir=beside))
    except OSError as e:
        raise _Error(f"expected a folder that can be written, got {text!r} (no folder can be "
                     f"made in {beside}: {e.strerror})") from None
    try:
        replaceable = _report.replaceable(report)
    except OSError as e:
        raise _Error(f"expected a folder that can be read, got {text!r} ({report}: "
                     f"{e.strerror})") from None
    if not replaceable:
        raise _Error(f"expected a new folder, an empty one or a previous report, got {text!r} "
                     f"({report} holds other files and no report.md, and the report replaces "
                     f"its folder whole)")


def report_folder(text: str) -> Path:
    """A folder that the report of ``gumbelrs demo`` can replace."""
    _check_report_folder(text, Path(text))
    return Path(text)


def run_folder(text: str) -> Path:
    """The folder of ``gumbelrs run``: its checkpoint and the report folder ``report``."""
    _check_report_folder(text, Path(text) / "report")
    return Path(text)


def default(parser: argparse.ArgumentParser, option: str, convert: Callable[[str], Any],
            text: str) -> Any:
    """``convert(text)`` for a default computed after parsing; a bad one (an
    unwritable working folder) is ``parser.error`` naming ``option``."""
    try:
        return convert(text)
    except _Error as e:
        parser.error(f"argument {option}: {e}")
