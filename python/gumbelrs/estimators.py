"""Gradient estimators for categorical samples, behind one entry point.

``sample(logits, method, tau, dim, generator, **options)`` returns a sample
whose value is the method's forward output (a one-hot, or a relaxed sample for
``"soft"``) and whose backward pass is the method's gradient estimate:

============ ================================================================
method       forward value / gradient (``tau`` convention)
============ ================================================================
soft         ``softmax((logits + g) / tau)`` / its exact gradient (Jang et
             al. 2017; Maddison et al. 2017). Biased for ``E[f(one-hot)]``;
             the bias shrinks as ``tau -> 0`` and the variance grows.
st           one-hot of ``argmax(logits + g)`` / gradient of the soft sample
             at ``tau`` (straight-through Gumbel-Softmax, Jang et al. 2017).
gumbel_rao   the same one-hot / the soft gradient averaged over ``k``
             (option, default 10) Gumbel perturbations conditioned on that
             one-hot (Paulus et al. 2020): lower variance than ``st``, same
             mean.
reinmax      one-hot drawn from ``softmax(logits)`` / ``2 J(p1) - J(p0) / 2``
             applied to the incoming gradient, ``J(p) = diag(p) - p p^T``,
             ``p0 = softmax(logits)``, ``p1 = (one-hot + softmax(logits / tau)) / 2``
             (Liu et al. 2023, second order). Here ``tau`` only smooths
             ``p1``; the authors use ``tau >= 1``.
gst          one-hot of ``argmax(logits + g)`` / gradient of
             ``softmax((logits + m) / tau)`` with the deterministic ``m`` that
             lifts the sampled logit to the maximum and pushes the others
             ``gap`` (option, default 1) below it (gapped straight-through,
             Fan et al. 2022).
decoupled    the sample at ``tau_forward`` (option, default ``tau``; one-hot
             when ``hard``, option, default True) / the gradient of the soft
             sample with the same noise at ``tau_backward`` (option, default
             ``tau``): separate forward and backward temperatures.
============ ================================================================

:func:`exact_gradient` enumerates the categories to get the exact gradient of
``E[f(one-hot)]``; :func:`diagnose` measures a method's bias and variance
against it; ``gumbelrs estimators`` (or ``python -m gumbelrs estimators``,
:mod:`gumbelrs._estimators_cli`) prints that table on a toy problem.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import _ops, _validate, functional
from ._generator import Generator
from ._reference import per_row

__all__ = ["METHODS", "diagnose", "exact_gradient", "sample"]

#: The names :func:`sample` takes as ``method``, in the order of the table above.
METHODS = ("soft", "st", "gumbel_rao", "reinmax", "gst", "decoupled")

_OPTIONS = {
    "soft": set(),
    "st": set(),
    "gumbel_rao": {"k"},
    "reinmax": set(),
    "gst": {"gap"},
    "decoupled": {"tau_forward", "tau_backward", "hard"},
}


def _one_hot(index: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.zeros_like(like).scatter_(dim, index.unsqueeze(dim), 1.0)


def _replace_gradient(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` forward, the gradient of ``surrogate`` backward."""
    return value + (surrogate - surrogate.detach())


def _draw(logits, dim, gen):
    """Index of a Gumbel-max draw, shape: logits without ``dim``."""
    return functional.sample_categorical(logits.detach(), 1, dim=dim, generator=gen).squeeze(-1)


