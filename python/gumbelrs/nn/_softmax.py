"""The Gumbel-Softmax layer."""

from __future__ import annotations

from typing import Any

import torch

from .. import _validate, estimators
from .._generator import Generator
from ..schedules import LearnableTemperature, Schedule
from ._checks import Scheduled, one_hot

_EVAL_MODES = ("argmax", "sample")


class GumbelSoftmax(Scheduled):
    """A Gumbel-Softmax layer: ``estimators.sample(logits, method, tau, dim)``.

    ``tau`` is a float, a :class:`gumbelrs.schedules.Schedule` (advance it with
    :meth:`step`, its position is saved in ``state_dict``) or a
    :class:`gumbelrs.schedules.LearnableTemperature` (a submodule: its parameter
    is trained with the rest). ``method`` is any of
    :data:`gumbelrs.estimators.METHODS`; ``options`` go to the estimator.

    In eval mode with ``eval_mode="argmax"`` (default) the layer is
    deterministic: the one-hot of ``argmax(logits)`` (``softmax(logits / tau)``
    for ``method="soft"``); ``eval_mode="sample"`` keeps sampling.

    ``generator``: the :class:`~gumbelrs.Generator` of its noise (``None``: torch's
    default generator).
    """

    def __init__(self, tau: float | Schedule | LearnableTemperature = 1.0, method: str = "st",
                 dim: int = -1, generator: Generator | None = None, eval_mode: str = "argmax",
                 **options: Any) -> None:
        super().__init__()
        if method not in estimators.METHODS:
            raise ValueError(
                f"GumbelSoftmax: method must be one of {estimators.METHODS}, got {method!r}"
            )
        if eval_mode not in _EVAL_MODES:
            raise ValueError(f"GumbelSoftmax: eval_mode must be one of {_EVAL_MODES}, "
                             f"got {eval_mode!r}")
        if not isinstance(tau, (Schedule, LearnableTemperature)):
            tau = _validate.positive("GumbelSoftmax", "tau", tau, "a positive finite number, a "
                                     "Schedule or a LearnableTemperature")
        self.tau = tau
        self.method = method
        self.dim = dim
        self.generator = generator
        self.eval_mode = eval_mode
        self.options = options

    def temperature(self) -> float | torch.Tensor:
        """The temperature used now (a tensor when learned)."""
        if isinstance(self.tau, LearnableTemperature):
            return self.tau()
        return super().temperature()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        tau = self.temperature()
        if self.training or self.eval_mode == "sample":
            return estimators.sample(logits, self.method, tau, self.dim, self.generator,
                                     **self.options)
        if self.method == "soft":
            return torch.softmax(logits / tau, self.dim)
        index = logits.argmax(self.dim, keepdim=True)
        return one_hot(index, logits, self.dim)

    def extra_repr(self) -> str:
        return f"method={self.method!r}, tau={self.tau!r}, dim={self.dim}"
