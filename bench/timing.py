"""Timing helpers the benchmarks share (import as `from timing import ...`: bench/ is on
sys.path when a bench script runs)."""
import statistics
import time
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np


def median_time(fn: Callable[[], Any], runs: int, warmup: int = 0) -> Tuple[float, Any]:
    """(median wall time in seconds of `runs` calls of fn, the last call's result), after
    `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def percentile(values: Sequence[float], q: float, empty: Optional[float] = None) -> Optional[float]:
    """The q-th percentile of values, or `empty` when there are none."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else empty


def dist_ms(values_s: Sequence[float]) -> dict:
    """p50/p95/max/mean in ms of a list of seconds."""
    v = [x * 1000.0 for x in values_s]
    if not v:
        return {"n": 0, "p50": None, "p95": None, "max": None, "mean": None}
    return {"n": len(v), "p50": round(percentile(v, 50), 3), "p95": round(percentile(v, 95), 3),
            "max": round(max(v), 3), "mean": round(statistics.fmean(v), 3)}
