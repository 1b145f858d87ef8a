"""Argument checks, one set for every layer (ops, distributions, estimators,
schedules, nn, apps). Every message has one form,
``{owner}: {name} must be {expected}, got {value}``: it names the function or
class, the argument, what it expects and the value it got (with the value's
type when the type is what is wrong)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ._generator import Generator

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: The smallest normal and largest finite value of each compute dtype: the
#: range of temperatures (``torch.finfo`` costs 0.16 us a call, 1.5% of a small op).
_NORMAL_RANGE = {d: (torch.finfo(d).tiny, torch.finfo(d).max)
                 for d in (torch.float32, torch.float64)}


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type: a ``TypeError``, and a ``ValueError`` too
    because the layers, schedules and applications raised ``ValueError`` for
    every bad argument before their checks were gathered here, and code that
    catches that keeps working."""


def message(owner: str, name: str, expected: str, got: object) -> str:
    """The one form of a message about an argument."""
    return f"{owner}: {name} must be {expected}, got {got!r}"


def wrong_type(owner: str, name: str, expected: str, got: object) -> ArgumentTypeError:
    """The error for ``got``, whose type is not what ``name`` takes."""
    return ArgumentTypeError(
        f"{owner}: {name} must be {expected}, got {type(got).__name__} {got!r}")


