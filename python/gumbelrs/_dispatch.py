"""The one place that picks a backend for a tensor's device."""

from __future__ import annotations

from types import ModuleType

import torch

from . import _cpu


def backend(device: torch.device) -> ModuleType:
    """The module whose functions run the kernels for tensors on ``device``."""
    if device.type == "cpu":
        return _cpu
    if device.type == "cuda":
        raise RuntimeError(
            "gumbelrs: CUDA tensors need the GPU path (pip install 'gumbelrs[cuda]'), which this "
            "build does not include yet; move the tensors to the CPU with .cpu()"
        )
    raise RuntimeError(
        f"gumbelrs: tensors on device '{device}' are not supported; use CPU tensors"
    )
