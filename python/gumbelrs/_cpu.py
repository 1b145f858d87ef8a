"""CPU backend: torch tensors in, Rust kernels (``_core``) on their memory.

Inputs are contiguous float32/float64 CPU tensors; each crosses as a NumPy
view (``tensor.numpy()`` shares memory, no copy), which the kernels read as a
flat slice. Outputs are allocated here by torch and written in place by the
kernels.
"""

from __future__ import annotations

import math
import os
import sys

import torch

from . import _core
from ._faults import (
    perturbation_overflow,
    translate,
    translate_costs,
    translate_tree,
    translate_weights,
)
from ._protocol import OutputMode


def _on_torchs_openmp() -> bool:
    """Runs parallel kernels on the OpenMP threads of the libgomp torch has
    loaded, where there is one (the core finds it; no address crosses the
    binding); returns whether they do.

    Kernels then run on torch's own intra-op threads instead of a second pool:
    torch's threads keep spinning for milliseconds after each torch op, and a
    second pool would compete with them for the cores. Set
    ``GUMBELRS_THREADS=rayon`` to keep our own pool.
    """
    wanted = os.environ.get("GUMBELRS_THREADS") != "rayon" and sys.platform.startswith("linux")
    return _core.use_openmp(wanted and torch.backends.openmp.is_available())


ON_TORCHS_OPENMP = _on_torchs_openmp()
_core.set_num_threads(torch.get_num_threads())


def _np(t: torch.Tensor):
    return (t.detach() if t.requires_grad else t).numpy()


def _opt(t: torch.Tensor | None):
    return None if t is None else _np(t)


def _tau(tau: float, each: torch.Tensor | None):
    """A temperature as the core takes it: the float, or one per row (element)."""
    return tau if each is None else _np(each)


def split(shape: torch.Size, dim: int) -> tuple[int, int, int]:
    """``(outer, k, inner)`` of ``shape`` around ``dim``."""
    return math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:])


class _faults:
    """Turns a kernel's fault into the user-facing ``ValueError`` (``translate``).

    A class rather than a ``@contextmanager`` generator: entering and leaving
    costs about 0.3 us instead of 2 us, a tenth of a small op.
    """

    __slots__ = ("dim", "fn", "shape", "tau")

    def __init__(self, fn: str, shape: torch.Size, dim: int | None, tau: torch.Tensor | None):
        self.fn, self.shape, self.dim, self.tau = fn, shape, dim, tau

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, e, tb) -> bool:
        if kind is not None and issubclass(kind, _core.KernelError):
            raise translate(self.fn, e, self.shape, self.dim, self.tau) from None
        return False


