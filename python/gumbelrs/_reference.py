"""Plain-torch versions of every op, fed the noise explicitly.

This is the test oracle: each function computes the textbook formula with
ordinary torch ops from noise drawn by :func:`gumbelrs.functional._noise` with
the same generator state the fast op used, so the two must agree (bitwise for
noise, hard samples and indices; to a few ULP for soft values). It is also
readable documentation of what the kernels compute.
"""

from __future__ import annotations

import torch


def gumbel_from_uniform(v: torch.Tensor) -> torch.Tensor:
    """Gumbel noise from the tail variable ``v``: ``-log(-log1p(-v))``."""
    return -torch.log(-torch.log1p(-v))


def logistic_from_uniform(v: torch.Tensor) -> torch.Tensor:
    """Logistic noise from the tail variable ``v``: ``log((1 - v) / v)``."""
    return torch.log((1 - v) / v)


def per_row(tau, logits: torch.Tensor, dim: int):
    """``tau`` made to broadcast against ``logits``: a tensor with the batch
    shape (one temperature per row) gets a size-1 axis at ``dim``."""
    if isinstance(tau, torch.Tensor) and tau.dim() == logits.dim() - 1:
        return tau.unsqueeze(dim)
    return tau


def perturbed(logits, gumbels, dim=-1):
    """``(logits - max(logits, dim)) + g``: the perturbed logits, relative to
    each row's largest logit so that the noise keeps its resolution however
    large the logits are (``logits + g`` loses the noise of logits near 1e8 to
    rounding in float32). The same distribution: argmax and softmax do not
    change when a row is shifted."""
    return (logits - logits.detach().amax(dim, keepdim=True)) + gumbels


def gumbel_softmax(logits, gumbels, tau=1.0, hard=False, dim=-1):
    """``softmax((logits + g) / tau)``; hard: one-hot of ``argmax(logits + g)``
    with the straight-through gradient of the soft sample (both computed from
    :func:`perturbed`)."""
    w = perturbed(logits, gumbels, dim)
    y = torch.softmax(w / per_row(tau, logits, dim), dim)
    if not hard:
        return y
    one_hot = torch.zeros_like(y).scatter_(dim, w.argmax(dim, keepdim=True), 1.0)
    return one_hot - y.detach() + y


def gumbel_softmax_backward(grad, y, tau=1.0, dim=-1):
    """``y * (grad - sum(grad * y)) / tau``."""
    return y * (grad - (grad * y).sum(dim, keepdim=True)) / per_row(tau, y, dim)


def sample_categorical(logits, gumbels, dim=-1):
    """Argmax of :func:`perturbed` logits with ``gumbels[s]`` for each draw
    ``s``; ``gumbels`` has shape ``(num_samples, *logits.shape)``. Returns
    ``(*batch, num_samples)``."""
    d = dim % logits.dim()
    return perturbed(logits.unsqueeze(0), gumbels, d + 1).argmax(d + 1).movedim(0, -1)


def gumbel_topk(logits, gumbels, k, dim=-1):
    """Indices of the ``k`` largest :func:`perturbed` logits along ``dim``, in order."""
    w = perturbed(logits, gumbels, dim)
    return torch.topk(w, k, dim=dim, largest=True, sorted=True).indices


def relaxed_bernoulli(logits, logistic, tau=1.0, hard=False):
    """``sigmoid((logits + L) / tau)``; hard: ``logits + L > 0`` straight-through."""
    y = torch.sigmoid((logits + logistic) / tau)
    if not hard:
        return y
    return (logits + logistic > 0).to(y.dtype) - y.detach() + y


def hard_concrete(logits, logistic, tau=2.0 / 3.0, limits=(-0.1, 1.1)):
    """``clamp(lo + (hi - lo) * sigmoid((logits + L) / tau), 0, 1)``."""
    lo, hi = limits
    s = torch.sigmoid((logits + logistic) / tau)
    return torch.clamp(s * (hi - lo) + lo, 0.0, 1.0)


def gumbel_sinkhorn(log_alpha, gumbels, tau=1.0, n_iters=20, tol=None, noise_scale=1.0,
                    iters=None):
    """Gumbel-Sinkhorn samples of ``log_alpha`` ``(*batch, n, n)`` with the noise
    ``gumbels`` ``(*batch, n_samples, n, n)``, and the iterations run on each
    matrix (int64 ``(*batch, n_samples)``).

    ``X = (perturbed(log_alpha) + noise_scale * g) / tau`` (each row shifted so
    that its largest entry is 0, as :func:`perturbed`); each iteration
    subtracts the logsumexp of every row, then of every column; the sample is
    ``exp(X)``. With ``tol`` a matrix stops after the first iteration (but the
    last) whose rows all sum to within ``tol`` of 1; ``iters`` instead gives
    each matrix's number of iterations.
    """
    la = log_alpha.unsqueeze(-3)
    x = ((la - la.detach().amax(-1, keepdim=True)) + noise_scale * gumbels) / tau
    count = torch.full(x.shape[:-2], n_iters, dtype=torch.int64, device=x.device)
    if iters is not None:
        count = iters.to(torch.int64)
    done = torch.zeros_like(count, dtype=torch.bool)
    for t in range(n_iters):
        live = (t < count) & ~done
        y = x - x.logsumexp(-1, keepdim=True)
        y = y - y.logsumexp(-2, keepdim=True)
        x = torch.where(live[..., None, None], y, x)
        if tol is not None and iters is None and t < n_iters - 1:
            met = live & ((x.exp().sum(-1) - 1).abs().amax(-1) <= tol)
            count = torch.where(met, t + 1, count)
            done = done | met
    return x.exp(), count
