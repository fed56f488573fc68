"""Synthetic scenes: deterministic, plausible spectra, mixed borders, noisy absorption bands, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from blmkd.data import load_scene, make_synthetic_scene
from blmkd.data.spectra import material_spectrum
from blmkd.errors import DataError

WL = np.linspace(400, 2500, 211)


def band(wl: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (wl >= lo) & (wl <= hi)


def test_shapes_dtypes_and_classes():
    scene = make_synthetic_scene(64, 48, 32, 7, seed=0)
    assert scene.cube.shape == (64, 48, 32) and scene.cube.dtype == np.uint16
    assert scene.class_ids == list(range(1, 8))  # every class has pixels
    assert (scene.labels == -1).any()  # unlabelled background fields, as in real ground truths
    assert len(scene.class_names) == 7 and scene.class_names[0].startswith("vegetation")
    assert len(scene.wavelengths) == 32 and scene.wavelengths[0] == 400.0
    assert scene.extra["seed"] == 0 and scene.extra["scale"] == 10000.0


def test_deterministic_for_a_seed():
    a = make_synthetic_scene(40, 30, 16, 5, seed=7)
    b = make_synthetic_scene(40, 30, 16, 5, seed=7)
    c = make_synthetic_scene(40, 30, 16, 5, seed=8)
    np.testing.assert_array_equal(a.cube, b.cube)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.cube, c.cube)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32", "float64"])
def test_dtypes(dtype):
    scene = make_synthetic_scene(20, 24, 40, 4, seed=1, dtype=dtype)
    assert scene.cube.dtype == np.dtype(dtype)
    if dtype == "int16":
        assert scene.cube.min() < 0  # noise in the dark absorption bands goes negative


def test_material_spectra_are_plausible():
    veg = material_spectrum(
        "vegetation",
        WL,
        {"vis": 0.04, "green": 0.06, "edge": 715, "nir": 0.45, "leaf_water": 0.5, "swir": 0.6},
    )
    red, nir, green = (
        veg[band(WL, 640, 690)].mean(),
        veg[band(WL, 780, 900)].mean(),
        veg[band(WL, 530, 570)].mean(),
    )
    assert nir > 4 * red and green > red  # red edge, green peak
    steepest = WL[np.argmax(np.diff(veg))]
    assert 680 < steepest < 750
    soil = material_spectrum("soil", WL, {"base": 0.08, "rise": 0.3, "scale": 700, "clay": 0.03})
    assert (
        soil[band(WL, 400, 500)].mean()
        < soil[band(WL, 1000, 1200)].mean()
        < soil[band(WL, 1600, 1750)].mean()
    )
    water = material_spectrum("water", WL, {"level": 0.07, "turbidity": 0.01})
    assert water[band(WL, 800, 2500)].max() < 0.01 < water[band(WL, 420, 500)].mean()
    built = material_spectrum("man-made", WL, {"level": 0.3, "slope": 0.02, "feature": 0.0})
    assert np.ptp(built) < 0.05 and built.mean() > 0.25


def test_similar_classes_come_in_groups():
    scene = make_synthetic_scene(120, 120, 60, 6, seed=2, dtype="float32")
    means = np.stack([np.asarray(scene.cube)[scene.labels == k].mean(0) for k in range(6)])
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    # classes k and k + 2 share a group (2 groups of 3 here): closer than classes across groups
    within = np.mean([dist[0, 2], dist[0, 4], dist[1, 3], dist[1, 5]])
    across = np.mean([dist[0, 1], dist[2, 3], dist[4, 5], dist[0, 3]])
    assert within < across / 2


def test_absorption_bands_have_low_snr():
    scene = make_synthetic_scene(96, 96, 211, 4, seed=3, dtype="float32")
    cube = np.asarray(scene.cube, dtype=np.float64)
    diff = cube[:, 1:] - cube[:, :-1]  # neighbours in a field differ mostly by noise
    snr = cube.mean((0, 1)) / (diff.std((0, 1)) + 1e-12)
    wl = np.asarray(scene.wavelengths)
    assert snr[band(wl, 1380, 1420)].mean() < snr[band(wl, 1000, 1100)].mean() / 5
    assert snr[band(wl, 1880, 1920)].mean() < snr[band(wl, 2150, 2250)].mean() / 5


def test_field_borders_are_mixtures():
    scene = make_synthetic_scene(128, 128, 40, 6, seed=4, dtype="float32")
    cube, lab = np.asarray(scene.cube), scene.labels
    means = np.stack([cube[lab == k].mean(0) for k in range(6)])
    resid = np.linalg.norm(cube - means[np.maximum(lab, 0)], axis=-1)
    pad = np.pad(lab, 1, mode="edge")
    edge = (pad[:-2, 1:-1] != lab) | (pad[2:, 1:-1] != lab) | (pad[1:-1, :-2] != lab) | (pad[1:-1, 2:] != lab)
    labelled = lab >= 0
    assert resid[edge & labelled].mean() > 1.5 * resid[~edge & labelled].mean()


def test_written_to_npy_and_read_back(tmp_path):
    out = tmp_path / "syn.npy"
    scene = make_synthetic_scene(64, 48, 32, 5, seed=5, out=out)
    assert isinstance(scene.cube, np.memmap)
    gt_path = tmp_path / "syn_gt.npy"
    assert scene.extra["gt_path"] == str(gt_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn.npy", "syn_gt.npy"]  # no temporary files left
    in_memory = make_synthetic_scene(64, 48, 32, 5, seed=5)
    np.testing.assert_array_equal(scene.cube, in_memory.cube)  # the same scene, whichever way it is made
    back = load_scene(out, gt=gt_path)
    np.testing.assert_array_equal(back.cube, in_memory.cube)
    np.testing.assert_array_equal(back.labels, in_memory.labels)
    assert back.class_ids == in_memory.class_ids


def test_writing_keeps_memory_bounded(tmp_path):
    tracemalloc.start()
    try:
        scene = make_synthetic_scene(600, 400, 64, 10, seed=0, dtype="float32", out=tmp_path / "mid.npy")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    cube_bytes = 600 * 400 * 64 * 4  # 61 MB
    assert scene.cube.shape == (600, 400, 64)
    assert peak < cube_bytes / 5, f"peak {peak / 1e6:.1f} MB for a {cube_bytes / 1e6:.0f} MB cube"


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="unsupported synthetic dtype"):
        make_synthetic_scene(8, 8, 4, 2, dtype="complex64")
    with pytest.raises(DataError, match="too small"):
        make_synthetic_scene(2, 2, 4, 9)
    with pytest.raises(DataError, match=r"\.npy"):
        make_synthetic_scene(8, 8, 4, 2, out=tmp_path / "cube.bin")


def test_unknown_material_family_is_a_data_error():
    with pytest.raises(DataError, match="unknown material family 'rock'"):
        material_spectrum("rock", WL, {})


# ---- options for scenes unlike Indian Pines: thin lines, wide borders, few labels ----


def test_lines_are_their_own_thin_class_painted_over_the_same_scene():
    plain = make_synthetic_scene(64, 64, 40, 4, seed=3)
    roads = make_synthetic_scene(64, 64, 40, 4, seed=3, lines=2)
    rivers = make_synthetic_scene(64, 64, 40, 4, seed=3, lines=2, line_family="water")
    assert roads.class_ids == [1, 2, 3, 4, 5] and roads.class_names[-1] == "road"
    assert rivers.class_names[-1] == "river" and roads.extra["lines"] == 2
    line = roads.labels == 4  # 0-based label of id 5
    assert 0.01 < line.mean() < 0.1  # thin: a few percent of a 64×64 scene
    # 1-2 px wide: no line pixel has a full 5×5 neighbourhood of line pixels
    pad = np.pad(line, 2)
    full = np.ones_like(line)
    for dy in range(5):
        for dx in range(5):
            full &= pad[dy : dy + 64, dx : dx + 64]
    assert not full.any()
    # away from the lines the scene is unchanged, and the lines' spectra differ from the fields'
    changed = (roads.cube != plain.cube).any(-1)
    assert changed.mean() < 2.5 * line.mean()
    far = ~changed
    np.testing.assert_array_equal(roads.labels[far], plain.labels[far])
    road_mean = roads.cube[line].astype(float).mean(0)
    river_mean = rivers.cube[rivers.labels == 4].astype(float).mean(0)
    assert np.abs(road_mean - river_mean).max() > 100  # reflectance x 10000


def test_lines_off_by_default_keep_scenes_identical():
    a = make_synthetic_scene(40, 30, 16, 5, seed=7)
    b = make_synthetic_scene(40, 30, 16, 5, seed=7, lines=0, border=2.0, label_fraction=1.0)
    np.testing.assert_array_equal(a.cube, b.cube)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert "lines" not in b.extra and "label_fraction" not in b.extra


def test_wider_border_mixes_more_pixels():
    a = make_synthetic_scene(64, 64, 40, 4, seed=3)
    wide = make_synthetic_scene(64, 64, 40, 4, seed=3, border=6.0)
    np.testing.assert_array_equal(a.labels, wide.labels)  # same fields, same labels
    changed = (a.cube != wide.cube).any(-1).mean()
    assert 0.1 < changed < 0.9 and wide.extra["border"] == 6.0


def test_label_fraction_keeps_field_centres_only():
    a = make_synthetic_scene(64, 64, 40, 4, seed=3)
    few = make_synthetic_scene(64, 64, 40, 4, seed=3, label_fraction=0.2)
    np.testing.assert_array_equal(a.cube, few.cube)  # spectra unchanged
    kept = few.labels >= 0
    assert (few.labels[kept] == a.labels[kept]).all()  # a subset of the same labels
    assert 0.1 < kept.sum() / (a.labels >= 0).sum() < 0.35
    assert few.class_ids == a.class_ids  # every class keeps pixels


def test_other_band_counts_and_few_classes(tmp_path):
    scene = make_synthetic_scene(48, 40, 103, 3, seed=2, lines=1, out=tmp_path / "s.npy")
    assert scene.cube.shape == (48, 40, 103) and scene.class_ids == [1, 2, 3, 4]
    back = load_scene(tmp_path / "s.npy", gt=tmp_path / "s_gt.npy")
    np.testing.assert_array_equal(back.labels, scene.labels)


@pytest.mark.parametrize(
    "kw", [dict(lines=-1), dict(lines=1.5), dict(line_family="lava"), dict(border=0), dict(label_fraction=0)]
)
def test_bad_options_are_data_errors(kw):
    with pytest.raises(DataError):
        make_synthetic_scene(20, 20, 8, 3, **kw)
