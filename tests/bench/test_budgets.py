"""Target profiles: built-ins, TOML overrides, power modes and verdicts."""

from __future__ import annotations

import re

import pytest

from blmkd.bench.budgets import PROFILES, get_profile, judge, load_profiles, with_sensor
from blmkd.bench.sensors import SENSORS, get_sensor, orbit_ground_speed
from blmkd.errors import BlmkdError


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_each_builtin_profile_passes_at_its_budgets_and_fails_past_each(name):
    p = PROFILES[name]
    budgets = {
        "latency": p.latency_ms,
        "memory": p.memory_mb,
        "throughput": p.min_throughput_px_s,
        "power": p.power_w,
    }
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
    assert "70,000 px/s (whole-scene map, 1.40× the required rate) ≥ 50,000 px/s: pass" in thr.text()


def test_orbit_ground_speed_by_hand():
    # 653 km: v = sqrt(3.986004418e14 / 7,024,000 m) = 7,533.1 m/s; on the ground × 6,371 / 7,024 = 6,832.9 m/s
    assert orbit_ground_speed(653_000) == pytest.approx(6_832.9, abs=0.5)
    assert orbit_ground_speed(400_000) > orbit_ground_speed(653_000)  # lower orbits fly faster


@pytest.mark.parametrize(
    ("name", "px_s"),
    [
        ("enmap", 1000 * 6_832.9 / 30),  # 30 km swath / 30 m, 653 km orbit: ~228 lines/s
        ("prisma", 1000 * 6_888.6 / 30),  # 615 km
        ("desis", 1024 * 7_219.0 / 30),  # ISS, 400 km
        ("uav-pushbroom", 640 * 5 / 0.05),  # 5 m/s over 5 cm pixels: 100 lines/s
    ],
)
def test_sensor_presets_give_their_pixel_rate(name, px_s):
    s = SENSORS[name]
    assert s.pixel_rate == pytest.approx(px_s, rel=1e-3)
    assert s.source and s.swath_px > 0
    assert f"{s.pixel_rate:,.0f} px/s" in s.text()


def test_every_preset_names_its_source():
    assert set(SENSORS) >= {"enmap", "prisma", "desis", "hypso-1", "uav-pushbroom"}
    for s in SENSORS.values():
        assert re.search(r"(doi:10\.\d+/\S+|datasheet)", s.source), s.name


@pytest.mark.parametrize(
    ("spec", "px_s"),
    [
        ("swath=1000,rate=230", 230_000),
        ("swath=640, speed=5, gsd=0.05", 64_000),
        ("swath=1000,altitude=653000,gsd=30", 1000 * 6_832.9 / 30),
        ("ENMAP", SENSORS["enmap"].pixel_rate),
    ],
)
def test_custom_sensor_specs(spec, px_s):
    assert get_sensor(spec).pixel_rate == pytest.approx(px_s, rel=1e-3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("landsat", r"unknown sensor 'landsat'; presets: enmap, prisma, desis, hypso-1, uav-pushbroom"),
        ("rate=230", r"give swath=PIXELS"),
        ("swath=1000,gsd=30", r"give a line rate, or a GSD with a ground speed or an altitude"),
        ("swath=1000,fps=30", r"unknown field 'fps'"),
        ("swath=1000,rate=-2", r"rate must be positive"),
        ("swath=wide,rate=2", r"swath must be a number"),
    ],
)
def test_bad_sensor_is_a_one_line_error(spec, message):
    with pytest.raises(BlmkdError, match=message):
        get_sensor(spec)


def test_sensor_sets_the_throughput_budget_and_the_margin():
    p = with_sensor(get_profile("jetson-orin-nano"), SENSORS["enmap"])
    assert p.name == "jetson-orin-nano+enmap" and p.min_throughput_px_s == SENSORS["enmap"].pixel_rate
    assert p.latency_ms == PROFILES["jetson-orin-nano"].latency_ms  # the other budgets stay
    keeps_up = judge(p, _row(best_px_s=1_000, map={"px_s": 2 * p.min_throughput_px_s}), "jetson").checks[2]
    assert keeps_up.passed and "2.00× the required rate" in keeps_up.text()
    falls_behind = judge(p, _row(best_px_s=0.5 * p.min_throughput_px_s), "jetson").checks[2]
    assert falls_behind.passed is False and "0.50× the required rate" in falls_behind.text()


def test_cli_bench_with_a_sensor(student_ckpt, tmp_path):
    """`blmkd bench --target jetson-orin-nano --sensor enmap`: the verdict says whether the artifact keeps
    up with EnMAP and with what margin, and the report shows the sensor."""
    import json

    from typer.testing import CliRunner

    from blmkd.cli import app

    res = CliRunner(env={"COLUMNS": "250", "BLMKD_NO_PROGRESS": "1"}).invoke(app, [
        "bench", str(student_ckpt.path), "--target", "jetson-orin-nano", "--sensor", "enmap", "--runs", "10",
        "--batch", "1,256", "--eval-size", "200", "--threads", "1", "--report", str(tmp_path / "rep"),
    ])  # fmt: skip
    assert res.exit_code == 0, (res.output, res.exception)
    assert (
        "sensor enmap: 1,000 px × 6,833 m/s ground speed / 30 m GSD = 227.8 lines/s = 227,761 px/s"
        in res.output
    )
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    (v,) = rep["verdicts"]
    thr = next(c for c in v["checks"] if c["quantity"] == "throughput")
    assert v["target"] == "jetson-orin-nano+enmap" and thr["budget"] == pytest.approx(227_761, abs=1)
    margin = thr["measured"] / thr["budget"]
    flat = " ".join(res.output.split())  # the console wraps long lines
    assert f"{margin:.2f}× the required rate" in thr["text"] and f"{margin:.2f}× the required rate" in flat
    assert "jetson-orin-nano+enmap: " + ("PASS" if margin >= 1 else "FAIL") in flat
    assert rep["sensor"]["name"] == "enmap"
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Sensor enmap" in md and "doi:10.3390/rs70708830" in md and "jetson-orin-nano+enmap" in md
