"""The differentiable ops: ``torch.autograd.Function``s over custom ops.

Each kernel is registered as a ``torch.library`` custom op (namespace
``gumbelrs``) with a fake implementation, so code that calls it compiles
under ``torch.compile(fullgraph=True)``. In eager mode the Functions call the
backend directly (the custom-op dispatcher costs ~10 us a call, as much as a
small kernel); while compiling they call the custom ops. Both reach the same
backend functions through ``_dispatch``.

A *stream* is what a call draws from: ``(seed, offset)`` ints in eager mode,
or an int64 tensor ``[seed, offset]`` while compiling. ``generator=None``
draws a fresh seed (offset 0) from torch's default CPU generator each call,
so torch's seeding, ``get_rng_state``/``set_rng_state``, ``fork_rng`` and
activation checkpointing (which restores that state before recomputing)
replay it, as they replay torch's own sampling ops.

Under ``torch.func`` transforms every op goes through its Function, whose
``vmap`` rule follows the transform's randomness mode (see :func:`_vmap_rule`),
whose ``jvp`` rule gives forward-mode derivatives, and whose backward is
written in torch ops whenever it must itself be differentiated or
transformed (double backward, ``grad``, ``vmap`` of ``grad``).

This module deliberately avoids ``from __future__ import annotations``:
``torch.library`` reads the annotations to infer the op schemas.
"""

import threading
from typing import Callable, Optional, Union

import torch
from torch import Tensor
from torch.autograd import forward_ad

from . import _dispatch, _reference
from ._generator import Generator, replaying

_U64 = (1 << 64) - 1
_advance_lock = threading.Lock()
#: Per thread: ``key``, the int64 tensor torch's generator draws default-stream seeds into.
_local = threading.local()
#: The generator of the (empty) randomness probes of :func:`_token`: a private
#: one, so that probing leaves torch's default generator alone.
_probe = torch.Generator()
#: Counts the seeds compiled code drew from torch's generator. The custom op
#: that draws them mutates it, which keeps compilers from merging or dropping
#: two draws (``nondeterministic_seeded`` tags on custom ops need torch 2.7).
_TORCH_DRAWS = torch.zeros(1, dtype=torch.int64)

Stream = Union[tuple, Tensor]


def _compiling() -> bool:
    """Whether a graph is being recorded (``torch.compile`` or ``torch.jit.trace``):
    then calls go through the custom ops, which the graph records, instead
    of straight to the backend, which it would not see."""
    return torch.compiler.is_compiling() or torch._C._is_tracing()


def _transformed() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jvp, ...) is active (36 ns)."""
    return torch._C._are_functorch_transforms_active()


def _forward_mode() -> bool:
    """Whether a forward-mode AD level is open: inputs may carry tangents,
    which only the ops' Functions see."""
    return forward_ad._current_level >= 0


def _needs_grad(x: Tensor, tau: Optional[Tensor]) -> bool:
    """Whether the op must record autograd (logits or temperature need a
    gradient). Always while tracing: the trace is one graph for every call,
    and ``check_trace`` re-traces without gradients."""
    wanted = x.requires_grad or (tau is not None and tau.requires_grad)
    # torch._C._is_tracing is torch.jit.is_tracing without its wrapper (52 ns, not 127).
    return (torch.is_grad_enabled() and wanted) or torch._C._is_tracing()


def _torch_seed() -> int:
    """A seed drawn from torch's default CPU generator (63 bits; 1.4 us)."""
    key = getattr(_local, "key", None)
    if key is None:
        key = _local.key = torch.empty((), dtype=torch.int64)
    if _transformed():
        # One seed per call, also inside vmap: the vmap rules decide how the
        # call's noise is shared (an in-place draw would be vmap's business).
        with torch._C._DisableFuncTorch():
            return int(key.random_())
    return int(key.random_())


def replayable(gen: Optional[Generator]) -> Generator:
    """``gen``, or for None a new Generator seeded from torch's default
    generator (one draw, as a call would make): for callers that draw the
    same noise twice by copying a generator's state."""
    return gen if gen is not None else Generator(_torch_seed())


