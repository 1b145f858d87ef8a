"""The public ops: check the arguments, pick the stream, call the op.

Every op takes ``generator=None`` (each call then draws a fresh Philox seed
from torch's default CPU generator, so torch's seeding and RNG-state
functions govern it) or a :class:`gumbelrs.Generator`, and draws one call's
worth of its stream: element ``i`` of the call (in the contiguous order of the
logits) uses the Philox words of ``(seed, offset, i)`` only. Inputs are never
modified. The noise is added relative to each row's largest logit,
``(logits - max) + g``: the same distribution as ``logits + g``, with the
noise's resolution kept at any logit scale (in float32 the noise added to
logits near 1e8 would be rounded away). float16/bfloat16 logits are computed
in float32 and the result is returned in their dtype (on CUDA the kernels
read and write them directly; half-precision noise from ``gumbel_noise`` is
drawn in float32 and converted).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _dispatch, _ops, _validate
from ._generator import Generator

__all__ = [
    "gumbel_given_argmax",
    "gumbel_noise",
    "gumbel_softmax",
    "gumbel_topk",
    "hard_concrete",
    "relaxed_bernoulli",
    "sample_categorical",
]

_NOISE_KINDS = ("gumbel", "logistic", "uniform")


def _categories(fn: str, logits: torch.Tensor, d: int) -> None:
    """Drawing needs at least one category along ``d`` (a shape error, on every device)."""
    if logits.shape[d] == 0:
        raise ValueError(f"{fn}: logits have no category along dim={d} (size 0)")


def _in_dtype(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``y.to(dtype)``, skipped when it is already in ``dtype`` (the call alone
    costs about 2 us, a tenth of a small op)."""
    return y if y.dtype == dtype else y.to(dtype)


def _batch(shape: torch.Size, dim: int) -> list[int]:
    return [n for i, n in enumerate(shape) if i != dim]


def gumbel_softmax(
    logits: torch.Tensor,
    tau: float | torch.Tensor = 1.0,
    hard: bool = False,
    dim: int = -1,
    *,
    generator: Generator | None = None,
) -> torch.Tensor:
    """A Gumbel-Softmax (Concrete) sample: ``softmax((logits + g) / tau, dim)``.

    Drop-in for ``torch.nn.functional.gumbel_softmax`` with a generator.
    ``hard=True`` returns the exact one-hot of ``argmax(logits + g)`` (values
    0.0 and 1.0) whose gradient is that of the soft sample (straight-through).
    ``tau`` is a positive float or a tensor that broadcasts against the batch
    shape (the logits' shape without ``dim``; size 1 at ``dim`` is accepted);
    a tensor ``tau`` that requires grad receives its gradient (a learned
    temperature). A ``-inf`` logit masks its category out: probability and
    gradient exactly 0.

    Returns a tensor of the logits' shape and dtype.
    ``generator``: a :class:`~gumbelrs.Generator`, or ``None`` for a seed drawn
    from torch's default generator, which ``torch.manual_seed`` governs.

    Raises:
        ValueError: a NaN or ``+inf`` logit, a row of only ``-inf``, or a ``tau``
            that is not a positive normal finite temperature or does not
            broadcast against the batch shape; the message names the op, the
            argument and the value.
        IndexError: ``dim`` out of range.
        TypeError: integer or sparse ``logits``, a ``hard`` that is not a bool, a
            ``tau`` that is neither a float nor a tensor, or a ``generator`` that
            is not a :class:`~gumbelrs.Generator`.
    """
    fn = "gumbel_softmax"
    _validate.logits(fn, logits)
    d = _validate.dim(fn, dim, logits.dim())
    hard = _validate.flag(fn, "hard", hard)
    gen = _validate.generator(fn, generator)
    x = _dispatch.prepare(logits)
    batch = _batch(x.shape, d) if isinstance(tau, torch.Tensor) else ()  # only a tensor needs it
    t, t_rows = _validate.tau(fn, tau, x, batch, dim=d, differentiable=True)
    y = _ops.gumbel_softmax(x, d, t, t_rows, _ops.take(gen, fn), hard, fn)
    return _in_dtype(y, logits.dtype)


