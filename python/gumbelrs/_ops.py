"""The differentiable ops: ``torch.autograd.Function``s over custom ops.

Each kernel is registered as a ``torch.library`` custom op (namespace
``gumbelrs``) with a fake implementation, so code that calls it compiles
under ``torch.compile(fullgraph=True)``. In eager mode the Functions call the
backend directly (the custom-op dispatcher costs ~10 us a call, as much as a
small kernel); while compiling they call the custom ops. Both reach the same
backend functions through ``_dispatch``.

A *stream* is what a call draws from: ``(seed, offset)`` ints in eager mode,
or the int64 tensor returned by ``gumbelrs::advance`` while compiling.

This module deliberately avoids ``from __future__ import annotations``:
``torch.library`` reads the annotations to infer the op schemas.
"""

import threading
from typing import Optional, Union

import torch
from torch import Tensor

from . import _dispatch
from ._generator import Generator

_U64 = (1 << 64) - 1
_advance_lock = threading.Lock()

Stream = Union[tuple, Tensor]


def _compiling() -> bool:
    """Whether a graph is being recorded (``torch.compile`` or ``torch.jit.trace``):
    then calls go through the custom ops, which the graph records, instead
    of straight to the backend, which it would not see."""
    return torch.compiler.is_compiling() or torch._C._is_tracing()


def _needs_grad(x: Tensor, tau: Optional[Tensor]) -> bool:
    """Whether the op must record autograd (logits or temperature need a
    gradient). Always while tracing: the trace is one graph for every call,
    and ``check_trace`` re-traces without gradients."""
    wanted = x.requires_grad or (tau is not None and tau.requires_grad)
    # torch._C._is_tracing is torch.jit.is_tracing without its wrapper (52 ns, not 127).
    return (torch.is_grad_enabled() and wanted) or torch._C._is_tracing()


def take(gen: Generator) -> Stream:
    """The stream of one call, advancing ``gen``."""
    if _compiling():
        return torch.ops.gumbelrs.advance(gen._state)
    return gen._advance()


def _unpack(so: Tensor) -> tuple:
    seed, offset = so.tolist()
    return seed & _U64, offset


@torch.library.custom_op("gumbelrs::advance", mutates_args={"state"})
def _advance(state: Tensor) -> Tensor:
    with _advance_lock:
        old = state.clone()
        state[1] += 1
    return old


@_advance.register_fake
def _(state):
    return torch.empty_like(state)


# ------------------------------------------------------------------ noise


@torch.library.custom_op("gumbelrs::noise", mutates_args=())
def _noise_op(kind: str, shape: list[int], dtype: torch.dtype, device: torch.device,
              so: Tensor) -> Tensor:
    return _dispatch.backend(device).noise(kind, shape, dtype, device, *_unpack(so))


@_noise_op.register_fake
def _(kind, shape, dtype, device, so):
    return torch.empty(shape, dtype=dtype, device=device)


def noise(kind: str, shape: list, dtype: torch.dtype, device: torch.device, stream: Stream):
    if isinstance(stream, Tensor):
        return torch.ops.gumbelrs.noise(kind, shape, dtype, device, stream)
    return _dispatch.backend(device).noise(kind, shape, dtype, device, *stream)


# ---------------------------------------------------------- Gumbel-Softmax


@torch.library.custom_op("gumbelrs::gumbel_softmax", mutates_args=())
def _gs_op(fn: str, x: Tensor, dim: int, tau: float, tau_rows: Optional[Tensor],
           so: Tensor) -> Tensor:
    b = _dispatch.backend(x.device)
    return b.gumbel_softmax(fn, x, dim, tau, tau_rows, *_unpack(so), False)[0]


@_gs_op.register_fake
def _(fn, x, dim, tau, tau_rows, so):
    return torch.empty_like(x)


@torch.library.custom_op("gumbelrs::gumbel_softmax_hard", mutates_args=())
def _gs_hard_op(fn: str, x: Tensor, dim: int, tau: float, tau_rows: Optional[Tensor],
                so: Tensor) -> tuple[Tensor, Tensor]:
    b = _dispatch.backend(x.device)
    return b.gumbel_softmax(fn, x, dim, tau, tau_rows, *_unpack(so), True)