def take(gen: Optional[Generator], fn: str) -> Stream:
    """The stream of one call: advances ``gen``, or draws from torch's
    generator when ``gen`` is None."""
    if _compiling():
        if gen is None:
            return torch.ops.gumbelrs.torch_stream(_TORCH_DRAWS)
        return torch.ops.gumbelrs.advance(gen._state)
    if gen is None:
        return _torch_seed(), 0
    if torch._C._current_graph_task_id() != -1 and not replaying(gen):
        raise RuntimeError(
            f"{fn}: drawing from a gumbelrs.Generator during a backward pass, as "
            "torch.utils.checkpoint does when it recomputes a forward: the recompute would "
            "draw the generator's next noise, not the forward's, and the gradient would belong "
            "to another sample. Inside checkpointed code use generator=None (it follows torch's "
            "RNG state, which checkpoint restores), or checkpoint with use_reentrant=False and "
            "context_fn=gumbelrs.checkpoint_context(generator)"
        )
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


@torch.library.custom_op("gumbelrs::torch_stream", mutates_args={"draws"})
def _torch_stream(draws: Tensor) -> Tensor:
    draws += 1
    return torch.tensor([_torch_seed(), 0], dtype=torch.int64)


@_torch_stream.register_fake
def _(draws):
    return torch.empty(2, dtype=torch.int64)


# ------------------------------------------------------------- transforms


def _token(fn: str) -> Optional[Tensor]:
    """An empty tensor that ``vmap`` batches exactly at its levels whose
    randomness is ``"different"``; in ``"error"`` mode making it raises torch's
    own randomness error. Passed to every op under ``torch.func`` transforms,
    so that each op's vmap rule runs wherever fresh noise is wanted, even
    when no input is batched there (``vmap`` skips rules whose inputs are not).
    Refuses ``functionalize``, which torch cannot apply to the ops' Functions.
    None outside ``torch.func`` (in forward mode alone)."""
    if not _transformed():
        return None
    functionalize = torch._C._functorch.TransformType.Functionalize
    if any(i.key() == functionalize for i in torch._C._functorch.get_interpreter_stack()):
        raise RuntimeError(
            f"{fn}: torch.func.functionalize is not supported: under torch.func transforms "
            "gumbelrs ops are torch.autograd.Functions, which torch cannot functionalize; "
            "torch.compile and torch.export record them as custom ops instead"
        )
    return torch.rand(0, generator=_probe)


def _element(t: Optional[Tensor], bdim: Optional[int], b: int) -> Optional[Tensor]:
    return t if t is None or bdim is None else t.select(bdim, b)


def _stacked(t: Optional[Tensor], bdim: Optional[int], size: int) -> Optional[Tensor]:
    """``t`` with the vmapped dimension first, contiguous (as the kernels read
    it); broadcast to ``size`` where ``t`` is not batched."""
    if t is None:
        return None
    t = t.expand(size, *t.shape) if bdim is None else t.movedim(bdim, 0)
    return t.contiguous()


def _vmap_rule(info, in_dims, tensors, call, out_dim=0):
    """How every op is vmapped (``in_dims[0]`` is the token's).

    ``"different"``: one call of the op on the stacked batch (``call(*tensors,
    batch=B)`` with the vmapped dimension first): element ``b`` gets block
    ``b`` of that call's noise, exactly what the un-vmapped op gives
    ``torch.stack`` of the elements, and the generator advances once.
    ``"same"``: ``call(*element_b, batch=None)`` for each element with the
    same stream, so every element gets the noise of one un-vmapped call.
    ``call`` routes as an eager call would (a new token, batched by the
    levels below, if any), so a vmap of plain tensors ends in the kernels.
    """
    dims = in_dims[1:]
    if info.randomness == "different":
        out = call(*(_stacked(t, d, info.batch_size) for t, d in zip(tensors, dims)),
                   batch=info.batch_size)
    else:
        outs = [call(*(_element(t, d, b) for t, d in zip(tensors, dims)), batch=None)
                for b in range(info.batch_size)]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(o) for o in zip(*outs)), (0,) * len(outs[0])
        return torch.stack(outs), 0
    if isinstance(out, tuple):
        return out, (out_dim,) * len(out)
    return out, out_dim


def _grads(grads: tuple) -> Optional[Tensor]:
    """The gradient of a sample: straight-through outputs add that of their soft sample."""
    g = grads[0]
    for h in grads[1:]:
        if h is not None:
            g = h if g is None else g + h
    return g


def _plain_backward() -> bool:
    """Whether a backward may run the native kernel: not while its result
    must be differentiated (``create_graph``) or transformed."""
    return not (torch.is_grad_enabled() or _transformed())


