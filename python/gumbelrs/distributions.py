"""Concrete (Gumbel-Softmax) distributions on the ``torch.distributions`` contract.

Samples come from the gumbelrs kernels (and so from a :class:`gumbelrs.Generator`);
densities are the closed forms of Maddison, Mnih and Teh (2017):

- Concrete on the simplex, ``y = softmax((logits + g) / tau)``:
  ``log p(y) = log (K-1)! + (K-1) log tau + sum_k (log a_k - (tau+1) log y_k)
  - K log sum_k a_k y_k^-tau``;
- ExpConcrete, ``x = log y``: the same without the ``- sum_k log y_k`` Jacobian;
- Binary Concrete in logit space, ``x = (logits + L) / tau``:
  ``log p(x) = log tau + d - 2 softplus(d)``, ``d = logits - tau x``;
  and on (0, 1) through ``y = sigmoid(x)``, minus ``log y (1 - y)``.

``temperature`` may be a tensor with the batch shape: ``log_prob`` then has the
batch shape (``torch.distributions`` returns a wrong shape there, pytorch#37162).
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints
from torch.distributions.utils import broadcast_all, lazy_property

from . import _ops, _validate, functional
from ._generator import Generator
from .structured import sample_permutation

__all__ = [
    "ExpRelaxedCategorical",
    "HardConcrete",
    "LogitRelaxedBernoulli",
    "PlackettLuce",
    "RelaxedBernoulli",
    "RelaxedBernoulliStraightThrough",
    "RelaxedOneHotCategorical",
    "RelaxedOneHotCategoricalStraightThrough",
]


_EMPTY = torch.Size()


class _SoftSamples:
    """Soft samples behind straight-through samples, keyed by the identity of
    the returned tensor and dropped when that tensor dies."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[weakref.ref, torch.Tensor]] = {}

    def put(self, hard: torch.Tensor, soft: torch.Tensor) -> None:
        key = id(hard)
        self._by_id[key] = (weakref.ref(hard), soft)
        weakref.finalize(hard, self._by_id.pop, key, None)

    def get(self, value: torch.Tensor) -> torch.Tensor | None:
        entry = self._by_id.get(id(value))
        return entry[1] if entry is not None and entry[0]() is value else None


