"""Target profiles: built-ins, TOML overrides, power modes and verdicts."""

from __future__ import annotations

import re

import pytest

from blmkd.bench.targets import PROFILES, get_profile, judge, load_profiles
from blmkd.errors import BlmkdError


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_each_builtin_profile_passes_at_its_budgets_and_fails_past_each(name):
    p = PROFILES[name]
    budgets = {"latency": p.latency_ms, "memory": p.memory_mb, "throughput": p.min_throughput_px_s, "power": p.power_w}
    assert None not in (p.latency_ms, p.memory_mb, p.min_throughput_px_s)  # every target has these three

    def row(**over):
        vals = {**budgets, **over}
        return _row(latency={"p50_ms": vals["latency"]}, memory_mb=vals["memory"], best_px_s=vals["throughput"],
                    power_w=vals["power"])  # fmt: skip

    at = judge(p, row(), p.device)  # every budget met exactly: the bounds are inclusive
    assert at.label == "PASS" and not at.caveat
    assert [c.quantity for c in at.checks] == [q for q, b in budgets.items() if b is not None]
    for quantity, budget in budgets.items():
        if budget is None:
            continue
        missed = judge(p, row(**{quantity: budget * (0.99 if quantity == "throughput" else 1.01)}), p.device)
        assert missed.label == "FAIL" and [c.quantity for c in missed.checks if not c.passed] == [quantity]


def test_toml_overrides_a_field_and_adds_a_profile(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text(
        "[targets.jetson-orin-nano]\npower_w = 7\nmemory_mb = 1024\n\n"
        '[targets.gimbal]\ndescription = "ARM board"\ndevice = "cpu"\nlatency_ms = 5\n'
    )
    profiles = load_profiles(f)
    nano = profiles["jetson-orin-nano"]
    assert (nano.power_w, nano.memory_mb, nano.latency_ms) == (
        7.0,
        1024.0,
        PROFILES["jetson-orin-nano"].latency_ms,
    )
    assert profiles["gimbal"].latency_ms == 5.0 and profiles["gimbal"].memory_mb is None
    assert PROFILES["jetson-orin-nano"].power_w == 15  # the built-ins are untouched


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[targets.drone]\nwatts = 3\n", "unknown field"),
        ('[targets.drone]\npower_w = "lots"\n', "positive number"),
        ("[targets.new]\nlatency_ms = 1\n", "needs description and device"),
        ('[targets.new]\ndescription = "x"\ndevice = "fpga"\n', "device must be one of"),
        ("[targets.drone\n", "not valid TOML"),
        ("latency_ms = 1\n", "only [targets.<name>]"),
    ],
)
def test_bad_toml_is_a_one_line_error(tmp_path, text, message):
    f = tmp_path / "t.toml"
    f.write_text(text)
    with pytest.raises(BlmkdError, match=re.escape(message)):
        load_profiles(f)


def test_power_mode_in_the_name():
    p = get_profile("jetson-orin-nano@7W")
    assert p.power_w == 7 and p.name == "jetson-orin-nano@7W"
    with pytest.raises(BlmkdError, match="no 10 W mode"):
        get_profile("jetson-orin-nano@10W")
    with pytest.raises(BlmkdError, match="unknown target"):
        get_profile("toaster")


def _row(**kw):
    return {"name": "m", "latency": {"p50_ms": 0.5}, "memory_mb": 100.0, "best_px_s": 60_000, "power_w": None,
            "power_note": "tegrastats not found", **kw}  # fmt: skip


def test_verdicts_pass_fail_and_unmeasured_power():
    cpu = PROFILES["cpu"]  # 0.05 ms, 1536 MB, 50k px/s, no power budget
    v = judge(cpu, _row(latency={"p50_ms": 0.04}), "cpu")
    assert v.passed is True and v.label == "PASS" and not v.caveat
    v = judge(cpu, _row(), "cpu")
    assert v.passed is False
    assert [c.passed for c in v.checks] == [False, True, True]
    assert "0.5 ms ≤ 0.05 ms: FAIL" in v.checks[0].text()
    drone = judge(PROFILES["drone"], _row(latency={"p50_ms": 1.0}, best_px_s=200_000), "cpu")
    power = drone.checks[-1]
    assert power.quantity == "power" and power.passed is None and "tegrastats not found" in power.text()
    assert drone.passed is None and drone.label == "INCOMPLETE"  # power unknown, the rest passes
    assert "not on a jetson" in drone.caveat


def test_throughput_budget_uses_the_whole_scene_rate_where_mapped():
    v = judge(PROFILES["cpu"], _row(best_px_s=20_000, map={"px_s": 70_000}), "cpu")
    thr = v.checks[2]
    assert thr.quantity == "throughput" and thr.measured == 70_000 and thr.passed
    assert "70,000 px/s (whole-scene map) ≥ 50,000 px/s: pass" in thr.text()
