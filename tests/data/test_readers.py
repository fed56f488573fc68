"""load_scene on files: every format round-trips, odd label ids and dtypes survive, bad input is a DataError."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blmkd.data import UNLABELLED, labels_from_ground_truth, load_scene, scene_from_arrays
from blmkd.errors import DataError

# --- writers for the layouts MATLAB and ENVI produce ---------------------------------------

_MATLAB_CLASS = {
    "uint8": "uint8",
    "uint16": "uint16",
    "int16": "int16",
    "int32": "int32",
    "float32": "single",
    "float64": "double",
    "bool": "logical",
}


def write_mat5(path: Path, **arrays: np.ndarray) -> Path:
    scipy.io.savemat(path, arrays)
    return path


def write_mat73(path: Path, **arrays: np.ndarray) -> Path:
    """A MATLAB v7.3 file: HDF5 with a 512-byte user block, arrays stored column-major."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, a in arrays.items():
            a = np.asarray(a)
            ds = f.create_dataset(key, data=(a.astype(np.uint8) if a.dtype == bool else a).T)
            ds.attrs["MATLAB_class"] = np.bytes_(_MATLAB_CLASS[a.dtype.name])
    with open(path, "r+b") as fh:
        fh.write(
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
        )
    return path


def write_envi(path: Path, cube: np.ndarray, interleave: str = "bsq", **metadata) -> Path:
    """An ENVI .hdr + .img pair; ``path`` is the .hdr."""
    import spectral.io.envi as envi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # spectral opens its binary file line-buffered
        envi.save_image(
            str(path),
            cube,
            dtype=cube.dtype,
            interleave=interleave,
            ext=".img",
            force=True,
            metadata=metadata,
        )
    return path


# --- round trips ---------------------------------------------------------------------------

DTYPES = ["uint8", "uint16", "int16", "float32", "float64"]


