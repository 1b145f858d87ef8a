"""Graph solvers: gumbelrs.structured.shortest_path_grid against a loop of
scipy.sparse.csgraph.dijkstra, and spanning_tree against a loop of
scipy.sparse.csgraph.minimum_spanning_tree, side by side in one process.

    python benches/structured_graphs.py [--repeats 7] [--threads 2 1] [--grids 256]
                                        [--graphs 1000] [--nodes 50] [--stat median|min]

Cases, each at every thread count of ``--threads``:

- ``--grids`` grids of 12 x 12 and of 32 x 32 uniform float64 costs in
  [0, 1): shortest_path_grid (the path indicator) against scipy's dijkstra
  from the top-left cell of each grid's 8-neighbour digraph (edge weight =
  the cost of the target cell; ``return_predecessors=True``, the path itself
  not extracted). The graphs are built before the timing ("prebuilt"); a
  second scipy column builds each graph (a CSR matrix from the costs,
  vectorised) inside the timing.
- ``--graphs`` symmetric ``--nodes`` x ``--nodes`` uniform float64 weights:
  spanning_tree against minimum_spanning_tree of the negated weights (dense
  input, as the weights come); sample_spanning_tree (noise drawn in the
  kernel) against gumbel_noise, symmetrised and added with torch ops, then
  spanning_tree (the unfused way).

Each case times both sides alternately (median of ``--repeats`` rounds after
a warm-up; ``--stat min``: the minimum); a ratio is the other side's time
over gumbelrs's. Each case first checks that both sides reach the same path
cost or tree weight.

The grid table's last column, "cores busy", is the process CPU time over the
wall time of ``--repeats`` back-to-back shortest_path_grid calls: about the
thread count when the machine gave the calls every core they asked for
(threads of the process that spin while they wait, as OpenMP's do after a
parallel call, count as busy: slightly above 1 is normal for 1 thread), well
below it when other work held a core. Then the 2-thread times say more about
the machine than about the kernel: a 2-thread call ends only when both
threads have run (on OpenMP, torch's threads, the default, even a thread
that found no grid left must be scheduled once before the call returns).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import scipy
import scipy.sparse as sp
import torch
from _timing import alternate
from scipy.sparse.csgraph import dijkstra, minimum_spanning_tree

import gumbelrs
from gumbelrs.structured import sample_spanning_tree, shortest_path_grid, spanning_tree

#: How the rounds of a case are summarised (``--stat``).
STAT: Callable[[list[float]], float] = statistics.median


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


def _grid_graph(costs: np.ndarray, src: np.ndarray, dst: np.ndarray) -> sp.csr_matrix:
    n = costs.size
    return sp.csr_matrix((costs.ravel()[dst], (src, dst)), shape=(n, n))


def _paths(grids: int, size: int, repeats: int) -> dict[str, float]:
    costs = np.random.default_rng(size).random((grids, size, size))
    t = torch.from_numpy(costs)
    src, dst = _edges(size, size)
    graphs = [_grid_graph(c, src, dst) for c in costs]

    def ours():
        return shortest_path_grid(t)

    def prebuilt():
        return [dijkstra(g, indices=0, return_predecessors=True) for g in graphs]

    def built():
        return [dijkstra(_grid_graph(c, src, dst), indices=0, return_predecessors=True)
                for c in costs]

    path = ours().numpy()
    for c, p, (d, _) in zip(costs, path, prebuilt()):
        assert math.isclose((c * p).sum(), d[-1] + c[0, 0], rel_tol=1e-12), "costs differ"
    times = alternate({"ours": ours, "prebuilt": prebuilt, "built": built}, repeats, STAT)
    return {**times, "busy": _busy(ours, repeats)}


def _busy(fn: Callable[[], object], calls: int) -> float:
    """Process CPU seconds per wall second over ``calls`` back-to-back calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


def _trees(graphs: int, n: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(n)
    w = rng.random((graphs, n, n))
    w = np.triu(w, 1) + np.triu(w, 1).transpose(0, 2, 1)
    t = torch.from_numpy(w)
    negated = -w

    def ours():
        return spanning_tree(t)

    def theirs():
        return [minimum_spanning_tree(x) for x in negated]

    def sample():
        return sample_spanning_tree(t, generator=gumbelrs.Generator(0))

    def unfused():
        g = gumbelrs.gumbel_noise(t.shape, dtype=t.dtype, generator=gumbelrs.Generator(0))
        u = g.triu(1)
        return spanning_tree(t + u + u.mT)

    tree = ours().numpy()
    for x, y, m in zip(w, tree, theirs()):
        assert math.isclose(-m.sum(), (np.triu(y, 1) * x).sum(), rel_tol=1e-12), "weights differ"
    assert torch.equal(sample(), unfused()), "samples differ"
    return alternate({"ours": ours, "scipy": theirs, "sample": sample, "unfused": unfused},
                     repeats, STAT)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--grids", type=int, default=256)
    p.add_argument("--graphs", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="how the rounds of a case are summarised (min: steadier on a loaded "
                        "machine)")
    args = p.parse_args(argv)
    global STAT
    STAT = {"median": statistics.median, "min": min}[args.stat]
    print(f"torch {torch.__version__}, scipy {scipy.__version__}, gumbelrs "
          f"{gumbelrs.__version__}, SIMD {gumbelrs._core.simd_level()}")
    ms = 1e3
    print("\n| grids | threads | gumbelrs | scipy (prebuilt) | scipy / gumbelrs | scipy (with "
          "construction) | scipy / gumbelrs | cores busy |\n|---|---|---|---|---|---|---|---|")
    for threads, size in itertools.product(args.threads, (12, 32)):
        gumbelrs.set_num_threads(threads)
        r = _paths(args.grids, size, args.repeats)
        print(f"| {args.grids} x {size}x{size} | {threads} | {r['ours'] * ms:.2f} ms | "
              f"{r['prebuilt'] * ms:.2f} ms | {r['prebuilt'] / r['ours']:.1f} | "
              f"{r['built'] * ms:.2f} ms | {r['built'] / r['ours']:.1f} | {r['busy']:.2f} |")
    print("\n| graphs | threads | spanning_tree | scipy (loop) | scipy / gumbelrs | "
          "sample_spanning_tree | noise + spanning_tree (unfused) | unfused / fused |"
          "\n|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        gumbelrs.set_num_threads(threads)
        r = _trees(args.graphs, args.nodes, args.repeats)
        print(f"| {args.graphs} x ({args.nodes}, {args.nodes}) | {threads} | "
              f"{r['ours'] * ms:.2f} ms | {r['scipy'] * ms:.2f} ms | "
              f"{r['scipy'] / r['ours']:.1f} | {r['sample'] * ms:.2f} ms | "
              f"{r['unfused'] * ms:.2f} ms | {r['unfused'] / r['sample']:.2f} |")


if __name__ == "__main__":
    main()
