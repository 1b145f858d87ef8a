"""gumbelrs.distributions: densities against closed forms and torch, samples
against their distributions, shapes, straight-through variants.

Statistical tests use fixed seeds and assert p > 1e-4 (false-failure rate 1e-4
each for a random seed)."""

import math
import re

import pytest
import torch
from scipy import integrate, stats

import gumbelrs
from gumbelrs import distributions as D

ALPHA = 1e-4


def concrete_log_density(y, logits, tau):
    """Maddison et al. (2017), eq. for the Concrete density, written directly."""
    k = y.shape[-1]
    a = logits.softmax(-1)
    log_num = math.lgamma(k) + (k - 1) * math.log(tau) + (a.log() - (tau + 1) * y.log()).sum(-1)
    return log_num - k * (a * y.pow(-tau)).sum(-1).log()


def test_concrete_log_prob_is_the_closed_form_and_matches_torch():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, dtype=torch.float64)
    d = D.RelaxedOneHotCategorical(0.7, logits=logits, generator=gumbelrs.Generator(1))
    y = d.rsample((3,))
    assert y.shape == (3, 5, 4)
    lp = d.log_prob(y)
    assert lp.shape == (3, 5)
    torch.testing.assert_close(lp, concrete_log_density(y, logits, 0.7))
    ref = torch.distributions.RelaxedOneHotCategorical(torch.tensor(0.7, dtype=torch.float64),
                                                       logits=logits)
    torch.testing.assert_close(lp, ref.log_prob(y))


def test_exp_concrete_is_the_log_of_concrete():
    logits = torch.randn(6, 3, dtype=torch.float64)
    e = D.ExpRelaxedCategorical(1.3, logits=logits, generator=gumbelrs.Generator(2))
    c = D.RelaxedOneHotCategorical(1.3, logits=logits, generator=gumbelrs.Generator(2))
    x = e.rsample()
    torch.testing.assert_close(x.exp(), c.rsample())
    torch.testing.assert_close(e.log_prob(x), c.log_prob(x.exp()) + x.sum(-1))


