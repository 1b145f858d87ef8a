"""Sphinx configuration of the gumbelrs documentation (``make docs``).

Sphinx, because its ``doctest`` builder runs the examples of the guides and of
the docstrings and compares their output, ``autodoc`` + ``napoleon`` build the
API reference from the docstrings, and MyST lets the guides stay Markdown
(the README's sections moved over as they were). Nothing is fetched while
building: no intersphinx, no remote images, the built-in theme.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "gumbelrs"
author = "The gumbelrs developers"
copyright = "the gumbelrs developers, MIT licence"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "metrics",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "results"]

# Markdown: `:::` fences for directives, anchors for the headings of levels 1-3
# (in-page links such as `[the table](#bias-and-variance)` are checked).
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autoclass_content = "both"  # a class's docstring, then its __init__'s (the arguments)
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# The examples run in a fresh namespace per page, after this.
doctest_global_setup = """
import torch
import gumbelrs
"""
doctest_test_doctest_blocks = "default"

html_theme = "alabaster"
html_title = "gumbelrs"
html_theme_options = {
    "description": "Differentiable discrete choices for PyTorch",
    "page_width": "1180px",
}
html_static_path = []
html_show_sourcelink = False


def _drop_inherited_init(app, what, name, obj, options, lines):
    """A class without an ``__init__`` docstring of its own would show
    ``torch.nn.Module.__init__``'s (``autoclass_content = "both"``)."""
    if what == "class":
        import torch

        inherited = torch.nn.Module.__init__.__doc__.strip()
        lines[:] = [line for line in lines if line.strip() != inherited]


def setup(app):
    app.connect("autodoc-process-docstring", _drop_inherited_init)
