"""The CUDA backend run on the CPU: the kernels of gumbelrs/cuda compiled as
host C++ with one OS thread per CUDA thread (tests/cuda_emulator.cpp), driven
by the op functions of ``gumbelrs._cuda`` (launch shapes, argument lists,
fault codes and messages, the launcher ``_launch``) through the public API.
Replaced: CuPy (by a stand-in for the little ``_cuda`` uses of it), its
loaded kernels (``_kernel``, here ``Kernel``s: a launch runs in the emulator
and fails above the kernel's dynamic shared-memory limit, as on a GPU),
torch's current stream, and the shared-memory limit (48 KB here; an H100
allows more).

The emulator can also model a build with -ftz=true (the ``ftz`` fixture),
CuPy's default, to show what compiling with exactly our options keeps.

What a GPU adds (NVRTC's code generation, memory ordering across blocks,
speed, CuPy itself) is left to tests/test_cuda.py on a CUDA machine.
"""

import contextlib
import ctypes
import math
import re
import shutil
import subprocess
import types
import warnings

import numpy as np
import pytest
import torch

import gumbelrs
from gumbelrs import _cuda, _dispatch, cuda
from gumbelrs._protocol import FaultCode, FaultKind

from .conftest import tied_logits
from .test_cuda import NEG_INF, _grad, _gs, close_to_scale, gens, grad_ulps, gs_case, make_logits
from .test_protocol import FAULTS, fault_logits, faults_seen

SOURCE = __file__.replace("test_cuda_emulated.py", "cuda_emulator.cpp")
_CTYPE = {np.int64: ctypes.c_int64, np.uint64: ctypes.c_uint64, np.int32: ctypes.c_int32,
          np.float32: ctypes.c_float, np.float64: ctypes.c_double}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    lib = str(tmp_path_factory.mktemp("emu") / "emu.so")
    subprocess.run([cxx, "-std=c++20", "-O1", "-ffp-contract=off", "-shared", "-fPIC",
                    "-pthread", "-I", str(cuda.HERE), SOURCE, "-o", lib], check=True)
    emu = ctypes.CDLL(lib)
    emu.emu_launch.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                               ctypes.POINTER(ctypes.c_void_p)]
    emu.emu_set_ftz.argtypes = [ctypes.c_int]
    emu.emu_fault.argtypes = [ctypes.c_uint64, ctypes.c_int, ctypes.c_int64]
    emu.emu_fault.restype = ctypes.c_uint64
    return emu


@pytest.fixture
def ftz(emulator):
    """Switches on the emulator's model of -ftz=true (off again after the test)."""
    if emulator.emu_set_ftz(1) != 0:
        pytest.skip("no model of -ftz=true on this processor")
    yield
    emulator.emu_set_ftz(0)


#: Static shared memory of each file's kernels: the row kernels' `__shared__ GrsSlot sm[32]`.
STATIC_SHARED = {"rows": 32 * 16, "elements": 0, "noise": 0}
#: Shared memory a block may opt in to, as _smem_limit (48 KB here) assumes.
OPTIN = 48 * 1024 + _cuda._STATIC_SMEM


class Kernel:
    """A ``cupy.RawKernel`` whose launch the emulator runs. As on a GPU, a launch
    fails if its dynamic shared memory exceeds ``max_dynamic_shared_size_bytes``:
    48 KB less the kernel's static shared memory until raised, at most to the
    opt-in limit less the static part."""

    def __init__(self, emulator, name: str, static: int, launches: list) -> None:
        self.emulator, self.name, self.static, self.launches = emulator, name, static, launches
        self._limit = 48 * 1024 - static

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        return self._limit

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, size: int) -> None:
        if size > OPTIN - self.static:
            raise RuntimeError(f"CUDA_ERROR_INVALID_VALUE: {size} bytes for {self.name}")
        self._limit = size

    def __call__(self, grid, block, args, shared_mem=0) -> None:
        if shared_mem > self._limit:
            raise RuntimeError(f"CUDA_ERROR_INVALID_VALUE: {self.name} launched with "
                               f"{shared_mem} bytes of dynamic shared memory, limit {self._limit}")
        values = []
        for a in args:  # as _cuda._arg gives them: tensors (from_dlpack is the identity here)
            if isinstance(a, torch.Tensor):
                assert a.is_contiguous()
                values.append(ctypes.c_void_p(a.data_ptr()))
            else:
                values.append(_CTYPE[type(a)](a))
        ptrs = (ctypes.c_void_p * len(values))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        (g,), (b,) = grid, block
        self.launches.append((self.name, g, b))
        assert self.emulator.emu_launch(self.name.encode(), g, b, shared_mem, ptrs) == 0, self.name


