"""Parallel calls after an idle gap: gumbelrs kernels and a torch op timed back
to back, after sleeping, and right after a torch matmul, in one process.

    python benches/idle_gaps.py [--threads 2] [--repeats 31] [--gaps 0 2 20 50]
    GUMBELRS_THREADS=rayon python benches/idle_gaps.py   # our own thread pool

On Linux with torch on OpenMP our parallel kernels run on torch's own OpenMP
threads (``GOMP_parallel``), so they wait, like torch's ops, for any worker
that has gone to sleep: on some virtual machines that wait takes
milliseconds once the workers have been idle for tens of milliseconds. With
``GUMBELRS_THREADS=rayon`` they run on a pool of our own, which wakes fast
after a gap but competes with torch's workers (which keep spinning for a
while after each torch op) right after torch work. This script shows which
applies on a given machine. Each cell is the median over ``--repeats`` calls
of the call alone (the sleep or the matmul before it is not timed).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import gumbelrs
from gumbelrs.structured import shortest_path_grid


def _median_ms(call: Callable[[], object], before: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        before()
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--gaps", type=float, nargs="+", default=[0, 2, 20, 50],
                    help="idle gaps before each call, in ms")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    gumbelrs.set_num_threads(args.threads)
    pool = "torch's OpenMP threads" if gumbelrs._core.uses_openmp() else "own rayon pool"
    print(f"torch {torch.__version__}, gumbelrs {gumbelrs.__version__}, {args.threads} threads, "
          f"kernels on {pool}")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(512, 1000, generator=gen)
    costs = torch.rand(256, 12, 12, generator=gen, dtype=torch.float64)
    x = torch.rand(1 << 21, generator=gen)
    a, b = torch.rand(4096, 256, generator=gen), torch.rand(256, 256, generator=gen)
    calls = {
        "gumbel_softmax (512, 1000) float32": lambda: gumbelrs.gumbel_softmax(logits, tau=0.5),
        "shortest_path_grid (256, 12, 12) float64": lambda: shortest_path_grid(costs),
        "torch sum of 2M float32": lambda: x.sum(),
    }
    befores: dict[str, Callable[[], object]] = {
        f"after {g:g} ms idle": (lambda g=g: time.sleep(g / 1e3)) for g in args.gaps}
    befores["after a torch matmul"] = lambda: torch.mm(a, b)
    print("\n| call | " + " | ".join(befores) + " |\n|---|" + "---|" * len(befores))
    for name, call in calls.items():
        call()
        cells = [f"{_median_ms(call, before, args.repeats):.3f} ms" for before in befores.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
