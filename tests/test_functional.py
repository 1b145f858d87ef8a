"""The public ops: distributions, parity with the plain-torch reference,
gradients, masks, threads, memory sharing and input checking.

Statistical tests use fixed seeds; each asserts a p-value above 1e-4, so a
correct implementation fails any one of them with probability 1e-4 for a
random seed (the ~20 such tests together: < 2e-3), and a fixed seed makes the
outcome deterministic.
"""

import json
import math
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import gumbelrs
from gumbelrs import _core, _cpu, _reference
from gumbelrs.functional import _noise

from .conftest import raises, tied_logits

ALPHA = 1e-4
NEG_INF = float("-inf")
F32 = "tau must be in [1.1754944e-38, 3.4028235e+38]"
F64 = "tau must be in [2.2250739e-308, 1.7976931e+308]"


def chi2_p(counts, probs):
    counts = np.asarray(counts, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    expected = probs / probs.sum() * counts.sum()
    assert expected.min() >= 5, "too few expected counts for a chi-square test"
    return stats.chisquare(counts, expected).pvalue


def fresh(seed=11):
    return gumbelrs.Generator(seed)


# --------------------------------------------------------------- distributions

LOGITS = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5, NEG_INF])
PROBS = torch.softmax(LOGITS, 0)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0, 5.0])
@pytest.mark.parametrize("hard", [False, True])
def test_argmax_frequencies_follow_softmax(gen, tau, hard):
    x = LOGITS.expand(40_000, -1)
    y = gumbelrs.gumbel_softmax(x, tau, hard=hard, generator=gen)
    counts = torch.bincount(y.argmax(-1), minlength=6)
    assert counts[5] == 0
    assert chi2_p(counts[:5], PROBS[:5]) > ALPHA
    if hard:
        assert set(y.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(y.sum(-1), torch.ones(40_000))


@pytest.mark.parametrize("dim", [-1, 0])
def test_sample_categorical_frequencies_follow_softmax(gen, dim):
    x = LOGITS.unsqueeze(0) if dim == -1 else LOGITS.unsqueeze(1)
    s = gumbelrs.sample_categorical(x, 40_000, dim=dim, generator=gen)
    assert s.shape == (1, 40_000) and s.dtype == torch.int64
    counts = torch.bincount(s.flatten(), minlength=6)
    assert counts[5] == 0
    assert chi2_p(counts[:5], PROBS[:5]) > ALPHA


def test_gumbel_topk_ordered_pairs_follow_plackett_luce(gen):
    logits = torch.tensor([0.5, -0.3, 1.2, 0.0])
    p = torch.softmax(logits, 0).tolist()
    idx = gumbelrs.gumbel_topk(logits.expand(60_000, -1), 2, generator=gen)
    assert idx.shape == (60_000, 2)
    assert bool((idx[:, 0] != idx[:, 1]).all())
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    code = idx[:, 0] * 4 + idx[:, 1]
    counts = torch.bincount(code, minlength=16)
    observed = [int(counts[i * 4 + j]) for i, j in pairs]
    expected = [p[i] * p[j] / (1 - p[i]) for i, j in pairs]
    assert chi2_p(observed, expected) > ALPHA


@pytest.mark.parametrize("tau", [0.2, 1.0, 3.0])
def test_rounded_relaxed_bernoulli_follows_bernoulli(gen, tau):
    logits = torch.tensor([-2.0, -0.5, 0.0, 0.7, 2.5])
    n = 20_000
    y = gumbelrs.relaxed_bernoulli(logits.expand(n, -1), tau, generator=gen)
    ones = (y > 0.5).sum(0).double()
    p = torch.sigmoid(logits).double()
    stat = float((((ones - n * p) ** 2) / (n * p * (1 - p))).sum())
    assert stats.chi2.sf(stat, df=5) > ALPHA


def test_hard_concrete_point_masses_match_closed_form(gen):
    lo, hi, tau = -0.1, 1.1, 2 / 3
    logits = torch.tensor([-1.5, 0.0, 1.0])
    n = 30_000
    z = gumbelrs.hard_concrete(logits.expand(n, -1), tau, (lo, hi), generator=gen)
    for c, x in enumerate(logits.tolist()):
        p0 = 1 / (1 + math.exp(x - tau * math.log(-lo / hi)))
        p1 = 1 / (1 + math.exp(-(x - tau * math.log((1 - lo) / (hi - 1)))))
        col = z[:, c]
        counts = [int((col == 0).sum()), int((col == 1).sum()), int(((col > 0) & (col < 1)).sum())]
        assert chi2_p(counts, [p0, p1, 1 - p0 - p1]) > ALPHA


# ------------------------------------------------------- parity with reference

CASES = [((7, 13), -1), ((3, 5, 4), 1), ((6, 9), 0), ((2, 1000), -1), ((4, 3, 2), 0)]


def _tol(dtype):
    # Soft values agree to the rounding of exp((w - max) / tau): a few ulp of
    # its argument (|arg| <~ 60 here) plus the exp error.
    if dtype == torch.float32:
        return {"rtol": 2e-5, "atol": 1e-7}
    return {"rtol": 1e-12, "atol": 1e-15}


def assert_grads_close(got, want, ulps=32):
    # grad = y * (g - dot) / tau cancels where g ~ dot: compare against the
    # scale of the whole gradient (`ulps` ulp of its largest entry).
    atol = ulps * torch.finfo(want.dtype).eps * float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=_tol(want.dtype)["rtol"], atol=atol)


