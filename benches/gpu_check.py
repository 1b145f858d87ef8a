"""The prepared GPU check: validates the whole CUDA path in one run.

Built here by ``make gpu-check-bundle`` into ``gpu-check/`` (git-ignored):
the release wheel, this script, the CUDA test files and a pytest plugin
that stops a test after ``--test-timeout`` seconds. On the lent device, from
the repository root, with ``gpu-check`` in the run's ``carry`` list::

    python3 gpu-check/gpu_check.py

It writes only under ``$OUT`` (``gpu-check-out/`` when unset):

- ``log.txt``: everything printed, starting with the device, driver, torch,
  CuPy, NVRTC and Python versions and what the environment lacks;
- ``junit.xml`` and ``pytest.log``: ``tests/test_cuda.py`` and
  ``tests/test_cuda_emulated.py`` run against the installed wheel (pip
  installs it without network or dependencies into ``$OUT/site``, first on
  ``PYTHONPATH`` and removed at the end; the device's torch and CuPy serve);
- ``bench.md`` and ``bench.json``: ``gumbelrs bench --device cuda`` on a
  fixed short list of cases, float32 and bfloat16, beside torch on the
  same GPU, with the device-to-device copy bandwidth;
- ``parity.json``: bitwise equality of Gumbel noise, one-hot samples,
  categorical draws and top-k between the GPU and the CPU, for a few seeds,
  shapes, dims and dtypes.

The last line printed is ``N passed, M failed`` over the tests and the
parity checks. Without a GPU the script runs to the end all the same (CUDA
tests skip, the bench and parity say there is no device), which is how
``make test`` keeps it from rotting between the rare runs on a device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH_SHAPES = "4096x1024,256x50257,65536x16"
BENCH_ONLY = ["gumbel_softmax soft", "gumbel_softmax hard", "gumbel_softmax fwd+bwd",
              "multinomial(softmax)", "topk(x + gumbel)"]
TESTS = ["tests/test_cuda.py", "tests/test_cuda_emulated.py"]

# Run by the installed package's Python: GPU draws against CPU draws, bitwise.
PARITY = textwrap.dedent('''
    import json, sys, torch, gumbelrs
    out = {"cases": [], "passed": 0, "failed": 0}
    if not torch.cuda.is_available():
        out["skipped"] = "no CUDA device visible to torch"
        print(json.dumps(out)); sys.exit(0)
    gumbelrs.cuda.set_checks("sync")
    cases = [((4096, 1024), -1), ((65536, 16), -1), ((33, 5000), -1), ((7, 300, 11), 1),
             ((40, 6), 0)]
    for seed in (0, 1, 20261206):
        for shape, dim in cases:
            for dtype in (torch.float32, torch.float64, torch.bfloat16):
                x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
                x.view(-1)[::7] -= 1e8 if dtype != torch.bfloat16 else 1e30  # large scales
                draws = {
                    "noise": lambda d: gumbelrs.gumbel_noise(shape, dtype=dtype, device=d,
                                                             generator=gumbelrs.Generator(seed)),
                    "hard": lambda d: gumbelrs.gumbel_softmax(
                        x.to(d), 0.5, hard=True, dim=dim, generator=gumbelrs.Generator(seed)),
                    "categorical": lambda d: gumbelrs.sample_categorical(
                        x.to(d), 3, dim, generator=gumbelrs.Generator(seed)),
                    "topk": lambda d: gumbelrs.gumbel_topk(
                        x.to(d), 5, dim, generator=gumbelrs.Generator(seed)),
                }
                for op, draw in draws.items():
                    name = f"{op} seed={seed} {tuple(shape)} dim={dim} {dtype}"
                    try:
                        ok = torch.equal(draw("cuda").cpu(), draw("cpu"))
                        why = "" if ok else "differs"
                    except Exception as e:  # a failure to report, not to stop at
                        ok, why = False, f"{type(e).__name__}: {e}"
                    out["cases"].append({"case": name, "equal": ok, "why": why})
                    out["passed" if ok else "failed"] += 1
    print(json.dumps(out))
''')

# Loaded by pytest with -p: a watchdog per test. faulthandler's timer kills
# the process from its own thread even when the test waits inside CUDA, and
# the file names the test, so the driver can run the rest without it.
PLUGIN = textwrap.dedent('''
    import faulthandler, os, pytest
    _LIMIT = float(os.environ["GPU_CHECK_TEST_TIMEOUT"])
    _NOW = os.environ["GPU_CHECK_CURRENT"]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        with open(_NOW, "w") as f:
            f.write(item.nodeid)
        faulthandler.dump_traceback_later(_LIMIT, exit=True)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
            os.remove(_NOW)
''')


class Log:
    """Prints to stdout and to ``log.txt``."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def __call__(self, *parts: object) -> None:
        text = " ".join(str(p) for p in parts)
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()


