"""Gradient estimators: the conditional Gumbel sampler, exact gradients, and
the bias and variance of every method on a toy problem.

Statistical assertions use fixed seeds; KS tests assert p > 1e-4."""

import pytest
import torch
from scipy import stats

import gumbelrs
from gumbelrs import estimators

from .conftest import raises

LOGITS = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0], dtype=torch.float64)
TARGET = torch.tensor([0.1, 0.0, 0.9, 0.2, 0.4], dtype=torch.float64)


def f(y):
    return ((y - TARGET) ** 2).sum(-1)


def test_conditional_gumbels_keep_the_argmax_and_have_the_right_law():
    x = torch.tensor([[0.3, -1.0, 2.0, 0.0], [1.0, 1.0, -0.5, float("-inf")]],
                     dtype=torch.float64)
    index = torch.tensor([1, 0])
    z = gumbelrs.gumbel_given_argmax(x, index, 20_000, generator=gumbelrs.Generator(1))
    assert z.shape == (20_000, 2, 4)
    assert torch.equal(z.argmax(-1), index.expand(20_000, 2))
    assert bool((z[:, 1, 3] == float("-inf")).all())
    lse = x.logsumexp(-1)
    # The maximum is Gumbel(logsumexp(x)) whichever index it is conditioned on.
    for r in range(2):
        top = (z[:, r, index[r]] - lse[r]).numpy()
        assert stats.kstest(top, "gumbel_r").pvalue > 1e-4
    # The others are Gumbels at x_i truncated below the top: their conditional
    # CDF F(z_i | top) = exp(-exp(-(z_i - x_i))) / exp(-exp(-(top - x_i))) is uniform.
    top = z[:, 0, 1]
    for i in (0, 2, 3):
        u = torch.exp(-torch.exp(-(z[:, 0, i] - x[0, i])) + torch.exp(-(top - x[0, i])))
        assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-4


def test_conditional_sampler_errors():
    x = torch.tensor([[0.0, float("-inf")]])
    with raises(ValueError, "gumbel_given_argmax: index for logits[0, :] is out of range [0, 2) "
                "or points at a -inf logit; the conditioned category must have nonzero "
                "probability"):
        gumbelrs.gumbel_given_argmax(x, torch.tensor([1]))
    with raises(ValueError, "gumbel_given_argmax: index must have the batch shape (1,) (logits' "
                "shape without dim=-1), got (2,)"):
        gumbelrs.gumbel_given_argmax(x, torch.tensor([0, 0]))


def test_exact_gradient_of_a_linear_function():
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0], dtype=torch.float64)
    g = estimators.exact_gradient(lambda y: (y * c).sum(-1), LOGITS)
    p = LOGITS.softmax(-1)
    torch.testing.assert_close(g, p * (c - (p * c).sum()))


def _diag(method, tau, **opts):
    return estimators.diagnose(f, LOGITS, method, n=20_000, tau=tau,
                               generator=gumbelrs.Generator(7), **opts)


def test_soft_bias_shrinks_with_temperature_while_variance_grows():
    hot, warm, cold = (_diag("soft", t) for t in (1.0, 0.5, 0.1))
    assert hot["bias_norm"] > warm["bias_norm"] > cold["bias_norm"]
    assert hot["variance"] < warm["variance"] < cold["variance"]


def test_gumbel_rao_variance_falls_as_k_grows_at_the_same_mean():
    st = _diag("st", 0.5)
    rao10 = _diag("gumbel_rao", 0.5, k=10)
    rao100 = _diag("gumbel_rao", 0.5, k=100)
    assert rao100["variance"] < rao10["variance"] < 0.7 * st["variance"]
    # Rao-Blackwellization keeps the expectation of the straight-through estimate.
    torch.testing.assert_close(rao100["mean"], st["mean"], atol=0.02, rtol=0)


@pytest.mark.parametrize("method", estimators.METHODS)
def test_every_method_gives_finite_bias_and_variance_and_a_valid_forward(method):
    r = _diag(method, 1.0)
    assert r["bias_norm"] < 0.5 and 0 < r["variance"] < 5
    y = estimators.sample(LOGITS.expand(100, -1), method, 0.5, generator=gumbelrs.Generator(2))
    assert y.shape == (100, 5)
    torch.testing.assert_close(y.sum(-1), torch.ones(100, dtype=torch.float64))
    if method != "soft":
        assert set(y.detach().unique().tolist()) <= {0.0, 1.0}


def test_reinmax_is_second_order_accurate_on_the_toy():
    # ReinMax's bias at tau = 1 is several times smaller than straight-through's.
    assert _diag("reinmax", 1.0)["bias_norm"] < 0.3 * _diag("st", 1.0)["bias_norm"]


def test_decoupled_uses_the_backward_temperature_for_gradients():
    a = _diag("decoupled", 0.5, tau_forward=0.1, tau_backward=1.0)
    b = _diag("st", 1.0)
    torch.testing.assert_close(a["mean"], b["mean"])


def test_estimator_errors():
    with raises(ValueError, "estimators.sample: method must be one of ('soft', 'st', "
                "'gumbel_rao', 'reinmax', 'gst', 'decoupled'), got 'rebar'"):
        estimators.sample(LOGITS, "rebar")
    with raises(TypeError, "estimators.sample: method 'st' takes options none, got ['k']"):
        estimators.sample(LOGITS, "st", k=3)
    with raises(ValueError, "estimators.sample: gap must be a finite number >= 0, got -1.0"):
        estimators.sample(LOGITS, "gst", gap=-1.0)
    with raises(ValueError, "estimators.sample: k must be an int in [1, 1048576], got 0"):
        estimators.sample(LOGITS, "gumbel_rao", k=0)
