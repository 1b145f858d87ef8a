"""The type stub lists exactly the functions the compiled module exports."""

import ast
from pathlib import Path

import gumbelrs
from gumbelrs import _core


def test_stub_matches_the_compiled_module():
    stub = Path(gumbelrs.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text())
    declared = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    exported = {n for n in dir(_core) if not n.startswith("_")}
    assert declared == exported
