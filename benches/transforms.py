"""Cost of the torch integration: vmap against a loop and one stacked call,
and the per-call cost of the default stream, side by side with torch.

    python benches/transforms.py [--repeats 21] [--batch 64]

Each case is timed alternately with the others in one process (median of
``--repeats`` rounds, after warm-up); ratios are to the first row of each group.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.func import vmap

import gumbelrs


def _median(fns: dict, repeats: int, inner: int) -> dict:
    times: dict = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def vmap_cases(batch: int, rows: int, cats: int) -> dict:
    x = torch.randn(batch, rows, cats)
    g = gumbelrs.Generator(0)

    def one(t):
        return gumbelrs.gumbel_softmax(t, 0.5, generator=g)

    return {
        "one call on the stacked batch": lambda: one(x),
        "vmap, randomness='different'": lambda: vmap(one, randomness="different")(x),
        "vmap, randomness='same'": lambda: vmap(one, randomness="same")(x),
        "Python loop of calls": lambda: torch.stack([one(x[b]) for b in range(batch)]),
        "torch F.gumbel_softmax, vmap 'different'": lambda: vmap(
            lambda t: torch.nn.functional.gumbel_softmax(t, 0.5), randomness="different")(x),
    }


def call_cases(rows: int, cats: int) -> dict:
    x = torch.randn(rows, cats)
    g = gumbelrs.Generator(0)
    return {
        "explicit Generator": lambda: gumbelrs.gumbel_softmax(x, 0.5, generator=g),
        "generator=None (seed from torch)": lambda: gumbelrs.gumbel_softmax(x, 0.5),
        "torch F.gumbel_softmax": lambda: torch.nn.functional.gumbel_softmax(x, 0.5),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, gumbelrs {gumbelrs.__version__}, "
          f"{gumbelrs.get_num_threads()} threads")
    groups = [
        (f"vmap over {args.batch} elements of (32, 10)", vmap_cases(args.batch, 32, 10), 5),
        (f"vmap over {args.batch} elements of (256, 100)", vmap_cases(args.batch, 256, 100), 1),
        ("one eager call, (32, 10)", call_cases(32, 10), 200),
    ]
    for title, fns, inner in groups:
        t = _median(fns, args.repeats, inner)
        base = next(iter(t.values()))
        print(f"\n| {title} | time | ratio |\n|---|---|---|")
        for k, v in t.items():
            print(f"| {k} | {v * 1e6:.1f} us | {v / base:.2f} |")


if __name__ == "__main__":
    main()
