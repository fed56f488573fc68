"""Power and memory on NVIDIA Jetson boards, read from ``tegrastats``.

``tegrastats`` prints one line per interval. Its layout changed across JetPack releases, so the
parser looks for the fields, not for positions::

    JetPack 4 (Nano)   RAM 1216/3956MB (lfb 543x4MB) SWAP 0/1978MB ... POM_5V_IN 1116/1116 POM_5V_GPU 0/0 POM_5V_CPU 122/122
    JetPack 4 (Xavier) RAM 2033/7765MB ... VDD_IN 4276/4276 VDD_CPU_GPU_CV 559/559 VDD_SOC 1437/1437
    JetPack 5 (AGX)    RAM 4567/30536MB ... VDD_GPU_SOC 2801mW/2801mW VDD_CPU_CV 400mW/400mW VIN_SYS_5V0 2924mW/2924mW
    JetPack 6 (Nano)   11-23-2026 18:02:30 RAM 2345/7620MB ... VDD_IN 5123mW/5000mW VDD_CPU_GPU_CV 1560mW/1488mW

A power rail is ``NAME <now>[mW]/<average>[mW]`` (milliwatts; JetPack 4 omits the unit). The board's
input power is the ``VDD_IN`` rail (Orin Nano/NX, Xavier) or ``POM_5V_IN`` (Nano, TX2); boards that
report no input rail (AGX Orin) get the sum of their rails, and the sample says so in
``power_source``. Where tegrastats does not exist the monitor says why; nothing is estimated.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

_RAM = re.compile(r"\bRAM (\d+)/(\d+)(kB|MB|GB)")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)(kB|MB|GB)")
_RAIL = re.compile(r"(?<![\w@])([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_GPU = re.compile(r"\bGR3D_FREQ (\d+)%")
_STAMP = re.compile(r"^(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2}) ")
_TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")  # the board's input power, where the board reports it
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "lfb"}
_UNIT_MB = {"kB": 1 / 1024, "MB": 1.0, "GB": 1024.0}


@dataclass
class TegraSample:
    """One parsed tegrastats line.

    Attributes:
        ram_used_mb, ram_total_mb: board memory (CPU and GPU share it on a Jetson).
        swap_used_mb: swap in use (None where the line has no SWAP field).
        rails: ``{name: (now_mW, average_mW)}`` of every power rail on the line.
        power_mw: the board's power now, from ``power_source`` (None without power rails).
        power_source: the rail used (``VDD_IN``) or ``sum of N rails``.
        gpu_util: GR3D (GPU) load in percent, where reported.
        timestamp: the line's own time stamp (JetPack 6), else None.
    """

    ram_used_mb: float | None = None
    ram_total_mb: float | None = None
    swap_used_mb: float | None = None
    rails: dict[str, tuple[int, int]] = field(default_factory=dict)
    power_mw: float | None = None
    power_source: str = ""
    gpu_util: float | None = None
    timestamp: str | None = None


def parse_line(line: str) -> TegraSample | None:
    """Parse one tegrastats line; None for a line without RAM or power fields (a banner, a blank)."""
    line = line.strip()
    s = TegraSample()
    if m := _STAMP.match(line):
        s.timestamp = m.group(1)
    if m := _RAM.search(line):
        f = _UNIT_MB[m.group(3)]
        s.ram_used_mb, s.ram_total_mb = int(m.group(1)) * f, int(m.group(2)) * f
    if m := _SWAP.search(line):
        s.swap_used_mb = int(m.group(1)) * _UNIT_MB[m.group(3)]
    if m := _GPU.search(line):
        s.gpu_util = float(m.group(1))
    for name, now, avg in _RAIL.findall(line):
        if name not in _NOT_RAILS:
            s.rails[name] = (int(now), int(avg))
    total = next((r for r in _TOTAL_RAILS if r in s.rails), None)
    if total:
        s.power_mw, s.power_source = float(s.rails[total][0]), total
    elif s.rails:
        s.power_mw = float(sum(now for now, _ in s.rails.values()))
        s.power_source = f"sum of {len(s.rails)} rails ({', '.join(s.rails)})"
    if s.ram_used_mb is None and not s.rails:
        return None
    return s


def tegrastats_status(command: str = "tegrastats") -> tuple[bool, str]:
    """(available, reason) for reading power here."""
    path = shutil.which(command)
    if path is None:
        return False, f"{command} not found (not an NVIDIA Jetson); no estimate is made"
    return True, path


class TegrastatsMonitor:
    """Runs ``tegrastats`` in the background and collects its samples while a block runs.

    Args:
        interval_ms: tegrastats ``--interval``.
        command: the command line to run (default ``["tegrastats", "--interval", interval_ms]``);
            tests pass a script that prints recorded lines.

    Use as a context manager; afterwards :meth:`summary` gives mean/max power and peak RAM over the
    samples taken inside the block, or says why there are none.
    """

    def __init__(self, interval_ms: int = 100, command: list[str] | None = None):
        self.command = command or ["tegrastats", "--interval", str(int(interval_ms))]
        self.samples: list[tuple[float, TegraSample]] = []
        self.error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self.t_start = self.t_end = 0.0

    @property
    def available(self) -> tuple[bool, str]:
        if shutil.which(self.command[0]) is None:
            return tegrastats_status(self.command[0])
        return True, self.command[0]

    def __enter__(self) -> TegrastatsMonitor:
        ok, why = self.available
        if not ok:
            self.error = why
            return self
        try:
            self._proc = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        except OSError as exc:
            self.error = f"cannot start {self.command[0]} ({exc})"
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.t_start = time.perf_counter()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            s = parse_line(line)
            if s is not None:
                self.samples.append((time.perf_counter(), s))

    def __exit__(self, *exc) -> bool:
        self.t_end = time.perf_counter()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=2)
        return False

    def summary(self) -> dict:
        """``{"power_w", "max_power_w", "ram_peak_mb", "samples", "source"}`` or ``{"error": why}``."""
        if self.error:
            return {"error": self.error}
        power = [s.power_mw for _, s in self.samples if s.power_mw is not None]
        ram = [s.ram_used_mb for _, s in self.samples if s.ram_used_mb is not None]
        out: dict = {"samples": len(self.samples), "ram_peak_mb": max(ram) if ram else None}
        if not power:
            out["error"] = (
                f"{len(self.samples)} tegrastats samples, none with power rails"
                if self.samples
                else "tegrastats gave no sample during the run (run longer than its interval)"
            )
            return out
        last = [s for _, s in self.samples if s.power_mw is not None][-1]
        out.update(
            power_w=sum(power) / len(power) / 1e3,
            max_power_w=max(power) / 1e3,
            source=last.power_source,
        )
        return out


def energy_per_kpx_mj(power_w: float, seconds: float, pixels: int) -> float:
    """Energy per 1,000 pixels in millijoules: ``P · t / pixels · 1000`` (J) · 1000."""
    if pixels <= 0 or seconds <= 0:
        raise ValueError("energy needs a positive time and pixel count")
    return power_w * seconds / pixels * 1e6
