"""gumbelrs.nn.ConcreteDropout and MC prediction: temperature limits, the
regulariser, learned p against data size, uncertainty off the data."""

import math

import pytest
import torch
from torch import nn

import gumbelrs
from gumbelrs.nn import ConcreteDropout, concrete_dropout_regularization, mc_predict

from .conftest import raises


def test_masks_are_bernoulli_keep_probability_as_tau_goes_to_zero(gen):
    layer = ConcreteDropout(p=0.3, tau=1e-6, generator=gen)
    n = 200_000
    mask = layer.keep_mask((n,)).detach()
    assert (torch.minimum(mask, 1 - mask) < 1e-3).float().mean() > 0.999
    # Binomial(n, 0.7) count of kept entries: |z| < 4.5 fails with probability 7e-6.
    z = (float((mask > 0.5).sum()) - 0.7 * n) / math.sqrt(n * 0.7 * 0.3)
    assert abs(z) < 4.5


def test_masks_are_one_half_as_tau_goes_to_infinity(gen):
    layer = ConcreteDropout(p=0.3, tau=1e7, generator=gen)
    mask = layer.keep_mask((10_000,)).detach()
    assert (mask - 0.5).abs().max() < 1e-5


def test_training_scales_by_keep_probability_and_eval_is_the_identity(gen):
    layer = ConcreteDropout(p=0.25, tau=0.1, generator=gen)
    x = torch.ones(100_000)
    y = layer(x)
    # E[(1 - d) / (1 - p)] = 1 up to the relaxation: within 2% at tau = 0.1.
    assert abs(float(y.detach().mean()) - 1) < 0.02
    y.sum().backward()
    assert layer.p_logit.grad is not None and layer.p_logit.grad != 0
    layer.eval()
    assert torch.equal(layer(x), x)


def test_regularization_is_the_papers_kl_term():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    layer = ConcreteDropout(lin, p=0.2, weight_regularizer=0.01, dropout_regularizer=0.1)
    h = 0.2 * math.log(0.2) + 0.8 * math.log(0.8)
    expected = 0.01 * float((lin.weight.detach() ** 2).sum()) / 0.8 + 0.1 * 4 * h
    assert float(layer.regularization().detach()) == pytest.approx(expected, rel=1e-5)
    per_unit = ConcreteDropout(lin, p=0.2, weight_regularizer=0.01, dropout_regularizer=0.1,
                               units=4)
    assert float(per_unit.regularization().detach()) == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():  # p = sigmoid(-200) underflows to 0: the entropy term stays finite
        per_unit.p_logit.fill_(-200.0)
    assert torch.isfinite(per_unit.regularization())
    with torch.no_grad():
        per_unit.p_logit.fill_(math.log(0.2 / 0.8))
    model = nn.Sequential(layer, nn.ReLU(), per_unit)
    assert float(concrete_dropout_regularization(model).detach()) == pytest.approx(2 * expected,
                                                                            rel=1e-5)


def _fit(n, seed=0, steps=600):
    torch.manual_seed(seed)
    g = gumbelrs.Generator(seed)
    x = torch.rand(n, 1) * 2 - 1
    y = torch.sin(3 * x) + 0.1 * torch.randn(n, 1)
    wr, dr = 1e-4 / n, 2.0 / n
    model = nn.Sequential(
        nn.Linear(1, 64), nn.ReLU(),
        ConcreteDropout(nn.Linear(64, 64), weight_regularizer=wr, dropout_regularizer=dr,
                        generator=g), nn.ReLU(),
        ConcreteDropout(nn.Linear(64, 1), weight_regularizer=wr, dropout_regularizer=dr,
                        generator=g))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = ((model(x) - y) ** 2).mean() / 0.02 + concrete_dropout_regularization(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _ps(model):
    return [float(m.p.detach()) for m in model.modules() if isinstance(m, ConcreteDropout)]


def test_learned_p_falls_as_the_data_grow():
    small, large = _ps(_fit(20)), _ps(_fit(2000))
    assert all(s > 0.2 for s in small) and all(b < 0.1 for b in large), (small, large)


def test_mc_variance_is_larger_off_the_data_and_modes_are_restored():
    model = _fit(200)
    inside = mc_predict(model, torch.linspace(-1, 1, 50)[:, None], 200)[1].mean()
    outside = mc_predict(model, torch.linspace(3, 4, 50)[:, None], 200)[1].mean()
    assert outside > 3 * inside, (float(inside), float(outside))
    assert not any(m.training or getattr(m, "mc", False) for m in model.modules())
    x = torch.randn(5, 1)
    assert torch.equal(model(x), model(x))


def test_bad_arguments():
    with raises(ValueError, "ConcreteDropout: p must be a number in (0, 1), got 1.0"):
        ConcreteDropout(p=1.0)
    with raises(ValueError, "ConcreteDropout: tau must be a positive finite number, got 0"):
        ConcreteDropout(tau=0)
    with raises(ValueError, "ConcreteDropout: with units=5 the layer's weight must have shape "
                            "(out_features, 5) (an nn.Linear reading the dropped features), got "
                            "(3, 4)"):
        ConcreteDropout(nn.Linear(4, 3), units=5)
    with raises(ValueError, "ConcreteDropout: x must have units=4 features in its last "
                            "dimension, got shape (2, 3)"):
        ConcreteDropout(units=4)(torch.ones(2, 3))
    with raises(RuntimeError, "ConcreteDropout.regularization: the number of input features is "
                              "not known before the first forward pass; wrap a layer with "
                              "in_features, pass units=, or call the model once first"):
        ConcreteDropout().regularization()
    layer = ConcreteDropout()
    layer(torch.ones(2, 6))
    assert layer.in_features == 6 and torch.isfinite(layer.regularization())
    with raises(ValueError, "mc_samples: n must be an int >= 1, got 0"):
        mc_predict(nn.Identity(), torch.ones(2), 0)
