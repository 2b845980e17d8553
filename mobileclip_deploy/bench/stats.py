"""Summary statistics of latency samples, so host, Android and iOS reports compare like with like."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

STAT_KEYS = ("median", "mean", "trimmed_mean", "p90", "min", "max", "stdev")


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    if not samples:
        raise ValueError("no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} outside [0, 100]")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def trimmed_mean(samples: Sequence[float]) -> float:
    """Mean of the middle 80%: drops `len // 10` samples at each end, exactly as the Swift runner does.

    This is the ModelBench-style number the MobileCLIP paper reports; it ignores scheduler hiccups
    at the top and lucky cache hits at the bottom. The integer cut keeps Python and Swift identical
    (a float fraction such as `n * 0.1` rounds differently, e.g. 10 * (1 - 0.8) / 2 < 1).
    """
    if not samples:
        raise ValueError("no samples")
    xs = sorted(samples)
    cut = len(xs) // 10
    middle = xs[cut : len(xs) - cut]
    return sum(middle) / len(middle)


def stdev(samples: Sequence[float]) -> float | None:
    """Sample standard deviation (n-1); None for a single sample, which has no spread to measure (a 0.00 there
    would read as perfectly stable timing)."""
    n = len(samples)
    if n < 2:
        return None
    mean = sum(samples) / n
    return math.sqrt(sum((x - mean) ** 2 for x in samples) / (n - 1))


def summarize(samples: Sequence[float]) -> dict[str, float | None]:
    """The numbers every record's `latency_ms` carries (the Swift runner writes all but `mean`)."""
    if not samples:
        raise ValueError("no samples to summarize")
    return {
        "median": percentile(samples, 50.0),
        "mean": sum(samples) / len(samples),
        "trimmed_mean": trimmed_mean(samples),
        "p90": percentile(samples, 90.0),
        "min": min(samples),
        "max": max(samples),
        "stdev": stdev(samples),
    }


def interleaved_medians(calls: dict[str, Callable[[], object]], rounds: int, block: int) -> dict[str, float]:
    """Median ms of each call, timed in rounds: per round and call one untimed call (its caches warm again after
    the others ran), then `block` timed ones. Drift in machine load shows in every path, not in one."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            call()
            for _ in range(block):
                t0 = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}
