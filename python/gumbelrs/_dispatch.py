"""The one place that picks a backend for a tensor's device."""

from __future__ import annotations

from types import ModuleType

import torch

from . import _cpu


def _cuda() -> ModuleType:
    from . import _cuda as backend

    try:
        backend.require()
    except ImportError as e:
        build = torch.version.cuda or "?"
        extra = "cuda12" if build.startswith("12") else "cuda"
        raise RuntimeError(
            f"gumbelrs: CUDA tensors need CuPy, which could not be imported ({e}); install it "
            f"with pip install 'gumbelrs[{extra}]' (torch here is built for CUDA {build}), or "
            "move the tensors to the CPU with .cpu()"
        ) from None
    return backend


def _unsupported(device: torch.device) -> RuntimeError:
    return RuntimeError(
        f"gumbelrs: tensors on device '{device}' are not supported; use CPU or CUDA tensors"
    )


def backend(device: torch.device) -> ModuleType:
    """The module whose functions run the kernels for tensors on ``device``."""
    if device.type == "cpu":
        return _cpu
    if device.type == "cuda":
        return _cuda()
    raise _unsupported(device)


def solver(device: torch.device) -> ModuleType:
    """The module whose exact solvers (``matching``) take tensors on ``device``.

    The solvers are CPU kernels only: ``_cuda``'s copy CUDA tensors to the CPU
    and the answer back, and need no CuPy.
    """
    if device.type == "cpu":
        return _cpu
    if device.type == "cuda":
        from . import _cuda as backend

        return backend
    raise _unsupported(device)


def prepare(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the layout and dtype its backend's kernels read."""
    return backend(x.device).prepare(x)