class _StraightThrough:
    """Mixin of the straight-through distributions: ``rsample`` returns the
    hard sample of ``_draw(True, ...)``; the soft sample drawn from the same
    stream position is kept (weakly keyed by the returned tensor) so that
    ``log_prob`` of that hard sample is the density of its soft sample."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._soft = _SoftSamples()

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new._soft = _SoftSamples()
        return new

    def rsample(self, sample_shape=_EMPTY, generator: Generator | None = None):
        gen = _ops.replayable(_validate.generator(type(self).__name__,
                                                  generator or self.generator))
        state = gen.get_state()
        hard = self._draw(sample_shape, True, gen)
        with torch.no_grad():
            soft = self._draw(sample_shape, False, Generator(gen.seed).set_state(state))
        self._soft.put(hard, soft)
        return hard

    def log_prob(self, value):
        soft = self._soft.get(value)
        return super().log_prob(value if soft is None else soft)


def _one_of(name: str, probs, logits):
    if (probs is None) == (logits is None):
        raise ValueError(f"{name}: pass exactly one of probs or logits")


def _temperature(name: str, temperature, like: torch.Tensor,
                 batch_shape: torch.Size) -> torch.Tensor:
    """``temperature`` as a tensor in ``like``'s dtype and on its device: 0-d
    for a scalar, else expanded to ``batch_shape``."""
    if isinstance(temperature, torch.Tensor):
        temp = temperature.to(dtype=like.dtype, device=like.device)
    elif _validate.is_real(temperature):
        temp = torch.tensor(float(temperature), dtype=like.dtype, device=like.device)
    else:
        raise _validate.wrong_type(name, "temperature", "a positive float or a tensor",
                                   temperature)
    try:
        return temp.expand(batch_shape) if temp.dim() else temp
    except RuntimeError:
        raise ValueError(
            f"{name}: temperature of shape {tuple(temp.shape)} does not broadcast against "
            f"the batch shape {tuple(batch_shape)}"
        ) from None


class _Categorical(Distribution):
    """Shared parameter handling of the relaxed categorical distributions."""

    arg_constraints = {
        "temperature": constraints.positive,
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
    }
    has_rsample = True

    def __init__(self, temperature, probs=None, logits=None, validate_args=None,
                 generator: Generator | None = None):
        """Args:
            temperature: a positive float, or a tensor that broadcasts against the
                batch shape (the parameter's shape without its last dimension).
            probs: category probabilities ``(*batch, k)`` (normalised along the
                last dimension); or
            logits: unnormalised log-probabilities ``(*batch, k)``; exactly one of
                ``probs`` and ``logits``.
            validate_args: as in ``torch.distributions``.
            generator: the :class:`~gumbelrs.Generator` that ``rsample`` draws from
                (``None``: torch's default generator), unless ``rsample`` gets one.

        Raises:
            ValueError: both or neither of ``probs`` and ``logits``, a parameter
                without a category dimension, or a bad ``temperature``.
        """
        name = type(self).__name__
        _one_of(name, probs, logits)
        if probs is not None:
            if probs.dim() < 1:
                raise ValueError(f"{name}: probs must have at least one dimension")
            self.probs = probs / probs.sum(-1, keepdim=True)
            param = self.probs
        else:
            if logits.dim() < 1:
                raise ValueError(f"{name}: logits must have at least one dimension")
            self.logits = logits - logits.logsumexp(dim=-1, keepdim=True)
            param = self.logits
        self._param = param
        batch_shape = param.shape[:-1]
        self.temperature = _temperature(name, temperature, param, batch_shape)
        self.generator = generator
        super().__init__(batch_shape, param.shape[-1:], validate_args=validate_args)

    @lazy_property
    def logits(self):
        return self.probs.clamp_min(torch.finfo(self.probs.dtype).tiny).log()

    @lazy_property
    def probs(self):
        return self.logits.softmax(-1)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        shape = batch_shape + self.event_shape
        if "probs" in self.__dict__:
            new.probs = self.probs.expand(shape)
            new._param = new.probs
        if "logits" in self.__dict__:
            new.logits = self.logits.expand(shape)
            new._param = new.logits
        new.temperature = (
            self.temperature.expand(batch_shape) if self.temperature.dim() else self.temperature
        )
        new.generator = self.generator
        super(_Categorical, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _tau_rows(self, sample_shape):
        """The temperature for a sample of ``sample_shape``: a float or per-row tensor."""
        t = self.temperature
        if t.dim() == 0 and not t.requires_grad:
            return float(t)
        return t.expand(torch.Size(sample_shape) + self.batch_shape)

    def _log_tau(self):
        return self.temperature.log()

    def _exp_concrete_log_prob(self, x):
        """ExpConcrete log density at log-space points ``x`` (last dim: categories)."""
        k = self.event_shape[0]
        tau = self.temperature.unsqueeze(-1) if self.temperature.dim() else self.temperature
        score = self.logits - x * tau
        score = (score - score.logsumexp(-1, keepdim=True)).sum(-1)
        return score + math.lgamma(k) + (k - 1) * self._log_tau()


class ExpRelaxedCategorical(_Categorical):
    """The ExpConcrete distribution: ``log`` of a Concrete sample, computed in log
    space (``log_softmax((logits + g) / tau)``) so that tiny probabilities keep
    their precision."""

    support = constraints.real_vector

    def rsample(self, sample_shape=_EMPTY, generator: Generator | None = None):
        shape = self._extended_shape(sample_shape)
        logits = self.logits.expand(shape)
        g = functional.gumbel_noise(shape, dtype=logits.dtype, device=logits.device,
                                    generator=generator or self.generator)
        tau = self.temperature.unsqueeze(-1) if self.temperature.dim() else self.temperature
        # Relative to the largest logit, as the kernels perturb: the noise keeps
        # its resolution however large the logits (the softmax is unchanged).
        top = logits.detach().amax(-1, keepdim=True)
        return (((logits - top) + g) / tau).log_softmax(-1)

    def sample(self, sample_shape=_EMPTY, generator: Generator | None = None):
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self._exp_concrete_log_prob(value)


class RelaxedOneHotCategorical(_Categorical):
    """The Concrete (Gumbel-Softmax) distribution on the simplex; ``rsample`` is
    :func:`gumbelrs.gumbel_softmax` (one fused kernel)."""

    support = constraints.simplex

    def rsample(self, sample_shape=_EMPTY, generator: Generator | None = None):
        shape = self._extended_shape(sample_shape)
        return functional.gumbel_softmax(
            self.logits.expand(shape), self._tau_rows(sample_shape),
            generator=generator or self.generator,
        )

    def sample(self, sample_shape=_EMPTY, generator: Generator | None = None):
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_y = value.clamp_min(torch.finfo(value.dtype).tiny).log()
        return self._exp_concrete_log_prob(log_y) - log_y.sum(-1)


class RelaxedOneHotCategoricalStraightThrough(_StraightThrough, RelaxedOneHotCategorical):
    """``rsample`` returns the exact one-hot of the Gumbel-max category, with the
    gradient of the soft Concrete sample (straight-through Gumbel-Softmax).

    ``log_prob`` of a one-hot returned by this distribution's ``rsample`` is the
    Concrete density of the soft sample it came from: the distribution keeps
    that soft sample, keyed weakly by the returned tensor (nothing is attached
    to the tensor). ``log_prob`` of a point of the simplex is its Concrete density.
    """

    def _draw(self, sample_shape, hard, gen):
        logits = self.logits.expand(self._extended_shape(sample_shape))
        return functional.gumbel_softmax(logits, self._tau_rows(sample_shape), hard=hard,
                                         generator=gen)


class LogitRelaxedBernoulli(Distribution):
    """Binary Concrete in logit space: ``x = (logits + L) / tau``, ``L`` logistic."""

    arg_constraints = {
        "temperature": constraints.positive,
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    support = constraints.real
    has_rsample = True

    def __init__(self, temperature, probs=None, logits=None, validate_args=None,
                 generator: Generator | None = None):
        """Args:
            temperature: a positive float, or a tensor that broadcasts against the
                parameter (one temperature per element).
            probs: probabilities of 1, any shape (the batch shape); or
            logits: their log-odds; exactly one of ``probs`` and ``logits``.
            validate_args: as in ``torch.distributions``.
            generator: the :class:`~gumbelrs.Generator` that ``rsample`` draws from
                (``None``: torch's default generator), unless ``rsample`` gets one.

        Raises:
            ValueError: both or neither of ``probs`` and ``logits``, or a bad
                ``temperature``.
        """
        name = type(self).__name__
        _one_of(name, probs, logits)
        if probs is not None:
            (self.probs,) = broadcast_all(probs)
            eps = torch.finfo(self.probs.dtype).eps
            p = self.probs.clamp(eps, 1 - eps)
            self.logits = p.log() - (-p).log1p()
        else:
            (self.logits,) = broadcast_all(logits)
        param = self.logits
        # One temperature per element, a scalar one too.
        self.temperature = _temperature(name, temperature, param, param.shape).expand(param.shape)
        self.generator = generator
        super().__init__(param.shape, validate_args=validate_args)

    @lazy_property
    def probs(self):
        return torch.sigmoid(self.logits)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(batch_shape)
        if "probs" in self.__dict__:
            new.probs = self.probs.expand(batch_shape)
        new.temperature = self.temperature.expand(batch_shape)
        new.generator = self.generator
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _tau(self, sample_shape):
        t = self.temperature
        return t.expand(torch.Size(sample_shape) + self.batch_shape)

    def rsample(self, sample_shape=_EMPTY, generator: Generator | None = None):
        shape = self._extended_shape(sample_shape)
        noise = functional._noise("logistic", shape, dtype=self.logits.dtype,
                                  device=self.logits.device,
                                  generator=generator or self.generator)
        return (self.logits.expand(shape) + noise) / self._tau(sample_shape)

    def sample(self, sample_shape=_EMPTY, generator: Generator | None = None):
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        d = self.logits - value * self.temperature
        return self.temperature.log() + d - 2 * F.softplus(d)


class RelaxedBernoulli(LogitRelaxedBernoulli):
    """Binary Concrete on (0, 1): ``y = sigmoid((logits + L) / tau)``; ``rsample``
    is :func:`gumbelrs.relaxed_bernoulli` (one fused kernel).

    ``log_prob`` clamps values into ``[eps, 1 - eps]`` (``eps`` the machine
    epsilon of the dtype) before evaluating the density, so samples that round
    to exactly 0 or 1 (likely at low temperatures) get a finite log density:
    that of the nearest representable interior point.
    """

    support = constraints.unit_interval

    def rsample(self, sample_shape=_EMPTY, generator: Generator | None = None):
        shape = self._extended_shape(sample_shape)
        return functional.relaxed_bernoulli(self.logits.expand(shape), self._tau(sample_shape),
                                            generator=generator or self.generator)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        eps = torch.finfo(value.dtype).eps
        y = value.clamp(eps, 1 - eps)
        x = y.log() - (-y).log1p()
        d = self.logits - x * self.temperature
        return self.temperature.log() + d - 2 * F.softplus(d) - y.log() - (-y).log1p()


class RelaxedBernoulliStraightThrough(_StraightThrough, RelaxedBernoulli):
    """``rsample`` returns 0/1 (``logits + L > 0``) with the gradient of the soft
    sample; ``log_prob`` of such a sample is the density of its soft sample
    (kept by the distribution, keyed weakly by the returned tensor)."""

    def _draw(self, sample_shape, hard, gen):
        logits = self.logits.expand(self._extended_shape(sample_shape))
        return functional.relaxed_bernoulli(logits, self._tau(sample_shape), hard=hard,
                                            generator=gen)


class HardConcrete(Distribution):
    """The Hard Concrete gate of Louizos, Welling and Kingma (2018):
    ``z = clamp(lo + (hi - lo) * sigmoid((logits + L) / tau), 0, 1)``.

    It has point masses at 0 and 1 and a density in between; ``log_prob``
    returns ``log P(z = 0)``, ``log P(z = 1)`` at those points and the log
    density (w.r.t. Lebesgue measure) inside. ``prob_zero``, ``prob_one`` and
    ``expected_l0`` (``1 - P(z = 0)``, the expected number of open gates per
    element) are closed forms.
    """

    arg_constraints = {"temperature": constraints.positive, "logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, logits, temperature: float = 2.0 / 3.0, limits=(-0.1, 1.1),
                 validate_args=None, generator: Generator | None = None):
        """Args:
            logits: the gates' log-odds ``log(alpha)``, any shape (the batch shape).
            temperature: a positive float, or a tensor that broadcasts against
                ``logits``.
            limits: the stretch interval ``(lo, hi)``, ``lo < 0 < 1 < hi``.
            validate_args: as in ``torch.distributions``.
            generator: the :class:`~gumbelrs.Generator` that ``rsample`` draws from
                (``None``: torch's default generator), unless ``rsample`` gets one.

        Raises:
            ValueError: ``limits`` that do not satisfy ``lo < 0 < 1 < hi``, or a bad
                ``temperature``.
        """
        (self.logits,) = broadcast_all(logits)
        self.limits = functional._validate.limits("HardConcrete", limits)
        self.temperature = _temperature("HardConcrete", temperature, self.logits,
                                        self.logits.shape)
        self.generator = generator
        super().__init__(self.logits.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HardConcrete, _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(batch_shape)
        new.limits = self.limits
        new.temperature = (
            self.temperature.expand(batch_shape) if self.temperature.dim() else self.temperature
        )
        new.generator = self.generator
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=_EMPTY, generator: Generator | None = None):
        shape = self._extended_shape(sample_shape)
        t = self.temperature
        tau = float(t) if t.dim() == 0 else t.expand(shape)
        return functional.hard_concrete(self.logits.expand(shape), tau, self.limits,
                                        generator=generator or self.generator)

    def sample(self, sample_shape=_EMPTY, generator: Generator | None = None):
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def _edge_logits(self):
        lo, hi = self.limits
        t = self.temperature
        zero = t * math.log(-lo / hi) - self.logits  # logit of P(z = 0)
        one = self.logits - t * math.log((1 - lo) / (hi - 1))  # logit of P(z = 1)
        return zero, one

    def prob_zero(self) -> torch.Tensor:
        """``P(z == 0) = sigmoid(tau * log(-lo / hi) - logits)``."""
        return torch.sigmoid(self._edge_logits()[0])

    def prob_one(self) -> torch.Tensor:
        """``P(z == 1) = sigmoid(logits - tau * log((1 - lo) / (hi - 1)))``."""
        return torch.sigmoid(self._edge_logits()[1])

    def expected_l0(self) -> torch.Tensor:
        """``P(z != 0)`` per element: the expected L0 norm contribution (Louizos et al. eq. 12)."""
        return torch.sigmoid(-self._edge_logits()[0])

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        lo, hi = self.limits
        zero, one = self._edge_logits()
        fi = torch.finfo(value.dtype)
        s = ((value - lo) / (hi - lo)).clamp(fi.tiny, 1 - fi.eps)  # only the branch used
        x = s.log() - (-s).log1p()
        d = self.logits - x * self.temperature
        inner = (self.temperature.log() + d - 2 * F.softplus(d) - s.log() - (-s).log1p()
                 - math.log(hi - lo))
        return torch.where(value <= 0, F.logsigmoid(zero),
                           torch.where(value >= 1, F.logsigmoid(one), inner))


class _Permutation(constraints.Constraint):
    """int64 tensors whose last dimension is a permutation of ``0 .. n-1``."""

    is_discrete = True
    event_dim = 1

    def check(self, value):
        if value.dtype != torch.int64 or value.dim() < 1:
            return torch.zeros(value.shape[:-1], dtype=torch.bool, device=value.device)
        n = value.shape[-1]
        return (value.sort(-1).values == torch.arange(n, device=value.device)).all(-1)


class PlackettLuce(Distribution):
    """Rankings of ``n`` items with scores ``scores`` (``(*batch, n)``): the first
    item is drawn with probability ``softmax(scores)``, each next one from the
    softmax of the scores left. Samples are int64 ``(*sample_shape, *batch, n)``,
    the items in the order drawn (:func:`gumbelrs.structured.sample_permutation`);
    ``log_prob(pi) = sum_i (s_pi(i) - logsumexp_{j >= i} s_pi(j))``, exact."""

    arg_constraints = {"scores": constraints.real_vector}
    support = _Permutation()
    has_rsample = False

    def __init__(self, scores: torch.Tensor, validate_args=None,
                 generator: Generator | None = None):
        """Args:
            scores: the items' scores ``(*batch, n)``.
            validate_args: as in ``torch.distributions``.
            generator: the :class:`~gumbelrs.Generator` that ``sample`` draws from
                (``None``: torch's default generator), unless ``sample`` gets one.

        Raises:
            ValueError: a NaN or ``+inf`` score (``-inf`` never gets drawn before the
                others).
            TypeError: integer or sparse ``scores``.
        """
        _validate.logits("PlackettLuce", scores)
        self.scores = scores
        self.generator = generator
        super().__init__(scores.shape[:-1], scores.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(PlackettLuce, _instance)
        batch_shape = torch.Size(batch_shape)
        new.scores = self.scores.expand(batch_shape + self.event_shape)
        new.generator = self.generator
        super(PlackettLuce, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape=_EMPTY, generator: Generator | None = None):
        shape = torch.Size(sample_shape)
        n = self.event_shape[0]
        if shape.numel() == 0:  # nothing to draw
            return torch.empty((*shape, *self.batch_shape, n), dtype=torch.int64,
                               device=self.scores.device)
        draws = sample_permutation(self.scores, shape.numel(),
                                   generator=generator or self.generator)
        return draws.movedim(-2, 0).reshape(*shape, *self.batch_shape, n)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape, self.scores.shape)
        picked = self.scores.expand(shape).gather(-1, value.expand(shape))
        rest = torch.logcumsumexp(picked.flip(-1), -1).flip(-1)
        return (picked - rest).sum(-1)
