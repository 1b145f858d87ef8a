"""The CUDA sources without a GPU: the device functions built as host C give
bitwise the Rust core's noise, elementary functions and per-element results,
every kernel file compiles with NVRTC (when cuda-bindings can load one) by
the runtime's own compile, which keeps subnormals, its binaries are cached on
disk and loaded on their device, and a CUDA tensor without CuPy gets an error
that says what to install."""

import functools
import os
import re
import shutil
import struct
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import gumbelrs
from gumbelrs import _core, _cuda, _dispatch, cuda

DRIVER = os.path.join(os.path.dirname(__file__), "cuda_host_parity.c")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    exe = str(tmp_path_factory.mktemp("cuda") / "parity")
    subprocess.run([cc, "-O2", "-std=c11", "-ffp-contract=off", "-I", str(cuda.HERE), DRIVER,
                    "-o", exe, "-lm"], check=True)
    return exe


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("kind", "code"), [("uniform", 0), ("gumbel", 1), ("logistic", 2)])
def test_host_build_draws_the_rust_noise_bitwise(driver, dtype, kind, code):
    n, seed, offset = 1_000_003, 0xDEADBEEF12345678, 77
    mode = "noise32" if dtype == np.float32 else "noise64"
    raw = subprocess.run([driver, mode, str(code), str(seed), str(offset), str(n)],
                         check=True, capture_output=True).stdout
    host = np.frombuffer(raw, dtype=dtype)
    rust = np.empty(n, dtype=dtype)
    _core.noise(kind, rust, (seed, offset))
    assert host.shape == (n,)
    assert np.array_equal(_bits(host), _bits(rust))


def _inputs(dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    if dtype == np.float32:
        bits = rng.integers(0, 2**32, size=2_000_000, dtype=np.uint64).astype(np.uint32)
        grid = np.linspace(-110, 95, 400_000, dtype=np.float32)
    else:
        bits = rng.integers(0, 2**63, size=1_000_000, dtype=np.uint64) * 2
        bits += rng.integers(0, 2, size=bits.size, dtype=np.uint64)
        grid = np.linspace(-750, 720, 400_000)
    special = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan,
                        np.finfo(dtype).tiny, np.finfo(dtype).smallest_subnormal], dtype=dtype)
    return np.concatenate([bits.view(dtype), grid.astype(dtype), special])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["exp", "ln", "ln1p"])
def test_host_build_computes_the_rust_functions_bitwise(driver, dtype, name):
    x = _inputs(dtype)
    mode = name + ("32" if dtype == np.float32 else "64")
    raw = subprocess.run([driver, mode], input=x.tobytes(), check=True,
                         capture_output=True).stdout
    host = np.frombuffer(raw, dtype=dtype)
    rust = np.empty_like(x)
    _core.math(name, x, rust)
    nan = np.isnan(rust)
    assert np.array_equal(np.isnan(host), nan)
    assert np.array_equal(_bits(host[~nan]), _bits(rust[~nan]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("op", "tau", "limits"), [(0, 0.37, (0.0, 1.0)), (1, 2.5, (0.0, 1.0)),
                                                   (2, 2 / 3, (-0.1, 1.1))])
def test_host_build_computes_the_concrete_ops_bitwise(driver, dtype, op, tau, limits):
    n = 300_001
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, generator=gen, dtype=dtype) * 4
    x[:4] = torch.tensor([0.0, -0.0, 30.0, -30.0])
    g = gumbelrs.Generator(11)
    seed, offset = g.seed, g.offset
    if op == 2:
        cpu = gumbelrs.hard_concrete(x, tau, limits, generator=g)
    else:
        cpu = gumbelrs.relaxed_bernoulli(x, tau, hard=op == 1, generator=g)
    mode = "concrete32" if dtype == torch.float32 else "concrete64"
    args = [driver, mode, str(op), str(seed), str(offset), repr(tau), *map(repr, limits)]
    raw = subprocess.run(args, input=x.numpy().tobytes(), check=True, capture_output=True).stdout
    host = np.frombuffer(raw, dtype=x.numpy().dtype)
    assert np.array_equal(_bits(host), _bits(cpu.numpy()))
    if op == 2:
        assert (host == 0).any() and (host == 1).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_host_build_computes_the_conditioned_gumbels_bitwise(driver, dtype):
    """The truncated Gumbels of gumbel_given_argmax from (x + g, top) as the CPU has them."""
    x = torch.randn(64, 50, generator=torch.Generator().manual_seed(0), dtype=dtype)
    x[:, 7] = -torch.inf
    index = torch.randint(0, 7, (64,), generator=torch.Generator().manual_seed(1))
    g = gumbelrs.Generator(5)
    state = g.get_state()
    z = gumbelrs.gumbel_given_argmax(x, index, num_samples=3, generator=g)
    noise = gumbelrs.gumbel_noise((3, 64, 50), dtype=dtype, generator=g.set_state(state))
    top = z.gather(2, index.view(1, 64, 1).expand(3, 64, 1)).expand_as(z)
    keep = torch.ones_like(z, dtype=torch.bool)
    keep.scatter_(2, index.view(1, 64, 1).expand(3, 64, 1), False)
    pairs = torch.stack([(x + noise)[keep], top[keep]], dim=1).contiguous()
    mode = "belowtop32" if dtype == torch.float32 else "belowtop64"
    raw = subprocess.run([driver, mode], input=pairs.numpy().tobytes(), check=True,
                         capture_output=True).stdout
    host = np.frombuffer(raw, dtype=pairs.numpy().dtype)
    assert host.shape == (int(keep.sum()),)
    assert np.isneginf(host).sum() == 3 * 64
    assert np.array_equal(_bits(host), _bits(z[keep].numpy()))


