"""``gumbelrs estimators``: bias and variance of every gradient estimator of
:mod:`gumbelrs.estimators` on a toy problem, as a Markdown table."""

from __future__ import annotations

import argparse

import torch

from . import _args
from ._generator import Generator
from .estimators import diagnose


def toy_table(n: int, seed: int) -> list[tuple[str, str, float, float, float]]:
    """Bias and variance of every method on ``f(y) = sum((y - t)^2)``, 5 categories."""
    logits = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0], dtype=torch.float64)
    target = torch.tensor([0.1, 0.0, 0.9, 0.2, 0.4], dtype=torch.float64)

    def f(y):
        return ((y - target) ** 2).sum(-1)

    rows = []
    settings = [("soft", 1.0, {}), ("soft", 0.5, {}), ("soft", 0.1, {}), ("st", 1.0, {}),
                ("st", 0.5, {}), ("gumbel_rao", 0.5, {"k": 10}), ("gumbel_rao", 0.5, {"k": 100}),
                ("reinmax", 1.0, {}), ("reinmax", 2.0, {}), ("gst", 0.5, {}),
                ("decoupled", 0.5, {"tau_forward": 0.1, "tau_backward": 1.0})]
    for method, tau, opts in settings:
        r = diagnose(f, logits, method, n=n, tau=tau, generator=Generator(seed), **opts)
        label = ", ".join(f"{k}={v}" for k, v in opts.items())
        rows.append((method, f"tau={tau}" + (f", {label}" if label else ""), r["bias_norm"],
                     r["variance"], r["mse"]))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="gumbelrs estimators",
                                description="Bias and variance of the gradient estimators.")
    # The variance needs two estimates. The largest batch, gumbel_rao with k = 100, holds 500 n
    # float64 values: 10**9 estimates would take 4 TB.
    p.add_argument("--n", type=_args.int_in(2, 10**9), default=100_000,
                   help="estimates per method (2 to 10**9)")
    p.add_argument("--seed", type=_args.seed, default=0, help="seed in [0, 2**64)")
    args = p.parse_args(argv)
    print("Toy problem: 5 categories, logits (1, 0.5, 0, -0.5, -1), "
          "f(y) = sum((y - t)^2), t = (0.1, 0, 0.9, 0.2, 0.4); "
          f"{args.n} estimates each, seed {args.seed}.\n")
    print("| method | setting | bias (L2) | variance (sum) | MSE |")
    print("|---|---|---|---|---|")
    for method, setting, bias, var, mse in toy_table(args.n, args.seed):
        print(f"| {method} | {setting} | {bias:.4f} | {var:.4f} | {mse:.4f} |")

