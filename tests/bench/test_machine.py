"""CPU feature detection from recorded /proc/cpuinfo lines (x86 with and without VNNI, Arm)."""

from __future__ import annotations

from blmkd.bench.machine import cpu_isa, machine_info

# Recorded (abridged) from the machines this repository ran on and from a Jetson Orin.
INTEL_VNNI = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse sse2 avx f16c fma avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile
"""
EPYC_AVX2 = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 sha_ni vaes vpclmulqdq
"""
JETSON_ORIN = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm paca pacg
CPU implementer\t: 0x41
"""


def test_vnni_cpu_has_int8_and_bf16_dot_products():
    isa = cpu_isa(INTEL_VNNI)
    assert isa["flags"] == ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"]
    assert isa["int8_dot"] and isa["bf16_dot"]
    assert isa["note"] == "int8 dot products, BF16 dot products"


def test_avx2_only_cpu_is_flagged_for_int8():
    isa = cpu_isa(EPYC_AVX2)
    assert isa["flags"] == ["avx2", "fma"]
    assert not isa["int8_dot"] and not isa["bf16_dot"]
    assert "INT8 is rarely faster than FP32" in isa["note"]


def test_arm_features_line_is_read():
    isa = cpu_isa(JETSON_ORIN)
    assert isa["flags"] == ["asimd", "asimddp"]
    assert isa["int8_dot"] and not isa["bf16_dot"]


def test_no_flags_says_unknown():
    assert cpu_isa("") == {
        "flags": [],
        "int8_dot": False,
        "bf16_dot": False,
        "note": "CPU features unknown (no /proc/cpuinfo flags)",
    }


def test_machine_info_reads_the_machines_cpuinfo(monkeypatch, tmp_path):
    import json

    from blmkd.bench import machine

    recorded = tmp_path / "cpuinfo"
    recorded.write_text(INTEL_VNNI)
    monkeypatch.setattr(machine, "_CPUINFO", recorded)
    info = json.loads(json.dumps(machine_info()))  # JSON-ready, as the report stores it
    assert info["cpu"] == "Intel(R) Xeon(R) Processor"
    assert info["cpu_isa"]["int8_dot"] and info["cpu_isa"]["flags"][-1] == "avx512_bf16"
    recorded.write_text(JETSON_ORIN)
    info = machine_info()
    assert info["cpu_isa"]["flags"] == ["asimd", "asimddp"] and info["cpu_isa"]["note"] == "int8 dot products"
    recorded.unlink()  # no /proc/cpuinfo (macOS, some containers): the facts say so, nothing raises
    assert machine_info()["cpu_isa"]["note"] == "CPU features unknown (no /proc/cpuinfo flags)"