def test_sources_inline_each_header_once():
    text = cuda.source("rows.cu")
    assert "#include \"" not in text
    assert text.count("#define GUMBELRS_COMMON_CUH") == 1
    assert text.count("#define GUMBELRS_DEVICE_CUH") == 1


def test_cuda_without_cupy_says_what_to_install(monkeypatch):
    """Whether or not CuPy and a GPU are here: CuPy is made unimportable."""

    def no_cupy():
        raise ImportError("No module named 'cupy'")

    monkeypatch.setattr(_cuda, "require", no_cupy)
    message = (r"gumbelrs: CUDA tensors need CuPy, which could not be imported \(No module "
               r"named 'cupy'\); install it with pip install 'gumbelrs\[cuda(12)?\]'.*\.cpu\(\)$")
    with pytest.raises(RuntimeError, match=message):
        _dispatch.backend(torch.device("cuda"))
    if torch.cuda.is_available():  # and through an op, on a CUDA tensor
        with pytest.raises(RuntimeError, match=message):
            gumbelrs.gumbel_softmax(torch.zeros(2, 3, device="cuda"))


def test_check_modes_are_validated():
    assert cuda.get_checks() == "async"
    with pytest.raises(ValueError, match="mode must be 'async' or 'sync', got 'later'"):
        cuda.set_checks("later")
    cuda.set_checks("sync")
    try:
        assert cuda.get_checks() == "sync"
        assert cuda.check_faults() is None  # nothing recorded, no CUDA path loaded
    finally:
        cuda.set_checks("async")


def _nvrtc_or_skip():
    try:
        _cuda._nvrtc()
    except RuntimeError as e:
        pytest.skip(str(e))


# An instruction that flushes subnormals: mul.rn.ftz.f32, setp.gt.ftz.f32, ...
FTZ = re.compile(r"^\s*[\w.]*\.ftz\b", re.MULTILINE)


def test_without_nvrtc_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda.bindings.nvrtc", None)  # import fails
    with pytest.raises(RuntimeError, match=r"^gumbelrs: the CUDA kernels are compiled by NVRTC "
                       r"through cuda-bindings \(.*\); pip install cuda-bindings and NVRTC for "
                       r"torch's CUDA version$"):
        _cuda._nvrtc()


@functools.cache
def _compiled(name: str, capability: int) -> tuple[bytes, bytes]:
    """``_cuda.nvrtc_compile`` of kernel file ``name``, once per test run."""
    _nvrtc_or_skip()
    return _cuda.nvrtc_compile(cuda.source(name), name, capability)