def test_concrete_density_integrates_to_one_for_two_categories():
    d = D.RelaxedOneHotCategorical(0.6, logits=torch.tensor([0.3, -0.4], dtype=torch.float64))

    def density(y1):
        y = torch.tensor([y1, 1 - y1], dtype=torch.float64)
        return float(d.log_prob(y).exp())

    # On the 1-simplex the density w.r.t. y1 carries the same value.
    total, _ = integrate.quad(density, 0, 1, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_batch_temperature_gives_batch_shaped_log_prob():
    tau = torch.tensor([0.3, 0.8, 2.0])
    d = D.RelaxedOneHotCategorical(tau, logits=torch.zeros(3, 5))
    y = d.rsample((7,))
    lp = d.log_prob(y)
    assert lp.shape == (7, 3)
    for b in range(3):
        single = D.RelaxedOneHotCategorical(float(tau[b]), logits=torch.zeros(5))
        torch.testing.assert_close(lp[:, b], single.log_prob(y[:, b]))
    rb = D.RelaxedBernoulli(tau, logits=torch.zeros(3))
    assert rb.log_prob(rb.rsample((4,))).shape == (4, 3)


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_relaxed_bernoulli_samples_follow_their_cdf(tau):
    logit = 0.4
    d = D.RelaxedBernoulli(tau, logits=torch.full((50_000,), logit, dtype=torch.float64),
                           generator=gumbelrs.Generator(3))
    y = d.sample().numpy()

    def cdf(v):
        x = torch.tensor(v).clamp(1e-300, 1 - 1e-16)
        return torch.sigmoid(tau * (x.log() - (-x).log1p()) - logit).numpy()

    assert stats.kstest(y, cdf).pvalue > ALPHA


def test_relaxed_bernoulli_log_prob_matches_torch_and_is_finite_at_the_ends():
    logits = torch.randn(20, dtype=torch.float64)
    d = D.RelaxedBernoulli(0.5, logits=logits)
    ref = torch.distributions.RelaxedBernoulli(torch.tensor(0.5, dtype=torch.float64),
                                               logits=logits)
    y = torch.rand(20, dtype=torch.float64) * 0.98 + 0.01
    torch.testing.assert_close(d.log_prob(y), ref.log_prob(y))
    ends = d.log_prob(torch.tensor([0.0, 1.0], dtype=torch.float64).expand(20, 2).T)
    assert torch.isfinite(ends).all()
    lrb = D.LogitRelaxedBernoulli(0.5, logits=logits)
    x = lrb.rsample()
    torch.testing.assert_close(lrb.log_prob(x) - torch.sigmoid(x).log() - (-x).sigmoid().log(),
                               d.log_prob(torch.sigmoid(x)))


def test_hard_concrete_point_masses_l0_and_total_probability():
    logits = torch.tensor([-1.0, 0.0, 1.5], dtype=torch.float64)
    d = D.HardConcrete(logits, temperature=2 / 3, generator=gumbelrs.Generator(4))
    z = d.sample((40_000,))
    p0, p1 = d.prob_zero(), d.prob_one()
    for c in range(3):
        counts = [int((z[:, c] == 0).sum()), int((z[:, c] == 1).sum()),
                  int(((z[:, c] > 0) & (z[:, c] < 1)).sum())]
        expected = [float(p0[c]), float(p1[c]), float(1 - p0[c] - p1[c])]
        assert stats.chisquare(counts, [e * 40_000 for e in expected]).pvalue > ALPHA
    torch.testing.assert_close(d.expected_l0(), 1 - p0)
    lp = d.log_prob(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(lp[0], p0[0].log())
    torch.testing.assert_close(lp[1], p1[1].log())
    single = D.HardConcrete(torch.tensor(0.3, dtype=torch.float64))

    def density(v):
        return float(single.log_prob(torch.tensor(v, dtype=torch.float64)).exp())

    inside, _ = integrate.quad(density, 0, 1, limit=200)
    total = inside + float(single.prob_zero() + single.prob_one())
    assert total == pytest.approx(1.0, abs=1e-6)


def test_straight_through_variants():
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    st = D.RelaxedOneHotCategoricalStraightThrough(0.5, logits=logits,
                                                   generator=gumbelrs.Generator(5))
    soft_d = D.RelaxedOneHotCategorical(0.5, logits=logits, generator=gumbelrs.Generator(5))
    h = st.rsample()
    s = soft_d.rsample()
    assert torch.equal(h.detach(), torch.zeros_like(s).scatter_(-1, s.argmax(-1, keepdim=True), 1))
    torch.testing.assert_close(st.log_prob(h), soft_d.log_prob(s))
    w = torch.randn(4, 6, dtype=torch.float64)
    (gh,) = torch.autograd.grad((h * w).sum(), logits)
    (gs,) = torch.autograd.grad((s * w).sum(), logits)
    torch.testing.assert_close(gh, gs)
    assert not hasattr(h, "_relaxed_value")

    b = torch.randn(10, dtype=torch.float64)
    rst = D.RelaxedBernoulliStraightThrough(0.5, logits=b, generator=gumbelrs.Generator(6))
    rsoft = D.RelaxedBernoulli(0.5, logits=b, generator=gumbelrs.Generator(6))
    hb = rst.rsample()
    sb = rsoft.rsample()
    assert set(hb.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(rst.log_prob(hb), rsoft.log_prob(sb))


def test_contract_expand_and_errors():
    d = D.RelaxedOneHotCategorical(0.5, probs=torch.tensor([0.2, 0.3, 0.5]))
    assert d.has_rsample and d.batch_shape == () and d.event_shape == (3,)
    e = d.expand((4, 2))
    assert e.batch_shape == (4, 2) and e.rsample().shape == (4, 2, 3)
    assert D.HardConcrete(torch.zeros(2)).expand((5, 2)).sample().shape == (5, 2)
    assert D.RelaxedBernoulli(1.0, probs=torch.tensor(0.3)).expand((6,)).sample().shape == (6,)
    with pytest.raises(ValueError, match="pass exactly one of probs or logits"):
        D.RelaxedOneHotCategorical(0.5)
    with pytest.raises(ValueError, match="temperature"):
        D.RelaxedOneHotCategorical(torch.tensor(-1.0), logits=torch.zeros(3), validate_args=True)
    with pytest.raises(ValueError):
        D.RelaxedOneHotCategorical(0.5, logits=torch.zeros(3), validate_args=True).log_prob(
            torch.tensor([0.5, 0.6, 0.7]))


def test_hard_concrete_rejects_a_temperature_that_does_not_broadcast():
    logits = torch.zeros(2, 3)
    for shape in ((4,), (5, 2, 3)):
        message = (f"HardConcrete: temperature of shape {shape} does not broadcast against the "
                   f"batch shape (2, 3)")
        with pytest.raises(ValueError, match=re.escape(message)):
            D.HardConcrete(logits, temperature=torch.ones(shape))
    assert D.HardConcrete(logits, temperature=torch.ones(2, 1)).temperature.shape == (2, 3)


def test_exp_relaxed_categorical_is_unbiased_at_large_logits():
    """Equal logits at 1e8 (a float32 ulp of 8): each category wins a quarter of
    the samples (noise added to the raw logits would be rounded away).
    Chi-square at p > 1e-4: a false failure once in 10,000 seeds."""
    d = gumbelrs.distributions.ExpRelaxedCategorical(torch.tensor(0.5),
                                                      logits=torch.full((4,), 1e8))
    counts = torch.bincount(d.rsample((20_000,), generator=gumbelrs.Generator(4)).argmax(-1),
                            minlength=4)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-4
