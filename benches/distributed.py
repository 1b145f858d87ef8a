"""Wall time of `gumbelrs run APP --nproc N` for several N: a unit-parallel app
(kmeans) and the data-parallel VAE, each from a fresh output folder.

    python benches/distributed.py                 # kmeans and vae, N = 1 and 2
    python benches/distributed.py --nproc 1 2 4 --repeats 3 --json out.json
    python benches/distributed.py --only kmeans --kmeans-options --seeds 4 --steps 50

The cores are shared: each of the N workers runs cores // N threads (torch and the
gumbelrs kernels; `gumbelrs run --nproc` sets OMP_NUM_THREADS so). Every launch
includes the start of the workers (importing torch), as a user's run does; the
best of --repeats is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

#: kmeans: 4 data sets x 10 seeds = 40 units of 300 steps (the deep clustering example, one
#: long unit, is left out: with 2 ranks the job would wait for it).
KMEANS = ["--deep", "false"]
#: vae: one model trained data-parallel on digits (batch 100 split over the ranks).
VAE = ["--datasets", "digits", "--methods", "soft", "--steps", "2000", "--iw-samples", "20"]


def launch(app: str, nproc: int, options: list[str], timeout: float) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "gumbelrs", "run", app, "--nproc", str(nproc),
                            "--out", out, "--no-progress", *options],
                           capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"gumbelrs run {app} --nproc {nproc} failed:\n{r.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", choices=("kmeans", "vae"))
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", help="also write the table as JSON to this file")
    parser.add_argument("--kmeans-options", nargs=argparse.REMAINDER, default=KMEANS)
    parser.add_argument("--vae-options", nargs=argparse.REMAINDER, default=VAE)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    for app, options in (("kmeans", args.kmeans_options), ("vae", args.vae_options)):
        if args.only not in (None, app):
            continue
        base = None
        for n in args.nproc:
            best = min(launch(app, n, options, args.timeout) for _ in range(args.repeats))
            base = base or best
            rows.append({"app": app, "nproc": n, "threads per worker": max(1, cores // n),
                         "wall s": round(best, 2), "speed-up": round(base / best, 2),
                         "options": " ".join(options)})
    print(f"{cores} cores; best of {args.repeats}")
    print("| app | --nproc | threads per worker | wall s | speed-up |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['app']} | {r['nproc']} | {r['threads per worker']} | {r['wall s']:.2f} "
              f"| {r['speed-up']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cores": cores, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
