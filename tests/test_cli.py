"""The gumbelrs command: its subcommands run, bad arguments fail clearly."""

import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "gumbelrs", *args], capture_output=True,
                          text=True, timeout=300)


def test_info_reports_simd_and_threads():
    r = run("info")
    assert r.returncode == 0, r.stderr
    assert "SIMD: " in r.stdout and "threads: gumbelrs " in r.stdout


def test_bench_runs_a_tiny_table():
    r = run("bench", "--shapes", "8x16", "--threads", "1", "--repeats", "2", "--only",
            "Categorical.sample", "--markdown")
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| Categorical.sample")]
    assert len(rows) == 1 and rows[0].split("|")[2].strip() == "8x16"


def test_bad_arguments_exit_nonzero_with_a_message():
    r = run("bogus")
    assert r.returncode == 2 and "invalid choice: 'bogus'" in r.stderr
    r = run("info", "--verbose")
    assert r.returncode == 2 and "unrecognized arguments: --verbose" in r.stderr
