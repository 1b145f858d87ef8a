"""Perturbed optimizers, the Fenchel-Young loss and blackbox differentiation:
gumbelrs.structured.perturbed, fenchel_young_loss and blackbox.

The Monte-Carlo checks compare a mean of i.i.d. terms with its exact value
within Z standard errors (the exact error for Bernoulli means, the sample
standard deviation otherwise): each has a false-failure rate of
2 * (1 - Phi(Z)) = 5.7e-7 per coordinate for a random seed (the seeds here
are fixed, so the tests are deterministic)."""

import itertools
import math

import pytest
import torch
from scipy import integrate, stats

import gumbelrs
from gumbelrs import Generator, _core
from gumbelrs.functional import _noise
from gumbelrs.structured import (
    _perturbed,
    blackbox,
    fenchel_young_loss,
    perturbed,
    shortest_path_grid,
    spanning_tree,
)

from .conftest import raises

Z = 5.0


def onehot(x):
    """The argmax solver over the last dimension (a one-hot per row)."""
    return torch.zeros_like(x).scatter_(-1, x.argmax(-1, keepdim=True), 1.0)


def top2(x):
    """The 0/1 indicator of the two largest entries of each row."""
    return torch.zeros_like(x).scatter_(-1, x.topk(2, -1).indices, 1.0)


def normal_noise(shape, dtype, gen):
    return torch.special.ndtri(_noise("uniform", shape, dtype=dtype, generator=gen))


def assert_within(estimate, exact, stderr):
    assert torch.all((estimate - exact).abs() <= Z * stderr), (estimate, exact, stderr)


