"""Gumbel-Sinkhorn: gumbelrs.structured.gumbel_sinkhorn against the plain-torch
algorithm of gumbelrs._reference fed the same noise."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import gumbelrs
from gumbelrs import Generator, _cpu, _ops, _reference
from gumbelrs.functional import _noise
from gumbelrs.structured import gumbel_sinkhorn

from .conftest import raises

FN = "gumbel_sinkhorn"
NEG_INF = -math.inf


def weights(*shape, dtype=torch.float64, seed=0, scale=2.0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)) * scale


def reference(la, n_samples, seed, tau=1.0, n_iters=20, tol=None, noise_scale=1.0, **kw):
    """The reference with the noise the op draws from ``Generator(seed)``."""
    *batch, n, _ = la.shape
    g = _noise("gumbel", [*batch, n_samples, n, n], dtype=la.dtype, generator=Generator(seed))
    return _reference.gumbel_sinkhorn(la, g, tau, n_iters, tol, noise_scale, **kw)


def counts(la, n_samples, seed, tau, n_iters, tol, noise_scale=1.0):
    """The iterations the kernel runs on each matrix."""
    seed_, offset = _ops.take(Generator(seed), FN)
    _, iters = _cpu.gumbel_sinkhorn(FN, la, n_samples, tau, n_iters, tol, noise_scale, seed_,
                                    offset, False, True)
    return iters.to(torch.int64)


# ------------------------------------------------------------- forward


# Within a few ulp, not bitwise: torch's exp, log and sums round differently
# from the kernels' own functions, and the kernels iterate in scaling form
# (row and column scalings of a matrix of exponentials) where the reference
# rewrites the matrix with logsumexps. The largest differences measured on
# these cases: 3.9e-16 (float64) and 2.4e-7 (float32, 2 ulp of 1).
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 2e-15), (torch.float32, 2e-6)])
@pytest.mark.parametrize("batch, n_samples, n, tau, noise_scale", [
    ((2,), 3, 5, 0.7, 1.0), ((), 1, 1, 1.0, 1.0), ((2, 3), 2, 9, 0.3, 0.5),
    ((1,), 4, 25, 2.0, 1.0), ((3,), 2, 6, 1.0, 0.0)])
def test_samples_match_the_reference_with_the_same_noise(batch, n_samples, n, tau, noise_scale,
                                                         dtype, atol):
    la = weights(*batch, n, n, dtype=dtype, seed=n)
    y = gumbel_sinkhorn(la, tau, 30, n_samples=n_samples, noise_scale=noise_scale,
                        generator=Generator(n))
    assert y.shape == (*batch, n_samples, n, n) and y.dtype == dtype
    ref, _ = reference(la, n_samples, n, tau, 30, noise_scale=noise_scale)
    torch.testing.assert_close(y, ref, atol=atol, rtol=0)


def test_perturbed_weights_are_the_shifted_weights_plus_the_noise_bitwise():
    """The matrices hard mode matches: ``(log_alpha - row max) + noise_scale * g``,
    with ``g`` the noise of ``gumbel_noise`` for the same generator state."""
    for dtype in (torch.float32, torch.float64):
        la = weights(2, 3, 7, 7, dtype=dtype)
        la[0, 1, 2, 3] = NEG_INF
        seed, offset = _ops.take(Generator(4), FN)
        w, _ = _cpu.gumbel_sinkhorn(FN, la, 5, 0.5, 3, None, 0.75, seed, offset, True, False)
        g = _noise("gumbel", [2, 3, 5, 7, 7], dtype=dtype, generator=Generator(4))
        assert torch.equal(w, _reference.perturbed(la.unsqueeze(-3), 0.75 * g))


def test_columns_sum_to_one_and_rows_converge():
    la = weights(4, 8, 8, dtype=torch.float32)
    errors = []
    for n_iters in (50, 200, 1000):
        y = gumbel_sinkhorn(la, 0.5, n_iters, n_samples=2, generator=Generator(1))
        assert (y >= 0).all()
        assert (y.sum(-2) - 1).abs().max() < 2e-6  # 5.4e-7 measured
        errors.append((y.sum(-1) - 1).abs().max().item())
    # Measured: 8.5e-3, 1.7e-3, 1.0e-5.
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_tolerance_stops_each_matrix_as_the_reference_does(dtype, tol):
    la = weights(3, 6, 6, dtype=dtype, seed=2)
    y = gumbel_sinkhorn(la, 0.8, 500, tol=tol, n_samples=2, generator=Generator(2))
    assert (y.sum(-1) - 1).abs().max() <= tol
    ref, ref_iters = reference(la, 2, 2, 0.8, 500, tol)
    iters = counts(la, 2, 2, 0.8, 500, tol)
    assert torch.equal(iters, ref_iters)
    assert iters.min() >= 2 and iters.max() < 500 and len(set(iters.flatten().tolist())) > 1
    # Measured: 4.4e-16 (float64), 3.6e-7 (float32).
    torch.testing.assert_close(y, ref, atol=2e-15 if dtype == torch.float64 else 2e-6, rtol=0)
    # Each matrix has the bits of its number of iterations without a tolerance.
    for b, s in np.ndindex(3, 2):
        k = int(iters[b, s])
        alone = gumbel_sinkhorn(la, 0.8, k, n_samples=2, generator=Generator(2))
        assert torch.equal(y[b, s], alone[b, s])


def test_forbidden_pairs_are_exactly_zero_with_zero_gradient():
    la = weights(2, 5, 5)
    la[0, 1, [0, 2, 3]] = NEG_INF
    la[1, :, 4] = NEG_INF
    la[1, 4, 4] = 0.5
    la.requires_grad_()
    y = gumbel_sinkhorn(la, 0.5, 10, n_samples=3, generator=Generator(3))
    masked = (la == NEG_INF).unsqueeze(-3).expand_as(y)
    assert (y[masked] == 0).all() and (y[~masked] > 0).all()
    (gx,) = torch.autograd.grad((y * weights(2, 3, 5, 5, seed=1)).sum(), la)
    assert (gx[la == NEG_INF] == 0).all() and torch.isfinite(gx).all()


def test_no_noise_is_deterministic_sinkhorn_and_still_advances_the_generator():
    la = weights(2, 4, 4)
    gen = Generator(5)
    y = gumbel_sinkhorn(la, 0.5, 25, n_samples=3, noise_scale=0.0, generator=gen)
    assert gen.offset == 1
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])
    ref, _ = _reference.gumbel_sinkhorn(la, torch.zeros(2, 3, 4, 4, dtype=la.dtype), 0.5, 25)
    torch.testing.assert_close(y, ref, atol=2e-15, rtol=0)  # 4.4e-16 measured
    torch.manual_seed(0)
    gumbel_sinkhorn(la, noise_scale=0.0)
    after = torch.randint(1 << 30, ())
    torch.manual_seed(0)
    gumbel_sinkhorn(la)
    assert torch.equal(after, torch.randint(1 << 30, ()))


def test_generators_reproduce_and_advance_once_per_call():
    la = weights(3, 5, 5)
    gen = Generator(7)
    a = gumbel_sinkhorn(la, generator=gen)
    b = gumbel_sinkhorn(la, generator=gen)
    assert gen.offset == 2 and not torch.equal(a, b)
    assert torch.equal(a, gumbel_sinkhorn(la, generator=Generator(7)))
    torch.manual_seed(11)
    c = gumbel_sinkhorn(la, n_samples=2)
    torch.manual_seed(11)
    assert torch.equal(c, gumbel_sinkhorn(la, n_samples=2))


def test_batch_shapes_dtypes_and_inputs_left_alone():
    la = weights(2, 3, 4, 4, dtype=torch.float32)
    before = la.clone()
    assert gumbel_sinkhorn(la, n_samples=5, generator=Generator(0)).shape == (2, 3, 5, 4, 4)
    assert torch.equal(la, before)
    assert gumbel_sinkhorn(la[0, 0]).shape == (1, 4, 4)
    assert torch.equal(gumbel_sinkhorn(torch.zeros(3, 1, 1)), torch.ones(3, 1, 1, 1))
    empty = torch.zeros(0, 3, 3, requires_grad=True)
    y = gumbel_sinkhorn(empty, n_samples=2)
    assert y.shape == (0, 2, 3, 3)
    y.sum().backward()
    assert empty.grad.shape == (0, 3, 3)
    for half in (torch.float16, torch.bfloat16):
        y = gumbel_sinkhorn(la.to(half), generator=Generator(0))
        want = gumbel_sinkhorn(la.to(half).float(), generator=Generator(0)).to(half)
        assert y.dtype == half and torch.equal(y, want)
    strided = weights(4, 4, 2)[..., 0]
    assert torch.equal(gumbel_sinkhorn(strided, generator=Generator(0)),
                       gumbel_sinkhorn(strided.contiguous(), generator=Generator(0)))


def test_results_are_bitwise_identical_for_any_thread_count():
    la = weights(8, 12, 12, dtype=torch.float32).requires_grad_()
    w = weights(8, 3, 12, 12, dtype=torch.float32, seed=1)

    def run():
        y = gumbel_sinkhorn(la, 0.5, 15, tol=1e-3, n_samples=3, generator=Generator(9))
        return y, torch.autograd.grad((y * w).sum(), la)[0]

    gumbelrs.set_num_threads(1)
    one = run()
    gumbelrs.set_num_threads(2)
    two = run()
    assert all(torch.equal(a, b) for a, b in zip(one, two))


# ------------------------------------------------------------ gradients


@pytest.mark.parametrize("noise_scale, tol", [(1.0, None), (0.0, None), (1.0, 1e-2)])
def test_gradcheck_float64(noise_scale, tol):
    la = weights(2, 3, 3, seed=4).requires_grad_()

    def f(x):
        return gumbel_sinkhorn(x, 0.7, 4, tol=tol, n_samples=2, noise_scale=noise_scale,
                               generator=Generator(5))

    assert torch.autograd.gradcheck(f, (la,))


def test_double_backward_differentiates_the_reference():
    la = weights(1, 3, 3, seed=6).requires_grad_()

    def f(x):
        return gumbel_sinkhorn(x, 0.7, 3, n_samples=2, generator=Generator(6))

    assert torch.autograd.gradgradcheck(f, (la,))


# Largest differences measured: 7.8e-16 (float64), 6.0e-7 (float32) for
# gradients of magnitude up to 1.9.
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 5e-15), (torch.float32, 5e-6)])
@pytest.mark.parametrize("n_samples, tol", [(1, None), (3, None), (2, 1e-3)])
def test_backward_matches_autograd_through_the_reference(dtype, atol, n_samples, tol):
    la = weights(3, 7, 7, dtype=dtype, seed=7)
    la[1, 2, 3] = NEG_INF
    w = weights(3, n_samples, 7, 7, dtype=dtype, seed=8)
    la.requires_grad_()
    y = gumbel_sinkhorn(la, 0.6, 12, tol=tol, n_samples=n_samples, generator=Generator(8))
    (gx,) = torch.autograd.grad((y * w).sum(), la)
    ref, _ = reference(la, n_samples, 8, 0.6, 12, tol)
    (gr,) = torch.autograd.grad((ref * w).sum(), la)
    torch.testing.assert_close(gx, gr, atol=atol, rtol=0)


def test_compiled_code_draws_the_eager_samples_and_gradients():
    def step(x, gen):
        return gumbel_sinkhorn(x, 0.5, 8, n_samples=2, generator=gen)

    compiled = torch.compile(step, backend="aot_eager")
    w = weights(2, 2, 4, 4, dtype=torch.float32, seed=1)
    ge, gc = Generator(3), Generator(3)
    for _ in range(2):  # the second call checks that the offset advances in compiled code
        xe = weights(2, 4, 4, dtype=torch.float32).requires_grad_()
        xc = xe.detach().clone().requires_grad_()
        ye, yc = step(xe, ge), compiled(xc, gc)
        assert torch.equal(ye, yc)
        (ye * w).sum().backward()
        (yc * w).sum().backward()
        assert torch.equal(xe.grad, xc.grad)
        assert ge.offset == gc.offset


# ------------------------------------------------------------ hard mode


def _one_hot(perm, like):
    return torch.zeros_like(like).scatter_(-1, perm.unsqueeze(-1), 1.0)


def test_hard_samples_are_the_matchings_of_the_perturbed_weights():
    la = weights(3, 6, 6, seed=9)
    y = gumbel_sinkhorn(la, 0.5, 10, n_samples=4, hard=True, generator=Generator(9))
    assert y.shape == (3, 4, 6, 6)
    assert set(y.unique().tolist()) == {0.0, 1.0}
    assert (y.sum(-1) == 1).all() and (y.sum(-2) == 1).all()
    g = _noise("gumbel", [3, 4, 6, 6], dtype=la.dtype, generator=Generator(9))
    perturbed = la.unsqueeze(-3) + g
    for b in range(3):
        for s in range(4):
            rows, cols = linear_sum_assignment(perturbed[b, s].numpy(), maximize=True)
            assert np.array_equal(y[b, s].nonzero()[:, 1].numpy(), cols[np.argsort(rows)])


def test_hard_samples_are_the_limit_of_soft_ones_at_low_temperature():
    """Weights far apart (a permutation at 50, the rest near 0): the matching
    is that permutation whatever the noise, and Sinkhorn at tau = 0.1
    concentrates on it."""
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    la = 50 * _one_hot(perm, torch.zeros(7, 7)) + weights(7, 7, dtype=torch.float32, scale=0.1)
    hard = gumbel_sinkhorn(la, 0.1, 100, n_samples=3, hard=True, generator=Generator(2))
    soft = gumbel_sinkhorn(la, 0.1, 100, n_samples=3, generator=Generator(2))
    assert torch.equal(hard, _one_hot(soft.argmax(-1), soft))
    assert torch.equal(hard, _one_hot(perm, la).expand(3, 7, 7))


def test_hard_gradient_is_the_soft_samples_gradient():
    la = weights(2, 5, 5, seed=3).requires_grad_()
    w = weights(2, 2, 5, 5, seed=4)
    grads = []
    for hard in (True, False):
        y = gumbel_sinkhorn(la, 0.5, 10, tol=1e-3, n_samples=2, hard=hard,
                            generator=Generator(5))
        grads.append(torch.autograd.grad((y * w).sum(), la)[0])
    assert torch.equal(grads[0], grads[1])


# ---------------------------------------------------------- bad input


def test_bad_input_gets_a_clear_error():
    x = torch.zeros(2, 3, 3)
    with raises(TypeError, f"{FN}: log_alpha must be a torch.Tensor, got list"):
        gumbel_sinkhorn([[0.0]])
    with raises(TypeError, f"{FN}: log_alpha must be a floating-point tensor (float16, bfloat16, "
                           "float32 or float64), got dtype torch.int64"):
        gumbel_sinkhorn(torch.zeros(3, 3, dtype=torch.int64))
    with raises(ValueError, f"{FN}: log_alpha must have at least 2 dimension(s), got a 1-d "
                            "tensor"):
        gumbel_sinkhorn(torch.zeros(3))
    with raises(ValueError, f"{FN}: log_alpha must be square in its last two dimensions "
                            "(*batch, n, n), got shape (2, 3, 4)"):
        gumbel_sinkhorn(torch.zeros(2, 3, 4))
    with raises(ValueError, f"{FN}: log_alpha has n = 0 (shape (2, 0, 0)); a permutation needs "
                            "at least one item"):
        gumbel_sinkhorn(torch.zeros(2, 0, 0))
    for tau in (0.0, -1.0, math.inf, math.nan):
        with raises(ValueError, f"{FN}: tau must be in [1.1754944e-38, 3.4028235e+38] "
                                "(positive, normal and finite in float32, the dtype the logits "
                                f"are computed in), got {tau}"):
            gumbel_sinkhorn(x, tau)
    with raises(TypeError, f"{FN}: tau must be a positive float (no tensor: tau gets no "
                           "gradient), got Tensor tensor(0.5000)"):
        gumbel_sinkhorn(x, torch.tensor(0.5))
    for n_iters in (0, -3):
        with raises(ValueError, f"{FN}: n_iters must be an int in [1, 2147483647], got "
                                f"{n_iters}"):
            gumbel_sinkhorn(x, 1.0, n_iters)
    for tol in (0.0, -1e-3, math.inf, math.nan):
        with raises(ValueError, f"{FN}: tol must be None or a positive finite number, got "
                                f"{tol}"):
            gumbel_sinkhorn(x, tol=tol)
    with raises(ValueError, f"{FN}: n_samples must be an int in [1, 2147483647], got 0"):
        gumbel_sinkhorn(x, n_samples=0)
    for scale in (-0.5, math.inf, math.nan):
        with raises(ValueError, f"{FN}: noise_scale must be a finite number >= 0, got {scale}"):
            gumbel_sinkhorn(x, noise_scale=scale)
    with raises(TypeError, f"{FN}: hard must be True or False, got int 1"):
        gumbel_sinkhorn(x, hard=1)
    with raises(TypeError, f"{FN}: generator must be a gumbelrs.Generator or None, got "
                           "torch._C.Generator"):
        gumbel_sinkhorn(x, generator=torch.Generator())


@pytest.mark.parametrize("value, name", [(math.nan, "nan"), (math.inf, "inf")])
def test_nan_and_inf_weights_are_refused(value, name):
    x = torch.zeros(2, 3, 3)
    x[1, 2, 0] = value
    with raises(ValueError, f"{FN}: log_alpha[1, 2, 0] is {name}; log_alpha must be finite or "
                            "-inf (a -inf entry forbids that pair)"):
        gumbel_sinkhorn(x)


def test_rows_and_columns_without_an_allowed_pair_are_refused():
    x = torch.zeros(2, 3, 3)
    x[1, 2, :] = NEG_INF
    with raises(ValueError, f"{FN}: log_alpha[1, 2, :] is -inf everywhere; every row and every "
                            "column needs an entry above -inf (a permutation pairs each row with "
                            "a column)"):
        gumbel_sinkhorn(x)
    x = torch.zeros(2, 3, 3)
    x[0, :, 1] = NEG_INF
    with raises(ValueError, f"{FN}: log_alpha[0, :, 1] is -inf everywhere; every row and every "
                            "column needs an entry above -inf (a permutation pairs each row with "
                            "a column)"):
        gumbel_sinkhorn(x)


def test_an_overflowing_perturbation_is_refused():
    x = torch.zeros(2, 2, 2)
    g = _noise("gumbel", [2, 1, 2, 2], generator=Generator(0))
    first = ((1e30 * g) / 1e-20).isinf().flatten().nonzero()[0].item()
    at = ", ".join(str(i) for i in np.unravel_index(first, (2, 1, 2, 2)))
    with raises(ValueError, f"{FN}: the perturbed weight at [{at}] of the (*batch, n_samples, "
                            "n, n) samples overflows float32: ((log_alpha - its row's max) + "
                            "noise_scale * g) / tau is not finite; use a larger tau or a smaller "
                            "noise_scale"):
        gumbel_sinkhorn(x, 1e-20, noise_scale=1e30, generator=Generator(0))


def test_torch_func_transforms_are_refused():
    with raises(RuntimeError, f"{FN}: torch.func transforms (vmap, grad, jacrev, ...) are not "
                              "supported; pass the batch as leading dimensions of log_alpha and "
                              "use torch.autograd"):
        torch.func.vmap(gumbel_sinkhorn, randomness="different")(torch.zeros(2, 3, 3))


def test_module_is_public():
    assert gumbelrs.structured.gumbel_sinkhorn is gumbel_sinkhorn
    assert "gumbel_sinkhorn" in gumbelrs.structured.__all__
