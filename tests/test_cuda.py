"""The CUDA path against the CPU path, on a GPU.

For the same generator state, CUDA draws the CPU's stream: noise and hard
samples are bitwise the CPU's, soft samples agree within a few ulp (only the
order of the row sums differs). The ops never wait for the GPU; bad data is
reported either at once (``gumbelrs.cuda.set_checks("sync")``) or later by
``gumbelrs.cuda.check_faults()`` with NaN / -1 in the faulty rows ("async").

Skipped without a CUDA device or without CuPy. The chi-square tests use fixed
seeds and demand p > 1e-4: a correct implementation fails one of them with
probability 1e-4 for a random seed (the five together: < 5e-4), and a fixed
seed makes the outcome deterministic.
"""

from contextlib import contextmanager
from functools import partial

import numpy as np
import pytest
import torch
from scipy import stats

import gumbelrs
from gumbelrs import cuda as gcuda
from gumbelrs.functional import _noise

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device visible to torch")

CUDA = torch.device("cuda")
SEED = 0xDEADBEEF12345678  # the top bit set: the seed must cross as 64 unsigned bits
NEG_INF, NAN = float("-inf"), float("nan")
ALPHA = 1e-4
SPIN = 1_000_000_000  # GPU cycles of torch.cuda._sleep, ~0.5 s: far longer than one op's host time


@pytest.fixture(scope="module", autouse=True)
def _cupy():
    try:
        import cupy  # noqa: F401
    except ImportError as e:
        pytest.skip(f"CuPy is not usable ({e}); pip install 'gumbelrs[cuda]' (or [cuda12])")


@pytest.fixture(autouse=True)
def _checks_restored_and_no_stray_faults():
    before = gcuda.get_checks()
    yield
    gcuda.set_checks(before)
    torch.cuda.set_sync_debug_mode(0)
    # Every valid input of every test ran in the default mode: nothing may have been flagged.
    assert gcuda.check_faults() is None


def gens(offset=5):
    """Two generators in the same state (SEED, offset): one per device."""
    state = torch.tensor([SEED - (1 << 64), offset])
    return gumbelrs.Generator().set_state(state), gumbelrs.Generator().set_state(state)


def on(v, device):
    return v.to(device) if isinstance(v, torch.Tensor) else v


def both(op, *args, offset=5):
    """``op(*args, generator)`` on the CPU and on CUDA from the same state; both on the CPU."""
    gc, gg = gens(offset)
    want = op(*args, gc)
    got = op(*(on(a, CUDA) for a in args), gg)
    assert got.device.type == CUDA.type
    assert gg.offset == gc.offset
    return want, got.cpu()