def _log_inside(y: Tensor) -> Tensor:
    """``log y`` where ``y > 0``, else 0 (the categories the sample cannot
    reach). The log never sees a 0, so its derivative is never ``0 * inf``."""
    return torch.where(y > 0, y, torch.ones_like(y)).log()


def _logit_inside(y: Tensor) -> Tensor:
    """``logit y`` where ``0 < y < 1``, else 0 (saturated gates; logit(1/2) = 0)."""
    s = torch.where((y > 0) & (y < 1), y, torch.full_like(y, 0.5))
    return s.log() - (-s).log1p()


# ------------------------------------------------------------------ noise


@torch.library.custom_op("gumbelrs::noise", mutates_args=())
def _noise_op(kind: str, shape: list[int], dtype: torch.dtype, device: torch.device,
              so: Tensor) -> Tensor:
    return _dispatch.backend(device).noise(kind, shape, dtype, device, *_unpack(so))


@_noise_op.register_fake
def _(kind, shape, dtype, device, so):
    return torch.empty(shape, dtype=dtype, device=device)


def _noise(kind, shape, dtype, device, stream):
    if isinstance(stream, Tensor):
        return torch.ops.gumbelrs.noise(kind, shape, dtype, device, stream)
    return _dispatch.backend(device).noise(kind, shape, dtype, device, *stream)


