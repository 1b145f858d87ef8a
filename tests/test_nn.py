"""gumbelrs.nn.GumbelSoftmax: temperatures, estimators, eval mode, state."""

import torch

import gumbelrs
from gumbelrs import nn as gnn
from gumbelrs import schedules

from .conftest import raises


def test_layer_samples_with_its_schedule_and_saves_it():
    layer = gnn.GumbelSoftmax(schedules.Linear(1.0, 0.2, steps=10), method="st",
                              generator=gumbelrs.Generator(0))
    x = torch.randn(8, 5, requires_grad=True)
    y = layer(x)
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0}
    (y * torch.randn(8, 5)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    layer.step(4)
    assert layer.temperature() == schedules.Linear(1.0, 0.2, steps=10).value(4)
    fresh = gnn.GumbelSoftmax(schedules.Linear(1.0, 0.2, steps=10))
    fresh.load_state_dict(layer.state_dict())
    assert fresh.tau.step_count == 4


def test_learnable_temperature_is_a_parameter_of_the_layer():
    layer = gnn.GumbelSoftmax(schedules.LearnableTemperature(0.7), method="soft")
    assert [n for n, _ in layer.named_parameters()] == ["tau.raw"]
    layer(torch.randn(4, 3)).sum().backward()
    assert layer.tau.raw.grad is not None


def test_eval_mode_is_deterministic():
    layer = gnn.GumbelSoftmax(0.5, method="gumbel_rao", k=4).eval()
    x = torch.randn(6, 7)
    y = layer(x)
    assert torch.equal(y, torch.zeros_like(x).scatter_(-1, x.argmax(-1, keepdim=True), 1.0))
    soft = gnn.GumbelSoftmax(0.5, method="soft").eval()
    torch.testing.assert_close(soft(x), torch.softmax(x / 0.5, -1))


def test_layer_errors():
    with raises(ValueError, "GumbelSoftmax: method must be one of ('soft', 'st', 'gumbel_rao', "
                "'reinmax', 'gst', 'decoupled'), got 'x'"):
        gnn.GumbelSoftmax(method="x")
    expected = "a positive finite number, a Schedule or a LearnableTemperature"
    with raises(ValueError, f"GumbelSoftmax: tau must be {expected}, got -1"):
        gnn.GumbelSoftmax(-1)
    with raises(ValueError, f"GumbelSoftmax: tau must be {expected}, got inf"):
        gnn.GumbelSoftmax(float("inf"))