def relaxed_bernoulli(
    logits: torch.Tensor,
    tau: float | torch.Tensor = 1.0,
    hard: bool = False,
    *,
    generator: Generator | None = None,
) -> torch.Tensor:
    """A Binary Concrete (relaxed Bernoulli) sample ``sigmoid((logits + L) / tau)``,
    ``L`` standard logistic noise (Maddison et al. 2017; Jang et al. 2017).

    ``hard=True`` returns ``1.0`` where ``logits + L > 0`` and ``0.0`` elsewhere,
    with the gradient of the soft sample. ``tau`` broadcasts against ``logits``
    (and receives a gradient when it requires one).
    Logits of ``-inf``/``+inf`` are gates that are always closed/open (gradient 0).

    Returns a tensor of the logits' shape and dtype (any shape, 0-d included).
    ``generator``: a :class:`~gumbelrs.Generator`, or ``None`` for a seed drawn
    from torch's default generator, which ``torch.manual_seed`` governs.

    Raises:
        ValueError: a NaN logit, or a ``tau`` that is not a positive normal
            finite temperature or does not broadcast against ``logits``.
        TypeError: integer or sparse ``logits``, a non-bool ``hard``, or a
            ``generator`` that is not a :class:`~gumbelrs.Generator`.
    """
    fn = "relaxed_bernoulli"
    _validate.logits(fn, logits, min_dim=0)
    hard = _validate.flag(fn, "hard", hard)
    gen = _validate.generator(fn, generator)
    x = _dispatch.prepare(logits)
    t, t_elems = _validate.tau(fn, tau, x, x.shape, differentiable=True)
    y = _ops.relaxed_bernoulli(x, t, t_elems, _ops.take(gen, fn), hard, fn)
    return _in_dtype(y, logits.dtype)


def hard_concrete(
    logits: torch.Tensor,
    tau: float | torch.Tensor = 2.0 / 3.0,
    limits: tuple[float, float] = (-0.1, 1.1),
    *,
    generator: Generator | None = None,
) -> torch.Tensor:
    """A Hard Concrete sample (Louizos, Welling and Kingma 2018):
    ``clamp(lo + (hi - lo) * sigmoid((logits + L) / tau), 0, 1)``.

    Stretching to ``limits = (lo, hi)`` with ``lo < 0 < 1 < hi`` and clamping
    puts probability mass on exactly 0 and 1; the gradient is 0 where the
    sample was clamped.

    Returns a tensor of the logits' shape and dtype (any shape, 0-d included).
    ``generator``: a :class:`~gumbelrs.Generator`, or ``None`` for a seed drawn
    from torch's default generator, which ``torch.manual_seed`` governs.

    Raises:
        ValueError: a NaN logit, a bad ``tau``, or ``limits`` that do not satisfy
            ``lo < 0 < 1 < hi`` (finite, within half the dtype's largest value).
        TypeError: integer or sparse ``logits``, or a ``generator`` that is not a
            :class:`~gumbelrs.Generator`.
    """
    fn = "hard_concrete"
    _validate.logits(fn, logits, min_dim=0)
    lim = _validate.limits(fn, limits, logits)
    gen = _validate.generator(fn, generator)
    x = _dispatch.prepare(logits)
    t, t_elems = _validate.tau(fn, tau, x, x.shape)
    z = _ops.hard_concrete(x, t, t_elems, lim, _ops.take(gen, fn), fn)
    return _in_dtype(z, logits.dtype)


def _noise(
    kind: str,
    shape: Sequence[int] | int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: Generator | None = None,
) -> torch.Tensor:
    """Noise of ``kind`` ("gumbel", "logistic", or "uniform": the tail variable
    ``v`` in (0, 1) the others are computed from), exactly as the ops draw it
    for the same generator state."""
    fn = f"{kind}_noise" if kind in _NOISE_KINDS else "noise"
    if kind not in _NOISE_KINDS:
        raise ValueError(f"{fn}: kind must be one of {_NOISE_KINDS}, got {kind!r}")
    size = _validate.shape(fn, shape)
    if dtype not in _validate.FLOAT_DTYPES:
        raise TypeError(
            f"{fn}: dtype must be float16, bfloat16, float32 or float64, got {dtype}"
        )
    dev = torch.device("cpu") if device is None else torch.device(device)
    gen = _validate.generator(fn, generator)
    compute = _validate.compute_dtype(dtype)
    return _in_dtype(_ops.noise(kind, size, compute, dev, _ops.take(gen, fn)), dtype)


