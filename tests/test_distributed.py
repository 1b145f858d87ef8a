"""gumbelrs on torch.distributed: `gumbelrs run APP --nproc 2` (gloo on loopback) gives the
units of a single-process run bit for bit, the DDP VAE matches one process within the
summation order and repeats bitwise, a killed rank is restarted and resumes without losing or
redoing a unit, a failing rank ends the job with its message and status 2, and each rank gets
its own stream. Every subprocess has a timeout."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gumbelrs
from gumbelrs.apps import kmeans, vae

LAUNCH_TIMEOUT = 300  # seconds; a launch takes a few on an idle machine


def gumbelrs_run(*args):
    return subprocess.Popen([sys.executable, "-m", "gumbelrs", "run", *args, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=LAUNCH_TIMEOUT):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the job did not end in {timeout} s:\n{err[-3000:]}") from None
    return proc.returncode, out, err


def done(folder: Path) -> dict:
    return torch.load(folder / "checkpoint.pt", weights_only=False)["done"]


def log_lines(folder: Path) -> list[tuple[str, int, int, str]]:
    """(time, pid, restart, message) of every rank's log lines."""
    lines = []
    for file in sorted((folder / "logs").glob("rank*.log")):
        for line in file.read_text().splitlines():
            m = re.match(r"(\S+ \S+) pid (\d+) restart (\d+): (.*)", line)
            lines.append((m[1], int(m[2]), int(m[3]), m[4]))
    return lines


def computed(folder: Path) -> list[tuple[int, str]]:
    """(restart, key) of every unit a rank computed."""
    return [(restart, re.match(r"rank \d+ computed (\S+) in", msg)[1])
            for _, _, restart, msg in log_lines(folder) if " computed " in msg]


KMEANS = ["--datasets", "iris", "--seeds", "4", "--steps", "40", "--deep", "false"]


def kmeans_alone(tmp_path: Path, options: list[str]) -> dict:
    """The units of a single-process run of kmeans with ``options``."""
    from gumbelrs.apps._cli import make_config

    config = make_config("kmeans", kmeans.Config, {}, options)
    kmeans.run(config, None, False, tmp_path / "alone.pt")
    return torch.load(tmp_path / "alone.pt", weights_only=False)["done"]


def metrics(folder: Path) -> dict:
    m = json.loads((folder / "report" / "metrics.json").read_text())
    m["kmeans"].pop("seconds")
    m.pop("meta")
    return m


def test_units_on_two_ranks_are_those_of_one_process_bitwise(tmp_path):
    status, _, err = finish(gumbelrs_run("kmeans", "--nproc", "2", "--out",
                                         str(tmp_path / "two"), *KMEANS))
    assert status == 0, err[-3000:]
    assert done(tmp_path / "two") == kmeans_alone(tmp_path, KMEANS)  # floats compared exactly
    ranks = {re.match(r"rank (\d)", msg)[1] for _, _, _, msg in log_lines(tmp_path / "two")
             if " computed " in msg}
    assert ranks == {"0", "1"}
    assert sorted(key for _, key in computed(tmp_path / "two")) == [f"iris/{s}" for s in range(4)]
    assert not (tmp_path / "two" / "checkpoint.pt.units").exists()  # merged into checkpoint.pt


def test_a_killed_rank_is_restarted_and_no_unit_is_lost_or_redone(tmp_path):
    options = ["--datasets", "iris,wine", "--seeds", "4", "--steps", "300", "--deep", "false"]
    out = tmp_path / "killed"
    # Two restarts: on a loaded machine a worker of the restarted group aborted once in five
    # runs (std::terminate in gloo, "terminate called without an active exception"); the
    # invariants below must hold over every attempt.
    proc = gumbelrs_run("kmeans", "--nproc", "2", "--max-restarts", "2", "--out", str(out),
                        *options)
    deadline, victim = time.monotonic() + LAUNCH_TIMEOUT, None
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for _, pid, _, msg in log_lines(out) if (out / "logs").is_dir() else ():
            if msg.startswith("rank 1 computed"):
                victim = pid
        time.sleep(0.05)
    assert victim is not None, finish(proc)[2][-3000:]
    os.kill(victim, signal.SIGKILL)
    killed = time.strftime("%H:%M:%S")
    status, _, err = finish(proc)
    assert status == 0, err[-3000:]
    runs = computed(out)
    before = [key for restart, key in runs if restart == 0]
    after = [key for restart, key in runs if restart >= 1]
    assert after and not set(before) & set(after), (before, after)  # nothing finished is redone
    keys = [f"{d}/{s}" for d in ("iris", "wine") for s in range(4)]
    assert sorted(before + after) == sorted(keys)  # every unit once: none lost, none twice
    assert done(out) == kmeans_alone(tmp_path, options)
    assert not (out / "checkpoint.pt.units").exists()  # merged, and no half-written file left
    started = [t for t, _, restart, msg in log_lines(out) if restart >= 1 and "started" in msg]
    print(f"killed rank 1 (pid {victim}) at {killed}; restarted at {min(started)}; "
          f"{len(before)} units done before, {len(after)} after, 0 redone")


