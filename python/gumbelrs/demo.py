"""``gumbelrs demo``: the core checks (samples follow softmax(logits), speed
against torch side by side, temperature schedules) and every application in a
quick mode, written as a report folder (Markdown, self-contained HTML, PNG
figures and ``metrics.json``)."""

from __future__ import annotations

import argparse
import datetime
import importlib
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import gumbelrs
from gumbelrs import _args, apps, schedules
from gumbelrs.apps import _common as common
from gumbelrs.apps import _report

#: Run sizes: ``quick`` is the demonstration, ``tiny`` a smoke test of the whole pipeline.
SIZES = ("quick", "tiny")


def frequencies(n: int = 200_000):
    """Argmax frequencies of soft, hard and categorical samples against softmax."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, float("-inf")])
    g = gumbelrs.Generator(seed=0)
    rows = logits.expand(n, -1)
    soft = gumbelrs.gumbel_softmax(rows, tau=0.5, generator=g).argmax(-1)
    hard = gumbelrs.gumbel_softmax(rows, tau=0.5, hard=True, generator=g).argmax(-1)
    draws = gumbelrs.sample_categorical(logits, n, generator=g).flatten()
    p = torch.softmax(logits, 0)
    table = []
    for k, v in enumerate(logits.tolist()):
        f = [float((s == k).double().mean()) for s in (soft, hard, draws)]
        table.append((v, f"{float(p[k]):.4f}", *(f"{x:.4f}" for x in f)))
    return common.Table(("logit", "softmax", "soft argmax", "hard", "categorical"), table)


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


def speed(shape: tuple[int, int] = (2048, 1000), repeats: int = 15):
    """Milliseconds of torch and gumbelrs on the same tensor, side by side."""
    x = torch.randn(*shape)
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
    rows, metrics = [], {}
    for name, t_fn, g_fn in cases:
        tt, tg = _median_pair(t_fn, g_fn, repeats)
        rows.append((name, f"{tt * 1e3:.2f}", f"{tg * 1e3:.2f}", f"{tt / tg:.1f}x"))
        metrics[name] = {"torch_ms": tt * 1e3, "gumbelrs_ms": tg * 1e3, "ratio": tt / tg}
    return common.Table(("case", "torch ms", "gumbelrs ms", "speed-up"), rows), metrics


def temperature_plot(out: Path):
    """The schedules of the applications, and a reheat, over 3,000 steps."""
    plt = common.pyplot("demo")
    steps = 3000
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    schedules.ExponentialDecay(1.0, 1e-3, 0.5).plot(steps, ax)
    schedules.Cosine(2.0, 0.1, steps).plot(steps, ax)
    schedules.RelGAN("exp", beta_max=100.0, total_steps=steps).plot(steps, ax)
    reheat = schedules.Reheater(schedules.RelGAN("exp", beta_max=100.0, total_steps=steps),
                                threshold=0.5, boost=5.0, hold=300)
    taus = []
    for s in range(steps):
        if s == 1500:
            reheat.observe(0.1)  # diversity fell below the threshold: reheat
        taus.append(reheat.tau)
        reheat.step()
    ax.plot(range(steps), taus, ls="--", label="RelGAN exp + reheat at 1500")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Temperature schedules")
    return common.save_figure(fig, out, "temperatures.png")


def core(out: Path, size: str):
    """The report section of the core library."""
    result = apps.AppResult("core", {}, heading="Core: samples and speed")
    result.text = (f"Argmax frequencies of 200,000 samples at tau = 0.5 agree with "
                   f"softmax(logits); the -inf logit is never drawn. Speed: float32 tensor "
                   f"of shape (2048, 1000), {torch.get_num_threads()} torch threads, "
                   f"{gumbelrs.get_num_threads()} gumbelrs threads, median of repeated runs "
                   f"alternating the two libraries.")
    result.tables["Argmax frequencies against softmax(logits)"] = frequencies()
    table, metrics = speed(repeats=15 if size == "quick" else 3)
    result.tables["Speed against torch.nn.functional.gumbel_softmax"] = table
    result.metrics["speed"] = metrics
    result.figures["Temperature schedules of gumbelrs.schedules"] = temperature_plot(out)
    return result


def run_apps(names, size: str, out: Path, show: bool):
    """Runs the applications ``names`` at ``size``; returns their results."""
    results = []
    for i, name in enumerate(names, 1):
        module = importlib.import_module(f"gumbelrs.apps.{name}")
        print(f"[{i}/{len(names)}] {name} ({size})", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        r = module.run(getattr(module.Config, size)(), out, show)
        r.metrics["seconds"] = time.perf_counter() - t0
        results.append(r)
    return results


def meta(size: str) -> dict:
    from gumbelrs import _core

    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "gumbelrs": gumbelrs.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "SIMD": _core.simd_level(), "threads": gumbelrs.get_num_threads(), "size": size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gumbelrs demo", description=__doc__)
    # A string default goes through `type` too: an unusable working folder is an error here.
    parser.add_argument("--out", type=_args.report_folder, default="gumbelrs-report",
                        help="report folder (default: gumbelrs-report)")
    parser.add_argument("--size", choices=SIZES, default="quick",
                        help="quick: the demonstration; tiny: a smoke test")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        return _demo(args, t0)
    except (ImportError, OSError) as e:  # a missing extra, an unwritable folder
        parser.error(str(e))


def _demo(args: argparse.Namespace, t0: float) -> int:
    with _report.staged(args.out) as folder:
        print("[core] samples, speed, schedules", file=sys.stderr, flush=True)
        results = [core(folder, args.size)]
        results += run_apps(apps.APPS, args.size, folder, not args.no_progress)
        info = meta(args.size)
        info["seconds"] = round(time.perf_counter() - t0, 1)
        _report.write(folder, "gumbelrs demonstration",
                      "Every application of gumbelrs in its quick mode on data that ships with "
                      "the package or scikit-learn; full-size runs: gumbelrs run APP.",
                      results, info)
    print(f"report: {args.out / 'report.html'} (and report.md, metrics.json)")
    return 0
