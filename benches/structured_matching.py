"""Exact linear assignment: gumbelrs.structured.matching against
scipy.optimize.linear_sum_assignment, side by side in one process.

    python benches/structured_matching.py [--repeats 7] [--threads 2] [--batch 1000]

Cases: a batch of ``--batch`` random 50 x 50 float64 matrices (one call of
matching against a loop of scipy calls), and one 500 x 500 and one
1000 x 1000 matrix (uniform weights in [0, 1), maximized). Each case times
both sides alternately (median of ``--repeats`` rounds, after a warm-up);
the ratio is scipy's time over gumbelrs's. Every round checks that both
sides reach the same total weight.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import scipy
import torch
from scipy.optimize import linear_sum_assignment

import gumbelrs
from gumbelrs.structured import matching


def _total(w: np.ndarray, cols: np.ndarray) -> float:
    return math.fsum(w[np.arange(len(cols)), cols])


def _case(w: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median seconds of matching on ``w`` (``(batch, n, m)``) and of the loop
    of scipy calls, timed alternately."""
    t = torch.from_numpy(w)

    def ours():
        return matching(t).numpy()

    def theirs():
        return np.stack([linear_sum_assignment(x, maximize=True)[1] for x in w])

    a, b = ours(), theirs()
    assert all(_total(x, p) == _total(x, q) for x, p, q in zip(w, a, b)), "totals differ"
    times: dict[str, list[float]] = {"ours": [], "scipy": []}
    for _ in range(repeats):
        for name, f in (("ours", ours), ("scipy", theirs)):
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return statistics.median(times["ours"]), statistics.median(times["scipy"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1000)
    args = p.parse_args(argv)
    gumbelrs.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, scipy {scipy.__version__}, gumbelrs "
          f"{gumbelrs.__version__}, {gumbelrs.get_num_threads()} threads, SIMD "
          f"{gumbelrs._core.simd_level()}")
    rng = np.random.default_rng(0)
    cases = [(f"{args.batch} x (50, 50)", rng.random((args.batch, 50, 50))),
             ("1 x (500, 500)", rng.random((1, 500, 500))),
             ("1 x (1000, 1000)", rng.random((1, 1000, 1000)))]
    print("\n| weights | gumbelrs | scipy (loop) | scipy / gumbelrs |\n|---|---|---|---|")
    for title, w in cases:
        ours, theirs = _case(w, args.repeats)
        print(f"| {title} | {ours * 1e3:.2f} ms | {theirs * 1e3:.2f} ms | {theirs / ours:.2f} |")


if __name__ == "__main__":
    main()
