"""Instance-wise k-subset selection (L2X): a relaxed k-hot mask per example."""

from __future__ import annotations

import torch

from .. import _validate, structured
from .._generator import Generator
from ..schedules import Schedule
from ._checks import Scheduled, features, one_hot, tau_or_schedule


class SubsetSelector(Scheduled):
    """Selects ``k`` of ``n_features`` features for each example, as the
    sampler of L2X (Chen et al. 2018): ``forward(logits)`` turns per-example
    selection logits ``(*batch, n_features)`` (from an explainer network, or
    one ``nn.Parameter`` of shape ``(n_features,)`` for a selection shared by
    every example) into a mask of the same shape to multiply the features by::

        mask = selector(explainer(x))  # (B, n_features), sums to k per row
        y = predictor(x * mask)

    In training the mask is :func:`gumbelrs.structured.relaxed_topk` of the
    logits at temperature ``tau`` (``hard=True``: the exact k-hot of the
    Gumbel-top-k, with the relaxed gradient). In eval mode it is the exact
    k-hot of the ``k`` largest logits, without noise (:meth:`selected`).
    ``tau`` is a float or a :class:`gumbelrs.schedules.Schedule` advanced by
    :meth:`step`. The layer has no parameters.

    ``generator``: the :class:`~gumbelrs.Generator` of its noise (``None``: torch's
    default generator).
    """

    def __init__(self, n_features: int, k: int, tau: float | Schedule = 0.5,
                 hard: bool = False, generator: Generator | None = None) -> None:
        super().__init__()
        self.n_features = _validate.count("SubsetSelector", "n_features", n_features, 1)
        self.k = _validate.count("SubsetSelector", "k", k, 1, n_features, " (at most n_features)")
        self.tau = tau_or_schedule("SubsetSelector", tau)
        self.hard = _validate.flag("SubsetSelector", "hard", hard)
        self.generator = _validate.generator("SubsetSelector", generator)

    def selected(self, logits: torch.Tensor) -> torch.Tensor:
        """int64 ``(*batch, k)``: the features with the ``k`` largest logits of
        each example, largest first (equal logits: smaller index first)."""
        logits = features("SubsetSelector", logits, self.n_features, "logits")
        order = logits.detach().argsort(dim=-1, descending=True, stable=True)
        return order[..., :self.k]

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        logits = features("SubsetSelector", logits, self.n_features, "logits")
        if not self.training:
            return one_hot(self.selected(logits), logits)
        return structured.relaxed_topk(logits, self.k, self.temperature(), hard=self.hard,
                                       generator=self.generator)

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, k={self.k}, tau={self.tau!r}, hard={self.hard}"
