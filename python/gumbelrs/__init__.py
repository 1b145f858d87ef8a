"""gumbelrs: fast, reproducible Gumbel-Softmax / Concrete relaxations for PyTorch.

>>> import torch, gumbelrs
>>> g = gumbelrs.Generator(seed=0)
>>> y = gumbelrs.gumbel_softmax(torch.randn(4, 10), tau=0.5, hard=True, generator=g)
"""

from importlib import metadata as _metadata

from . import _validate, cuda, distributions, estimators, nn, schedules, structured
from ._core import get_num_threads as _get_num_threads
from ._core import set_num_threads as _set_num_threads
from ._generator import Generator, checkpoint_context, manual_seed
from .functional import (
    gumbel_given_argmax,
    gumbel_noise,
    gumbel_softmax,
    gumbel_topk,
    hard_concrete,
    relaxed_bernoulli,
    sample_categorical,
)

#: The installed distribution's version (one source: ``Cargo.toml``, which maturin reads).
__version__ = _metadata.version("gumbelrs")

__all__ = [
    "Generator",
    "checkpoint_context",
    "cuda",
    "distributions",
    "estimators",
    "get_num_threads",
    "gumbel_given_argmax",
    "gumbel_noise",
    "gumbel_softmax",
    "gumbel_topk",
    "hard_concrete",
    "manual_seed",
    "nn",
    "relaxed_bernoulli",
    "sample_categorical",
    "schedules",
    "set_num_threads",
    "structured",
]


def set_num_threads(n: int) -> None:
    """Sets the number of threads the CPU kernels use (default: torch's
    ``get_num_threads()`` when gumbelrs is imported).

    Results are bitwise identical for any number of threads.

    ``n``: a positive int.

    Raises:
        ValueError: ``n`` below 1.
        TypeError: ``n`` not an int.
    """
    _set_num_threads(_validate.count("set_num_threads", "n", n, 1))


def get_num_threads() -> int:
    """The number of threads the CPU kernels use."""
    return _get_num_threads()