class _Draw(torch.autograd.Function):
    """The base of the draws that have no gradient (noise, indices, conditioned
    Gumbels): Functions only so that ``torch.func`` finds their vmap rules."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass


class _Noise(_Draw):
    """Noise under transforms (it has no input a transform could see)."""

    @staticmethod
    def forward(token, kind, shape, dtype, device, stream):
        return _noise(kind, shape, dtype, device, stream)

    @staticmethod
    def vmap(info, in_dims, token, kind, shape, dtype, device, stream):
        def call(batch):
            return noise(kind, shape if batch is None else [batch, *shape], dtype, device, stream)

        return _vmap_rule(info, in_dims, (), call)


def noise(kind: str, shape: list, dtype: torch.dtype, device: torch.device, stream: Stream):
    if _transformed():
        return _Noise.apply(_token(f"{kind}_noise"), kind, shape, dtype, device, stream)
    return _noise(kind, shape, dtype, device, stream)


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


def _gs_vjp(g: Tensor, y: Tensor, dim: int, tau: float, tau_rows: Optional[Tensor]) -> Tensor:
    """``y * (g - sum(g * y)) / tau``, the gradient of the logits."""
    if _compiling():
        return torch.ops.gumbelrs.gumbel_softmax_backward(g.contiguous(), y, dim, tau, tau_rows)
    if _plain_backward():
        b = _dispatch.backend(y.device)
        return b.gumbel_softmax_backward(g.contiguous(), y, dim, tau, tau_rows)
    t = tau if tau_rows is None else tau_rows.unsqueeze(dim)
    return y * (g - (g * y).sum(dim, keepdim=True)) / t


def _gs_save(ctx, output, tau_rows, dim, tau, hard, forward_mode):
    soft = output[1] if hard else output
    ctx.save_for_backward(soft, tau_rows)
    if forward_mode:
        ctx.save_for_forward(soft, tau_rows)
    ctx.dim, ctx.tau, ctx.hard = dim, tau, hard
    ctx.set_materialize_grads(False)


def _gs_backward(ctx, *grads):
    soft, tau_rows = ctx.saved_tensors
    g = _grads(grads)
    if g is None:
        return (None,) * 8
    gx = _gs_vjp(g, soft, ctx.dim, ctx.tau, tau_rows)
    g_tau = None
    if ctx.needs_input_grad[2]:
        # y = softmax(h), h = w / tau: dL/dtau = -sum_i dL/dw_i * h_i, and
        # h_i = log y_i up to a constant that cancels (sum_i dL/dw_i = 0).
        g_tau = -(gx * _log_inside(soft)).sum(ctx.dim)
    return None, gx, g_tau, None, None, None, None, None


class _GumbelSoftmax(torch.autograd.Function):
    """Soft or straight-through hard Gumbel-Softmax; the gradient always
    flows through the soft sample: ``y * (g - sum(g * y)) / tau``.

    Hard mode returns ``(one_hot, soft)``: the soft sample is an output so
    that a double backward sees how it depends on the logits. Eager calls and
    compiled code use this class; :class:`GumbelSoftmax` is the same op for
    ``torch.func`` and forward mode. (Its ``setup_context`` form costs 25 us a
    call in argument binding, and Dynamo refuses a Function with a ``jvp``.)"""

    @staticmethod
    def forward(ctx, token, x, tau_rows, dim, tau, stream, hard, fn):
        y, soft = _gs_forward(x, dim, tau, tau_rows, stream, hard, fn)
        out = (y, soft) if hard else y
        _gs_save(ctx, out, tau_rows, dim, tau, hard, False)
        return out

    backward = staticmethod(_gs_backward)


class GumbelSoftmax(torch.autograd.Function):
    """:class:`_GumbelSoftmax` with forward-mode derivatives and a vmap rule."""

    @staticmethod
    def forward(token, x, tau_rows, dim, tau, stream, hard, fn):
        y, soft = _gs_forward(x, dim, tau, tau_rows, stream, hard, fn)
        return (y, soft) if hard else y

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, _, tau_rows, dim, tau, _, hard, _ = inputs
        _gs_save(ctx, output, tau_rows, dim, tau, hard, True)

    backward = staticmethod(_gs_backward)

    @staticmethod
    def jvp(ctx, _token, dx, dtau, *_):
        soft, tau_rows = ctx.saved_tensors
        t = ctx.tau if tau_rows is None else tau_rows.unsqueeze(ctx.dim)
        # dh = dw / tau - h dtau / tau with h = log y up to a per-row constant,
        # which the projection below removes (sum y = 1).
        dh = torch.zeros_like(soft) if dx is None else dx / t
        if dtau is not None:
            dh = dh - _log_inside(soft) * (dtau.unsqueeze(ctx.dim) / t)
        dy = soft * (dh - (soft * dh).sum(ctx.dim, keepdim=True))
        return (dy, dy) if ctx.hard else dy

    @staticmethod
    def vmap(info, in_dims, token, x, tau_rows, dim, tau, stream, hard, fn):
        def call(x, tau_rows, batch):
            d = dim if batch is None else dim + 1
            return _gs_apply(x, d, tau, tau_rows, stream, hard, fn)

        return _vmap_rule(info, in_dims, (x, tau_rows), call)


def _gs_apply(x, dim, tau, tau_rows, stream, hard, fn):
    """The Function's outputs (``(one_hot, soft)`` when hard) by the cheapest
    route that records what is needed: under ``torch.func`` or forward mode,
    for autograd, or neither."""
    if _transformed() or _forward_mode():
        return GumbelSoftmax.apply(_token(fn), x, tau_rows, dim, tau, stream, hard, fn)
    if _needs_grad(x, tau_rows):
        return _GumbelSoftmax.apply(None, x, tau_rows, dim, tau, stream, hard, fn)
    y, soft = _gs_forward(x, dim, tau, tau_rows, stream, hard, fn)
    return (y, soft) if hard else y


def gumbel_softmax(x, dim, tau, tau_rows, stream, hard, fn):
    """The op; without autograd or transforms, hard mode skips the soft sample."""
    if not (_transformed() or _forward_mode() or _needs_grad(x, tau_rows)):
        return _gs_forward(x, dim, tau, tau_rows, stream, hard, fn, need_soft=False)[0]
    y = _gs_apply(x, dim, tau, tau_rows, stream, hard, fn)
    return y[0] if hard else y


# ----------------------------------------------------- categorical draws


@torch.library.custom_op("gumbelrs::sample_categorical", mutates_args=())
def _categorical_op(fn: str, x: Tensor, dim: int, num_samples: int, so: Tensor) -> Tensor:
    return _dispatch.backend(x.device).sample_categorical(fn, x, dim, num_samples, *_unpack(so))


@_categorical_op.register_fake
def _(fn, x, dim, num_samples, so):
    batch = [n for i, n in enumerate(x.shape) if i != dim]
    return x.new_empty((*batch, num_samples), dtype=torch.int64)


def _sample_categorical(fn, x, dim, num_samples, stream):
    if isinstance(stream, Tensor):
        return torch.ops.gumbelrs.sample_categorical(fn, x, dim, num_samples, stream)
    return _dispatch.backend(x.device).sample_categorical(fn, x, dim, num_samples, *stream)


class _Categorical(_Draw):
    @staticmethod
    def forward(token, x, dim, num_samples, stream, fn):
        return _sample_categorical(fn, x, dim, num_samples, stream)

    @staticmethod
    def vmap(info, in_dims, token, x, dim, num_samples, stream, fn):
        def call(x, batch):
            return sample_categorical(fn, x, dim if batch is None else dim + 1, num_samples,
                                      stream)

        return _vmap_rule(info, in_dims, (x,), call)


def sample_categorical(fn, x, dim, num_samples, stream):
    if _transformed():
        return _Categorical.apply(_token(fn), x, dim, num_samples, stream, fn)
    return _sample_categorical(fn, x, dim, num_samples, stream)


@torch.library.custom_op("gumbelrs::gumbel_topk", mutates_args=())
def _topk_op(fn: str, x: Tensor, dim: int, k: int, so: Tensor) -> Tensor:
    return _dispatch.backend(x.device).gumbel_topk(fn, x, dim, k, *_unpack(so))


@_topk_op.register_fake
def _(fn, x, dim, k, so):
    shape = list(x.shape)
    shape[dim] = k
    return x.new_empty(shape, dtype=torch.int64)


def _gumbel_topk(fn, x, dim, k, stream):
    if isinstance(stream, Tensor):
        return torch.ops.gumbelrs.gumbel_topk(fn, x, dim, k, stream)
    return _dispatch.backend(x.device).gumbel_topk(fn, x, dim, k, *stream)


class _TopK(_Draw):
    @staticmethod
    def forward(token, x, dim, k, stream, fn):
        return _gumbel_topk(fn, x, dim, k, stream)

    @staticmethod
    def vmap(info, in_dims, token, x, dim, k, stream, fn):
        def call(x, batch):
            return gumbel_topk(fn, x, dim if batch is None else dim + 1, k, stream)

        return _vmap_rule(info, in_dims, (x,), call)


def gumbel_topk(fn, x, dim, k, stream):
    if _transformed():
        return _TopK.apply(_token(fn), x, dim, k, stream, fn)
    return _gumbel_topk(fn, x, dim, k, stream)


@torch.library.custom_op("gumbelrs::gumbel_given_argmax", mutates_args=())
def _given_argmax_op(fn: str, x: Tensor, dim: int, index: Tensor, num_samples: int,
                     so: Tensor) -> Tensor:
    b = _dispatch.backend(x.device)
    return b.gumbel_given_argmax(fn, x, dim, index, num_samples, *_unpack(so))


@_given_argmax_op.register_fake
def _(fn, x, dim, index, num_samples, so):
    return x.new_empty((num_samples, *x.shape))


def _gumbel_given_argmax(fn, x, dim, index, num_samples, stream):
    if isinstance(stream, Tensor):
        return torch.ops.gumbelrs.gumbel_given_argmax(fn, x, dim, index, num_samples, stream)
    b = _dispatch.backend(x.device)
    return b.gumbel_given_argmax(fn, x, dim, index, num_samples, *stream)


class _GivenArgmax(_Draw):
    @staticmethod
    def forward(token, x, index, dim, num_samples, stream, fn):
        return _gumbel_given_argmax(fn, x, dim, index, num_samples, stream)

    @staticmethod
    def vmap(info, in_dims, token, x, index, dim, num_samples, stream, fn):
        def call(x, index, batch):
            d = dim if batch is None else dim + 1
            return gumbel_given_argmax(fn, x, d, index, num_samples, stream)

        # The draws come first: (num_samples, B, *shape).
        return _vmap_rule(info, in_dims, (x, index), call, out_dim=1)


def gumbel_given_argmax(fn, x, dim, index, num_samples, stream):
    if _transformed():
        return _GivenArgmax.apply(_token(fn), x, index, dim, num_samples, stream, fn)
    return _gumbel_given_argmax(fn, x, dim, index, num_samples, stream)


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


def _rb_vjp(g: Tensor, y: Tensor, tau: float, tau_elems: Optional[Tensor]) -> Tensor:
    """``g * y * (1 - y) / tau``, the gradient of the logits."""
    if _compiling():
        return torch.ops.gumbelrs.relaxed_bernoulli_backward(g.contiguous(), y, tau, tau_elems)
    if _plain_backward():
        b = _dispatch.backend(y.device)
        return b.relaxed_bernoulli_backward(g.contiguous(), y, tau, tau_elems)
    return g * (y * (1 - y)) / (tau if tau_elems is None else tau_elems)


def _rb_save(ctx, output, tau_elems, tau, hard, forward_mode):
    soft = output[1] if hard else output
    ctx.save_for_backward(soft, tau_elems)
    if forward_mode:
        ctx.save_for_forward(soft, tau_elems)
    ctx.tau, ctx.hard = tau, hard
    ctx.set_materialize_grads(False)


def _rb_backward(ctx, *grads):
    soft, tau_elems = ctx.saved_tensors
    g = _grads(grads)
    if g is None:
        return (None,) * 7
    gx = _rb_vjp(g, soft, ctx.tau, tau_elems)
    # y = sigmoid(z), z = w / tau: dL/dtau = -dL/dw * z, z = logit(y).
    g_tau = -(gx * _logit_inside(soft)) if ctx.needs_input_grad[2] else None
    return None, gx, g_tau, None, None, None, None


class _RelaxedBernoulli(torch.autograd.Function):
    """Binary Concrete sample, soft or straight-through hard; the gradient
    flows through the soft sample: ``g * y * (1 - y) / tau``. Hard mode
    returns ``(hard, soft)``; the classes are split as :class:`_GumbelSoftmax`'s."""

    @staticmethod
    def forward(ctx, token, x, tau_elems, tau, stream, hard, fn):
        y, soft = _rb_forward(x, tau, tau_elems, stream, hard, fn)
        out = (y, soft) if hard else y
        _rb_save(ctx, out, tau_elems, tau, hard, False)
        return out

    backward = staticmethod(_rb_backward)


