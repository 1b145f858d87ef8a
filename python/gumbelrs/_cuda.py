"""CUDA backend: torch tensors in, CuPy RawKernels (``gumbelrs/cuda/*.cu``) on their memory.

The functions mirror ``_cpu``: inputs are contiguous tensors of the logits'
dtype (float16 and bfloat16 are read and written as such, computed in
float32), outputs are allocated here by torch, and every tensor reaches the
kernels through DLPack, without a copy. Kernels run on torch's current stream
of the tensors' device, so they are ordered with the surrounding torch work.

Faults in the data are written by the kernels to a per-device word (see
``device.cuh``): the smallest code of all calls since the last check, tagged
with the call's sequence number. In "async" mode nothing waits for it; in
"sync" mode every op reads it (waiting for its kernels) and raises the fault.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from . import _cpu, cuda
from ._cpu import split
from ._faults import translate
from ._protocol import CUDA_OUTPUT_MODE, FaultCode, FaultKind, OutputMode

# ---------------------------------------------------------------- modules

_FILES = {"noise": "noise.cu", "rows": "rows.cu", "elements": "elements.cu"}
_modules: dict[tuple[str, int], object] = {}
_kernels: dict[tuple[str, str, int], object] = {}
_lock = threading.Lock()

_SUFFIX = {torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32",
           torch.float64: "f64"}


def require():
    """CuPy, imported at first use (ImportError when it is not installed)."""
    import cupy

    return cupy


def _nvrtc():
    """``(nvrtc, (major, minor))``: NVRTC through cuda-bindings (a dependency of
    torch's CUDA wheels), imported at first use, and its version."""
    try:
        from cuda.bindings import nvrtc

        err, major, minor = nvrtc.nvrtcVersion()
    except (ImportError, RuntimeError) as e:  # no binding, or no libnvrtc for it to load
        raise RuntimeError(
            f"gumbelrs: the CUDA kernels are compiled by NVRTC through cuda-bindings ({e}); "
            "pip install cuda-bindings and NVRTC for torch's CUDA version"
        ) from e
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"gumbelrs: nvrtcVersion failed: {err!r}")
    return nvrtc, (major, minor)


