"""Concrete dropout (Gal, Hron and Kendall 2017) and Monte Carlo prediction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate, functional
from .._generator import Generator
from ._checks import logit


class ConcreteDropout(nn.Module):
    """Dropout whose drop probability ``p`` is learned through the Binary
    Concrete relaxation (Gal, Hron and Kendall 2017), optionally wrapping the
    ``layer`` that reads the dropped input (``forward(x) = layer(dropout(x))``).

    In training the input is multiplied by ``(1 - d) / (1 - p)`` where ``d`` is a
    relaxed Bernoulli(``p``) sample at temperature ``tau``
    (:func:`gumbelrs.relaxed_bernoulli`), so ``p`` gets a gradient. In eval
    mode the input passes unchanged (its expectation), except inside
    :func:`mc_predict`, which keeps sampling.

    ``units=None`` learns one ``p`` for the layer; ``units=n`` learns one ``p``
    per feature of the last dimension (which must then have size ``n``).

    Add :meth:`regularization` to the loss: ``weight_regularizer * ||W||^2 /
    (1 - p) - dropout_regularizer * K * H(p)`` with ``W`` the wrapped layer's
    weight and ``K`` the number of input features (per unit: summed over the
    units, with the weight columns that read each unit). The paper's choice
    for ``N`` training points and prior length scale ``l`` is
    ``weight_regularizer = l^2 / N`` and ``dropout_regularizer = 2 / N``
    (for a Gaussian likelihood whose precision is learned).

    ``generator``: the :class:`~gumbelrs.Generator` of its noise (``None``: torch's
    default generator).
    """

    def __init__(self, layer: nn.Module | None = None, p: float = 0.1, tau: float = 0.1,
                 weight_regularizer: float = 1e-6, dropout_regularizer: float = 1e-5, *,
                 units: int | None = None, generator: Generator | None = None) -> None:
        super().__init__()
        p = _validate.fraction("ConcreteDropout", "p", p)
        tau = _validate.positive("ConcreteDropout", "tau", tau)
        if units is not None:
            _validate.count("ConcreteDropout", "units", units, 1, why=" (or None)")
        weight = getattr(layer, "weight", None)
        if units is not None and weight is not None and (
                weight.dim() != 2 or weight.shape[1] != units):
            raise ValueError(
                f"ConcreteDropout: with units={units} the layer's weight must have shape "
                f"(out_features, {units}) (an nn.Linear reading the dropped features), got "
                f"{tuple(weight.shape)}")
        self.layer = layer
        self.tau = tau
        self.weight_regularizer = _validate.non_negative("ConcreteDropout", "weight_regularizer",
                                                         weight_regularizer)
        self.dropout_regularizer = _validate.non_negative("ConcreteDropout",
                                                          "dropout_regularizer",
                                                          dropout_regularizer)
        self.units = units
        self.generator = generator
        self.p_logit = nn.Parameter(torch.full((units,) if units else (), logit(p)))
        self.mc = False
        self.in_features: int | None = units or getattr(layer, "in_features", None)

    @property
    def p(self) -> torch.Tensor:
        """The drop probability (a 0-d tensor, or one per unit)."""
        return torch.sigmoid(self.p_logit)

    def keep_mask(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """A relaxed keep mask ``1 - d`` of ``shape`` (before the ``1 / (1 - p)``
        scaling). As ``tau -> 0`` its entries become Bernoulli(``1 - p``); as
        ``tau -> inf`` they all tend to 0.5."""
        logits = self.p_logit.expand(shape)
        return 1 - functional.relaxed_bernoulli(logits, self.tau, generator=self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.units is not None and (x.dim() < 1 or x.shape[-1] != self.units):
            raise ValueError(f"ConcreteDropout: x must have units={self.units} features in its "
                             f"last dimension, got shape {tuple(x.shape)}")
        if x.dim() >= 1:
            self.in_features = x.shape[-1]
        if self.training or self.mc:
            keep = self.keep_mask(x.shape).to(x.dtype)
            x = x * keep / (1 - self.p).to(x.dtype)
        return x if self.layer is None else self.layer(x)

    def regularization(self) -> torch.Tensor:
        """The KL term of the paper for this layer (add it to the loss)."""
        p = self.p
        log_p, log_keep = F.logsigmoid(self.p_logit), F.logsigmoid(-self.p_logit)  # no 0 * -inf
        neg_entropy = p * log_p + (1 - p) * log_keep
        if self.units is None:
            if self.in_features is None:
                raise RuntimeError(
                    "ConcreteDropout.regularization: the number of input features is not known "
                    "before the first forward pass; wrap a layer with in_features, pass units=, "
                    "or call the model once first")
            neg_entropy = neg_entropy * self.in_features
        weight = getattr(self.layer, "weight", None)
        if weight is None:
            squares = sum((w * w).sum() for w in self.layer.parameters()) if self.layer else 0.0
        elif self.units is None:
            squares = (weight * weight).sum()
        else:
            squares = (weight * weight).sum(0)
        return (self.weight_regularizer * squares / (1 - p)
                + self.dropout_regularizer * neg_entropy).sum()

    def extra_repr(self) -> str:
        per = f"units={self.units}" if self.units else "one p"
        return f"{per}, tau={self.tau}, p_init={self.p.detach().mean():.3g}"


def concrete_dropout_regularization(model: nn.Module) -> torch.Tensor:
    """The sum of :meth:`ConcreteDropout.regularization` over ``model``'s layers.

    A 0-d tensor (0 when ``model`` has no :class:`ConcreteDropout`); raises
    nothing of its own.
    """
    terms = [m.regularization() for m in model.modules() if isinstance(m, ConcreteDropout)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


@contextlib.contextmanager
def _sampling(model: nn.Module) -> Iterator[None]:
    """Dropout layers sample (``ConcreteDropout`` and ``torch.nn`` dropout)
    while every other layer keeps its mode."""
    changed = []
    for m in model.modules():
        if isinstance(m, ConcreteDropout):
            changed.append((m, "mc", m.mc))
            m.mc = True
        elif isinstance(m, nn.modules.dropout._DropoutNd):
            changed.append((m, "training", m.training))
            m.training = True
    try:
        yield
    finally:
        for m, attr, old in changed:
            setattr(m, attr, old)


def mc_samples(model: nn.Module, x: torch.Tensor, n: int = 50) -> torch.Tensor:
    """``n`` stochastic forward passes of ``model`` on ``x`` with every dropout
    layer sampling (MC dropout), stacked: ``(n, *model(x).shape)``.

    Errors are those of ``model(x)``; ``n`` below 1 raises ``ValueError``.
    """
    _validate.count("mc_samples", "n", n, 1)
    with torch.no_grad(), _sampling(model):
        return torch.stack([model(x) for _ in range(n)])


def mc_predict(model: nn.Module, x: torch.Tensor, n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """The predictive mean and variance of ``model(x)`` over ``n`` MC dropout
    passes (the variance of the sampled outputs, divisor ``n``).

    Both have the shape of ``model(x)``. Errors are those of ``model(x)``; ``n``
    below 1 raises ``ValueError``.
    """
    s = mc_samples(model, x, n)
    return s.mean(0), s.var(0, correction=0)