class RelaxedBernoulli(torch.autograd.Function):
    """:class:`_RelaxedBernoulli` with forward-mode derivatives and a vmap rule."""

    @staticmethod
    def forward(token, x, tau_elems, tau, stream, hard, fn):
        y, soft = _rb_forward(x, tau, tau_elems, stream, hard, fn)
        return (y, soft) if hard else y

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, _, tau_elems, tau, _, hard, _ = inputs
        _rb_save(ctx, output, tau_elems, tau, hard, True)

    backward = staticmethod(_rb_backward)

    @staticmethod
    def jvp(ctx, _token, dx, dtau, *_):
        soft, tau_elems = ctx.saved_tensors
        t = ctx.tau if tau_elems is None else tau_elems
        dz = torch.zeros_like(soft) if dx is None else dx / t
        if dtau is not None:
            dz = dz - _logit_inside(soft) * (dtau / t)
        dy = soft * (1 - soft) * dz
        return (dy, dy) if ctx.hard else dy

    @staticmethod
    def vmap(info, in_dims, token, x, tau_elems, tau, stream, hard, fn):
        def call(x, tau_elems, batch):
            return _rb_apply(x, tau, tau_elems, stream, hard, fn)

        return _vmap_rule(info, in_dims, (x, tau_elems), call)


