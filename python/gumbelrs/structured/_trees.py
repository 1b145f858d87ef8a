"""Relaxed spanning trees: the edge marginals of the exponential family over
spanning trees by the matrix-tree theorem (Paulus et al. 2020, stochastic
softmax tricks). See :mod:`gumbelrs.structured`."""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from .. import _dispatch, _faults, _ops, _validate
from .._generator import Generator
from ._graphs import _square, _symmetric


def _graph(batch: tuple[int, ...], b: int) -> str:
    """``weights[...]``, the graph ``b`` of the flattened ``batch``."""
    return _faults._where(batch, b, "weights") if batch else "weights"


#: How far the marginals of a graph may sum from n - 1 (relative) before the
#: float64 computation counts as failed.
_FOSTER_TOLERANCE = 1e-3


def _swap_root(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``x[b][perm[b]][:, perm[b]]`` for ``(B, n, n)`` ``x``; ``perm`` swaps two
    nodes, so it undoes itself."""
    b, n, _ = x.shape
    rows = x.gather(1, perm[:, :, None].expand(b, n, n))
    return rows.gather(2, perm[:, None, :].expand(b, n, n))


def _inverse(a: torch.Tensor, root: torch.Tensor) -> torch.Tensor | None:
    """``(B, n, n)`` edge weights ``a`` (symmetric, zero diagonal) and a node
    ``root`` per graph -> the inverse of each Laplacian with the root's row and
    column removed, embedded in ``(B, n, n)`` with zeros in them (one Cholesky
    factorisation a graph); None if one is not numerically positive definite."""
    b, n, _ = a.shape
    perm = torch.arange(n, device=a.device).repeat(b, 1)  # (B, n): swap the root and node 0
    perm.scatter_(1, root[:, None], 0)
    perm[:, 0] = root
    ap = _swap_root(a, perm)
    lap = torch.diag_embed(ap.sum(-1)) - ap  # (B, n, n)
    chol, info = torch.linalg.cholesky_ex(lap[:, 1:, 1:])
    if bool((info != 0).any()):
        return None
    k = torch.zeros_like(a)
    k[:, 1:, 1:] = torch.cholesky_inverse(chol)
    return _swap_root(k, perm)


def _resistance(k: torch.Tensor) -> torch.Tensor:
    """``(e_i - e_j)^T K (e_i - e_j)`` for every pair: ``(B, n, n)``."""
    d = k.diagonal(0, -2, -1)  # (B, n)
    return d[:, :, None] + d[:, None, :] - 2 * k


def _precision_error(fn: str, graph: str, total: float, n: int) -> ValueError:
    return ValueError(
        f"{fn}: the edge marginals of the graph of {graph} lost their precision in float64 "
        f"(they sum to {total!r}, not n - 1 = {n - 1}): its perturbed weights "
        "divided by tau span too wide a range (the reduced Laplacian holds exp of their "
        "differences); raise tau")


class _Marginals(torch.autograd.Function):
    """Symmetric float64 ``theta`` ``(B, n, n)`` (edge log-potentials, -inf for
    a forbidden edge, diagonal not read) -> the edge marginals
    ``mu_ij = a_ij (e_i - e_j)^T K (e_i - e_j)``, ``a = exp(theta - max)``,
    ``K`` the inverse of the reduced Laplacian of ``a``.

    The removed node (the root) is an end of the largest edge of each graph:
    ``K``'s entries grow with the resistance to the root, and ``mu`` of an edge
    far from it is the difference of such entries, so a root among the
    heaviest edges (the ones whose marginals are near 1) loses the fewest
    digits (measured: errors 1e-5 where root 0 gave 1 on random 6-node
    graphs with perturbed weights spanning about 60 tau).

    Backward, for ``H = G + G^T`` (both entries of an edge are outputs):
    ``d/dtheta_ij = H_ij mu_ij - a_ij (e_i - e_j)^T P (e_i - e_j)`` with
    ``P = K Lap(H * a) K`` (``dK = -K dLap K``), halved over the two entries of
    the edge (theta_ij reads as the mean of both)."""

    @staticmethod
    def forward(theta, fn, batch):
        n = theta.shape[-1]
        off = ~torch.eye(n, dtype=torch.bool, device=theta.device)
        edges = torch.where(torch.isfinite(theta) & off, theta, -math.inf)  # (B, n, n)
        top = edges.flatten(1).max(1)  # the largest edge of each graph
        # 0 off the edges (also for n = 1, which has none: -inf - -inf is NaN).
        a = torch.where(edges > -math.inf, (edges - top.values[:, None, None]).exp(), 0.0)
        k = _inverse(a, torch.div(top.indices, n, rounding_mode="floor"))
        if k is None:
            raise ValueError(
                f"{fn}: a reduced Laplacian is numerically singular in float64: a node is "
                "joined to the others only by edges whose exp((w + g) / tau) underflows next "
                "to the largest edge's; raise tau")
        mu = a * _resistance(k)
        total = mu.triu(1).sum((-2, -1))  # (B,): n - 1 (Foster's theorem)
        bad = ~((total - (n - 1)).abs() <= _FOSTER_TOLERANCE * max(n - 1, 1))
        if bad.any():
            at = int(bad.nonzero()[0, 0])
            raise _precision_error(fn, _graph(batch, at), total[at].item(), n)
        return mu, a, k

    @staticmethod
    def setup_context(ctx, inputs, output):
        mu, a, k = output
        ctx.mark_non_differentiable(a, k)
        ctx.save_for_backward(mu, a, k)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_a, _grad_k):
        mu, a, k = ctx.saved_tensors
        h = grad + grad.transpose(-2, -1)
        w = h * a
        lap = torch.diag_embed(w.sum(-1)) - w
        p = k @ lap @ k
        g = h * mu - a * _resistance(p)
        return g / 2, None, None


def _marginals(theta: torch.Tensor, fn: str, batch: tuple[int, ...]) -> torch.Tensor:
    """``_Marginals`` of ``theta`` ``(*batch, n, n)``, flattened to ``(B, n, n)``
    for the kernels."""
    n = theta.shape[-1]
    return _Marginals.apply(theta.reshape(-1, n, n), fn, batch)[0].reshape(theta.shape)


def relaxed_spanning_tree(
    weights: torch.Tensor,
    tau: float = 1.0,
    *,
    hard: bool = False,
    generator: Generator | None = None,
) -> torch.Tensor:
    """The edge marginals of a random spanning tree (Paulus, Choi, Tarlow,
    Krause and Maddison 2020, the stochastic softmax trick for spanning
    trees): ``(*batch, n, n)``, symmetric, zero diagonal, entry ``(i, j)`` the
    probability that edge ``{i, j}`` is in the tree ``T`` drawn from
    ``p(T) ∝ exp(sum_{e in T} (w_e + g_e) / tau)``, where ``w`` are the
    symmetric ``weights`` ``(*batch, n, n)`` and ``g`` is standard Gumbel
    noise. The marginals of the edges ``i < j`` sum to ``n - 1``; as ``tau``
    goes to 0 they go to the maximum spanning tree of ``w + g``, the tree
    :func:`sample_spanning_tree` draws.

    - The noise is that of ``sample_spanning_tree(weights, generator=...)``
      for the same generator state: edge ``(i, j)``, ``i < j``, gets element
      ``[..., i, j]`` of ``gumbel_noise(weights.shape)``, mirrored, added to
      the weights in their float type (float32 for float16/bfloat16).
    - The marginals are the derivatives of ``log det`` of the reduced
      Laplacian (the matrix-tree theorem), ``mu_ij = a_ij (e_i - e_j)^T
      K (e_i - e_j)`` with ``a = exp((w + g) / tau - max)`` (the largest
      finite value of each graph subtracted) and ``K`` the inverse of the
      Laplacian of ``a`` without the row and column of one node (an end of
      the heaviest edge), one Cholesky factorisation per graph, all in
      float64, returned in the weights' dtype.
    - Accuracy: the entries of ``K`` grow as ``exp(gap / tau)`` with the gap
      between a node's edges and the lighter edges that join it to the
      removed node, and the marginals are differences of them, so digits go
      when the perturbed weights spread over many ``tau``. Measured against
      enumeration: random 6-node graphs whose perturbed weights span 50 to
      100 ``tau``, errors up to 6e-7 (1 in 20 refused); two clusters whose edges are 25 ``tau``
      apart, joined by edges 25 ``tau`` lighter still, 2e-9 (33 ``tau``:
      5e-7). Every graph's marginals are checked to sum to ``n - 1`` within
      ``1e-3 (n - 1)`` (Foster's theorem; the miss tracked the largest error
      within a factor of 3); a graph that misses, or whose Laplacian
      underflows to singular, is an error that asks for a larger ``tau``.
    - Bound the weights when they are learned. What conditions the reduced
      Laplacian is the spread of ``(w + g) / tau``: its entries are ``exp``
      of the differences, so beyond a spread of about 50 the marginals lose
      digits, and further out graphs are refused (the ``ValueError`` above).
      Measured at ``tau = 1`` on random graphs with independent uniform
      weights: none of 100 refused up to a weight range of 80 (6 nodes), 100
      (15 nodes) or 150 (40 nodes); at a range of 200, 17, 25 and 2 of 100
      were, and at 400, 38, 79 and 86. A network that outputs the weights can drift
      there while training (an objective that rewards sharper trees keeps
      pushing them apart: the encoder of :mod:`gumbelrs.apps.trees` did
      within 50 steps), and the run then stops at the first refused graph.
      Keep ``|w| / tau`` within about 10, for instance ``w = bound *
      torch.tanh(raw / bound)`` with ``bound = 10 * tau`` (as that app
      does; it keeps the order of the weights, hence the maximum spanning
      tree). Raising ``tau`` works too but softens the relaxation, and
      weights far beyond ``tau`` buy nothing: the derivative of an edge's
      marginal with respect to its own weight is ``mu (1 - mu) / tau``,
      which vanishes as the marginals go to 0 or 1.
    - Backward (written out, ``O(n^3)`` per graph: two matrix products):
      autograd keeps three float64 ``(*batch, n, n)`` tensors. The gradient
      with respect to ``weights`` is symmetric (each entry of an edge gets
      half). No double backward.
    - ``hard=True`` returns the 0/1 tree of :func:`sample_spanning_tree` for
      the same generator state, with the gradient of the marginals
      (straight-through).
    - A ``-inf`` weight forbids its edge (marginal and gradient exactly 0).
      Bad input as for :func:`spanning_tree`, whose checks and kernel run
      here (without ``hard`` the kernel solves the unperturbed weights once,
      ``O(n^2)`` a graph, to find them): NaN and ``+inf`` edge weights,
      weights not symmetric off the diagonal, and graphs that their ``-inf``
      edges disconnect are errors naming this op; the diagonal is not read.
      ``n = 1`` gives the empty tree (a zero matrix).
    """
    fn = "relaxed_spanning_tree"
    w = _square(fn, weights)
    t = _validate.scalar_tau(fn, tau, w)
    hard = _validate.flag(fn, "hard", hard)
    gen = _validate.generator(fn, generator)
    solver = _dispatch.solver(w.device)
    _symmetric(fn, w)
    stream = _ops.take(gen, fn)
    # The spanning-tree kernel finds +inf weights and disconnected graphs; with
    # the stream, its tree is sample_spanning_tree's (it draws the same noise).
    tree = solver.spanning_tree(fn, w, stream if hard else None)
    if not hard:
        return _relaxed(fn, w, t, stream).to(w.dtype)
    if torch.is_grad_enabled() and w.requires_grad:
        return _Replace.apply(_relaxed(fn, w, t, stream), tree).to(w.dtype)
    return tree.to(w.dtype)


def _relaxed(fn: str, w: torch.Tensor, t: float, stream: _ops.Stream) -> torch.Tensor:
    """The float64 marginals at ``(w + g) / t``, ``g`` the symmetric noise of ``stream``."""
    shape = w.shape
    compute = _validate.compute_dtype(w.dtype)
    g = _ops.noise("gumbel", list(shape), compute, w.device, stream).triu(1)
    g = g + g.transpose(-2, -1)  # (*batch, n, n): one draw per edge i < j, mirrored
    perturbed = w.to(compute) + g  # in the float type sample_spanning_tree adds in
    return _marginals(perturbed.double() / t, fn, tuple(shape[:-2]))


class _Replace(torch.autograd.Function):
    """Forward: ``exact`` (0/1 values, in ``soft``'s dtype); backward: the
    gradient goes to ``soft`` unchanged (straight-through without the float
    slack of ``exact - soft.detach() + soft``)."""

    @staticmethod
    def forward(soft, exact):
        return exact.to(soft.dtype, copy=True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad, None
