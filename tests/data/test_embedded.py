"""The embedded Indian Pines (tensorly wheel): shape, exact class counts, names, provenance."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from blmkd.data import load_indian_pines, load_scene
from blmkd.data.embedded import CLASS_COUNTS, verify_indian_pines
from blmkd.errors import DataError


@pytest.fixture(scope="module")
def scene():
    return load_indian_pines()


def test_shape_dtype_and_counts(scene):
    assert scene.cube.shape == (145, 145, 200)
    assert scene.cube.dtype == np.float32
    assert scene.num_classes == 16
    assert scene.class_ids == list(range(1, 17))
    assert scene.class_counts().tolist() == list(CLASS_COUNTS)
    assert int((scene.labels >= 0).sum()) == 10249
    assert scene.labels.dtype == np.int32 and scene.labels.min() == -1


def test_class_names(scene):
    assert scene.class_names[0] == "Alfalfa"
    assert scene.class_names[10] == "Soybean-mintill"
    assert scene.class_names[15] == "Stone-Steel-Towers"


def test_provenance(scene):
    assert "CC BY 3.0" in scene.extra["licence"]
    assert "Baumgardner" in scene.extra["citation"] and "10.4231/R7RX991C" in scene.extra["citation"]
    assert scene.source == "embedded:indian_pines"
    assert len(scene.wavelengths) == 200 and 399 < scene.wavelengths[0] < scene.wavelengths[-1] < 2500


def test_one_shared_read_only_copy(scene):
    assert load_scene("indian_pines") is scene
    assert load_scene("Indian-Pines") is scene
    with pytest.raises(ValueError):
        scene.cube[0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        scene.labels[0, 0] = 3


def test_values_match_the_source(scene):
    from tensorly.datasets import load_indian_pines as tensorly_ip

    raw = tensorly_ip()["tensor"]
    np.testing.assert_array_equal(scene.cube, raw.astype(np.float32))
    assert np.array_equal(scene.cube.astype(np.float64), raw)  # whole numbers: float32 is exact


def test_keys_do_not_apply_to_the_embedded_copy():
    with pytest.raises(DataError, match="do not apply to the embedded"):
        load_scene("indian_pines", cube_key="x")


def test_verification_catches_a_changed_copy(scene):
    labels = scene.labels.copy()
    labels[labels == 0] = -1  # drop Alfalfa
    with pytest.raises(DataError, match="class"):
        verify_indian_pines(dataclasses.replace(scene, labels=labels))
    labels = scene.labels.copy()
    labels[0, 0] = 1 if labels[0, 0] != 1 else 2
    with pytest.raises(DataError, match="class counts"):
        verify_indian_pines(dataclasses.replace(scene, labels=labels))
    with pytest.raises(DataError, match="shape"):
        verify_indian_pines(dataclasses.replace(scene, cube=scene.cube[:, :, :100]))
