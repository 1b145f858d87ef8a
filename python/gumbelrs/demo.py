"""A short demonstration: the samples follow softmax(logits), and the speed
against ``torch.nn.functional.gumbel_softmax`` measured side by side."""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

import gumbelrs


def _frequencies(out=print) -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, float("-inf")])
    n = 200_000
    g = gumbelrs.Generator(seed=0)
    rows = logits.expand(n, -1)
    soft = gumbelrs.gumbel_softmax(rows, tau=0.5, generator=g).argmax(-1)
    hard = gumbelrs.gumbel_softmax(rows, tau=0.5, hard=True, generator=g).argmax(-1)
    draws = gumbelrs.sample_categorical(logits, n, generator=g).flatten()
    out(f"Argmax frequencies of {n:,} samples against softmax(logits):")
    out(f"  {'logit':>6} {'softmax':>9} {'soft':>9} {'hard':>9} {'categorical':>12}")
    p = torch.softmax(logits, 0)
    for k, v in enumerate(logits.tolist()):
        f = [float((s == k).double().mean()) for s in (soft, hard, draws)]
        out(f"  {v:>6} {float(p[k]):>9.4f} {f[0]:>9.4f} {f[1]:>9.4f} {f[2]:>12.4f}")


def _median_pair(a, b, repeats: int) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b``, run alternately after a warm-up."""
    for _ in range(3):
        a()
        b()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def _speed(out=print, repeats: int = 15) -> None:
    x = torch.randn(2048, 1000)
    xg = x.clone().requires_grad_()
    w = torch.randn_like(x)
    g = gumbelrs.Generator(seed=1)

    def fwd_bwd(fn):
        def run():
            xg.grad = None
            (fn() * w).sum().backward()
        return run

    cases = [
        ("soft forward", lambda: F.gumbel_softmax(x, tau=0.5),
         lambda: gumbelrs.gumbel_softmax(x, tau=0.5, generator=g)),
        ("hard forward", lambda: F.gumbel_softmax(x, tau=0.5, hard=True),
         lambda: gumbelrs.gumbel_softmax(x, tau=0.5, hard=True, generator=g)),
        ("soft forward+backward", fwd_bwd(lambda: F.gumbel_softmax(xg, tau=0.5)),
         fwd_bwd(lambda: gumbelrs.gumbel_softmax(xg, tau=0.5, generator=g))),
    ]
    out(f"\nSpeed on a float32 tensor of shape {tuple(x.shape)}, {torch.get_num_threads()} torch "
        f"threads, {gumbelrs.get_num_threads()} gumbelrs threads (median of {repeats}):")
    out(f"  {'case':<24} {'torch ms':>9} {'gumbelrs ms':>12} {'speed-up':>9}")
    for name, t_fn, g_fn in cases:
        tt, tg = _median_pair(t_fn, g_fn, repeats)
        out(f"  {name:<24} {tt * 1e3:>9.2f} {tg * 1e3:>12.2f} {tt / tg:>8.1f}x")


def main(out=print) -> None:
    out(f"gumbelrs {gumbelrs.__version__} with torch {torch.__version__}\n")
    _frequencies(out)
    _speed(out)
