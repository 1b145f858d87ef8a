"""Input checks shared by the layers."""

from __future__ import annotations

import torch


def features(owner: str, x: object, n_features: int) -> torch.Tensor:
    """``x`` if it is a floating-point tensor with ``n_features`` in its last dimension."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{owner}: x must be a floating-point torch.Tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() < 1 or x.shape[-1] != n_features:
        raise ValueError(f"{owner}: x must have n_features={n_features} in its last dimension, "
                         f"got shape {tuple(x.shape)}")
    return x