@_gs_hard_op.register_fake
def _(fn, x, dim, tau, tau_rows, so):
    return torch.empty_like(x), torch.empty_like(x)


@torch.library.custom_op("gumbelrs::gumbel_softmax_backward", mutates_args=())
def _gs_bwd_op(grad: Tensor, y: Tensor, dim: int, tau: float,
               tau_rows: Optional[Tensor]) -> Tensor:
    return _dispatch.backend(y.device).gumbel_softmax_backward(grad, y, dim, tau, tau_rows)


@_gs_bwd_op.register_fake
def _(grad, y, dim, tau, tau_rows):
    return torch.empty_like(y)


def _gs_forward(x, dim, tau, tau_rows, stream, hard, fn, need_soft=True):
    """``(y, soft)``: the output and the soft sample (the same tensor when
    soft; None when hard and not ``need_soft``)."""
    if isinstance(stream, Tensor):
        if hard:
            return torch.ops.gumbelrs.gumbel_softmax_hard(fn, x, dim, tau, tau_rows, stream)
        y = torch.ops.gumbelrs.gumbel_softmax(fn, x, dim, tau, tau_rows, stream)
        return y, y
    b = _dispatch.backend(x.device)
    y, soft = b.gumbel_softmax(fn, x, dim, tau, tau_rows, *stream, hard, need_soft)
    return y, (y if not hard else soft)


class GumbelSoftmax(torch.autograd.Function):
    """Soft or straight-through hard Gumbel-Softmax; the gradient always
    flows through the soft sample: ``y * (g - sum(g * y)) / tau``."""

    @staticmethod
    def forward(ctx, x, dim, tau, tau_rows, stream, hard, fn):
        y, soft = _gs_forward(x, dim, tau, tau_rows, stream, hard, fn)
        ctx.save_for_backward(soft, tau_rows)
        ctx.dim, ctx.tau = dim, tau
        return y

    @staticmethod
    def backward(ctx, grad):
        soft, tau_rows = ctx.saved_tensors
        grad = grad.contiguous()
        if _compiling():
            gx = torch.ops.gumbelrs.gumbel_softmax_backward(grad, soft, ctx.dim, ctx.tau, tau_rows)
        else:
            b = _dispatch.backend(soft.device)
            gx = b.gumbel_softmax_backward(grad, soft, ctx.dim, ctx.tau, tau_rows)
        g_tau = None
        if ctx.needs_input_grad[3]:
            # y = softmax(h), h = w / tau: dL/dtau = -sum_i dL/dw_i * h_i, and
            # h_i = log y_i up to a constant that cancels (sum_i dL/dw_i = 0).
            log_y = torch.where(soft > 0, soft.log(), torch.zeros_like(soft))
            g_tau = -(gx * log_y).sum(ctx.dim)
        return gx, None, None, g_tau, None, None, None


def gumbel_softmax(x, dim, tau, tau_rows, stream, hard, fn):
    """The op, through autograd only when a gradient is needed."""
    if _needs_grad(x, tau_rows):
        return GumbelSoftmax.apply(x, dim, tau, tau_rows, stream, hard, fn)
    return _gs_forward(x, dim, tau, tau_rows, stream, hard, fn, need_soft=False)[0]


# ----------------------------------------------------- categorical draws


@torch.library.custom_op("gumbelrs::sample_categorical", mutates_args=())
def _categorical_op(fn: str, x: Tensor, dim: int, num_samples: int, so: Tensor) -> Tensor:
    return _dispatch.backend(x.device).sample_categorical(fn, x, dim, num_samples, *_unpack(so))


@_categorical_op.register_fake
def _(fn, x, dim, num_samples, so):
    batch = [n for i, n in enumerate(x.shape) if i != dim]
    return x.new_empty((*batch, num_samples), dtype=torch.int64)


def sample_categorical(fn, x, dim, num_samples, stream):
    if isinstance(stream, Tensor):
        return torch.ops.gumbelrs.sample_categorical(fn, x, dim, num_samples, stream)
    return _dispatch.backend(x.device).sample_categorical(fn, x, dim, num_samples, *stream)