def is_int(v: object) -> bool:
    """An int, not a bool (``True`` is an int to Python, never a count here)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v: object) -> bool:
    """An int or a float, not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def flag(owner: str, name: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise wrong_type(owner, name, "True or False", v)
    return v


def count(owner: str, name: str, v: object, lo: int, hi: int | None = None,
          why: str = "") -> int:
    """An int in ``[lo, hi]`` (no upper bound when ``hi`` is None); ``why``
    says where the bounds come from."""
    if is_int(v) and lo <= v and (hi is None or v <= hi):
        return v
    # The message only on failure: the ops call this on every call.
    expected = (f"an int >= {lo}" if hi is None else f"an int in [{lo}, {hi}]") + why
    if not is_int(v):
        raise wrong_type(owner, name, expected, v)
    raise ValueError(message(owner, name, expected, v))


def number(owner: str, name: str, v: object, ok: Callable[[float], bool],
           expected: str) -> float:
    """``float(v)`` for an int or float ``v`` with ``ok(v)`` (False for NaN, as
    every comparison is)."""
    if not is_real(v):
        raise wrong_type(owner, name, expected, v)
    if not ok(v):  # False for NaN
        raise ValueError(message(owner, name, expected, v))
    return float(v)


def positive(owner: str, name: str, v: object,
             expected: str = "a positive finite number") -> float:
    """A number in (0, inf); ``expected`` names the other things ``name`` may be
    (handled by the caller), such as a Schedule."""
    return number(owner, name, v, lambda x: 0 < x < math.inf, expected)


def non_negative(owner: str, name: str, v: object) -> float:
    return number(owner, name, v, lambda x: 0 <= x < math.inf, "a finite number >= 0")


def fraction(owner: str, name: str, v: object) -> float:
    """A probability strictly between 0 and 1."""
    return number(owner, name, v, lambda x: 0 < x < 1, "a number in (0, 1)")


def finite(owner: str, name: str, v: object) -> float:
    return number(owner, name, v, math.isfinite, "a finite number")


def logits(fn: str, x: object, *, min_dim: int = 1, name: str = "logits",
           convert: str = "") -> torch.Tensor:
    """A dense floating-point tensor of at least ``min_dim`` dimensions; ``name``
    is what the op calls the argument (scores, weights, ...); ``convert`` ends
    the message for a real, non-float dtype (how to convert it)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided:
        raise TypeError(f"{fn}: {name} must be a dense tensor, got layout {x.layout}; "
                        "convert it with .to_dense()")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{fn}: {name} must be a floating-point tensor (float16, bfloat16, float32 or "
            f"float64), got dtype {x.dtype}{'' if x.dtype.is_complex else convert}"
        )
    if x.dim() < min_dim:
        raise ValueError(
            f"{fn}: {name} must have at least {min_dim} dimension(s), got a {x.dim()}-d tensor"
        )
    return x


def weights(fn: str, w: object) -> torch.Tensor:
    """The weights of assignment problems: a dense floating-point tensor
    ``(*batch, n, m)`` with ``1 <= n <= m``."""
    w = logits(fn, w, min_dim=0, name="weights",
               convert="; convert them with weights.double() (exact for integers up to 2**53)")
    shape = tuple(w.shape)
    if w.dim() < 2:
        raise ValueError(f"{fn}: weights must be a matrix or a batch of matrices "
                         f"(*batch, n, m), got a {w.dim()}-d tensor of shape {shape}")
    n, m = shape[-2:]
    if n == 0:
        raise ValueError(f"{fn}: weights must have at least one row (shape (*batch, n, m) with "
                         f"1 <= n <= m), got shape {shape}")
    if n > m:
        raise ValueError(f"{fn}: weights must have no more rows than columns (n <= m: each row "
                         f"gets a column of its own), got shape {shape} with n={n} > m={m}; "
                         "pass weights.transpose(-2, -1) to assign the columns to rows")
    return w


def dim(fn: str, d: object, ndim: int) -> int:
    if is_int(d) and -ndim <= d < ndim:
        return d % ndim
    expected = f"an int in [{-ndim}, {ndim - 1}] (logits have {ndim} dimension(s))"
    if not is_int(d):
        raise wrong_type(fn, "dim", expected, d)
    raise IndexError(message(fn, "dim", expected, d))


def shape(fn: str, shape: object) -> list[int]:
    """A tensor shape: an int or a sequence of ints, each >= 0."""
    if is_int(shape):
        shape = (shape,)
    if not isinstance(shape, Sequence) or not all(is_int(n) and n >= 0 for n in shape):
        raise ArgumentTypeError(message(fn, "shape", "a sequence of non-negative ints", shape))
    return list(shape)


def index(fn: str, index: object, batch: Sequence[int], dim: int) -> torch.Tensor:
    """A dense int64 tensor of the ``batch`` shape (that of logits without ``dim``)."""
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"{fn}: index must be an int64 tensor, got {type(index).__name__}")
    if index.dtype != torch.int64:
        raise TypeError(f"{fn}: index must be an int64 tensor, got {index.dtype}")
    if index.layout != torch.strided:
        raise TypeError(f"{fn}: index must be a dense tensor, got layout {index.layout}; "
                        "convert it with .to_dense()")
    if list(index.shape) != list(batch):
        raise ValueError(f"{fn}: index must have the batch shape {tuple(batch)} (logits' shape "
                         f"without dim={dim}), got {tuple(index.shape)}")
    return index


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
    if not is_real(t):
        raise wrong_type(fn, "tau", "a positive float or a tensor", t)
    return _tau_in_range(fn, t, like), None


def scalar_tau(fn: str, t: object, like: torch.Tensor) -> float:
    """A temperature for ops that take one number only: a positive float in the
    range of :func:`tau_message` for the dtype ``like`` is computed in."""
    if not is_real(t):
        raise wrong_type(fn, "tau", "a positive float", t)
    return _tau_in_range(fn, t, like)


def _tau_in_range(fn: str, t: float, like: torch.Tensor) -> float:
    compute = compute_dtype(like.dtype)
    lo, hi = _NORMAL_RANGE[compute]
    if not lo <= t <= hi:  # NaN fails too
        raise ValueError(tau_message(fn, t, compute, everywhere=False))
    return float(t)


def limits(fn: str, lim: object, like: torch.Tensor | None = None) -> tuple[float, float]:
    """``(lo, hi)`` with ``lo < 0 < 1 < hi``; with ``like``, both within half the
    largest finite value of the dtype ``like`` is computed in, so that the
    stretch ``hi - lo`` the kernels scale by is finite there too."""
    try:
        lo, hi = (float(v) for v in lim)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ArgumentTypeError(message(fn, "limits", "a pair of floats (lo, hi)", lim)) from None
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
