"""Learned discrete decisions over features: concrete gates, L0 (Hard Concrete)
gates and the k-of-n Concrete selector."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import _validate, functional
from .._generator import Generator
from ..schedules import Schedule
from ._checks import Scheduled, logit, one_hot, tau_or_schedule


class ConcreteGate(Scheduled):
    """One relaxed-Bernoulli gate per feature: ``forward(x) = x * z`` with
    ``z ~ RelaxedBernoulli(sigmoid(logits), tau)`` drawn per example (the
    features are the last dimension of ``x``).

    ``hard=True`` draws exact 0/1 gates with the straight-through gradient. In
    eval mode the gates are deterministic: open where ``logits > 0``.
    :meth:`penalty` is the expected number of open gates,
    ``sum(sigmoid(logits))``, to add to the loss for sparsity. ``tau`` is a
    float or a :class:`gumbelrs.schedules.Schedule` advanced by :meth:`step`.

    ``n_features``: the size of the last dimension of ``x``; ``init_open``:
    the initial probability of an open gate.
    ``generator``: the :class:`~gumbelrs.Generator` of its noise (``None``: torch's
    default generator).
    """

    def __init__(self, n_features: int, tau: float | Schedule = 0.5, init_open: float = 0.9,
                 hard: bool = False, generator: Generator | None = None) -> None:
        super().__init__()
        self.n_features = _validate.count("ConcreteGate", "n_features", n_features, 1)
        self.tau = tau_or_schedule("ConcreteGate", tau)
        p = _validate.fraction("ConcreteGate", "init_open", init_open)
        self.logits = nn.Parameter(torch.full((n_features,), logit(p)))
        self.hard = bool(hard)
        self.generator = generator

    def probs(self) -> torch.Tensor:
        """The probability that each gate is open."""
        return torch.sigmoid(self.logits)

    def gates(self, batch_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Gates of shape ``(*batch_shape, n_features)``: sampled in training,
        ``1.0`` where ``logits > 0`` (else ``0.0``) in eval mode."""
        if not self.training:
            return (self.logits > 0).to(self.logits.dtype).expand(*batch_shape, -1)
        logits = self.logits.expand(*batch_shape, -1)
        return functional.relaxed_bernoulli(logits, self.temperature(), hard=self.hard,
                                            generator=self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._features(x)
        return x * self.gates(x.shape[:-1]).to(x.dtype)

    def penalty(self) -> torch.Tensor:
        """The expected number of open gates (differentiable)."""
        return self.probs().sum()

    def selected(self, k: int | None = None) -> torch.Tensor:
        """Indices of the open gates (``k=None``), or of the ``k`` most open ones."""
        if k is None:
            return torch.nonzero(self.logits > 0).flatten()
        k = min(_validate.count("ConcreteGate", "k", k, 1), self.n_features)
        return self.logits.detach().topk(k).indices

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, tau={self.tau!r}, hard={self.hard}"


class HardConcreteGate(Scheduled):
    """The L0 gate of Louizos, Welling and Kingma (2018): ``forward(x) = x * z``
    with ``z`` a Hard Concrete sample (stretched to ``limits`` and clamped to
    [0, 1], so exact zeros and ones have probability mass).

    :meth:`expected_l0` is the closed-form expected number of non-zero gates,
    ``sum(sigmoid(log_alpha - tau * log(-lo / hi)))``. In eval mode the gates
    are the paper's deterministic estimate ``clamp(sigmoid(log_alpha) * (hi -
    lo) + lo, 0, 1)``. ``init_open`` sets the initial probability of a
    non-zero gate.

    ``n_features``: the size of the last dimension of ``x``; ``forward``
    returns ``x``'s shape.
    ``generator``: the :class:`~gumbelrs.Generator` of its noise (``None``: torch's
    default generator).
    """

    def __init__(self, n_features: int, tau: float = 2.0 / 3.0,
                 limits: tuple[float, float] = (-0.1, 1.1), init_open: float = 0.9,
                 generator: Generator | None = None) -> None:
        super().__init__()
        self.n_features = _validate.count("HardConcreteGate", "n_features", n_features, 1)
        tau = tau_or_schedule("HardConcreteGate", tau)
        if isinstance(tau, Schedule):
            raise ValueError("HardConcreteGate: tau must be a positive finite float (the "
                             "shape of the distribution, not annealed), got a Schedule")
        self.tau = tau
        self.limits = _validate.limits("HardConcreteGate", limits)
        lo, hi = self.limits
        p = _validate.fraction("HardConcreteGate", "init_open", init_open)
        shift = self.tau * math.log(-lo / hi)
        self.log_alpha = nn.Parameter(
            torch.full((n_features,), logit(p) + shift))
        self.generator = generator

    def prob_nonzero(self) -> torch.Tensor:
        """The probability that each gate is not exactly 0."""
        lo, hi = self.limits
        return torch.sigmoid(self.log_alpha - self.tau * math.log(-lo / hi))

    def expected_l0(self) -> torch.Tensor:
        """The expected number of non-zero gates (differentiable)."""
        return self.prob_nonzero().sum()

    penalty = expected_l0

    def gates(self, batch_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Gates of shape ``(*batch_shape, n_features)``."""
        if not self.training:
            lo, hi = self.limits
            z = (torch.sigmoid(self.log_alpha) * (hi - lo) + lo).clamp(0, 1)
            return z.expand(*batch_shape, -1)
        return functional.hard_concrete(self.log_alpha.expand(*batch_shape, -1), self.tau,
                                        self.limits, generator=self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._features(x)
        return x * self.gates(x.shape[:-1]).to(x.dtype)

    def selected(self, k: int | None = None) -> torch.Tensor:
        """Indices of the gates that are non-zero in eval mode (``k=None``), or
        of the ``k`` largest ``log_alpha``."""
        if k is None:
            lo, hi = self.limits
            return torch.nonzero(torch.sigmoid(self.log_alpha) * (hi - lo) + lo > 0).flatten()
        k = min(_validate.count("HardConcreteGate", "k", k, 1), self.n_features)
        return self.log_alpha.detach().topk(k).indices

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, tau={self.tau:.4g}, limits={self.limits}"


class ConcreteSelector(Scheduled):
    """Selects ``k`` of ``n_features`` input features with ``k`` Concrete
    distributions over the features (the Concrete Autoencoder's selector
    layer; Balin, Abid and Zou 2019): ``forward(x)`` is ``x @ W.T`` of shape
    ``(*batch, k)`` where row ``j`` of ``W`` is a Gumbel-Softmax sample of the
    logits of selector ``j`` at temperature ``tau`` (anneal it, e.g. with
    ``schedules.ExponentialDecay`` from 10 to 0.1).

    In eval mode (or with :meth:`selected`) each selector picks one feature and
    no feature is picked twice: selectors choose in order of confidence, each
    taking its most probable feature not taken yet. :meth:`duplicate_penalty`
    (the probability mass by which features are over-selected,
    ``sum(relu(sum_j softmax(logits)_j - 1))``) can be added to the loss to
    keep the selectors apart during training.

    ``generator``: the :class:`~gumbelrs.Generator` of its noise (``None``: torch's
    default generator).
    """

    def __init__(self, n_features: int, k: int, tau: float | Schedule = 1.0,
                 generator: Generator | None = None) -> None:
        super().__init__()
        self.n_features = _validate.count("ConcreteSelector", "n_features", n_features, 1)
        self.k = _validate.count("ConcreteSelector", "k", k, 1, n_features, " (at most n_features)")
        self.tau = tau_or_schedule("ConcreteSelector", tau)
        self.logits = nn.Parameter(1e-2 * torch.randn(k, n_features))
        self.generator = generator

    def probs(self) -> torch.Tensor:
        """``(k, n_features)``: each selector's distribution over the features."""
        return torch.softmax(self.logits, -1)

    def selected(self) -> torch.Tensor:
        """The ``k`` distinct selected feature indices, selector by selector."""
        p = self.probs().detach()
        taken = torch.zeros(self.n_features, dtype=torch.bool)
        out = torch.empty(self.k, dtype=torch.int64)
        for j in p.amax(-1).argsort(descending=True).tolist():
            choice = int(p[j].masked_fill(taken, -1.0).argmax())
            out[j] = choice
            taken[choice] = True
        return out

    def weights(self) -> torch.Tensor:
        """The ``(k, n_features)`` selection matrix used by :meth:`forward`."""
        if self.training:
            return functional.gumbel_softmax(self.logits, self.temperature(),
                                             generator=self.generator)
        return one_hot(self.selected()[:, None], self.logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._features(x)
        if not self.training:
            return x[..., self.selected()]
        return x @ self.weights().to(x.dtype).T

    def duplicate_penalty(self) -> torch.Tensor:
        """Over-selection: ``sum(relu(sum_j softmax(logits)_j - 1))``, 0 when no
        feature carries more than one selector's worth of probability."""
        return torch.relu(self.probs().sum(0) - 1).sum()

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, k={self.k}, tau={self.tau!r}"
