"""Gumbel-Sinkhorn forward + backward: gumbelrs against the same algorithm in
plain torch (logsumexp iterations recorded by autograd), timed alternately in
one process.

    python benches/structured_sinkhorn.py [--batch 64] [--n 50] [--iters 20] [--samples 1]
                                          [--dtype float32] [--repeats 15] [--threads N]

Each run draws the noise, computes the samples ``P`` of ``log_alpha`` (``batch``
matrices of ``n x n``) and backpropagates ``sum(P * w)``. Prints the median
time of each, their ratio, and the bytes autograd keeps from the forward to the
backward for each (saved tensors, each storage counted once; ``log_alpha``
itself, which the caller holds anyway, apart). gumbelrs's kernels also use
scratch memory while they run (per thread, freed on return): ``n n' + 6 n'``
values in the forward, ``2 n n' + 3 k n' + 8 n'`` in the backward for ``k``
iterations (``n'``: ``n`` rounded up to 16 values for float32, 8 for float64),
printed below. Issue 21's targets: a ratio of at least 5 and no
more memory than torch.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    gumbelrs.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    gen = torch.Generator().manual_seed(0)
    la = torch.randn(a.batch, a.n, a.n, dtype=dtype, generator=gen).requires_grad_()
    w = torch.randn(a.batch, a.samples, a.n, a.n, dtype=dtype, generator=gen)
    args = (a.samples, a.tau, a.iters)
    fs = {"torch": torch_sinkhorn, "gumbelrs": ours}
    for f in fs.values():  # warm-up
        step(f, la, w, args)
    times: dict[str, list[float]] = {k: [] for k in fs}
    for _ in range(a.repeats):
        for name, f in fs.items():
            t = time.perf_counter()
            step(f, la, w, args)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    size = torch.finfo(dtype).bits // 8
    print(f"Gumbel-Sinkhorn forward + backward: batch {a.batch} of {a.n}x{a.n}, "
          f"{a.samples} sample(s), {a.iters} iterations, {a.dtype}, {a.threads} thread(s), "
          f"median of {a.repeats}")
    for name, f in fs.items():
        total, own = saved_bytes(f, la, w, args)
        print(f"  {name:9s} {med[name] * 1e3:9.3f} ms   autograd keeps {total - own:>12,d} bytes "
              f"besides log_alpha ({own:,d} bytes)")
    print(f"  ratio torch / gumbelrs: {med['torch'] / med['gumbelrs']:.2f} (target >= 5)")
    n, k = a.n, a.iters
    np_ = -(-n // (64 // size)) * (64 // size)
    print(f"  gumbelrs kernel scratch per thread: forward {(n * np_ + 6 * np_) * size:,d} bytes, "
          f"backward {(2 * n * np_ + 3 * k * np_ + 8 * np_) * size:,d} bytes"
          + (f"; backward per-sample gradients {a.batch * a.samples * n * n * size:,d} bytes"
             if a.samples > 1 else ""))

if __name__ == "__main__":
    main()
