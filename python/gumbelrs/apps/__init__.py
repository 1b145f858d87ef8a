"""End-to-end applications built on the public API. Each module has a
``Config`` dataclass (``Config.quick()`` for a short run) and
``run(config, out, show) -> AppResult``; they need the ``apps`` extra
(``pip install 'gumbelrs[apps]'``)."""

from ._common import AppResult

#: The applications, by the name the command line uses.
APPS = ("vae", "dna", "textgan", "kmeans", "dropout", "feature_selection", "nas", "sorting",
        "trees", "paths")

__all__ = ["APPS", "AppResult"]
