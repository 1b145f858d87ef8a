"""The applications on ``torch.distributed``: joining the process group of a
``torchrun`` worker, the launcher behind ``gumbelrs run APP --nproc N``, and
the job-wide progress bar of :meth:`Checkpoint.map <gumbelrs.apps._common.Checkpoint.map>`.

``gumbelrs run APP --nproc N`` is ``torchrun --standalone --nproc-per-node N -m
gumbelrs run APP``: every worker runs the same command, so the code is the same
under a user's own ``torchrun`` on several machines.

Which parallelism each application uses: units of work over the ranks
(:meth:`Checkpoint.map <gumbelrs.apps._common.Checkpoint.map>`) in kmeans,
dropout, feature_selection, nas, paths, sorting and trees; data-parallel
training (``DistributedDataParallel``) in vae. The other applications run
their work on every rank alike, and rank 0 writes their report.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import threading
from typing import Any

import torch
import torch.distributed as dist

#: Which rank computed or read which unit, when (``gumbelrs run`` writes it to OUT/logs/).
log = logging.getLogger("gumbelrs.apps")

# A rank waits at the end of a map for the others, as long as their share of the units takes;
# a rank that dies does not leave it waiting: the elastic agent stops the whole group.
_TIMEOUT = datetime.timedelta(days=7)

#: Whether this process is computing the units of a Checkpoint.map (their own bars stay off
#: in a job of several ranks).
mapping = False


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched() -> bool:
    """Whether this process is a worker started by ``torchrun`` (or its elastic API)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def join() -> None:
    """Joins the process group of a ``torchrun`` worker (gloo) and shares the
    node's cores between its workers: ``OMP_NUM_THREADS`` threads (the launcher
    sets it to cores // workers) for torch and for the gumbelrs kernels."""
    import gumbelrs

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, cores() // local))
    torch.set_num_threads(threads)
    gumbelrs.set_num_threads(threads)
    if int(os.environ["WORLD_SIZE"]) > 1:
        store, rank, world = next(dist.rendezvous("env://", timeout=_TIMEOUT))
        # A restarted group may meet in the store of the one before (the elastic agent's):
        # without a prefix per attempt, gloo can read the address of a killed rank.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group("gloo", store=dist.PrefixStore(f"gumbelrs/{attempt}", store),
                                rank=rank, world_size=world, timeout=_TIMEOUT)


def leave() -> None:
    """Leaves the process group joined by :func:`join`, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, max_restarts: int, args: list[str]) -> int:
    """Runs ``python -m gumbelrs run ARGS`` in ``nproc`` local workers under
    torch's elastic agent (``torchrun --standalone``: a rendezvous on a free
    local port). A worker that dies restarts the group up to ``max_restarts``
    times; the exit status is that of the first worker that failed (0 when all
    finished)."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # torchrun would set 1 thread per worker; this shares all the cores.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores() // nproc)))
    argv = ["--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
            "--monitor-interval=0.5", "-m", "gumbelrs", "run", *args]
    try:
        torchrun.run(torchrun.get_args_parser().parse_args(argv))
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        status = code if code > 0 else 128 - code  # -9 (killed by SIGKILL) -> 137, as a shell says
        print(f"gumbelrs run: rank {rank} failed with exit status {code} (its message is above); "
              f"the job stopped", file=sys.stderr)
        return status
    return 0


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(value: Any) -> list[Any]:
    """The ``value`` of every rank, in rank order, on every rank."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


class JobBar:
    """Units done out of ``total`` over all ranks: rank 0 draws the bar (when
    ``show``), every rank reports its finished units through the process
    group's key-value store."""

    def __init__(self, total: int, done: int, desc: str, show: bool, name: str) -> None:
        rank, world = rank_world()
        self._store = dist.distributed_c10d._get_default_store() if world > 1 else None
        self._key = f"gumbelrs/{name}/done"
        self._bar = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if show and rank == 0:
            from ._common import require

            tqdm = require("tqdm", "_common").tqdm
            self._bar = tqdm(total=total, initial=done, desc=desc, leave=False,
                             dynamic_ncols=True, unit="unit")
            if self._store is not None:
                self._done = done
                self._thread = threading.Thread(target=self._poll, daemon=True)
                self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self._update()

    def _update(self) -> None:
        assert self._store is not None and self._bar is not None
        now = self._done + self._store.add(self._key, 0)
        self._bar.update(now - self._bar.n)

    def finished(self) -> None:
        """One unit of this rank is done."""
        if self._store is not None:
            self._store.add(self._key, 1)
        elif self._bar is not None:
            self._bar.update()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._update()
        if self._bar is not None:
            self._bar.close()
