"""Percentile maths, the timing loop and the peak-memory meter."""

from __future__ import annotations

import numpy as np
import pytest

from blmkd.bench.memory import PeakMemory, peak_rss_bytes, rss_bytes
from blmkd.bench.timing import percentiles, time_call, time_repeats, time_samples


def test_percentiles_interpolate_linearly_in_ms():
    t = percentiles([0.001 * i for i in range(1, 101)])  # 1..100 ms
    assert t.runs == 100
    assert t.p50_ms == pytest.approx(50.5)
    assert t.p90_ms == pytest.approx(90.1)
    assert t.p99_ms == pytest.approx(99.01)
    assert t.mean_ms == pytest.approx(50.5) and t.min_ms == pytest.approx(1.0)


def test_percentiles_of_one_sample_and_of_none():
    t = percentiles([0.002])
    assert t.p50_ms == t.p99_ms == t.min_ms == pytest.approx(2.0)
    with pytest.raises(ValueError):
        percentiles([])


def test_time_samples_warms_up_syncs_and_counts():
    calls, syncs = [], []
    s = time_samples(lambda: calls.append(1), warmup=3, runs=7, sync=lambda: syncs.append(1))
    assert len(s) == 7 and len(calls) == 10
    assert len(syncs) == 1 + 7  # after the warm-up, then before every clock read
    assert (s >= 0).all()


def test_time_call_stops_at_max_seconds_but_keeps_five_samples():
    import time

    t = time_call(lambda: time.sleep(0.01), warmup=0, runs=1000, max_seconds=0.0)
    assert t.runs == 5 and t.min_ms >= 9.0


def test_time_samples_min_seconds_keeps_timing_a_fast_call(monkeypatch):
    """A fake clock that advances 1 ms per read: the loop's arithmetic, not this machine's speed."""
    import blmkd.bench.timing as timing

    clock = iter(np.arange(0, 100, 0.001))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(clock)))
    calls = []
    s = time_samples(lambda: calls.append(1), warmup=2, runs=3, min_seconds=0.1, max_seconds=10.0)
    # 2 ms per timed call (two reads): 0.1 s of timing is 50 calls, not the 3 asked for
    assert 49 <= len(s) <= 51 and np.allclose(s, 0.001)
    assert len(calls) - len(s) >= 5  # warm-up ran for a tenth of min_seconds, not just 2 calls
    s = time_samples(lambda: None, warmup=0, runs=3, min_seconds=5.0, max_seconds=0.02)
    assert len(s) <= 12  # max_seconds still wins


def test_peak_memory_sees_a_transient_allocation():
    assert rss_bytes() > 0 and peak_rss_bytes() >= rss_bytes() // 2

    def peak(mib: int) -> PeakMemory:
        with PeakMemory() as m:
            a = np.ones(mib << 20, dtype=np.uint8)  # touched: resident at once
            del a  # gone before the block ends: only a peak can see it
        assert m.peak_mb is not None and "RSS growth" in m.method, m.method
        return m

    # Bounds from the code's arithmetic, not from this machine: the block adds at least the array,
    # and twice the array adds the difference (whatever the allocator or the interpreter add around it).
    small, big = peak(64), peak(128)
    assert small.peak_mb >= 64 * 0.97 and big.peak_mb >= 128 * 0.97, (small.peak_mb, big.peak_mb)
    assert big.peak_mb - small.peak_mb == pytest.approx(64, abs=64 * 0.1), (small.peak_mb, big.peak_mb)
    with PeakMemory() as none:
        pass
    assert none.peak_mb < small.peak_mb / 4


def test_max_runs_caps_the_samples_and_repeats_stop_at_the_budget(monkeypatch):
    clock = iter(np.arange(0, 100, 0.001))
    import blmkd.bench.timing as timing

    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(clock)))
    s = time_samples(lambda: None, warmup=0, runs=3, min_seconds=5.0, max_seconds=float("inf"), max_runs=7)
    assert len(s) == 7  # min_seconds would have asked for thousands
    calls = []
    r = time_repeats(lambda: calls.append(1), 10, min_time=0.0, warmup=2, budget=0.005, min_repeats=3)
    # each sample is one call of 1 ms on this clock: the 5 ms budget stops it before 10 repeats
    assert 3 <= len(r) < 10 and r == sorted(r) and len(calls) == len(r) + 2
