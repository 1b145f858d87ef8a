"""gumbelrs against its torch equivalents, timed alternately in one process.

    gumbelrs bench [--threads 1 2] [--repeats 15] [--markdown] [--json PATH] [--only TEXT ...]
    gumbelrs bench --device cuda [--repeats 15] [--bfloat16] [--markdown] [--only TEXT ...]
    (or python benches/compare_torch.py with the same options)

Each case runs the torch call and the gumbelrs call one after the other,
`repeats` times after a warm-up, and reports the medians. A call that takes
less than about a millisecond is timed in batches so the clock resolves it.
Columns: torch and gumbelrs time per call, ratio (torch / gumbelrs: > 1 means
gumbelrs is faster), gumbelrs ns per element, and the effective bandwidth of
gumbelrs counting the bytes the op must read and write once.

With ``--device cuda`` the tensors live on the GPU, batches are timed with
CUDA events, ``--threads`` is ignored (the column says "cuda", the first line
names the GPU), and a first row "copy (yardstick)" times ``y.copy_(x)`` of a
float32 [8192, 32768] tensor (8 bytes moved per element): the bandwidth a
memory-bound op can reach. The rows whose gumbelrs call is a soft forward
sample (which also moves 8 bytes per float32 element) add a column "of copy
BW": their bandwidth as a fraction of the copy's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.distributions import Categorical, RelaxedBernoulli, RelaxedOneHotCategorical

import gumbelrs
from gumbelrs import _args

TAU = 0.5
CPU_SHAPES = "4096x1024,256x50257,65536x16,8x16"
CUDA_SHAPES = "8192x32768,256x262144,4096x1024,65536x16"
COPY_SHAPE = (8192, 32768)
# More threads than any machine this bench targets has cores; far more make OpenMP abort the
# process (2**31 - 1: libgomp fails to allocate 463 GB).
MAX_THREADS = 1024
# torch's distributions are built without argument validation: its simplex check rejects the
# float32 softmax of a 50257-wide row (the rounding of its sum exceeds the check's tolerance),
# and validation is not sampling. Without it torch does less work, so the ratios are lower bounds.
NO_CHECK = {"validate_args": False}


@dataclass
class Case:
    op: str
    shape: tuple
    dtype: torch.dtype
    torch_fn: Callable[[], object]
    ours: Callable[[], object]
    bytes_moved: int  # bytes gumbelrs must read + write at least once
    soft_forward: bool = False  # gumbelrs's call is a soft forward sample (read + write once)


def _batched(fn: Callable[[], object], calls: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(calls):
            fn()
    return run


def _wall(run: Callable[[], None]) -> float:
    s = time.perf_counter()
    run()
    return time.perf_counter() - s


def _events(run: Callable[[], None]) -> float:
    """Seconds from a batch's first launch to its last kernel's end, by CUDA
    events on the current stream."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def time_pair(a, b, repeats: int, cuda: bool = False) -> tuple[float, float]:
    """Median seconds per call of a and b, alternating, after a warm-up; on the
    GPU (``cuda``) each batch is timed by CUDA events."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        a()
        b()  # first calls: kernels compiled and loaded, memory cached
        sync()
    t0 = time.perf_counter()
    a()
    b()
    sync()
    once = time.perf_counter() - t0
    calls = max(1, int(2e-3 / max(once, 1e-7)))
    ra, rb = _batched(a, calls), _batched(b, calls)
    for _ in range(2):
        ra()
        rb()
    timed = _events if cuda else _wall
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(ra) / calls)
        tb.append(timed(rb) / calls)
    return statistics.median(ta), statistics.median(tb)


def time_copy_cuda(repeats: int) -> float:
    """Median seconds of a device-to-device ``y.copy_(x)`` of a float32 COPY_SHAPE tensor."""
    x = torch.randn(COPY_SHAPE, device="cuda")
    y = torch.empty_like(x)
    t, _ = time_pair(lambda: y.copy_(x), lambda: None, repeats, cuda=True)
    return t


def cases(shapes, dtypes, device: str = "cpu") -> list[Case]:
    g = gumbelrs.Generator(0)
    out = []
    for shape in shapes:
        for dtype in dtypes:
            x = torch.randn(shape, dtype=dtype, device=device)
            n = x.numel()
            es = x.element_size()
            xg = x.clone().requires_grad_()
            w = torch.randn_like(x)
            temp = torch.tensor(TAU, dtype=dtype, device=device)

            # The op's forward and backward alone: the upstream gradient `w` is fed straight
            # to backward (a loss such as `(y * w).sum()` would add torch's own multiply, sum
            # and their backward, the same work on both sides).
            def fb_torch(xg=xg, w=w):
                xg.grad = None
                F.gumbel_softmax(xg, tau=TAU).backward(w)

            def fb_ours(xg=xg, w=w):
                xg.grad = None
                gumbelrs.gumbel_softmax(xg, tau=TAU, generator=g).backward(w)

            out += [
                Case("softmax (yardstick)", shape, dtype, lambda x=x: torch.softmax(x, -1),
                     lambda x=x: gumbelrs.gumbel_softmax(x, TAU, generator=g), 2 * n * es, True),
                Case("gumbel_softmax soft", shape, dtype, lambda x=x: F.gumbel_softmax(x, TAU),
                     lambda x=x: gumbelrs.gumbel_softmax(x, TAU, generator=g), 2 * n * es, True),
                Case("gumbel_softmax hard", shape, dtype,
                     lambda x=x: F.gumbel_softmax(x, TAU, hard=True),
                     lambda x=x: gumbelrs.gumbel_softmax(x, TAU, hard=True, generator=g),
                     3 * n * es),
                Case("gumbel_softmax fwd+bwd", shape, dtype, fb_torch, fb_ours, 5 * n * es),
                Case("gumbel_softmax soft dim=0", shape, dtype,
                     lambda x=x: F.gumbel_softmax(x, TAU, dim=0),
                     lambda x=x: gumbelrs.gumbel_softmax(x, TAU, dim=0, generator=g), 2 * n * es,
                     True),
                Case("RelaxedOneHotCategorical", shape, dtype,
                     lambda x=x, t=temp:
                         RelaxedOneHotCategorical(t, logits=x, **NO_CHECK).rsample(),
                     lambda x=x: gumbelrs.gumbel_softmax(x, TAU, generator=g), 2 * n * es, True),
                Case("RelaxedBernoulli", shape, dtype,
                     lambda x=x, t=temp: RelaxedBernoulli(t, logits=x, **NO_CHECK).rsample(),
                     lambda x=x: gumbelrs.relaxed_bernoulli(x, TAU, generator=g), 2 * n * es,
                     True),
                Case("multinomial(softmax)", shape, dtype,
                     lambda x=x: torch.multinomial(torch.softmax(x, -1), 1),
                     lambda x=x: gumbelrs.sample_categorical(x, 1, generator=g), n * es),
                Case("Categorical.sample", shape, dtype,
                     lambda x=x: Categorical(logits=x, **NO_CHECK).sample(),
                     lambda x=x: gumbelrs.sample_categorical(x, 1, generator=g), n * es),
                Case("topk(x + gumbel), k=8", shape, dtype,
                     lambda x=x: torch.topk(x - torch.empty_like(x).exponential_().log(),
                                            min(8, x.shape[-1]), -1),
                     lambda x=x: gumbelrs.gumbel_topk(x, min(8, x.shape[-1]), generator=g),
                     n * es),
            ]
    return out


def _cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo where there is one), cores, and the SIMD level in use."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, SIMD {gumbelrs._core.simd_level()}"


def _elements(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="gumbelrs bench", description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where the tensors live (cuda: timed with CUDA events, --threads ignored)")
    p.add_argument("--threads", type=_args.int_in(1, MAX_THREADS), nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=_args.int_in(1), default=15)
    p.add_argument("--only", nargs="+", default=[""], metavar="TEXT",
                   help="run the cases whose op contains one of these texts")
    p.add_argument("--shapes", type=_args.shapes, default=None,
                   help=f"comma-separated shapes (default: {CPU_SHAPES} on the CPU, "
                        f"{CUDA_SHAPES} on CUDA)")
    p.add_argument("--float64", action="store_true", help="also run float64")
    p.add_argument("--bfloat16", action="store_true", help="also run bfloat16")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--json", type=Path, metavar="PATH",
                   help="also write the table to PATH as JSON (a header and one object a row)")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    shapes = args.shapes or _args.shapes(CUDA_SHAPES if cuda else CPU_SHAPES)
    dtypes = [torch.float32] + ([torch.float64] if args.float64 else []) + \
        ([torch.bfloat16] if args.bfloat16 else [])

    where = torch.cuda.get_device_name() if cuda else _cpu_name()
    print(f"# {where}, torch {torch.__version__}, "
          f"gumbelrs {gumbelrs.__version__}, median of {args.repeats}")
    header = ["op", "shape", "dtype", "device" if cuda else "threads", "torch ms", "gumbelrs ms",
              "ratio", "ns/elem", "GB/s"] + (["of copy BW"] if cuda else [])
    rows = []

    def emit(row: list[str]) -> None:
        rows.append(row)
        if not args.markdown:
            print("  ".join(row).rstrip(), flush=True)

    copy_bw = None
    if cuda:
        n = _elements(COPY_SHAPE)
        tc = time_copy_cuda(args.repeats)
        copy_bw = 8 * n / tc
        emit(["copy (yardstick)", "x".join(map(str, COPY_SHAPE)), "float32", "cuda",
              f"{tc * 1e3:.3f}", "-", "-", f"{tc / n * 1e9:.2f}", f"{copy_bw / 1e9:.1f}", ""])
    for threads in [None] if cuda else args.threads:
        if not cuda:
            torch.set_num_threads(threads)
            gumbelrs.set_num_threads(threads)
        for c in cases(shapes, dtypes, args.device):
            if not any(text in c.op for text in args.only):
                continue
            tt, tg = time_pair(c.torch_fn, c.ours, args.repeats, cuda=cuda)
            n = _elements(c.shape)
            row = [c.op, "x".join(map(str, c.shape)), str(c.dtype).replace("torch.", ""),
                   "cuda" if cuda else str(threads), f"{tt * 1e3:.3f}", f"{tg * 1e3:.3f}",
                   f"{tt / tg:.1f}", f"{tg / n * 1e9:.2f}", f"{c.bytes_moved / tg / 1e9:.1f}"]
            if cuda:
                row.append(f"{c.bytes_moved / tg / copy_bw:.2f}" if c.soft_forward else "")
            emit(row)
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    if args.json is not None:
        table = {"where": where, "torch": torch.__version__, "gumbelrs": gumbelrs.__version__,
                 "repeats": args.repeats, "rows": [dict(zip(header, r)) for r in rows]}
        args.json.write_text(json.dumps(table, indent=1) + "\n")
