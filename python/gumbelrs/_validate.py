"""Argument checks shared by the public ops. Every message names the op, the
argument, the value it got and what it expects."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._generator import Generator

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: The smallest normal and largest finite value of each compute dtype: the
#: range of temperatures (``torch.finfo`` costs 0.16 us a call, 1.5% of a small op).
_NORMAL_RANGE = {d: (torch.finfo(d).tiny, torch.finfo(d).max)
                 for d in (torch.float32, torch.float64)}


def logits(fn: str, x: object, *, min_dim: int = 1) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: logits must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided:
        raise TypeError(f"{fn}: logits must be a dense tensor, got layout {x.layout}; "
                        "convert it with .to_dense()")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{fn}: logits must be a floating-point tensor (float16, bfloat16, float32 or "
            f"float64), got dtype {x.dtype}"
        )
    if x.dim() < min_dim:
        raise ValueError(
            f"{fn}: logits must have at least {min_dim} dimension(s), got a {x.dim()}-d tensor"
        )
    return x


def dim(fn: str, d: object, ndim: int) -> int:
    if isinstance(d, bool) or not isinstance(d, int):
        raise TypeError(f"{fn}: dim must be an int, got {type(d).__name__} {d!r}")
    if not -ndim <= d < ndim:
        raise IndexError(
            f"{fn}: dim={d} is out of range for logits with {ndim} dimension(s) "
            f"(expected {-ndim} <= dim < {ndim})"
        )
    return d % ndim


def count(fn: str, name: str, v: object, lo: int, hi: int, what: str) -> int:
    """An int in ``[lo, hi]``; ``what`` says where the bounds come from."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{fn}: {name} must be an int, got {type(v).__name__} {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{fn}: {name}={v} is out of range; expected {lo} <= {name} <= {hi}{what}")
    return v


def _broadcasts(shape: Sequence[int], target: Sequence[int]) -> bool:
    if len(shape) > len(target):
        return False
    return all(a in (1, b) for a, b in zip(reversed(shape), reversed(target)))


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute ``dtype`` logits in (float32 for the half types)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def tau_message(fn: str, got: object, compute: torch.dtype | None, everywhere: bool) -> str:
    """The one message for a temperature out of range, scalar or tensor.

    The kernels multiply by ``1 / tau`` in ``compute``: a temperature below
    its smallest normal value (or above its largest finite one) would make
    that inverse infinite (or the value itself), and the sample NaN. So the
    accepted range is ``[finfo.tiny, finfo.max]`` of the compute dtype.
    """
    where = " everywhere" if everywhere else ""
    if compute is None:  # the CUDA path no longer has the tensor
        return f"{fn}: tau must be positive, normal and finite{where}, got {got}"
    lo, hi = _NORMAL_RANGE[compute]
    name = str(compute).removeprefix("torch.")
    return (f"{fn}: tau must be in [{lo:.8g}, {hi:.8g}]{where} (positive, normal and "
            f"finite in {name}, the dtype the logits are computed in), got {got}")


def tau(fn: str, t: object, like: torch.Tensor, batch_shape: Sequence[int], *,
        dim: int | None = None, differentiable: bool = False):
    """``(float, None)`` for a scalar temperature, ``(1.0, tensor)`` for a tensor one.

    A tensor temperature is broadcast to ``batch_shape`` (one value per row)
    and returned contiguous on the device of ``like``, in the dtype the
    kernels compute ``like`` in (float32 for float16/bfloat16). For ops
    with a category dimension ``dim``, a tensor with the rank of ``like`` and
    size 1 along ``dim`` is accepted too. Its values are checked (the range of
    :func:`tau_message`) by the kernels, which see them anyway. A tensor that
    requires grad is accepted only by ops that are ``differentiable`` in tau.
    """
    if isinstance(t, torch.Tensor):
        if t.layout != torch.strided:
            raise TypeError(f"{fn}: tau must be a dense tensor, got layout {t.layout}; convert "
                            "it with .to_dense()")
        if not (t.dtype.is_floating_point or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(
                f"{fn}: tau must be a positive float or a real tensor, got dtype {t.dtype}"
            )
        if t.requires_grad and not differentiable:
            raise ValueError(
                f"{fn}: gradients with respect to tau are not supported; pass tau.detach() "
                "(a learned temperature can be folded into the logits instead)"
            )
        if dim is not None and t.dim() == like.dim() and t.shape[dim] == 1:
            t = t.squeeze(dim)
        if not _broadcasts(t.shape, batch_shape):
            raise ValueError(
                f"{fn}: tau of shape {tuple(t.shape)} does not broadcast against the batch shape "
                f"{tuple(batch_shape)}"
                + (" (logits' shape without the category dimension)" if dim is not None else "")
            )
        compute = compute_dtype(like.dtype)
        rows = t.to(dtype=compute, device=like.device).expand(tuple(batch_shape))
        return 1.0, rows.contiguous()
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"{fn}: tau must be a positive float or a tensor, got {type(t).__name__}")
    compute = compute_dtype(like.dtype)
    lo, hi = _NORMAL_RANGE[compute]
    if not lo <= t <= hi:  # NaN fails too
        raise ValueError(tau_message(fn, t, compute, everywhere=False))
    return float(t), None


def limits(fn: str, lim: object, like: torch.Tensor | None = None) -> tuple[float, float]:
    """``(lo, hi)`` with ``lo < 0 < 1 < hi``; with ``like``, both within half the
    largest finite value of the dtype ``like`` is computed in, so that the
    stretch ``hi - lo`` the kernels scale by is finite there too."""
    try:
        lo, hi = (float(v) for v in lim)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: limits must be a pair of floats (lo, hi), got {lim!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < 0.0 and hi > 1.0):
        raise ValueError(
            f"{fn}: limits must satisfy lo < 0 < 1 < hi (finite) so that exact 0 and 1 occur, "
            f"got ({lo}, {hi})"
        )
    if like is None:
        return lo, hi
    compute = compute_dtype(like.dtype)
    half = _NORMAL_RANGE[compute][1] / 2
    if not (-half <= lo and hi <= half):
        name = str(compute).removeprefix("torch.")
        raise ValueError(
            f"{fn}: limits must lie in [{-half:.8g}, {half:.8g}] (half the largest finite "
            f"{name}, the dtype the logits are computed in, so that hi - lo is finite), "
            f"got ({lo}, {hi})"
        )
    return lo, hi


def generator(fn: str, g: object) -> Generator | None:
    """``g``: a :class:`Generator`, or None for torch's default generator."""
    if g is not None and not isinstance(g, Generator):
        raise TypeError(
            f"{fn}: generator must be a gumbelrs.Generator or None, got {type(g).__module__}."
            f"{type(g).__qualname__}"
        )
    return g
