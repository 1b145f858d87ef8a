"""Timing shared by the structured benchmarks (imported from the scripts'
own folder when run as ``python benches/NAME.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def alternate(fns: dict[str, Callable[[], object]], repeats: int,
              stat: Callable[[list[float]], float]) -> dict[str, float]:
    """``stat`` of the seconds of each function, timed alternately (one round
    calls each once) after one warm-up call each."""
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {name: stat(t) for name, t in times.items()}