def test_a_resumed_run_deletes_the_half_written_files_of_a_killed_process(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    kmeans.run(kmeans.Config(datasets=("iris",), seeds=1, steps=5, deep=False), None, False, ckpt)
    units = tmp_path / "checkpoint.pt.units"
    units.mkdir()
    stale = [units / ".0123abcd.4242.tmp", tmp_path / "checkpoint.tmp"]
    for file in stale:
        file.write_bytes(b"cut short")
    kmeans.run(kmeans.Config(datasets=("iris",), seeds=2, steps=5, deep=False), None, False,
               tmp_path / "other.pt")  # another run's folder is left alone
    assert all(file.exists() for file in stale)
    kmeans.run(kmeans.Config(datasets=("iris",), seeds=1, steps=5, deep=False), None, False, ckpt)
    assert not any(file.exists() for file in stale)
    assert not units.exists()
    assert list(done(tmp_path)) == ["iris/0"]


def test_a_failing_rank_ends_the_job_with_its_message_and_status_2(tmp_path):
    status, _, err = finish(gumbelrs_run("kmeans", "--nproc", "2", "--out", str(tmp_path),
                                         "--seeds", "0"))
    assert status == 2
    assert re.search(r"gumbelrs run \(rank [01]\): error: kmeans: seeds must be an int >= 1, "
                     r"got 0", err), err[-3000:]
    assert re.search(r"gumbelrs run: rank [01] failed with exit status 2", err), err[-3000:]


VAE = ["--datasets", "digits", "--methods", "soft,gumbel_rao", "--steps", "12",
       "--iw-samples", "2", "--hidden", "64"]


def test_ddp_vae_matches_one_process_and_repeats_bitwise(tmp_path):
    procs = [gumbelrs_run("vae", "--nproc", "2", "--out", str(tmp_path / f"run{i}"), *VAE)
             for i in range(2)]
    for proc in procs:
        status, _, err = finish(proc)
        assert status == 0, err[-3000:]
    first, second = done(tmp_path / "run0"), done(tmp_path / "run1")
    from gumbelrs.apps._cli import make_config

    config = make_config("vae", vae.Config, {}, VAE)
    vae.run(config, None, False, tmp_path / "alone.pt")
    alone = torch.load(tmp_path / "alone.pt", weights_only=False)["done"]
    for key in alone:
        assert first[key]["losses"] == second[key]["losses"]
        assert first[key]["scores"] == second[key]["scores"]
        for name, w in first[key]["state"].items():
            assert torch.equal(w, second[key]["state"][name])
        # One process sums the batch's gradients in another order: float32 rounding only.
        torch.testing.assert_close(torch.tensor(first[key]["losses"]),
                                   torch.tensor(alone[key]["losses"]), rtol=1e-5, atol=1e-4)
        for name, w in first[key]["state"].items():
            torch.testing.assert_close(w, alone[key]["state"][name], rtol=0, atol=1e-4)


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_rank_streams_are_distinct_philox_keys(monkeypatch, world):
    """A Philox word is a function of (key = seed, counter = (element // 4, offset)): streams
    with distinct seeds never share a (key, counter) pair, whatever they draw."""
    import torch.distributed as dist

    alone = gumbelrs.Generator.for_rank(1234).seed  # no group: rank 0 of 1
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: world)
    streams = []
    for rank in range(world):
        monkeypatch.setattr(dist, "get_rank", lambda group=None, r=rank: r)
        streams.append(gumbelrs.Generator.for_rank(1234))
    seeds = [g.seed for g in streams]
    assert len(set(seeds)) == world and 1234 not in seeds
    assert seeds == [g.seed for g in gumbelrs.Generator(1234).fork(world)]
    assert seeds[0] == alone  # rank 0 has the same stream in a job of any size
    noise = [gumbelrs.gumbel_noise((64,), generator=g) for g in streams]
    assert len({tuple(n.tolist()) for n in noise}) == world
    monkeypatch.setattr(dist, "get_rank", lambda group=None: -1)
    with pytest.raises(ValueError, match="this process is not a member of group"):
        gumbelrs.Generator.for_rank(1234)


def test_ops_in_a_compiled_module_draw_the_eager_stream():
    torch.manual_seed(0)
    g = gumbelrs.Generator(3)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), gumbelrs.nn.GumbelSoftmax(0.5, generator=g))
    compiled = torch.compile(net, backend="aot_eager")
    x = torch.randn(4, 6)
    for _ in range(2):  # the second call: the offset advances in compiled code too
        before = g.get_state()
        y = net(x)
        after = g.get_state()
        g.set_state(before)
        yc = compiled(x)
        assert torch.equal(y, yc) and torch.equal(g.get_state(), after)
        yc.sum().backward()
        assert net[0].weight.grad is not None


class Noisy(torch.utils.data.Dataset):
    """Item i: a Gumbel-Softmax sample of fixed logits with a generator seeded by i, so it is
    the same in any worker, forked or spawned."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        logits = torch.linspace(-1.0, 1.0, 5)
        return gumbelrs.gumbel_softmax(logits, 0.5, generator=gumbelrs.Generator(100 + i))


@pytest.mark.parametrize("context, workers", [("fork", 2), ("spawn", 1)])
def test_ops_in_dataloader_workers(context, workers):
    expected = torch.stack([Noisy()[i] for i in range(6)])
    loader = torch.utils.data.DataLoader(Noisy(), batch_size=3, num_workers=workers,
                                         multiprocessing_context=context, timeout=LAUNCH_TIMEOUT)
    assert torch.equal(torch.cat(list(loader)), expected)
