"""Percentile maths, the timing loop and the peak-memory meter."""

from __future__ import annotations

import numpy as np
import pytest

from blmkd.bench.memory import PeakMemory, peak_rss_bytes, rss_bytes
from blmkd.bench.timing import percentiles, time_call, time_samples


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


def test_peak_memory_sees_a_transient_allocation():
    assert rss_bytes() > 0 and peak_rss_bytes() >= rss_bytes() // 2
    with PeakMemory() as m:
        a = np.ones(96 << 20, dtype=np.uint8)  # touched: 96 MiB resident
        del a
    assert m.peak_mb is not None and 80 <= m.peak_mb <= 400, (m.peak_mb, m.method)
    assert "RSS growth" in m.method
    with PeakMemory() as small:
        pass
    assert small.peak_mb < 50
