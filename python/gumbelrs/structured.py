"""Gumbel-perturbed structures ("softened classics").

Plackett-Luce permutations: a Plackett-Luce ranking of items with scores
``s`` picks the first item with probability ``softmax(s)``, the next from
the softmax of the remaining scores, and so on; sorting ``s + g`` with
i.i.d. standard Gumbel noise ``g`` draws exactly that ranking (Yellott 1977),
which is what :func:`sample_permutation` does with the Gumbel-top-k kernel.
Its distribution is :class:`gumbelrs.distributions.PlackettLuce`.

Gumbel-Sinkhorn matrices (:func:`gumbel_sinkhorn`; Mena et al. 2018): a
matrix of log-weights plus Gumbel noise, divided by a temperature and
normalised in log space by alternating row and column logsumexps, is a
nearly doubly stochastic relaxation of the permutation matrix of the
maximum-weight matching of the perturbed weights; ``hard=True`` returns
that permutation matrix exactly, with the relaxation's gradient.
"""

from __future__ import annotations

import math

import torch

from . import _dispatch, _ops, _validate
from ._generator import Generator

__all__ = ["gumbel_sinkhorn", "sample_permutation"]


def sample_permutation(
    scores: torch.Tensor,
    n_samples: int = 1,
    *,
    generator: Generator | None = None,
) -> torch.Tensor:
    """``n_samples`` Plackett-Luce rankings of the last dimension of ``scores``:
    int64 ``(*batch, n_samples, n)`` (the samples axis is always there), each
    row the items in the order drawn, i.e. the indices of ``scores + g``
    sorted in decreasing order. Sample ``s`` uses the noise the Gumbel-top-k
    kernel gives row ``s`` of ``scores`` expanded to ``(*batch, n_samples, n)``.
    Every score must be finite (a ranking places every item)."""
    fn = "sample_permutation"
    _validate.logits(fn, scores)
    _validate.count(fn, "n_samples", n_samples, 1, 2**31 - 1)
    n = scores.shape[-1]
    if n == 0:
        raise ValueError(f"{fn}: scores have no item along the last dimension (size 0)")
    gen = _validate.generator(fn, generator)
    if not _ops._transformed():  # (vmap cannot branch on values; the kernel checks there)
        bad = ~torch.isfinite(scores)
        if bad.any():
            at = bad.nonzero()[0].tolist()
            raise ValueError(f"{fn}: scores{at} is {scores[tuple(at)].item()}; scores must be "
                             "finite: a ranking places every item (drop the items that must "
                             "not be ranked)")
    x = _dispatch.prepare(scores.detach().unsqueeze(-2).expand(*scores.shape[:-1], n_samples, n))
    return _ops.gumbel_topk(fn, x, x.dim() - 1, n, _ops.take(gen, fn))


def _sinkhorn_weights(fn: str, log_alpha: torch.Tensor) -> None:
    """``log_alpha`` may hold -inf (a forbidden pair), but no NaN or +inf, and
    every row and every column needs an entry above -inf."""
    if bool(torch.isfinite(log_alpha).all()):
        return
    bad = torch.isnan(log_alpha) | (log_alpha == math.inf)
    if bad.any():
        at = bad.nonzero()[0].tolist()
        raise ValueError(f"{fn}: log_alpha{at} is {log_alpha[tuple(at)].item()}; log_alpha must be "
                         "finite or -inf (a -inf entry forbids that pair)")
    masked = log_alpha == -math.inf
    for axis, what in ((-1, "row"), (-2, "column")):
        empty = masked.all(axis)
        if empty.any():
            *at, k = empty.nonzero()[0].tolist()
            index = [*at, k, ":"] if what == "row" else [*at, ":", k]
            raise ValueError(
                f"{fn}: log_alpha[{', '.join(map(str, index))}] is -inf everywhere; every row "
                "and every column needs an entry above -inf (a permutation pairs each row with "
                "a column)")


def _permutation_matrix(perturbed: torch.Tensor) -> torch.Tensor:
    """The 0/1 permutation matrices of the maximum-weight matchings of
    ``perturbed`` ``(*batch, n, n)``: 1 at ``(i, j)`` where row ``i`` is matched
    to column ``j``."""
    perm = matching(perturbed, maximize=True)  # noqa: F821 (merged from the assignment branch)
    return torch.zeros_like(perturbed).scatter_(-1, perm.unsqueeze(-1), 1.0)