def gumbel_noise(
    shape: Sequence[int] | int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: Generator | None = None,
) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(U))``: always finite; the upper tail is
    resolved to about 22 (float32) or 36 (float64). These are the values the
    other ops add to the logits for the same generator state.

    ``shape``: an int or a sequence of non-negative ints, the result's shape;
    ``dtype``: float16, bfloat16, float32 or float64; ``device``: where the
    tensor is made (CPU by default; CUDA draws the same values).
    ``generator``: a :class:`~gumbelrs.Generator`, or ``None`` for a seed drawn
    from torch's default generator, which ``torch.manual_seed`` governs.

    Raises:
        TypeError: a ``shape`` that is not a sequence of non-negative ints, or
            a ``dtype`` that is not one of the four above.
    """
    return _noise("gumbel", shape, dtype=dtype, device=device, generator=generator)


def sample_categorical(
    logits: torch.Tensor,
    num_samples: int = 1,
    dim: int = -1,
    *,
    generator: Generator | None = None,
) -> torch.Tensor:
    """``num_samples`` independent draws from ``Categorical(logits=logits)`` along
    ``dim`` by Gumbel-max. Returns int64 indices of shape ``(*batch, num_samples)``
    (the logits' shape without ``dim``, then the draws). Draw ``s`` uses the noise
    of a ``(num_samples, *logits.shape)`` tensor at ``[s]``.

    ``generator``: a :class:`~gumbelrs.Generator`, or ``None`` for a seed drawn
    from torch's default generator, which ``torch.manual_seed`` governs.

    Raises:
        ValueError: a NaN or ``+inf`` logit, a row of only ``-inf``, no category
            along ``dim``, or ``num_samples`` below 1.
        IndexError: ``dim`` out of range.
        TypeError: integer or sparse ``logits``, a ``num_samples`` that is not an
            int, or a bad ``generator``.
    """
    fn = "sample_categorical"
    _validate.logits(fn, logits)
    d = _validate.dim(fn, dim, logits.dim())
    _categories(fn, logits, d)
    _validate.count(fn, "num_samples", num_samples, 1, 2**31 - 1, "")
    gen = _validate.generator(fn, generator)
    x = _dispatch.prepare(logits.detach())
    return _ops.sample_categorical(fn, x, d, num_samples, _ops.take(gen, fn))


def gumbel_topk(
    logits: torch.Tensor,
    k: int,
    dim: int = -1,
    *,
    generator: Generator | None = None,
) -> torch.Tensor:
    """``k`` draws without replacement from ``Categorical(logits=logits)`` along
    ``dim``, in the order drawn: the indices of the ``k`` largest ``logits + g``
    in decreasing order (Gumbel-top-k; Kool et al. 2019). int64, the logits'
    shape with size ``k`` at ``dim``. Every row needs ``k`` logits that are not
    ``-inf``.

    ``generator``: a :class:`~gumbelrs.Generator`, or ``None`` for a seed drawn
    from torch's default generator, which ``torch.manual_seed`` governs.

    Raises:
        ValueError: a NaN or ``+inf`` logit, ``k`` outside ``[0, size along dim]``,
            or a row with fewer than ``k`` logits that are not ``-inf``.
        IndexError: ``dim`` out of range.
        TypeError: integer or sparse ``logits``, a ``k`` that is not an int, or
            a bad ``generator``.
    """
    fn = "gumbel_topk"
    _validate.logits(fn, logits)
    d = _validate.dim(fn, dim, logits.dim())
    size = logits.shape[d]
    _validate.count(fn, "k", k, 0, size, f" (the size of logits along dim={dim})")
    gen = _validate.generator(fn, generator)
    x = _dispatch.prepare(logits.detach())
    return _ops.gumbel_topk(fn, x, d, k, _ops.take(gen, fn))


def gumbel_given_argmax(
    logits: torch.Tensor,
    index: torch.Tensor,
    num_samples: int = 1,
    dim: int = -1,
    *,
    generator: Generator | None = None,
) -> torch.Tensor:
    """Gumbel-perturbed logits conditioned on their argmax: ``logits + G`` with
    ``G`` standard Gumbel noise conditioned on ``argmax(logits + G, dim) == index``.

    The maximum is Gumbel with location ``logsumexp(logits)``; the others are
    Gumbels at their logits truncated below it (Maddison, Tarlow and Minka
    2014). This is the sampler of the Gumbel-Rao estimator (Paulus et al.
    2020). ``index`` is int64 with the batch shape (the logits' shape without
    ``dim``); the result has shape ``(num_samples, *logits.shape)``. Subtract
    ``logits`` for the noise itself (where logits are finite).

    ``generator``: a :class:`~gumbelrs.Generator`, or ``None`` for a seed drawn
    from torch's default generator, which ``torch.manual_seed`` governs.

    Raises:
        ValueError: a NaN or ``+inf`` logit, a row of only ``-inf``, ``num_samples``
            below 1, an ``index`` without the batch shape, or an index out of
            range or pointing at a ``-inf`` logit.
        IndexError: ``dim`` out of range.
        TypeError: integer or sparse ``logits``, an ``index`` that is not int64,
            or a bad ``generator``.
    """
    fn = "gumbel_given_argmax"
    _validate.logits(fn, logits)
    d = _validate.dim(fn, dim, logits.dim())
    _categories(fn, logits, d)
    _validate.count(fn, "num_samples", num_samples, 1, 2**31 - 1, "")
    batch = _batch(logits.shape, d)
    _validate.index(fn, index, batch, dim)
    gen = _validate.generator(fn, generator)
    x = _dispatch.prepare(logits.detach())
    z = _ops.gumbel_given_argmax(fn, x, d, index.contiguous(), num_samples, _ops.take(gen, fn))
    return _in_dtype(z, logits.dtype)