def bits(t):
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def close(got, want, k=1):
    """Within a few ulp: the row sums (of ``k`` terms) are added in another
    order on the GPU, so their rounding differs by up to about k / 200 ulp
    (measured under tests/test_cuda_emulated.py)."""
    assert got.dtype == want.dtype
    eps = torch.finfo(want.dtype).eps
    if want.dtype in (torch.float16, torch.bfloat16):  # float32 results one rounding apart
        torch.testing.assert_close(got, want, rtol=eps, atol=1e-6)
    else:
        torch.testing.assert_close(got, want, rtol=(4 + k // 200) * eps, atol=0)


def close_to_scale(got, want, ulps):
    """Within ``ulps`` ulp of the largest finite entry (for values that cancel)."""
    eps = torch.finfo(want.dtype).eps
    scale = float(want[torch.isfinite(want)].abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=4 * eps, atol=ulps * eps * scale)


def grad_ulps(k):
    """The tolerance of ``close_to_scale`` for Gumbel-Softmax gradients along
    rows of ``k``: y * (g - sum(g * y)) / tau, the sum (and y's) added in
    another order, so the error grows with k. Measured under
    tests/test_cuda_emulated.py: at most 9 ulp below 1,030 categories, 28 at
    50,257, 68 (float32) and 160 (float64) at 262,144; twice that here."""
    return 64 + k // 1024


def make_logits(shape, dim=-1, dtype=torch.float32, *, masked=0.2, seed=0):
    """``3 * randn`` with a fraction ``masked`` of ``-inf``; every row keeps its first category."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    if masked:
        drop = torch.rand(shape, generator=g) < masked
        drop.narrow(dim, 0, 1).fill_(False)
        x[drop] = NEG_INF
    return x.to(dtype)


def grad_of(op, x, w, g):
    v = x.detach().clone().requires_grad_()
    (op(v, g) * w.to(v.device)).sum().backward()
    return v.grad


def error_of(call, device):
    try:
        call(device)
    except Exception as e:
        return type(e), str(e)
    return None


def chi2_p(counts, probs):
    counts = np.asarray(counts, dtype=np.float64)
    expected = np.asarray(probs, dtype=np.float64)
    expected = expected / expected.sum() * counts.sum()
    assert expected.min() >= 5, "too few expected counts for a chi-square test"
    return stats.chisquare(counts, expected).pvalue


@contextmanager
def no_host_sync():
    """Fails if the block waits for the GPU. torch's sync debug mode catches torch's own
    waits (.item(), nonzero, device-to-host copies); a stream kept busy across the block
    catches any other (a CuPy or driver synchronize): it must still be busy afterwards."""
    torch.cuda.synchronize()
    torch.cuda._sleep(SPIN)
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)
    busy = not torch.cuda.current_stream().query()
    torch.cuda.synchronize()
    assert busy, "the stream was idle when the block returned: something waited for the GPU"


# ------------------------------------------------------------ parity with the CPU

LAYOUTS = [
    ((4, 50257), -1),  # long rows, not a multiple of 4
    ((2, 262144), -1),  # very long rows
    ((1000, 3), -1),  # many short rows
    ((513, 16), -1),
    ((7, 1), -1),  # one category
    ((33, 7, 130), 0),  # strided rows (stride 910)
    ((5, 1029, 3), 1),  # long strided rows (stride 3)
    ((300, 17), 0),
]
FLOATS = [torch.float32, torch.float64]


@pytest.mark.parametrize("offset", [0, 2**40 + 3])
@pytest.mark.parametrize("shape", [(7,), (3, 5, 7), (4, 50257), (2, 262144), (0, 3)])
@pytest.mark.parametrize("dtype", [*FLOATS, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["gumbel", "logistic", "uniform"])
def test_noise_is_bitwise_the_cpus(kind, dtype, shape, offset):
    gc, gg = gens(offset)
    want = _noise(kind, shape, dtype=dtype, generator=gc)
    got = _noise(kind, shape, dtype=dtype, device=CUDA, generator=gg)
    assert got.device.type == CUDA.type and got.dtype == dtype and got.shape == want.shape
    assert torch.equal(bits(got.cpu()), bits(want))
    if kind == "gumbel":
        g2 = gens(offset)[1]
        public = gumbelrs.gumbel_noise(shape, dtype=dtype, device=CUDA, generator=g2)
        assert torch.equal(bits(public.cpu()), bits(want))


def _gs(v, tau, g, *, dim=-1, hard=False):
    return gumbelrs.gumbel_softmax(v, tau, hard, dim, generator=g)


def _rb(v, tau, g, *, hard=False):
    return gumbelrs.relaxed_bernoulli(v, tau, hard, generator=g)


def _grad(op, w):
    """``op(v, tau, g)`` -> ``(v, tau, g) -> d/dv sum(op(v, tau, g) * w)``."""
    return lambda v, tau, g: grad_of(lambda u, gg: op(u, tau, gg), v, w, g)


def gs_case(shape, dim, dtype):
    """``(logits, a temperature per row, weights of the outputs)`` of a Gumbel-Softmax test."""
    batch = [n for i, n in enumerate(shape) if i != dim % len(shape)]
    rows = torch.rand(batch, generator=torch.Generator().manual_seed(1), dtype=dtype) + 0.2
    w = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    return make_logits(shape, dim, dtype), rows, w


@pytest.mark.parametrize(("shape", "dim"), LAYOUTS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_gumbel_softmax_matches_the_cpu(shape, dim, dtype):
    x, rows, w = gs_case(shape, dim, dtype)
    soft, hard = partial(_gs, dim=dim), partial(_gs, dim=dim, hard=True)
    for tau in (0.5, rows):
        want, got = both(soft, x, tau)
        close(got, want, shape[dim])
        assert bool((got[x == NEG_INF] == 0).all())
        want, got = both(hard, x, tau)
        assert torch.equal(got, want)
        for op in (soft, hard):
            want, got = both(_grad(op, w), x, tau)
            close_to_scale(got, want, ulps=grad_ulps(shape[dim]))
            assert bool((got[x == NEG_INF] == 0).all())


@pytest.mark.parametrize(("shape", "dim"), LAYOUTS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_sampling_ops_match_the_cpu(shape, dim, dtype):
    x = make_logits(shape, dim, dtype)
    want, got = both(lambda v, g: gumbelrs.sample_categorical(v, 3, dim=dim, generator=g), x)
    assert torch.equal(got, want)
    full = make_logits(shape, dim, dtype, masked=0)  # top-k needs k unmasked per row
    k = min(5, shape[dim])
    want, got = both(lambda v, g: gumbelrs.gumbel_topk(v, k, dim=dim, generator=g), full)
    assert torch.equal(got, want)
    index = x.argmax(dim)
    want, got = both(lambda v, i, g: gumbelrs.gumbel_given_argmax(v, i, 2, dim=dim, generator=g),
                     x, index)
    close_to_scale(got, want, ulps=16)


@pytest.mark.parametrize("shape", [(4, 50257), (1000, 3), (7, 1), (3, 5, 7)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_bernoulli_ops_match_the_cpu(shape, dtype):
    x = make_logits(shape, dtype=dtype, masked=0)
    x.view(-1)[::11] = NEG_INF
    x.view(-1)[5::13] = float("inf")  # fixed gates
    elems = torch.rand(shape[-1:], generator=torch.Generator().manual_seed(3), dtype=dtype) + 0.1
    w = torch.randn(shape, generator=torch.Generator().manual_seed(4), dtype=dtype)
    for tau in (0.6, elems):
        want, got = both(_rb, x, tau)
        close(got, want)
        want, got = both(partial(_rb, hard=True), x, tau)
        assert torch.equal(got, want)
        for op in (_rb, partial(_rb, hard=True)):
            want, got = both(_grad(op, w), x, tau)
            close_to_scale(got, want, ulps=16)
        want, got = both(lambda v, t, g: gumbelrs.hard_concrete(v, t, (-0.2, 1.3), generator=g),
                         x, tau)
        close(got, want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_keep_their_dtype_and_the_cpus_hard_samples(dtype):
    x = make_logits((64, 1000), dtype=dtype)
    want, got = both(_gs, x, 0.5)
    close(got, want)
    want, got = both(partial(_gs, hard=True), x, 0.5)
    assert got.dtype == dtype and torch.equal(got, want)
    want, got = both(lambda v, g: gumbelrs.sample_categorical(v, 4, generator=g), x)
    assert torch.equal(got, want)
    want, got = both(lambda v, g: gumbelrs.relaxed_bernoulli(v, 0.5, True, generator=g), x)
    assert got.dtype == dtype and torch.equal(got, want)
    want, got = both(lambda v, g: gumbelrs.hard_concrete(v, generator=g), x)
    close(got, want)
    grad = grad_of(lambda v, g: gumbelrs.gumbel_softmax(v, 0.5, generator=g), x.to(CUDA),
                   torch.ones_like(x), gumbelrs.Generator(0))
    assert grad.dtype == dtype and grad.device.type == CUDA.type


def test_views_and_empty_tensors():
    base = make_logits((300, 70), masked=0).to(CUDA)
    view = base.t()  # not contiguous
    a = gumbelrs.gumbel_softmax(view, 0.5, hard=True, generator=gens()[0])
    b = gumbelrs.gumbel_softmax(view.contiguous(), 0.5, hard=True, generator=gens()[0])
    assert torch.equal(a, b)
    assert gumbelrs.gumbel_softmax(torch.empty(0, 5, device=CUDA)).shape == (0, 5)
    assert gumbelrs.gumbel_softmax(torch.empty(3, 0, device=CUDA)).shape == (3, 0)
    assert gumbelrs.sample_categorical(torch.empty(0, 5, device=CUDA), 2).shape == (0, 2)
    assert gumbelrs.gumbel_topk(torch.empty(3, 0, device=CUDA), 0).shape == (3, 0)
    assert gumbelrs.relaxed_bernoulli(torch.empty(0, device=CUDA)).device.type == CUDA.type


# ------------------------------------------------------------------ distributions

LOGITS = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5, NEG_INF])
LONG = torch.zeros(50257)
HIGH = torch.arange(0, 50257, 5025)  # 11 likely categories, the last at 50250
LONG[HIGH] = 8.0
LONG[3::97] = NEG_INF


@pytest.mark.parametrize("op", ["gumbel_softmax", "sample_categorical"])
def test_short_row_frequencies_follow_softmax(op):
    g = gumbelrs.Generator(20261125)
    x = LOGITS.to(CUDA)
    if op == "gumbel_softmax":
        draws = gumbelrs.gumbel_softmax(x.expand(40_000, -1), 0.5, hard=True, generator=g)
        draws = draws.argmax(-1)
    else:
        draws = gumbelrs.sample_categorical(x.unsqueeze(0), 40_000, generator=g).flatten()
    counts = torch.bincount(draws, minlength=6).cpu()
    assert counts[5] == 0
    assert chi2_p(counts[:5], torch.softmax(LOGITS, 0)[:5]) > ALPHA


@pytest.mark.parametrize("op", ["gumbel_softmax", "sample_categorical"])
def test_long_row_frequencies_follow_softmax(op):
    g = gumbelrs.Generator(20261126)
    x = LONG.to(CUDA)
    if op == "gumbel_softmax":
        draws = gumbelrs.gumbel_softmax(x.expand(2_000, -1), 1.0, hard=True, generator=g)
        draws = draws.argmax(-1)
    else:
        draws = gumbelrs.sample_categorical(x.unsqueeze(0), 20_000, generator=g).flatten()
    hits = torch.bincount(draws, minlength=LONG.numel()).cpu()
    assert int(hits[LONG == NEG_INF].sum()) == 0
    p = torch.softmax(LONG.double(), 0)
    observed = [*hits[HIGH].tolist(), int(hits.sum() - hits[HIGH].sum())]
    assert chi2_p(observed, [*p[HIGH].tolist(), float(1 - p[HIGH].sum())]) > ALPHA


def test_gumbel_topk_ordered_pairs_follow_plackett_luce():
    logits = torch.tensor([0.5, -0.3, 1.2, 0.0])
    p = torch.softmax(logits, 0).tolist()
    idx = gumbelrs.gumbel_topk(logits.to(CUDA).expand(60_000, -1), 2,
                               generator=gumbelrs.Generator(20261127)).cpu()
    assert bool((idx[:, 0] != idx[:, 1]).all())
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    counts = torch.bincount(idx[:, 0] * 4 + idx[:, 1], minlength=16)
    assert chi2_p([int(counts[i * 4 + j]) for i, j in pairs],
                  [p[i] * p[j] / (1 - p[i]) for i, j in pairs]) > ALPHA


# ------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("dim", [-1, 0])
def test_gumbel_softmax_gradcheck(dim):
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x = x.to(CUDA).requires_grad_()
    rows = torch.tensor([0.5, 1.0, 2.0, 0.7, 1.3, 0.9][: 4 if dim == -1 else 6],
                        dtype=torch.float64, device=CUDA, requires_grad=True)

    def gs(v, t, hard=False):  # the same noise on every call
        return gumbelrs.gumbel_softmax(v, t, hard, dim, generator=gumbelrs.Generator(0))

    assert torch.autograd.gradcheck(lambda v: gs(v, 0.7), (x,))
    assert torch.autograd.gradcheck(gs, (x, rows))  # the temperature's gradient too
    # hard=True is piecewise constant: its (straight-through) gradient is the soft sample's.
    w = torch.randn(4, 6, dtype=torch.float64, device=CUDA)
    for tau in (0.7, rows):
        soft, hard = (torch.autograd.grad((gs(x, tau, h) * w).sum(), x)[0] for h in (False, True))
        close(hard, soft)


@pytest.mark.parametrize("dim", [-1, 0])
def test_bernoulli_ops_gradcheck(dim):
    x = torch.randn(3, 7, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    x = x.to(CUDA)
    x = (x if dim == -1 else x.t()).requires_grad_()  # dim=0: a transposed, strided input
    elems = torch.rand(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    elems = (elems + 0.3).to(CUDA).requires_grad_()

    def fresh():
        return gumbelrs.Generator(0)

    assert torch.autograd.gradcheck(
        lambda v: gumbelrs.relaxed_bernoulli(v, 0.6, generator=fresh()), (x,))
    assert torch.autograd.gradcheck(
        lambda v, t: gumbelrs.relaxed_bernoulli(v, t, generator=fresh()), (x, elems))
    assert torch.autograd.gradcheck(
        lambda v: gumbelrs.hard_concrete(v, 0.8, generator=fresh()), (x,))


# --------------------------------------------------------------------------- errors

STATIC_ERRORS = {
    "int logits": lambda d: gumbelrs.gumbel_softmax(torch.zeros(2, 3, dtype=torch.int64,
                                                                device=d)),
    "dim": lambda d: gumbelrs.gumbel_softmax(torch.zeros(2, 3, device=d), dim=2),
    "tau 0": lambda d: gumbelrs.gumbel_softmax(torch.zeros(2, 3, device=d), 0.0),
    "tau nan": lambda d: gumbelrs.relaxed_bernoulli(torch.zeros(2, 3, device=d), NAN),
    "tau shape": lambda d: gumbelrs.gumbel_softmax(torch.zeros(2, 3, device=d),
                                                   torch.ones(3, device=d)),
    "k": lambda d: gumbelrs.gumbel_topk(torch.zeros(2, 3, device=d), 4),
    "num_samples": lambda d: gumbelrs.sample_categorical(torch.zeros(2, 3, device=d), 0),
    "no category": lambda d: gumbelrs.sample_categorical(torch.zeros(2, 0, device=d)),
    "limits": lambda d: gumbelrs.hard_concrete(torch.zeros(2, 3, device=d), limits=(0.0, 1.0)),
    "index dtype": lambda d: gumbelrs.gumbel_given_argmax(
        torch.zeros(2, 3, device=d), torch.zeros(2, dtype=torch.int32, device=d)),
    "noise dtype": lambda d: gumbelrs.gumbel_noise(3, dtype=torch.int32, device=d),
}


@pytest.mark.parametrize("case", sorted(STATIC_ERRORS))
def test_argument_errors_are_the_cpus(case):
    want = error_of(STATIC_ERRORS[case], "cpu")
    assert want is not None
    assert error_of(STATIC_ERRORS[case], CUDA) == want


X = torch.randn(3, 5, generator=torch.Generator().manual_seed(8))
ROWS, ELEMS, IDX = torch.tensor([0.5, 0.7, 1.1]), torch.full((3, 5), 0.6), X.argmax(-1)
GS, RB, HC = gumbelrs.gumbel_softmax, gumbelrs.relaxed_bernoulli, gumbelrs.hard_concrete
SC, TK, GA = gumbelrs.sample_categorical, gumbelrs.gumbel_topk, gumbelrs.gumbel_given_argmax
ROW, COL, ELEM, ALL = (1,), (slice(None), 2), (1, 2), slice(None)
# name: (op(logits, arg, generator), arg, which input gets the fault, where, value, the
# output entries the fault reaches); the other entries must be those of (X, arg) on the CPU.
FAULTS = {
    "gumbel_softmax NaN": (lambda x, a, g: GS(x, 0.5, generator=g), None, 0, ELEM, NAN, ROW),
    "gumbel_softmax hard NaN": (lambda x, a, g: GS(x, 0.5, True, generator=g), None, 0, ELEM,
                                NAN, ROW),
    "gumbel_softmax masked column": (lambda x, a, g: GS(x, 0.5, dim=0, generator=g), None, 0,
                                     COL, NEG_INF, COL),
    "gumbel_softmax tau 0": (lambda x, a, g: GS(x, a, generator=g), ROWS, 1, 1, 0.0, ROW),
    "sample_categorical +inf": (lambda x, a, g: SC(x, 2, generator=g), None, 0, ELEM,
                                float("inf"), ROW),
    "gumbel_topk masked row": (lambda x, a, g: TK(x, 1, generator=g), None, 0, ROW, NEG_INF,
                               ROW),
    "gumbel_topk too few": (lambda x, a, g: TK(x, 2, generator=g), None, 0, (1, slice(1, None)),
                            NEG_INF, ROW),
    "gumbel_given_argmax NaN": (lambda x, a, g: GA(x, a, 2, generator=g), IDX, 0, ELEM, NAN,
                                (ALL, 1)),
    "gumbel_given_argmax index": (lambda x, a, g: GA(x, a, 2, generator=g), IDX, 1, 1, 7,
                                  (ALL, 1)),
    "relaxed_bernoulli NaN": (lambda x, a, g: RB(x, 0.5, generator=g), None, 0, ELEM, NAN, ELEM),
    "relaxed_bernoulli hard NaN": (lambda x, a, g: RB(x, 0.5, True, generator=g), None, 0, ELEM,
                                   NAN, ELEM),
    "relaxed_bernoulli tau 0": (lambda x, a, g: RB(x, a, generator=g), ELEMS, 1, ELEM, 0.0, ELEM),
    "hard_concrete NaN": (lambda x, a, g: HC(x, generator=g), None, 0, ELEM, NAN, ELEM),
}


def _fault(case):
    """``op, bad logits, bad arg, good arg, output entries at the fault, the CPU's error``."""
    op, arg, which, at, value, where = FAULTS[case]
    bad = [X.clone(), None if arg is None else arg.clone()]
    bad[which][at] = value
    error = error_of(lambda d: op(*bad, gumbelrs.Generator(0)), "cpu")
    assert error is not None and error[0] is ValueError
    return op, bad[0], bad[1], arg, where, error


@pytest.mark.parametrize("case", sorted(FAULTS))
def test_sync_checks_raise_the_cpus_message(case):
    op, x, arg, _, _, want = _fault(case)
    gcuda.set_checks("sync")
    assert gcuda.get_checks() == "sync"
    got = error_of(lambda d: op(x.to(d), on(arg, d), gumbelrs.Generator(0)), CUDA)
    assert got == want
    assert gcuda.check_faults() is None  # raised already: nothing left to report


@pytest.mark.parametrize("case", sorted(FAULTS))
def test_async_checks_poison_the_row_and_report_later(case):
    op, x, arg, good, where, want_error = _fault(case)
    gcuda.set_checks("async")
    assert gcuda.get_checks() == "async"
    xd, ad = x.to(CUDA), on(arg, CUDA)
    op(X.to(CUDA), on(good, CUDA), gumbelrs.Generator(0))  # warm-up (compiles the kernels)
    assert gcuda.check_faults() is None
    with no_host_sync():
        got = op(xd, ad, gumbelrs.Generator(0))  # no error yet
    got = got.cpu()
    want = op(X, good, gumbelrs.Generator(0))
    assert got.shape == want.shape and got.dtype == want.dtype
    if got.dtype == torch.int64:
        assert bool((got[where] == -1).all())
    else:
        assert bool(got[where].isnan().all())
    keep = torch.ones(got.shape, dtype=torch.bool)
    keep[where] = False
    if got.dtype == torch.int64 or "hard" in case:
        assert torch.equal(got[keep], want[keep])
    else:
        close_to_scale(got[keep], want[keep], ulps=16)
    with pytest.raises(ValueError) as excinfo:
        gcuda.check_faults()
    assert (ValueError, str(excinfo.value)) == want_error
    assert gcuda.check_faults() is None  # the record is cleared


# ------------------------------------------------------- streams, syncs, compilation


def _rows(x):
    return torch.linspace(0.3, 2.0, x.shape[0], dtype=x.dtype, device=x.device)


def _tau_grad(x, g):
    tau = _rows(x).requires_grad_()
    return torch.autograd.grad(GS(x, tau, generator=g)[:, :3].sum(), tau)[0]


def _weights(x):
    return torch.cos(x.nan_to_num())


OPS = {
    "gumbel_softmax": lambda x, g: GS(x, 0.5, generator=g),
    "gumbel_softmax hard, tau rows": lambda x, g: GS(x, _rows(x), True, generator=g),
    "gumbel_softmax dim=0": lambda x, g: GS(x, 0.5, dim=0, generator=g),
    "gumbel_softmax backward": lambda x, g: grad_of(
        lambda v, gg: GS(v, 0.5, True, generator=gg), x, _weights(x), g),
    "gumbel_softmax tau backward": lambda x, g: _tau_grad(x, g),
    "relaxed_bernoulli backward": lambda x, g: grad_of(
        lambda v, gg: RB(v, 0.5, generator=gg), x, _weights(x), g),
    "hard_concrete backward": lambda x, g: grad_of(
        lambda v, gg: HC(v, generator=gg), x, _weights(x), g),
    "half gumbel_softmax": lambda x, g: GS(x.half(), 0.5, generator=g),
    "sample_categorical": lambda x, g: SC(x, 3, generator=g),
    "gumbel_topk": lambda x, g: TK(x, 4, generator=g),
    "gumbel_given_argmax": lambda x, g: GA(x, x.argmax(-1), 2, generator=g),
    "gumbel_noise": lambda x, g: gumbelrs.gumbel_noise(x.shape, device=x.device, generator=g),
}


def _input():
    return make_logits((64, 1000), seed=9).to(CUDA)  # >= 4 unmasked per row for top-k


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_do_not_wait_for_the_gpu(name):
    x = _input()
    OPS[name](x.detach().clone(), gumbelrs.Generator(0))  # warm-up (compiles the kernels)
    with no_host_sync():
        OPS[name](x, gumbelrs.Generator(0))


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_run_on_the_current_stream(name):
    op = OPS[name]
    x = _input()
    want = op(x.detach().clone(), gens()[0])
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        xs = torch.zeros_like(x)
        torch.cuda._sleep(SPIN)  # the logits are written only after ~0.5 s
        xs.copy_(x)
        got = op(xs, gens()[0])
        used = got * 1  # consumed on s without a sync
    torch.cuda.synchronize()
    assert torch.equal(got, want) and torch.equal(used, want)


def test_compiled_function_draws_the_same_stream_as_eager():
    def step(x, w, gen):
        y = gumbelrs.gumbel_softmax(x, 0.5, hard=True, generator=gen)
        b = gumbelrs.relaxed_bernoulli(x, 0.7, generator=gen)
        s = gumbelrs.sample_categorical(x, 2, generator=gen)
        z = gumbelrs.gumbel_softmax(x, 2.0, generator=gen)[:, 0]
        return (y * w).sum() + (b * w).sum() + z.sum(), s

    compiled = torch.compile(step, fullgraph=True)
    x = make_logits((16, 300), seed=10).to(CUDA)
    w = torch.randn(16, 300, device=CUDA)
    ge, gc = gens()
    for _ in range(2):  # the second call checks that the offset advances in compiled code
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        (le, se), (lc, sc) = step(xe, w, ge), compiled(xc, w, gc)
        assert torch.equal(se, sc)
        torch.testing.assert_close(lc, le)  # compiled sums may add in another order
        le.backward()
        lc.backward()
        torch.testing.assert_close(xc.grad, xe.grad)
        assert ge.offset == gc.offset


def test_inputs_are_never_modified():
    x = _input()
    keep = x.clone()
    for name, op in OPS.items():
        op(x, gumbelrs.Generator(0))
        torch.cuda.synchronize()
        assert torch.equal(x, keep), name
    tau, w = _rows(x), torch.randn_like(x)
    tau_keep = tau.clone()
    for op, t in ((partial(_gs, hard=True), tau), (partial(_gs, dim=0), 0.5),
                  (_rb, tau.unsqueeze(-1)), (partial(_rb, hard=True), 0.5)):
        v = x.clone().requires_grad_()
        (op(v, t, gumbelrs.Generator(0)) * w).sum().backward()
        torch.cuda.synchronize()
        assert torch.equal(v.detach(), keep) and torch.equal(tau, tau_keep)


def test_matching_is_the_cpu_solvers_on_the_weights_device():
    """No CUDA kernel: the weights go to the host and the permutations come
    back on their device, the CPU's bitwise (faults raise at once)."""
    w = torch.randn(6, 20, 30, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    w[0, 1, :29] = NEG_INF
    wc = w.to(CUDA).requires_grad_()
    keep = wc.detach().clone()
    for maximize in (True, False):
        out = gumbelrs.structured.matching(wc if maximize else -wc.detach(), maximize)
        assert out.device == wc.device and out.dtype == torch.int64
        assert torch.equal(out.cpu(), gumbelrs.structured.matching(w if maximize else -w, maximize))
    assert torch.equal(wc.detach(), keep)
    w[2, 3, 4] = NAN
    with pytest.raises(ValueError) as on_cpu:
        gumbelrs.structured.matching(w)
    with pytest.raises(ValueError) as on_gpu:
        gumbelrs.structured.matching(w.to(CUDA))
    assert str(on_gpu.value) == str(on_cpu.value)
