"""Differentiable wrappers of exact solvers: perturbed optimizers and the
Fenchel-Young loss (Berthet et al. 2020), and blackbox differentiation
(Vlastelica et al. 2020). See :mod:`gumbelrs.structured`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.autograd.function import once_differentiable

from .. import _cpu, _ops, _validate
from .._generator import Generator

#: The noise distributions :func:`perturbed` and :func:`fenchel_young_loss` know.
NOISES = ("gumbel", "normal")

Solver = Callable[[torch.Tensor], torch.Tensor]


def _solver(fn: str, solver: object) -> Solver:
    if not callable(solver):
        raise _validate.wrong_type(fn, "solver", "callable (a function theta -> y)", solver)
    return solver


def _name(solver: Solver) -> str:
    return getattr(solver, "__qualname__", None) or repr(solver)


def _no_nan(fn: str, name: str, x: torch.Tensor) -> None:
    bad = torch.isnan(x)
    if bad.any():
        at = bad.nonzero()[0].tolist()
        raise ValueError(f"{fn}: {name}{at} is nan; {name} must not be NaN")


def _batched(fn: str, theta: object) -> torch.Tensor:
    """``theta``: a floating-point tensor ``(batch, *shape)``, no NaN."""
    theta = _validate.logits(fn, theta, min_dim=0, name="theta")
    if theta.dim() < 2:
        raise ValueError(
            f"{fn}: theta must be a batch of instances (batch, *shape) with at least 2 "
            f"dimensions, its first the batch (the solver gets the samples stacked along it), "
            f"got a {theta.dim()}-d tensor of shape {tuple(theta.shape)}; pass theta[None] "
            "for one instance")
    _no_nan(fn, "theta", theta)
    return theta


def _solve(fn: str, solver: Solver, x: torch.Tensor, compute: torch.dtype) -> torch.Tensor:
    """``solver(x)`` detached, checked to have ``x``'s shape, in ``compute``."""
    with torch.no_grad():
        y = solver(x)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{fn}: solver must return a torch.Tensor, got {type(y).__name__}")
    if y.shape != x.shape:
        raise ValueError(f"{fn}: solver returned shape {tuple(y.shape)} for an input of shape "
                         f"{tuple(x.shape)}; it must return one solution the shape of its input")
    return y.detach().to(compute)


def _draw(kind: str, shape: list[int], dtype: torch.dtype, device: torch.device,
          stream: _ops.Stream, start: int | None = None) -> torch.Tensor:
    """Standard noise of ``kind``: the Gumbel kernel's values, or the normal
    quantiles of the uniforms it draws them from (the inverse CDF keeps the
    draw a pure function of the stream). With ``start`` (CPU, a ``(seed,
    offset)`` stream), element ``j`` is element ``start + j`` of the stream:
    a piece of a longer draw."""
    raw = "gumbel" if kind == "gumbel" else "uniform"
    if start is None:
        z = _ops.noise(raw, shape, dtype, device, stream)
    else:
        z = _cpu.noise(raw, shape, dtype, device, *stream, start=start)
    return z if kind == "gumbel" else torch.special.ndtri(z, out=z)


def _in_pieces(device: torch.device, numel: int, stream: _ops.Stream) -> bool:
    """Whether each chunk of samples can draw only its own noise: the CPU
    kernels start at any stream element. Elsewhere (CUDA, torch.func
    transforms, a stream tensor while compiling) all samples are drawn at
    once and sliced: the same values."""
    return (device.type == "cpu" and numel > 0 and isinstance(stream, tuple)
            and not _ops._transformed())


def _noise_chunks(kind: str, sizes: list[int], shape: torch.Size, dtype: torch.dtype,
                  device: torch.device, stream: _ops.Stream) -> Iterator[torch.Tensor]:
    """The standard noise ``z`` of :func:`_draw` for ``(sum(sizes), *shape)``,
    ``sizes[i]`` samples at a time, in order: on the CPU each chunk is drawn
    alone, so only one chunk's noise is in memory."""
    numel = math.prod(shape)
    if not _in_pieces(device, numel, stream):
        yield from _draw(kind, [sum(sizes), *shape], dtype, device, stream).split(sizes)
        return
    s0 = 0
    for k in sizes:
        yield _draw(kind, [k, *shape], dtype, device, stream, s0 * numel)
        s0 += k