def assert_mean(rows, exact):
    """The mean of i.i.d. rows is ``exact`` within Z of its standard errors."""
    assert_within(rows.mean(0), exact, rows.std(0) / math.sqrt(rows.shape[0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("noise", ["gumbel", "normal"])
def test_solver_gets_the_stacked_perturbed_thetas_once(dtype, noise):
    theta = torch.randn(3, 2, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    calls = []

    def solver(x):
        calls.append(x.clone())
        return onehot(x)

    y = perturbed(solver, 4, 0.5, noise, generator=Generator(7))(theta)
    assert len(calls) == 1 and calls[0].shape == (12, 2, 5) and calls[0].dtype == dtype
    z = (_noise("gumbel", [4, 3, 2, 5], dtype=dtype, generator=Generator(7)) if noise == "gumbel"
         else normal_noise([4, 3, 2, 5], dtype, Generator(7)))
    assert torch.equal(calls[0], (z * 0.5 + theta).reshape(12, 2, 5))  # row s * batch + b
    assert y.dtype == dtype and torch.equal(y, onehot(calls[0]).view(4, 3, 2, 5).mean(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("noise", ["gumbel", "normal"])
def test_solver_is_called_on_chunks_of_whole_samples(dtype, noise):
    """``max_chunk_bytes`` of 2.5 samples: calls of 2, 2, 1 samples, the
    rows of the one stacked call in order, the solutions summed in order."""
    theta = torch.randn(3, 2, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    calls = []

    def solver(x):
        calls.append(x.clone())
        return top2(x)

    per_sample = theta.numel() * theta.element_size()
    y = perturbed(solver, 5, 0.5, noise, generator=Generator(7),
                  max_chunk_bytes=per_sample * 5 // 2)(theta)
    assert [c.shape for c in calls] == [(6, 2, 5), (6, 2, 5), (3, 2, 5)]
    z = (_noise("gumbel", [5, 3, 2, 5], dtype=dtype, generator=Generator(7)) if noise == "gumbel"
         else normal_noise([5, 3, 2, 5], dtype, Generator(7)))
    assert torch.equal(torch.cat(calls), (z * 0.5 + theta).reshape(15, 2, 5))
    ys = top2(torch.cat(calls)).view(5, 3, 2, 5)
    total = ys[0].clone()
    for s in range(1, 5):
        total += ys[s]
    assert torch.equal(y, total / 5)


def _chunkings(theta, n):
    """``max_chunk_bytes`` for 1, 2, 3 and ``n`` samples a call, and the
    automatic one."""
    per_sample = theta.numel() * theta.element_size()
    return [per_sample, 2 * per_sample + 1, 3 * per_sample, n * per_sample, None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("noise", ["gumbel", "normal"])
def test_any_chunking_gives_the_same_bits(dtype, noise, monkeypatch):
    """Forward and backward of perturbed and fenchel_young_loss (loss and
    both gradients): bitwise the same for 1, 2, 3 and all 7 samples a
    solver call, for a solver whose solutions are not 0/1 (so the order of
    the sums shows)."""
    gen = torch.Generator().manual_seed(2)
    theta = torch.randn(4, 6, dtype=dtype, generator=gen)
    y_true = torch.rand(4, 6, dtype=dtype, generator=gen)
    g = torch.randn(4, 6, dtype=dtype, generator=gen)

    def solver(x):
        return torch.softmax(3 * x, -1)

    def run(chunk):
        t = theta.clone().requires_grad_()
        y = perturbed(solver, 7, 0.7, noise, generator=Generator(5), max_chunk_bytes=chunk)(t)
        (gt,) = torch.autograd.grad(y, t, g)
        t2, yt = theta.clone().requires_grad_(), y_true.clone().requires_grad_()
        loss = fenchel_young_loss(t2, yt, solver, n_samples=7, sigma=0.7, noise=noise,
                                  generator=Generator(5), max_chunk_bytes=chunk)
        g2, gy = torch.autograd.grad(loss, (t2, yt), g[:, 0])
        return [y.detach(), gt, loss.detach(), g2, gy]

    want = run(None)
    for chunk in _chunkings(theta, 7)[:-1]:
        got = run(chunk)
        assert all(torch.equal(a, b) for a, b in zip(got, want)), chunk
    # Above CHUNK_BYTES of samples perturbed's backward goes one sample at a
    # time: the same bits for any chunking again, the same value up to rounding.
    monkeypatch.setattr(_perturbed, "CHUNK_BYTES", 1)
    big = run(None)
    for chunk in _chunkings(theta, 7)[1:]:
        got = run(chunk)
        assert all(torch.equal(a, b) for a, b in zip(got, big)), chunk
    assert all(torch.equal(a, b) for i, (a, b) in enumerate(zip(big, want)) if i != 1)
    torch.testing.assert_close(big[1], want[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("noise", ["gumbel", "normal"])
def test_each_chunk_draws_only_its_own_samples(dtype, noise, monkeypatch):
    """On the CPU every solver call's samples are drawn alone, from the
    stream element of their first sample on, forward and backward: no draw
    holds more than one chunk (bounded memory), and forward, backward and
    loss are bitwise those of one draw of all the samples (the path CUDA
    and torch.func take), on 1 and 2 threads, with the backward's stacked
    products and one sample at a time."""
    gen = torch.Generator().manual_seed(3)
    # instances that divide neither the kernels' parallel chunks nor their
    # uniform groups; 2 samples (47,514 elements) a call: 2 threads split it
    theta = torch.randn(3, 7919, dtype=dtype, generator=gen)
    y_true = torch.rand(3, 7919, dtype=dtype, generator=gen)
    g = torch.randn(3, 7919, dtype=dtype, generator=gen)
    e, n, sizes = theta.numel(), 7, [2, 2, 2, 1]
    chunk = e * theta.element_size() * 5 // 2
    draws, calls = [], []

    def spy(real, out_at):
        def call(*args):
            draws.append((args[-1], args[out_at].size))  # (start, elements)
            return real(*args)
        return call

    monkeypatch.setattr(_core, "noise", spy(_core.noise, 1))
    monkeypatch.setattr(_core, "perturb", spy(_core.perturb, 3))

    def solver(x):
        calls.append(x.clone())
        return torch.softmax(3 * x, -1)  # not 0/1: the order of the sums shows

    def run():
        draws.clear()
        calls.clear()
        t = theta.clone().requires_grad_()
        y = perturbed(solver, n, 0.7, noise, generator=Generator(5), max_chunk_bytes=chunk)(t)
        (gt,) = torch.autograd.grad(y, t, g)
        t2, yt = theta.clone().requires_grad_(), y_true.clone().requires_grad_()
        loss = fenchel_young_loss(t2, yt, solver, n_samples=n, sigma=0.7, noise=noise,
                                  generator=Generator(5), max_chunk_bytes=chunk)
        g2, gy = torch.autograd.grad(loss, (t2, yt), g[:, 0])
        return [y.detach(), gt, loss.detach(), g2, gy], list(draws)

    z = (_noise("gumbel", [n, 3, 7919], dtype=dtype, generator=Generator(5)) if noise == "gumbel"
         else normal_noise([n, 3, 7919], dtype, Generator(5)))
    pieces = [(s0 * e, k * e) for s0, k in zip([0, 2, 4, 6], sizes)]
    for stacked in (True, False):  # the backward's two ways
        if not stacked:
            monkeypatch.setattr(_perturbed, "CHUNK_BYTES", 1)
        with monkeypatch.context() as m:
            m.setattr(_perturbed, "_in_pieces", lambda *args: False)
            want, whole = run()
        # one draw of all samples from element 0 per forward and backward
        assert whole == [(0, n * e)] * 3
        assert torch.equal(torch.cat(calls[:4]), (z * 0.7 + theta).view(-1, 7919))
        for threads in (1, 2):
            gumbelrs.set_num_threads(threads)
            got, drawn = run()
            assert all(torch.equal(a, b) for a, b in zip(got, want)), (stacked, threads)
            backward = [(0, n * e)] if stacked else pieces
            assert drawn == pieces + backward + pieces, (stacked, threads)
            assert torch.equal(torch.cat(calls[:4]), (z * 0.7 + theta).view(-1, 7919))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_fused_perturbation_equals_noise_scaled_then_added(dtype):
    """Gumbel noise on the CPU is drawn, scaled and added in one kernel pass:
    bitwise the three separate operations, over several kernel chunks (an
    instance size that divides neither them nor the pieces), for any
    sigma and any thread count."""
    theta = torch.randn(3, 7919, dtype=dtype, generator=torch.Generator().manual_seed(1))
    compute = torch.float32 if dtype == torch.float16 else dtype
    calls = []

    def solver(x):
        calls.append(x.clone())
        return x

    for sigma, threads in itertools.product((1.0, 0.3, 1e-3), (1, 2)):
        gumbelrs.set_num_threads(threads)
        calls.clear()
        perturbed(solver, 11, sigma, generator=Generator(5))(theta)
        z = _noise("gumbel", [11, 3, 7919], dtype=compute, generator=Generator(5))
        want = z.mul_(sigma).add_(theta.to(compute)).to(dtype).view(33, 7919)
        assert torch.equal(calls[0], want), (sigma, threads)


def test_gumbel_argmax_mean_is_the_softmax():
    """With Gumbel noise the perturbed argmax is softmax(theta / sigma) exactly."""
    sigma, rows, s = 0.7, 3000, 8
    theta = torch.tensor([[0.5, -0.2, 1.0, 0.0, -3.0]], dtype=torch.float64)
    y = perturbed(onehot, s, sigma, generator=Generator(1))(theta.expand(rows, 5))
    p = torch.softmax(theta[0] / sigma, 0)
    assert_within(y.mean(0), p, (p * (1 - p) / (rows * s)).sqrt())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gumbel_argmax_jacobian_is_the_softmax_jacobian(dtype):
    """Each row is an independent estimate; row k of the Jacobian is the
    gradient of y[..., k]."""
    sigma, rows = 0.7, 4000
    theta = torch.tensor([[0.5, -0.2, 1.0, 0.0]], dtype=dtype).repeat(rows, 1).requires_grad_()
    y = perturbed(onehot, 10, sigma, generator=Generator(2))(theta)
    p = torch.softmax(theta[0].detach().double() / sigma, 0)
    jac = (torch.diag(p) - torch.outer(p, p)) / sigma
    for k in range(4):
        (g,) = torch.autograd.grad(y[:, k].sum(), theta, retain_graph=True)
        assert g.dtype == dtype
        assert_mean(g.double(), jac[k])


def exact_top2(theta, sigma):
    """P(item m is among the two largest of theta + sigma G): Plackett-Luce
    with scores theta / sigma, summed over the ordered pairs that hold m."""
    p = torch.softmax(theta / sigma, 0)
    out = torch.zeros_like(theta)
    for i, j in itertools.permutations(range(theta.shape[0]), 2):
        pij = p[i] * p[j] / (1 - p[i])
        out[i] += pij
        out[j] += pij
    return out


def test_top2_jacobian_matches_finite_differences_of_the_smoothed_map():
    """No closed form for the Jacobian here: central differences of the exact
    smoothed map (Plackett-Luce inclusion probabilities) stand for it."""
    sigma, rows, h = 1.3, 4000, 1e-5
    t0 = torch.tensor([0.4, -0.3, 1.1, 0.2], dtype=torch.float64)
    fd = torch.stack([(exact_top2(t0 + h * e, sigma) - exact_top2(t0 - h * e, sigma)) / (2 * h)
                      for e in torch.eye(4, dtype=torch.float64)], 1)  # fd[k, m] = dy_k/dtheta_m
    theta = t0.repeat(rows, 1).requires_grad_()
    y = perturbed(top2, 8, sigma, generator=Generator(3))(theta)
    p = exact_top2(t0, sigma)
    assert_within(y.mean(0).detach(), p, (p * (1 - p) / (rows * 8)).sqrt())
    for k in range(4):
        (g,) = torch.autograd.grad(y[:, k].sum(), theta, retain_graph=True)
        assert_mean(g, fd[k])


def test_normal_noise_matches_the_numeric_integral():
    """Two items: y_1 = P(theta_1 + sigma Z_1 > theta_2 + sigma Z_2) and its
    derivatives, integrated numerically over Z_2."""
    sigma, rows, s = 0.8, 4000, 6
    t0 = torch.tensor([0.3, -0.1], dtype=torch.float64)
    d = float(t0[0] - t0[1]) / sigma
    y1 = integrate.quad(lambda z: stats.norm.pdf(z) * stats.norm.cdf(d + z), -12, 12)[0]
    dy1 = integrate.quad(lambda z: stats.norm.pdf(z) * stats.norm.pdf(d + z), -12, 12)[0] / sigma
    theta = t0.repeat(rows, 1).requires_grad_()
    y = perturbed(onehot, s, sigma, "normal", generator=Generator(4))(theta)
    p = torch.tensor([y1, 1 - y1], dtype=torch.float64)
    assert_within(y.mean(0).detach(), p, (p * (1 - p) / (rows * s)).sqrt())
    (g,) = torch.autograd.grad(y[:, 0].sum(), theta)
    assert_mean(g, torch.tensor([dy1, -dy1], dtype=torch.float64))


@pytest.mark.parametrize("noise", ["gumbel", "normal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fenchel_young_gradient_is_the_perturbed_mean_minus_the_target(noise, dtype):
    theta = torch.randn(6, 5, dtype=dtype, generator=torch.Generator().manual_seed(5))
    theta.requires_grad_()
    y_true = top2(torch.randn(6, 5, dtype=dtype, generator=torch.Generator().manual_seed(6)))
    y_true.requires_grad_()
    loss = fenchel_young_loss(theta, y_true, top2, n_samples=7, sigma=0.6, noise=noise,
                              generator=Generator(8))
    assert loss.shape == (6,) and loss.dtype == dtype
    assert torch.all(loss >= 0)
    g_theta, g_y = torch.autograd.grad(loss.sum(), (theta, y_true))
    y_eps = perturbed(top2, 7, 0.6, noise, generator=Generator(8))(theta.detach())
    assert torch.equal(g_theta, y_eps - y_true.detach())
    z = (_noise("gumbel", [7, 6, 5], dtype=dtype, generator=Generator(8)) if noise == "gumbel"
         else normal_noise([7, 6, 5], dtype, Generator(8)))
    x = z * 0.6 + theta.detach()
    torch.testing.assert_close(g_y, -x.mean(0))
    ys = top2(x)
    torch.testing.assert_close(loss.detach(), (x * (ys - y_true.detach())).sum(-1).mean(0))


def test_fenchel_young_loss_is_zero_at_the_right_answer():
    """A margin of 50 is more than any Gumbel value (at most about 36 in
    float64), so every sample solves to y_true."""
    y_true = onehot(torch.randn(4, 6, generator=torch.Generator().manual_seed(9))).double()
    loss = fenchel_young_loss(50 * y_true, y_true, onehot, generator=Generator(10))
    assert torch.equal(loss, torch.zeros(4, dtype=torch.float64))
    assert torch.all(fenchel_young_loss(-50 * y_true, y_true, onehot, generator=Generator(10))
                     > 40)


def test_fenchel_young_loss_expectation_is_the_loss():
    """One-hots with Gumbel noise: L = sigma logsumexp(theta / sigma) - <theta, y>."""
    sigma, rows = 0.9, 4000
    t0 = torch.tensor([0.2, 1.0, -0.5, 0.4], dtype=torch.float64)
    y0 = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    loss = fenchel_young_loss(t0.expand(rows, 4), y0.expand(rows, 4), onehot, n_samples=5,
                              sigma=sigma, generator=Generator(11))
    exact = sigma * torch.logsumexp(t0 / sigma, 0) - t0 @ y0
    assert_mean(loss[:, None], exact[None])


def brute_max(theta, solutions):
    """max over the listed solutions of <theta, y>."""
    return (solutions @ theta).max()


def test_blackbox_gradient_is_that_of_the_interpolation():
    """f_lam(theta) = (max_y <theta, y> - max_y <theta - lam g, y>) / lam for a
    linear loss <g, y>, by brute force over the 2-subsets of 5 items; its
    central differences (exact away from the kinks) equal the gradient."""
    gen = torch.Generator().manual_seed(12)
    subsets = torch.tensor([[float(i in c) for i in range(5)]
                            for c in itertools.combinations(range(5), 2)], dtype=torch.float64)
    h = 1e-7
    for lam in (0.3, 2.0, 10.0):
        theta = torch.randn(5, dtype=torch.float64, generator=gen)
        g = torch.randn(5, dtype=torch.float64, generator=gen)

        def f_lam(t, lam=lam, g=g):
            return (brute_max(t, subsets) - brute_max(t - lam * g, subsets)) / lam

        fd = torch.stack([(f_lam(theta + h * e) - f_lam(theta - h * e)) / (2 * h)
                          for e in torch.eye(5, dtype=torch.float64)])
        t = theta[None].clone().requires_grad_()
        y = blackbox(top2, lam)(t)
        assert torch.equal(y, top2(theta[None]))
        (grad,) = torch.autograd.grad(y, t, g[None])
        torch.testing.assert_close(grad[0], fd, rtol=0, atol=1e-6)
    # The same in the paper's minimisation form: w = -theta, w' = w + lam g,
    # gradient in w = -(y(w) - y(w')) / lam, and d/dtheta = -d/dw.
    argmin = top2(-(-theta[None] + lam * g))
    torch.testing.assert_close(grad, -(-(top2(theta[None]) - argmin) / lam))


def test_rust_solvers_wrapped_as_the_docstring_says():
    """With noise far below the gaps between solutions, every sample is the
    unperturbed solution: the loss and its gradient vanish."""
    gen = torch.Generator().manual_seed(21)
    costs = torch.rand(3, 6, 7, dtype=torch.float64, generator=gen) + 0.1
    y_true = shortest_path_grid(costs)
    theta = (-costs).requires_grad_()
    loss = fenchel_young_loss(theta, y_true, lambda x: shortest_path_grid((-x).clamp_min(0)),
                              sigma=1e-7, generator=Generator(22))
    assert torch.equal(loss, torch.zeros(3, dtype=torch.float64))
    loss.sum().backward()
    assert torch.equal(theta.grad, torch.zeros_like(costs))
    w = torch.randn(4, 8, 8, dtype=torch.float64, generator=gen)
    w = w + w.mT
    tree = perturbed(lambda x: spanning_tree(x.triu(1) + x.triu(1).mT), 5, 1e-7,
                     generator=Generator(23))
    assert torch.equal(tree(w), spanning_tree(w))
    upper = perturbed(lambda x: spanning_tree(x, upper=True), 5, 1e-7, generator=Generator(23))
    assert torch.equal(upper(w), spanning_tree(w))


@pytest.mark.parametrize("noise", ["gumbel", "normal"])
def test_same_results_for_any_thread_count(noise):
    theta = torch.randn(64, 33, dtype=torch.float32, generator=torch.Generator().manual_seed(13))
    y_true = onehot(theta.flip(0))
    out = []
    torch_threads = torch.get_num_threads()
    try:
        for threads in (1, 2):
            gumbelrs.set_num_threads(threads)
            torch.set_num_threads(threads)
            t = theta.clone().requires_grad_()
            y = perturbed(onehot, 16, 0.5, noise, generator=Generator(14))(t)
            (g,) = torch.autograd.grad((y * theta).sum(), t)
            loss = fenchel_young_loss(t, y_true, onehot, noise=noise, generator=Generator(14))
            out.append((y, g, loss))
    finally:
        torch.set_num_threads(torch_threads)
    for a, b in zip(*out):
        assert torch.equal(a, b)


def test_default_generator_follows_torch_seed():
    theta = torch.randn(3, 4, generator=torch.Generator().manual_seed(15))
    p = perturbed(onehot, 5)
    torch.manual_seed(16)
    a = p(theta)
    torch.manual_seed(16)
    assert torch.equal(a, p(theta))


def test_half_precision_thetas():
    theta = torch.randn(3, 4, generator=torch.Generator().manual_seed(17)).half()
    seen = []
    y = perturbed(lambda x: seen.append(x.dtype) or onehot(x), 4, generator=Generator(18))(theta)
    assert seen == [torch.float16] and y.dtype == torch.float16
    assert torch.equal(y.sum(-1), torch.ones(3, dtype=torch.float16))


def test_inputs_are_not_modified():
    theta = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(19))
    y_true = onehot(theta.flip(0))
    before = theta.clone(), y_true.clone()
    t = theta.clone().requires_grad_()
    y = perturbed(onehot, 3, generator=Generator(20))(t)
    y.sum().backward()
    fenchel_young_loss(t, y_true, onehot, generator=Generator(20)).sum().backward()
    blackbox(onehot, 1.0)(t).sum().backward()
    assert torch.equal(t.detach(), before[0]) and torch.equal(y_true, before[1])


def test_repr():
    gen = Generator(3)
    assert repr(perturbed(onehot, 4, 0.5, "normal", generator=gen)) == (
        "gumbelrs.structured.perturbed(onehot, n_samples=4, sigma=0.5, noise='normal', "
        "generator=gumbelrs.Generator(seed=3, offset=0), max_chunk_bytes=None)")
    assert repr(perturbed(top2, max_chunk_bytes=100)) == (
        "gumbelrs.structured.perturbed(top2, n_samples=16, sigma=1.0, noise='gumbel', "
        "generator=None, max_chunk_bytes=100)")
    assert repr(blackbox(onehot, 2)) == "gumbelrs.structured.blackbox(onehot, lam=2.0)"


def test_bad_arguments():
    with raises(ValueError, "perturbed: max_chunk_bytes must be an int >= 1, got -5"):
        perturbed(onehot, max_chunk_bytes=-5)
    with raises(TypeError, "perturbed: max_chunk_bytes must be an int >= 1, got str '4MB'"):
        perturbed(onehot, max_chunk_bytes="4MB")
    with raises(ValueError, "perturbed: sigma must be a positive finite number, got 0"):
        perturbed(onehot, sigma=0)
    with raises(ValueError, "perturbed: sigma must be a positive finite number, got -1.0"):
        perturbed(onehot, sigma=-1.0)
    with raises(TypeError, "perturbed: sigma must be a positive finite number, got str '1'"):
        perturbed(onehot, sigma="1")
    with raises(ValueError, "perturbed: n_samples must be an int in [1, 2147483647], got 0"):
        perturbed(onehot, 0)
    with raises(TypeError, "perturbed: n_samples must be an int in [1, 2147483647], got float "
                           "2.0"):
        perturbed(onehot, 2.0)
    with raises(ValueError, "perturbed: noise must be one of ('gumbel', 'normal'), got "
                            "'logistic'"):
        perturbed(onehot, noise="logistic")
    with raises(TypeError, "perturbed: solver must be callable (a function theta -> y), got "
                           "int 3"):
        perturbed(3)
    with raises(TypeError, "perturbed: generator must be a gumbelrs.Generator or None, got "
                           "torch._C.Generator"):
        perturbed(onehot, generator=torch.Generator())
    p = perturbed(onehot, 2)
    with raises(ValueError, "perturbed: theta must be a batch of instances (batch, *shape) with "
                            "at least 2 dimensions, its first the batch (the solver gets the "
                            "samples stacked along it), got a 1-d tensor of shape (5,); pass "
                            "theta[None] for one instance"):
        p(torch.zeros(5))
    with raises(TypeError, "perturbed: theta must be a floating-point tensor (float16, bfloat16, "
                           "float32 or float64), got dtype torch.int64"):
        p(torch.zeros(2, 5, dtype=torch.int64))
    with raises(ValueError, "perturbed: theta[1, 2] is nan; theta must not be NaN"):
        p(torch.zeros(2, 5).index_put_((torch.tensor(1), torch.tensor(2)), torch.tensor(math.nan)))
    with raises(ValueError, "perturbed: solver returned shape (4,) for an input of shape (4, 5); "
                            "it must return one solution the shape of its input"):
        perturbed(lambda x: x.argmax(-1), 2)(torch.zeros(2, 5))
    with raises(TypeError, "perturbed: solver must return a torch.Tensor, got list"):
        perturbed(lambda x: [], 2)(torch.zeros(2, 5))


def test_bad_fenchel_young_arguments():
    theta, y = torch.zeros(2, 3), torch.eye(3)[:2]
    fy = fenchel_young_loss
    with raises(ValueError, "fenchel_young_loss: y_true must have theta's shape (2, 3), got "
                            "(3, 3)"):
        fy(theta, torch.eye(3), onehot)
    with raises(TypeError, "fenchel_young_loss: y_true must be a torch.Tensor, got list"):
        fy(theta, [[1, 0, 0]], onehot)
    with raises(TypeError, "fenchel_young_loss: y_true must be a real tensor, got dtype "
                           "torch.complex64"):
        fy(theta, y.to(torch.complex64), onehot)
    with raises(ValueError, "fenchel_young_loss: theta[0, 1] is -inf; theta must be finite"):
        fy(theta.index_put((torch.tensor(0), torch.tensor(1)), torch.tensor(-math.inf)), y,
           onehot)
    with raises(ValueError, "fenchel_young_loss: y_true[1, 0] is nan; y_true must be finite"):
        fy(theta, y.index_put((torch.tensor(1), torch.tensor(0)), torch.tensor(math.nan)),
           onehot)
    with raises(ValueError, "fenchel_young_loss: sigma must be a positive finite number, got "
                            "inf"):
        fy(theta, y, onehot, sigma=math.inf)
    with raises(ValueError, "fenchel_young_loss: n_samples must be an int in [1, 2147483647], "
                            "got -1"):
        fy(theta, y, onehot, n_samples=-1)
    with raises(ValueError, "fenchel_young_loss: max_chunk_bytes must be an int >= 1, got 0"):
        fy(theta, y, onehot, max_chunk_bytes=0)
    with raises(TypeError, "fenchel_young_loss: max_chunk_bytes must be an int >= 1, got float "
                           "4096.0"):
        fy(theta, y, onehot, max_chunk_bytes=4096.0)
    with raises(ValueError, "fenchel_young_loss: noise must be one of ('gumbel', 'normal'), got "
                            "'Gumbel'"):
        fy(theta, y, onehot, noise="Gumbel")
    with raises(TypeError, "fenchel_young_loss: solver must be callable (a function theta -> y), "
                           "got NoneType None"):
        fy(theta, y, None)
    assert torch.equal(fy(theta, y.bool(), onehot, generator=Generator(1)),
                       fy(theta, y, onehot, generator=Generator(1)))


def test_bad_blackbox_arguments():
    with raises(ValueError, "blackbox: lam must be a positive finite number, got 0.0"):
        blackbox(onehot, 0.0)
    with raises(TypeError, "blackbox: lam must be a positive finite number, got NoneType None"):
        blackbox(onehot, None)
    with raises(TypeError, "blackbox: solver must be callable (a function theta -> y), got str "
                           "'argmax'"):
        blackbox("argmax", 1.0)
    with raises(ValueError, "blackbox: theta[2] is nan; theta must not be NaN"):
        blackbox(onehot, 1.0)(torch.tensor([0.0, 1.0, math.nan]))