@pytest.mark.parametrize("capability", [75, 90])
@pytest.mark.parametrize("name", sorted(n for n in cuda.sources() if n.endswith(".cu")))
def test_every_kernel_file_compiles_with_exactly_our_options(name, capability):
    """Machine code for the oldest architecture NVRTC 13 knows and for an H100, by the compile
    the runtime uses: no instruction flushes subnormals (CuPy's -ftz=true would; see
    test_cuda_emulated.py for what that changes)."""
    image, ptx = _compiled(name, capability)
    assert image.startswith(b"\x7fELF")  # a CUBIN
    text = ptx.decode()
    assert f"\n.target sm_{capability}\n" in text
    assert FTZ.search(text) is None


def test_the_ftz_check_sees_cupys_option(monkeypatch):
    _nvrtc_or_skip()
    monkeypatch.setattr(cuda, "NVRTC_OPTIONS", (*cuda.NVRTC_OPTIONS, "-ftz=true"))
    ptx = _cuda.nvrtc_compile(cuda.source("noise.cu"), "noise.cu", 90)[1].decode()
    assert FTZ.search(ptx) is not None


def test_architectures_nvrtc_does_not_know():
    """Newer: PTX of the newest NVRTC knows, compiled by the driver. Older: a named error."""
    _nvrtc_or_skip()
    nvrtc, (major, minor) = _cuda._nvrtc()
    archs = nvrtc.nvrtcGetSupportedArchs()[1]
    image, ptx = _cuda.nvrtc_compile(cuda.source("noise.cu"), "noise.cu", 999)
    assert image == ptx and ptx.endswith(b"\0")
    assert f"\n.target sm_{max(archs)}\n" in ptx.decode()
    old = min(archs) - 1
    with pytest.raises(RuntimeError, match=rf"^gumbelrs: NVRTC {major}\.{minor} cannot compile for "
                       rf"sm_{old}; the oldest architecture it knows is sm_{min(archs)}$"):
        _cuda.nvrtc_compile(cuda.source("noise.cu"), "noise.cu", old)