def _run(cmd: list[str], log: Log, **kw) -> subprocess.CompletedProcess:
    log("$", " ".join(a if "\n" not in a else "<script>" for a in cmd))
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def environment(log: Log) -> None:
    """Versions, and what the CUDA path needs that is missing."""
    log(f"python {sys.version.split()[0]} ({platform.platform()})")
    try:
        import torch

        log(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, "
            f"CUDA available: {torch.cuda.is_available()}")
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            log(f"device: {p.name}, {p.total_memory / 2**30:.1f} GiB, "
                f"compute capability {p.major}.{p.minor}, {p.multi_processor_count} SMs")
    except ImportError as e:
        log(f"MISSING torch: {e}")
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True)
        log(f"nvidia-smi: {q.stdout.strip() or q.stderr.strip()}")
    else:
        log("nvidia-smi: not found")
    try:
        import cupy

        log(f"cupy {cupy.__version__}")
    except ImportError as e:
        log(f"MISSING cupy (CUDA tensors cannot run): {e}")
    try:
        from cuda.bindings import nvrtc

        _, major, minor = nvrtc.nvrtcVersion()
        log(f"cuda-bindings NVRTC {major}.{minor} (gumbelrs compiles its kernels through it)")
    except Exception as e:  # any failure is a finding to print, not a stop
        log(f"MISSING cuda-bindings' NVRTC (gumbelrs cannot compile its kernels): "
            f"{type(e).__name__}: {e}")
    try:
        from cuda import pathfinder

        log(f"NVRTC: {pathfinder.load_nvidia_dynamic_lib('nvrtc').abs_path}")
        log(f"CUDA headers: {pathfinder.find_nvidia_header_directory('cudart')}")
    except Exception as e:  # any lookup failure is a finding to print, not a stop
        log(f"MISSING NVRTC or CUDA headers (cuda.pathfinder): {type(e).__name__}: {e}")
    for module in ("scipy", "numpy", "pytest"):
        try:
            m = __import__(module)
            log(f"{module} {m.__version__}")
        except ImportError:
            log(f"MISSING {module} (tests/test_cuda.py needs it)")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("g++")
    log(f"C compiler: {cc or 'MISSING (torch.compile tests and the emulator need one)'}")


def install(out: Path, log: Log) -> dict[str, str]:
    """The environment in which this Python imports the installed wheel:
    installed by pip into ``$OUT/site`` without network or dependencies (the
    device's own torch, CuPy and NumPy serve), first on ``PYTHONPATH`` so
    that no other copy of gumbelrs (a source tree, an editable install) is
    imported; if pip refuses the wheel (its platform tag), the wheel
    unpacked there instead."""
    wheels = sorted(HERE.glob("gumbelrs-*.whl"))
    if not wheels:
        raise SystemExit(f"no gumbelrs wheel in {HERE}: run `make gpu-check-bundle` first")
    site = out / "site"
    shutil.rmtree(site, ignore_errors=True)
    r = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
              "--target", str(site), str(wheels[-1])], log)
    if r.returncode != 0:
        log(f"pip refused the wheel ({r.stderr.strip()[-300:]}); unpacking it instead")
        with zipfile.ZipFile(wheels[-1]) as z:
            z.extractall(site)
    # The compiled kernels are cached under $OUT too (and removed with the install).
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1",
           "GUMBELRS_CACHE": str(out / "cache")}
    where = subprocess.run([sys.executable, "-c", "import gumbelrs; print(gumbelrs.__file__)"],
                           capture_output=True, text=True, cwd=out, env=env)
    log(f"installed: {where.stdout.strip() or where.stderr.strip()}")
    if where.returncode != 0 or not where.stdout.strip().startswith(str(site)):
        raise SystemExit("the installed wheel is not the gumbelrs this Python imports")
    return env


