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

# ----------------------------------------------------------------------------------------------
# Sensors: the pixel rate a classifier must sustain, from a push-broom imager's geometry

GM_EARTH = 3.986004418e14  # m³/s², Earth's gravitational parameter
R_EARTH = 6_371_000.0  # m, mean Earth radius


def orbit_ground_speed(altitude_m: float) -> float:
    """Ground-track speed (m/s) of a circular orbit at ``altitude_m``: v·R/(R+h), v = √(GM/(R+h))
    (spherical Earth, its rotation neglected: within ~7 % for the polar orbits below)."""
    r = R_EARTH + altitude_m
    return (GM_EARTH / r) ** 0.5 * R_EARTH / r


@dataclass(frozen=True)
class Sensor:
    """A push-broom imager: one line of ``swath_px`` pixels every 1/``line_rate_hz`` seconds.

    The line rate is given, or follows from the ground speed (given, or from the orbit altitude)
    and the along-track ground sampling distance: line rate = ground speed / GSD.
    """

    name: str
    description: str
    swath_px: int  # pixels across track (one line)
    line_rate_hz: float | None = None  # lines per second, when the sensor's frame rate is known
    gsd_m: float | None = None  # along-track ground sampling distance
    ground_speed_m_s: float | None = None  # platform ground speed (drones, aircraft)
    altitude_m: float | None = None  # orbit altitude (satellites): gives the ground speed
    bands: int | None = None  # spectral bands delivered (for reference; the model fixes its own)
    source: str = ""  # where the parameters are published
    notes: str = ""

    @property
    def speed_m_s(self) -> float | None:
        if self.ground_speed_m_s is not None:
            return self.ground_speed_m_s
        return orbit_ground_speed(self.altitude_m) if self.altitude_m is not None else None

    @property
    def lines_per_s(self) -> float:
        if self.line_rate_hz is not None:
            return self.line_rate_hz
        if self.gsd_m and self.speed_m_s:
            return self.speed_m_s / self.gsd_m
        raise BlmkdError(f"sensor {self.name}: give a line rate, or a GSD with a ground speed or an altitude")

    @property
    def pixel_rate(self) -> float:
        """Pixels per second the classifier must sustain to keep up with the sensor."""
        return self.swath_px * self.lines_per_s

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"lines_per_s": self.lines_per_s, "pixel_rate": self.pixel_rate}

    def text(self) -> str:
        how = (f"{self.line_rate_hz:g} lines/s" if self.line_rate_hz is not None
               else f"{self.speed_m_s:,.0f} m/s ground speed / {self.gsd_m:.3g} m GSD = {self.lines_per_s:,.1f} lines/s")  # fmt: skip
        return f"{self.name}: {self.swath_px:,} px × {how} = {self.pixel_rate:,.0f} px/s"


SENSORS: dict[str, Sensor] = {
    s.name: s
    for s in (
        Sensor(
            "enmap", "EnMAP (DLR), spaceborne imaging spectrometer, 653 km sun-synchronous orbit",
            swath_px=1000, gsd_m=30.0, altitude_m=653_000,
            source="Guanter et al. 2015, The EnMAP Spaceborne Imaging Spectroscopy Mission for Earth "
                   "Observation, Remote Sensing 7(7):8830-8857, doi:10.3390/rs70708830 (30 km swath, 30 m GSD, 653 km)",
        ),
        Sensor(
            "prisma", "PRISMA (ASI), hyperspectral imager, 615 km sun-synchronous orbit",
            swath_px=1000, gsd_m=30.0, altitude_m=615_000, bands=239,
            source="Loizzo et al. 2018, PRISMA: The Italian Hyperspectral Mission, IGARSS 2018, "
                   "doi:10.1109/IGARSS.2018.8518512 (30 km swath, 30 m GSD, 615 km)",
        ),
        Sensor(
            "desis", "DESIS (DLR/Teledyne) on the ISS, ~400 km",
            swath_px=1024, gsd_m=30.0, altitude_m=400_000, bands=235,
            source="Krutz et al. 2019, The Instrument Design of the DLR Earth Sensing Imaging Spectrometer "
                   "(DESIS), Sensors 19(7):1622, doi:10.3390/s19071622 (1024 px, 30 m GSD at 400 km)",
            notes="the ISS altitude varies (~370-420 km); 400 km as in the design",
        ),
        Sensor(
            "hypso-1", "HYPSO-1 (NTNU) 6U CubeSat push-broom imager, nominal captures",
            swath_px=684, gsd_m=40_000 / 684, altitude_m=500_000, bands=120,
            source="Bakken et al. 2023, HYPSO-1 CubeSat: First Images and In-Orbit Characterization, "
                   "Remote Sensing 15(3):755, doi:10.3390/rs15030755 (684 nominal pixels, 40 km swath, 120 bands)",
            notes="along-track sampling taken equal to the across-track 58.5 m and a ~500 km orbit assumed; "
                  "HYPSO-1 slews to oversample along track, which raises the line rate above this",
        ),
        Sensor(
            "uav-pushbroom", "drone push-broom imager (640-pixel class, e.g. Headwall Nano-Hyperspec) at 5 m/s, 5 cm GSD",
            swath_px=640, gsd_m=0.05, ground_speed_m_s=5.0, bands=270,
            source="Headwall Photonics Nano-Hyperspec datasheet (640 spatial pixels, 270 bands); "
                   "flight: 5 m/s at the height that gives 5 cm GSD with the chosen lens",
            notes="a survey flight; faster or lower flights scale the rate linearly",
        ),
    )
}  # fmt: skip

_SENSOR_KEYS = {"swath": "swath_px", "rate": "line_rate_hz", "gsd": "gsd_m", "speed": "ground_speed_m_s",
                "altitude": "altitude_m"}  # fmt: skip


def get_sensor(spec: str) -> Sensor:
    """A preset by name, or a sensor written as ``swath=1000,rate=230`` (lines/s), ``swath=640,speed=5,gsd=0.05``
    (m/s, m) or ``swath=1000,altitude=600000,gsd=30`` (m).

    Raises:
        BlmkdError: an unknown preset (the known ones are listed) or a spec that gives no pixel rate.
    """
    key = spec.strip().lower()
    if key in SENSORS:
        return SENSORS[key]
    if "=" not in key:
        raise BlmkdError(
            f"unknown sensor {spec!r}; presets: {', '.join(SENSORS)}; or write swath=PX,rate=LINES_PER_S"
        )
    vals: dict[str, float] = {}
    for part in key.split(","):
        k, _, v = part.partition("=")
        k = k.strip()
        if k not in _SENSOR_KEYS:
            raise BlmkdError(f"sensor {spec!r}: unknown field {k!r}; use {', '.join(_SENSOR_KEYS)}")
        try:
            vals[_SENSOR_KEYS[k]] = float(v)
        except ValueError:
            raise BlmkdError(f"sensor {spec!r}: {k} must be a number, got {v.strip()!r}") from None
        if vals[_SENSOR_KEYS[k]] <= 0:
            raise BlmkdError(f"sensor {spec!r}: {k} must be positive")
    if "swath_px" not in vals:
        raise BlmkdError(f"sensor {spec!r}: give swath=PIXELS (pixels per line)")
    sensor = Sensor("custom", spec.strip(), swath_px=int(vals.pop("swath_px")), **vals)
    sensor.lines_per_s  # noqa: B018  raises when the spec gives no line rate
    return sensor


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
    from blmkd.bench.machine import jetson_model

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