@pytest.mark.parametrize(("shape", "dim"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_row_tau", [False, True])
def test_gumbel_softmax_matches_reference(shape, dim, dtype, per_row_tau):
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    x.view(-1)[::7] = NEG_INF
    x.select(dim, 1).fill_(0.5)  # every row keeps a finite logit
    batch = [n for i, n in enumerate(shape) if i != dim % len(shape)]
    tau = torch.rand(batch, dtype=dtype, generator=torch.Generator().manual_seed(1)) + 0.2 \
        if per_row_tau else 0.4
    g = gumbelrs.gumbel_noise(shape, dtype=dtype, generator=fresh())
    want = _reference.gumbel_softmax(x, g, tau, dim=dim)
    got = gumbelrs.gumbel_softmax(x, tau, dim=dim, generator=fresh())
    torch.testing.assert_close(got, want, **_tol(dtype))
    assert bool((got[x == NEG_INF] == 0).all())

    hard = gumbelrs.gumbel_softmax(x, tau, hard=True, dim=dim, generator=fresh())
    w = _reference.perturbed(x, g, dim)
    one_hot = torch.zeros_like(x).scatter_(dim, w.argmax(dim, keepdim=True), 1.0)
    assert torch.equal(hard, one_hot)

    w = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    xr = x.clone().requires_grad_()
    (gumbelrs.gumbel_softmax(xr, tau, dim=dim, generator=fresh()) * w).sum().backward()
    xs = x.clone().requires_grad_()
    (_reference.gumbel_softmax(xs, g, tau, dim=dim) * w).sum().backward()
    assert_grads_close(xr.grad, xs.grad)
    assert bool((xr.grad[x == NEG_INF] == 0).all())


@pytest.mark.parametrize(("shape", "dim"), CASES)
def test_sampling_ops_match_reference(shape, dim):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    s = gumbelrs.sample_categorical(x, 5, dim=dim, generator=fresh())
    g = gumbelrs.gumbel_noise((5, *shape), dtype=torch.float64, generator=fresh())
    assert torch.equal(s, _reference.sample_categorical(x, g, dim=dim))
    k = min(3, shape[dim])
    t = gumbelrs.gumbel_topk(x, k, dim=dim, generator=fresh())
    g = gumbelrs.gumbel_noise(shape, dtype=torch.float64, generator=fresh())
    assert torch.equal(t, _reference.gumbel_topk(x, g, k, dim=dim))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hard", [False, True])
def test_relaxed_bernoulli_matches_reference(dtype, hard):
    x = (torch.randn(50, 30, generator=torch.Generator().manual_seed(4)) * 2).to(dtype)
    tau = torch.rand(30, dtype=dtype, generator=torch.Generator().manual_seed(5)) + 0.1
    noise = _noise("logistic", x.shape, dtype=dtype, generator=fresh())
    want = _reference.relaxed_bernoulli(x, noise, tau, hard=hard)
    got = gumbelrs.relaxed_bernoulli(x, tau, hard=hard, generator=fresh())
    if hard:
        assert torch.equal(got, (x + noise > 0).to(dtype))
    else:
        torch.testing.assert_close(got, want, **_tol(dtype))
    w = torch.randn(x.shape, dtype=dtype, generator=torch.Generator().manual_seed(6))
    xr = x.clone().requires_grad_()
    (gumbelrs.relaxed_bernoulli(xr, tau, hard=hard, generator=fresh()) * w).sum().backward()
    xs = x.clone().requires_grad_()
    (_reference.relaxed_bernoulli(xs, noise, tau, hard=hard) * w).sum().backward()
    assert_grads_close(xr.grad, xs.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hard_concrete_matches_reference(dtype):
    x = (torch.randn(80, 25, generator=torch.Generator().manual_seed(7)) * 2).to(dtype)
    noise = _noise("logistic", x.shape, dtype=dtype, generator=fresh())
    want = _reference.hard_concrete(x, noise, 0.5, (-0.2, 1.3))
    got = gumbelrs.hard_concrete(x, 0.5, (-0.2, 1.3), generator=fresh())
    torch.testing.assert_close(got, want, **_tol(dtype))
    assert bool((got == 0).any()) and bool((got == 1).any())
    xr = x.clone().requires_grad_()
    gumbelrs.hard_concrete(xr, 0.5, (-0.2, 1.3), generator=fresh()).sum().backward()
    xs = x.clone().requires_grad_()
    _reference.hard_concrete(xs, noise, 0.5, (-0.2, 1.3)).sum().backward()
    assert_grads_close(xr.grad, xs.grad)


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize(("shape", "dim", "tau"), [
    ((4, 6), -1, 0.7), ((3, 5, 2), 1, 1.3), ((5, 3), 0, "rows"),
])
def test_gumbel_softmax_gradcheck(shape, dim, tau):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    if tau == "rows":
        tau = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda v: gumbelrs.gumbel_softmax(v, tau, dim=dim, generator=fresh()), (x,)
    )


def test_bernoulli_ops_gradcheck():
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v: gumbelrs.relaxed_bernoulli(v, 0.6, generator=fresh()), (x,)
    )
    assert torch.autograd.gradcheck(
        lambda v: gumbelrs.hard_concrete(v, 0.8, generator=fresh(3)), (x,)
    )


def test_temperature_gradients_gradcheck():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([0.5, 1.0, 2.0, 0.7], dtype=torch.float64, requires_grad=True)
    one = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    elems = (torch.rand(4, 6, dtype=torch.float64) + 0.3).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v, t: gumbelrs.gumbel_softmax(v, t, generator=fresh()), (x, rows))
    assert torch.autograd.gradcheck(
        lambda t: gumbelrs.gumbel_softmax(x.detach(), t, dim=0, generator=fresh()), (one,))
    assert torch.autograd.gradcheck(
        lambda v, t: gumbelrs.relaxed_bernoulli(v, t, generator=fresh()), (x, elems))


def test_straight_through_gradient_is_the_soft_gradient():
    x = torch.randn(6, 9, dtype=torch.float64)
    w = torch.randn(6, 9, dtype=torch.float64)
    for op in (
        lambda v, hard: gumbelrs.gumbel_softmax(v, 0.5, hard=hard, generator=fresh()),
        lambda v, hard: gumbelrs.relaxed_bernoulli(v, 0.5, hard=hard, generator=fresh()),
    ):
        grads = []
        for hard in (False, True):
            v = x.clone().requires_grad_()
            (op(v, hard) * w).sum().backward()
            grads.append(v.grad)
        assert torch.equal(grads[0], grads[1])


