"""The architecture search's second-order (DARTS, unrolled) gradient."""

import torch
from torch import nn

import gumbelrs
from gumbelrs.apps import nas
from gumbelrs.nn import architecture_parameters


def _objective_and_model():
    """A float64 signal network in soft mode, batches, and the unrolled
    objective ``L_val(w - xi * grad_w L_train(w, alpha), alpha)`` as a function
    of the architecture logits, with the noise of one fixed generator state."""
    g = gumbelrs.Generator(3)
    torch.manual_seed(0)
    model = nas.SignalNet(4, "soft", 0.7, g).double()
    x, y = nas.lagged_signals(64, 32, 3, torch.Generator().manual_seed(1))
    train, val = (x[:32].double(), y[:32]), (x[32:].double(), y[32:])
    (alpha,) = architecture_parameters(model)
    with torch.no_grad():
        alpha.copy_(torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4]))
    state = g.get_state()
    xi = 0.5

    def objective(a):
        g.set_state(state)
        params = dict(model.named_parameters())
        weights = {k: p for k, p in params.items() if p is not alpha}
        loss = nn.functional.cross_entropy(
            torch.func.functional_call(model, {**params, "conv.alpha": a}, (train[0],)),
            train[1])
        grads = torch.autograd.grad(loss, list(weights.values()), create_graph=True)
        stepped = {k: p - xi * d for (k, p), d in zip(weights.items(), grads)}
        out = torch.func.functional_call(model, {**stepped, "conv.alpha": a}, (val[0],))
        return nn.functional.cross_entropy(out, val[1])

    return model, alpha, g, state, train, val, xi, objective


def test_unrolled_gradient_is_the_derivative_of_the_unrolled_objective():
    model, alpha, g, state, train, val, xi, objective = _objective_and_model()
    g.set_state(state)
    nas._unrolled_architecture_gradient(model, train, val, xi)
    got = alpha.grad.clone()
    h = 1e-6
    fd = torch.stack([
        (objective(alpha.detach() + h * e) - objective(alpha.detach() - h * e)).detach() / (2 * h)
        for e in torch.eye(5, dtype=torch.float64)])
    torch.testing.assert_close(got, fd, rtol=1e-5, atol=1e-9)
    # The second-order term matters: it is not the first-order gradient at the same weights.
    g.set_state(state)
    model.zero_grad()
    nn.functional.cross_entropy(model(val[0]), val[1]).backward()
    assert (alpha.grad - got).abs().max() > 1e-3 * got.abs().max()


def test_second_order_search_reports_both_orders():
    config = nas.Config.tiny()
    result = nas.run(config, out=None, show=False)
    rows = next(iter(result.tables.values())).rows
    assert [(r[0], r[1], r[2]) for r in rows] == [("signals", m, o) for m in ("soft", "hard")
                                                  for o in (1, 2)]
    assert all(float(r[7]) > 0 for r in rows)  # milliseconds per search step