def _static_shared(cubin: bytes) -> dict[str, int]:
    """Each kernel's static shared memory: the sizes of the ELF sections ``.nv.shared.<kernel>``."""
    offset, = struct.unpack_from("<Q", cubin, 0x28)
    size, count, names = struct.unpack_from("<HHH", cubin, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", cubin, offset + i * size) for i in range(count)]
    table = sections[names][4]

    def name(at):
        return cubin[table + at:cubin.index(b"\0", table + at)].decode()

    prefix = ".nv.shared."
    return {name(s[0])[len(prefix):]: s[5] for s in sections
            if name(s[0]).startswith(prefix) and not name(s[0]).startswith(prefix + "reserved")}


@pytest.mark.parametrize("capability", [75, 90])
def test_the_shared_memory_limit_leaves_room_for_the_static_part(capability):
    """A kernel's dynamic shared memory may reach the opt-in limit less its
    static shared memory, which _smem_limit keeps aside: every row kernel's
    must fit there (on sm_90 ptxas adds 1 KB to the kernels' 512 bytes)."""
    static = _static_shared(_compiled("rows.cu", capability)[0])
    assert len(static) == 5 * 4  # every row kernel of every dtype
    assert 512 <= min(static.values()) and max(static.values()) <= _cuda._STATIC_SMEM


def test_compile_errors_carry_nvrtcs_log():
    _nvrtc_or_skip()
    with pytest.raises(RuntimeError, match=r"(?s)^gumbelrs: NVRTC could not compile bad\.cu for "
                       r"sm_90:\n.*expected an expression"):
        _cuda.nvrtc_compile("__device__ int x = ;", "bad.cu", 90)


@pytest.fixture
def compiles(monkeypatch, tmp_path):
    """The cache in tmp_path; each compile recorded, its image a stand-in."""
    calls = []

    def compile_(source, name, capability):
        calls.append((name, capability))
        return f"{name} for {capability}".encode(), b""

    monkeypatch.setenv("GUMBELRS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_cuda, "nvrtc_compile", compile_)
    monkeypatch.setattr(_cuda, "_nvrtc", lambda: (None, (13, 2)))
    return calls


def test_binaries_are_cached_by_source_options_architecture_and_nvrtc(compiles, monkeypatch,
                                                                      tmp_path):
    path = _cuda._module_path("rows", 90)
    assert os.path.dirname(path) == str(tmp_path / "cache")
    assert open(path, "rb").read() == b"rows.cu for 90"
    assert compiles == [("rows.cu", 90)]
    assert _cuda._module_path("rows", 90) == path and len(compiles) == 1  # read, not compiled
    others = {_cuda._module_path("rows", 80), _cuda._module_path("noise", 90)}
    monkeypatch.setattr(cuda, "NVRTC_OPTIONS", (*cuda.NVRTC_OPTIONS, "-lineinfo"))
    others.add(_cuda._module_path("rows", 90))
    monkeypatch.setattr(cuda, "NVRTC_OPTIONS", cuda.NVRTC_OPTIONS[:-1])
    monkeypatch.setattr(_cuda, "_nvrtc", lambda: (None, (13, 3)))
    others.add(_cuda._module_path("rows", 90))
    monkeypatch.setattr(_cuda, "_nvrtc", lambda: (None, (13, 2)))
    source = cuda.source
    monkeypatch.setattr(cuda, "source", lambda name: source(name) + "\n")
    others.add(_cuda._module_path("rows", 90))
    assert len(others) == 5 and path not in others and len(compiles) == 6
    assert sorted(os.listdir(tmp_path / "cache")) == sorted(
        os.path.basename(p) for p in (path, *others))  # no temporary file left


def test_a_failed_write_leaves_no_file_and_says_where(compiles, monkeypatch, tmp_path):
    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(RuntimeError, match=r"^gumbelrs: cannot write the compiled CUDA kernels to "
                       r".*cache \(disk full\); set GUMBELRS_CACHE to a writable folder$"):
        _cuda._module_path("rows", 90)
    assert os.listdir(tmp_path / "cache") == []  # the temporary file is gone
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("GUMBELRS_CACHE", str(tmp_path / "file"))
    with pytest.raises(RuntimeError, match=r"^gumbelrs: cannot write the compiled CUDA kernels to "
                       r".*file \(.*\); set GUMBELRS_CACHE to a writable folder$"):
        _cuda._module_path("rows", 90)


def test_kernels_are_loaded_from_the_cached_binary_on_their_device(monkeypatch):
    events = []

    class Device:
        def __init__(self, index):
            self.index = index

        def __enter__(self):
            events.append(("on", self.index))

        def __exit__(self, *exc):
            events.append(("off", self.index))

    class RawModule:
        def __init__(self, *, path):
            events.append(("load", path))

        def get_function(self, name):
            events.append(("get", name))
            return name

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(Device=Device), RawModule=RawModule)
    monkeypatch.setattr(_cuda, "require", lambda: fake)
    monkeypatch.setattr(_cuda, "_module_path", lambda file, capability: f"{file}-{capability}")
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda device: (9, 0) if device.index == 1 else (8, 6))
    monkeypatch.setattr(_cuda, "_modules", {})
    monkeypatch.setattr(_cuda, "_kernels", {})
    one = torch.device("cuda", 1)
    assert _cuda._kernel("rows", "grs_gs_forward_f32", one) == "grs_gs_forward_f32"
    assert _cuda._kernel("rows", "grs_gs_backward_f32", one) == "grs_gs_backward_f32"
    assert _cuda._kernel("rows", "grs_gs_forward_f32", one) == "grs_gs_forward_f32"
    _cuda._kernel("rows", "grs_gs_forward_f32", torch.device("cuda", 0))
    assert events == [("on", 1), ("load", "rows-90"), ("get", "grs_gs_forward_f32"), ("off", 1),
                      ("on", 1), ("get", "grs_gs_backward_f32"), ("off", 1),
                      ("on", 0), ("load", "rows-86"), ("get", "grs_gs_forward_f32"), ("off", 0)]


def test_the_checks_switches_come_with_the_package():
    code = "import gumbelrs; gumbelrs.cuda.set_checks('sync'); print(gumbelrs.cuda.get_checks())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "sync"
    env = {**os.environ, "GUMBELRS_CUDA_CHECKS": "later"}
    bad = subprocess.run([sys.executable, "-c", "import gumbelrs"], env=env, capture_output=True,
                         text=True)
    assert bad.returncode != 0
    assert "GUMBELRS_CUDA_CHECKS must be 'async' or 'sync', got 'later'" in bad.stderr
