"""Temperature schedules, the reheating controller and learned temperatures."""

import math

import pytest
import torch

import gumbelrs
from gumbelrs import schedules

from .conftest import raises


def test_values_at_given_steps():
    assert schedules.Constant(0.7).values(3) == [0.7, 0.7, 0.7]
    e = schedules.ExponentialDecay(tau0=1.0, rate=1e-3, tau_min=0.5, every=100)
    assert e.value(0) == 1.0 and e.value(99) == 1.0
    assert e.value(100) == pytest.approx(math.exp(-0.1))
    assert e.value(10_000) == 0.5
    lin = schedules.Linear(2.0, 0.5, steps=10)
    assert (lin.value(0), lin.value(5), lin.value(10), lin.value(50)) == (2.0, 1.25, 0.5, 0.5)
    cos = schedules.Cosine(2.0, 0.5, steps=10)
    assert cos.value(0) == 2.0 and cos.value(10) == 0.5
    assert cos.value(5) == pytest.approx(1.25)


@pytest.mark.parametrize("kind", schedules.RelGAN.KINDS)
def test_relgan_inverse_temperatures(kind):
    s = schedules.RelGAN(kind, beta_max=100.0, total_steps=1000)
    betas = [s.beta(n) for n in range(0, 1001, 50)]
    assert all(b2 >= b1 for b1, b2 in zip(betas, betas[1:]))
    assert s.value(500) == pytest.approx(1 / s.beta(500))
    assert s.beta(5000) == s.beta(1000)
    if kind == "constant":
        assert betas[0] == betas[-1] == 100.0
    elif kind != "sigmoid":
        assert betas[0] == pytest.approx(1.0) and betas[-1] == pytest.approx(100.0)
    expected_mid = {"linear": 50.5, "exp": 10.0, "quad": 1 + 99 * 0.25,
                    "sqrt": 1 + 99 * math.sqrt(0.5), "sigmoid": 50.5}
    if kind in expected_mid:
        assert s.beta(500) == pytest.approx(expected_mid[kind])


def _run(sched, diversity, steps):
    taus = []
    for t in range(steps):
        sched.observe(diversity(t))
        taus.append(sched.tau)
        sched.step()
    return taus


def test_reheater_fires_on_collapse_and_hands_back():
    base = schedules.ExponentialDecay(1.0, rate=1e-2, tau_min=0.1)
    r = schedules.Reheater(base, threshold=1.0, boost=3.0, hold=20, release=10, cooldown=100)
    # Diversity collapses at step 50 and recovers at step 60.
    taus = _run(r, lambda t: 0.2 if 50 <= t < 60 else 2.0, 200)
    assert [e["step"] for e in r.events] == [50]
    assert r.events[0]["reason"] == "diversity 0.2 < threshold 1"
    assert taus[50] == pytest.approx(3 * base.value(50))
    assert taus[69] == pytest.approx(3 * base.value(69))
    assert taus[75] == pytest.approx(base.value(75) * (3 - 2 * 5 / 10))
    assert taus[80] == pytest.approx(base.value(80))


def test_reheater_with_boost_below_one_cools_and_hands_back():
    base = schedules.RelGAN("exp", 100.0, 400)  # temperature 1 / beta
    r = schedules.Reheater(base, threshold=0.5, boost=0.1, hold=20, release=10, cooldown=100)
    taus = _run(r, lambda t: 0.2 if t == 50 else 1.0, 200)
    assert [e["step"] for e in r.events] == [50]
    assert r.events[0]["tau_after"] == pytest.approx(0.1 * r.events[0]["tau_before"])
    assert taus[60] == pytest.approx(0.1 * base.value(60))  # beta ten times the schedule's
    assert taus[75] == pytest.approx(base.value(75) * (0.1 + 0.9 * 5 / 10))
    assert taus[80] == pytest.approx(base.value(80))


def test_reheater_does_not_fire_on_steady_diversity_and_respects_cooldown():
    r = schedules.Reheater(schedules.Constant(0.5), threshold=1.0, cooldown=50, hold=5, release=0)
    _run(r, lambda t: 1.5, 300)
    assert r.events == []
    r2 = schedules.Reheater(schedules.Constant(0.5), threshold=1.0, cooldown=50, hold=5,
                            release=0, cap=0.8)
    taus = _run(r2, lambda t: 0.1, 120)
    assert [e["step"] for e in r2.events] == [0, 50, 100]
    assert max(taus) == 0.8  # 0.5 * 2 capped


def test_resume_gives_the_same_sequence():
    def make():
        return schedules.Reheater(schedules.RelGAN("exp", 50.0, 400), threshold=0.5,
                                  boost=2.0, hold=10, release=10, cooldown=40)

    def diversity(t):
        return 0.1 if 100 <= t < 130 else 1.0

    full = make()
    whole = _run(full, diversity, 300)
    first = make()
    head = _run(first, diversity, 120)
    saved = first.state_dict()
    resumed = make()
    resumed.load_state_dict(saved)
    tail = []
    for t in range(120, 300):
        resumed.observe(diversity(t))
        tail.append(resumed.tau)
        resumed.step()
    assert head + tail == whole
    assert resumed.events == full.events


def test_learnable_temperature_learns_through_the_ops():
    torch.manual_seed(0)
    temp = schedules.LearnableTemperature(init=1.0, tau_min=0.05)
    assert temp.tau == pytest.approx(1.0)
    opt = torch.optim.SGD(temp.parameters(), lr=0.5)
    logits = torch.tensor([[2.0, 0.0, -1.0]]).expand(256, -1)
    g = gumbelrs.Generator(0)
    start = temp.tau
    for _ in range(30):
        # Sharper samples score higher: the temperature must fall.
        y = gumbelrs.gumbel_softmax(logits, temp(), generator=g)
        loss = -(y.max(-1).values).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert temp.tau < start * 0.8
    assert temp.tau > 0.05


def test_schedule_errors():
    with raises(ValueError, "Linear: steps must be an int >= 1, got 0"):
        schedules.Linear(1.0, 0.5, 0)
    with raises(ValueError, "ExponentialDecay: tau_min must be a positive finite number, got -1"):
        schedules.ExponentialDecay(tau_min=-1)
    with raises(ValueError, "RelGAN: kind must be one of ('constant', 'linear', 'exp', 'log', "
                "'sigmoid', 'quad', 'sqrt'), got 'cubic'"):
        schedules.RelGAN("cubic")
    with raises(ValueError, "Reheater: boost must not be 1 (> 1 heats, < 1 cools), got 1.0"):
        schedules.Reheater(schedules.Constant(), threshold=1.0, boost=1.0)
    with raises(TypeError, "Reheater: base must be a Schedule, got float"):
        schedules.Reheater(0.5, threshold=1.0)
    with raises(ValueError, "LearnableTemperature: init must exceed tau_min=0.5, got 0.1"):
        schedules.LearnableTemperature(init=0.1, tau_min=0.5)
