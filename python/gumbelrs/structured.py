"""Gumbel-perturbed structures ("softened classics").

So far: Plackett-Luce permutations and exact matchings. A Plackett-Luce
ranking of items with scores ``s`` picks the first item with probability
``softmax(s)``, the next from the softmax of the remaining scores, and so on;
sorting ``s + g`` with i.i.d. standard Gumbel noise ``g`` draws exactly that
ranking (Yellott 1977), which is what :func:`sample_permutation` does with the
Gumbel-top-k kernel. Its distribution is
:class:`gumbelrs.distributions.PlackettLuce`.

:func:`matching` is the exact solver of the linear assignment problem (a
Rust kernel, batched and parallel across the batch): the permutation that a
perturbed matching (``matching(log_alpha + g)``) draws.
"""

from __future__ import annotations

import torch

from . import _dispatch, _ops, _validate
from ._generator import Generator

__all__ = ["matching", "sample_permutation"]


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