def test_hard_samples_are_the_same_with_and_without_autograd():
    x = torch.randn(300, 20)
    plain = gumbelrs.gumbel_softmax(x, 0.5, hard=True, generator=fresh())
    tracked = gumbelrs.gumbel_softmax(x.clone().requires_grad_(), 0.5, hard=True,
                                      generator=fresh())
    assert torch.equal(plain, tracked.detach())


def test_masked_categories_get_exactly_zero_gradient():
    x = torch.tensor([[0.3, NEG_INF, 1.0, NEG_INF]], dtype=torch.float64, requires_grad=True)
    y = gumbelrs.gumbel_softmax(x, 0.1, hard=True, generator=fresh())
    (y * torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)).sum().backward()
    assert x.grad[0, 1] == 0 and x.grad[0, 3] == 0
    assert torch.isfinite(x.grad).all()


def test_extreme_temperatures_and_logits_stay_finite():
    x = torch.tensor([[3e38, 0.0, -3e38], [1.0, 1.0, 1.0]])
    for tau in (1e-30, 1e-3, 1e3, 1e30):
        y = gumbelrs.gumbel_softmax(x, tau, generator=fresh())
        assert torch.isfinite(y).all(), tau
        torch.testing.assert_close(y.sum(-1), torch.ones(2))
        assert torch.isfinite(gumbelrs.relaxed_bernoulli(x, tau, generator=fresh())).all()


# ------------------------------------------------------- threads and memory


@pytest.mark.parametrize("shape", [(96, 1024), (5000, 10)])
def test_results_are_bitwise_identical_for_any_thread_count(shape):
    x = torch.randn(shape)

    def run():
        return (
            gumbelrs.gumbel_softmax(x, 0.5, generator=fresh()),
            gumbelrs.gumbel_softmax(x, 0.5, hard=True, dim=0, generator=fresh()),
            gumbelrs.sample_categorical(x, 3, generator=fresh()),
            gumbelrs.gumbel_topk(x, 4, dim=-1, generator=fresh()),
            gumbelrs.relaxed_bernoulli(x, 0.5, generator=fresh()),
            gumbelrs.hard_concrete(x, generator=fresh()),
            gumbelrs.gumbel_noise(x.shape, generator=fresh()),
        )
    gumbelrs.set_num_threads(1)
    one = run()
    gumbelrs.set_num_threads(2)
    assert gumbelrs.get_num_threads() == 2
    two = run()
    for a, b in zip(one, two):
        assert torch.equal(a, b)
    # The same on our own thread pool as on torch's OpenMP threads.
    assert not _core.use_openmp(False)
    try:
        assert not _core.uses_openmp()
        pool = run()
    finally:
        assert _core.use_openmp(_cpu.ON_TORCHS_OPENMP) == _cpu.ON_TORCHS_OPENMP
    for a, b in zip(one, pool):
        assert torch.equal(a, b)


def _draw_in_child(queue):
    # As DataLoader workers do: torch's own OpenMP is not fork-safe either.
    torch.set_num_threads(1)
    assert gumbelrs.get_num_threads() == 2
    x = torch.randn(512, 1024, generator=torch.Generator().manual_seed(0))
    queue.put(gumbelrs.gumbel_softmax(x, 0.5, generator=fresh()).sum().item())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_kernels_work_in_a_child_forked_after_parallel_work():
    gumbelrs.set_num_threads(2)
    x = torch.randn(512, 1024, generator=torch.Generator().manual_seed(0))
    want = gumbelrs.gumbel_softmax(x, 0.5, generator=fresh()).sum().item()  # pools started
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_draw_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0, "the forked child hung or failed"
    assert queue.get(timeout=5) == want


# Run in a fresh process: the threads of the process before and after a parallel kernel.
_THREADS_OF_A_KERNEL = """
import json, os, torch, gumbelrs

def names():
    return sorted(open(f"/proc/self/task/{t}/comm").read().strip()
                  for t in os.listdir("/proc/self/task"))

torch.set_num_threads(2)
gumbelrs.set_num_threads(2)
x = torch.zeros(4096, 1024)  # torch starts its OpenMP threads here
before = names()
gumbelrs.gumbel_softmax(x, generator=gumbelrs.Generator(0))  # parallel: 4M elements
print(json.dumps([before, names()]))
"""


