"""Exact linear assignment: gumbelrs.structured.matching against scipy's
optimum (linear_sum_assignment) and against trying every permutation.

Totals are compared exactly: both sides sum the float64 values of the
weights they pick with ``math.fsum`` (correctly rounded), so two optimal
assignments, tied or not, give the same number."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import gumbelrs
from gumbelrs import _core, _cuda, _dispatch
from gumbelrs.structured import matching

from .conftest import raises

FORBID = {True: -math.inf, False: math.inf}


def _total(w: np.ndarray, cols) -> float:
    """The exact total of ``w`` (float64, ``n x m``) at rows ``0..n-1``, columns ``cols``."""
    return math.fsum(w[i, j] for i, j in enumerate(cols))


def _check(weights: torch.Tensor, perm: torch.Tensor, maximize: bool) -> int:
    """Asserts that ``perm`` gives every row of each matrix its own column and
    scipy's optimal total; returns the number of matrices checked."""
    w = weights.double().reshape(-1, *weights.shape[-2:]).numpy()
    p = perm.reshape(-1, weights.shape[-2]).numpy()
    assert perm.dtype == torch.int64 and perm.shape == weights.shape[:-1]
    for wb, pb in zip(w, p):
        assert len(set(pb.tolist())) == len(pb) and pb.min() >= 0 and pb.max() < wb.shape[1]
        rows, cols = linear_sum_assignment(wb, maximize=maximize)
        assert rows.tolist() == list(range(len(rows)))
        assert _total(wb, pb) == _total(wb, cols), (wb, pb, cols)
    return len(w)


