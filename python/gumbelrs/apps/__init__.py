"""End-to-end applications built on the public API. Each module has a
``Config`` dataclass (``Config.quick()`` for a short run) and
``run(config, out, show, checkpoint) -> AppResult``; they need the ``apps``
extra (``pip install 'gumbelrs[apps]'``).

``run``'s arguments: ``config``, the settings (``None``: the defaults, the
documented full run); ``out``, the folder its figures are written to;
``show``, progress bars on stderr; ``checkpoint``, a file where each finished
unit of work is saved and from which a new run with the same ``config``
resumes (``None``: none). A ``Config`` with a bad field raises ``ValueError``
naming the application and the field."""

from ._common import AppResult

#: The applications, by the name the command line uses.
APPS = ("vae", "dna", "textgan", "kmeans", "dropout", "feature_selection", "nas", "sorting",
        "trees", "paths")

__all__ = ["APPS", "AppResult"]
