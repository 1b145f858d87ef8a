"""Permutations, rankings and subsets: Plackett-Luce samples, exact
matchings, Gumbel-Sinkhorn matrices, relaxed sorts and top-k, and the
metrics that score predicted permutations (see :mod:`gumbelrs.structured`)."""

from __future__ import annotations

import math

import torch

from .. import _dispatch, _ops, _validate
from .._generator import Generator


def _finite_scores(fn: str, scores: torch.Tensor) -> None:
    """Every score finite: a ranking places every item. (Skipped under
    ``torch.func`` transforms, where vmap cannot branch on values.)"""
    if _ops._transformed():
        return
    bad = ~torch.isfinite(scores)
    if bad.any():
        at = bad.nonzero()[0].tolist()
        raise ValueError(f"{fn}: scores{at} is {scores[tuple(at)].item()}; scores must be "
                         "finite: a ranking places every item (drop the items that must "
                         "not be ranked)")


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
    Every score must be finite (a ranking places every item).

    ``generator``: the :class:`~gumbelrs.Generator` of its noise (``None``: torch's
    default generator).

    Raises:
        ValueError: a NaN or infinite score, no item, or ``n_samples`` below 1.
        TypeError: integer or sparse ``scores``, or a bad ``generator``.
    """
    fn = "sample_permutation"
    _validate.logits(fn, scores, name="scores")
    _validate.count(fn, "n_samples", n_samples, 1, 2**31 - 1)
    n = scores.shape[-1]
    if n == 0:
        raise ValueError(f"{fn}: scores have no item along the last dimension (size 0)")
    gen = _validate.generator(fn, generator)
    _finite_scores(fn, scores)  # (under transforms the kernel checks)
    x = _dispatch.prepare(scores.detach().unsqueeze(-2).expand(*scores.shape[:-1], n_samples, n))
    return _ops.gumbel_topk(fn, x, x.dim() - 1, n, _ops.take(gen, fn))


# ---------------------------------------------------------------- exact matching


def matching(weights: torch.Tensor, maximize: bool = True) -> torch.Tensor:
    """The exact linear assignment of each matrix of ``weights``
    (``(*batch, n, m)``, ``1 <= n <= m``): int64 ``(*batch, n)``, ``perm[..., i]``
    the column of row ``i``. Every row gets a column of its own and the total
    ``sum_i weights[..., i, perm[..., i]]`` is the largest possible (the smallest
    with ``maximize=False``): the total of ``scipy.optimize.linear_sum_assignment``.

    - A ``-inf`` weight (``+inf`` with ``maximize=False``) forbids its pair; a
      matrix whose forbidden pairs leave no assignment is an error naming it.
      NaN, and the other infinity (no best total), are errors naming the
      weight; they are looked for in the whole batch first.
    - Solved in float64 (exact for float16, bfloat16 and float32 weights) by
      shortest augmenting paths (Jonker-Volgenant; Crouse 2016 for ``n < m``):
      each row in turn takes the first free column of its best weight, if one
      is free; then each row left over, in order, takes the nearest free
      column through a shortest path of reduced costs. Ties go by that
      procedure (among equally good columns, a free one first, then the
      smaller index), the same on every call: a constant matrix gives row
      ``i`` column ``i``. Each matrix is solved by one thread (matrices in
      parallel across the batch), so results do not depend on the number of
      threads.
    - Integer weights are rejected; convert them with ``weights.double()``.
    - No gradient (the output is integer): weights that require grad are read
      detached.
    - CUDA weights are solved on the CPU (there is no CUDA kernel): they are
      copied to the host, which waits for the device, and the permutations
      come back on the weights' device. Needs no CuPy.
    - To assign the columns of a matrix with ``n > m`` instead, pass
      ``weights.transpose(-2, -1)``.
    """
    fn = "matching"
    _validate.weights(fn, weights)
    _validate.flag(fn, "maximize", maximize)
    return _dispatch.solver(weights.device).matching(fn, weights, maximize)


# ------------------------------------------------ relaxed sorts and subsets, ranking metrics

#: The relaxations :func:`soft_sort` and :func:`stochastic_sort` know.
SORT_METHODS = ("neuralsort", "softsort")


class _Exact(torch.autograd.Function):
    """Forward: zeros shaped like ``soft`` with exact ones at ``index`` along
    the last dimension; backward: the gradient goes to ``soft`` unchanged.
    Straight-through without the float slack of ``hard - soft.detach() + soft``
    (whose values are ``1 - s + s`` and ``0 - s + s``, not always 0 and 1)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(soft, index):
        # Not scatter_: vmap has no batching rule for it and would fall back to a loop.
        return torch.zeros_like(soft).scatter(-1, index, 1.0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad, None

    @staticmethod
    def jvp(ctx, soft_tangent, _index_tangent):
        return soft_tangent


def _exact(index: torch.Tensor, n: int, source: torch.Tensor, relaxed) -> torch.Tensor:
    """The 0/1 tensor ``(*index.shape[:-1], n)`` with ones at ``index``, in the
    dtype ``relaxed()`` computes; its gradient is that of ``relaxed()``, which
    is computed only when something will differentiate through ``source``."""
    if (torch.is_grad_enabled() and source.requires_grad) or _ops._forward_mode() \
            or _ops._transformed():
        return _Exact.apply(relaxed(), index)
    dtype = _validate.compute_dtype(source.dtype)
    return torch.zeros((*index.shape[:-1], n), dtype=dtype,
                       device=source.device).scatter_(-1, index, 1.0)


def _relaxed_sort(s: torch.Tensor, tau: float, method: str) -> torch.Tensor:
    """``(*, n)`` scores -> ``(*, n, n)`` row-stochastic matrix whose row ``i``
    concentrates on the item with the ``i``-th largest score."""
    n = s.shape[-1]
    if method == "neuralsort":
        # Row i (1-indexed): (n + 1 - 2i) s_j - sum_k |s_j - s_k|, largest at the i-th largest s_j.
        spread = (s[..., :, None] - s[..., None, :]).abs().sum(-1)  # (*, n): A_s 1
        coef = n - 1 - 2 * torch.arange(n, dtype=s.dtype, device=s.device)  # (n,)
        w = coef[:, None] * s[..., None, :] - spread[..., None, :]  # (*, n, n)
        # Softmax does not change under a shift: subtracting each row's largest value before
        # dividing by tau keeps a small tau from overflowing to inf - inf = NaN.
        w = w - w.detach().amax(-1, keepdim=True)
    else:
        # The sorted values are not detached: the paper differentiates through sort, which is
        # piecewise linear. Each row's largest entry is exactly 0 (the item itself).
        top = s.sort(-1, descending=True).values  # (*, n)
        w = -(top[..., :, None] - s[..., None, :]).abs()  # (*, n, n)
    return torch.softmax(w / tau, -1)


def _sort_args(fn: str, scores: object, tau: object, hard: object,
               method: object) -> tuple[torch.Tensor, float, bool]:
    scores = _validate.logits(fn, scores, name="scores")
    if scores.shape[-1] == 0:
        raise ValueError(f"{fn}: scores have no item along the last dimension (size 0)")
    t = _validate.scalar_tau(fn, tau, scores)
    hard = _validate.flag(fn, "hard", hard)
    if method not in SORT_METHODS:
        raise ValueError(_validate.message(fn, "method", f"one of {SORT_METHODS}", method))
    _finite_scores(fn, scores)
    return scores, t, hard


def soft_sort(
    scores: torch.Tensor,
    tau: float = 1.0,
    *,
    hard: bool = False,
    method: str = "neuralsort",
) -> torch.Tensor:
    """A relaxed permutation matrix ``P`` of shape ``(*batch, n, n)`` that sorts
    the last dimension of ``scores`` in decreasing order:
    ``P @ scores[..., None]`` approaches ``scores`` sorted descending as
    ``tau -> 0``. Row ``i`` is a distribution over the items, concentrated on
    the one with the ``i``-th largest score; every row sums to 1.

    ``method="neuralsort"`` (Grover et al. 2019): row ``i`` (1-indexed) is
    ``softmax(((n + 1 - 2i) s - A_s 1) / tau)`` with ``A_s[j, k] = |s_j - s_k|``.
    ``method="softsort"`` (Prillo and Eisenschlos 2020): row ``i`` is
    ``softmax(-|sort(s)_i - s| / tau)``, with the gradient through ``sort(s)``
    as in the paper (not detached). Both take ``O(n^2)`` memory per row.

    ``hard=True`` returns the exact permutation matrix (values 0.0 and 1.0) of
    the scores sorted in decreasing order, equal scores in increasing index
    order, with the gradient of the relaxed matrix. ``tau`` is a positive
    float; every score must be finite. float16/bfloat16 are computed in
    float32 and returned in their dtype.

    Raises:
        ValueError: a NaN or infinite score, no item, a bad ``tau`` or an
            unknown ``method``.
        TypeError: integer or sparse ``scores``, or a non-bool ``hard``.
    """
    fn = "soft_sort"
    scores, t, hard = _sort_args(fn, scores, tau, hard, method)
    s = scores.to(_validate.compute_dtype(scores.dtype))
    if not hard:
        return _relaxed_sort(s, t, method).to(scores.dtype)
    perm = s.detach().argsort(dim=-1, descending=True, stable=True)  # (*batch, n)
    p = _exact(perm[..., None], s.shape[-1], scores, lambda: _relaxed_sort(s, t, method))
    return p.to(scores.dtype)


def stochastic_sort(
    scores: torch.Tensor,
    tau: float = 1.0,
    n_samples: int = 1,
    *,
    hard: bool = False,
    method: str = "neuralsort",
    generator: Generator | None = None,
) -> torch.Tensor:
    """:func:`soft_sort` of Plackett-Luce perturbed scores, ``n_samples``
    times: ``(*batch, n_samples, n, n)`` (the samples axis is always there).

    Sample ``s`` relaxes the sort of ``(scores - max(scores)) + g_s`` with the
    Gumbel noise :func:`sample_permutation` draws for the same generator
    state, so with ``hard=True`` the permutation matrices are exactly those of
    ``sample_permutation(scores, n_samples, generator=...)`` (``P[..., i,
    perm[i]] = 1``), with the relaxed gradient (NeuralSort's stochastic
    variant; Grover et al. 2019). Subtracting the row maximum does not change
    the distribution or the relaxation, and keeps the noise's resolution.

    ``tau`` and ``method`` as in :func:`soft_sort`.
    ``generator``: the :class:`~gumbelrs.Generator` of its noise (``None``: torch's
    default generator).

    Raises:
        ValueError: a NaN or infinite score, no item, a bad ``tau`` or an
            unknown ``method``.
        TypeError: integer or sparse ``scores``, or a non-bool ``hard``.
    """
    fn = "stochastic_sort"
    scores, t, hard = _sort_args(fn, scores, tau, hard, method)
    _validate.count(fn, "n_samples", n_samples, 1, 2**31 - 1)
    gen = _validate.generator(fn, generator)
    n = scores.shape[-1]
    shape = [*scores.shape[:-1], n_samples, n]
    stream = _ops.take(gen, fn)

    def relaxed() -> torch.Tensor:
        compute = _validate.compute_dtype(scores.dtype)
        g = _ops.noise("gumbel", shape, compute, scores.device, stream)  # (*batch, S, n)
        s = scores.to(compute).unsqueeze(-2)  # (*batch, 1, n)
        w = (s - s.detach().amax(-1, keepdim=True)) + g  # (*batch, S, n), as the kernel perturbs
        return _relaxed_sort(w, t, method)

    if not hard:
        return relaxed().to(scores.dtype)
    # The ranks from the kernel sample_permutation calls, on the same stream: the same noise.
    x = _dispatch.prepare(scores.detach().unsqueeze(-2).expand(shape))
    perm = _ops.gumbel_topk(fn, x, len(shape) - 1, n, stream)  # (*batch, S, n)
    return _exact(perm[..., None], n, scores, relaxed).to(scores.dtype)


def _log1m_softmax(z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``log(1 - a)`` for ``a = softmax(z)`` without rounding ``a`` to 1.

    Only a row's largest entry can exceed 1/2; elsewhere ``log1p(-a)`` is
    accurate. At the largest, ``1 - a`` is the mass of the others,
    ``logsumexp(others) - logsumexp(z)``: exact however close ``a`` is to 1,
    so the gradient stays finite without clamping (which would cap the
    penalty of a dominant entry and select it again). ``a`` there is
    replaced by 0 in ``log1p`` so that its unused branch has no infinite
    derivative for ``where`` to multiply by 0.
    """
    top = torch.zeros_like(z, dtype=torch.bool).scatter(-1, z.argmax(-1, keepdim=True), True)
    rest = (torch.logsumexp(z.masked_fill(top, -math.inf), -1, keepdim=True)
            - torch.logsumexp(z, -1, keepdim=True))  # (*, 1)
    return torch.where(top, rest, torch.log1p(-a.masked_fill(top, 0.0)))


def _relaxed_subset(w: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """The sum of ``k`` successive softmaxes of ``w / tau``, adding ``log(1 - a)``
    to ``w`` after each softmax ``a`` (Xie and Ermon 2019)."""
    z = (w - w.detach().amax(-1, keepdim=True)) / tau  # shifted: a small tau cannot overflow
    a = torch.softmax(z, -1)
    out = a
    for _ in range(k - 1):
        w = w + _log1m_softmax(z, a)
        z = (w - w.detach().amax(-1, keepdim=True)) / tau
        a = torch.softmax(z, -1)
        out = out + a
    return out


def relaxed_topk(
    logits: torch.Tensor,
    k: int,
    tau: float = 1.0,
    *,
    hard: bool = False,
    generator: Generator | None = None,
) -> torch.Tensor:
    """A relaxed k-hot sample of ``k`` items drawn without replacement from
    ``Categorical(logits=logits)`` along the last dimension (Xie and Ermon
    2019): the sum of ``k`` softmaxes of the perturbed logits
    ``w = (logits - max) + g`` at temperature ``tau``, the first
    ``softmax(w / tau)``, each next one after adding ``log(1 - a)`` of the
    previous softmax ``a`` to ``w``. Same shape as ``logits``; each row sums
    to ``k`` (up to rounding). The noise is that of :func:`gumbel_topk` for
    the same generator state.

    The entries lie in ``[0, k]``, not ``[0, 1]``, once ``k >= 2`` (with
    ``k = 1``, one softmax, they lie in ``[0, 1]``): ``log(1 - a)`` is added
    to ``w`` before the division by ``tau``, so an item that took only part
    of one softmax (a near tie with its winner) keeps most of its weight and
    can take most of the next one too, getting more than 1 while an item of
    the true top ``k`` gets less. Measured in float64 on rows of 10 standard
    normal logits: an entry above 1.1 in 1-3% of rows at ``tau = 0.01``
    (``k`` = 2 or 3), in 19% at ``k = 3, tau = 0.1``, 52% at ``k = 3, tau =
    1`` and 92% at ``k = 5, tau = 1``; over ``tau`` from 0.01 to 5 the
    largest entries were 1.8 (``k = 2``), 2.6 (``k = 3``) and 3.6 (``k =
    5``). A smaller ``tau`` makes large excesses rarer but does not rule
    them out. Where values must stay within 1 (a mask,
    probabilities), use ``hard=True`` (the exact k-hot with this gradient),
    or clamp them at 1 (the rows then sum to less than ``k``).

    ``hard=True`` returns the exact k-hot (values 0.0 and 1.0) of
    ``gumbel_topk(logits, k, generator=...)``, the ``k`` largest perturbed
    logits, with the relaxed gradient. A ``-inf`` logit masks its item out
    (never selected, relaxed mass and gradient exactly 0); each row needs at
    least ``k`` logits that are not ``-inf``.

    Raises:
        ValueError: a NaN or ``+inf`` logit, no category, ``k`` outside ``[1, n]``
            or a bad ``tau``.
        TypeError: integer or sparse ``logits``, a non-bool ``hard`` or a bad
            ``generator``.
    """
    fn = "relaxed_topk"
    _validate.logits(fn, logits)
    n = logits.shape[-1]
    if n == 0:
        raise ValueError(f"{fn}: logits have no category along the last dimension (size 0)")
    _validate.count(fn, "k", k, 1, n, " (the size of logits along the last dimension)")
    t = _validate.scalar_tau(fn, tau, logits)
    hard = _validate.flag(fn, "hard", hard)
    gen = _validate.generator(fn, generator)
    stream = _ops.take(gen, fn)
    x = _dispatch.prepare(logits.detach())
    # The kernel checks the logits (NaN, +inf, fewer than k unmasked) in soft mode too.
    index = _ops.gumbel_topk(fn, x, x.dim() - 1, k, stream)  # (*batch, k)

    def relaxed() -> torch.Tensor:
        compute = _validate.compute_dtype(logits.dtype)
        g = _ops.noise("gumbel", list(logits.shape), compute, logits.device, stream)
        z = logits.to(compute)
        return _relaxed_subset((z - z.detach().amax(-1, keepdim=True)) + g, k, t)

    if not hard:
        return relaxed().to(logits.dtype)
    return _exact(index, n, logits, relaxed).to(logits.dtype)


def _int64(fn: str, name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.int64:
        raise TypeError(f"{fn}: {name} must be an int64 tensor of permutations, got dtype "
                        f"{x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{fn}: {name} must have at least 1 dimension (the items), got a "
                         "0-d tensor")
    return x


def _permutations(fn: str, pred: object, target: object, min_items: int) -> None:
    """``pred`` and ``target``: int64 tensors of one shape whose rows (the last
    dimension) are permutations of ``0..n-1``."""
    pred = _int64(fn, "pred", pred)
    target = _int64(fn, "target", target)
    if pred.shape != target.shape:
        raise ValueError(f"{fn}: pred and target must have the same shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    n = pred.shape[-1]
    if n < min_items:
        why = "a pair of items to compare" if min_items == 2 else "an item"
        raise ValueError(f"{fn}: pred and target need at least {min_items} item(s) along the "
                         f"last dimension ({why}), got shape {tuple(pred.shape)}")
    ref = torch.arange(n, device=pred.device)
    for name, x in (("pred", pred), ("target", target)):
        bad = (x.sort(-1).values != ref).any(-1)
        if bad.any():
            at = tuple(bad.nonzero()[0].tolist())
            where = f"{name}[{', '.join(map(str, at))}]" if at else name
            missing = min(set(range(n)) - set(x[at].tolist()))
            raise ValueError(f"{fn}: {where} must be a permutation of 0..{n - 1} (each index "
                             f"once), but {missing} is missing from it")


def kendall_tau(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Kendall's tau between each row of ``pred`` and ``target``, int64
    permutations ``(*batch, n)`` with ``n >= 2``: ``(concordant - discordant) /
    (n (n - 1) / 2)`` over the pairs of positions ``i < j``, a pair concordant
    when ``pred`` and ``target`` order it the same way (tau-a; permutations have
    no ties, so it equals tau-b and ``scipy.stats.kendalltau(pred_row,
    target_row)``). Returns ``(*batch)`` in the default float dtype: 1 for
    equal rows, -1 for reversed ones. Takes ``O(n^2)`` time per row.

    Raises:
        ValueError: ``pred`` and ``target`` of different shapes, or a row that is
            not a permutation of ``0..n-1``, or fewer than 2 items.
        TypeError: ``pred`` or ``target`` not an int64 tensor.
    """
    fn = "kendall_tau"
    _permutations(fn, pred, target, 2)
    n = pred.shape[-1]
    # Visit the positions in target's order: then a pair is discordant where pred decreases.
    r = pred.gather(-1, target.argsort(-1)).reshape(-1, n)  # (rows, n)
    upper = torch.ones(n, n, dtype=torch.bool, device=pred.device).triu(1)  # (n, n): i < j
    discordant = torch.empty(r.shape[0], dtype=torch.int64, device=pred.device)
    chunk = max(1, 2**24 // (n * n))  # rows per pass: at most 16 MiB of pair flags
    for lo in range(0, r.shape[0], chunk):
        part = r[lo:lo + chunk]  # (c, n)
        discordant[lo:lo + chunk] = ((part[:, :, None] > part[:, None, :]) & upper).sum((1, 2))
    tau = 1.0 - 4.0 * discordant.double() / (n * (n - 1))
    return tau.to(torch.get_default_dtype()).reshape(pred.shape[:-1])


def _fraction(fn: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    _permutations(fn, pred, target, 1)
    if pred.numel() == 0:
        raise ValueError(f"{fn}: pred and target have no row (shape {tuple(pred.shape)}); the "
                         "proportion of none is undefined")


def proportion_all_correct(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The fraction of rows (permutations along the last dimension) where
    ``pred`` equals ``target`` at every position: a 0-dim tensor in the
    default float dtype.

    ``pred`` and ``target``: int64 ``(*batch, n)``; returns a 0-d tensor.

    Raises:
        ValueError: ``pred`` and ``target`` of different shapes, or a row that is
            not a permutation of ``0..n-1``, or no row.
        TypeError: ``pred`` or ``target`` not an int64 tensor.
    """
    _fraction("proportion_all_correct", pred, target)
    return (pred == target).all(-1).to(torch.get_default_dtype()).mean()


def proportion_wrong(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The fraction of positions, over all rows, where ``pred`` differs from
    ``target``: a 0-dim tensor in the default float dtype.

    ``pred`` and ``target``: int64 ``(*batch, n)``; returns a 0-d tensor.

    Raises:
        ValueError: ``pred`` and ``target`` of different shapes, or a row that is
            not a permutation of ``0..n-1``, or no row.
        TypeError: ``pred`` or ``target`` not an int64 tensor.
    """
    _fraction("proportion_wrong", pred, target)
    return (pred != target).to(torch.get_default_dtype()).mean()


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
    perm = matching(perturbed, maximize=True)
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
