"""Perturbed optimizers: the cost of gumbelrs.structured.perturbed with 16
samples against 16 direct calls of the solver it wraps, in one process.

    python benches/structured_perturbed.py [--repeats 9] [--threads 2] [--samples 16]

Target (issue 22): ``perturbed`` adds at most 20% over ``--samples`` direct
solver calls. The wrapper draws ``(samples, *theta.shape)`` noise, adds theta,
calls the solver once on the stacked ``(samples * batch, *shape)`` thetas and
averages; the baseline calls the solver ``--samples`` times on theta itself
(no noise). Each case times both sides alternately (median of ``--repeats``
rounds after a warm-up); "overhead" is ours / direct - 1. The backward
column times forward and backward of the wrapper (the Monte-Carlo
Jacobian-vector product redraws the noise), for reference.

Solvers: the argmax one-hot of the last dimension (the cheapest solver
there is, so the worst case for the overhead: drawing the noise costs as
much as solving); the Rust kernels ``spanning_tree`` (of the symmetrised
theta: the noise is drawn per entry, and the kernel wants symmetric
weights) and ``shortest_path_grid`` (of the costs ``max(-theta, 0)``: the
noise can make costs negative, which the kernel refuses). The baseline
calls the same wrappers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import gumbelrs
from gumbelrs.structured import perturbed, shortest_path_grid, spanning_tree


def onehot(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x).scatter_(-1, x.argmax(-1, keepdim=True), 1.0)


def tree(x: torch.Tensor) -> torch.Tensor:
    upper = x.triu(1)
    return spanning_tree(upper + upper.mT)


def path(x: torch.Tensor) -> torch.Tensor:
    return shortest_path_grid((-x).clamp_min(0))


def _median_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _case(solver, theta: torch.Tensor, samples: int, repeats: int) -> dict[str, float]:
    p = perturbed(solver, samples, 0.5, generator=gumbelrs.Generator(0))
    leaf = theta.clone().requires_grad_()

    def direct():
        for _ in range(samples):
            solver(theta)

    def ours():
        p(theta)

    def backward():
        p(leaf).sum().backward()

    return _median_times({"direct": direct, "ours": ours, "backward": backward}, repeats)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplies the batch sizes (e.g. 0.01 for a quick check)")
    args = ap.parse_args(argv)
    gumbelrs.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, gumbelrs {gumbelrs.__version__}, "
          f"{gumbelrs.get_num_threads()} threads (torch {torch.get_num_threads()}), SIMD "
          f"{gumbelrs._core.simd_level()}, {args.samples} samples")
    gen = torch.Generator().manual_seed(0)

    def batch(n: int) -> int:
        return max(1, round(n * args.scale))

    cases = [
        ("argmax one-hot", onehot, (batch(256), 10), torch.float32),
        ("argmax one-hot", onehot, (batch(256), 1000), torch.float32),
        ("argmax one-hot", onehot, (batch(4096), 100), torch.float64),
        ("spanning_tree", tree, (batch(64), 50, 50), torch.float64),
        ("shortest_path_grid", path, (batch(32), 12, 12), torch.float32),
        ("shortest_path_grid", path, (batch(32), 32, 32), torch.float32),
    ]
    print(f"\n| solver | theta | {args.samples} direct calls | perturbed | overhead | "
          "perturbed fwd+bwd |\n"
          "|---|---|---|---|---|---|")
    for title, solver, shape, dtype in cases:
        theta = torch.randn(*shape, generator=gen, dtype=dtype)
        if solver is path:
            theta = -theta.abs()  # costs >= 0
        t = _case(solver, theta, args.samples, args.repeats)
        name = str(dtype).removeprefix("torch.")
        print(f"| {title} | {tuple(shape)} {name} | {t['direct'] * 1e3:.3f} ms | "
              f"{t['ours'] * 1e3:.3f} ms | {t['ours'] / t['direct'] - 1:+.0%} | "
              f"{t['backward'] * 1e3:.3f} ms |")


if __name__ == "__main__":
    main()
