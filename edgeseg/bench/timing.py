"""Timing helpers: repeated calls to percentiles, and one timed call."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class LatencyStats:
    """Milliseconds per call over ``runs`` timed calls (after the warm-up).

    Attributes:
        p50: Median.
        p90: 90th percentile.
        mean: Mean.
        min: Fastest call.
        runs: Timed calls.
    """

    p50: float
    p90: float
    mean: float
    min: float
    runs: int

    @classmethod
    def from_ms(cls, times_ms: list[float]) -> LatencyStats:
        """Summarise per-call times in milliseconds.

        Raises:
            ValueError: For an empty list.
        """
        if not times_ms:
            raise ValueError("no timings to summarise")
        t = np.asarray(times_ms, dtype=np.float64)
        return cls(p50=round(float(np.percentile(t, 50)), 3), p90=round(float(np.percentile(t, 90)), 3),
                   mean=round(float(t.mean()), 3), min=round(float(t.min()), 3), runs=len(t))


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 0) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed one by one.

    Args:
        fn: What to time (no arguments).
        runs: Timed calls (at least 1).
        warmup: Untimed calls first.

    Returns:
        The per-call statistics.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return LatencyStats.from_ms(times)


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """Call ``fn`` once; returns ``(result, seconds)``."""
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0
