"""Exact solvers on graphs: cheapest paths through grids, maximum-weight
spanning trees and their Gumbel-perturbed samples (see
:mod:`gumbelrs.structured`). Each is a Rust kernel, batched and parallel
across the batch, on the CPU."""

from __future__ import annotations

import math

import torch

from .. import _dispatch, _ops, _validate
from .._faults import COSTS_RULE, TREE_RULE
from .._generator import Generator


def _value(x: float) -> str:
    """A value as the messages print it: NaN, +inf, -inf or the float."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return repr(x)


def _at(index: list[int]) -> str:
    return "[" + ", ".join(map(str, index)) + "]"


def _grid(fn: str, costs: object) -> torch.Tensor:
    """Costs ``(*batch, H, W)``, ``H, W >= 1``."""
    c = _validate.logits(fn, costs, min_dim=0, name="costs",
                         convert="; convert them with costs.double() (exact for integers up "
                         "to 2**53)")
    shape = tuple(c.shape)
    if c.dim() < 2:
        raise ValueError(f"{fn}: costs must be a grid or a batch of grids (*batch, H, W), got "
                         f"a {c.dim()}-d tensor of shape {shape}")
    h, w = shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f"{fn}: costs must have at least one row and one column (shape "
                         f"(*batch, H, W) with H, W >= 1), got shape {shape}")
    if (h + 2) * (w + 2) >= 2**31:
        raise ValueError(f"{fn}: a grid of {h} x {w} cells is too large for the solver; "
                         "(H + 2) * (W + 2) must be below 2**31")
    return c


def _costs(fn: str, c: torch.Tensor) -> None:
    """No cost negative or NaN: the first of them, in row-major order, is an
    error. Run only after the kernel found a bad cost (it reports the first
    negative, NaN or +inf one, negative and NaN costs under one fault kind),
    so that negative and NaN costs are named before any +inf, by value."""
    if not bool(c.ge(0).all()):
        at = (~c.ge(0)).nonzero()[0].tolist()
        raise ValueError(f"{fn}: costs{_at(at)} is {_value(c[tuple(at)].item())}; {COSTS_RULE}")


def _square(fn: str, weights: object) -> torch.Tensor:
    """Weights ``(*batch, n, n)``, ``n >= 1``."""
    w = _validate.logits(fn, weights, min_dim=0, name="weights",
                         convert="; convert them with weights.double() (exact for integers up "
                         "to 2**53)")
    shape = tuple(w.shape)
    if w.dim() < 2 or shape[-1] != shape[-2]:
        raise ValueError(f"{fn}: weights must be a square matrix or a batch of them (*batch, "
                         f"n, n), got shape {shape}")
    n = shape[-1]
    if n == 0:
        raise ValueError(f"{fn}: weights have n = 0 vertices (shape {shape}); a spanning tree "
                         "needs at least one")
    return w


def _symmetric(fn: str, w: torch.Tensor) -> None:
    """``w`` symmetric off the diagonal and without NaN there. The common case
    costs one pass (``torch.equal`` of the weights and their transpose); only
    when it fails are the NaN entries and the asymmetric pairs looked for,
    NaN first."""
    wt = w.mT
    if torch.equal(w, wt):
        return
    n = w.shape[-1]
    off = ~torch.eye(n, dtype=torch.bool, device=w.device)
    nan = w.isnan() & off
    if nan.any():
        at = nan.nonzero()[0].tolist()
        raise ValueError(f"{fn}: weights{_at(at)} is NaN; {TREE_RULE}")
    differ = (w != wt) & off
    if differ.any():
        *b, i, j = differ.nonzero()[0].tolist()
        raise ValueError(
            f"{fn}: weights must be symmetric (weights[..., i, j] == weights[..., j, i] for "
            f"i != j; the diagonal is ignored), but weights{_at([*b, i, j])} = "
            f"{_value(w[(*b, i, j)].item())} and weights{_at([*b, j, i])} = "
            f"{_value(w[(*b, j, i)].item())}")


def shortest_path_grid(costs: torch.Tensor) -> torch.Tensor:
    """The 0/1 indicator ``(*batch, H, W)``, in the dtype of ``costs``, of a
    cheapest path through each grid of non-negative cell costs ``costs``
    ``(*batch, H, W)``: from the top-left cell ``[0, 0]`` to the bottom-right
    one ``[H - 1, W - 1]``, each step to one of the 8 cells around (sides and
    corners), the path's cost being the sum of the costs of its cells, both
    ends included (Dijkstra's algorithm, a Rust kernel, batched and parallel
    across the batch; the cost of ``scipy.sparse.csgraph.dijkstra`` on the
    8-neighbour graph whose edges cost their target cell, plus the start
    cell's cost). A second search from the bottom-right cell bounds the
    remaining cost of every cell, so cells off every cheapest path are
    skipped; the path is the one the plain search gives.

    - Ties: of the cheapest paths, one with the fewest cells; of those, the
      one traced back from the bottom-right cell by stepping, each time, to
      the neighbour with the smallest row-major index among those on such a
      path (up-left before up, up-right, left, right, down-left, down,
      down-right). The same on every call and for any number of threads: a
      constant grid gives a diagonal from the bottom-right corner back,
      then a straight line along the top row (or the left column) to the
      start. No two cells of the path touch unless they follow each other
      on it.
    - Costs are summed in float64 (exact for integer costs while sums stay
      below 2**53), from the start; ties are between equal float64 sums. A
      grid with a cost above 2**960 is scaled by 2**-64 first, so that no
      sum overflows (exact but for costs below 2**-958). float16 and
      bfloat16 costs are solved as their float32 values.
    - Bad input: a negative, NaN or +inf cost is an error naming the first
      (negative and NaN costs before +inf ones; the kernel finds them as it
      reads the costs, and only then are they looked for again to name the
      right one); so are integer dtypes (convert with ``costs.double()``)
      and grids without cells.
    - No gradient (the path is piecewise constant in the costs): costs that
      require grad are read detached; :func:`gumbelrs.structured.perturbed`
      and ``blackbox`` make it differentiable. The costs are never written.
    - CUDA costs are solved on the CPU (no CUDA kernel): copied to the host,
      which waits for the device, and the path comes back on their device.
      Not supported under ``torch.func`` transforms or ``torch.compile``.
    """
    fn = "shortest_path_grid"
    c = _grid(fn, costs)
    solver = _dispatch.solver(c.device)
    try:
        path = solver.shortest_path_grid(fn, c)
    except ValueError as e:
        bad = e
    else:
        return path.to(c.dtype)
    _costs(fn, c)
    raise bad


def spanning_tree(weights: torch.Tensor, *, upper: bool = False) -> torch.Tensor:
    """The maximum-weight spanning tree of each graph of ``weights``
    (``(*batch, n, n)``, symmetric, ``weights[..., i, j]`` the weight of edge
    ``(i, j)``; the diagonal is ignored and a ``-inf`` weight forbids its
    edge): its symmetric 0/1 edge indicator ``(*batch, n, n)`` in the dtype of
    ``weights``, with ``n - 1`` edges, whose total weight is the largest of
    all spanning trees (that of ``scipy.sparse.csgraph.minimum_spanning_tree``
    on the negated weights). A Rust kernel, batched and parallel across the
    batch.

    - ``upper=True`` reads edge ``(i, j)``, ``i < j``, from
      ``weights[..., i, j]`` alone: the lower triangle is ignored like the
      diagonal, need not be symmetric and is not checked (no pass over the
      weights before the kernel). The tree is that of the upper triangle
      mirrored, ``spanning_tree(u + u.mT)`` for ``u = weights.triu(1)``,
      without building it: the way to solve weights perturbed entry by
      entry, e.g. ``perturbed(lambda x: spanning_tree(x, upper=True))``.

    - Ties between equal weights: of two edges ``(i, j)``, ``i < j``, of equal
      weight, the one that comes first in row-major order counts as the
      heavier. The tree is the one Kruskal's algorithm builds taking the
      edges by decreasing weight, ties in that order (the maximum spanning
      tree under a strict order of the edges is unique); the kernel runs
      Prim's algorithm on the dense matrix (O(n^2) per graph), which builds
      the same tree. The same on every call and for any number of threads:
      a constant matrix gives the star of the edges ``(0, j)``.
    - Bad input: NaN and +inf weights off the diagonal, and matrices that are
      not symmetric off the diagonal (exact equality), are errors naming the
      first (NaN first, then asymmetry: found by one vectorised pass over
      the weights; +inf by the kernel); with ``upper=True``, the first NaN
      or +inf of the upper triangles, by position (found by the kernel). So
      is a graph that its -inf edges leave disconnected (no spanning tree),
      named by its batch index, and ``n = 0``. ``n = 1`` gives the empty
      tree (a single 0). float16 and bfloat16 weights are solved as their
      float32 values.
    - No gradient: weights that require grad are read detached;
      :func:`gumbelrs.structured.relaxed_spanning_tree` relaxes the tree. The
      weights are never written.
    - CUDA weights are solved on the CPU (no CUDA kernel): copied to the host,
      which waits for the device, and the tree comes back on their device.
      Not supported under ``torch.func`` transforms or ``torch.compile``.
    """
    fn = "spanning_tree"
    w = _square(fn, weights)
    solver = _dispatch.solver(w.device)
    if not _validate.flag(fn, "upper", upper):
        _symmetric(fn, w)
    return solver.spanning_tree(fn, w, None).to(w.dtype)


def sample_spanning_tree(
    weights: torch.Tensor,
    *,
    generator: Generator | None = None,
) -> torch.Tensor:
    """A random spanning tree of each graph of ``weights`` (``(*batch, n, n)``,
    as in :func:`spanning_tree`): the maximum-weight spanning tree of the
    weights plus symmetric standard Gumbel noise, one draw per edge
    (Paulus et al. 2020's perturbed Kruskal). Edge ``(i, j)``, ``i < j``,
    gets element ``[..., i, j]`` of the noise ``g = gumbelrs.gumbel_noise(
    weights.shape, dtype=d, generator=...)`` drawn with the same generator
    state (``d`` the dtype of ``weights``, float32 for float16/bfloat16); the
    lower triangle and the diagonal of ``g`` go unused. So the sample is
    ``spanning_tree(weights + u + u.mT)`` with ``u = g.triu(1)``, the sum
    computed in ``d``: the noise is drawn inside the kernel, fused with the
    solve (one pass over the weights, no noise tensor), and bitwise the same
    for any number of threads. A ``-inf`` weight stays ``-inf``. The
    generator advances by one call (also when the kernel then finds a bad
    weight or a disconnected graph).

    Ties (among the perturbed weights), bad input, gradients and devices:
    as :func:`spanning_tree`.

    Raises:
        ValueError: an asymmetric matrix, a NaN or ``+inf`` weight, or a graph
            whose finite edges do not connect every node (naming the matrix).
        TypeError: integer or sparse ``weights``, or a bad ``generator``.
    """
    fn = "sample_spanning_tree"
    w = _square(fn, weights)
    gen = _validate.generator(fn, generator)
    solver = _dispatch.solver(w.device)
    _symmetric(fn, w)
    return solver.spanning_tree(fn, w, _ops.take(gen, fn)).to(w.dtype)
