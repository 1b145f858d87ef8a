"""Gumbel-Sinkhorn forward + backward: gumbelrs against the same algorithm in
plain torch (logsumexp iterations recorded by autograd), timed alternately in
one process.

    python benches/structured_sinkhorn.py [--batch 64] [--n 50] [--iters 20] [--samples 1]
                                          [--dtype float32] [--repeats 15] [--runs 3]
                                          [--threads 1,2]

Each step draws the noise, computes the samples ``P`` of ``log_alpha``
(``batch`` matrices of ``n x n``) and backpropagates ``sum(P * w)``. A run
times ``repeats`` steps of each implementation, alternating, at each thread
count in turn (the same number of threads for torch and gumbelrs), and prints
the median time of each and their ratio; ``runs`` runs, then the range of the
ratios at each thread count. Issue 21's targets: a ratio of at least 5 and no
more memory than torch.

Memory is counted, not sampled: for each implementation the bytes autograd
keeps from the forward to the backward (its saved tensors, each storage
counted once, through ``torch.autograd.graph.saved_tensors_hooks``;
``log_alpha`` itself, which the caller holds anyway, apart), and for gumbelrs
the scratch memory of its kernels, per thread and freed on return: ``3 n n' +
8 n'`` values in the forward, ``4 n n' + 5 k n' + 10 n'`` in the backward for
``k`` iterations (``n'``: ``n`` rounded up to 16 values for float32, 8 for
float64), and with several samples a ``(batch, samples, n, n)`` buffer of the
samples' gradients in the backward. torch's peak is at least what it keeps
(its every ``n x n`` iterate); gumbelrs keeps a 4-byte count per matrix.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import gumbelrs
from gumbelrs.structured import gumbel_sinkhorn


def torch_sinkhorn(la, n_samples, tau, n_iters):
    """The algorithm in plain torch, its noise from torch's generator."""
    *batch, n, _ = la.shape
    g = -torch.empty((*batch, n_samples, n, n), dtype=la.dtype).exponential_().log()
    x = ((la - la.detach().amax(-1, keepdim=True)).unsqueeze(-3) + g) / tau
    for _ in range(n_iters):
        x = x - x.logsumexp(-1, keepdim=True)
        x = x - x.logsumexp(-2, keepdim=True)
    return x.exp()


def ours(la, n_samples, tau, n_iters):
    return gumbel_sinkhorn(la, tau, n_iters, n_samples=n_samples)


def step(f, la, w, args):
    la.grad = None
    (f(la, *args) * w).sum().backward()


def saved_bytes(f, la, w, args) -> tuple[int, int]:
    """``(bytes, of which log_alpha's)``: what autograd keeps for the backward."""
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = f(la, *args)
    (y * w).sum().backward()
    la.grad = None
    own = storages.get(la.untyped_storage().data_ptr(), 0)
    return sum(storages.values()), own


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    gumbelrs.set_num_threads(n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    a = p.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    dtype = getattr(torch, a.dtype)
    gen = torch.Generator().manual_seed(0)
    la = torch.randn(a.batch, a.n, a.n, dtype=dtype, generator=gen).requires_grad_()
    w = torch.randn(a.batch, a.samples, a.n, a.n, dtype=dtype, generator=gen)
    args = (a.samples, a.tau, a.iters)
    fs = {"torch": torch_sinkhorn, "gumbelrs": ours}
    print(f"Gumbel-Sinkhorn forward + backward: batch {a.batch} of {a.n}x{a.n}, "
          f"{a.samples} sample(s), {a.iters} iterations, {a.dtype}, tau {a.tau}; "
          f"medians of {a.repeats} alternating steps")
    ratios: dict[int, list[float]] = {t: [] for t in threads}
    for run in range(a.runs):
        for t in threads:
            set_threads(t)
            for f in fs.values():  # warm-up
                step(f, la, w, args)
            times: dict[str, list[float]] = {k: [] for k in fs}
            for _ in range(a.repeats):
                for name, f in fs.items():
                    start = time.perf_counter()
                    step(f, la, w, args)
                    times[name].append(time.perf_counter() - start)
            med = {k: statistics.median(v) for k, v in times.items()}
            ratio = med["torch"] / med["gumbelrs"]
            ratios[t].append(ratio)
            print(f"  run {run + 1}, {t} thread(s): torch {med['torch'] * 1e3:8.3f} ms, "
                  f"gumbelrs {med['gumbelrs'] * 1e3:7.3f} ms, ratio {ratio:5.2f}")
    for t in threads:
        r = ratios[t]
        print(f"  ratio torch / gumbelrs at {t} thread(s): {min(r):.2f} to {max(r):.2f} over "
              f"{len(r)} run(s) (target >= 5)")
    matrices = a.batch * a.samples
    for name, f in fs.items():
        total, own = saved_bytes(f, la, w, args)
        print(f"  {name:9s} autograd keeps {total - own:>12,d} bytes besides log_alpha "
              f"({own:,d} bytes): {(total - own) / matrices:,.0f} bytes a matrix")
    size = torch.finfo(dtype).bits // 8
    n, k = a.n, a.iters
    np_ = -(-n // (64 // size)) * (64 // size)
    print(f"  gumbelrs kernel scratch per thread: forward {(3 * n * np_ + 8 * np_) * size:,d} "
          f"bytes, backward {(4 * n * np_ + 5 * k * np_ + 10 * np_) * size:,d} bytes"
          + (f"; backward per-sample gradients {matrices * n * n * size:,d} bytes"
             if a.samples > 1 else ""))


if __name__ == "__main__":
    main()