def random_cube(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if dtype == "int16":
        return rng.integers(-2000, 2000, size=shape).astype(np.int16)  # negatives on purpose
    if np.dtype(dtype).kind == "u":
        return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    return (rng.standard_normal(shape) * 100).astype(dtype)


@st.composite
def scenes(draw, min_bands: int = 1):
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    b = draw(st.integers(min_bands, 7))
    dtype = draw(st.sampled_from(DTYPES))
    ids = draw(st.lists(st.integers(1, 1000), min_size=1, max_size=5, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cube = random_cube(rng, (h, w, b), dtype)
    gt = rng.choice(np.array([0, *ids], dtype=np.uint16), size=(h, w))
    gt.flat[0] = ids[0]  # at least one labelled pixel
    return cube, gt


def check_scene(scene, cube: np.ndarray, gt: np.ndarray) -> None:
    assert scene.cube.shape == cube.shape
    assert scene.cube.dtype == cube.dtype  # the file's dtype, no float copy
    np.testing.assert_array_equal(np.asarray(scene.cube), cube)
    ids = sorted(int(i) for i in np.unique(gt) if i > 0)
    assert scene.class_ids == ids
    assert scene.class_names == [f"class {i}" for i in ids]
    assert scene.labels.dtype == np.int32
    expected = np.where(gt > 0, np.searchsorted(ids, gt), UNLABELLED)
    np.testing.assert_array_equal(scene.labels, expected)


def _write(fmt: str, d: Path, cube: np.ndarray, gt: np.ndarray) -> tuple[Path, Path | None]:
    if fmt == "mat5":
        return write_mat5(d / "scene.mat", cube=cube, gt=gt), None
    if fmt == "mat5-two-files":
        return write_mat5(d / "cube.mat", data=cube), write_mat5(d / "cube_gt.mat", data_gt=gt)
    if fmt == "mat73":
        return write_mat73(d / "scene.mat", cube=cube, gt=gt.astype(np.float64)), None  # MATLAB's double GT
    if fmt == "npy":
        np.save(d / "cube.npy", cube)
        np.save(d / "gt.npy", gt)
        return d / "cube.npy", d / "gt.npy"
    if fmt == "npz":
        np.savez(d / "scene.npz", cube=cube, gt=gt)
        return d / "scene.npz", None
    if fmt == "envi":
        return write_envi(d / "cube.hdr", cube), write_envi(d / "gt.hdr", gt[..., None])
    raise AssertionError(fmt)


# MATLAB drops trailing singleton axes, so an (H, W, 1) cube cannot survive a .mat file.
@pytest.mark.parametrize(
    "fmt, min_bands",
    [("mat5", 2), ("mat5-two-files", 2), ("mat73", 2), ("npy", 1), ("npz", 1), ("envi", 1)],
)
def test_round_trip(fmt, min_bands):
    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenes(min_bands=min_bands))
    def run(data):
        cube, gt = data
        with tempfile.TemporaryDirectory() as tmp:
            cube_path, gt_path = _write(fmt, Path(tmp), cube, gt)
            scene = load_scene(cube_path, gt=gt_path)
            check_scene(scene, cube, gt)
            del scene  # release memory maps before the folder goes

    run()


def test_npy_and_envi_cubes_stay_memory_mapped(tmp_path):
    cube = np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3)
    gt = np.ones((4, 5), dtype=np.uint8)
    np.save(tmp_path / "c.npy", cube)
    np.save(tmp_path / "g.npy", gt)
    assert isinstance(load_scene(tmp_path / "c.npy", gt=tmp_path / "g.npy").cube, np.memmap)
    hdr = write_envi(tmp_path / "c.hdr", cube, interleave="bil")
    assert isinstance(load_scene(hdr, gt=tmp_path / "g.npy").cube.base, np.memmap)


def test_non_contiguous_ids():
    gt = np.array([[0, 1, 10], [11, 12, 0], [12, 12, 1]], dtype=np.uint8)
    labels, ids = labels_from_ground_truth(gt)
    assert ids == [1, 10, 11, 12]
    np.testing.assert_array_equal(labels, [[-1, 0, 1], [2, 3, -1], [3, 3, 0]])
    scene = scene_from_arrays("x", np.zeros((3, 3, 2), np.uint8), gt)
    assert scene.class_names == ["class 1", "class 10", "class 11", "class 12"]
    assert scene.class_counts().tolist() == [2, 1, 1, 3]


def test_int16_negatives_kept(tmp_path):
    cube = np.array([[[-32768, 0], [5, -1]]], dtype=np.int16)  # (1, 2, 2)
    path = write_mat5(tmp_path / "n.mat", cube=cube, gt=np.array([[1, 2]], dtype=np.uint8))
    scene = load_scene(path)
    assert scene.cube.dtype == np.int16
    assert scene.cube.min() == -32768


def test_mat73_axes_are_transposed_back(tmp_path):
    # Distinct sizes: any axis mix-up changes the shape.
    cube = np.arange(5 * 4 * 3, dtype=np.float64).reshape(5, 4, 3)
    gt = (np.arange(20).reshape(5, 4) % 3).astype(np.uint8)
    path = write_mat73(tmp_path / "v73.mat", hsi=cube, labels=gt)
    with h5py.File(path, "a") as f:  # MATLAB strings are uint16 arrays: not candidates
        f.create_dataset("title", data=np.frombuffer("IP".encode("utf-16-le"), np.uint16)[:, None])
        f["title"].attrs["MATLAB_class"] = np.bytes_("char")
    scene = load_scene(path)
    assert scene.extra["format"] == "mat-v7.3"
    np.testing.assert_array_equal(scene.cube, cube)
    assert scene.cube.flags["C_CONTIGUOUS"]
    assert (scene.extra["cube_key"], scene.extra["gt_key"]) == ("hsi", "labels")


def test_plain_hdf5_is_read_as_stored(tmp_path):
    cube = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["group/cube"] = cube
        f["group/gt"] = np.ones((5, 4), np.uint8)
    scene = load_scene(tmp_path / "s.h5")
    np.testing.assert_array_equal(scene.cube, cube)
    assert scene.extra["cube_key"] == "group/cube" and scene.extra["format"] == "hdf5"


def test_bands_first_cube_is_transposed_when_gt_proves_it(tmp_path):
    cube = np.random.default_rng(0).integers(0, 100, size=(6, 20, 30)).astype(np.uint16)  # (bands, H, W)
    gt = np.ones((20, 30), dtype=np.uint8)
    np.save(tmp_path / "c.npy", cube)
    np.save(tmp_path / "g.npy", gt)
    scene = load_scene(tmp_path / "c.npy", gt=tmp_path / "g.npy")
    assert scene.cube.shape == (20, 30, 6)
    np.testing.assert_array_equal(scene.cube[3, 7], cube[:, 3, 7])
    assert "transposed" in scene.extra


def test_largest_cube_is_picked_and_recorded(tmp_path):
    np.savez(
        tmp_path / "two.npz",
        small=np.zeros((4, 4, 2), np.float32),
        big=np.ones((4, 4, 8), np.float32),
        gt=np.ones((4, 4), np.uint8),
    )
    scene = load_scene(tmp_path / "two.npz")
    assert scene.bands == 8
    assert scene.extra["cube_key"] == "big"
    assert "small" in scene.extra["cube_key_note"]
    assert load_scene(tmp_path / "two.npz", cube_key="small").bands == 2


def test_gt_key_override_and_preference_for_integer_gt(tmp_path):
    rng = np.random.default_rng(1)
    path = write_mat5(
        tmp_path / "k.mat",
        cube=rng.random((5, 6, 3)),
        mean_image=rng.random((5, 6)),
        train=np.ones((5, 6), np.uint8),
        test=np.full((5, 6), 2, np.uint8),
    )
    scene = load_scene(path, gt_key="test")
    assert scene.class_ids == [2]
    auto = load_scene(path)
    # integer arrays win over the float image; between equals the file's first one is used, and said
    assert auto.extra["gt_key"] == "train" and auto.class_ids == [1]
    assert "others: test, mean_image" in auto.extra["gt_key_note"]
    hinted = write_mat5(tmp_path / "h.mat", cube=rng.random((5, 6, 3)), mask=np.ones((5, 6), np.uint8),
                        class_map=np.full((5, 6), 4, np.uint8))  # fmt: skip
    assert load_scene(hinted).extra["gt_key"] == "class_map"  # a ground-truth-like name wins over order


def test_envi_wavelengths_in_micrometres(tmp_path):
    cube = np.zeros((3, 3, 4), np.float32)
    hdr = write_envi(
        tmp_path / "w.hdr",
        cube,
        wavelength=["0.4", "0.5", "0.6", "0.7"],
        **{"wavelength units": "Micrometers"},
    )
    np.save(tmp_path / "g.npy", np.ones((3, 3), np.uint8))
    scene = load_scene(hdr, gt=tmp_path / "g.npy")
    assert scene.wavelengths == pytest.approx([400, 500, 600, 700])


def test_nan_needs_fill(tmp_path):
    cube = np.ones((3, 4, 2), np.float32)
    cube[0, 0, 0] = np.nan
    cube[1, 2, 1] = np.inf
    path = tmp_path / "nan.npz"
    np.savez(path, cube=cube, gt=np.ones((3, 4), np.uint8))
    with pytest.raises(DataError, match=r"cube has 2 NaN/Inf values; pass --fill VALUE"):
        load_scene(path)
    scene = load_scene(path, fill=0.0)
    assert np.isfinite(scene.cube).all()
    assert scene.cube[0, 0, 0] == 0.0 and scene.cube.dtype == np.float32
    assert scene.extra["filled"] == {"count": 2, "value": 0.0}


# --- bad input: one clear line each --------------------------------------------------------


def raises_one_line(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    raises_one_line("file not found", load_scene, tmp_path / "nope.mat")
    raises_one_line("file not found", load_scene, str(tmp_path / "nope.npy"))
    np.save(tmp_path / "c.npy", np.zeros((2, 2, 2)))
    raises_one_line("file not found", load_scene, tmp_path / "c.npy", gt=tmp_path / "missing_gt.mat")


@pytest.mark.parametrize("how", ["junk", "truncated", "empty"])
def test_corrupt_mat(tmp_path, how):
    good = write_mat5(tmp_path / "good.mat", cube=np.zeros((4, 4, 3)), gt=np.ones((4, 4))).read_bytes()
    data = {"junk": b"not a mat file " * 20, "truncated": good[: len(good) // 2], "empty": b""}[how]
    (tmp_path / "bad.mat").write_bytes(data)
    raises_one_line("cannot read .*bad.mat as a MATLAB .mat file", load_scene, tmp_path / "bad.mat")


def test_truncated_mat73(tmp_path):
    good = write_mat73(tmp_path / "good.mat", cube=np.zeros((8, 8, 3)), gt=np.ones((8, 8))).read_bytes()
    (tmp_path / "bad.mat").write_bytes(good[: len(good) // 2])
    raises_one_line("cannot read .*bad.mat", load_scene, tmp_path / "bad.mat")


def test_truncated_npy_and_npz(tmp_path):
    np.save(tmp_path / "good.npy", np.zeros((10, 10, 5)))
    data = (tmp_path / "good.npy").read_bytes()
    (tmp_path / "bad.npy").write_bytes(data[: len(data) // 2])
    raises_one_line("cannot read .*bad.npy as a .npy file", load_scene, tmp_path / "bad.npy")
    np.savez(tmp_path / "good.npz", cube=np.zeros((10, 10, 5)))
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "bad.npz").write_bytes(data[: len(data) // 2])
    raises_one_line("cannot read .*bad.npz as a .npz file", load_scene, tmp_path / "bad.npz")


def test_corrupt_envi_header(tmp_path):
    (tmp_path / "bad.hdr").write_text("this is not ENVI\n")
    raises_one_line("cannot read .*bad.hdr as an ENVI image", load_scene, tmp_path / "bad.hdr")


def test_no_cube_lists_keys(tmp_path):
    np.savez(tmp_path / "flat.npz", a=np.zeros((4, 4)), b=np.ones(3))
    msg = raises_one_line("no cube", load_scene, tmp_path / "flat.npz")
    assert "a (4x4 float64)" in msg and "b (3 float64)" in msg


def test_no_gt_lists_keys(tmp_path):
    write_mat5(tmp_path / "c.mat", cube=np.zeros((4, 4, 3)))
    msg = raises_one_line("no ground truth", load_scene, tmp_path / "c.mat")
    assert "cube (4x4x3 float64)" in msg and "gt=PATH" in msg


def test_shape_mismatch_names_both_shapes(tmp_path):
    write_mat5(tmp_path / "c.mat", cube=np.zeros((4, 5, 3)))
    write_mat5(tmp_path / "g.mat", gt=np.ones((7, 7), np.uint8))
    msg = raises_one_line("shape", load_scene, tmp_path / "c.mat", gt=tmp_path / "g.mat")
    assert "(7, 7)" in msg and "(4, 5, 3)" in msg
    with pytest.raises(DataError, match=r"\(4, 5, 3\).*\(5, 4\)"):
        scene_from_arrays("x", np.zeros((4, 5, 3)), np.ones((5, 4), np.uint8))


def test_missing_keys(tmp_path):
    write_mat5(tmp_path / "c.mat", cube=np.zeros((4, 4, 3)), gt=np.ones((4, 4)))
    raises_one_line("no array 'hsi'.*keys seen: cube", load_scene, tmp_path / "c.mat", cube_key="hsi")
    raises_one_line("no array 'labels'", load_scene, tmp_path / "c.mat", gt_key="labels")


def test_unknown_dataset_lists_known_names():
    msg = raises_one_line("unknown dataset 'mars'", load_scene, "mars")
    assert "indian_pines" in msg and "pavia_university" in msg and "houston_2013" in msg


def test_gt_with_registry_name():
    raises_one_line("gt= applies to a file path", load_scene, "salinas", gt="x_gt.mat")


@pytest.mark.parametrize(
    "gt, match",
    [
        (np.array([[0, -3], [1, 2]], np.int16), "negative ids"),
        (np.array([[0, 0.5], [1, 2]]), "not integer-valued"),
        (np.array([[0, np.nan], [1, 2]]), "not integer-valued"),
        (np.zeros((2, 2), np.uint8), "no labelled pixel"),
    ],
)
def test_bad_ground_truth(tmp_path, gt, match):
    write_mat5(tmp_path / "c.mat", cube=np.zeros((2, 2, 3)), gt=gt)
    raises_one_line(match, load_scene, tmp_path / "c.mat")


def test_float_gt_with_whole_numbers_is_fine():
    labels, ids = labels_from_ground_truth(np.array([[0.0, 3.0], [3.0, 7.0]]))
    assert ids == [3, 7] and labels.tolist() == [[-1, 0], [0, 1]]


def test_unsupported_suffix(tmp_path):
    (tmp_path / "cube.xyz").write_bytes(b"123")
    raises_one_line("unsupported file type '.xyz'", load_scene, tmp_path / "cube.xyz")