def sample(
    logits: torch.Tensor,
    method: str,
    tau: float | torch.Tensor = 1.0,
    dim: int = -1,
    generator: Generator | None = None,
    **options,
) -> torch.Tensor:
    """A categorical sample along ``dim`` whose gradient is ``method``'s estimate
    (see the module documentation for the methods and their options).

    Args:
        logits: ``(*batch, k)`` unnormalised log-probabilities (categories along
            ``dim``).
        method: one of :data:`METHODS`.
        tau: the temperature (a positive float, or a tensor per row).
        dim: the categories' dimension.
        generator: the :class:`~gumbelrs.Generator` of the noise (``None``:
            torch's default generator).
        options: the method's options (``k``, ``gap``, ``tau_forward``,
            ``tau_backward``, ``hard``).

    Returns:
        A tensor of the logits' shape and dtype.

    Raises:
        ValueError: an unknown ``method``, or bad logits or ``tau`` (as
            :func:`gumbelrs.gumbel_softmax`).
        TypeError: an option the method does not take.
    """
    fn = "estimators.sample"
    if method not in METHODS:
        raise ValueError(f"{fn}: method must be one of {METHODS}, got {method!r}")
    unknown = set(options) - _OPTIONS[method]
    if unknown:
        allowed = sorted(_OPTIONS[method]) or "none"
        raise TypeError(f"{fn}: method {method!r} takes options {allowed}, got {sorted(unknown)}")
    _validate.logits(fn, logits)
    d = _validate.dim(fn, dim, logits.dim())
    gen = _validate.generator(fn, generator)

    if method == "soft":
        return functional.gumbel_softmax(logits, tau, dim=d, generator=gen)
    if method == "st":
        return functional.gumbel_softmax(logits, tau, hard=True, dim=d, generator=gen)
    if method == "decoupled":
        tau_f = options.get("tau_forward", tau)
        tau_b = options.get("tau_backward", tau)
        hard = options.get("hard", True)
        gen = _ops.replayable(gen)
        state = gen.get_state()
        forward = functional.gumbel_softmax(logits.detach(), tau_f, hard=hard, dim=d,
                                            generator=gen)
        backward = functional.gumbel_softmax(logits, tau_b, dim=d,
                                             generator=Generator(gen.seed).set_state(state))
        return _replace_gradient(forward, backward)

    index = _draw(logits, d, gen)
    one_hot = _one_hot(index, logits.detach(), d)
    finite = torch.isfinite(logits)
    if method == "gumbel_rao":
        k = _validate.count(fn, "k", options.get("k", 10), 1, 1 << 20, "")
        z = functional.gumbel_given_argmax(logits.detach(), index, k, dim=d, generator=gen)
        noise = torch.where(finite, z - logits.detach(), torch.zeros_like(z))
        t = per_row(tau, logits, d)
        surrogate = torch.softmax((logits + noise) / t, dim=d + 1).mean(0)
        return _replace_gradient(one_hot, surrogate)
    if method == "gst":
        gap = _validate.non_negative(fn, "gap", options.get("gap", 1.0))
        with torch.no_grad():
            logp = logits.log_softmax(d)
            top = logp.amax(d, keepdim=True)
            lift = (top - logp) * one_hot
            push = torch.relu(logp - top + gap) * (1 - one_hot)
            shift = torch.where(finite, lift - push, torch.zeros_like(logp))
        t = per_row(tau, logits, d)
        surrogate = torch.softmax((logits.log_softmax(d) + shift) / t, dim=d)
        return _replace_gradient(one_hot, surrogate)
    # reinmax
    p0 = torch.softmax(logits, dim=d)
    t = per_row(tau, logits, d)
    target = (one_hot + torch.softmax(logits / t, dim=d).detach()) / 2
    # p1 takes the value `target` with the softmax Jacobian at `target`.
    shift = torch.where(finite, target.log() - logits.detach(), torch.zeros_like(target))
    p1 = torch.softmax(logits + shift, dim=d)
    return _replace_gradient(one_hot, 2 * p1 - p0 / 2)


def exact_gradient(f: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """The exact gradient of ``E[f(one_hot)]`` with respect to ``logits`` (last
    dimension: categories) by enumerating the categories.

    ``f`` maps a batch of one-hot vectors (shape of ``logits``) to values with
    the batch shape; the expectation of each batch element is differentiated.

    Returns a tensor of the logits' shape. Errors are those ``f`` raises;
    ``logits`` must be a floating-point tensor whose last dimension is small
    enough to enumerate (one call of ``f`` per category).
    """
    leaf = logits.detach().clone().requires_grad_()
    p = torch.softmax(leaf, -1)
    k = logits.shape[-1]
    eye = torch.eye(k, dtype=logits.dtype, device=logits.device)
    expectation = sum(p[..., c] * f(eye[c].expand_as(leaf)) for c in range(k))
    (grad,) = torch.autograd.grad(expectation.sum(), leaf)
    return grad


def diagnose(
    f: Callable[[torch.Tensor], torch.Tensor],
    logits: torch.Tensor,
    method: str,
    n: int = 1000,
    tau: float = 1.0,
    generator: Generator | None = None,
    **options,
) -> dict[str, torch.Tensor | float]:
    """Bias and variance of ``method``'s gradient of ``E[f(sample)]`` against
    :func:`exact_gradient`, from ``n`` independent estimates.

    Returns ``exact``, ``mean`` (of the estimates), ``bias = mean - exact``,
    ``bias_norm`` (its L2 norm), ``variance`` (summed over the logits) and
    ``mse`` (mean squared distance of an estimate to the exact gradient).

    ``logits``: ``(*batch, k)``; ``tau``, ``generator`` and ``options`` go to
    :func:`sample`, which raises on a bad method, option or temperature (shapes:
    ``exact``, ``mean`` and ``bias`` have the logits' shape; the rest are
    floats).
    """
    exact = exact_gradient(f, logits)
    leaf = logits.detach().unsqueeze(0).expand(n, *logits.shape).clone().requires_grad_()
    y = sample(leaf, method, tau, dim=-1, generator=generator, **options)
    (grads,) = torch.autograd.grad(f(y).sum(), leaf)
    mean = grads.mean(0)
    bias = mean - exact
    dims = tuple(range(1, grads.dim()))
    return {
        "exact": exact,
        "mean": mean,
        "bias": bias,
        "bias_norm": float(bias.norm()),
        "variance": float(grads.var(0).sum()),
        "mse": float(((grads - exact) ** 2).sum(dims).mean()),
    }
