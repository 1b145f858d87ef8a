"""The CUDA sources without a GPU: the device functions built as host C give
bitwise the Rust core's noise, elementary functions and per-element results,
every kernel file compiles with NVRTC (when an NVRTC library is installed),
and a CUDA tensor without CuPy gets an error that says what to install."""

import ctypes
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import gumbelrs
from gumbelrs import _core, _dispatch, cuda

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
    _core.noise(kind, rust, seed, offset)
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


def test_cuda_without_cupy_says_what_to_install():
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("CuPy is installed")
    with pytest.raises(RuntimeError, match=r"need CuPy.*pip install 'gumbelrs\[cuda(12)?\]'.*"
                       r"\.cpu\(\)"):
        _dispatch.backend(torch.device("cuda"))


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


def _nvrtc():
    site = os.path.dirname(os.path.dirname(torch.__file__))
    candidates = glob.glob(os.path.join(site, "nvidia", "*", "lib", "libnvrtc.so*"))
    candidates += glob.glob(os.path.join(site, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*"))
    for path in sorted(c for c in candidates if "builtins" not in c):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="NVRTC lookup is Linux-only")
@pytest.mark.parametrize("arch", ["compute_75", "sm_90"])
@pytest.mark.parametrize("name", sorted(n for n in cuda.sources() if n.endswith(".cu")))
def test_every_kernel_file_compiles_with_nvrtc(name, arch):
    """PTX for the oldest architecture the kernels support, and machine code for an H100."""
    lib = _nvrtc()
    if lib is None:
        pytest.skip("no NVRTC library installed")
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), cuda.source(name).encode(), name.encode(),
                                  0, None, None) == 0
    opts = [*cuda.NVRTC_OPTIONS, f"--gpu-architecture={arch}"]
    c_opts = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    status = lib.nvrtcCompileProgram(prog, len(opts), c_opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert status == 0, log.value.decode(errors="replace")


def test_the_checks_switches_come_with_the_package():
    code = "import gumbelrs; gumbelrs.cuda.set_checks('sync'); print(gumbelrs.cuda.get_checks())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "sync"
    env = {**os.environ, "GUMBELRS_CUDA_CHECKS": "later"}
    bad = subprocess.run([sys.executable, "-c", "import gumbelrs"], env=env, capture_output=True,
                         text=True)
    assert bad.returncode != 0
    assert "GUMBELRS_CUDA_CHECKS must be 'async' or 'sync', got 'later'" in bad.stderr
