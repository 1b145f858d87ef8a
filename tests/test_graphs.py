"""Graph solvers: gumbelrs.structured.shortest_path_grid against
scipy.sparse.csgraph.dijkstra, spanning_tree against
scipy.sparse.csgraph.minimum_spanning_tree and Kruskal's algorithm, and
sample_spanning_tree against every spanning tree of the perturbed weights.

Many grids (graphs) of one shape go to scipy as one block-diagonal graph: a
single dijkstra call with ``min_only=True`` from every grid's start cell
gives each cell the distance from its own grid's start (no other grid
reaches it)."""

import functools
import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy import ndimage
from scipy.sparse.csgraph import connected_components, dijkstra, minimum_spanning_tree

import gumbelrs
from gumbelrs import _core, _cuda, _dispatch
from gumbelrs.structured import sample_spanning_tree, shortest_path_grid, spanning_tree

from .conftest import raises

COSTS_RULE = "costs must be non-negative and finite (a path costs the sum of its cells' costs)"
TREE_RULE = ("weights must be finite or -inf (-inf forbids an edge; +inf has no maximum-weight "
             "tree)")

# ---------------------------------------------------------------- shortest paths


def _edges(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Source and target cells of every 8-neighbour step of an ``h x w`` grid."""
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    src, dst = [], []
    for dr, dc in itertools.product((-1, 0, 1), repeat=2):
        if dr == dc == 0:
            continue
        ok = (r + dr >= 0) & (r + dr < h) & (c + dc >= 0) & (c + dc < w)
        src.append((r * w + c)[ok])
        dst.append(((r + dr) * w + c + dc)[ok])
    return np.concatenate(src), np.concatenate(dst)


def _distances(costs: np.ndarray, scale: float = 1.0, step: float = 0.0) -> np.ndarray:
    """scipy's distance of every cell of ``costs`` ``(B, H, W)`` from its grid's
    start, each step weighing ``scale`` times the cost of its target cell
    plus ``step``: ``(B, H * W)`` (the start cell's own cost not included)."""
    b, h, w = costs.shape
    n = h * w
    src, dst = _edges(h, w)
    off = (np.arange(b) * n)[:, None]
    flat = costs.reshape(b, n)
    g = sp.csr_matrix(((flat[:, dst] * scale + step).ravel(),
                       ((src + off).ravel(), (dst + off).ravel())), shape=(b * n, b * n))
    d = dijkstra(g, directed=True, indices=np.arange(b) * n, min_only=True)
    return d.reshape(b, n)


def _check_paths(costs: torch.Tensor, path: torch.Tensor) -> int:
    """Asserts that each grid's ``path`` is an 8-neighbour path from the
    top-left to the bottom-right cell, of no cell touching another unless
    they follow each other, at scipy's optimal cost; returns the number of
    grids checked."""
    assert path.shape == costs.shape and path.dtype == costs.dtype
    h, w = costs.shape[-2:]
    c = costs.double().reshape(-1, h, w)
    p = path.double().reshape(-1, h, w)
    assert ((p == 0) | (p == 1)).all()
    assert (p[:, 0, 0] == 1).all() and (p[:, -1, -1] == 1).all()
    # Each cell's neighbours on the path: 1 for the two ends, 2 for the others.
    around = torch.nn.functional.conv2d(p[:, None], torch.ones(1, 1, 3, 3, dtype=p.dtype),
                                        padding=1)[:, 0] - p
    want = torch.full_like(p, 2.0)
    want[:, 0, 0] = want[:, -1, -1] = 1.0 if h * w > 1 else 0.0
    assert torch.equal(around * p, want * p)
    # One connected piece per grid: stacked with an empty row between grids.
    stacked = torch.nn.functional.pad(p, (0, 0, 0, 1)).reshape(-1, w).numpy()
    assert ndimage.label(stacked, structure=np.ones((3, 3)))[1] == len(p)
    best = _distances(c.numpy())[:, -1] + c[:, 0, 0].numpy()
    got = (p * c).sum((1, 2)).numpy()
    np.testing.assert_allclose(got, best, rtol=1e-12, atol=0)
    return len(p)


def _shapes() -> list[tuple[int, int]]:
    lines = [(1, 1), (1, 2), (2, 1), (1, 9), (9, 1), (1, 40), (40, 1)]
    return lines + [(h, w) for h in (2, 3, 5, 8, 13) for w in (2, 4, 7, 16)] + [(30, 30)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("values", ["uniform", "spread", "ties", "integers"])
def test_paths_have_scipys_optimal_cost(dtype, values):
    """2,240 grids of every shape in ``_shapes`` for each dtype: uniform costs in
    [0, 1), costs over six orders of magnitude, costs in {0, 1} (most paths
    tie, zeros included) and integers in [0, 100)."""
    g = torch.Generator().manual_seed(len(values) + (dtype == torch.float32))
    checked = 0
    for h, w in _shapes():
        shape = (20, h, w)
        if values == "uniform":
            c = torch.rand(shape, generator=g, dtype=torch.float64)
        elif values == "spread":
            c = torch.rand(shape, generator=g, dtype=torch.float64) * \
                10.0 ** torch.randint(-3, 4, shape, generator=g)
        else:
            c = torch.randint(0, 2 if values == "ties" else 100, shape, generator=g).double()
        checked += _check_paths(c.to(dtype), shortest_path_grid(c.to(dtype)))
    assert checked == 20 * len(_shapes())


def _documented_path(costs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The path the docstring describes, from scipy's labels ``cost * k +
    steps`` of every cell: traced back from the bottom-right cell, each step
    to the first neighbour (row-major) that labels the cell."""
    h, w = costs.shape
    out = np.zeros((h, w))
    r, c = h - 1, w - 1
    out[r, c] = 1
    while (r, c) != (0, 0):
        want = labels[r * w + c] - costs[r, c] * k - 1
        r, c = next((y, x) for y in (r - 1, r, r + 1) for x in (c - 1, c, c + 1)
                    if 0 <= y < h and 0 <= x < w and (y, x) != (r, c)
                    and labels[y * w + x] == want)
        out[r, c] = 1
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ties_follow_the_documented_rule(dtype):
    """Integer costs in {0, 1, 2} and in {0, ..., 9}, every shape in
    ``_shapes`` but the largest: the path is exactly the documented one,
    traced back on scipy's exact labels (cost, then steps, as one integer
    ``cost * k + steps`` with ``k`` above any number of steps)."""
    g = torch.Generator().manual_seed(11)
    checked = 0
    for h, w in _shapes()[:-1]:
        for top in (3, 10):
            c = torch.randint(0, top, (8, h, w), generator=g).double()
            k = h * w
            cn = c.numpy()
            labels = _distances(cn, k, 1.0) + cn[:, :1, 0] * k
            got = shortest_path_grid(c.to(dtype))
            for cb, lb, pb in zip(cn, labels, got):
                assert np.array_equal(pb.double().numpy(), _documented_path(cb, lb, k))
                checked += 1
    assert checked == 16 * (len(_shapes()) - 1)


def test_constant_grids_take_the_diagonal_then_the_top_row_or_left_column():
    """Every path of max(H, W) cells ties; traced back from the corner, the
    first neighbour of each cell is up-left while there is one, then left
    along the top row (or up the left column)."""
    for h, w in [(1, 1), (1, 5), (5, 1), (3, 5), (5, 3), (4, 4)]:
        want = torch.zeros(h, w)
        r, c = h - 1, w - 1
        want[r, c] = 1
        while (r, c) != (0, 0):
            r, c = r - (r > 0), c - (c > 0)
            want[r, c] = 1
        for value in (0.0, 1.0, 2.5):
            assert torch.equal(shortest_path_grid(torch.full((2, h, w), value)),
                               want.expand(2, h, w)), (h, w, value)


def test_costs_whose_sums_overflow_float64_get_the_path_of_their_scaled_values():
    g = torch.Generator().manual_seed(12)
    c = torch.randint(0, 200, (50, 6, 6), generator=g).double()
    assert torch.equal(shortest_path_grid(c * 2.0**1015), shortest_path_grid(c))
    top = torch.finfo(torch.float64).max
    assert torch.equal(shortest_path_grid(torch.full((3, 3), top, dtype=torch.float64)),
                       torch.eye(3, dtype=torch.float64))


def test_results_are_the_same_for_any_thread_count_and_simd_level():
    g = torch.Generator().manual_seed(5)
    ties = torch.randint(0, 3, (300, 12, 12), generator=g).double()
    spread = torch.rand(100, 32, 32, generator=g)
    tied_graphs = _graphs(g, 300, 20, "ties", 0.0)
    graphs = _graphs(g, 200, 30, "normal", 0.0).float()
    level = _core.simd_level()
    runs = []
    try:
        for threads, simd in [(1, level), (2, level), (2, "avx2"), (2, "portable")]:
            gumbelrs.set_num_threads(threads)
            _core.set_max_simd_level(simd)
            runs.append((shortest_path_grid(ties), shortest_path_grid(spread),
                         spanning_tree(tied_graphs), spanning_tree(graphs),
                         sample_spanning_tree(graphs, generator=gumbelrs.Generator(9))))
    finally:
        _core.set_max_simd_level(level)
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))


def test_path_batch_shapes_and_half_precision():
    g = torch.Generator().manual_seed(2)
    for shape in [(3, 4), (2, 3, 4, 5), (0, 3, 3), (2, 0, 1, 1)]:
        c = torch.rand(shape, generator=g)
        y = shortest_path_grid(c)
        flat = c.reshape(-1, *shape[-2:])
        each = [shortest_path_grid(x) for x in flat]
        assert y.shape == shape
        assert torch.equal(y.reshape(-1, *shape[-2:]), torch.stack(each) if each else flat)
    c = torch.rand(30, 6, 7, generator=g)
    for dtype in (torch.float16, torch.bfloat16):
        y = shortest_path_grid(c.to(dtype))
        assert y.dtype == dtype and torch.equal(y.float(), shortest_path_grid(c.to(dtype).float()))


def test_costs_are_read_not_modified_in_any_layout():
    g = torch.Generator().manual_seed(3)
    base = torch.rand(3, 7, 5, generator=g, dtype=torch.float64)
    view = base.transpose(-2, -1)  # (3, 5, 7), not contiguous
    before = base.clone()
    leaf = view.clone().requires_grad_(True)
    y = shortest_path_grid(view)
    assert torch.equal(y, shortest_path_grid(view.contiguous())) and torch.equal(base, before)
    out = shortest_path_grid(leaf)
    assert torch.equal(out, y) and not out.requires_grad and torch.equal(leaf.detach(), view)


# ---------------------------------------------------------------- spanning trees


def _symmetric(upper: torch.Tensor) -> torch.Tensor:
    """The symmetric matrices whose upper triangles are those of ``upper``
    (the diagonal kept)."""
    u = upper.triu(1)
    return u + u.mT + torch.diag_embed(upper.diagonal(dim1=-2, dim2=-1))


def _graphs(g: torch.Generator, batch: int, n: int, values: str, forbid: float) -> torch.Tensor:
    """``(batch, n, n)`` symmetric float64 weights, each edge -inf with
    probability ``forbid``, the diagonal random (it is ignored)."""
    shape = (batch, n, n)
    if values == "normal":
        w = torch.randn(shape, generator=g, dtype=torch.float64) * 10.0
    else:
        w = torch.randint(-5 if values == "integers" else 0, 6 if values == "integers" else 2,
                          shape, generator=g).double()
    w = w.masked_fill(torch.rand(shape, generator=g) < forbid, -math.inf)
    return _symmetric(w)


def _block_diagonal(values: np.ndarray) -> sp.csr_matrix:
    """The graphs of ``values`` ``(B, n, n)`` (entries other than 0 are edges)
    as one block-diagonal graph on ``B * n`` vertices."""
    b, i, j = np.nonzero(values)
    n = values.shape[-1]
    size = len(values) * n
    return sp.csr_matrix((values[b, i, j], (b * n + i, b * n + j)), shape=(size, size))


def _connected(edges: np.ndarray) -> np.ndarray:
    """Whether each graph of the 0/1 ``edges`` ``(B, n, n)`` is connected."""
    labels = connected_components(_block_diagonal(edges), directed=False)[1]
    labels = labels.reshape(edges.shape[:2])
    return (labels == labels[:, :1]).all(1)


def _allowed(w: np.ndarray) -> np.ndarray:
    """The edges that weights ``w`` ``(B, n, n)`` allow: finite, off the diagonal."""
    return np.isfinite(w) & ~np.eye(w.shape[-1], dtype=bool)


def _scipy_trees(w: np.ndarray) -> np.ndarray:
    """scipy's maximum spanning trees of the connected float64 weights ``w``
    ``(B, n, n)`` as symmetric 0/1 matrices: minimum_spanning_tree of ``top
    + 1 - w``, positive on every allowed edge, its zeros absent edges."""
    allowed = _allowed(w)
    top = w[allowed].max() if allowed.any() else 0.0
    forest = minimum_spanning_tree(_block_diagonal(np.where(allowed, top + 1.0 - w, 0.0)))
    rows, cols = forest.nonzero()
    n = w.shape[-1]
    out = np.zeros(w.shape)
    out[rows // n, rows % n, cols % n] = out[rows // n, cols % n, rows % n] = 1
    return out


def _totals(w: np.ndarray, trees: np.ndarray) -> np.ndarray:
    """The total weight of each tree (``(B, n, n)`` 0/1) under ``w``."""
    return np.where(np.triu(trees, 1) == 1, w, 0.0).sum((1, 2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("values", ["normal", "ties", "integers"])
def test_trees_have_scipys_maximum_weight(dtype, values):
    """1,600 graphs of 1 to 40 vertices for each case, two thirds of them with
    -inf edges (20% or 60% of the edges): the connected ones get a spanning
    tree of scipy's maximum weight (exactly for integer weights); a batch with
    a disconnected graph names the first."""
    g = torch.Generator().manual_seed(len(values) + (dtype == torch.float32))
    checked = disconnected = 0
    for n in (1, 2, 3, 4, 5, 6, 8, 10, 13, 17, 20, 25, 30, 33, 37, 40):
        w = _graphs(g, 100, n, values, (0.0, 0.2, 0.6)[n % 3]).to(dtype)
        wn = w.double().numpy()
        connected = _connected(_allowed(wn))
        if not connected.all():
            first = int(np.argmin(connected))
            with raises(ValueError, f"spanning_tree: no spanning tree for weights[{first}]: its "
                                    f"forbidden (-inf) edges leave its {n} vertices "
                                    "disconnected"):
                spanning_tree(w)
            disconnected += int((~connected).sum())
        trees = spanning_tree(w[connected])
        assert trees.dtype == dtype
        t, x = trees.double().numpy(), wn[connected]
        assert np.array_equal(t, t.transpose(0, 2, 1)) and not t.diagonal(0, 1, 2).any()
        assert (t.sum((1, 2)) == 2 * (n - 1)).all() and _allowed(x)[t == 1].all()
        assert _connected(t).all()
        ours, best = _totals(x, t), _totals(x, _scipy_trees(x))
        if values == "normal":
            np.testing.assert_allclose(ours, best, rtol=1e-12, atol=1e-9)
        else:
            assert np.array_equal(ours, best)
        checked += len(t)
    assert checked + disconnected == 1600 and disconnected > 100 and checked > 1000


def _kruskal(w: np.ndarray) -> np.ndarray:
    """Kruskal's tree in the documented order: weight descending, then (i, j)."""
    n = len(w)
    edges = sorted((-w[i, j], i, j) for i in range(n) for j in range(i + 1, n)
                    if w[i, j] > -math.inf)
    root = list(range(n))

    def find(v):
        while root[v] != v:
            v = root[v]
        return v

    out = np.zeros((n, n))
    for _, i, j in edges:
        a, b = find(i), find(j)
        if a != b:
            root[a] = b
            out[i, j] = out[j, i] = 1
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ties_give_kruskals_tree_in_the_documented_order(dtype):
    g = torch.Generator().manual_seed(4)
    checked = 0
    for n in range(1, 13):
        w = _graphs(g, 60, n, "ties", 0.0)
        for x, t in zip(w.numpy(), spanning_tree(w.to(dtype)).double().numpy()):
            assert np.array_equal(t, _kruskal(x))
            checked += 1
    assert checked == 720
    star = torch.zeros(5, 5)
    star[0, 1:] = star[1:, 0] = 1
    assert torch.equal(spanning_tree(torch.full((5, 5), 3.0)), star)
    assert torch.equal(spanning_tree(torch.full((1, 1), math.nan)), torch.zeros(1, 1))


def test_tree_batch_shapes_half_precision_and_cuda_dispatch():
    g = torch.Generator().manual_seed(7)
    for shape in [(4, 4), (2, 3, 5, 5), (0, 3, 3), (2, 0, 2, 2), (3, 1, 1)]:
        w = _symmetric(torch.randn(shape, generator=g))
        t = spanning_tree(w)
        flat = w.reshape(-1, *shape[-2:])
        each = [spanning_tree(x) for x in flat]
        assert t.shape == shape
        assert torch.equal(t.reshape(-1, *shape[-2:]), torch.stack(each) if each else flat)
    w = _symmetric(torch.randn(20, 9, 9, generator=g))
    for dtype in (torch.float16, torch.bfloat16):
        t = spanning_tree(w.to(dtype))
        assert t.dtype == dtype and torch.equal(t.float(), spanning_tree(w.to(dtype).float()))
    # The dispatch; on a GPU, CUDA tensors take the same host path.
    assert _dispatch.solver(torch.device("cuda", 0)) is _cuda
    assert torch.equal(_cuda.spanning_tree("spanning_tree", w, None), spanning_tree(w))
    c = torch.rand(5, 4, 6, generator=g)
    assert torch.equal(_cuda.shortest_path_grid("shortest_path_grid", c), shortest_path_grid(c))


def test_weights_are_read_not_modified_in_any_layout():
    g = torch.Generator().manual_seed(8)
    base = _graphs(g, 3, 6, "normal", 0.2)
    base[:, 0, 1:] = base[:, 1:, 0] = 0.0  # connected through vertex 0
    w = base.transpose(-2, -1)  # the same (symmetric) matrices, not contiguous
    before = base.clone()
    leaf = w.clone().requires_grad_(True)
    t = spanning_tree(w)
    assert torch.equal(t, spanning_tree(w.contiguous())) and torch.equal(base, before)
    out = sample_spanning_tree(leaf, generator=gumbelrs.Generator(1))
    assert torch.equal(out, sample_spanning_tree(w.contiguous(), generator=gumbelrs.Generator(1)))
    assert not out.requires_grad and torch.equal(leaf.detach(), w)


# ---------------------------------------------------------------- random spanning trees


@functools.cache
def _all_trees(n: int) -> np.ndarray:
    """Every spanning tree of the complete graph on ``n`` vertices (from the
    Prüfer sequences): ``(n ** (n - 2), n (n - 1) / 2)`` 0/1 rows over the
    edges ``(i, j)``, ``i < j``, in row-major order."""
    index = {e: k for k, e in enumerate(itertools.combinations(range(n), 2))}
    rows = []
    for seq in itertools.product(range(n), repeat=max(n - 2, 0)):
        degree = [1] * n
        for v in seq:
            degree[v] += 1
        row = np.zeros(len(index))
        for v in seq:
            leaf = min(u for u in range(n) if degree[u] == 1)
            row[index[min(leaf, v), max(leaf, v)]] = 1
            degree[leaf] -= 1
            degree[v] -= 1
        u, v = (x for x in range(n) if degree[x] == 1)
        row[index[u, v]] = 1
        rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_sample_is_the_heaviest_of_all_trees_of_the_perturbed_weights(dtype):
    """3,000 draws on graphs of 2 to 6 vertices (integer weights in {0, 1},
    some edges forbidden): the sample is the spanning tree of the largest
    perturbed weight among all of them, the perturbed weights being rebuilt
    from the same generator state with gumbel_noise; it is also exactly the
    spanning_tree of those weights."""
    g = torch.Generator().manual_seed(9)
    gen = gumbelrs.Generator(20261125)
    for n in range(2, 7):
        w = _graphs(g, 600, n, "ties", 0.1).to(dtype)
        w = w[_connected(_allowed(w.double().numpy()))]
        state = gen.get_state()
        sample = sample_spanning_tree(w, generator=gen)
        noise = gumbelrs.gumbel_noise(w.shape, dtype=dtype,
                                      generator=gumbelrs.Generator().set_state(state))
        u = noise.triu(1)
        perturbed = w + u + u.mT
        assert torch.equal(sample, spanning_tree(perturbed))
        iu = torch.triu_indices(n, n, 1)
        edges = perturbed[:, iu[0], iu[1]].double()  # (batch, edges)
        edges = edges.masked_fill(edges == -math.inf, -1e30)
        trees = torch.from_numpy(_all_trees(n))  # (trees, edges)
        totals = edges @ trees.T  # (batch, trees)
        ours = sample[:, iu[0], iu[1]].double() @ trees.T == n - 1  # (batch, trees)
        assert (ours.sum(1) == 1).all()
        assert torch.equal(totals[ours], totals.max(1).values)
        assert len(w) > 500


def test_sample_noise_follows_the_generator_and_torchs_rng():
    w = _symmetric(torch.randn(50, 7, 7, generator=torch.Generator().manual_seed(1)))
    gen = gumbelrs.Generator(3)
    a = sample_spanning_tree(w, generator=gen)
    b = sample_spanning_tree(w, generator=gen)
    assert gen.offset == 2 and not torch.equal(a, b)
    assert torch.equal(a, sample_spanning_tree(w, generator=gumbelrs.Generator(3)))
    torch.manual_seed(0)
    c = sample_spanning_tree(w)
    torch.manual_seed(0)
    assert torch.equal(c, sample_spanning_tree(w))


# ---------------------------------------------------------------- bad input


def test_bad_costs_get_exact_messages():
    fn = "shortest_path_grid"
    with raises(TypeError, f"{fn}: costs must be a torch.Tensor, got list"):
        shortest_path_grid([[1.0]])
    for dtype in (torch.int64, torch.bool):
        with raises(TypeError, f"{fn}: costs must be a floating-point tensor (float16, bfloat16, "
                               f"float32 or float64), got dtype {dtype}; convert them with "
                               "costs.double() (exact for integers up to 2**53)"):
            shortest_path_grid(torch.ones(2, 2, dtype=dtype))
    with raises(ValueError, f"{fn}: costs must be a grid or a batch of grids (*batch, H, W), "
                            "got a 1-d tensor of shape (5,)"):
        shortest_path_grid(torch.zeros(5))
    for shape in [(0, 3), (3, 0), (2, 0, 0)]:
        with raises(ValueError, f"{fn}: costs must have at least one row and one column (shape "
                                f"(*batch, H, W) with H, W >= 1), got shape {shape}"):
            shortest_path_grid(torch.zeros(shape))
    with raises(ValueError, f"{fn}: a grid of 65535 x 65535 cells is too large for the solver; "
                            "(H + 2) * (W + 2) must be below 2**31"):
        shortest_path_grid(torch.zeros(()).expand(65535, 65535))
    with raises(RuntimeError, "gumbelrs: tensors on device 'meta' are not supported; use CPU "
                              "or CUDA tensors"):
        shortest_path_grid(torch.zeros(2, 2, device="meta"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_negative_and_non_finite_costs_name_the_first(dtype):
    fn = "shortest_path_grid"
    c = torch.ones(2, 3, 4, dtype=dtype)
    c[1, 2, 3] = math.inf
    with raises(ValueError, f"{fn}: costs[1, 2, 3] is +inf; {COSTS_RULE}"):
        shortest_path_grid(c)
    c[1, 1, 0] = math.inf
    with raises(ValueError, f"{fn}: costs[1, 1, 0] is +inf; {COSTS_RULE}"):
        shortest_path_grid(c)
    # Negative and NaN costs are found before any +inf.
    c[1, 1, 2] = -0.5
    with raises(ValueError, f"{fn}: costs[1, 1, 2] is -0.5; {COSTS_RULE}"):
        shortest_path_grid(c)
    c[1, 0, 3] = math.nan
    with raises(ValueError, f"{fn}: costs[1, 0, 3] is NaN; {COSTS_RULE}"):
        shortest_path_grid(c)
    c[0, 2, 2] = -math.inf
    with raises(ValueError, f"{fn}: costs[0, 2, 2] is -inf; {COSTS_RULE}"):
        shortest_path_grid(c)
    assert torch.equal(shortest_path_grid(torch.tensor([[-0.0]], dtype=dtype)),
                       torch.ones(1, 1, dtype=dtype))


def _first_bad_cost(c):
    """The message of the first negative or NaN cost of ``c`` in row-major
    order, else of its first +inf: a plain reference for the kernel's
    checks."""
    flat = c.reshape(-1)
    bad = (flat < 0) | flat.isnan()
    k = int(bad.nonzero()[0, 0]) if bad.any() else int((flat == math.inf).nonzero()[0, 0])
    at = ", ".join(map(str, np.unravel_index(k, c.shape)))
    v = flat[k].item()
    value = ("NaN" if math.isnan(v) else "+inf" if v == math.inf else "-inf" if v == -math.inf
             else repr(v))
    return f"shortest_path_grid: costs[{at}] is {value}; {COSTS_RULE}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_bad_costs_anywhere_in_a_batch_are_named_as_before(dtype):
    """The kernel finds negative, NaN and +inf costs as it loads the grids;
    the message names the first negative or NaN cost of the whole batch
    before any +inf (as a vectorised check would), for a bad grid anywhere
    in a batch solved by several ranges and threads, whose good grids solve
    as before once the bad one is fixed."""
    g = torch.Generator().manual_seed(31)
    costs = torch.rand(48, 5, 7, generator=g).to(dtype)
    want = shortest_path_grid(costs)
    tiny = -(2.0 ** -14) if dtype == torch.float16 else -1e-30
    for trial in range(60):
        c = costs.clone()
        n_bad = 1 + trial % 3
        picks = torch.randint(0, c.numel(), (n_bad,), generator=g)
        values = [-0.5, -math.inf, math.nan, math.inf, tiny]
        for k, pick in enumerate(picks.tolist()):
            c.view(-1)[pick] = values[(trial + k) % len(values)]
        for threads in (1, 2):
            gumbelrs.set_num_threads(threads)
            with raises(ValueError, _first_bad_cost(c)):
                shortest_path_grid(c)
    assert torch.equal(shortest_path_grid(costs), want)


def test_kept_buffers_give_the_same_paths_across_shapes_and_errors():
    """Each thread keeps its buffers for the next range or call: paths are
    those of each grid solved alone, for any thread count, whatever shape
    or bad grid the thread solved before."""
    g = torch.Generator().manual_seed(32)
    batches = [torch.randint(0, 4, (40, h, w), generator=g).double() for h, w in
               [(6, 9), (12, 12), (6, 9), (1, 1), (12, 12)]]
    alone = [torch.stack([shortest_path_grid(c) for c in b]) for b in batches]
    bad = batches[1].clone()
    bad[30, 4, 4] = math.nan
    for threads in (1, 2):
        gumbelrs.set_num_threads(threads)
        for b, want in zip(batches, alone):
            with pytest.raises(ValueError):
                shortest_path_grid(bad)
            assert torch.equal(shortest_path_grid(b), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_upper_reads_the_upper_triangle_alone(dtype):
    g = torch.Generator().manual_seed(33)
    w = torch.randn(20, 9, 9, generator=g, dtype=dtype)
    u = w.triu(1)
    want = spanning_tree(u + u.mT)
    assert torch.equal(spanning_tree(w, upper=True), want)
    w_bad = w.clone()
    w_bad[3, 5, 2] = math.nan  # lower triangle: ignored
    w_bad[4, 1, 1] = math.inf  # diagonal: ignored
    assert torch.equal(spanning_tree(w_bad, upper=True), want)
    w_bad[7, 2, 6] = math.inf
    w_bad[9, 0, 3] = math.nan
    with raises(ValueError, f"spanning_tree: weights[7, 2, 6] is +inf; {TREE_RULE}"):
        spanning_tree(w_bad, upper=True)
    w_bad[7, 2, 6] = 0.0
    with raises(ValueError, f"spanning_tree: weights[9, 0, 3] is NaN; {TREE_RULE}"):
        spanning_tree(w_bad, upper=True)
    with raises(TypeError, "spanning_tree: upper must be True or False, got int 1"):
        spanning_tree(w, upper=1)


@pytest.mark.parametrize("fn", ["spanning_tree", "sample_spanning_tree"])
def test_bad_weights_get_exact_messages(fn):
    op = {"spanning_tree": spanning_tree, "sample_spanning_tree": sample_spanning_tree}[fn]
    with raises(TypeError, f"{fn}: weights must be a torch.Tensor, got list"):
        op([[1.0]])
    with raises(TypeError, f"{fn}: weights must be a floating-point tensor (float16, bfloat16, "
                           "float32 or float64), got dtype torch.int64; convert them with "
                           "weights.double() (exact for integers up to 2**53)"):
        op(torch.ones(2, 2, dtype=torch.int64))
    for shape in [(5,), (2, 3), (2, 3, 4)]:
        with raises(ValueError, f"{fn}: weights must be a square matrix or a batch of them "
                                f"(*batch, n, n), got shape {shape}"):
            op(torch.zeros(shape))
    for shape in [(0, 0), (3, 0, 0)]:
        with raises(ValueError, f"{fn}: weights have n = 0 vertices (shape {shape}); a "
                                "spanning tree needs at least one"):
            op(torch.zeros(shape))
    with raises(RuntimeError, "gumbelrs: tensors on device 'meta' are not supported; use CPU "
                              "or CUDA tensors"):
        op(torch.zeros(2, 2, device="meta"))
    w = torch.zeros(2, 3, 3)
    w[1, 2, 0] = 2.0
    w[1, 0, 2] = 1.0
    w[1, 1, 1] = math.nan  # the diagonal is ignored
    with raises(ValueError, f"{fn}: weights must be symmetric (weights[..., i, j] == "
                            "weights[..., j, i] for i != j; the diagonal is ignored), but "
                            "weights[1, 0, 2] = 1.0 and weights[1, 2, 0] = 2.0"):
        op(w)
    w[0, 1, 0] = -math.inf
    with raises(ValueError, f"{fn}: weights must be symmetric (weights[..., i, j] == "
                            "weights[..., j, i] for i != j; the diagonal is ignored), but "
                            "weights[0, 0, 1] = 0.0 and weights[0, 1, 0] = -inf"):
        op(w)
    # NaN off the diagonal comes first, wherever it is.
    w[1, 2, 1] = math.nan
    with raises(ValueError, f"{fn}: weights[1, 2, 1] is NaN; {TREE_RULE}"):
        op(w)
    if fn == "sample_spanning_tree":
        with raises(TypeError, f"{fn}: generator must be a gumbelrs.Generator or None, got "
                               "torch._C.Generator"):
            op(torch.zeros(2, 2), generator=torch.Generator())


@pytest.mark.parametrize("fn", ["spanning_tree", "sample_spanning_tree"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unbounded_weights_and_disconnected_graphs_name_the_first(fn, dtype):
    op = {"spanning_tree": spanning_tree, "sample_spanning_tree": sample_spanning_tree}[fn]
    w = torch.zeros(2, 3, 4, 4, dtype=dtype)
    w[1, 2, 3, :3] = w[1, 2, :3, 3] = -math.inf  # vertex 3 cut off
    w[1, 1, 0, :] = w[1, 1, :, 0] = -math.inf  # vertex 0 cut off
    with raises(ValueError, f"{fn}: no spanning tree for weights[1, 1]: its forbidden (-inf) "
                            "edges leave its 4 vertices disconnected"):
        op(w)
    with raises(ValueError, f"{fn}: no spanning tree for weights: its forbidden (-inf) edges "
                            "leave its 4 vertices disconnected"):
        op(w[1, 2])
    w[1, 1, 0, 0] = math.inf  # the diagonal is ignored
    with raises(ValueError, f"{fn}: no spanning tree for weights[1, 1]: its forbidden (-inf) "
                            "edges leave its 4 vertices disconnected"):
        op(w)
    # A +inf weight anywhere is reported before a disconnected graph.
    w[1, 2, 1, 2] = w[1, 2, 2, 1] = math.inf
    with raises(ValueError, f"{fn}: weights[1, 2, 1, 2] is +inf; {TREE_RULE}"):
        op(w)
    assert torch.equal(op(torch.full((1, 1), -math.inf, dtype=dtype)),
                       torch.zeros(1, 1, dtype=dtype))
