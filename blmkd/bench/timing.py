"""Timing with percentiles: perf_counter after warm-up (and CUDA sync where the model is on a GPU)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Timing:
    """Latency percentiles in milliseconds over ``runs`` timed calls."""

    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float

    def to_dict(self) -> dict:
        return asdict(self)


def percentiles(samples_s: list[float] | np.ndarray) -> Timing:
    """Summarise durations in seconds as a :class:`Timing` (linear-interpolated percentiles)."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    if a.size == 0:
        raise ValueError("no timing samples")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return Timing(int(a.size), float(p50), float(p90), float(p99), float(a.mean()), float(a.min()))


def time_samples(
    fn: Callable[[], object],
    *,
    warmup: int = 10,
    runs: int = 100,
    max_seconds: float = 10.0,
    sync: Callable[[], None] | None = None,
    min_seconds: float = 0.0,
    max_runs: int | None = None,
) -> np.ndarray:
    """Durations in seconds of ``runs`` calls of ``fn()`` after ``warmup`` calls (the raw samples).

    With ``min_seconds``, a fast ``fn`` keeps being timed past ``runs`` calls until that much time
    has passed (and warms up for a tenth of it at least): 100 calls of a 30 µs model are 3 ms, too
    short for stable percentiles on a shared machine. Stops once ``max_seconds`` have passed and at
    least 5 calls are timed, or once ``max_runs`` calls are. ``sync`` (e.g. ``torch.cuda.synchronize``) is called before each clock
    read so that asynchronous GPU work is inside the measured interval.
    """
    t_warm = time.perf_counter() + 0.1 * min_seconds
    n = 0
    while n < warmup or time.perf_counter() < t_warm:
        fn()
        n += 1
    if sync:
        sync()
    samples = []
    start = time.perf_counter()
    deadline, enough = start + max_seconds, start + min_seconds
    while True:
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        t1 = time.perf_counter()
        samples.append(t1 - t0)
        if (len(samples) >= runs and t1 >= enough) or (t1 > deadline and len(samples) >= 5):
            break
        if max_runs is not None and len(samples) >= max_runs:
            break
    return np.asarray(samples, dtype=np.float64)


def time_call(
    fn: Callable[[], object],
    *,
    warmup: int = 10,
    runs: int = 100,
    max_seconds: float = 10.0,
    sync: Callable[[], None] | None = None,
) -> Timing:
    """Time ``fn()`` ``runs`` times after ``warmup`` calls; stops early after ``max_seconds``.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before each clock read so that
    asynchronous GPU work is inside the measured interval.
    """
    return percentiles(time_samples(fn, warmup=warmup, runs=runs, max_seconds=max_seconds, sync=sync))


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, min_time: float = 0.0, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds per call of each function: ``repeats`` samples each, taken round-robin so that every
    function sees the same machine load (ratios between them are then fair on a shared machine).

    Each function is called ``warmup`` times first. A sample repeats the call until ``min_time``
    seconds have passed (at least once) and is the mean time per call.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            samples[k].append(mean_call_seconds(fn, min_time))
    return samples


def mean_call_seconds(fn: Callable[[], object], min_time: float) -> float:
    """Mean seconds per call of ``fn`` called back to back until ``min_time`` has passed (at least
    once): microsecond calls are timed in bulk, so the timer's own cost does not count."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / n


def time_repeats(
    fn: Callable[[], object],
    repeats: int,
    *,
    min_time: float = 0.0,
    warmup: int = 1,
    budget: float = float("inf"),
    min_repeats: int = 3,
) -> list[float]:
    """``repeats`` samples of :func:`mean_call_seconds` of ``fn`` after ``warmup`` calls, sorted;
    fewer (but at least ``min_repeats``) once ``budget`` seconds are spent (slow calls)."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats and (len(samples) < min_repeats or time.perf_counter() - start < budget):
        samples.append(mean_call_seconds(fn, min_time))
    return sorted(samples)
