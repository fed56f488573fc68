"""Material spectra for synthetic scenes: four families, grouped classes, the atmosphere.

Vegetation (green peak, red absorption, red edge near 700 nm, NIR plateau, leaf-water dips),
soil (a smooth rising curve with hydroxyl and clay dips), water (dark, absorbing in the NIR) and
man-made surfaces (flat, bright or dark). Classes come in groups of spectrally similar members
(small perturbations of a shared base spectrum). :mod:`blmkd.data.synthetic` lays them out.
"""

from __future__ import annotations

import math
import string

import numpy as np

from blmkd.errors import DataError

FAMILY_ORDER = ("vegetation", "soil", "man-made", "vegetation", "water", "soil", "man-made", "vegetation")


def _bump(wl: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((wl - centre) / width) ** 2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def atmosphere(wl: np.ndarray) -> np.ndarray:
    """Two-way transmission: water-vapour bands at 940, 1130, 1400, 1900 nm, O2 at 760 nm."""
    t = (
        1.0
        - 0.35 * _bump(wl, 940, 25)
        - 0.45 * _bump(wl, 1130, 30)
        - 0.93 * _bump(wl, 1400, 45)
        - 0.97 * _bump(wl, 1900, 55)
        - 0.15 * _bump(wl, 760, 5)
    )
    return np.clip(t, 0.02, 1.0)


# Parameter ranges per family: (low, high); a group draws its base inside the range.
FAMILY_PARAMS: dict[str, dict[str, tuple[float, float]]] = {
    "vegetation": {
        "vis": (0.03, 0.06),
        "green": (0.04, 0.09),
        "edge": (700.0, 725.0),
        "nir": (0.32, 0.55),
        "leaf_water": (0.35, 0.7),
        "swir": (0.45, 0.75),
    },
    "soil": {"base": (0.05, 0.12), "rise": (0.18, 0.35), "scale": (500.0, 900.0), "clay": (0.01, 0.05)},
    "water": {"level": (0.04, 0.09), "turbidity": (0.0, 0.03)},
    "man-made": {"level": (0.07, 0.45), "slope": (-0.04, 0.06), "feature": (-0.03, 0.03)},
}
_POSITIONAL = {"edge", "scale"}  # perturbed additively (nm), the others relatively


def material_spectrum(family: str, wl: np.ndarray, p: dict[str, float]) -> np.ndarray:
    """Reflectance (0..1) of a family at wavelengths ``wl`` (nm) with parameters ``p``."""
    if family == "vegetation":
        visible = p["vis"] + p["green"] * _bump(wl, 550, 30) - 0.5 * p["vis"] * _bump(wl, 670, 20)
        edge = _sigmoid((wl - p["edge"]) / 12.0)
        plateau = p["nir"] * (1.0 - 0.08 * np.clip((wl - 800.0) / 500.0, 0.0, 1.0))
        r = visible * (1.0 - edge) + plateau * edge
        swir = 1.0 - (1.0 - p["swir"]) * _sigmoid((wl - 1350.0) / 60.0)
        water = (
            1.0
            - p["leaf_water"] * (_bump(wl, 1450, 70) + 1.2 * _bump(wl, 1940, 90))
            - 0.1 * _bump(wl, 980, 30)
        )
        r = r * swir * np.clip(water, 0.1, 1.0) * (1.0 - 0.35 * _sigmoid((wl - 2000.0) / 150.0))
    elif family == "soil":
        r = p["base"] + p["rise"] * (1.0 - np.exp(-(wl - 400.0) / p["scale"]))
        r = r - 0.03 * _bump(wl, 1410, 30) - 0.04 * _bump(wl, 1910, 40) - p["clay"] * _bump(wl, 2200, 25)
        r = r - 0.01 * _bump(wl, 900, 80)
    elif family == "water":
        r = p["level"] * np.exp(-np.clip(wl - 450.0, 0.0, None) / 150.0) + p["turbidity"] * _bump(wl, 580, 50)
        r = r * (1.0 - 0.9 * _sigmoid((wl - 720.0) / 20.0)) + 0.003
    elif family == "man-made":
        x = (wl - 400.0) / 2100.0
        r = p["level"] + p["slope"] * x + p["feature"] * _bump(wl, 900, 150)
    else:
        raise DataError(f"unknown material family {family!r}; known: vegetation, soil, water, man-made")
    return np.clip(r, 0.002, 0.95)


def draw_params(family: str, rng: np.random.Generator) -> dict[str, float]:
    return {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in FAMILY_PARAMS[family].items()}


def _perturb(p: dict[str, float], rng: np.random.Generator, amount: float) -> dict[str, float]:
    return {
        k: v + rng.normal(0.0, 6.0 * amount / 0.05)
        if k in _POSITIONAL
        else v * (1.0 + rng.normal(0.0, amount))
        for k, v in p.items()
    }


def smooth_ripples(wl: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """n smooth random curves over the wavelengths, zero-mean, about unit amplitude, (n, B)."""
    x = (wl - wl.min()) / max(1e-9, float(np.ptp(wl)))
    out = np.zeros((n, wl.size))
    for freq in (1, 2, 3):
        amp = rng.normal(0.0, 1.0 / freq, size=(n, 1))
        phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
        out += amp * np.cos(2 * np.pi * freq * x[None, :] / 2 + phase)
    return out / math.sqrt(2)


def class_spectra(
    num_classes: int, wl: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, list[str], list[str]]:
    """(K, B) reflectance of the classes, their names and families, in groups of similar members."""
    n_groups = max(1, math.ceil(num_classes / 3))
    groups = [
        (FAMILY_ORDER[g % len(FAMILY_ORDER)], draw_params(FAMILY_ORDER[g % len(FAMILY_ORDER)], rng))
        for g in range(n_groups)
    ]
    smooth = smooth_ripples(wl, rng, num_classes)
    spectra, names, families = [], [], []
    members = [0] * n_groups
    for k in range(num_classes):
        g = k % n_groups
        family, base = groups[g]
        members[g] += 1
        s = material_spectrum(family, wl, _perturb(base, rng, 0.06)) * (1.0 + 0.04 * smooth[k])
        spectra.append(s)
        letters = string.ascii_uppercase
        names.append(f"{family} {letters[g % 26]}{'' if g < 26 else g // 26}{members[g]}")
        families.append(family)
    return np.stack(spectra), names, families
