"""What the layers share: argument checks and the scheduled-temperature base."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._validate import positive
from ..schedules import Schedule


def features(owner: str, x: object, n_features: int, name: str = "x") -> torch.Tensor:
    """``x`` if it is a floating-point tensor with ``n_features`` in its last
    dimension; ``name`` is what the layer calls it."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating-point torch.Tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() < 1 or x.shape[-1] != n_features:
        raise ValueError(f"{owner}: {name} must have n_features={n_features} in its last "
                         f"dimension, got shape {tuple(x.shape)}")
    return x


def tau_or_schedule(owner: str, tau: object) -> float | Schedule:
    if isinstance(tau, Schedule):
        return tau
    return positive(owner, "tau", tau, "a positive finite number or a Schedule")


def one_hot(index: torch.Tensor, like: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Zeros shaped like ``like`` (detached) with 1.0 at ``index`` (keepdim) along ``dim``."""
    return torch.zeros_like(like.detach()).scatter_(dim, index, 1.0)


def logit(p: float) -> float:
    """``log(p / (1 - p))``."""
    return math.log(p) - math.log1p(-p)


class Scheduled(nn.Module):
    """A layer whose temperature ``tau`` is a float or a schedule that
    :meth:`step` advances and ``state_dict`` saves."""

    tau: Any

    def temperature(self) -> Any:
        """The temperature used now."""
        return self.tau.tau if isinstance(self.tau, Schedule) else self.tau

    def step(self, n: int = 1) -> None:
        """Advances the temperature schedule (no-op for a fixed temperature)."""
        if isinstance(self.tau, Schedule):
            self.tau.step(n)

    def get_extra_state(self) -> dict[str, Any]:
        return {"schedule": self.tau.state_dict()} if isinstance(self.tau, Schedule) else {}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if isinstance(self.tau, Schedule) and "schedule" in state:
            self.tau.load_state_dict(state["schedule"])

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return features(type(self).__name__, x, self.n_features)