def _perturbed_chunks(kind: str, theta: torch.Tensor, sizes: list[int], sigma: float,
                      stream: _ops.Stream) -> Iterator[torch.Tensor]:
    """``theta + sigma z`` for the samples of :func:`_noise_chunks`, chunk by
    chunk (``(sizes[i], *theta.shape)``, ``theta`` in the compute dtype): the
    sum of ``theta`` and the rounded product ``sigma z``, elementwise. Gumbel
    noise on the CPU is one kernel call per chunk that draws, scales and adds
    in one pass over its output."""
    if kind == "gumbel" and _in_pieces(theta.device, theta.numel(), stream):
        s0 = 0
        for k in sizes:
            yield _cpu.perturb(kind, theta, k, sigma, *stream, start=s0 * theta.numel())
            s0 += k
        return
    for z in _noise_chunks(kind, sizes, theta.shape, theta.dtype, theta.device, stream):
        yield z.mul_(sigma).add_(theta)


def _score(kind: str, z: torch.Tensor) -> torch.Tensor:
    """``nu'(z)``, the derivative of the noise's negative log-density
    ``nu(z) = z + exp(-z)`` (Gumbel) or ``z**2 / 2`` (normal), in place."""
    if kind == "gumbel":
        return z.neg_().exp_().neg_().add_(1.0)
    return z


#: The automatic ``max_chunk_bytes``: the most bytes of perturbed thetas (in
#: the compute dtype) per solver call, so that a chunk, its solutions and the
#: running sums stay in the caches.
CHUNK_BYTES = 4 << 20


def _chunk_bytes(fn: str, max_chunk_bytes: object) -> int | None:
    if max_chunk_bytes is None:
        return None
    return _validate.count(fn, "max_chunk_bytes", max_chunk_bytes, 1)