def fake_cupy(major: int = 14):
    """What _cuda uses of CuPy ``major``: devices, DLPack and streams, whose
    handles are appended to its ``streams``. CuPy 14 added
    ``Stream.from_external`` and deprecated ExternalStream (it warns)."""
    streams = []

    def from_external(obj):
        streams.append(obj.__cuda_stream__())
        return contextlib.nullcontext()

    def external_stream(ptr, device_id=-1):
        if major >= 14:
            warnings.warn("ExternalStream is deprecated. Use Stream.from_external() instead",
                          DeprecationWarning, stacklevel=2)
        streams.append(("ExternalStream", ptr, device_id))
        return contextlib.nullcontext()

    stream = types.SimpleNamespace(from_external=from_external) if major >= 14 else object
    return types.SimpleNamespace(
        cuda=types.SimpleNamespace(Device=lambda index: contextlib.nullcontext(), Stream=stream,
                                   ExternalStream=external_stream),
        from_dlpack=lambda t: t, streams=streams)


#: The handle of torch's current stream in the emulated tests.
STREAM = 0x5EED


@pytest.fixture
def gpu(emulator, monkeypatch):
    """CPU tensors go through the CUDA backend, its kernels run by the emulator."""
    launches = []
    kernels = {}

    def kernel(file, name, device):
        if name not in kernels:
            kernels[name] = Kernel(emulator, name, STATIC_SHARED[file], launches)
        return kernels[name]

    monkeypatch.setattr(_cuda, "_kernel", kernel)
    cupy = fake_cupy()
    monkeypatch.setattr(_cuda, "require", lambda: cupy)
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda device=None: types.SimpleNamespace(cuda_stream=STREAM))
    monkeypatch.setattr(_cuda, "_faults", {})
    monkeypatch.setattr(_cuda, "_smem_limit", lambda device: 48 * 1024)
    monkeypatch.setattr(_dispatch, "backend", lambda device: _cuda)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    yield launches
    cuda.set_checks("async")


def _cpu(fn, *args, **kwargs):
    """``fn`` on the CPU backend (outside the ``gpu`` fixture's patch)."""
    return fn(*args, **kwargs)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({torch.float32: torch.int32, torch.float64: torch.int64,
                   torch.float16: torch.int16, torch.bfloat16: torch.int16}[t.dtype])


def _ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """The largest distance in units in the last place between a and b."""
    return int((_bits(a).long() - _bits(b).long()).abs().max())


SHAPES = [((6, 7), -1), ((3, 1000), -1), ((2, 9001), -1), ((4, 33, 6), 1), ((5, 3, 2), 0),
          ((300, 1), -1)]


