"""Plackett-Luce sampling side by side with torch, and the cost of the relaxed
sorts and subsets.

    python benches/structured_permutations.py [--items 1024] [--samples 4096] [--repeats 11]
        [--threads 1,2]

Sampling: ``gumbelrs.structured.sample_permutation`` (the Gumbel-top-k kernel:
noise and a radix sort of each row in one call) against
``torch.argsort(scores + g)`` with ``g`` drawn by torch, as ``-log(-log(U))``
from ``torch.rand`` and as ``-log(E)`` from ``Tensor.exponential_``; one
table per thread count of ``--threads`` (torch and gumbelrs set alike), the
rounds of the thread counts alternating. Relaxations: forward and forward +
backward of ``soft_sort``, ``stochastic_sort`` and ``relaxed_topk`` (plain
torch code with no torch counterpart: absolute times only). Each case is timed
alternately with the others of its group in one process (median of
``--repeats`` rounds, after warm-up); ratios are to the first row of a group.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import gumbelrs
from gumbelrs import structured


def _set_threads(n: int) -> None:
    torch.set_num_threads(n)
    gumbelrs.set_num_threads(n)


def _median(fns: dict, repeats: int, threads: tuple = (None,)) -> dict:
    """Median time of each case per thread count (None: as set), the rounds
    of the thread counts alternating."""
    times: dict = {(n, k): [] for n in threads for k in fns}
    for n in threads:
        if n is not None:
            _set_threads(n)
        for f in fns.values():
            f()
    for _ in range(repeats):
        for n in threads:
            if n is not None:
                _set_threads(n)
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[n, k].append(time.perf_counter() - t0)
    return {key: statistics.median(v) for key, v in times.items()}


def sampling_cases(items: int, samples: int) -> dict:
    scores = torch.randn(items)
    g = gumbelrs.Generator(0)

    def torch_rand():
        u = torch.rand(samples, items)
        return torch.argsort(scores - torch.log(-torch.log(u)), dim=-1, descending=True)

    def torch_exponential():
        e = torch.empty(samples, items).exponential_()
        return torch.argsort(scores - torch.log(e), dim=-1, descending=True)

    return {
        "gumbelrs sample_permutation": lambda: structured.sample_permutation(
            scores, samples, generator=g),
        "torch argsort(s - log(-log(rand)))": torch_rand,
        "torch argsort(s - log(exponential_))": torch_exponential,
    }


def relaxed_cases(batch: int, items: int, k: int, samples: int) -> dict:
    g = gumbelrs.Generator(1)
    x = torch.randn(batch, items, requires_grad=True)
    w = torch.randn(batch, items, items)
    ws = torch.randn(batch, samples, items, items)
    cases = {}
    for method in structured.SORT_METHODS:
        cases[f"soft_sort {method}, forward"] = lambda m=method: structured.soft_sort(
            x.detach(), 0.5, method=m)
        cases[f"soft_sort {method}, forward + backward"] = lambda m=method: (
            structured.soft_sort(x, 0.5, method=m) * w).sum().backward()
        cases[f"stochastic_sort {method}, {samples} samples, forward + backward"] = (
            lambda m=method: (structured.stochastic_sort(x, 0.5, samples, method=m,
                                                         generator=g) * ws).sum().backward())
    cases["soft_sort neuralsort hard, forward (no gradient)"] = lambda: structured.soft_sort(
        x.detach(), 0.5, hard=True)
    cases[f"relaxed_topk k={k}, forward"] = lambda: structured.relaxed_topk(
        x.detach(), k, 0.5, generator=g)
    cases[f"relaxed_topk k={k}, forward + backward"] = lambda: (
        structured.relaxed_topk(x, k, 0.5, generator=g) * x.detach()).sum().backward()
    cases[f"relaxed_topk k={k} hard, forward + backward"] = lambda: (
        structured.relaxed_topk(x, k, 0.5, hard=True, generator=g) * x.detach()).sum().backward()
    return cases


def _table(title: str, t: dict, ratios: bool) -> None:
    if ratios:
        base = next(iter(t.values()))
        print(f"\n| {title} | time | ratio |\n|---|---|---|")
        for name, v in t.items():
            print(f"| {name} | {v * 1e3:.2f} ms | {v / base:.2f} |")
    else:
        print(f"\n| {title} | time |\n|---|---|")
        for name, v in t.items():
            print(f"| {name} | {v * 1e3:.2f} ms |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1024, help="items per permutation")
    p.add_argument("--samples", type=int, default=4096, help="permutations drawn per call")
    p.add_argument("--batch", type=int, default=64, help="rows of the relaxation cases")
    p.add_argument("--relaxed-items", type=int, default=128, help="items of the relaxations")
    p.add_argument("--k", type=int, default=16, help="subset size of relaxed_topk")
    p.add_argument("--relaxed-samples", type=int, default=4, help="samples of stochastic_sort")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--threads", default="1,2",
                   help="thread counts of the sampling tables, comma-separated")
    args = p.parse_args(argv)
    threads = tuple(int(n) for n in args.threads.split(","))
    default = torch.get_num_threads()
    print(f"torch {torch.__version__}, gumbelrs {gumbelrs.__version__}")
    cases = sampling_cases(args.items, args.samples)
    t = _median(cases, args.repeats, threads)
    for n in threads:
        _table(f"{args.samples} Plackett-Luce permutations of {args.items} items, {n} "
               f"thread{'s' if n > 1 else ''}", {k: t[n, k] for k in cases}, True)
    _set_threads(default)
    cases = relaxed_cases(args.batch, args.relaxed_items, args.k, args.relaxed_samples)
    t = _median(cases, args.repeats)
    _table(f"relaxations, batch {args.batch} x {args.relaxed_items} items, {default} "
           "threads", {k: t[None, k] for k in cases}, False)


if __name__ == "__main__":
    main()