def _shapes(largest: int = 12):
    return [(n, m) for n in range(1, largest + 1) for m in range(n, largest + 1)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("maximize", [True, False])
def test_random_matrices_get_scipys_optimum(dtype, maximize):
    """936 random matrices of every shape n x m, 1 <= n <= m <= 12, at
    magnitudes from 1e-3 to 1e3 (float32: compared on the float64 values of
    the float32 weights)."""
    g = torch.Generator().manual_seed(1 + maximize + 2 * (dtype == torch.float32))
    checked = 0
    for n, m in _shapes():
        scale = 10.0 ** torch.randint(-3, 4, (12, 1, 1), generator=g)
        w = (torch.randn(12, n, m, generator=g, dtype=torch.float64) * scale).to(dtype)
        checked += _check(w, matching(w, maximize=maximize), maximize)
    assert checked == 936


@pytest.mark.parametrize("values", [(0, 3), (-100, 101)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_tied_and_integer_matrices_get_scipys_optimum(values, dtype):
    """Integers in {0, 1, 2} (most assignments tie) and in [-100, 100], every
    shape up to 12 x 12, maximizing and minimizing: 1,560 matrices."""
    g = torch.Generator().manual_seed(values[1])
    checked = 0
    for n, m in _shapes():
        w = torch.randint(*values, (10, n, m), generator=g).to(dtype)
        for maximize in (True, False):
            checked += _check(w, matching(w, maximize), maximize)
    assert checked == 1560


def test_constant_matrices_give_each_row_its_own_index():
    """Every assignment ties; the documented order gives row i column i (each
    row takes the first free column of its smallest cost)."""
    for n, m in [(1, 1), (3, 3), (4, 9), (12, 12)]:
        for value in (0.0, -2.5, 7.0):
            for maximize in (True, False):
                perm = matching(torch.full((2, n, m), value), maximize)
                assert torch.equal(perm, torch.arange(n).expand(2, n))


@pytest.mark.parametrize("maximize", [True, False])
def test_forbidden_pairs_are_avoided_or_make_the_matrix_infeasible(maximize):
    """Random matrices with forbidden pairs (-inf maximizing, +inf
    minimizing): the assignment avoids them with scipy's total, or, where scipy
    finds no feasible assignment, the error names the matrix."""
    g = torch.Generator().manual_seed(7 + maximize)
    feasible = infeasible = 0
    for trial in range(400):
        n = int(torch.randint(1, 9, (), generator=g))
        m = n + int(torch.randint(0, 4, (), generator=g))
        w = torch.randint(-5, 6, (n, m), generator=g).double()
        w[torch.rand(n, m, generator=g) < (0.3, 0.7)[trial % 2]] = FORBID[maximize]
        try:
            linear_sum_assignment(w.numpy(), maximize=maximize)
        except ValueError as e:
            assert "infeasible" in str(e)
            forbid = "-inf" if maximize else "+inf"
            with raises(ValueError, f"matching: no feasible assignment for weights: every way "
                                    f"to give each of its {n} rows a column of its own uses a "
                                    f"forbidden ({forbid}) pair"):
                matching(w, maximize)
            infeasible += 1
            continue
        perm = matching(w, maximize)
        assert torch.isfinite(w.gather(1, perm[:, None])).all()
        feasible += _check(w, perm, maximize)
    assert feasible > 100 and infeasible > 60


def test_larger_matrices_get_scipys_optimum():
    g = torch.Generator().manual_seed(50)
    w = torch.randn(3, 50, 50, generator=g, dtype=torch.float64)
    assert _check(w, matching(w), True) == 3
    ties = torch.randint(0, 3, (2, 40, 50), generator=g).float()
    assert _check(ties, matching(ties, maximize=False), False) == 2
    big = torch.rand(200, 200, generator=g, dtype=torch.float64)
    assert _check(big, matching(big), True) == 1


def _best_by_brute_force(a: np.ndarray, maximize: bool) -> int:
    """The best total of the integer matrix ``a`` over every assignment."""
    n, m = a.shape
    totals = [sum(a[i, j] for i, j in enumerate(p)) for p in itertools.permutations(range(m), n)]
    return max(totals) if maximize else min(totals)


@pytest.mark.parametrize("scale", [2.0**1018, 2.0**-1074, 2.0**-1000])
def test_weights_near_the_ends_of_float64_are_solved_exactly(scale):
    """Integer multiples of 2^1018 (up to 0.78 times the largest float64:
    their differences overflow unless the solver scales the matrix), of the
    smallest subnormal and of 2^-1000, against every permutation in exact
    integer arithmetic."""
    rng = np.random.default_rng(3)
    for _ in range(60):
        n = int(rng.integers(1, 6))
        a = rng.integers(-50, 51, (n, n + int(rng.integers(0, 2))))
        w = torch.from_numpy(a * scale)
        assert torch.equal(w / scale, torch.from_numpy(a).double())  # exact multiples
        for maximize in (True, False):
            perm = matching(w, maximize).numpy()
            got = sum(a[i, j] for i, j in enumerate(perm))
            assert got == _best_by_brute_force(a, maximize)


@pytest.mark.parametrize(("shape", "out"), [
    ((4, 5), (4,)), ((3, 4, 5), (3, 4)), ((2, 3, 4, 4), (2, 3, 4)), ((0, 4, 5), (0, 4)),
    ((2, 0, 3, 3), (2, 0, 3)), ((1, 1), (1,))])
def test_batch_shapes(shape, out):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    perm = matching(w)
    assert perm.shape == out and perm.dtype == torch.int64
    flat = w.reshape(-1, *shape[-2:])
    each = [matching(x) for x in flat]
    assert torch.equal(perm.reshape(-1, shape[-2]),
                       torch.stack(each) if each else perm.reshape(0, shape[-2]))


def test_results_are_bitwise_the_same_for_any_thread_count_and_simd_level():
    g = torch.Generator().manual_seed(5)
    ties = torch.randint(0, 3, (300, 12, 12), generator=g).double()
    spread = torch.randn(300, 9, 15, generator=g)
    level = _core.simd_level()
    runs = []
    try:
        for threads, simd in [(1, level), (2, level), (2, "avx2"), (2, "portable")]:
            gumbelrs.set_num_threads(threads)
            _core.set_max_simd_level(simd)
            runs.append((matching(ties), matching(spread, False)))
    finally:
        _core.set_max_simd_level(level)
    for a, b in runs[1:]:
        assert torch.equal(a, runs[0][0]) and torch.equal(b, runs[0][1])


def test_inputs_are_read_not_modified_in_any_layout():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(3, 6, 5, generator=g, dtype=torch.float64)
    base[0, 1, 2] = -math.inf
    view = base.transpose(-2, -1)  # (3, 5, 6), not contiguous
    before = base.clone()
    leaf = view.clone().requires_grad_(True)
    perm = matching(view)
    assert torch.equal(perm, matching(view.contiguous()))
    assert torch.equal(base, before)
    out = matching(leaf)
    assert torch.equal(out, perm) and not out.requires_grad and out.grad_fn is None
    assert torch.equal(leaf.detach(), view)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_solved_as_their_float32_values(dtype):
    g = torch.Generator().manual_seed(4)
    w = torch.randn(40, 7, 9, generator=g).to(dtype)
    assert torch.equal(matching(w), matching(w.float()))
    w[3, 2, 1] = math.nan
    with raises(ValueError, "matching: weights[3, 2, 1] is NaN; weights must be finite or -inf "
                            "(-inf forbids a pair when maximize=True; +inf has no best total)"):
        matching(w)


def test_cuda_weights_are_solved_by_the_cpu_solver_and_come_back_on_their_device():
    """The dispatch here; on a GPU, tests/test_cuda.py runs CUDA weights."""
    assert _dispatch.solver(torch.device("cuda", 0)) is _cuda
    assert _dispatch.solver(torch.device("cpu")) is gumbelrs._cpu
    w = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(8), requires_grad=True)
    out = _cuda.matching("matching", w, True)  # on a CPU tensor: the copies are no-ops
    assert torch.equal(out, matching(w)) and out.device == w.device


# ---------------------------------------------------------------- bad input


def test_bad_arguments_get_exact_messages():
    with raises(TypeError, "matching: weights must be a torch.Tensor, got list"):
        matching([[1.0]])
    with raises(TypeError, "matching: weights must be a dense tensor, got layout "
                           "torch.sparse_coo; convert it with .to_dense()"):
        matching(torch.eye(3).to_sparse())
    for dtype in (torch.int64, torch.int32, torch.bool):
        with raises(TypeError, "matching: weights must be a floating-point tensor (float16, "
                               f"bfloat16, float32 or float64), got dtype {dtype}; convert them "
                               "with weights.double() (exact for integers up to 2**53)"):
            matching(torch.ones(2, 2, dtype=dtype))
    with raises(TypeError, "matching: weights must be a floating-point tensor (float16, "
                           "bfloat16, float32 or float64), got dtype torch.complex64"):
        matching(torch.ones(2, 2, dtype=torch.complex64))
    with raises(ValueError, "matching: weights must be a matrix or a batch of matrices "
                            "(*batch, n, m), got a 1-d tensor of shape (5,)"):
        matching(torch.zeros(5))
    with raises(ValueError, "matching: weights must be a matrix or a batch of matrices "
                            "(*batch, n, m), got a 0-d tensor of shape ()"):
        matching(torch.tensor(1.0))
    for shape in [(0, 3), (2, 0, 0)]:
        with raises(ValueError, "matching: weights must have at least one row (shape "
                                f"(*batch, n, m) with 1 <= n <= m), got shape {shape}"):
            matching(torch.zeros(shape))
    with raises(ValueError, "matching: weights must have no more rows than columns (n <= m: "
                            "each row gets a column of its own), got shape (2, 4, 3) with n=4 "
                            "> m=3; pass weights.transpose(-2, -1) to assign the columns to "
                            "rows"):
        matching(torch.zeros(2, 4, 3))
    with raises(TypeError, "matching: maximize must be True or False, got int 1"):
        matching(torch.zeros(2, 2), 1)
    with raises(RuntimeError, "gumbelrs: tensors on device 'meta' are not supported; use CPU "
                              "or CUDA tensors"):
        matching(torch.zeros(2, 2, device="meta"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nan_and_unbounded_weights_name_the_first_in_the_batch(dtype):
    w = torch.zeros(2, 3, 4, dtype=dtype)
    w[1, 0, 2] = math.nan
    rule = {True: "weights must be finite or -inf (-inf forbids a pair when maximize=True; "
                  "+inf has no best total)",
            False: "weights must be finite or +inf (+inf forbids a pair when maximize=False; "
                   "-inf has no best total)"}
    for maximize in (True, False):
        with raises(ValueError, f"matching: weights[1, 0, 2] is NaN; {rule[maximize]}"):
            matching(w, maximize)
    w[1, 2, 3] = math.inf
    w[0, 2, 1] = -math.inf  # forbidden when maximizing, unbounded when minimizing
    with raises(ValueError, f"matching: weights[1, 0, 2] is NaN; {rule[True]}"):
        matching(w)
    with raises(ValueError, f"matching: weights[0, 2, 1] is -inf; {rule[False]}"):
        matching(w, maximize=False)
    w[1, 0, 2] = 0.0
    with raises(ValueError, f"matching: weights[1, 2, 3] is +inf; {rule[True]}"):
        matching(w)
    # A bad weight anywhere is reported before an infeasible matrix.
    w[0, 1] = -math.inf
    with raises(ValueError, f"matching: weights[1, 2, 3] is +inf; {rule[True]}"):
        matching(w)


def test_an_infeasible_matrix_is_named_by_its_batch_index():
    w = torch.zeros(2, 3, 3, 4)
    w[1, 2, :, 1:] = -math.inf  # three rows, one allowed column
    w[1, 0, 2] = -math.inf  # a row with no allowed column
    with raises(ValueError, "matching: no feasible assignment for weights[1, 0]: every way to "
                            "give each of its 3 rows a column of its own uses a forbidden (-inf) "
                            "pair"):
        matching(w)
    with raises(ValueError, "matching: no feasible assignment for weights[1, 0]: every way to "
                            "give each of its 3 rows a column of its own uses a forbidden (+inf) "
                            "pair"):
        matching(-w, maximize=False)
    w[1, 0, 2] = 0.0
    with raises(ValueError, "matching: no feasible assignment for weights[1, 2]: every way to "
                            "give each of its 3 rows a column of its own uses a forbidden (-inf) "
                            "pair"):
        matching(w)
    assert matching(w[:, :2]).shape == (2, 2, 3)