def _logits(shape, dtype=torch.float32, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = (3 * x).to(dtype)
    x.view(-1)[::7] = -torch.inf if x.shape[-1] > 1 else x.view(-1)[::7]
    return x


@pytest.mark.parametrize(("shape", "dim"), SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gumbel_softmax_matches_the_cpu(request, shape, dim, dtype):
    x = _logits(shape, dtype)
    tau = torch.rand([n for i, n in enumerate(shape) if i != dim % len(shape)],
                     generator=torch.Generator().manual_seed(1), dtype=dtype) + 0.2
    want = {}
    for hard in (False, True):
        for t in (0.7, tau):
            want[hard, id(t)] = gumbelrs.gumbel_softmax(x, t, hard, dim,
                                                        generator=gumbelrs.Generator(9))
    request.getfixturevalue("gpu")
    for (hard, tid), cpu in want.items():
        t = 0.7 if tid != id(tau) else tau
        got = gumbelrs.gumbel_softmax(x, t, hard, dim, generator=gumbelrs.Generator(9))
        if hard:
            assert torch.equal(got, cpu)
        else:
            # Each value is exp(.) / sum: the same exp, a sum added in another
            # order (its rounding grows with the row length).
            assert _ulps(got, cpu) <= 8 + shape[dim] // 200
            masked = x == -torch.inf
            assert torch.equal(got[masked], torch.zeros_like(got[masked]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_are_read_and_written_as_such(request, dtype):
    x = _logits((40, 50), dtype)
    hard = gumbelrs.gumbel_softmax(x, 0.5, True, generator=gumbelrs.Generator(2))
    soft = gumbelrs.gumbel_softmax(x, 0.5, generator=gumbelrs.Generator(2))
    request.getfixturevalue("gpu")
    got_hard = gumbelrs.gumbel_softmax(x, 0.5, True, generator=gumbelrs.Generator(2))
    got_soft = gumbelrs.gumbel_softmax(x, 0.5, generator=gumbelrs.Generator(2))
    assert got_hard.dtype == got_soft.dtype == dtype
    assert torch.equal(got_hard, hard)
    assert _ulps(got_soft, soft) <= 1


@pytest.mark.parametrize(("shape", "dim"), SHAPES[:5])
def test_backward_matches_the_cpu(request, shape, dim):
    x = _logits(shape, torch.float64).nan_to_num(neginf=-40.0).requires_grad_()
    w = torch.randn(shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def grad(hard):
        y = gumbelrs.gumbel_softmax(x, 0.6, hard, dim, generator=gumbelrs.Generator(3))
        return torch.autograd.grad((y * w).sum(), x)[0]

    want = [grad(False), grad(True)]
    request.getfixturevalue("gpu")
    for got, cpu in zip([grad(False), grad(True)], want):
        torch.testing.assert_close(got, cpu, rtol=1e-13, atol=1e-15)


def test_gradcheck_through_the_emulated_kernels(gpu):
    """Soft samples; the hard sample's gradient is the soft one's (test above)."""
    x = torch.randn(3, 40, dtype=torch.float64, requires_grad=True)
    for dim in (-1, 0):
        def f(x, dim=dim):
            return gumbelrs.gumbel_softmax(x, 0.8, dim=dim, generator=gumbelrs.Generator(1))
        assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradcheck(
        lambda x: gumbelrs.relaxed_bernoulli(x, 0.7, generator=gumbelrs.Generator(1)), (x,))
    assert torch.autograd.gradcheck(
        lambda x: gumbelrs.hard_concrete(x, 0.7, generator=gumbelrs.Generator(1)), (x,))


@pytest.mark.parametrize(("shape", "dim"), SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_draws_match_the_cpu(request, shape, dim, dtype):
    x = _logits(shape, dtype)
    size = shape[dim]
    k = min(3, int((x.movedim(dim, -1) > -torch.inf).sum(-1).min()))
    cat = gumbelrs.sample_categorical(x, 3, dim, generator=gumbelrs.Generator(5))
    top = gumbelrs.gumbel_topk(x, k, dim, generator=gumbelrs.Generator(5))
    index = x.movedim(dim, -1).argmax(-1)
    given = gumbelrs.gumbel_given_argmax(x, index, 2, dim, generator=gumbelrs.Generator(5))
    request.getfixturevalue("gpu")
    assert torch.equal(gumbelrs.sample_categorical(x, 3, dim, generator=gumbelrs.Generator(5)),
                       cat)
    assert torch.equal(gumbelrs.gumbel_topk(x, k, dim, generator=gumbelrs.Generator(5)), top)
    got = gumbelrs.gumbel_given_argmax(x, index, 2, dim, generator=gumbelrs.Generator(5))
    finite = given > -torch.inf
    assert torch.equal(got > -torch.inf, finite)
    assert _ulps(got[finite], given[finite]) <= 64 * (1 + size // 1000)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_and_elementwise_ops_match_the_cpu_bitwise(request, dtype):
    x = _logits((1001,), dtype).nan_to_num(neginf=-5.0)
    tau = torch.rand(1001, generator=torch.Generator().manual_seed(2), dtype=dtype) + 0.1
    ops = [
        lambda g: gumbelrs.gumbel_noise((3, 333), dtype=dtype, generator=g),
        lambda g: gumbelrs.relaxed_bernoulli(x, 0.4, generator=g),
        lambda g: gumbelrs.relaxed_bernoulli(x, tau, hard=True, generator=g),
        lambda g: gumbelrs.hard_concrete(x, tau, (-0.2, 1.3), generator=g),
    ]
    want = [op(gumbelrs.Generator(8)) for op in ops]
    request.getfixturevalue("gpu")
    for op, cpu in zip(ops, want):
        assert torch.equal(_bits(op(gumbelrs.Generator(8))), _bits(cpu))


def _message(call) -> str:
    with pytest.raises(ValueError) as e:
        call()
    return str(e.value)


def _same_messages_in_sync_mode(request, calls) -> None:
    """Each call raises on the emulated GPU, in "sync" mode, the CPU's message."""
    want = [_message(c) for c in calls]
    request.getfixturevalue("gpu")
    cuda.set_checks("sync")
    assert [_message(c) for c in calls] == want


BAD = {
    "nan": lambda x: x.index_put_((torch.tensor([2]), torch.tensor([3])), torch.tensor(math.nan)),
    "posinf": lambda x: x.index_put_((torch.tensor([1]), torch.tensor([4])),
                                     torch.tensor(math.inf)),
    "masked row": lambda x: x[3].fill_(-math.inf),
}


@pytest.mark.parametrize("fault", sorted(BAD))
@pytest.mark.parametrize("dim", [-1, 0])
def test_faults_raise_the_cpus_message_in_sync_mode(request, fault, dim):
    x = torch.randn(6, 9)
    BAD[fault](x)
    x[5, 0] = math.nan  # a later fault: the first one by position is reported
    calls = [
        lambda: gumbelrs.gumbel_softmax(x, 0.5, dim=dim, generator=gumbelrs.Generator(0)),
        lambda: gumbelrs.sample_categorical(x, 2, dim, generator=gumbelrs.Generator(0)),
        lambda: gumbelrs.gumbel_topk(x, 2, dim, generator=gumbelrs.Generator(0)),
    ]
    _same_messages_in_sync_mode(request, calls)


def test_faults_of_temperatures_indices_and_too_few_categories(request):
    x = torch.randn(4, 6)
    x[2, 1:] = -math.inf
    tau = torch.tensor([1.0, 0.5, 0.0, 2.0])
    index = torch.tensor([0, 1, 2, 3])
    calls = [
        lambda: gumbelrs.gumbel_softmax(x, tau, generator=gumbelrs.Generator(0)),
        lambda: gumbelrs.gumbel_topk(x, 3, generator=gumbelrs.Generator(0)),
        lambda: gumbelrs.gumbel_given_argmax(x, index, generator=gumbelrs.Generator(0)),
        lambda: gumbelrs.relaxed_bernoulli(x.nan_to_num(neginf=0.0), tau.expand(6, 4).T,
                                           generator=gumbelrs.Generator(0)),
    ]
    _same_messages_in_sync_mode(request, calls)


def test_subnormal_and_one_hot_only_temperatures_fail_as_on_the_cpu(request):
    """The temperature range and the check of the one-hot-only mode (issue 19)."""
    x = torch.randn(4, 6)
    tiny = torch.tensor([1.0, 1e-40, 1.0, 1.0])
    nan = torch.tensor([1.0, 1.0, math.nan, 1.0])
    calls = [
        lambda: gumbelrs.gumbel_softmax(x, tiny, generator=gumbelrs.Generator(0)),
        lambda: gumbelrs.gumbel_softmax(x, nan, hard=True, generator=gumbelrs.Generator(0)),
        lambda: gumbelrs.relaxed_bernoulli(x, tiny.expand(6, 4).T, generator=gumbelrs.Generator(0)),
    ]
    _same_messages_in_sync_mode(request, calls)


@pytest.mark.parametrize(("dtype", "offset"), [(torch.float32, 1e8), (torch.float64, -1e16),
                                               (torch.float16, 6e4)])
def test_large_logits_draw_the_cpus_unbiased_samples(request, dtype, offset):
    x = torch.full((500, 4), offset, dtype=dtype)
    x[::2, 1] = torch.finfo(dtype).min
    draws = [lambda: gumbelrs.sample_categorical(x, 3, generator=gumbelrs.Generator(2)),
             lambda: gumbelrs.gumbel_softmax(x, 0.5, hard=True, generator=gumbelrs.Generator(2)),
             lambda: gumbelrs.gumbel_softmax(x, 0.5, generator=gumbelrs.Generator(2)),
             lambda: gumbelrs.gumbel_topk(x, 4, generator=gumbelrs.Generator(2))]
    want = [d() for d in draws]
    assert len(torch.unique(want[0][1::2, 0])) == 4  # not always the first category
    request.getfixturevalue("gpu")
    for d, w in zip(draws, want):
        got = d()
        if got.dtype.is_floating_point and not torch.equal(got, w):
            torch.testing.assert_close(got, w)  # soft values: the order of the sums
        else:
            assert torch.equal(got, w)


def test_async_mode_marks_faulty_rows_and_raises_at_the_check(gpu):
    x = torch.randn(5, 8)
    x[1, 2] = math.nan
    x[3] = -math.inf
    y = gumbelrs.gumbel_softmax(x, 0.5, generator=gumbelrs.Generator(0))
    cat = gumbelrs.sample_categorical(x, 2, generator=gumbelrs.Generator(0))
    top = gumbelrs.gumbel_topk(x, 2, generator=gumbelrs.Generator(0))
    bad = torch.tensor([False, True, False, True, False])
    assert y[bad].isnan().all() and not y[~bad].isnan().any()
    assert (cat[bad] == -1).all() and (cat[~bad] >= 0).all()
    assert (top[bad] == -1).all() and (top[~bad] >= 0).all()
    # The first call's first fault, with the CPU's message; then nothing is left.
    with pytest.raises(ValueError, match=r"^gumbel_softmax: logits\[1, 2\] is NaN"):
        cuda.check_faults()
    assert cuda.check_faults() is None


def test_launch_shapes_cover_short_long_and_strided_rows(gpu):
    # (shape, dim): (grid, block); a group of about k / 16 threads per row.
    cases = {((1000, 3), -1): (4, 256), ((2, 3000), -1): (2, 256), ((2, 100_000), -1): (2, 512),
             ((4, 1), -1): (1, 256), ((4, 3000), 0): (12, 256), ((5000, 7), 0): (7, 512)}
    for (shape, dim), (grid, block) in cases.items():
        gpu.clear()
        gumbelrs.gumbel_softmax(torch.zeros(shape), dim=dim, generator=gumbelrs.Generator(0))
        assert gpu == [("grs_gs_forward_f32", grid, block)]


@pytest.mark.parametrize(("shape", "dim"), [((300, 4), -1), ((70, 16), -1), ((9, 700), -1),
                                            ((5, 9, 3), 1), ((40, 6), 0)])
def test_ties_go_to_the_first_category_as_on_the_cpu(request, shape, dim):
    x, first, ties = tied_logits(shape, dim, seed=1)  # the perturbed maxima of most rows tie
    assert ties >= first.numel() // 2
    x.requires_grad_()
    want = [gumbelrs.gumbel_softmax(x, 0.5, hard=True, dim=dim, generator=gumbelrs.Generator(1)),
            gumbelrs.gumbel_softmax(x.detach(), 0.5, hard=True, dim=dim,
                                    generator=gumbelrs.Generator(1)),
            gumbelrs.sample_categorical(x, 2, dim, generator=gumbelrs.Generator(1))]
    assert torch.equal(want[0].argmax(dim), first) and torch.equal(want[1].argmax(dim), first)
    assert torch.equal(want[2][..., 0], first)
    request.getfixturevalue("gpu")
    got = [gumbelrs.gumbel_softmax(x, 0.5, hard=True, dim=dim, generator=gumbelrs.Generator(1)),
           gumbelrs.gumbel_softmax(x.detach(), 0.5, hard=True, dim=dim,
                                   generator=gumbelrs.Generator(1)),
           gumbelrs.sample_categorical(x, 2, dim, generator=gumbelrs.Generator(1))]
    for g, w in zip(got, want):
        assert torch.equal(g, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_ties_go_to_the_smaller_index_as_on_the_cpu(request, dtype):
    # A coarse grid below each row's largest logit: the noise is below the
    # ulp of those perturbed values, so they tie (and -0 ties +0).
    x = torch.full((4, 300), -1e10 if dtype == torch.float32 else -1e17, dtype=dtype)
    x[1, 1::2] = 3 * x[1, 0]
    x[:, 299] = 0.0
    x[2, 299] = -0.0
    x[3, ::3] = -torch.inf
    want = gumbelrs.gumbel_topk(x, 50, generator=gumbelrs.Generator(0))
    assert torch.equal(want[0], torch.cat([torch.tensor([299]), torch.arange(49)]))
    request.getfixturevalue("gpu")
    assert torch.equal(gumbelrs.gumbel_topk(x, 50, generator=gumbelrs.Generator(0)), want)


def test_async_top_k_message_outlives_its_tensors(gpu):
    x = torch.zeros(3, 5)
    x[1, 1:] = -torch.inf
    top = gumbelrs.gumbel_topk(x, 2, generator=gumbelrs.Generator(0))
    assert torch.equal(top[1], torch.tensor([-1, -1]))
    del x
    with pytest.raises(ValueError, match=r"^gumbel_topk: k=2 but logits\[1, :\] has only 1 "):
        cuda.check_faults()


def test_second_pass_from_shared_memory_or_redrawn_noise_agree(gpu, monkeypatch):
    """Rows whose perturbed logits fit in shared memory are not drawn twice."""
    for shape, dim in SHAPES:
        x = _logits(shape)
        for hard in (False, True):
            kept = gumbelrs.gumbel_softmax(x.requires_grad_(hard), 0.3, hard, dim,
                                           generator=gumbelrs.Generator(4))
            monkeypatch.setattr(_cuda, "_smem_limit", lambda device: 0)
            drawn = gumbelrs.gumbel_softmax(x, 0.3, hard, dim, generator=gumbelrs.Generator(4))
            monkeypatch.setattr(_cuda, "_smem_limit", lambda device: 48 * 1024)
            if hard:
                assert torch.equal(kept, drawn)
            else:  # the same values; the sums added in another order
                assert _ulps(kept.detach(), drawn.detach()) <= 8 + shape[dim] // 200


def _bernoulli_case():
    """test_cuda's test_bernoulli_ops_match_the_cpu[float32-(1000, 3)], a temperature per column."""
    x = make_logits((1000, 3), masked=0)
    x.view(-1)[::11] = NEG_INF
    x.view(-1)[5::13] = math.inf
    tau = torch.rand(3, generator=torch.Generator().manual_seed(3)) + 0.1
    return lambda: gumbelrs.relaxed_bernoulli(x, tau, generator=gens()[0])


def test_the_kernels_keep_subnormals_as_the_cpu_does(request):
    op = _bernoulli_case()
    want = op()
    tiny = (want != 0) & (want < torch.finfo(want.dtype).tiny)
    assert tiny.sum() == 2  # 8.46e-39 and 9.66e-39
    request.getfixturevalue("gpu")
    assert torch.equal(_bits(op()), _bits(want))


def test_flushing_subnormals_as_cupy_would_loses_them(request):
    """Why NVRTC is not run through CuPy: its -ftz=true flushes them to zero."""
    op = _bernoulli_case()
    want = op()
    tiny = (want != 0) & (want < torch.finfo(want.dtype).tiny)
    request.getfixturevalue("gpu")
    request.getfixturevalue("ftz")
    got = op()
    assert torch.equal(got[tiny], torch.zeros(2)) and torch.equal(got[~tiny], want[~tiny])


def test_the_ftz_model_leaves_double_precision_alone(request):
    """As -ftz=true does: the float64 kernels keep their subnormal results."""
    x = torch.linspace(-730, -690, 4001, dtype=torch.float64)

    def op():
        return gumbelrs.relaxed_bernoulli(x, 1.0, generator=gumbelrs.Generator(0))

    want = op()
    assert ((want != 0) & (want < torch.finfo(want.dtype).tiny)).sum() > 10
    request.getfixturevalue("gpu")
    request.getfixturevalue("ftz")
    assert torch.equal(_bits(op()), _bits(want))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_of_very_long_rows_are_within_test_cudas_tolerance(request, dtype):
    """test_cuda's gradients of rows of 262,144, in the kernels' order: 68 ulp
    (float32) and 160 (float64) from the CPU's, more than a fixed 64."""
    x, rows, w = gs_case((2, 262144), -1, dtype)
    grad = _grad(_gs, w)
    want = [grad(x, tau, gens()[0]) for tau in (0.5, rows)]
    request.getfixturevalue("gpu")
    for tau, cpu in zip((0.5, rows), want):
        close_to_scale(grad(x, tau, gens()[0]), cpu, ulps=grad_ulps(x.shape[-1]))


@pytest.mark.parametrize(("dtype", "k"), [(torch.float32, 12200), (torch.float64, 6100)])
def test_rows_just_under_48_kb_raise_the_kernels_shared_memory_limit(request, dtype, k):
    """A row of 48,800 bytes kept in shared memory: under the 48 KB a block has
    without opting in, over the kernel's default limit (48 KB less its 512
    bytes of static shared memory)."""
    x = _logits((1, k), dtype)
    want = gumbelrs.gumbel_softmax(x, 0.5, generator=gumbelrs.Generator(3))
    request.getfixturevalue("gpu")
    got = gumbelrs.gumbel_softmax(x, 0.5, generator=gumbelrs.Generator(3))
    assert _ulps(got, want) <= 8 + k // 200
    kernel = _cuda._kernel("rows", f"grs_gs_forward_{_cuda._SUFFIX[dtype]}", x.device)
    assert kernel.max_dynamic_shared_size_bytes == k * x.element_size() == 48_800


def test_kernels_run_on_torchs_stream_through_the_cuda_stream_protocol(gpu):
    """Without CuPy 14's deprecated ExternalStream; torch's stream (here one
    without ``__cuda_stream__``, as older torch has them) crosses as its handle."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gumbelrs.gumbel_softmax(torch.zeros(3, 5), generator=gumbelrs.Generator(0))
        gumbelrs.relaxed_bernoulli(torch.zeros(3, 5), generator=gumbelrs.Generator(0))
    assert _cuda.require().streams == [(0, STREAM), (0, STREAM)]


def test_cupy_13_gets_an_external_stream(gpu, monkeypatch):
    cupy = fake_cupy(13)
    monkeypatch.setattr(_cuda, "require", lambda: cupy)
    gumbelrs.gumbel_softmax(torch.zeros(3, 5), generator=gumbelrs.Generator(0))
    assert cupy.streams == [("ExternalStream", STREAM, None)]  # a CPU tensor's device index


def test_the_shared_memory_limit_without_torchs_opt_in_property(monkeypatch):
    """torch before 2.7 lacks ``shared_memory_per_block_optin``: 48 KB then."""
    props = {1: types.SimpleNamespace(shared_memory_per_block_optin=227 * 1024),
             2: types.SimpleNamespace()}
    monkeypatch.delenv("GUMBELRS_CUDA_SMEM", raising=False)
    monkeypatch.setattr(_cuda, "_smem", {})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props[device.index])
    assert _cuda._smem_limit(torch.device("cuda", 1)) == 227 * 1024 - _cuda._STATIC_SMEM
    assert _cuda._smem_limit(torch.device("cuda", 2)) == 48 * 1024 - _cuda._STATIC_SMEM


@pytest.mark.parametrize("kind", list(FaultKind))
def test_every_fault_kind_round_trips_through_the_kernels_code(emulator, kind):
    """The code a kernel records (grs_fault) decodes to its call, kind and
    position; positions beyond the field are clamped to its largest value."""
    top = (1 << FaultCode.POS_BITS) - 1
    for seq in (1, (1 << FaultCode.SEQ_BITS) - 1):
        for pos, want in [(0, 0), (12345, 12345), (top, top), (top + 7, top), (-3, 0)]:
            code = emulator.emu_fault(FaultCode.tag(seq), int(kind), pos)
            assert FaultCode.decode(code) == (seq, kind, want)
    # A bad temperature wins the minimum over every other kind, at any position.
    tau = emulator.emu_fault(FaultCode.tag(3), int(FaultKind.TAU), top)
    assert all(tau < emulator.emu_fault(FaultCode.tag(3), int(k), 0)
               for k in FaultKind if k is not FaultKind.TAU)


@pytest.mark.parametrize("kind", [k for k in FaultKind if k is not FaultKind.INFEASIBLE])
def test_every_fault_kind_reaches_translate_as_on_the_cpu(request, monkeypatch, kind):
    """Every kind a CUDA kernel records (the solvers that find an infeasible
    problem run on the CPU for every device)."""
    call, message = FAULTS[kind]
    x = fault_logits()
    want = _message(lambda: call(x))
    request.getfixturevalue("gpu")
    cuda.set_checks("sync")
    seen = faults_seen(monkeypatch, _cuda)
    assert _message(lambda: call(x)) == want
    assert re.match(message, want) and seen == [kind]