def _rb_apply(x, tau, tau_elems, stream, hard, fn):
    """The Function's outputs, routed as :func:`_gs_apply`'s."""
    if _transformed() or _forward_mode():
        return RelaxedBernoulli.apply(_token(fn), x, tau_elems, tau, stream, hard, fn)
    if _needs_grad(x, tau_elems):
        return _RelaxedBernoulli.apply(None, x, tau_elems, tau, stream, hard, fn)
    y, soft = _rb_forward(x, tau, tau_elems, stream, hard, fn)
    return (y, soft) if hard else y


def relaxed_bernoulli(x, tau, tau_elems, stream, hard, fn):
    """The op."""
    y = _rb_apply(x, tau, tau_elems, stream, hard, fn)
    return y[0] if hard else y


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


def _hc_slope(z: Tensor, tau: float, tau_elems: Optional[Tensor], limits: tuple) -> Tensor:
    """``dz/dlogits``: ``(hi - lo) s (1 - s) / tau`` with ``s = (z - lo) / (hi - lo)``
    where the sample was not clamped, 0 where it was."""
    lo, hi = limits
    s = (z - lo) / (hi - lo)
    slope = (hi - lo) * (s * (1 - s)) / (tau if tau_elems is None else tau_elems)
    return torch.where((z > 0) & (z < 1), slope, torch.zeros_like(z))


