"""tegrastats lines of several JetPack releases, the background monitor and the energy maths."""

from __future__ import annotations

import sys

import pytest

from blmkd.bench.tegrastats import TegrastatsMonitor, energy_per_kpx_mj, parse_line, tegrastats_status

JP4_NANO = (
    "RAM 1216/3956MB (lfb 543x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [4%@102,2%@102,0%@102,"
    "0%@102] EMC_FREQ 0%@204 GR3D_FREQ 0%@76 APE 25 PLL@22C CPU@25C PMIC@100C GPU@24C AO@30C thermal@24.5C "
    "POM_5V_IN 1116/1116 POM_5V_GPU 0/0 POM_5V_CPU 122/122"
)
JP4_XAVIER = (
    "RAM 2033/7765MB (lfb 1017x4MB) SWAP 0/3883MB (cached 0MB) CPU [3%@1190,2%@1190,off,off,off,off] EMC_FREQ 0% "
    "GR3D_FREQ 0% AO@35C GPU@35.5C PMIC@100C AUX@34.5C CPU@36.5C thermal@35.3C VDD_IN 4276/4276 "
    "VDD_CPU_GPU_CV 559/559 VDD_SOC 1437/1437"
)
JP5_AGX = (
    "RAM 4567/30536MB (lfb 5973x4MB) SWAP 0/15268MB (cached 0MB) CPU [2%@729,1%@729,0%@729,0%@729] "
    "EMC_FREQ 0%@2133 GR3D_FREQ 12%@[305,305] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.25C Tboard@32C "
    "SOC2@40.812C tj@44.25C VDD_GPU_SOC 2801mW/2801mW VDD_CPU_CV 400mW/400mW VIN_SYS_5V0 2924mW/2924mW "
    "VDDQ_VDD2_1V8AO 302mW/302mW"
)
JP6_NANO = (
    "11-23-2026 18:02:30 RAM 2345/7620MB (lfb 12x4MB) SWAP 0/3810MB (cached 0MB) CPU [12%@1510,8%@1510,"
    "5%@1510,3%@1510,off,off] GR3D_FREQ 45% cpu@48.5C soc2@46.9C soc0@47.3C gpu@47.1C tj@48.5C soc1@46.8C "
    "VDD_IN 5123mW/5000mW VDD_CPU_GPU_CV 1560mW/1488mW VDD_SOC 1375mW/1370mW"
)


def test_jetpack4_nano_uses_the_input_rail_without_units():
    s = parse_line(JP4_NANO)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb) == (1216, 3956, 0)
    assert s.rails == {"POM_5V_IN": (1116, 1116), "POM_5V_GPU": (0, 0), "POM_5V_CPU": (122, 122)}
    assert (s.power_mw, s.power_source) == (1116, "POM_5V_IN")
    assert s.timestamp is None and s.gpu_util == 0


def test_jetpack4_xavier_vdd_in():
    s = parse_line(JP4_XAVIER)
    assert s.ram_used_mb == 2033 and s.power_mw == 4276 and s.power_source == "VDD_IN"
    assert set(s.rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}


def test_jetpack5_agx_orin_sums_its_rails():
    s = parse_line(JP5_AGX)
    assert s.ram_used_mb == 4567 and s.ram_total_mb == 30536 and s.gpu_util == 12
    assert s.power_mw == 2801 + 400 + 2924 + 302
    assert s.power_source.startswith("sum of 4 rails")


def test_jetpack6_nano_timestamp_and_current_not_average():
    s = parse_line(JP6_NANO)
    assert s.timestamp == "11-23-2026 18:02:30"
    assert s.rails["VDD_IN"] == (5123, 5000) and s.power_mw == 5123
    assert (s.ram_used_mb, s.ram_total_mb) == (2345, 7620)


def test_lines_without_fields_are_skipped():
    assert parse_line("") is None
    assert parse_line("tegrastats: interval 100 ms") is None


def test_energy_per_thousand_pixels():
    # 5 W for 2 s over 100,000 px: 10 J / 100 kpx = 0.1 J = 100 mJ per 1,000 px.
    assert energy_per_kpx_mj(5.0, 2.0, 100_000) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        energy_per_kpx_mj(5.0, 0.0, 10)


def test_monitor_collects_recorded_lines(tmp_path):
    script = tmp_path / "fake_tegrastats.py"
    script.write_text(
        "import sys, time\n"
        f"for line in {[JP6_NANO, JP6_NANO.replace('VDD_IN 5123mW', 'VDD_IN 6123mW')]!r}:\n"
        "    print(line, flush=True)\n"
        "time.sleep(30)\n"
    )
    with TegrastatsMonitor(command=[sys.executable, str(script)]) as mon:
        import time

        deadline = time.time() + 10
        while len(mon.samples) < 2 and time.time() < deadline:
            time.sleep(0.02)
    s = mon.summary()
    assert s["samples"] == 2 and s["source"] == "VDD_IN"
    assert s["power_w"] == pytest.approx(5.623) and s["max_power_w"] == pytest.approx(6.123)
    assert s["ram_peak_mb"] == 2345


def test_monitor_says_why_without_tegrastats():
    with TegrastatsMonitor(command=["surely-not-tegrastats-here"]) as mon:
        pass
    assert "not found" in mon.summary()["error"] and "no estimate" in mon.summary()["error"]
    ok, why = tegrastats_status("surely-not-tegrastats-here")
    assert not ok and "not an NVIDIA Jetson" in why