@torch.library.custom_op("gumbelrs::gumbel_topk", mutates_args=())
def _topk_op(fn: str, x: Tensor, dim: int, k: int, so: Tensor) -> Tensor:
    return _dispatch.backend(x.device).gumbel_topk(fn, x, dim, k, *_unpack(so))


@_topk_op.register_fake
def _(fn, x, dim, k, so):
    shape = list(x.shape)
    shape[dim] = k
    return x.new_empty(shape, dtype=torch.int64)


def gumbel_topk(fn, x, dim, k, stream):
    if isinstance(stream, Tensor):
        return torch.ops.gumbelrs.gumbel_topk(fn, x, dim, k, stream)
    return _dispatch.backend(x.device).gumbel_topk(fn, x, dim, k, *stream)


@torch.library.custom_op("gumbelrs::gumbel_given_argmax", mutates_args=())
def _given_argmax_op(fn: str, x: Tensor, dim: int, index: Tensor, num_samples: int,
                     so: Tensor) -> Tensor:
    b = _dispatch.backend(x.device)
    return b.gumbel_given_argmax(fn, x, dim, index, num_samples, *_unpack(so))


@_given_argmax_op.register_fake
def _(fn, x, dim, index, num_samples, so):
    return x.new_empty((num_samples, *x.shape))


def gumbel_given_argmax(fn, x, dim, index, num_samples, stream):
    if isinstance(stream, Tensor):
        return torch.ops.gumbelrs.gumbel_given_argmax(fn, x, dim, index, num_samples, stream)
    b = _dispatch.backend(x.device)
    return b.gumbel_given_argmax(fn, x, dim, index, num_samples, *stream)


# ------------------------------------------------------ relaxed Bernoulli


@torch.library.custom_op("gumbelrs::relaxed_bernoulli", mutates_args=())
def _rb_op(fn: str, x: Tensor, tau: float, tau_elems: Optional[Tensor], so: Tensor) -> Tensor:
    b = _dispatch.backend(x.device)
    return b.relaxed_bernoulli(fn, x, tau, tau_elems, *_unpack(so), False)[0]


@_rb_op.register_fake
def _(fn, x, tau, tau_elems, so):
    return torch.empty_like(x)


@torch.library.custom_op("gumbelrs::relaxed_bernoulli_hard", mutates_args=())
def _rb_hard_op(fn: str, x: Tensor, tau: float, tau_elems: Optional[Tensor],
                so: Tensor) -> tuple[Tensor, Tensor]:
    b = _dispatch.backend(x.device)
    return b.relaxed_bernoulli(fn, x, tau, tau_elems, *_unpack(so), True)


@_rb_hard_op.register_fake
def _(fn, x, tau, tau_elems, so):
    return torch.empty_like(x), torch.empty_like(x)


@torch.library.custom_op("gumbelrs::relaxed_bernoulli_backward", mutates_args=())
def _rb_bwd_op(grad: Tensor, y: Tensor, tau: float, tau_elems: Optional[Tensor]) -> Tensor:
    return _dispatch.backend(y.device).relaxed_bernoulli_backward(grad, y, tau, tau_elems)


@_rb_bwd_op.register_fake
def _(grad, y, tau, tau_elems):
    return torch.empty_like(y)


def _rb_forward(x, tau, tau_elems, stream, hard, fn):
    """``(y, soft)``: the output and the soft sample (the same tensor when soft)."""
    if isinstance(stream, Tensor):
        if hard:
            return torch.ops.gumbelrs.relaxed_bernoulli_hard(fn, x, tau, tau_elems, stream)
        y = torch.ops.gumbelrs.relaxed_bernoulli(fn, x, tau, tau_elems, stream)
        return y, y
    y, soft = _dispatch.backend(x.device).relaxed_bernoulli(fn, x, tau, tau_elems, *stream, hard)
    return y, (y if soft is None else soft)