def nvrtc_compile(source: str, name: str, capability: int) -> tuple[bytes, bytes]:
    """``(image, ptx)``: ``source`` (file ``name``) compiled by NVRTC for a
    device of compute capability ``capability`` (90 for sm_90) with exactly
    ``cuda.NVRTC_OPTIONS`` and the architecture. Not through CuPy: its
    ``RawModule(code=...)`` appends ``-ftz=true``, which flushes subnormal
    float32 results to zero where the CPU keeps them. The image is a CUBIN
    for ``sm_<capability>``; for an architecture NVRTC does not know, the PTX
    for the newest one below it, which the driver compiles for the device.
    The PTX ends with a NUL byte, as NVRTC gives it."""
    nvrtc, version = _nvrtc()

    def call(fn, *args):
        err, *out = fn(*args)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"gumbelrs: {fn.__name__} failed: {err!r}")
        return out[0] if len(out) == 1 else None

    archs = call(nvrtc.nvrtcGetSupportedArchs)
    below = [a for a in archs if a <= capability]
    if not below:
        raise RuntimeError(
            f"gumbelrs: NVRTC {version[0]}.{version[1]} cannot compile for sm_{capability}; "
            f"the oldest architecture it knows is sm_{min(archs)}"
        )
    cubin = capability in archs
    target = f"sm_{capability}" if cubin else f"compute_{max(below)}"
    options = [o.encode() for o in (*cuda.NVRTC_OPTIONS, f"--gpu-architecture={target}")]
    prog = call(nvrtc.nvrtcCreateProgram, source.encode(), name.encode(), 0, [], [])

    def read(size, get):
        buf = b" " * call(size, prog)
        call(get, prog, buf)
        return buf

    try:
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            log = read(nvrtc.nvrtcGetProgramLogSize, nvrtc.nvrtcGetProgramLog)
            raise RuntimeError(f"gumbelrs: NVRTC could not compile {name} for {target}:\n"
                               + log.rstrip(b"\0").decode(errors="replace"))
        ptx = read(nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
        image = read(nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if cubin else ptx
    finally:
        call(nvrtc.nvrtcDestroyProgram, prog)
    return image, ptx


def _module_path(file: str, capability: int) -> str:
    """The compiled kernels of ``file`` for compute capability ``capability``,
    from the cache folder (``$GUMBELRS_CACHE``, else ``~/.cache/gumbelrs``),
    keyed by the source text, the options, the architecture and NVRTC's
    version; on a miss compiled by ``nvrtc_compile`` and written to a
    temporary file, then renamed, so that no process reads a partial file."""
    source = cuda.source(_FILES[file])
    major, minor = _nvrtc()[1]
    key = "\0".join((source, *cuda.NVRTC_OPTIONS, f"sm_{capability}", f"nvrtc {major}.{minor}"))
    folder = Path(os.environ.get("GUMBELRS_CACHE") or Path.home() / ".cache" / "gumbelrs")
    path = folder / f"{file}-sm_{capability}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.bin"
    if path.is_file():
        return str(path)
    image = nvrtc_compile(source, _FILES[file], capability)[0]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(image)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        raise RuntimeError(f"gumbelrs: cannot write the compiled CUDA kernels to {folder} ({e}); "
                           "set GUMBELRS_CACHE to a writable folder") from e
    return str(path)


def _kernel(file: str, name: str, device: torch.device):
    """Kernel ``name`` of ``file`` (a ``cupy.RawKernel``) for ``device``, its
    module loaded at first use from ``_module_path``; on the device's own
    context, as a module holds code for one architecture."""
    key = (file, name, device.index)
    kernel = _kernels.get(key)
    if kernel is not None:
        return kernel
    cupy = require()
    with _lock, cupy.cuda.Device(device.index):
        mod = _modules.get((file, device.index))
        if mod is None:
            major, minor = torch.cuda.get_device_capability(device)
            mod = cupy.RawModule(path=_module_path(file, 10 * major + minor))
            _modules[(file, device.index)] = mod
        kernel = _kernels[key] = mod.get_function(name)
    return kernel


def _arg(a):
    """A kernel argument: a tensor through DLPack (half types as their bits),
    None as a null pointer, a NumPy scalar as itself."""
    if a is None:
        return np.uint64(0)
    if not isinstance(a, torch.Tensor):
        return a
    if a.dtype in (torch.float16, torch.bfloat16):
        a = a.view(torch.int16)
    return require().from_dlpack(a.detach())


def _compute_scalar(dtype: torch.dtype, v: float):
    return np.float64(v) if dtype == torch.float64 else np.float32(v)


class _StreamHandle:
    """A stream handle under the CUDA stream protocol, which
    ``cupy.cuda.Stream.from_external`` takes: torch's streams have
    ``__cuda_stream__`` only in recent versions."""

    __slots__ = ("handle",)

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.handle)  # version 0 of the protocol


def _cupy_stream(device: torch.device):
    """torch's current stream of ``device``, for CuPy."""
    cupy = require()
    handle = torch.cuda.current_stream(device).cuda_stream
    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is None:  # CuPy 13 (the `cuda12` extra); 14 deprecates ExternalStream
        return cupy.cuda.ExternalStream(handle, device.index)
    return from_external(_StreamHandle(handle))


def _launch(kernel, device: torch.device, grid: int, block: int, args, shared: int = 0) -> None:
    """Launches on torch's current stream with ``shared`` bytes of dynamic
    shared memory; tensors cross by DLPack on that stream too, so no event or
    wait is added between streams."""
    with require().cuda.Device(device.index), _cupy_stream(device):
        # A launch above the kernel's limit fails, and its default is 48 KB
        # less the kernel's static shared memory, not 48 KB: compare with it.
        if shared and shared > kernel.max_dynamic_shared_size_bytes:
            kernel.max_dynamic_shared_size_bytes = shared
        kernel((grid,), (block,), tuple(_arg(a) for a in args), shared_mem=shared)


_smem: dict[int, int] = {}
#: Bytes of a block's shared memory left to the kernels' static shared memory,
#: which the dynamic part may not share: the row kernels' 512 and, for sm_90
#: and newer, 1 KB that ptxas reserves in it (tests/test_cuda_sources.py reads
#: the CUBINs).
_STATIC_SMEM = 2048


def _smem_limit(device: torch.device) -> int:
    """Bytes of dynamic shared memory a block may use on ``device`` (the
    opt-in maximum less ``_STATIC_SMEM``), or ``GUMBELRS_CUDA_SMEM`` when set
    (0 turns the shared-memory paths off)."""
    if "GUMBELRS_CUDA_SMEM" in os.environ:
        v = os.environ["GUMBELRS_CUDA_SMEM"]
        if not v.isdigit():
            raise ValueError(f"GUMBELRS_CUDA_SMEM must be a number of bytes, got {v!r}")
        return int(v)
    if device.index not in _smem:
        props = torch.cuda.get_device_properties(device)
        # torch before 2.7 does not give the opt-in maximum: 48 KB, what a
        # block of every CUDA device may use without opting in.
        optin = getattr(props, "shared_memory_per_block_optin", 48 * 1024)
        _smem[device.index] = optin - _STATIC_SMEM
    return _smem[device.index]


def _group(k: int) -> int:
    """Threads per row: about 16 elements each, at most 512 (the row kernels'
    launch bounds)."""
    g = 1
    while g < 512 and g * 16 < k:
        g *= 2
    return g


def _rows_launch(k: int, rows: int) -> tuple[int, int, int]:
    """``(grid, block, G)`` for a row kernel: a group of G threads per row,
    several rows per block when G is at most a warp."""
    g = _group(k)
    block = g if g > 32 else 256
    return max(1, math.ceil(rows / (block // g))), block, g


# ---------------------------------------------------------------- faults


class _Faults:
    """The fault word of one device and the calls that may have written it."""

    KEEP = 4096  # calls remembered since the last check
    BUDGET = 64 << 20  # bytes of tensors kept for messages; beyond, weak references

    def __init__(self, device: torch.device) -> None:
        self.word = torch.full((1,), -1, dtype=torch.int64, device=device)  # FaultCode.NONE
        self.seq = 0
        self.calls: OrderedDict[int, tuple] = OrderedDict()
        self.kept = 0
        self.lock = threading.Lock()

    def _keep(self, t: torch.Tensor | None):
        """``t`` itself while the budget lasts, else a weak reference."""
        if t is None:
            return None
        size = t.numel() * t.element_size()
        if self.kept + size > self.BUDGET:
            return weakref.ref(t)
        self.kept += size
        return t

    def _forget(self, record: tuple) -> None:
        for t in (record[3], record[4]):
            if isinstance(t, torch.Tensor):
                self.kept -= t.numel() * t.element_size()

    def tag(self, fn: str, shape, dim, tau, avail=None, k: int = 0) -> np.uint64:
        """The tag of a new call, remembering what its message needs: the
        temperature and, for top-k, the per-row counts of categories that are
        not masked and k."""
        with self.lock:
            self.seq = (self.seq + 1) % (1 << FaultCode.SEQ_BITS)
            old = self.calls.pop(self.seq, None)
            if old is not None:
                self._forget(old)
            self.calls[self.seq] = (fn, tuple(shape), dim, self._keep(tau), self._keep(avail), k)
            while len(self.calls) > self.KEEP:
                self._forget(self.calls.popitem(last=False)[1])
            return np.uint64(FaultCode.tag(self.seq))

    def take(self) -> ValueError | None:
        """The recorded fault as an error, cleared; waits for every stream of the device."""
        torch.cuda.synchronize(self.word.device)
        code = int(self.word.item()) & FaultCode.NONE  # the int64's bits, unsigned
        if code == FaultCode.NONE:
            return None
        self.word.fill_(-1)
        seq, kind, pos = FaultCode.decode(code)
        with self.lock:
            call = self.calls.get(seq)
            self.calls.clear()
            self.kept = 0
        if call is None:
            return ValueError(
                f"gumbelrs: a CUDA kernel found a fault ({kind.name.lower()}) at position {pos} "
                f"in a call whose record was dropped (more than {self.KEEP} calls since the last "
                "check); "
                "call gumbelrs.cuda.check_faults() more often or use set_checks('sync')"
            )
        fn, shape, dim, tau, avail, k = (
            v() if isinstance(v, weakref.ref) else v for v in call
        )
        if kind in (FaultKind.ALL_MASKED, FaultKind.INDEX, FaultKind.TOO_FEW):
            # The kernels record a row by its first element: its row number.
            size, inner = shape[dim], math.prod(shape[dim + 1:])
            pos = (pos // max(1, size * inner)) * inner + pos % max(1, inner)
        available = None if kind is not FaultKind.TOO_FEW or avail is None else int(avail[pos])
        return translate(fn, (kind, pos, available, k), torch.Size(shape), dim, tau)


_faults: dict[int, _Faults] = {}


def _faults_of(device: torch.device) -> _Faults:
    with _lock:
        f = _faults.get(device.index)
        if f is None:
            f = _faults[device.index] = _Faults(device)
        return f


def _after(f: _Faults) -> None:
    """In "sync" mode, raises the fault a call's kernels recorded."""
    if cuda.get_checks() == "sync":
        err = f.take()
        if err is not None:
            raise err


def check_faults() -> None:
    for f in list(_faults.values()):
        err = f.take()
        if err is not None:
            raise err


# ---------------------------------------------------------------- ops


def prepare(x: torch.Tensor) -> torch.Tensor:
    """``x`` as the kernels read it: contiguous, in its own dtype."""
    return x.contiguous()


def noise(kind: str, shape, dtype: torch.dtype, device: torch.device, seed: int,
          offset: int) -> torch.Tensor:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    out = torch.empty(shape, dtype=dtype, device=device)
    n = out.numel()
    if n == 0:
        return out
    epb = 2 if dtype == torch.float64 else 4
    code = {"uniform": 0, "gumbel": 1, "logistic": 2}[kind]
    k = _kernel("noise", f"grs_noise_{_SUFFIX[dtype]}", device)
    _launch(k, device, math.ceil(math.ceil(n / epb) / 256), 256,
            (out, np.uint64(n), np.uint64(seed), np.uint64(offset), np.int32(code)))
    return out


def _run_rows(name: str, x: torch.Tensor, dim: int, head: tuple, tail: tuple,
              record: tuple | None = None, keep: int | None = None) -> None:
    """Runs row kernel ``name`` (for ``x``'s dtype) over the rows of ``x`` along
    ``dim``. Its arguments: ``head``, the sizes ``(outer, k, inner)``, ``tail``,
    the group size; with ``record`` (what ``_Faults.tag`` keeps for the message)
    the fault word and the call's tag, and the fault is raised in "sync" mode;
    with ``keep`` (bytes per element, 0 for none) the flag that keeps each
    row's perturbed logits in shared memory when a block's rows fit."""
    dev = x.device
    outer, k, inner = split(x.shape, dim)
    grid, block, g = _rows_launch(k, outer * inner)
    args = (*head, np.int64(outer), np.int64(k), np.int64(inner), *tail, np.int32(g))
    f = None
    if record is not None:
        f = _faults_of(dev)
        args += (f.word, f.tag(*record))
    shared = 0
    if keep is not None:
        shared = (block // g) * k * keep
        cache = 0 < shared <= _smem_limit(dev)
        args += (np.int32(cache),)
        shared = shared if cache else 0
    _launch(_kernel("rows", f"{name}_{_SUFFIX[x.dtype]}", dev), dev, grid, block, args, shared)
    if f is not None:
        _after(f)


def gumbel_softmax(fn, x, dim, tau, tau_rows, seed, offset, hard, need_soft=True):
    """``(y, soft)``; ``soft`` is None unless ``hard`` and ``need_soft``."""
    mode = OutputMode.of(hard, need_soft)
    y = torch.empty_like(x)
    soft = torch.empty_like(x) if mode is OutputMode.ONE_HOT_WITH_SOFT else None
    if x.numel() == 0:
        return y, soft
    # The second pass reads the perturbed logits from shared memory when they fit.
    keep = 0 if mode is OutputMode.ONE_HOT else (8 if x.dtype == torch.float64 else 4)
    _run_rows("grs_gs_forward", x, dim, (x, y, soft, tau_rows, _compute_scalar(x.dtype, tau)),
              (np.uint64(seed), np.uint64(offset), np.int32(CUDA_OUTPUT_MODE[mode])),
              record=(fn, x.shape, dim, tau_rows), keep=keep)
    return y, soft


def gumbel_softmax_backward(grad, y, dim, tau, tau_rows):
    out = torch.empty_like(y)
    if y.numel() == 0:
        return out
    _run_rows("grs_gs_backward", y, dim, (grad, y, out, tau_rows, _compute_scalar(y.dtype, tau)),
              ())
    return out


def sample_categorical(fn, x, dim, num_samples, seed, offset):
    batch = [n for i, n in enumerate(x.shape) if i != dim]
    out = torch.empty((*batch, num_samples), dtype=torch.int64, device=x.device)
    if out.numel() == 0:
        return out
    _run_rows("grs_categorical", x, dim, (x, out),
              (np.int64(num_samples), np.uint64(seed), np.uint64(offset)),
              record=(fn, x.shape, dim, None))
    return out


def gumbel_topk(fn, x, dim, k, seed, offset):
    """The perturbed scores as sort keys (one kernel), then ``torch.topk`` of
    the unique int64 keys (float32 and half types) or a stable descending sort
    of the float64 scores: both give the CPU's order, ties to the smaller index."""
    shape = list(x.shape)
    shape[dim] = k
    batch = [n for i, n in enumerate(x.shape) if i != dim]
    rows = math.prod(batch)
    if rows == 0 or x.shape[dim] == 0:  # (k is then 0 too)
        return torch.empty(shape, dtype=torch.int64, device=x.device)
    key_dtype = torch.float64 if x.dtype == torch.float64 else torch.int64
    keys = torch.empty(x.shape, dtype=key_dtype, device=x.device)
    avail = torch.empty(rows, dtype=torch.int64, device=x.device)
    _run_rows("grs_topk_keys", x, dim, (x, keys, avail),
              (np.int64(k), np.uint64(seed), np.uint64(offset)),
              record=(fn, x.shape, dim, None, avail, k))
    if k == 0:  # the logits are checked all the same, as on the CPU
        return torch.empty(shape, dtype=torch.int64, device=x.device)
    if key_dtype == torch.int64:
        idx = torch.topk(keys, k, dim=dim, largest=True, sorted=True).indices
    else:
        idx = torch.sort(keys, dim=dim, descending=True, stable=True).indices.narrow(dim, 0, k)
    return idx.masked_fill_((avail < k).view(batch).unsqueeze(dim), -1)


def gumbel_given_argmax(fn, x, dim, index, num_samples, seed, offset):
    out = torch.empty((num_samples, *x.shape), dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return out
    _run_rows("grs_given_argmax", x, dim, (x, index.to(x.device), out),
              (np.int64(num_samples), np.uint64(seed), np.uint64(offset)),
              record=(fn, x.shape, dim, None))
    return out


#: The elementwise kernels' ops (``GrsConcreteOp`` in ``cuda/elements.cu``).
_RELAXED_BERNOULLI, _HARD_CONCRETE = 0, 1


def _concrete(fn, x, tau, tau_elems, limits, seed, offset, op, mode=OutputMode.SOFT):
    """``(y, soft)`` of elementwise op ``op`` in output mode ``mode``."""
    dev = x.device
    y = torch.empty_like(x)
    second = torch.empty_like(x) if mode is OutputMode.ONE_HOT_WITH_SOFT else None
    n = x.numel()
    if n == 0:
        return y, second
    lo, hi = limits
    f = _faults_of(dev)
    tag = f.tag(fn, x.shape, None, tau_elems)
    epb = 2 if x.dtype == torch.float64 else 4
    kern = _kernel("elements", f"grs_concrete_forward_{_SUFFIX[x.dtype]}", dev)
    c = x.dtype
    _launch(kern, dev, math.ceil(math.ceil(n / epb) / 256), 256, (
        x, y, second, tau_elems, _compute_scalar(c, tau),
        _compute_scalar(c, lo), _compute_scalar(c, hi), np.int64(n), np.uint64(seed),
        np.uint64(offset), np.int32(op), np.int32(CUDA_OUTPUT_MODE[mode]), f.word, tag))
    _after(f)
    return y, second


def _concrete_backward(grad, y, tau, tau_elems, limits, op):
    dev = y.device
    out = torch.empty_like(y)
    n = y.numel()
    if n == 0:
        return out
    lo, hi = limits
    c = y.dtype
    kern = _kernel("elements", f"grs_concrete_backward_{_SUFFIX[y.dtype]}", dev)
    _launch(kern, dev, math.ceil(n / 256), 256, (
        grad, y, out, tau_elems, _compute_scalar(c, tau),
        _compute_scalar(c, lo), _compute_scalar(c, hi), np.int64(n), np.int32(op)))
    return out


def relaxed_bernoulli(fn, x, tau, tau_elems, seed, offset, hard):
    return _concrete(fn, x, tau, tau_elems, (0.0, 1.0), seed, offset, _RELAXED_BERNOULLI,
                     OutputMode.of(hard))


def relaxed_bernoulli_backward(grad, y, tau, tau_elems):
    return _concrete_backward(grad, y, tau, tau_elems, (0.0, 1.0), _RELAXED_BERNOULLI)


def hard_concrete(fn, x, tau, tau_elems, limits, seed, offset):
    return _concrete(fn, x, tau, tau_elems, limits, seed, offset, _HARD_CONCRETE)[0]


def hard_concrete_backward(grad, z, tau, tau_elems, limits):
    return _concrete_backward(grad, z, tau, tau_elems, limits, _HARD_CONCRETE)


def matching(fn: str, weights: torch.Tensor, maximize: bool) -> torch.Tensor:
    """``_cpu.matching`` (the solver has no CUDA kernel): the weights are copied
    to the host, which waits for the device, and the answer back to their
    device. Needs no CuPy."""
    return _cpu.matching(fn, weights.detach().cpu(), maximize).to(weights.device)


def shortest_path_grid(fn: str, costs: torch.Tensor) -> torch.Tensor:
    """``_cpu.shortest_path_grid`` on a host copy of the costs, the path back
    on their device (no CUDA kernel; needs no CuPy)."""
    return _cpu.shortest_path_grid(fn, costs.detach().cpu()).to(costs.device)


def spanning_tree(fn: str, weights: torch.Tensor, stream: tuple[int, int] | None) -> torch.Tensor:
    """``_cpu.spanning_tree`` on a host copy of the weights, the tree back on
    their device (no CUDA kernel; needs no CuPy; the noise is the same on
    every device)."""
    return _cpu.spanning_tree(fn, weights.detach().cpu(), stream).to(weights.device)


# Gumbel-Sinkhorn has no CUDA kernel: it runs on the CPU kernels, on a host
# copy of the tensors (float16/bfloat16 as float32), and the results are
# copied back to the device (the noise is the same on every device).


def gumbel_sinkhorn(fn, x, n_samples, tau, n_iters, tol, noise_scale, seed, offset, hard, count):
    y, iters = _cpu.gumbel_sinkhorn(fn, _cpu.prepare(x.cpu()), n_samples, tau, n_iters, tol,
                                    noise_scale, seed, offset, hard, count)
    return y.to(x.device), (None if iters is None else iters.to(x.device))


def gumbel_sinkhorn_backward(grad, x, iters, tau, noise_scale, seed, offset):
    gx = _cpu.gumbel_sinkhorn_backward(_cpu.prepare(grad.cpu()), _cpu.prepare(x.cpu()),
                                       iters.cpu(), tau, noise_scale, seed, offset)
    return gx.to(x.device, x.dtype)
