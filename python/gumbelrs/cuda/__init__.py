"""CUDA sources of the GPU path.

``common.cuh`` holds the device functions shared by every kernel (Philox,
uniforms, exp/ln/ln1p, noise), written to compile both as CUDA and as host C
so that a CPU test checks them bitwise against the Rust core; the ``.cu``
files hold the kernels. They are compiled at run time by NVRTC with
``--fmad=false``.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

#: NVRTC options every kernel is compiled with: no implicit fused multiply-add,
#: so the arithmetic is the Rust core's, operation by operation.
NVRTC_OPTIONS = ("--fmad=false", "--std=c++17")


def sources() -> dict[str, str]:
    """The CUDA sources shipped with the package, by file name."""
    return {p.name: p.read_text() for p in sorted(HERE.iterdir()) if p.suffix in (".cu", ".cuh")}