class RelaxedBernoulli(torch.autograd.Function):
    """Binary Concrete sample, soft or straight-through hard; the gradient
    flows through the soft sample: ``g * y * (1 - y) / tau``."""

    @staticmethod
    def forward(ctx, x, tau, tau_elems, stream, hard, fn):
        y, soft = _rb_forward(x, tau, tau_elems, stream, hard, fn)
        ctx.save_for_backward(soft, tau_elems)
        ctx.tau = tau
        return y

    @staticmethod
    def backward(ctx, grad):
        soft, tau_elems = ctx.saved_tensors
        grad = grad.contiguous()
        if _compiling():
            gx = torch.ops.gumbelrs.relaxed_bernoulli_backward(grad, soft, ctx.tau, tau_elems)
        else:
            b = _dispatch.backend(soft.device)
            gx = b.relaxed_bernoulli_backward(grad, soft, ctx.tau, tau_elems)
        g_tau = None
        if ctx.needs_input_grad[2]:
            # y = sigmoid(z), z = w / tau: dL/dtau = -dL/dw * z, z = logit(y).
            inside = (soft > 0) & (soft < 1)
            z = torch.where(inside, soft.log() - (-soft).log1p(), torch.zeros_like(soft))
            g_tau = -(gx * z)
        return gx, None, g_tau, None, None, None


def relaxed_bernoulli(x, tau, tau_elems, stream, hard, fn):
    """The op, through autograd only when a gradient is needed."""
    if _needs_grad(x, tau_elems):
        return RelaxedBernoulli.apply(x, tau, tau_elems, stream, hard, fn)
    return _rb_forward(x, tau, tau_elems, stream, hard, fn)[0]


# ----------------------------------------------------------- Hard Concrete


@torch.library.custom_op("gumbelrs::hard_concrete", mutates_args=())
def _hc_op(fn: str, x: Tensor, tau: float, tau_elems: Optional[Tensor], lo: float, hi: float,
           so: Tensor) -> Tensor:
    b = _dispatch.backend(x.device)
    return b.hard_concrete(fn, x, tau, tau_elems, (lo, hi), *_unpack(so))


@_hc_op.register_fake
def _(fn, x, tau, tau_elems, lo, hi, so):
    return torch.empty_like(x)


@torch.library.custom_op("gumbelrs::hard_concrete_backward", mutates_args=())
def _hc_bwd_op(grad: Tensor, z: Tensor, tau: float, tau_elems: Optional[Tensor], lo: float,
               hi: float) -> Tensor:
    b = _dispatch.backend(z.device)
    return b.hard_concrete_backward(grad, z, tau, tau_elems, (lo, hi))


@_hc_bwd_op.register_fake
def _(grad, z, tau, tau_elems, lo, hi):
    return torch.empty_like(z)


def _hc_forward(x, tau, tau_elems, limits, stream, fn):
    if isinstance(stream, Tensor):
        lo, hi = limits
        return torch.ops.gumbelrs.hard_concrete(fn, x, tau, tau_elems, lo, hi, stream)
    return _dispatch.backend(x.device).hard_concrete(fn, x, tau, tau_elems, limits, *stream)


class HardConcrete(torch.autograd.Function):
    """Hard Concrete sample; gradient zero where the sample was clamped."""

    @staticmethod
    def forward(ctx, x, tau, tau_elems, limits, stream, fn):
        z = _hc_forward(x, tau, tau_elems, limits, stream, fn)
        ctx.save_for_backward(z, tau_elems)
        ctx.tau, ctx.limits = tau, limits
        return z

    @staticmethod
    def backward(ctx, grad):
        z, tau_elems = ctx.saved_tensors
        grad = grad.contiguous()
        lo, hi = ctx.limits
        if _compiling():
            gx = torch.ops.gumbelrs.hard_concrete_backward(grad, z, ctx.tau, tau_elems, lo, hi)
        else:
            b = _dispatch.backend(z.device)
            gx = b.hard_concrete_backward(grad, z, ctx.tau, tau_elems, (lo, hi))
        return gx, None, None, None, None, None


def hard_concrete(x, tau, tau_elems, limits, stream, fn):
    """The op, through autograd only when a gradient is needed."""
    if _needs_grad(x, tau_elems):
        return HardConcrete.apply(x, tau, tau_elems, limits, stream, fn)
    return _hc_forward(x, tau, tau_elems, limits, stream, fn)