def tests(env: dict[str, str], out: Path, log: Log, timeout: float,
          budget: float) -> tuple[int, int]:
    """Runs the CUDA tests; a test that hangs is killed, recorded as failed,
    and the run goes on without it while the budget lasts."""
    plugin_dir = out / "plugin"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "gpu_check_timeout.py").write_text(PLUGIN)
    current = out / "current-test"
    env = {**env, "PYTHONPATH": f"{env['PYTHONPATH']}{os.pathsep}{plugin_dir}",
           "GPU_CHECK_TEST_TIMEOUT": str(timeout), "GPU_CHECK_CURRENT": str(current)}
    hung: list[str] = []
    passed = failed = 0
    end = time.monotonic() + budget
    for attempt in range(1, 6):
        junit = out / f"junit-{attempt}.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "gpu_check_timeout",
               "-p", "no:cacheprovider", f"--junitxml={junit}", *TESTS,
               *[f"--deselect={h}" for h in hung]]
        r = _run(cmd, log, cwd=HERE, env=env, timeout=max(10.0, end - time.monotonic()))
        with (out / "pytest.log").open("a", encoding="utf-8") as f:
            f.write(r.stdout + r.stderr)
        log(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-500:])
        if junit.exists():
            suite = ET.parse(junit).getroot()
            for case in suite.iter("testcase"):
                bad = case.find("failure") is not None or case.find("error") is not None
                skipped = case.find("skipped") is not None
                passed += not bad and not skipped
                failed += bad
            shutil.copy(junit, out / "junit.xml")
            break
        if not current.exists() or time.monotonic() > end:
            log("pytest ended without a report; see pytest.log")
            failed += 1
            break
        stuck = current.read_text()
        current.unlink()
        log(f"HUNG past {timeout:.0f} s, killed: {stuck}; running the rest without it")
        hung.append(stuck)
        failed += 1
        # The tests before it passed or failed in the killed run: their results are lost,
        # so the next run repeats them; only the hung ones are counted here.
    return passed, failed


def bench(env: dict[str, str], out: Path, log: Log, repeats: int) -> None:
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, cwd=out, env=env)
    if probe.stdout.strip() != "True":
        msg = "no CUDA device visible to torch: the GPU bench was not run"
        (out / "bench.md").write_text(msg + "\n")
        (out / "bench.json").write_text(json.dumps({"skipped": msg}) + "\n")
        log(msg)
        return
    cmd = [sys.executable, "-m", "gumbelrs", "bench", "--device", "cuda", "--repeats", str(repeats),
           "--bfloat16", "--shapes", BENCH_SHAPES, "--only", *BENCH_ONLY, "--markdown",
           "--json", str(out / "bench.json")]
    r = _run(cmd, log, cwd=out, env=env)
    (out / "bench.md").write_text(r.stdout + (f"\n{r.stderr}" if r.returncode else ""))
    log(r.stdout.strip() or r.stderr.strip()[-2000:])


def parity(env: dict[str, str], out: Path, log: Log) -> tuple[int, int]:
    r = _run([sys.executable, "-c", PARITY], log, cwd=out, env=env)
    try:
        result = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        log(f"parity check crashed: {r.stderr.strip()[-2000:]}")
        (out / "parity.json").write_text(json.dumps({"crashed": r.stderr[-5000:]}) + "\n")
        return 0, 1
    (out / "parity.json").write_text(json.dumps(result, indent=1) + "\n")
    if "skipped" in result:
        log(f"parity: skipped ({result['skipped']})")
    for case in result["cases"]:
        if not case["equal"]:
            log(f"parity FAILED: {case['case']} {case['why']}")
    log(f"parity: {result['passed']} equal, {result['failed']} different")
    return result["passed"], result["failed"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--test-timeout", type=float, default=90.0,
                   help="seconds a single test may run before it is killed")
    p.add_argument("--test-budget", type=float, default=300.0,
                   help="seconds for all tests, reruns after a hang included")
    p.add_argument("--repeats", type=int, default=9, help="bench repeats per case")
    args = p.parse_args(argv)
    out = Path(os.environ.get("OUT") or "gpu-check-out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "log.txt")
    t0 = time.monotonic()
    environment(log)
    env = install(out, log)
    try:
        passed, failed = tests(env, out, log, args.test_timeout, args.test_budget)
        bench(env, out, log, args.repeats)
        eq, neq = parity(env, out, log)
    finally:
        for scratch in ("site", "plugin", "cache"):
            shutil.rmtree(out / scratch, ignore_errors=True)
    log(f"wall time {time.monotonic() - t0:.0f} s")
    log(f"{passed + eq} passed, {failed + neq} failed")
    return 1 if failed + neq else 0


if __name__ == "__main__":
    sys.exit(main())
