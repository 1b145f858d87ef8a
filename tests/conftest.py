import re

import pytest

import gumbelrs


@pytest.fixture
def gen():
    """A fresh generator with a fixed seed (statistical tests are deterministic)."""
    return gumbelrs.Generator(seed=20261125)


@pytest.fixture(autouse=True)
def _restore_threads():
    before = gumbelrs.get_num_threads()
    yield
    gumbelrs.set_num_threads(before)


def raises(exc, message):
    """``pytest.raises`` that demands exactly ``message``."""
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def tied_logits(shape, dim, seed):
    """Logits whose perturbed maximum ties in most rows, for the generator
    ``gumbelrs.Generator(seed)``, and the category each row must pick.

    The noise of a call is known in advance (``gumbel_noise`` with the same
    generator state), so the larger of each row's two largest Gumbels is
    lowered by the logit ``g_small - g_large``: both perturbed values are then
    exactly ``g_small`` (the difference of two close floats is exact), the row's
    largest logit stays 0, and the first of the two categories must win.
    Returns ``(logits, first)`` with ``first`` the winning index of each row
    (``(logits - max) + g`` has its first maximum there) and the number of rows
    that tie.
    """
    import torch

    from gumbelrs import _reference

    g = gumbelrs.gumbel_noise(shape, generator=gumbelrs.Generator(seed)).movedim(dim, -1)
    x = torch.zeros_like(g)
    top2 = g.topk(2, -1).indices  # (*batch, 2): largest, second largest
    large, small = top2[..., 0:1], top2[..., 1:2]
    x.scatter_(-1, large, g.gather(-1, small) - g.gather(-1, large))
    w = _reference.perturbed(x, g)
    ties = (w.gather(-1, large) == w.gather(-1, small)).squeeze(-1)
    first = w.argmax(-1)  # torch's argmax returns the first maximum
    return x.movedim(-1, dim).contiguous(), first, int(ties.sum())