@pytest.mark.skipif(not _cpu.ON_TORCHS_OPENMP, reason="torch does not use libgomp here")
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc/self/task")
def test_kernels_run_on_torchs_openmp_threads():
    """A parallel kernel starts no thread: it runs on the OpenMP threads torch
    started. (Our own pool, the fallback, would start threads named gumbelrs-N.)"""
    r = subprocess.run([sys.executable, "-c", _THREADS_OF_A_KERNEL], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    before, after = json.loads(r.stdout)
    assert len(before) > 1, f"torch started no OpenMP threads: {before}"
    assert after == before, f"the kernel started threads: {before} -> {after}"


def test_no_binding_takes_an_address_to_call():
    """The core calls only the GOMP_parallel it looked up itself in the libgomp
    already loaded (set_openmp(address) let any int become a function
    pointer: set_openmp(12345) and a kernel call crashed the interpreter).
    Every binding that takes an int takes it as a count, seed, offset, stream
    element index (start), size or flag, never as an address."""
    import inspect
    import re

    stub = (Path(_core.__file__).parent / "_core.pyi").read_text()
    assert not hasattr(_core, "set_openmp")
    params = re.findall(r"(\w+): int", stub)
    assert set(params) <= {"seed", "offset", "start", "num_samples", "k", "n"}, params
    assert inspect.signature(_core.use_openmp).parameters.keys() == {"on"}
    assert _core.use_openmp(True) == _cpu.ON_TORCHS_OPENMP
    assert _core.use_openmp(_cpu.ON_TORCHS_OPENMP) == _cpu.ON_TORCHS_OPENMP


def test_tensors_cross_into_rust_without_copies():
    x = torch.randn(8, 16, requires_grad=True)
    view = _cpu._np(x)
    assert _core.data_ptr(view) == x.data_ptr()
    out = torch.empty(8, 16)
    assert _core.data_ptr(_cpu._np(out)) == out.data_ptr()
    idx = torch.empty(5, dtype=torch.int64)
    assert _core.data_ptr(_cpu._np(idx)) == idx.data_ptr()
    # A contiguous float32/float64 input reaches the kernel as it is, whatever dim.
    from gumbelrs import _dispatch
    assert _dispatch.prepare(x).data_ptr() == x.data_ptr()


def test_inputs_are_never_modified():
    x = torch.randn(10, 7)
    x[0, 0] = NEG_INF
    keep = x.clone()
    tau = torch.rand(10) + 0.5
    tau_keep = tau.clone()
    gumbelrs.gumbel_softmax(x, tau, hard=True, generator=fresh())
    gumbelrs.gumbel_softmax(x, 0.3, dim=0, generator=fresh())
    gumbelrs.sample_categorical(x, 4, generator=fresh())
    gumbelrs.gumbel_topk(x, 3, generator=fresh())
    gumbelrs.relaxed_bernoulli(x, 0.5, hard=True, generator=fresh())
    gumbelrs.hard_concrete(x, generator=fresh())
    assert torch.equal(x, keep) and torch.equal(tau, tau_keep)


def test_non_contiguous_and_half_inputs():
    base = torch.randn(12, 10)
    x = base.t()  # non-contiguous view
    a = gumbelrs.gumbel_softmax(x, 0.5, generator=fresh())
    b = gumbelrs.gumbel_softmax(x.contiguous(), 0.5, generator=fresh())
    assert torch.equal(a, b)
    for dtype in (torch.float16, torch.bfloat16):
        h = base.to(dtype)
        y = gumbelrs.gumbel_softmax(h, 0.5, generator=fresh())
        assert y.dtype == dtype
        assert torch.equal(y, gumbelrs.gumbel_softmax(h.float(), 0.5, generator=fresh()).to(dtype))
        hard = gumbelrs.gumbel_softmax(h, 0.5, hard=True, generator=fresh())
        assert set(hard.unique().tolist()) == {0.0, 1.0}
        assert gumbelrs.relaxed_bernoulli(h, 0.5, generator=fresh()).dtype == dtype
        assert gumbelrs.hard_concrete(h, generator=fresh()).dtype == dtype
        s = gumbelrs.sample_categorical(h, 2, generator=fresh())
        assert torch.equal(s, gumbelrs.sample_categorical(h.float(), 2, generator=fresh()))
        hr = h.clone().requires_grad_()
        gumbelrs.gumbel_softmax(hr, 0.5, generator=fresh()).sum().backward()
        assert hr.grad.dtype == dtype


def test_empty_tensors_give_empty_results():
    assert gumbelrs.gumbel_softmax(torch.empty(0, 5), 0.5).shape == (0, 5)
    assert gumbelrs.gumbel_softmax(torch.empty(3, 0), 0.5).shape == (3, 0)
    assert gumbelrs.gumbel_softmax(torch.empty(0, 5), 0.5, hard=True).shape == (0, 5)
    assert gumbelrs.gumbel_softmax(torch.empty(3, 0), 0.5, hard=True).shape == (3, 0)
    x = torch.empty(3, 0, requires_grad=True)
    gumbelrs.gumbel_softmax(x, 0.5, hard=True).sum().backward()
    assert x.grad.shape == (3, 0)
    assert gumbelrs.sample_categorical(torch.empty(0, 5), 2).shape == (0, 2)
    assert gumbelrs.gumbel_topk(torch.empty(0, 5), 2).shape == (0, 2)
    assert gumbelrs.gumbel_topk(torch.empty(3, 0), 0).shape == (3, 0)
    assert gumbelrs.relaxed_bernoulli(torch.empty(0)).shape == (0,)
    assert gumbelrs.hard_concrete(torch.empty(2, 0)).shape == (2, 0)


def test_scalar_logits_for_bernoulli_ops():
    y = gumbelrs.relaxed_bernoulli(torch.tensor(0.3), 0.5, generator=fresh())
    assert y.shape == () and 0 < float(y) < 1
    assert gumbelrs.hard_concrete(torch.tensor(0.3), generator=fresh()).shape == ()


def test_infinite_bernoulli_logits_are_fixed_gates():
    x = torch.tensor([NEG_INF, float("inf")], dtype=torch.float64, requires_grad=True)
    y = gumbelrs.relaxed_bernoulli(x, 0.5, generator=fresh())
    assert y.tolist() == [0.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 0.0]
    assert gumbelrs.hard_concrete(x.detach(), generator=fresh()).tolist() == [0.0, 1.0]


# ------------------------------------------------------------------- errors


def test_bad_logits_values():
    x = torch.zeros(2, 3)
    x[1, 2] = float("nan")
    with raises(ValueError, "gumbel_softmax: logits[1, 2] is NaN; logits must be finite or -inf "
                "(a -inf logit masks its category out)"):
        gumbelrs.gumbel_softmax(x)
    x[1, 2] = float("inf")
    with raises(ValueError, "sample_categorical: logits[1, 2] is +inf; logits must be finite or "
                "-inf (-inf masks a category out; +inf has no probability distribution)"):
        gumbelrs.sample_categorical(x)
    x[1] = NEG_INF
    with raises(ValueError, "gumbel_topk: every logit of logits[1, :] is -inf; each row needs at "
                "least one category that is not masked"):
        gumbelrs.gumbel_topk(x, 1)
    with raises(ValueError, "gumbel_softmax: every logit of logits[:, 2] is -inf; each row needs "
                "at least one category that is not masked"):
        gumbelrs.gumbel_softmax(torch.tensor([[0.0, 1.0, NEG_INF], [0.0, 1.0, NEG_INF]]), dim=0)
    with raises(ValueError, "gumbel_topk: k=2 but logits[0, :] has only 1 categories that are "
                "not -inf"):
        gumbelrs.gumbel_topk(torch.tensor([[0.0, NEG_INF, NEG_INF]]), 2)
    with raises(ValueError, "relaxed_bernoulli: logits[3] is NaN; logits must be not NaN (-inf and "
                "+inf give gates that are always closed or open)"):
        gumbelrs.relaxed_bernoulli(torch.tensor([0.0, 1.0, 2.0, float("nan")]))
    with raises(ValueError, "sample_categorical: logits have no category along dim=1 (size 0)"):
        gumbelrs.sample_categorical(torch.empty(2, 0))


def test_bad_types_and_ranges():
    x = torch.zeros(2, 3)
    with raises(TypeError, "gumbel_softmax: logits must be a floating-point tensor (float16, "
                "bfloat16, float32 or float64), got dtype torch.int64"):
        gumbelrs.gumbel_softmax(torch.zeros(2, 3, dtype=torch.int64))
    with raises(TypeError, "sample_categorical: logits must be a floating-point tensor (float16, "
                "bfloat16, float32 or float64), got dtype torch.complex64"):
        gumbelrs.sample_categorical(torch.zeros(2, 3, dtype=torch.complex64))
    with raises(TypeError, "gumbel_softmax: logits must be a torch.Tensor, got list"):
        gumbelrs.gumbel_softmax([1.0, 2.0])
    with raises(IndexError, "gumbel_softmax: dim must be an int in [-2, 1] (logits have 2 "
                "dimension(s)), got 2"):
        gumbelrs.gumbel_softmax(x, dim=2)
    with raises(ValueError, "gumbel_softmax: logits must have at least 1 dimension(s), got a 0-d "
                "tensor"):
        gumbelrs.gumbel_softmax(torch.tensor(1.0))
    f32 = ("(positive, normal and finite in float32, the dtype the logits are computed in), "
           "got ")
    with raises(ValueError, f"gumbel_softmax: {F32} {f32}0.0"):
        gumbelrs.gumbel_softmax(x, 0.0)
    with raises(ValueError, f"relaxed_bernoulli: {F32} {f32}nan"):
        gumbelrs.relaxed_bernoulli(x, float("nan"))
    with raises(ValueError, f"hard_concrete: {F32} {f32}inf"):
        gumbelrs.hard_concrete(x, float("inf"))
    with raises(ValueError, f"gumbel_softmax: {F32} everywhere {f32}-1.0"):
        gumbelrs.gumbel_softmax(x, torch.tensor([0.5, -1.0]))
    with raises(ValueError, f"relaxed_bernoulli: {F32} everywhere {f32}inf"):
        gumbelrs.relaxed_bernoulli(x, torch.tensor([0.5, float("inf"), 1.0]))
    with raises(ValueError, "gumbel_softmax: tau of shape (3,) does not broadcast against the "
                "batch shape (2,) (logits' shape without the category dimension)"):
        gumbelrs.gumbel_softmax(x, torch.ones(3))
    with raises(TypeError, "gumbel_softmax: tau must be a positive float or a tensor, got str "
                "'1'"):
        gumbelrs.gumbel_softmax(x, "1")
    with raises(TypeError, "gumbel_softmax: hard must be True or False, got int 1"):
        gumbelrs.gumbel_softmax(x, hard=1)
    with raises(ValueError, "sample_categorical: num_samples must be an int in [1, 2147483647], "
                "got 0"):
        gumbelrs.sample_categorical(x, 0)
    with raises(ValueError, "gumbel_topk: k must be an int in [0, 3] (the size of logits along "
                "dim=-1), got 4"):
        gumbelrs.gumbel_topk(x, 4)
    with raises(ValueError, "gumbel_topk: k must be an int in [0, 3] (the size of logits along "
                "dim=-1), got -1"):
        gumbelrs.gumbel_topk(x, -1)
    with raises(TypeError, "gumbel_softmax: generator must be a gumbelrs.Generator or None, got "
                "torch._C.Generator"):
        gumbelrs.gumbel_softmax(x, generator=torch.Generator())
    with raises(ValueError, "hard_concrete: limits must satisfy lo < 0 < 1 < hi (finite) so that "
                "exact 0 and 1 occur, got (0.0, 1.0)"):
        gumbelrs.hard_concrete(x, limits=(0.0, 1.0))
    with raises(ValueError, "hard_concrete: gradients with respect to tau are not supported; pass "
                "tau.detach() (a learned temperature can be folded into the logits instead)"):
        gumbelrs.hard_concrete(x, torch.ones(2, 3, requires_grad=True))
    with raises(ValueError, "set_num_threads: n must be an int >= 1, got 0"):
        gumbelrs.set_num_threads(0)


def test_tensors_on_other_devices_get_a_clear_error():
    x = torch.zeros(2, 3, device="meta")
    with raises(RuntimeError, "gumbelrs: tensors on device 'meta' are not supported; use CPU or "
                "CUDA tensors"):
        gumbelrs.gumbel_softmax(x)


# --------------------------------------------------------------- compilation


def test_compiled_function_draws_the_same_stream_as_eager():
    def step(x, w, gen):
        y = gumbelrs.gumbel_softmax(x, 0.5, hard=True, generator=gen)
        b = gumbelrs.relaxed_bernoulli(x, 0.7, generator=gen)
        z = gumbelrs.hard_concrete(x, generator=gen)
        s = gumbelrs.sample_categorical(x, 2, generator=gen)
        t = gumbelrs.gumbel_topk(x, 3, generator=gen)
        loss = (y * w).sum() + (b * w).sum() + z.sum()
        return loss, s, t

    compiled = torch.compile(step, fullgraph=True)
    x = torch.randn(5, 8)
    w = torch.randn(5, 8)
    ge, gc = fresh(), fresh()
    for _ in range(2):  # the second call checks that the offset advances in compiled code
        xe = x.clone().requires_grad_()
        xc = x.clone().requires_grad_()
        le, se, te = step(xe, w, ge)
        lc, sc, tc = compiled(xc, w, gc)
        assert torch.equal(se, sc) and torch.equal(te, tc)
        torch.testing.assert_close(le, lc)
        le.backward()
        lc.backward()
        torch.testing.assert_close(xe.grad, xc.grad)
        assert ge.offset == gc.offset


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_traced_function_draws_fresh_samples_of_the_eager_stream():
    """torch.jit.trace records the custom ops (it cannot see the kernels the
    eager path calls, and recorded only the outputs' allocation: a traced
    sample was uninitialised memory, and with inputs that require grad, the
    same sample on every call). Each call of the trace draws the next call's
    noise of the generator, as eager calls do, with the gradient of its sample.
    (check_trace compares two runs of the function: it warns that they differ.)"""
    def step(x, gen):
        y = gumbelrs.gumbel_softmax(x, 0.5, hard=True, generator=gen)
        b = gumbelrs.relaxed_bernoulli(x, 0.7, generator=gen)
        s = gumbelrs.sample_categorical(x, 2, generator=gen)
        t = gumbelrs.gumbel_topk(x, 3, generator=gen)
        return y, b, s, t

    x = torch.randn(5, 8)
    w = torch.randn(5, 8)
    gt, ge = fresh(), fresh()
    traced = torch.jit.trace(lambda t: step(t, gt), (x.clone().requires_grad_(),))
    ge.set_state(gt.get_state())  # past the calls of tracing and of check_trace
    outputs = []
    for _ in range(2):
        xt, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
        got, want = traced(xt), step(xe, ge)
        for g, e in zip(got, want):
            assert torch.equal(g, e)
        (got[0] * w).sum().backward()
        (want[0] * w).sum().backward()
        torch.testing.assert_close(xt.grad, xe.grad)
        assert gt.offset == ge.offset
        outputs.append(got[0])
    assert not torch.equal(outputs[0], outputs[1])
    noise = torch.jit.trace(lambda t: gumbelrs.gumbel_softmax(t, 0.5), (x,))
    assert torch.allclose(noise(x).sum(-1), torch.ones(5))


@pytest.mark.parametrize("op", ["gumbel_softmax", "gumbel_softmax_hard", "relaxed_bernoulli",
                                "sample_categorical", "gumbel_topk", "hard_concrete"])
def test_custom_op_registrations_pass_opcheck(op):
    x = torch.randn(4, 6)
    so = torch.tensor([3, 0])
    args = {
        "gumbel_softmax": ("gumbel_softmax", x, 1, 0.5, None, so),
        "gumbel_softmax_hard": ("gumbel_softmax", x, 1, 0.5, None, so),
        "relaxed_bernoulli": ("relaxed_bernoulli", x, 0.5, None, so),
        "sample_categorical": ("sample_categorical", x, 1, 3, so),
        "gumbel_topk": ("gumbel_topk", x, 1, 2, so),
        "hard_concrete": ("hard_concrete", x, 0.5, None, -0.1, 1.1, so),
    }[op]
    torch.library.opcheck(getattr(torch.ops.gumbelrs, op), args,
                          test_utils=("test_schema", "test_faketensor"))


def _random_case(rng):
    ndim = int(rng.integers(1, 5))
    shape = tuple(int(n) for n in rng.integers(1, 40, size=ndim))
    if rng.random() < 0.3:  # a long or a short category axis
        shape = (*shape[:-1], int(rng.choice([1, 2, 33, 70, 130, 1100])))
    dim = int(rng.integers(-ndim, ndim))
    dtype = torch.float32 if rng.random() < 0.5 else torch.float64
    return shape, dim, dtype


@pytest.mark.parametrize("case", range(40))
def test_random_layouts_match_the_reference(case):
    rng = np.random.default_rng(1000 + case)
    shape, dim, dtype = _random_case(rng)
    x = torch.from_numpy(rng.normal(0, 3, size=shape)).to(dtype)
    mask = torch.from_numpy(rng.random(shape) < 0.2)
    first = torch.zeros(shape, dtype=torch.bool).index_fill_(dim % len(shape), torch.tensor(0),
                                                              True)
    x[mask & ~first] = NEG_INF  # every row keeps its first category
    batch = [n for i, n in enumerate(shape) if i != dim % len(shape)]
    tau = 0.1 + torch.from_numpy(rng.random(batch)).to(dtype) if rng.random() < 0.5 else 0.7
    g = gumbelrs.gumbel_noise(shape, dtype=dtype, generator=fresh(case))
    y = gumbelrs.gumbel_softmax(x, tau, dim=dim, generator=fresh(case))
    torch.testing.assert_close(y, _reference.gumbel_softmax(x, g, tau, dim=dim), **_tol(dtype))
    hard = gumbelrs.gumbel_softmax(x, tau, hard=True, dim=dim, generator=fresh(case))
    w = _reference.perturbed(x, g, dim)
    one_hot = torch.zeros_like(x).scatter_(dim, w.argmax(dim, keepdim=True), 1.0)
    assert torch.equal(hard, one_hot)
    w = torch.from_numpy(rng.normal(size=shape)).to(dtype)
    xr = x.clone().requires_grad_()
    (gumbelrs.gumbel_softmax(xr, tau, dim=dim, generator=fresh(case)) * w).sum().backward()
    xs = x.clone().requires_grad_()
    (_reference.gumbel_softmax(xs, g, tau, dim=dim) * w).sum().backward()
    # Rows of up to 1100 categories and tau down to 0.1: the dot product and
    # the 1/tau scale grow the rounding gap to torch's softmax; 128 ulp of the
    # largest entry still catches any wrong formula or misplaced element.
    assert_grads_close(xr.grad, xs.grad, ulps=128)
    draws = gumbelrs.sample_categorical(x, 2, dim=dim, generator=fresh(case))
    g2 = gumbelrs.gumbel_noise((2, *shape), dtype=dtype, generator=fresh(case))
    assert torch.equal(draws, _reference.sample_categorical(x, g2, dim=dim))


@pytest.mark.parametrize(("shape", "dim"), [((300, 4), -1), ((70, 16), -1), ((70, 33), -1),
                                            ((9, 700), -1), ((5, 9, 3), 1), ((40, 6), 0)])
def test_tied_perturbed_logits_choose_the_first_category(shape, dim):
    """Rows whose perturbed maximum ties (built from the known noise): the first
    maximum wins, in every path (short rows transposed or not, long rows,
    strided tiles)."""
    x, first, ties = tied_logits(shape, dim, seed=11)
    assert ties >= first.numel() // 2  # the construction ties most rows
    want = torch.zeros((*first.shape, shape[dim])).scatter_(-1, first.unsqueeze(-1), 1.0)
    want = want.movedim(-1, dim)
    x.requires_grad_()
    for logits in (x, x.detach()):
        y = gumbelrs.gumbel_softmax(logits, 0.5, hard=True, dim=dim, generator=fresh())
        assert torch.equal(y, want)
    draws = gumbelrs.sample_categorical(x, 3, dim, generator=fresh())
    assert torch.equal(draws[..., 0], first)
    top = gumbelrs.gumbel_topk(x, 2, dim, generator=fresh()).movedim(dim, -1)
    assert torch.equal(top[..., 0], first)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_ties_below_the_top_go_to_the_smaller_index(dtype):
    """Logits a coarse grid below each row's largest one: their perturbed
    values tie (the noise is below their ulp) and rank by index."""
    x = torch.full((4, 300), -1e10 if dtype == torch.float32 else -1e17, dtype=dtype)
    x[1, 1::2] = 3 * x[1, 0]
    x[:, 299] = 0.0
    x[3, ::3] = -torch.inf
    top = gumbelrs.gumbel_topk(x, 50, generator=fresh())
    assert torch.equal(top[0], torch.cat([torch.tensor([299]), torch.arange(49)]))
    assert torch.equal(top[1], torch.cat([torch.tensor([299]), torch.arange(0, 98, 2)]))
    live = torch.arange(300)[torch.arange(300) % 3 != 0]
    assert torch.equal(top[3], torch.cat([torch.tensor([299]), live[:49]]))


# ------------------------------------------------- extreme scales (issue 19)


@pytest.mark.parametrize(("dtype", "offset"), [(torch.float32, 1e8), (torch.float32, -1e8),
                                               (torch.float32, 3e38), (torch.float64, 1e16),
                                               (torch.float16, 6e4), (torch.bfloat16, 1e30)])
def test_draws_are_unbiased_at_any_logit_scale(gen, dtype, offset):
    """Equal logits of any magnitude are drawn equally often: the noise is added
    relative to the row's largest logit, so rounding does not swallow it (torch's
    ``F.gumbel_softmax`` at 1e8 picks the first category 95% of the time)."""
    x = torch.full((4,), offset, dtype=dtype)
    counts = torch.bincount(gumbelrs.sample_categorical(x, 40_000, generator=gen), minlength=4)
    assert chi2_p(counts, [1, 1, 1, 1]) > ALPHA
    rows = x.expand(20_000, 4)
    hard = gumbelrs.gumbel_softmax(rows, 0.5, hard=True, generator=gen)
    assert chi2_p(hard.float().sum(0), [1, 1, 1, 1]) > ALPHA
    first = gumbelrs.gumbel_topk(rows, 2, generator=gen)[:, 0]
    assert chi2_p(torch.bincount(first, minlength=4), [1, 1, 1, 1]) > ALPHA


@pytest.mark.parametrize(("dtype", "offset"), [(torch.float32, 2.0**23), (torch.float64, -2.0**52)])
def test_unequal_logits_where_the_ulp_is_one_keep_their_probabilities(gen, dtype, offset):
    """Logits ``offset + (0, 1, 2, -1)``, exact at a scale where the ulp is 1:
    the draws follow ``softmax((0, 1, 2, -1))`` (noise added to the raw logits
    would be rounded to whole numbers there)."""
    z = torch.tensor([0.0, 1.0, 2.0, -1.0], dtype=torch.float64)
    x = (z + offset).to(dtype)
    assert torch.equal(x.double() - offset, z)
    draws = gumbelrs.sample_categorical(x, 40_000, generator=gen)
    assert chi2_p(torch.bincount(draws, minlength=4), torch.softmax(z, 0)) > ALPHA
    hard = gumbelrs.gumbel_softmax(x.expand(40_000, 4), 0.5, hard=True, generator=gen)
    assert chi2_p(hard.sum(0), torch.softmax(z, 0)) > ALPHA


@pytest.mark.parametrize("dim", [-1, 0])
def test_samples_do_not_change_when_every_logit_moves_by_the_same_exact_amount(dim):
    """softmax and argmax are shift invariant; the kernels keep that bitwise
    (the perturbation is relative to the row's largest logit), wherever the
    shifted logits are exact."""
    z = torch.randint(-64, 64, (300, 7), generator=torch.Generator().manual_seed(3)) / 8.0
    cases = [(z, c) for c in (1024.0, -4096.0, 2.0**20)] + [(z.double(), 2.0**40)]
    for z, c in cases:
        assert torch.equal(z + c - c, z)
        for hard in (False, True):
            a = gumbelrs.gumbel_softmax(z, 0.7, hard=hard, dim=dim, generator=fresh())
            b = gumbelrs.gumbel_softmax(z + c, 0.7, hard=hard, dim=dim, generator=fresh())
            assert torch.equal(a, b)
        assert torch.equal(gumbelrs.gumbel_topk(z, 3, dim, generator=fresh()),
                           gumbelrs.gumbel_topk(z + c, 3, dim, generator=fresh()))


@pytest.mark.parametrize(("dtype", "message"), [
    (torch.float32, F32), (torch.float16, F32), (torch.bfloat16, F32), (torch.float64, F64)])
def test_temperatures_outside_the_compute_dtype_are_rejected_by_name(dtype, message):
    """A temperature whose inverse would overflow (or that is not finite in the
    compute dtype) is a ValueError naming tau and the range, on every op, for
    scalar and tensor temperatures alike, never a NaN sample."""
    name = "float64" if dtype == torch.float64 else "float32"
    why = f"(positive, normal and finite in {name}, the dtype the logits are computed in), got "
    x = torch.randn(2, 3).to(dtype)
    tiny = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).tiny
    for bad in (tiny / 4, 1e39 if dtype != torch.float64 else None):
        if bad is None:
            continue
        for op in (lambda t: gumbelrs.gumbel_softmax(x, t),
                   lambda t: gumbelrs.gumbel_softmax(x, t, hard=True),
                   lambda t: gumbelrs.relaxed_bernoulli(x, t),
                   lambda t: gumbelrs.hard_concrete(x, t)):
            fn = op.__code__.co_names[-1]
            with raises(ValueError, f"{fn}: {message} {why}{bad!r}"):
                op(bad)
    rows = torch.tensor([1.0, tiny / 4], dtype=torch.float64)
    got = rows.to(torch.float64 if dtype == torch.float64 else torch.float32)[1].item()
    with raises(ValueError, f"gumbel_softmax: {message} everywhere {why}{got!r}"):
        gumbelrs.gumbel_softmax(x, rows)
    with raises(ValueError, f"relaxed_bernoulli: {message} everywhere {why}{got!r}"):
        gumbelrs.relaxed_bernoulli(x, rows.view(1, 2, 1).expand(2, 2, 3)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_temperatures_at_the_ends_of_the_range_give_finite_samples_and_gradients(dtype):
    """The smallest and largest accepted temperatures: one-hot-like and uniform
    soft samples, finite gradients (0 where the sample saturates)."""
    fi = torch.finfo(dtype)
    x = torch.randn(64, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    x[:, 4] = NEG_INF
    w = torch.randn(64, 5, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for tau in (fi.tiny, fi.max, torch.full((64,), fi.tiny, dtype=dtype)):
        xr = x.clone().requires_grad_()
        y = gumbelrs.gumbel_softmax(xr, tau, generator=fresh())
        (y * w).sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(xr.grad).all()
        assert (y[:, 4] == 0).all() and (xr.grad[:, 4] == 0).all()
        torch.testing.assert_close(y.sum(-1), torch.ones(64, dtype=dtype))
        if not isinstance(tau, torch.Tensor) and tau == fi.max:
            torch.testing.assert_close(y[:, :4], torch.full((64, 4), 0.25, dtype=dtype))
        xb = x[:, :4].clone().requires_grad_()
        for op in (gumbelrs.relaxed_bernoulli, gumbelrs.hard_concrete):
            t = tau[:, None].expand(64, 4) if isinstance(tau, torch.Tensor) else tau
            z = op(xb, t, generator=fresh())
            (z * w[:, :4]).sum().backward()
            assert torch.isfinite(z).all() and torch.isfinite(xb.grad).all()


def test_hard_concrete_limits_must_keep_their_stretch_finite():
    x = torch.randn(2, 3)
    with raises(ValueError, "hard_concrete: limits must lie in [-1.7014117e+38, 1.7014117e+38] "
                "(half the largest finite float32, the dtype the logits are computed in, so "
                "that hi - lo is finite), got (-1e+39, 1e+39)"):
        gumbelrs.hard_concrete(x, limits=(-1e39, 1e39))
    with raises(ValueError, "hard_concrete: limits must lie in [-1.7014117e+38, 1.7014117e+38] "
                "(half the largest finite float32, the dtype the logits are computed in, so "
                "that hi - lo is finite), got (-0.1, 3e+38)"):
        gumbelrs.hard_concrete(x.half(), limits=(-0.1, 3e38))
    z = gumbelrs.hard_concrete(x.double(), limits=(-1e300, 1e300), generator=fresh())
    assert torch.isfinite(z).all() and ((z == 0) | (z == 1)).all()


@pytest.mark.parametrize("tau", [torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, 1.0]),
                                 torch.tensor([-1.0, 1.0])])
def test_every_mode_rejects_the_same_bad_tensor_temperature(tau):
    """The one-hot alone does not use tau, but checks it as the other modes do."""
    x = torch.randn(2, 3)
    messages = set()
    calls = (lambda: gumbelrs.gumbel_softmax(x, tau, hard=True),
             lambda: gumbelrs.gumbel_softmax(x, tau, hard=False),
             lambda: gumbelrs.gumbel_softmax(x.clone().requires_grad_(), tau, hard=True))
    for call in calls:
        with pytest.raises(ValueError) as e:
            call()
        messages.add(str(e.value))
    assert len(messages) == 1
    assert messages.pop().startswith(f"gumbel_softmax: {F32} everywhere")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conditioned_gumbels_at_the_lowest_finite_logit_stay_finite(dtype):
    """A row at the lowest finite logit: the exact conditioned values round to
    that logit itself (nothing finite lies below it), never to -inf."""
    low = torch.finfo(dtype).min
    x = torch.full((3, 4), low, dtype=dtype)
    x[2, 1] = NEG_INF
    z = gumbelrs.gumbel_given_argmax(x, torch.tensor([0, 3, 2]), 5, generator=fresh())
    assert (z[:, :2] == low).all()
    assert (z[:, 2, 1] == NEG_INF).all() and (z[:, 2, [0, 2, 3]] == low).all()


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_inputs_are_rejected_by_name():
    x = torch.eye(3).to_sparse()
    with raises(TypeError, "gumbel_softmax: logits must be a dense tensor, got layout "
                "torch.sparse_coo; convert it with .to_dense()"):
        gumbelrs.gumbel_softmax(x)
    with raises(TypeError, "relaxed_bernoulli: logits must be a dense tensor, got layout "
                "torch.sparse_csr; convert it with .to_dense()"):
        gumbelrs.relaxed_bernoulli(torch.eye(3).to_sparse_csr())
    with raises(TypeError, "gumbel_softmax: tau must be a dense tensor, got layout "
                "torch.sparse_coo; convert it with .to_dense()"):
        gumbelrs.gumbel_softmax(torch.eye(3), torch.ones(3).to_sparse())
    with raises(TypeError, "gumbel_given_argmax: index must be a dense tensor, got layout "
                "torch.sparse_coo; convert it with .to_dense()"):
        gumbelrs.gumbel_given_argmax(torch.eye(3), torch.zeros(3, dtype=torch.int64).to_sparse())


def test_topk_of_no_draws_checks_the_logits_like_any_k():
    x = torch.tensor([[0.0, math.nan, 1.0]])
    with raises(ValueError, "gumbel_topk: logits[0, 1] is NaN; logits must be finite or -inf "
                "(a -inf logit masks its category out)"):
        gumbelrs.gumbel_topk(x, 0)
    assert gumbelrs.gumbel_topk(torch.zeros(2, 3), 0).shape == (2, 0)