def _hc_save(ctx, z, tau_elems, tau, limits, fn, forward_mode):
    ctx.save_for_backward(z, tau_elems)
    if forward_mode:
        ctx.save_for_forward(z, tau_elems)
    ctx.tau, ctx.limits, ctx.fn = tau, limits, fn
    ctx.set_materialize_grads(False)  # a tau without a tangent gets None, not zeros


def _hc_backward(ctx, grad):
    z, tau_elems = ctx.saved_tensors
    lo, hi = ctx.limits
    if grad is None:
        return (None,) * 7
    if _compiling():
        gx = torch.ops.gumbelrs.hard_concrete_backward(grad.contiguous(), z, ctx.tau,
                                                       tau_elems, lo, hi)
    elif _plain_backward():
        b = _dispatch.backend(z.device)
        gx = b.hard_concrete_backward(grad.contiguous(), z, ctx.tau, tau_elems, (lo, hi))
    else:
        gx = grad * _hc_slope(z, ctx.tau, tau_elems, ctx.limits)
    return None, gx, None, None, None, None, None


class _HardConcrete(torch.autograd.Function):
    """Hard Concrete sample; gradient zero where the sample was clamped. The
    classes are split as :class:`_GumbelSoftmax`'s."""

    @staticmethod
    def forward(ctx, token, x, tau_elems, tau, limits, stream, fn):
        z = _hc_forward(x, tau, tau_elems, limits, stream, fn)
        _hc_save(ctx, z, tau_elems, tau, limits, fn, False)
        return z

    backward = staticmethod(_hc_backward)


class HardConcrete(torch.autograd.Function):
    """:class:`_HardConcrete` with forward-mode derivatives and a vmap rule."""

    @staticmethod
    def forward(token, x, tau_elems, tau, limits, stream, fn):
        return _hc_forward(x, tau, tau_elems, limits, stream, fn)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, _, tau_elems, tau, limits, _, fn = inputs
        _hc_save(ctx, output, tau_elems, tau, limits, fn, True)

    backward = staticmethod(_hc_backward)

    @staticmethod
    def jvp(ctx, _token, dx, dtau, *_):
        if dtau is not None:
            raise RuntimeError(f"{ctx.fn}: derivatives with respect to tau are not supported "
                               "(forward mode included); pass a tau without a tangent")
        z, tau_elems = ctx.saved_tensors
        if dx is None:
            return torch.zeros_like(z)
        return dx * _hc_slope(z, ctx.tau, tau_elems, ctx.limits)

    @staticmethod
    def vmap(info, in_dims, token, x, tau_elems, tau, limits, stream, fn):
        def call(x, tau_elems, batch):
            return hard_concrete(x, tau, tau_elems, limits, stream, fn)

        return _vmap_rule(info, in_dims, (x, tau_elems), call)


def hard_concrete(x, tau, tau_elems, limits, stream, fn):
    """The op, through autograd only when a gradient is needed or a transform is active."""
    if _transformed() or _forward_mode():
        return HardConcrete.apply(_token(fn), x, tau_elems, tau, limits, stream, fn)
    if _needs_grad(x, tau_elems):
        return _HardConcrete.apply(None, x, tau_elems, tau, limits, stream, fn)
    return _hc_forward(x, tau, tau_elems, limits, stream, fn)


# -------------------------------------------------------- Gumbel-Sinkhorn


@torch.library.custom_op("gumbelrs::gumbel_sinkhorn", mutates_args=())
def _sinkhorn_op(fn: str, x: Tensor, n_samples: int, tau: float, n_iters: int,
                 tol: Optional[float], noise_scale: float, so: Tensor, hard: bool,
                 count: bool) -> tuple[Tensor, Tensor]:
    b = _dispatch.backend(x.device)
    y, iters = b.gumbel_sinkhorn(fn, x, n_samples, tau, n_iters, tol, noise_scale, *_unpack(so),
                                 hard, count)
    return y, (x.new_empty(0, dtype=torch.uint32) if iters is None else iters)


@_sinkhorn_op.register_fake
def _(fn, x, n_samples, tau, n_iters, tol, noise_scale, so, hard, count):
    *batch, n, _ = x.shape
    counts = (*batch, n_samples) if count else (0,)
    return x.new_empty((*batch, n_samples, n, n)), x.new_empty(counts, dtype=torch.uint32)


