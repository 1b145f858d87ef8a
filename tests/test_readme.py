"""The README's Python examples run as written (in the source tree and
against the installed wheel: `make test-wheel` copies the README beside the
tests). The documentation's examples are checked by tests/test_docs.py."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 1  # the ten lines


@pytest.mark.parametrize("block", range(len(BLOCKS)))
def test_readme_example_runs(block, tmp_path):
    """Each block in a fresh interpreter, in an empty folder (what it writes
    stays there); a failing block fails with its own traceback."""
    r = subprocess.run([sys.executable, "-c", BLOCKS[block]], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"README block {block}:\n{BLOCKS[block]}\n{r.stderr[-3000:]}"
