"""Soft k-means: cluster assignments as Gumbel-Softmax samples."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn

from .. import _validate, functional
from .._generator import Generator
from ..schedules import Schedule
from ._checks import features, one_hot
from ._softmax import GumbelSoftmax


class SoftKMeansOutput(NamedTuple):
    """What :class:`SoftKMeans` returns.

    ``assignments`` (``(*batch, n_clusters)``): the sampled relaxed one-hot
    assignments; ``distances``: the squared distances to the centres;
    ``loss``: the relaxed distortion ``sum_k a_k ||x - mu_k||^2`` averaged over
    the batch (differentiable with respect to the centres and to ``x``).
    """

    assignments: torch.Tensor
    distances: torch.Tensor
    loss: torch.Tensor


class SoftKMeans(nn.Module):
    """k-means as a differentiable layer.

    The assignment of a point ``x`` is a Gumbel-Softmax sample of the logits
    ``-beta * ||x - mu_k||^2`` over the ``n_clusters`` learnable centres
    ``mu``, drawn with ``method`` (any of :data:`gumbelrs.estimators.METHODS`:
    ``"soft"`` relaxed assignments, ``"st"`` hard one-hot assignments with the
    straight-through gradient, ...) at temperature ``tau``. The layer returns
    a :class:`SoftKMeansOutput` whose ``loss`` (the relaxed distortion) trains
    the centres and, through ``x``, whatever network produced ``x``.

    ``beta`` is a positive float, a :class:`gumbelrs.schedules.Schedule` of
    it (advanced by :meth:`step`; an increasing one anneals towards hard
    k-means) or ``"learned"`` (a parameter initialised at ``beta_init``).
    In eval mode the assignments are the one-hot of the nearest centre.
    Initialise the centres from data with :meth:`init_kmeanspp`.

    ``n_features``: the size of the inputs' last dimension, ``(*batch,
    n_features)``.
    ``generator``: the :class:`~gumbelrs.Generator` of its noise (``None``: torch's
    default generator).
    """

    def __init__(self, n_clusters: int, n_features: int,
                 beta: float | Schedule | str = 1.0, tau: float | Schedule = 1.0,
                 method: str = "soft", *, beta_init: float = 1.0,
                 generator: Generator | None = None) -> None:
        super().__init__()
        self.n_clusters = _validate.count("SoftKMeans", "n_clusters", n_clusters, 1)
        self.n_features = _validate.count("SoftKMeans", "n_features", n_features, 1)
        self.centers = nn.Parameter(torch.randn(n_clusters, n_features))
        if beta == "learned":
            beta_init = _validate.positive("SoftKMeans", "beta_init", beta_init)
            self.log_beta = nn.Parameter(torch.tensor(math.log(beta_init)))
            self.beta_schedule = None
        elif isinstance(beta, Schedule):
            self.log_beta = None
            self.beta_schedule = beta
        else:
            self.log_beta = None
            self.beta_schedule = _validate.positive(
                "SoftKMeans", "beta", beta, "a positive finite number, a Schedule or 'learned'")
        self.sampler = GumbelSoftmax(tau, method, generator=generator)
        self.generator = generator

    @property
    def beta(self) -> float | torch.Tensor:
        """The inverse scale of the logits now (a tensor when learned)."""
        if self.log_beta is not None:
            return self.log_beta.exp()
        if isinstance(self.beta_schedule, Schedule):
            return self.beta_schedule.tau
        return self.beta_schedule

    def step(self, n: int = 1) -> None:
        """Advances the schedules of ``beta`` and of the temperature."""
        if isinstance(self.beta_schedule, Schedule):
            self.beta_schedule.step(n)
        self.sampler.step(n)

    def _points(self, x: torch.Tensor) -> torch.Tensor:
        return features("SoftKMeans", x, self.n_features)

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """Squared Euclidean distances ``(*batch, n_clusters)`` to the centres."""
        x = self._points(x)
        mu = self.centers.to(x.dtype)
        d2 = (x * x).sum(-1, keepdim=True) - 2 * x @ mu.T + (mu * mu).sum(-1)
        return d2.clamp_min(0)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The assignment logits ``-beta * ||x - mu_k||^2``."""
        return -self.beta * self.distances(x)

    def forward(self, x: torch.Tensor) -> SoftKMeansOutput:
        d2 = self.distances(x)
        if self.training:
            a = self.sampler(-self.beta * d2)
        else:
            a = one_hot(d2.argmin(-1, keepdim=True), d2)
        return SoftKMeansOutput(a, d2, (a * d2).sum(-1).mean())

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The index of the nearest centre (int64, ``x``'s batch shape)."""
        return self.distances(x).argmin(-1)

    @torch.no_grad()
    def inertia(self, x: torch.Tensor) -> float:
        """The hard k-means objective: sum of squared distances to the nearest centre."""
        return float(self.distances(x).amin(-1).sum())

    @torch.no_grad()
    def init_kmeanspp(self, x: torch.Tensor, generator: Generator | None = None) -> SoftKMeans:
        """Greedy k-means++ seeding (Arthur and Vassilvitskii 2007) from the points
        ``x`` (``(n, n_features)``): each new centre is the best, by the sum of
        squared distances it leaves, of ``2 + log(k)`` candidates drawn with
        probability proportional to the squared distance to the centres so far.
        Draws use ``generator`` (the layer's, then the default, if None)."""
        x = self._points(x).detach().reshape(-1, self.n_features).to(torch.float64)
        if x.shape[0] < self.n_clusters:
            raise ValueError(f"SoftKMeans.init_kmeanspp: needs at least n_clusters="
                             f"{self.n_clusters} points, got {x.shape[0]}")
        gen = generator if generator is not None else self.generator
        trials = 2 + int(math.log(self.n_clusters))
        first = functional.sample_categorical(torch.zeros(x.shape[0], dtype=torch.float64),
                                              generator=gen)
        centers = [x[first[0]]]
        closest = ((x - centers[0]) ** 2).sum(-1)
        for _ in range(1, self.n_clusters):
            weights = closest.log()  # zero distance -> -inf: never drawn again
            if not torch.isfinite(weights).any():
                weights = torch.zeros_like(closest)  # fewer distinct points than clusters
            picks = functional.sample_categorical(weights, trials, generator=gen)
            d = ((x[None] - x[picks][:, None]) ** 2).sum(-1).minimum(closest)
            best = int(d.sum(-1).argmin())
            centers.append(x[picks[best]])
            closest = d[best]
        self.centers.copy_(torch.stack(centers).to(self.centers.dtype))
        return self

    def get_extra_state(self) -> dict[str, Any]:
        if isinstance(self.beta_schedule, Schedule):
            return {"beta_schedule": self.beta_schedule.state_dict()}
        return {}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if isinstance(self.beta_schedule, Schedule) and "beta_schedule" in state:
            self.beta_schedule.load_state_dict(state["beta_schedule"])

    def extra_repr(self) -> str:
        beta = "learned" if self.log_beta is not None else repr(self.beta_schedule)
        return f"n_clusters={self.n_clusters}, n_features={self.n_features}, beta={beta}"

