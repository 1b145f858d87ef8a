"""Gumbel-perturbed structures ("softened classics").

So far: Plackett-Luce permutations. A Plackett-Luce ranking of items with
scores ``s`` picks the first item with probability ``softmax(s)``, the next
from the softmax of the remaining scores, and so on; sorting ``s + g`` with
i.i.d. standard Gumbel noise ``g`` draws exactly that ranking (Yellott 1977),
which is what :func:`sample_permutation` does with the Gumbel-top-k kernel.
Its distribution is :class:`gumbelrs.distributions.PlackettLuce`.
"""

from __future__ import annotations

import torch

from . import _dispatch, _ops, _validate
from ._generator import Generator

__all__ = ["sample_permutation"]


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
