"""Standardization and byte quantization: fitted on training pixels only, blockwise, self-consistent."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blmkd.data import load_scene
from blmkd.data import preprocess as P
from blmkd.data.preprocess import Preprocessing, fit_preprocessing
from blmkd.errors import DataError


@pytest.fixture(scope="module")
def ip():
    return load_scene("indian_pines")


@pytest.fixture(scope="module")
def ip_train(ip):
    rng = np.random.default_rng(0)
    mask = (ip.labels >= 0) & (rng.random(ip.labels.shape) < 0.1)
    return mask


def _random_case(seed: int, h: int = 9, w: int = 7, b: int = 5):
    rng = np.random.default_rng(seed)
    cube = rng.normal(100.0, 30.0, size=(h, w, b)) * rng.uniform(0.1, 10, size=b)
    mask = rng.random((h, w)) < 0.4
    mask[0, 0] = True
    return cube, mask


def test_fit_on_indian_pines_uses_training_pixels(ip, ip_train):
    prep = fit_preprocessing(ip.cube, ip_train)
    x = ip.cube[ip_train].astype(np.float64)
    for name in ("mean", "std", "lo", "hi"):
        assert getattr(prep, name).dtype == np.float32 and getattr(prep, name).shape == (200,)
    np.testing.assert_allclose(prep.mean, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(prep.std, x.std(0), rtol=1e-6)
    np.testing.assert_allclose(prep.lo, np.percentile(x, 0.5, axis=0), rtol=1e-6)
    np.testing.assert_allclose(prep.hi, np.percentile(x, 99.5, axis=0), rtol=1e-6)
    z = prep.standardize(ip.cube)
    assert z.dtype == np.float32 and z.shape == ip.cube.shape
    zt = z[ip_train].astype(np.float64)
    np.testing.assert_allclose(zt.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(zt.std(0), 1.0, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(1e6, 1e12))
def test_changing_a_non_training_pixel_does_not_change_the_fit(seed, huge):
    cube, mask = _random_case(seed)
    mask[-1, -1] = False
    before = fit_preprocessing(cube, mask)
    cube = cube.copy()
    cube[-1, -1, :] = huge
    after = fit_preprocessing(cube, mask)
    assert before.to_dict() == after.to_dict()
    # ...whereas a training pixel does change it
    mask[-1, -1] = True
    assert fit_preprocessing(cube, mask).to_dict() != before.to_dict()


def test_standardize_and_to_bytes_formulas():
    cube, mask = _random_case(1)
    prep = fit_preprocessing(cube, mask)
    x = cube.astype(np.float32)
    np.testing.assert_allclose(prep.standardize(cube), (x - prep.mean) / prep.std, rtol=1e-6, atol=1e-6)
    u8 = prep.to_bytes(cube)
    assert u8.dtype == np.uint8
    expected = np.rint(np.clip((x - prep.lo) / (prep.hi - prep.lo), 0, 1) * 255)
    assert np.abs(u8.astype(int) - expected).max() <= 1  # float rounding at exact .5 ties only
    assert (u8[x < prep.lo] == 0).all() and (u8[x > prep.hi] == 255).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_dequant_affine_matches_standardize_within_quantization_error(seed):
    cube, mask = _random_case(seed, 6, 6, 4)
    cube = cube.astype(np.float32)  # so that the float32 lo/hi are exactly the training min/max
    prep = fit_preprocessing(cube, mask, clip=None)  # min/max: every training pixel is inside [lo, hi]
    scale, offset = prep.dequant_affine()
    assert scale.dtype == np.float32 and offset.dtype == np.float32
    approx = prep.to_bytes(cube).astype(np.float32) * scale + offset
    exact = prep.standardize(cube)
    inside = (cube >= prep.lo) & (cube <= prep.hi)
    err = np.abs(approx - exact)
    tol = np.broadcast_to(scale / 2 * 1.001 + 1e-5, err.shape)
    assert (err[inside] <= tol[inside]).all()
    assert inside[mask].all()


def test_row_blocks_and_memmap_give_the_same_result(tmp_path, monkeypatch):
    cube, mask = _random_case(2, h=23, w=11, b=6)
    prep = fit_preprocessing(cube, mask)
    full_z, full_u = prep.standardize(cube), prep.to_bytes(cube)
    path = tmp_path / "cube.npy"
    np.save(path, cube.astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    monkeypatch.setattr(P, "_BLOCK_BYTES", 3 * 11 * 6 * 4)  # 3 rows per block, with a ragged last block
    np.testing.assert_allclose(prep.standardize(mm), full_z, rtol=1e-6)
    np.testing.assert_array_equal(prep.to_bytes(mm), full_u)
    assert fit_preprocessing(mm, mask).to_dict() == fit_preprocessing(cube.astype(np.float32), mask).to_dict()
    # (N, bands) pixel arrays work too
    np.testing.assert_allclose(prep.standardize(cube[mask]), full_z[mask], rtol=1e-6)


def test_round_trip_through_json(ip, ip_train):
    prep = fit_preprocessing(ip.cube, ip_train)
    again = Preprocessing.from_dict(json.loads(json.dumps(prep.to_dict())))
    for name in ("mean", "std", "lo", "hi"):
        np.testing.assert_array_equal(getattr(prep, name), getattr(again, name))
    assert again.clip == (0.5, 99.5)
    np.testing.assert_array_equal(again.to_bytes(ip.cube[:5]), prep.to_bytes(ip.cube[:5]))


def test_constant_band_is_finite():
    cube, mask = _random_case(3)
    cube[:, :, 2] = 7.0
    prep = fit_preprocessing(cube, mask)
    assert prep.std[2] >= P.EPS
    assert np.isfinite(prep.standardize(cube)).all()
    assert np.isfinite(prep.dequant_affine()[0]).all()
    prep.to_bytes(cube)


def test_bad_inputs_raise():
    cube, mask = _random_case(4)
    with pytest.raises(DataError, match="empty"):
        fit_preprocessing(cube, np.zeros_like(mask))
    with pytest.raises(DataError, match="does not match"):
        fit_preprocessing(cube, mask[:-1])
    with pytest.raises(DataError, match="percentiles"):
        fit_preprocessing(cube, mask, clip=(99.0, 1.0))
    bad = cube.copy()
    bad[mask] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fit_preprocessing(bad, mask)
    prep = fit_preprocessing(cube, mask)
    with pytest.raises(DataError, match="bands"):
        prep.standardize(cube[:, :, :3])
    with pytest.raises(DataError, match="lacks"):
        Preprocessing.from_dict({"mean": [0.0]})