@torch.library.custom_op("gumbelrs::gumbel_sinkhorn_backward", mutates_args=())
def _sinkhorn_bwd_op(grad: Tensor, x: Tensor, iters: Tensor, tau: float, noise_scale: float,
                     so: Tensor) -> Tensor:
    b = _dispatch.backend(x.device)
    return b.gumbel_sinkhorn_backward(grad, x, iters, tau, noise_scale, *_unpack(so))


@_sinkhorn_bwd_op.register_fake
def _(grad, x, iters, tau, noise_scale, so):
    return torch.empty_like(x)


def _sinkhorn_forward(x, n_samples, tau, n_iters, tol, noise_scale, stream, hard, count, fn):
    """``(y, iters)``: the samples (the perturbed weights when ``hard``) and, with
    ``count``, the iterations run on each matrix (else None)."""
    if isinstance(stream, Tensor):
        y, iters = torch.ops.gumbelrs.gumbel_sinkhorn(fn, x, n_samples, tau, n_iters, tol,
                                                     noise_scale, stream, hard, count)
        return y, (iters if count else None)
    b = _dispatch.backend(x.device)
    return b.gumbel_sinkhorn(fn, x, n_samples, tau, n_iters, tol, noise_scale, *stream, hard,
                             count)


def _sinkhorn_vjp(grad: Tensor, x: Tensor, iters: Tensor, tau: float, n_iters: int,
                  noise_scale: float, stream: Stream) -> Tensor:
    """The gradient of ``x``: the backward kernel, which reruns the forward; when
    it must itself be differentiated, the reference's torch ops on the same
    noise instead, differentiated by autograd."""
    if _compiling():
        return torch.ops.gumbelrs.gumbel_sinkhorn_backward(grad.contiguous(), x, iters, tau,
                                                           noise_scale, stream)
    stream = _unpack(stream) if isinstance(stream, Tensor) else stream
    if _plain_backward():
        b = _dispatch.backend(x.device)
        return b.gumbel_sinkhorn_backward(grad.contiguous(), x, iters, tau, noise_scale, *stream)
    g = noise("gumbel", list(grad.shape), x.dtype, x.device, stream)
    y, _ = _reference.gumbel_sinkhorn(x, g, tau, n_iters, noise_scale=noise_scale, iters=iters)
    return torch.autograd.grad(y, x, grad, create_graph=True)[0]


class _GumbelSinkhorn(torch.autograd.Function):
    """Gumbel-Sinkhorn samples or, with ``solve`` (hard mode), what ``solve``
    makes of the perturbed weights (the exact permutation matrices), with the
    samples' gradient either way. Saves the input (not a copy), the stream
    and the iteration counts (4 bytes a matrix): the backward recomputes the
    noise, the iterations and the samples."""

    @staticmethod
    def forward(ctx, x, n_samples, tau, n_iters, tol, noise_scale, stream, solve, fn):
        y, iters = _sinkhorn_forward(x, n_samples, tau, n_iters, tol, noise_scale, stream,
                                     solve is not None, True, fn)
        so = stream if isinstance(stream, Tensor) else None
        ctx.save_for_backward(x, iters, so)
        ctx.stream = stream if so is None else None
        ctx.tau, ctx.n_iters, ctx.noise_scale = tau, n_iters, noise_scale
        ctx.set_materialize_grads(False)
        return y if solve is None else solve(y)

    @staticmethod
    def backward(ctx, grad):
        x, iters, so = ctx.saved_tensors
        if grad is None:
            return (None,) * 9
        stream = ctx.stream if so is None else so
        gx = _sinkhorn_vjp(grad, x, iters, ctx.tau, ctx.n_iters, ctx.noise_scale, stream)
        return (gx,) + (None,) * 8


def gumbel_sinkhorn(x: Tensor, n_samples: int, tau: float, n_iters: int, tol: Optional[float],
                    noise_scale: float, stream: Stream,
                    solve: Optional[Callable[[Tensor], Tensor]], fn: str) -> Tensor:
    """The op, through autograd only when a gradient is needed; ``solve``
    (hard mode) turns the perturbed weights into the output."""
    if _needs_grad(x, None):
        return _GumbelSinkhorn.apply(x, n_samples, tau, n_iters, tol, noise_scale, stream,
                                     solve, fn)
    y, _ = _sinkhorn_forward(x, n_samples, tau, n_iters, tol, noise_scale, stream,
                             solve is not None, False, fn)
    return y if solve is None else solve(y)