def gumbel_sinkhorn(
    log_alpha: torch.Tensor,
    tau: float = 1.0,
    n_iters: int = 20,
    *,
    tol: float | None = None,
    n_samples: int = 1,
    hard: bool = False,
    noise_scale: float = 1.0,
    generator: Generator | None = None,
) -> torch.Tensor:
    """``n_samples`` Gumbel-Sinkhorn matrices of each matrix of log-weights in
    ``log_alpha`` ``(*batch, n, n)``: ``(*batch, n_samples, n, n)`` (the samples
    axis is always there), ``P[..., i, j]`` ~ row ``i`` goes to column ``j``
    (Mena, Belanger, Linderman and Snoek 2018).

    Sample ``s`` of matrix ``b`` starts from
    ``X = ((log_alpha[b] - row max) + noise_scale * g) / tau``, with ``g`` the
    standard Gumbel noise of element ``(b, s, i, j)`` of a ``(*batch,
    n_samples, n, n)`` tensor (``gumbelrs.gumbel_noise`` of that shape, drawn
    with the same generator state); each row is shifted so that its largest
    log-weight is 0 before the noise is added, as every op of this package
    perturbs (no normalised matrix or matching changes when a constant is
    added to a row, and the noise keeps its resolution at any scale). Then
    ``n_iters`` times: subtract the logsumexp of every row, then that of
    every column (rows first). The result is ``exp(X)``: its columns sum to 1
    up to rounding, its rows converge to 1. With ``tol``, a matrix stops after
    the first iteration whose rows all sum to within ``tol`` of 1 (checked
    after every iteration but the last; ``n_iters`` is the cap). Sums of
    exponentials are accumulated in the input's float type (float32 for
    float16/bfloat16 inputs, which get their result in their dtype), each
    term at most 1: a row's are shifted by its maximum in the first
    iteration and by 0 after (every entry is then at most 0), a column's are
    the row-normalised entries; a sum small enough to have lost precision to
    underflow is recomputed with its maximum subtracted.

    ``hard=True`` returns the exact 0/1 permutation matrix of the
    maximum-weight matching (:func:`matching`) of the perturbed weights
    ``(log_alpha - row max) + noise_scale * g`` (the matching of
    ``log_alpha + noise_scale * g``), whose gradient is that of the soft
    sample (straight-through, without float slack).

    ``noise_scale=0`` is deterministic Sinkhorn normalisation of
    ``log_alpha / tau``: no noise is drawn, but the generator still advances
    by one call (torch's RNG still gives one seed for ``generator=None``), so
    later draws do not depend on ``noise_scale``. ``tau`` is a float (no
    gradient). A ``-inf`` log-weight forbids its pair (its entry is exactly 0,
    and so is its gradient); every row and column needs an entry above
    ``-inf``. NaN and +inf are errors.

    Memory: autograd keeps ``log_alpha`` (the tensor itself), the stream and 4
    bytes a matrix (its iteration count), not the samples. The backward
    reruns the forward with the noise redrawn, keeping ``3 n'`` values an
    iteration, and walks back through the iterations: each thread holds
    ``2 n n' + 3 k n' + 8 n'`` values of the input's float type for ``k``
    iterations (``n n' + 6 n'`` in the forward), ``n'`` being ``n`` rounded up
    to a multiple of 16 (float32) or 8 (float64); with ``n_samples > 1`` the
    backward also holds the samples' gradients, ``(*batch, n_samples, n, n)``,
    until it sums them. Double backward differentiates the same algorithm
    written with torch ops (:mod:`gumbelrs._reference`), which keeps every
    iteration.

    Runs on the CPU kernels; CUDA tensors are copied to the CPU and the
    result back (there is no CUDA kernel for this op). Not supported under
    ``torch.func`` transforms; under ``torch.compile`` the checks of the
    values break the graph.
    """
    fn = "gumbel_sinkhorn"
    _validate.logits(fn, log_alpha, min_dim=2, name="log_alpha")
    n, m = log_alpha.shape[-2:]
    if n != m:
        raise ValueError(f"{fn}: log_alpha must be square in its last two dimensions "
                         f"(*batch, n, n), got shape {tuple(log_alpha.shape)}")
    if n == 0:
        raise ValueError(f"{fn}: log_alpha has n = 0 (shape {tuple(log_alpha.shape)}); "
                         "a permutation needs at least one item")
    if isinstance(tau, torch.Tensor):
        raise _validate.wrong_type(fn, "tau", "a positive float (no tensor: tau gets no "
                                   "gradient)", tau)
    t, _ = _validate.tau(fn, tau, log_alpha, ())
    _validate.count(fn, "n_iters", n_iters, 1, 2**31 - 1)
    if tol is not None:
        tol = _validate.positive(fn, "tol", tol, "None or a positive finite number")
    _validate.count(fn, "n_samples", n_samples, 1, 2**31 - 1)
    scale = _validate.non_negative(fn, "noise_scale", noise_scale)
    hard = _validate.flag(fn, "hard", hard)
    gen = _validate.generator(fn, generator)
    if _ops._transformed():
        raise RuntimeError(f"{fn}: torch.func transforms (vmap, grad, jacrev, ...) are not "
                           "supported; pass the batch as leading dimensions of log_alpha and "
                           "use torch.autograd")
    _sinkhorn_weights(fn, log_alpha)
    x = _dispatch.prepare(log_alpha)
    solve = _permutation_matrix if hard else None
    y = _ops.gumbel_sinkhorn(x, n_samples, t, n_iters, tol, scale, _ops.take(gen, fn), solve, fn)
    return y.to(log_alpha.dtype)
