"""The type stub describes the compiled module: the functions it exports,
their parameters (mypy's stubtest, where mypy is installed; ``make lint``
runs it too), and the names each option takes (its ``Literal`` type)."""

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gumbelrs
from gumbelrs import _core
from gumbelrs._protocol import OutputMode

STUB = Path(gumbelrs.__file__).with_name("_core.pyi")


def test_stub_matches_the_compiled_module():
    tree = ast.parse(STUB.read_text())
    declared = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    exported = {n for n in dir(_core) if not n.startswith("_")}
    assert declared == exported


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_stubtest_finds_the_stub_consistent():
    run = subprocess.run([sys.executable, "-m", "mypy.stubtest", "gumbelrs._core"],
                         capture_output=True, text=True, cwd=STUB.parent.parent)
    assert run.returncode == 0, run.stdout + run.stderr


def _literals() -> dict[str, list[str]]:
    """The stub's ``Literal`` aliases, by name."""
    out = {}
    for node in ast.parse(STUB.read_text()).body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript)
                and getattr(node.value.value, "id", None) == "Literal"):
            elts = node.value.slice.elts
            out[node.targets[0].id] = [e.value for e in elts]
    return out


_x = np.zeros((2, 3), dtype=np.float32)
#: A call that takes each option, given a name for it.
OPTIONS = {
    "_OutputMode": lambda v: _core.gumbel_softmax_forward(
        _x, (2, 3, 1), 1.0, (0, 0), v, np.empty_like(_x),
        np.empty_like(_x) if v == "one_hot_with_soft" else None),
    "_NoiseKind": lambda v: _core.noise(v, np.empty_like(_x), (0, 0)),
    "_MathName": lambda v: _core.math(v, _x, np.empty_like(_x)),
    "_SimdLevel": lambda v: _core.set_max_simd_level(v),
}


@pytest.mark.parametrize("alias", sorted(OPTIONS))
def test_each_option_takes_exactly_the_names_of_its_literal(alias):
    names = _literals()[alias]
    with pytest.raises(ValueError, match="must be one of ") as e:
        OPTIONS[alias]("no such name")
    assert re.findall(r'"(\w+)"', str(e.value).split(", got")[0]) == names
    level = _core.simd_level()
    try:
        for name in names:
            OPTIONS[alias](name)
    finally:
        _core.set_max_simd_level(level)


def test_output_modes_are_the_protocols():
    assert _literals()["_OutputMode"] == [m.value for m in OutputMode]
    assert set(_literals()) == set(OPTIONS)
