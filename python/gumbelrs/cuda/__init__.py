"""The GPU path: CUDA sources, and the switches of its fault checks.

``common.cuh`` holds the device functions shared by every kernel (Philox,
uniforms, exp/ln/ln1p, noise, sigmoid), written to compile both as CUDA and as
host C so that a CPU test checks them bitwise against the Rust core;
``device.cuh`` the device-only helpers (storage types, reductions, rows); the
``.cu`` files the kernels. NVRTC compiles them at first use with exactly
``NVRTC_OPTIONS`` (``gumbelrs._cuda.nvrtc_compile``; the binaries are cached
on disk) and CuPy loads and launches them. The launcher is ``gumbelrs._cuda``.

Faults in the data (a NaN logit, a row of only ``-inf``, a bad temperature in
a tensor) are found by the kernels. By default (``"async"``) an op does not
wait for its kernels: a faulty row gets NaN outputs (index -1) and the fault
is kept on the device until :func:`check_faults` raises it. With
``set_checks("sync")`` (or ``GUMBELRS_CUDA_CHECKS=sync``) every op waits for its
kernels and raises the CPU's error at once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: NVRTC options every kernel is compiled with, and no others: no implicit fused
#: multiply-add, and subnormals kept (NVRTC's default, not CuPy's), so the
#: arithmetic is the Rust core's, operation by operation.
NVRTC_OPTIONS = ("--fmad=false", "--std=c++17")

_INCLUDE = re.compile(r'^#include "([\w.]+)"\s*$', re.MULTILINE)
_MODES = ("async", "sync")
_mode = os.environ.get("GUMBELRS_CUDA_CHECKS", "async")
if _mode not in _MODES:
    raise ValueError(f"GUMBELRS_CUDA_CHECKS must be 'async' or 'sync', got {_mode!r}")


def sources() -> dict[str, str]:
    """The CUDA sources shipped with the package, by file name."""
    return {p.name: p.read_text() for p in sorted(HERE.iterdir()) if p.suffix in (".cu", ".cuh")}


def source(name: str) -> str:
    """``name`` with its ``#include "..."`` headers inlined (each once), so that
    the text alone determines the compiled kernels (cached by text)."""
    files = sources()
    seen: set[str] = set()

    def expand(n: str) -> str:
        if n in seen:
            return ""
        seen.add(n)
        return _INCLUDE.sub(lambda m: expand(m.group(1)), files[n])

    return expand(name)


def set_checks(mode: str) -> None:
    """``"async"`` (default): ops never wait for the GPU; a fault in the data
    gives NaN (or -1) in the faulty rows and is raised by :func:`check_faults`.
    ``"sync"``: every op waits for its kernels and raises the fault at once.

    ``mode``: ``"async"`` or ``"sync"``; any other raises ``ValueError``.
    """
    global _mode
    if mode not in _MODES:
        raise ValueError(f"set_checks: mode must be 'async' or 'sync', got {mode!r}")
    _mode = mode


def get_checks() -> str:
    """The current mode of :func:`set_checks`.

    The current mode of the fault checks, ``"async"`` or ``"sync"`` (see
    :func:`set_checks`).
    """
    return _mode


def check_faults() -> None:
    """Raises the first fault recorded by the CUDA kernels since the last
    check (the same ``ValueError`` the CPU raises at once), and clears it.
    Waits for the GPU; returns None when there is none (or no CUDA path)."""
    import sys

    backend = sys.modules.get("gumbelrs._cuda")
    if backend is not None:
        backend.check_faults()
