"""Plackett-Luce permutations: gumbelrs.structured.sample_permutation and
gumbelrs.distributions.PlackettLuce."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

import gumbelrs
from gumbelrs import Generator, _reference
from gumbelrs.distributions import PlackettLuce
from gumbelrs.functional import _noise
from gumbelrs.structured import sample_permutation

from .conftest import raises

ALPHA = 1e-4  # false-failure rate of each chi-square test


def test_samples_are_the_sorted_perturbed_scores_bitwise():
    scores = torch.randn(3, 4, 7, generator=torch.Generator().manual_seed(0)) * 3
    out = sample_permutation(scores, 5, generator=Generator(11))
    assert out.shape == (3, 4, 5, 7) and out.dtype == torch.int64
    g = _noise("gumbel", [3, 4, 5, 7], generator=Generator(11))
    ref = _reference.gumbel_topk(scores.unsqueeze(-2).expand(3, 4, 5, 7), g, 7)
    assert torch.equal(out, ref)
    assert torch.equal(out.sort(-1).values, torch.arange(7).expand(3, 4, 5, 7))


def test_log_prob_is_a_distribution_over_all_permutations():
    scores = torch.tensor([[0.3, -1.2, 2.0, 0.0], [5.0, 5.0, -5.0, 1.0]], dtype=torch.float64)
    perms = torch.tensor(list(itertools.permutations(range(4))))  # (24, 4)
    lp = PlackettLuce(scores).log_prob(perms[:, None, :])  # (24, 2)
    torch.testing.assert_close(lp.exp().sum(0), torch.ones(2, dtype=torch.float64))
    # The first pick is softmax(scores), then the softmax of the rest.
    p = torch.softmax(scores[0], 0)
    first = (p[2] * torch.softmax(scores[0, [0, 1, 3]], 0)[2]
             * torch.softmax(scores[0, [0, 1]], 0)[0])
    torch.testing.assert_close(lp[perms.tolist().index([2, 3, 0, 1]), 0], first.log())


def test_sampled_rankings_follow_log_prob():
    """Chi-square of 60,000 rankings of 4 items against exp(log_prob) (24 cells)."""
    scores = torch.tensor([1.0, 0.0, -0.5, 0.7])
    d = PlackettLuce(scores, generator=Generator(20261206))
    draws = d.sample((60_000,))
    assert draws.shape == (60_000, 4)
    perms = list(itertools.permutations(range(4)))
    code = (draws * torch.tensor([64, 16, 4, 1])).sum(-1)
    index = {sum(v * w for v, w in zip(p, (64, 16, 4, 1))): i for i, p in enumerate(perms)}
    counts = np.bincount([index[int(c)] for c in code], minlength=24)
    probs = d.log_prob(torch.tensor(perms)).double().exp().numpy()
    assert stats.chisquare(counts, probs / probs.sum() * counts.sum()).pvalue > ALPHA


def test_sample_shapes_and_batches():
    d = PlackettLuce(torch.zeros(2, 3, 5), generator=Generator(1))
    assert d.batch_shape == (2, 3) and d.event_shape == (5,)
    assert d.sample().shape == (2, 3, 5)
    assert d.sample((4, 6)).shape == (4, 6, 2, 3, 5)
    assert d.sample((0,)).shape == (0, 2, 3, 5)
    e = PlackettLuce(torch.zeros(1, 5)).expand((7, 5 // 5 * 4))
    assert e.batch_shape == (7, 4) and e.sample().shape == (7, 4, 5)
    assert math.isclose(float(d.log_prob(d.sample())[0, 0]), -math.log(120), rel_tol=1e-6)


def test_bad_input_gets_a_clear_error():
    for bad in ("-inf", "inf", "nan"):
        with raises(ValueError, f"sample_permutation: scores[1, 0] is {bad}; scores must be "
                                "finite: a ranking places every item (drop the items that must "
                                "not be ranked)"):
            sample_permutation(torch.tensor([[0.0, 1.0], [float(bad), 2.0]]))
    with raises(ValueError, "sample_permutation: scores have no item along the last dimension "
                            "(size 0)"):
        sample_permutation(torch.zeros(3, 0))
    with pytest.raises(ValueError, match=r"^sample_permutation: n_samples must be"):
        sample_permutation(torch.zeros(3), 0)
    d = PlackettLuce(torch.zeros(3), validate_args=True)
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.tensor([0, 0, 1]))
    scores = torch.randn(4)
    before = scores.clone()
    sample_permutation(scores, 3, generator=Generator(0))
    assert torch.equal(scores, before)  # inputs are never modified


def test_vmap_draws_as_the_other_ops_do():
    scores = torch.randn(4, 6)
    out = torch.func.vmap(lambda s: sample_permutation(s, 2, generator=Generator(3)),
                          randomness="different")(scores)
    assert torch.equal(out, sample_permutation(scores, 2, generator=Generator(3)))


def test_module_is_public():
    assert gumbelrs.structured.sample_permutation is sample_permutation
    assert "PlackettLuce" in gumbelrs.distributions.__all__
