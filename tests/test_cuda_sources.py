"""The CUDA sources without a GPU: the device functions built as host C give
bitwise the Rust core's noise and elementary functions, and every kernel file
compiles with NVRTC (when an NVRTC library is installed)."""

import ctypes
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from gumbelrs import _core, cuda

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
@pytest.mark.parametrize("name", sorted(n for n in cuda.sources() if n.endswith(".cu")))
def test_every_kernel_file_compiles_with_nvrtc(name):
    lib = _nvrtc()
    if lib is None:
        pytest.skip("no NVRTC library installed")
    srcs = cuda.sources()
    headers = [n for n in srcs if n.endswith(".cuh")]
    prog = ctypes.c_void_p()
    hdr_src = (ctypes.c_char_p * len(headers))(*[srcs[h].encode() for h in headers])
    hdr_names = (ctypes.c_char_p * len(headers))(*[h.encode() for h in headers])
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), srcs[name].encode(), name.encode(),
                                  len(headers), hdr_src, hdr_names) == 0
    opts = [*cuda.NVRTC_OPTIONS, "--gpu-architecture=compute_80"]
    c_opts = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    status = lib.nvrtcCompileProgram(prog, len(opts), c_opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert status == 0, log.value.decode(errors="replace")