def prepare(x: torch.Tensor) -> torch.Tensor:
    """``x`` as the kernels read it: contiguous, float16/bfloat16 as float32."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x.contiguous()


def noise(kind: str, shape, dtype: torch.dtype, device: torch.device, seed: int,
          offset: int, start: int = 0) -> torch.Tensor:
    """Noise of ``kind`` of ``shape``: element ``j`` (in contiguous order) is
    element ``start + j`` of the stream, so a draw can be made in pieces."""
    out = torch.empty(shape, dtype=dtype)
    _core.noise(kind, _np(out), (seed, offset), start)
    return out


def perturb(kind: str, theta: torch.Tensor, n_samples: int, sigma: float, seed: int,
            offset: int, start: int = 0) -> torch.Tensor:
    """``theta + sigma z``, ``(n_samples, *theta.shape)``, ``z`` the noise of
    ``kind`` that ``noise`` draws for that shape and ``start`` (float32 or
    float64 ``theta``): ``start = s * theta.numel()`` gives samples ``s ..``
    of a call from 0."""
    x = theta.contiguous()
    out = torch.empty((n_samples, *x.shape), dtype=x.dtype)
    _core.perturb(kind, _np(x), sigma, _np(out), (seed, offset), start)
    return out


def gumbel_softmax(fn, x, dim, tau, tau_rows, seed, offset, hard, need_soft=True):
    """``(y, soft)``; ``soft`` is None unless ``hard`` and ``need_soft``."""
    mode = OutputMode.of(hard, need_soft)
    y = torch.empty_like(x)
    soft = torch.empty_like(x) if mode is OutputMode.ONE_HOT_WITH_SOFT else None
    with _faults(fn, x.shape, dim, tau_rows):
        _core.gumbel_softmax_forward(_np(x), split(x.shape, dim), _tau(tau, tau_rows),
                                     (seed, offset), mode, _np(y), _opt(soft))
    return y, soft


def gumbel_softmax_backward(grad, y, dim, tau, tau_rows):
    out = torch.empty_like(y)
    _core.gumbel_softmax_backward(_np(grad), _np(y), split(y.shape, dim), _tau(tau, tau_rows),
                                  _np(out))
    return out


def sample_categorical(fn, x, dim, num_samples, seed, offset):
    batch = [n for i, n in enumerate(x.shape) if i != dim]
    out = torch.empty((*batch, num_samples), dtype=torch.int64)
    with _faults(fn, x.shape, dim, None):
        _core.sample_categorical(_np(x), split(x.shape, dim), num_samples, (seed, offset),
                                 _np(out))
    return out


def gumbel_topk(fn, x, dim, k, seed, offset):
    shape = list(x.shape)
    shape[dim] = k
    out = torch.empty(shape, dtype=torch.int64)
    with _faults(fn, x.shape, dim, None):
        _core.gumbel_topk(_np(x), split(x.shape, dim), k, (seed, offset), _np(out))
    return out


def gumbel_given_argmax(fn, x, dim, index, num_samples, seed, offset):
    out = torch.empty((num_samples, *x.shape), dtype=x.dtype)
    with _faults(fn, x.shape, dim, None):
        _core.gumbel_given_argmax(_np(x), split(x.shape, dim), _np(index), num_samples,
                                  (seed, offset), _np(out))
    return out


def relaxed_bernoulli(fn, x, tau, tau_elems, seed, offset, hard):
    mode = OutputMode.of(hard)
    y = torch.empty_like(x)
    soft = torch.empty_like(x) if mode is OutputMode.ONE_HOT_WITH_SOFT else None
    with _faults(fn, x.shape, None, tau_elems):
        _core.relaxed_bernoulli_forward(_np(x), _tau(tau, tau_elems), (seed, offset), mode,
                                        _np(y), _opt(soft))
    return y, soft


def relaxed_bernoulli_backward(grad, y, tau, tau_elems):
    out = torch.empty_like(y)
    _core.relaxed_bernoulli_backward(_np(grad), _np(y), _tau(tau, tau_elems), _np(out))
    return out


def hard_concrete(fn, x, tau, tau_elems, limits, seed, offset):
    z = torch.empty_like(x)
    with _faults(fn, x.shape, None, tau_elems):
        _core.hard_concrete_forward(_np(x), _tau(tau, tau_elems), limits, (seed, offset), _np(z))
    return z


def hard_concrete_backward(grad, z, tau, tau_elems, limits):
    out = torch.empty_like(z)
    _core.hard_concrete_backward(_np(grad), _np(z), _tau(tau, tau_elems), limits, _np(out))
    return out


def matching(fn: str, weights: torch.Tensor, maximize: bool) -> torch.Tensor:
    """The column of every row (int64 ``(*batch, n)``) in the exact linear
    assignment of each matrix of ``weights`` (``(*batch, n, m)``, ``n <= m``),
    solved in float64 (exact for every float dtype); the weights are read, never
    written."""
    x = prepare(weights.detach())
    *batch, n, m = x.shape
    out = torch.empty((*batch, n), dtype=torch.int64)
    try:
        _core.linear_assignment(_np(x), (math.prod(batch), n, m), maximize, _np(out))
    except _core.KernelError as e:
        raise translate_weights(fn, e, x.shape, maximize) from None
    return out


def shortest_path_grid(fn: str, costs: torch.Tensor) -> torch.Tensor:
    """The 0/1 indicator of a cheapest path through each grid of ``costs``
    (``(*batch, H, W)``), in the dtype the kernel reads (float32 for
    float16/bfloat16); the costs are read, never written."""
    x = prepare(costs.detach())
    *batch, h, w = x.shape
    out = torch.empty_like(x)
    try:
        _core.shortest_path_grid(_np(x), (math.prod(batch), h, w), _np(out))
    except _core.KernelError as e:
        raise translate_costs(fn, e, x.shape) from None
    return out


def spanning_tree(fn: str, weights: torch.Tensor, stream: tuple[int, int] | None) -> torch.Tensor:
    """The 0/1 maximum spanning tree of each matrix of ``weights`` (``(*batch,
    n, n)``, read from its upper triangle), of the weights plus the Gumbel
    noise of ``stream`` when given, in the dtype the kernel reads; the weights
    are read, never written."""
    x = prepare(weights.detach())
    *batch, n, _ = x.shape
    out = torch.empty_like(x)
    try:
        _core.spanning_tree(_np(x), (math.prod(batch), n), _np(out), stream)
    except _core.KernelError as e:
        raise translate_tree(fn, e, x.shape) from None
    return out


def gumbel_sinkhorn(fn, x, n_samples, tau, n_iters, tol, noise_scale, seed, offset, hard, count):
    """``(y, iters)``: the samples of ``x`` ``(*batch, n, n)``, or with ``hard``
    the perturbed weights, ``(*batch, n_samples, n, n)``; with ``count`` the
    iterations run on each matrix (uint32 ``(*batch, n_samples)``), else None."""
    *batch, n, _ = x.shape
    y = torch.empty((*batch, n_samples, n, n), dtype=x.dtype)
    iters = torch.empty((*batch, n_samples), dtype=torch.uint32) if count else None
    soft, perturbed = (None, y) if hard else (y, None)
    try:
        _core.gumbel_sinkhorn_forward(_np(x), (math.prod(batch), n_samples, n),
                                      (tau, noise_scale, n_iters, tol), (seed, offset),
                                      _opt(soft), _opt(perturbed), _opt(iters))
    except _core.KernelError as e:
        raise perturbation_overflow(fn, e, y.shape, x.dtype) from None
    return y, iters


def gumbel_sinkhorn_backward(grad, x, iters, tau, noise_scale, seed, offset):
    """The gradient of ``x`` given ``grad``, that of the samples, and the
    forward's iteration counts ``iters``."""
    *batch, n, _ = x.shape
    out = torch.empty_like(x)
    _core.gumbel_sinkhorn_backward(_np(x), (math.prod(batch), grad.shape[-3], n),
                                   (tau, noise_scale, 0, None), (seed, offset), _np(iters),
                                   _np(grad), _np(out))
    return out
