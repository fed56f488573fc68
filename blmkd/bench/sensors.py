"""Sensors: the pixel rate a classifier must sustain, from a push-broom imager's geometry.

A sensor (a preset such as ``enmap``, or ``swath=PX,rate=LINES_PER_S``) turns a target profile's
throughput budget into the pixel rate it delivers (:func:`blmkd.bench.budgets.with_sensor`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from blmkd.errors import BlmkdError

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
