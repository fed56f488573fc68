"""Target profiles: the budgets a deployment must meet, and the verdict of a benchmark against them.

A profile names a class of device and what the classifier may spend there: batch-1 latency, peak
memory, power, and the pixel rate the sensor delivers. Budgets are the defaults below, chosen for
an HSI classifier sharing the device with the rest of a payload; a TOML file overrides any field
or adds profiles::

    [targets.jetson-orin-nano]
    power_w = 7                # run in the 7 W mode
    memory_mb = 1024

    [targets.my-board]
    description = "ARM board on the gimbal"
    device = "cpu"
    latency_ms = 5
    min_throughput_px_s = 20000

A name may carry a power mode: ``jetson-orin-nano@7W`` is the profile with ``power_w = 7`` (one of
its ``power_modes_w``). A verdict compares only what was measured; a budget whose number could not
be measured here (power off a Jetson) is reported as not measured, never as passed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path

from blmkd.bench.machine import jetson_model
from blmkd.bench.sensors import Sensor
from blmkd.errors import BlmkdError

DEVICES = ("cpu", "cuda", "jetson")


@dataclass(frozen=True)
class TargetProfile:
    """Budgets of one deployment target (None: no budget for that quantity)."""

    name: str
    description: str
    device: str  # where the numbers must be measured to count: cpu | cuda | jetson
    latency_ms: float | None = None  # batch-1 p50 latency per patch
    memory_mb: float | None = None  # peak memory the classifier may add (RSS growth / GPU allocation)
    power_w: float | None = None  # board power while classifying (the power mode)
    min_throughput_px_s: float | None = None  # pixels per second the sensor delivers
    power_modes_w: tuple[float, ...] = ()  # the board's power modes (nvpmodel), for name@<W>W
    notes: str = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["power_modes_w"] = list(self.power_modes_w)
        return d


PROFILES: dict[str, TargetProfile] = {
    p.name: p
    for p in (
        TargetProfile(
            "cpu", "this machine's CPU (the built-in reference)", "cpu",
            latency_ms=0.05, memory_mb=1536, min_throughput_px_s=50_000,
            notes="the project's CPU targets: 50k px/s full-scene, 0.05 ms batch-1 latency",
        ),
        TargetProfile(
            "cuda", "a workstation or server CUDA GPU", "cuda",
            latency_ms=0.5, memory_mb=4096, min_throughput_px_s=1_000_000,
        ),
        TargetProfile(
            "jetson-orin-nano", "NVIDIA Jetson Orin Nano 8 GB (7/15/25 W modes)", "jetson",
            latency_ms=2.0, memory_mb=2048, power_w=15, min_throughput_px_s=200_000, power_modes_w=(7, 15, 25),
            notes="8 GB shared by CPU and GPU; 2 GB left for the classifier next to capture and OS",
        ),
        TargetProfile(
            "jetson-agx-orin", "NVIDIA Jetson AGX Orin (15-60 W modes)", "jetson",
            latency_ms=1.0, memory_mb=8192, power_w=30, min_throughput_px_s=1_000_000,
            power_modes_w=(15, 30, 50, 60),
        ),
        TargetProfile(
            "drone", "UAV payload: push-broom imager, ~1,000 px lines at 100 lines/s", "jetson",
            latency_ms=10.0, memory_mb=1024, power_w=10, min_throughput_px_s=100_000,
            notes="classification must keep up with the line rate on a battery budget",
        ),
        TargetProfile(
            "smallsat", "small-satellite (CubeSat) payload computer", "jetson",
            latency_ms=50.0, memory_mb=512, power_w=5, min_throughput_px_s=20_000,
            notes="onboard classification before downlink; a few watts of the bus",
        ),
    )
}  # fmt: skip


def with_sensor(profile: TargetProfile, sensor: Sensor) -> TargetProfile:
    """``profile`` whose throughput budget is the pixel rate of ``sensor`` (named ``profile+sensor``)."""
    return replace(
        profile,
        name=f"{profile.name}+{sensor.name}",
        min_throughput_px_s=sensor.pixel_rate,
        notes=(profile.notes + "; " if profile.notes else "")
        + f"throughput from the sensor: {sensor.text()}",
    )


_FIELDS = {f.name for f in dataclasses.fields(TargetProfile)} - {"name"}


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise BlmkdError(
                "reading target files needs Python >= 3.11 (tomllib) or the tomli package"
            ) from None
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise BlmkdError(f"targets file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BlmkdError(f"{path}: not valid TOML ({exc})") from None


def load_profiles(
    path: str | Path | None = None, base: dict[str, TargetProfile] | None = None
) -> dict[str, TargetProfile]:
    """The built-in profiles, with the fields of ``[targets.<name>]`` tables in ``path`` applied.

    A table for an unknown name adds a profile; it needs ``description`` and ``device``.

    Raises:
        BlmkdError: unreadable file, unknown fields, wrong types, a new profile without a device.
    """
    profiles = dict(base if base is not None else PROFILES)
    if path is None:
        return profiles
    path = Path(path)
    doc = _load_toml(path)
    tables = doc.get("targets", {})
    if not isinstance(tables, dict) or set(doc) - {"targets"}:
        raise BlmkdError(f"{path}: expected only [targets.<name>] tables")
    for name, fields in tables.items():
        if not isinstance(fields, dict):
            raise BlmkdError(f"{path}: targets.{name} must be a table")
        unknown = set(fields) - _FIELDS
        if unknown:
            raise BlmkdError(
                f"{path}: targets.{name}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_FIELDS))}"
            )
        values = {k: _coerce(path, name, k, v) for k, v in fields.items()}
        if name in profiles:
            profiles[name] = replace(profiles[name], **values)
        else:
            missing = {"description", "device"} - set(values)
            if missing:
                raise BlmkdError(f"{path}: new target {name!r} needs {' and '.join(sorted(missing))}")
            profiles[name] = TargetProfile(name=name, **values)
        if profiles[name].device not in DEVICES:
            raise BlmkdError(f"{path}: targets.{name}.device must be one of {', '.join(DEVICES)}")
    return profiles


def _coerce(path: Path, name: str, key: str, value):
    where = f"{path}: targets.{name}.{key}"
    if key in ("description", "device", "notes"):
        if not isinstance(value, str):
            raise BlmkdError(f"{where} must be a string")
        return value
    if key == "power_modes_w":
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            raise BlmkdError(f"{where} must be a list of numbers")
        return tuple(float(v) for v in value)
    if not _is_number(value) or value <= 0:
        raise BlmkdError(f"{where} must be a positive number")
    return float(value)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def get_profile(name: str, profiles: dict[str, TargetProfile] | None = None) -> TargetProfile:
    """The profile called ``name``; ``name@<W>W`` selects one of its power modes.

    Raises:
        BlmkdError: an unknown name (the known ones are listed) or a power mode the board lacks.
    """
    profiles = profiles if profiles is not None else PROFILES
    base, _, mode = name.partition("@")
    if base not in profiles:
        raise BlmkdError(f"unknown target {base!r}; known: {', '.join(profiles)}")
    p = profiles[base]
    if not mode:
        return p
    try:
        watts = float(mode.upper().removesuffix("W"))
    except ValueError:
        raise BlmkdError(f"bad power mode {mode!r} in {name!r}; write e.g. {base}@15W") from None
    if p.power_modes_w and watts not in p.power_modes_w:
        modes = ", ".join(f"{m:g} W" for m in p.power_modes_w)
        raise BlmkdError(f"{base} has no {watts:g} W mode; its modes: {modes}")
    return replace(p, name=f"{base}@{watts:g}W", power_w=watts)


def default_target(device: str) -> str:
    """The profile that describes where this benchmark runs: a Jetson, a CUDA GPU or the CPU."""
    if jetson_model():
        return "jetson-agx-orin" if "agx" in (jetson_model() or "").lower() else "jetson-orin-nano"
    return "cuda" if device.startswith("cuda") else "cpu"


@dataclass
class Check:
    """One budget against one measurement."""

    quantity: str  # latency | memory | throughput | power
    measured: float | None
    budget: float
    unit: str
    passed: bool | None  # None: not measured here
    note: str = ""

    def text(self) -> str:
        op = "≥" if self.quantity == "throughput" else "≤"
        fmt = (lambda v: f"{v:,.0f}") if self.unit == "px/s" else (lambda v: f"{v:.4g}")
        if self.measured is None:
            return f"{self.quantity}: not measured ({self.note}); budget {op} {fmt(self.budget)} {self.unit}"
        mark = "pass" if self.passed else "FAIL"
        how = f" ({self.note})" if self.note else ""
        return f"{self.quantity} {fmt(self.measured)} {self.unit}{how} {op} {fmt(self.budget)} {self.unit}: {mark}"


@dataclass
class Verdict:
    """A profile judged on one benchmarked artifact."""

    target: str
    artifact: str
    checks: list[Check] = field(default_factory=list)
    measured_on: str = ""  # the device kind the numbers come from
    caveat: str = ""  # e.g. "measured on cpu, not on a jetson"

    @property
    def passed(self) -> bool | None:
        """False if any measured budget fails, True if all pass and all were measured, else None."""
        states = [c.passed for c in self.checks]
        if any(s is False for s in states):
            return False
        if states and all(s is True for s in states):
            return True
        return None

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "INCOMPLETE"}[self.passed]

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "artifact": self.artifact,
            "verdict": self.label,
            "passed": self.passed,
            "measured_on": self.measured_on,
            "caveat": self.caveat,
            "checks": [dataclasses.asdict(c) | {"text": c.text()} for c in self.checks],
        }


def judge(profile: TargetProfile, row: dict, measured_on: str) -> Verdict:
    """Compare one benchmark row (see :func:`blmkd.bench.runner.run_bench`) with ``profile``.

    Uses the row's ``latency["p50_ms"]`` (batch 1), ``memory_mb``, the larger of ``best_px_s`` and
    the whole-scene ``map["px_s"]``, and ``power_w``.
    """
    v = Verdict(profile.name, row["name"], measured_on=measured_on)
    if measured_on != profile.device:
        v.caveat = f"measured on {measured_on}, not on a {profile.device}: indicative only"
    lat = (row.get("latency") or {}).get("p50_ms")
    if profile.latency_ms is not None:
        v.checks.append(
            _check("latency", lat, profile.latency_ms, "ms", lower=True, why="batch-1 latency not timed")
        )
    if profile.memory_mb is not None:
        v.checks.append(_check("memory", row.get("memory_mb"), profile.memory_mb, "MB", lower=True,
                               why=row.get("memory_method") or "memory not readable"))  # fmt: skip
    if profile.min_throughput_px_s is not None:
        # The sensor's pixel rate is met by whole-scene mapping where it was timed, else by patches.
        scene = (row.get("map") or {}).get("px_s")
        patches = row.get("best_px_s")
        use_map = scene is not None and (patches is None or scene >= patches)
        c = _check("throughput", scene if use_map else patches, profile.min_throughput_px_s, "px/s", lower=False,
                   why="no batch timed")  # fmt: skip
        if c.measured is not None:
            c.note = "whole-scene map" if use_map else "best batch"
            c.note += f", {c.measured / profile.min_throughput_px_s:.2f}× the required rate"
        v.checks.append(c)
    if profile.power_w is not None:
        v.checks.append(_check("power", row.get("power_w"), profile.power_w, "W", lower=True,
                               why=row.get("power_note") or "power not measured"))  # fmt: skip
    return v


def _check(quantity: str, measured, budget: float, unit: str, *, lower: bool, why: str) -> Check:
    if measured is None:
        return Check(quantity, None, budget, unit, None, why)
    ok = measured <= budget if lower else measured >= budget
    return Check(quantity, float(measured), budget, unit, bool(ok))
