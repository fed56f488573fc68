"""PatchExtractor: batched windows equal naive slices of the reflect-padded cube."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blmkd.data import load_scene
from blmkd.data.patches import PatchExtractor, check_patch_size, labelled_coords
from blmkd.errors import DataError


def naive_windows(cube: np.ndarray, p: int, rows, cols) -> np.ndarray:
    """(N, B, P, P) by slicing np.pad(reflect) one pixel at a time."""
    r = p // 2
    pad = np.pad(cube, ((r, r), (r, r), (0, 0)), mode="reflect")
    return np.stack([pad[i : i + p, j : j + p, :].transpose(2, 0, 1) for i, j in zip(rows, cols)])


@st.composite
def cases(draw):
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    b = draw(st.integers(1, 5))
    p = draw(st.sampled_from([q for q in (1, 3, 5, 7, 9, 11) if q <= min(h, w)]))
    n = draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**31 - 1))
    return h, w, b, p, n, seed


@settings(max_examples=60, deadline=None)
@given(cases(), st.sampled_from(["uint8", "float32"]))
def test_gather_equals_naive_reflect_slices(case, dtype):
    h, w, b, p, n, seed = case
    rng = np.random.default_rng(seed)
    cube = (rng.integers(0, 256, (h, w, b)) if dtype == "uint8" else rng.normal(size=(h, w, b))).astype(dtype)
    rows, cols = rng.integers(0, h, n), rng.integers(0, w, n)
    ext = PatchExtractor(cube, p)
    out = ext.gather(rows, cols)
    assert out.dtype == (torch.uint8 if dtype == "uint8" else torch.float32)
    assert out.shape == (n, b, p, p) and out.is_contiguous()
    np.testing.assert_array_equal(out.numpy(), naive_windows(cube, p, rows, cols))
    np.testing.assert_array_equal(out.numpy(), ext.gather_ref(rows, cols).numpy())


@pytest.fixture(scope="module")
def ip():
    return load_scene("indian_pines")


def test_indian_pines_labelled_windows(ip):
    rows, cols = labelled_coords(ip.labels >= 0)
    assert rows.size == 10249 and rows.dtype == np.int64
    cube = np.asarray(ip.cube, dtype=np.float32)
    ext = PatchExtractor(cube, 7)
    assert ext.padded.shape == (200, 151, 151) and ext.padded.is_contiguous()
    sel = np.random.default_rng(0).choice(rows.size, 300, replace=False)
    sel = np.concatenate([sel, [0, rows.size - 1]])
    np.testing.assert_array_equal(
        ext.gather(rows[sel], cols[sel]).numpy(), naive_windows(cube, 7, rows[sel], cols[sel])
    )
    # centre pixel of each window is the pixel itself
    x = ext.gather(torch.from_numpy(rows[:64]), torch.from_numpy(cols[:64]))
    np.testing.assert_array_equal(x[:, :, 3, 3].numpy(), cube[rows[:64], cols[:64]])


def test_labelled_coords_are_row_major():
    mask = np.zeros((4, 5), dtype=bool)
    mask[[3, 0, 2, 0], [1, 4, 2, 0]] = True
    rows, cols = labelled_coords(mask)
    assert rows.tolist() == [0, 0, 2, 3] and cols.tolist() == [0, 4, 2, 1]


def test_memmap_cube_and_a_scene_much_larger_than_its_labels(tmp_path):
    rng = np.random.default_rng(0)
    cube = rng.integers(0, 256, (400, 300, 4), dtype=np.uint8)
    np.save(tmp_path / "c.npy", cube)
    mm = np.load(tmp_path / "c.npy", mmap_mode="r")
    ext = PatchExtractor(mm, 5)
    assert ext.dtype == torch.uint8
    rows, cols = np.array([0, 399, 200, 17]), np.array([299, 0, 150, 3])
    np.testing.assert_array_equal(ext.gather(rows, cols).numpy(), naive_windows(cube, 5, rows, cols))
    from_tensor = PatchExtractor(torch.from_numpy(cube), 5)  # a CPU tensor cube is accepted too
    assert torch.equal(from_tensor.gather(rows, cols), ext.gather(rows, cols))


def test_patch_size_rules():
    cube = np.zeros((5, 8, 2), dtype=np.float32)
    for bad in (0, 4, -3, 7, 2.5):
        with pytest.raises(DataError, match="patch size"):
            PatchExtractor(cube, bad)
    assert PatchExtractor(cube, 5).gather([4], [7]).shape == (1, 2, 5, 5)  # P == min(H, W)
    assert PatchExtractor(cube, 1).gather([1], [1]).shape == (1, 2, 1, 1)
    assert check_patch_size(3, 3, 3) == 3
    with pytest.raises(DataError, match=r"\(H, W, bands\)"):
        PatchExtractor(np.zeros((5, 5)), 3)


def test_index_errors_and_empty_batches():
    ext = PatchExtractor(np.zeros((6, 6, 3), dtype=np.uint8), 3)
    with pytest.raises(IndexError):
        ext.gather([6], [0])
    with pytest.raises(IndexError):
        ext.gather([0], [-1])
    with pytest.raises(ValueError):
        ext.gather([0, 1], [0])
    assert ext.gather([], []).shape == (0, 3, 3, 3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gather_on_cuda_matches_cpu():
    rng = np.random.default_rng(0)
    cube = rng.normal(size=(20, 30, 6)).astype(np.float32)
    rows, cols = rng.integers(0, 20, 100), rng.integers(0, 30, 100)
    gpu = PatchExtractor(cube, 7, device="cuda").gather(rows, cols)
    assert gpu.device.type == "cuda"
    np.testing.assert_array_equal(gpu.cpu().numpy(), naive_windows(cube, 7, rows, cols))


def test_to_the_device_it_is_on_is_itself():
    ex = PatchExtractor(np.zeros((9, 9, 2), np.uint8), 3)
    assert ex.to("cpu") is ex and ex.to(torch.device("cpu")) is ex


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_to_cuda_uploads_the_padded_cube_and_gathers_the_same_windows():
    rng = np.random.default_rng(1)
    cube = rng.integers(0, 256, size=(20, 30, 6), dtype=np.uint8)
    rows, cols = rng.integers(0, 20, 100), rng.integers(0, 30, 100)
    cpu = PatchExtractor(cube, 7)
    gpu = cpu.to("cuda")
    assert gpu.device.type == "cuda" and gpu.padded.dtype == torch.uint8  # bytes stay bytes
    assert torch.equal(gpu.padded.cpu(), cpu.padded)  # the same padded cube, uploaded
    np.testing.assert_array_equal(gpu.gather(rows, cols).cpu().numpy(), cpu.gather(rows, cols).numpy())
    back = gpu.to("cpu")
    np.testing.assert_array_equal(back.gather(rows, cols).numpy(), naive_windows(cube, 7, rows, cols))