def _per_call(theta: torch.Tensor, compute: torch.dtype, n_samples: int,
              max_chunk_bytes: int | None) -> int:
    """The samples per solver call: the most whose perturbed thetas fit in
    ``max_chunk_bytes`` (:data:`CHUNK_BYTES` when None), at least 1."""
    budget = CHUNK_BYTES if max_chunk_bytes is None else max_chunk_bytes
    per_sample = max(1, theta.numel() * compute.itemsize)
    return max(1, min(n_samples, budget // per_sample))


def _samples(fn: str, solver: Solver, theta: torch.Tensor, n_samples: int, sigma: float,
             kind: str, stream: _ops.Stream,
             max_chunk_bytes: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The perturbed thetas and their solutions, chunk by chunk: ``(k,
    *theta.shape)`` each in the compute dtype, samples ``0 .. n_samples - 1``
    in order, from one solver call per chunk on its ``(k * batch, *shape)``
    thetas (``k`` from :func:`_per_call`, less in the last chunk)."""
    compute = _validate.compute_dtype(theta.dtype)
    t = theta.detach().to(compute)
    per_call = _per_call(theta, compute, n_samples, max_chunk_bytes)
    sizes = [min(per_call, n_samples - s0) for s0 in range(0, n_samples, per_call)]
    for xc in _perturbed_chunks(kind, t, sizes, sigma, stream):
        flat = xc.view(xc.shape[0] * theta.shape[0], *theta.shape[1:]).to(theta.dtype)
        yield xc, _solve(fn, solver, flat, compute).view(xc.shape)


def _add(total: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``total + x``, in place in ``total`` (a copy of ``x`` when None): sums
    of samples taken one at a time in order, so a sum is the same whatever
    the chunks."""
    return x.clone() if total is None else total.add_(x)


class _Perturbed(torch.autograd.Function):
    """``y_eps(theta)``: the mean of the solutions. Backward (Berthet et al.
    2020, Prop. 3.1): ``J^T g = E[<g, y(theta + sigma Z)> nu'(Z)] / sigma``,
    estimated with the forward's samples; the noise is redrawn from the
    stream rather than kept."""

    @staticmethod
    def forward(theta, mean, kind, sigma, stream, *chunks):
        return mean.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, _, ctx.kind, ctx.sigma, ctx.stream, *chunks = inputs
        ctx.save_for_backward(*chunks)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        chunks = ctx.saved_tensors  # solutions (k, B, *shape), samples in order
        first = chunks[0]
        s = sum(c.shape[0] for c in chunks)
        gf = grad.flatten(1).to(first.dtype)  # (B, E)
        if s * gf.numel() * gf.element_size() <= CHUNK_BYTES:
            shape = [s, *first.shape[1:]]
            nu = _score(ctx.kind, _draw(ctx.kind, shape, first.dtype, first.device, ctx.stream))
            ys = first if len(chunks) == 1 else torch.cat(chunks)
            inner = torch.einsum("sbe,be->sb", ys.flatten(2), gf)  # (S, B)
            g = torch.einsum("sb,sbe->be", inner, nu.flatten(2))
        else:
            # one sample at a time, in order, each while in the caches; the
            # noise redrawn chunk by chunk
            g = None
            zs = _noise_chunks(ctx.kind, [c.shape[0] for c in chunks], first.shape[1:],
                               first.dtype, first.device, ctx.stream)
            for c, z in zip(chunks, zs):
                for y, nu in zip(c, _score(ctx.kind, z).flatten(2)):  # (B, E) each
                    g = _add(g, nu.mul_(torch.linalg.vecdot(y.flatten(1), gf)[:, None]))
        g = g / (s * ctx.sigma)
        return (g.view(grad.shape), None, None, None, None, *([None] * len(chunks)))


class Perturbed:
    """``theta -> y_eps(theta) = E[solver(theta + sigma Z)]``, see :func:`perturbed`.

    Built by :func:`perturbed` with the same ``solver``, ``n_samples``,
    ``sigma``, ``noise``, ``generator`` and ``max_chunk_bytes``.
    """

    __slots__ = ("generator", "max_chunk_bytes", "n_samples", "noise", "sigma", "solver")

    def __init__(self, solver: Solver, n_samples: int = 16, sigma: float = 1.0,
                 noise: str = "gumbel", *, generator: Generator | None = None,
                 max_chunk_bytes: int | None = None) -> None:
        fn = "perturbed"
        self.solver = _solver(fn, solver)
        self.n_samples = _validate.count(fn, "n_samples", n_samples, 1, 2**31 - 1)
        self.sigma = _validate.positive(fn, "sigma", sigma)
        if noise not in NOISES:
            raise ValueError(_validate.message(fn, "noise", f"one of {NOISES}", noise))
        self.noise = noise
        self.generator = _validate.generator(fn, generator)
        self.max_chunk_bytes = _chunk_bytes(fn, max_chunk_bytes)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        fn = "perturbed"
        theta = _batched(fn, theta)
        stream = _ops.take(self.generator, fn)
        keep = torch.is_grad_enabled() and theta.requires_grad
        total, chunks = None, []
        for _, yc in _samples(fn, self.solver, theta, self.n_samples, self.sigma, self.noise,
                              stream, self.max_chunk_bytes):
            for y in yc:
                total = _add(total, y)
            if keep:
                chunks.append(yc)
        assert total is not None
        mean = total.div_(self.n_samples)
        if keep:
            mean = _Perturbed.apply(theta, mean, self.noise, self.sigma, stream, *chunks)
        return mean.to(theta.dtype)

    def __repr__(self) -> str:
        return (f"gumbelrs.structured.perturbed({_name(self.solver)}, "
                f"n_samples={self.n_samples}, sigma={self.sigma}, noise={self.noise!r}, "
                f"generator={self.generator!r}, max_chunk_bytes={self.max_chunk_bytes!r})")


def perturbed(
    solver: Solver,
    n_samples: int = 16,
    sigma: float = 1.0,
    noise: str = "gumbel",
    *,
    generator: Generator | None = None,
    max_chunk_bytes: int | None = None,
) -> Perturbed:
    """A differentiable version of an argmax-type ``solver`` (Berthet, Blondel,
    Teboul, Cuturi, Vert and Bach 2020): the callable
    ``theta -> y_eps(theta) = E[solver(theta + sigma Z)]``, estimated by the
    mean of ``n_samples`` draws of standard noise ``Z`` (``"gumbel"`` or
    ``"normal"``).

    ``solver`` maps a batch ``x`` of shape ``(batch, *shape)`` to solutions of
    the same shape (one-hot or 0/1 indicators; any real dtype) maximising
    ``<x[b], y>`` over its feasible set; to wrap a minimiser, such as
    ``shortest_path_grid(costs)``, pass ``theta = -costs``. ``theta`` is
    ``(batch, *shape)``, its first dimension the batch (``theta[None]`` for one
    instance). The solver runs without gradient, on chunks of whole samples
    of the perturbed thetas, in ``theta``'s dtype: ``ceil(n_samples / k)``
    calls, in the order of the samples, each on ``(k * batch, *shape)``
    (sample ``s0 + j`` of instance ``b`` at row ``j * batch + b``; the last
    call may have fewer samples), ``k`` the most samples whose perturbed
    thetas take at most ``max_chunk_bytes`` bytes in the compute dtype (at
    least 1, at most ``n_samples``). ``max_chunk_bytes=None`` (the default)
    is 4 MiB: a cheap solver then works in the caches (stacking all samples
    of a large theta into one call is slower than calling the solver once
    per sample), while small thetas still get all their samples in one call.
    The solver must accept any batch size and solve each row on its own.
    Any chunking gives the same bits: the noise of every sample is the same,
    and the solutions are summed one sample at a time in order ``0 ..
    n_samples - 1``, then divided by ``n_samples``.

    The gradient is the Monte-Carlo estimate of Berthet et al. (Prop. 3.1)
    from the same samples: ``J^T g = mean_s <g, y_s> nu'(Z_s) / sigma``, with
    ``nu'(z) = 1 - exp(-z)`` for Gumbel noise and ``z`` for normal noise (the
    derivative of the noise's negative log-density). It is unbiased; its
    variance shrinks as ``1 / n_samples``. Double backward is not supported.

    - The noise of a call is standard Gumbel ``gumbel_noise((n_samples,
      *theta.shape))`` for the same generator state (not centred: its mean is
      Euler's constant, which is harmless when every solution has the same
      sum, as one-hots do, and otherwise favours solutions with larger
      sums), or for ``"normal"`` the standard normal quantiles (inverse CDF)
      of the uniforms that Gumbel noise is computed from, resolved as finely
      as those uniforms: from -6.2 to 5.3 in float32 (the uniforms are finer
      near 0; the tails cut off hold 6e-8 of the mass), ±8.2 in float64. One
      generator call per call of the wrapper; the noise is the same for any
      number of threads.
    - With Gumbel noise and the argmax one-hot solver, ``y_eps(theta) =
      softmax(theta / sigma)`` exactly.
    - Every entry of theta gets its own noise: a solver whose input must
      have structure imposes it itself, e.g. ``lambda x: spanning_tree(x,
      upper=True)`` (the tree of the upper triangle: symmetric weights
      without a symmetrising pass) or ``lambda x: shortest_path_grid(
      (-x).clamp_min(0))`` (perturbed costs can be negative).
    - Cost: Gumbel noise on the CPU is drawn, scaled and added to theta in
      one kernel pass into each chunk's ``(k, *theta.shape)`` input (other
      noise: drawn, then scaled and added, chunk by chunk); the solutions of
      a chunk are added to the running sum while in the caches.
    - Memory: on the CPU each chunk draws only its own samples' noise (the
      stream's elements from its first sample on), so the perturbed thetas
      of one chunk exist at a time; on CUDA, under ``torch.func``
      transforms and while compiling, the noise of all samples
      ``(n_samples, *theta.shape)`` is drawn at once and sliced (the same
      values either way). Autograd keeps the samples' solutions (the size
      of all samples, in the compute dtype); the backward redraws the noise
      from the call's stream instead of keeping it, and when the solutions
      take more than 4 MiB it takes the samples one at a time in order,
      redrawing the noise one forward chunk at a time on the CPU (the same
      value up to rounding as the stacked products it uses below that
      size; the same bits for any chunking either way).
    - float16/bfloat16 thetas are perturbed in float32, passed to the solver in
      their dtype, and averaged in float32.
    """
    return Perturbed(solver, n_samples, sigma, noise, generator=generator,
                     max_chunk_bytes=max_chunk_bytes)


class _FenchelYoung(torch.autograd.Function):
    """The loss, whose gradient is ``mean_s y_s - y_true`` for theta and
    ``-(theta + sigma mean_s Z_s)`` for ``y_true``."""

    @staticmethod
    def forward(theta, y_true, loss, y_mean, x_mean):
        return loss.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, y_true, _, y_mean, x_mean = inputs
        ctx.save_for_backward(y_true, y_mean, x_mean)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        y_true, y_mean, x_mean = ctx.saved_tensors
        g = grad.view(-1, *([1] * (y_mean.dim() - 1)))  # (B, 1, ...)
        gt = gy = None
        if ctx.needs_input_grad[0]:
            gt = g * (y_mean - y_true)
        if ctx.needs_input_grad[1]:
            gy = -(g * x_mean)
        return gt, gy, None, None, None


def fenchel_young_loss(
    theta: torch.Tensor,
    y_true: torch.Tensor,
    solver: Solver,
    *,
    n_samples: int = 16,
    sigma: float = 1.0,
    noise: str = "gumbel",
    generator: Generator | None = None,
    max_chunk_bytes: int | None = None,
) -> torch.Tensor:
    """The perturbed Fenchel-Young loss of each instance (Berthet et al. 2020,
    section 4): ``(batch,)``, for ``theta`` and ``y_true`` of shape ``(batch,
    *shape)`` and ``solver`` as in :func:`perturbed`.

    The loss is ``L(theta; y) = F(theta) + Omega(y) - <theta, y>`` with
    ``F(theta) = E[max_y <theta + sigma Z, y>]``. This returns the estimate
    ``mean_s <theta + sigma Z_s, y_s - y_true>`` over the same samples ``y_s
    = solver(theta + sigma Z_s)`` as :func:`perturbed` (the same noise for the
    same generator state), which

    - is at least 0 for every draw when ``y_true`` is a solution or an
      average of solutions (``y_s`` maximises ``<theta + sigma Z_s, .>``), up
      to rounding, and 0 when every sample equals ``y_true``;
    - has expectation ``L(theta; y_true)`` up to a constant in theta:
      ``Omega(y_true)`` is not computed, the estimate stands for it with
      ``-sigma <E[Z], y_true>``, which equals ``Omega`` at every solution the
      solver can return (so the expectation is the loss itself there, e.g.
      ``sigma logsumexp(theta / sigma) - <theta, y_true>`` for one-hots and
      Gumbel noise), and is larger than ``Omega`` elsewhere;
    - has gradient exactly ``mean_s y_s - y_true`` with respect to ``theta``
      (``perturbed(...)(theta) - y_true`` for the same generator state), and
      ``-(theta + sigma mean_s Z_s)`` with respect to ``y_true``. Double
      backward is not supported.

    ``theta`` must be finite; ``y_true`` is a real tensor of ``theta``'s shape
    (converted to its dtype). Autograd keeps three tensors of ``theta``'s
    shape; the samples are not kept.

    ``n_samples``, ``sigma``, ``noise``, ``generator`` and
    ``max_chunk_bytes`` are those of :func:`perturbed` (the same solver
    calls; the elementwise products ``(theta + sigma Z_s) (y_s - y_true)``,
    the solutions and the perturbed thetas are summed one sample at a time
    in order, the loss then over the elements, so any chunking gives the
    same bits), and raise its errors (``ValueError`` for a bad count, scale
    or noise kind, a NaN in ``theta`` or ``y_true``, or a ``y_true`` whose shape
    is not the solver's output's).
    """
    fn = "fenchel_young_loss"
    theta = _batched(fn, theta)
    y_true = _real(fn, y_true)
    if y_true.shape != theta.shape:
        raise ValueError(f"{fn}: y_true must have theta's shape {tuple(theta.shape)}, got "
                         f"{tuple(y_true.shape)}")
    _finite(fn, "theta", theta)
    _finite(fn, "y_true", y_true)
    solver = _solver(fn, solver)
    _validate.count(fn, "n_samples", n_samples, 1, 2**31 - 1)
    sigma = _validate.positive(fn, "sigma", sigma)
    if noise not in NOISES:
        raise ValueError(_validate.message(fn, "noise", f"one of {NOISES}", noise))
    gen = _validate.generator(fn, generator)
    chunk_bytes = _chunk_bytes(fn, max_chunk_bytes)
    compute = _validate.compute_dtype(theta.dtype)
    stream = _ops.take(gen, fn)
    yt = y_true.detach().to(compute)
    # x_mean is y_true's gradient only: summed when that is asked for
    want_x = torch.is_grad_enabled() and y_true.requires_grad
    # products of x_s and y_s - y_true summed over the samples, then over the elements
    prod_sum = y_sum = x_sum = None
    for xc, yc in _samples(fn, solver, theta, n_samples, sigma, noise, stream, chunk_bytes):
        prod = (yc - yt).mul_(xc)
        for s in range(xc.shape[0]):
            prod_sum, y_sum = _add(prod_sum, prod[s]), _add(y_sum, yc[s])
            if want_x:
                x_sum = _add(x_sum, xc[s])
    assert prod_sum is not None and y_sum is not None
    loss = prod_sum.flatten(1).sum(1).div_(n_samples)
    y_mean = y_sum.div_(n_samples)
    x_mean = y_mean if x_sum is None else x_sum.div_(n_samples)
    out = _FenchelYoung.apply(theta, y_true.to(compute), loss, y_mean, x_mean)
    return out.to(theta.dtype)


def _real(fn: str, y: object) -> torch.Tensor:
    """A dense tensor of a real dtype (bool and integers count)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{fn}: y_true must be a torch.Tensor, got {type(y).__name__}")
    if y.layout != torch.strided:
        raise TypeError(f"{fn}: y_true must be a dense tensor, got layout {y.layout}; "
                        "convert it with .to_dense()")
    if y.dtype.is_complex:
        raise TypeError(f"{fn}: y_true must be a real tensor, got dtype {y.dtype}")
    return y


def _finite(fn: str, name: str, x: torch.Tensor) -> None:
    if not x.dtype.is_floating_point:
        return
    bad = ~torch.isfinite(x)
    if bad.any():
        at = bad.nonzero()[0].tolist()
        raise ValueError(f"{fn}: {name}{at} is {x[tuple(at)].item()}; {name} must be finite")


class _Blackbox(torch.autograd.Function):
    """Forward: ``solver(theta)``; backward: Vlastelica et al.'s gradient,
    ``(solver(theta) - solver(theta - lam g)) / lam``."""

    @staticmethod
    def forward(theta, solver, lam):
        return _solve("blackbox", solver, theta, theta.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        theta, ctx.solver, ctx.lam = inputs
        ctx.save_for_backward(theta.detach(), output)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        theta, y = ctx.saved_tensors
        moved = theta - ctx.lam * grad.to(theta.dtype)
        y_moved = _solve("blackbox", ctx.solver, moved, y.dtype)
        return (y - y_moved) / ctx.lam, None, None


class Blackbox:
    """``theta -> solver(theta)`` with the interpolation gradient, see :func:`blackbox`.

    Built by :func:`blackbox` with the same ``solver`` and ``lam``.
    """

    __slots__ = ("lam", "solver")

    def __init__(self, solver: Solver, lam: float) -> None:
        self.solver = _solver("blackbox", solver)
        self.lam = _validate.positive("blackbox", "lam", lam)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        fn = "blackbox"
        theta = _validate.logits(fn, theta, min_dim=0, name="theta")
        _no_nan(fn, "theta", theta)
        if torch.is_grad_enabled() and theta.requires_grad:
            return _Blackbox.apply(theta, self.solver, self.lam)
        return _solve(fn, self.solver, theta, theta.dtype)

    def __repr__(self) -> str:
        return f"gumbelrs.structured.blackbox({_name(self.solver)}, lam={self.lam})"


def blackbox(solver: Solver, lam: float) -> Blackbox:
    """``solver`` made differentiable by Vlastelica, Paulus, Musil, Martius and
    Rolinek (2020): the callable ``theta -> solver(theta)`` (the exact
    solution, in ``theta``'s dtype) whose backward, given the gradient ``g``
    of the loss with respect to the solution, calls the solver once more and
    returns ``(solver(theta) - solver(theta - lam g)) / lam``.

    ``solver`` maximises ``<theta, y>`` (any shape the solver takes, batched or
    not). The paper states the method for minimisers, ``y(w) = argmin <w,
    y>``, with ``w' = w + lam g`` and gradient ``-(y(w) - y(w')) / lam``; here
    ``w = -theta``, so ``w' = -(theta - lam g)`` and the gradient with respect
    to theta is the negative of the paper's. It is the exact gradient of the
    piecewise-linear interpolation ``f_lam(theta) = (max_y <theta, y> -
    max_y <theta - lam g, y>) / lam`` of the loss linearised at the solution,
    ``L(y) ~ <g, y>``. ``lam`` is a positive number (larger: the gradient sees
    solutions further away). Double backward is not supported.
    """
    return Blackbox(solver, lam)

