"""Splits: disjoint masks over labelled pixels, exact per-class counts, zero leakage when disjoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from blmkd.data import Scene, load_scene
from blmkd.data.splits import Split, compute_leakage, make_split, split_from_spec
from blmkd.errors import DataError


def random_scene(h: int, w: int, k: int, seed: int, labelled: float = 0.7, name: str = "random") -> Scene:
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((h, w)) < labelled, rng.integers(0, k, (h, w)), -1).astype(np.int32)
    cube = rng.normal(size=(h, w, 3)).astype(np.float32)
    ids = [int(i) for i in sorted(rng.choice(np.arange(1, 40), k, replace=False))]
    return Scene(name, cube, labels, ids, [f"c{i}" for i in ids])


def blocky_scene(h: int, w: int, k: int, seed: int) -> Scene:
    """Classes in rectangular fields, like real scenes (random pixel labels are the worst case)."""
    rng = np.random.default_rng(seed)
    field = rng.integers(0, k, (math.ceil(h / 6), math.ceil(w / 6)))
    labels = np.kron(field, np.ones((6, 6), dtype=np.int64))[:h, :w].astype(np.int32)
    labels[rng.random((h, w)) < 0.2] = -1
    present = np.unique(labels[labels >= 0])
    labels = np.where(labels >= 0, np.searchsorted(present, labels), -1).astype(np.int32)
    ids = [int(i) + 1 for i in present]
    return Scene("blocky", rng.normal(size=(h, w, 2)).astype(np.float32), labels, ids, [f"c{i}" for i in ids])


def half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def check_basic(split: Split, scene: Scene) -> None:
    lab = scene.labels >= 0
    t, v, s = split.train, split.val, split.test
    for m in (t, v, s):
        assert m.dtype == bool and m.shape == scene.labels.shape
        assert not (m & ~lab).any(), "a set holds an unlabelled pixel"
    assert not (t & v).any() and not (t & s).any() and not (v & s).any()
    counts = split.counts(scene)
    assert (counts[:, 0] >= 1).all() and (counts[:, 2] >= 1).all()
    assert split.leakage == pytest.approx(compute_leakage(t, s, split.spec["patch_size"]))
    json.dumps(split.spec)


@pytest.fixture(scope="module")
def ip():
    return load_scene("indian_pines")


# ----------------------------------------------------------------------------------------------
# Random strategies


@settings(max_examples=40, deadline=None)
@given(
    st.integers(6, 24),
    st.integers(6, 24),
    st.integers(1, 4),
    st.integers(0, 10**6),
    st.floats(0.05, 0.6),
    st.sampled_from([0.0, 0.1, 0.3]),
)
def test_ratio_counts_are_round_half_up_per_class(h, w, k, seed, frac, val):
    scene = random_scene(h, w, k, seed)
    n = scene.class_counts()
    assume(len(n) == k and (n >= 1).all())
    want = [half_up(frac * c) for c in n]
    if any(not 1 <= x <= c - 1 for x, c in zip(want, n)):
        with pytest.raises(DataError, match=r"class \d+ \('c\d+'\) has \d+ labelled pixels"):
            make_split(scene, "ratio", train=frac, val=val, seed=seed, patch_size=3)
        return
    split = make_split(scene, "ratio", train=frac, val=val, seed=seed, patch_size=3)
    check_basic(split, scene)
    counts = split.counts(scene)
    assert counts[:, 0].tolist() == want
    rest = n - counts[:, 0]
    assert counts[:, 1].tolist() == [min(half_up(val * r), r - 1) for r in rest]
    assert ((split.train | split.val | split.test) == (scene.labels >= 0)).all()  # no buffer: nothing dropped


@settings(max_examples=30, deadline=None)
@given(st.integers(8, 20), st.integers(8, 20), st.integers(1, 3), st.integers(0, 10**6), st.integers(1, 12))
def test_per_class_counts_are_exact(h, w, k, seed, count):
    scene = random_scene(h, w, k, seed)
    n = scene.class_counts()
    assume(len(n) == k and (n >= 2).all())
    if (n <= count).any():
        with pytest.raises(DataError, match="too few"):
            make_split(scene, "per-class", train=count, seed=seed, patch_size=3)
        split = make_split(scene, "per-class", train=count, seed=seed, patch_size=3, allow_small=True)
        expected = [count if c > count else max(1, c // 2) for c in n]  # allow_small: half of a small class
    else:
        split = make_split(scene, "per-class", train=count, seed=seed, patch_size=3)
        expected = [count] * k
    check_basic(split, scene)
    assert split.counts(scene)[:, 0].tolist() == expected


def test_indian_pines_ratio(ip):
    split = make_split(ip, "ratio", train=0.1, val=0.05, seed=0)
    check_basic(split, ip)
    c = split.counts(ip)
    n = ip.class_counts()
    assert c[:, 0].tolist() == [half_up(0.1 * x) for x in n]  # e.g. Oats: 20 -> 2, Alfalfa: 46 -> 5
    assert c.sum() == 10249
    assert split.leakage > 0.9  # random splits: almost every test window sees a training pixel
    rows = split.summary(ip)
    assert rows[8] == {"index": 8, "id": 9, "name": "Oats", "train": 2, "val": 1, "test": 17}


def test_indian_pines_per_class_small_classes(ip):
    with pytest.raises(DataError) as e:
        make_split(ip, "per-class", train=30, seed=0)
    assert "class 7 ('Grass-pasture-mowed') has 28 labelled pixels" in str(e.value)
    split = make_split(ip, "per-class", train=30, seed=0, allow_small=True)
    check_basic(split, ip)
    train = split.counts(ip)[:, 0]
    assert train[6] == 14 and train[8] == 10  # Grass-pasture-mowed 28 -> 14, Oats 20 -> 10
    assert (np.delete(train, [6, 8]) == 30).all()


def test_allow_small_gives_one_training_pixel():
    labels = np.full((10, 10), -1, dtype=np.int32)
    labels[:5] = 0
    labels[9, :3] = 1  # class id 7: 3 pixels, round(0.1 · 3) = 0
    scene = Scene("s", np.zeros((10, 10, 1), np.float32), labels, [2, 7], ["big", "tiny"])
    with pytest.raises(DataError, match=r"class 7 \('tiny'\) has 3 labelled pixels"):
        make_split(scene, "ratio", train=0.1)
    split = make_split(scene, "ratio", train=0.1, allow_small=True)
    assert split.counts(scene)[1].tolist() == [1, 0, 2]
    labels[9, 1:] = -1  # one pixel: no split can give it a training and a test pixel
    with pytest.raises(DataError, match=r"class 7 \('tiny'\) has 1 labelled pixels"):
        make_split(scene, "ratio", train=0.1, allow_small=True)


def test_seeded_and_rebuilt_from_spec(ip):
    a = make_split(ip, "ratio", train=0.1, seed=3)
    b = make_split(ip, "ratio", train=0.1, seed=3)
    c = make_split(ip, "ratio", train=0.1, seed=4)
    assert (a.train == b.train).all() and (a.test == b.test).all() and (a.val == b.val).all()
    assert (a.train != c.train).any()
    spec = json.loads(json.dumps(a.spec))
    assert (
        spec["strategy"] == "ratio" and spec["train"] == 0.1 and spec["seed"] == 3 and spec["patch_size"] == 7
    )
    again = split_from_spec(ip, spec)
    assert (again.train == a.train).all() and (again.val == a.val).all() and (again.test == a.test).all()
    moved = Scene(ip.name, ip.cube, ip.labels.copy(), ip.class_ids, ip.class_names)
    moved.labels[0, :5] = 0  # a changed ground truth: same spec, other split
    with pytest.raises(DataError, match="differs"):
        split_from_spec(moved, spec)


def test_buffer_applies_to_random_splits_too():
    scene = blocky_scene(40, 40, 3, 0)
    split = make_split(scene, "ratio", train=0.05, val=0.0, seed=0, patch_size=5, buffer=2)
    check_basic(split, scene)
    assert split.leakage == 0.0


def test_bad_arguments(ip):
    for kw, msg in (
        ({"strategy": "random"}, "unknown split strategy"),
        ({"strategy": "ratio", "train": 30}, "fraction"),
        ({"strategy": "per-class", "train": 0.5}, "whole number"),
        ({"val": 1.0}, "val"),
        ({"patch_size": 8}, "odd"),
        ({"patch_size": 147}, "larger than the scene"),
        ({"buffer": -1}, "buffer"),
        ({"strategy": "disjoint", "train": 1.5}, "disjoint"),
        ({"strategy": "fixed"}, "training map"),
    ):
        with pytest.raises(DataError, match=msg):
            make_split(ip, **kw)


# ----------------------------------------------------------------------------------------------
# Leakage and the disjoint strategy


def brute_leakage(train: np.ndarray, test: np.ndarray, p: int) -> float:
    r = p // 2
    hits = [
        train[max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1].any() for i, j in zip(*np.nonzero(test))
    ]
    return float(np.mean(hits)) if hits else 0.0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3, 5, 7]), st.integers(0, 10**6))
def test_leakage_matches_a_brute_force_loop(h, w, p, seed):
    rng = np.random.default_rng(seed)
    train = rng.random((h, w)) < 0.15
    test = ~train & (rng.random((h, w)) < 0.5)
    assert compute_leakage(train, test, p) == pytest.approx(brute_leakage(train, test, p))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    st.integers(16, 48),
    st.integers(16, 48),
    st.integers(1, 4),
    st.integers(0, 10**6),
    st.sampled_from([3, 5, 7]),
    st.sampled_from([0.1, 0.3]),
)
def test_disjoint_split_has_zero_leakage(h, w, k, seed, p, frac):
    assume(p <= min(h, w))
    scene = blocky_scene(h, w, k, seed)
    split = make_split(scene, "disjoint", train=frac, val=0.1, seed=seed, patch_size=p, allow_small=True)
    check_basic(split, scene)
    assert split.leakage == 0.0
    assert brute_leakage(split.train, split.test, p) == 0.0
    assert brute_leakage(split.train, split.val, p) == 0.0  # val is drawn outside the buffer too
    assert split.spec["buffer"] == p // 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_indian_pines_disjoint(ip, seed):
    split = make_split(ip, "disjoint", train=0.1, val=0.05, seed=seed)
    check_basic(split, ip)
    assert split.leakage == 0.0 and split.spec["block"] == 10
    frac = split.counts(ip)[:, 0] / ip.class_counts()
    big = ip.class_counts() >= 400
    assert ((frac[big] > 0.04) & (frac[big] < 0.25)).all(), frac  # stratified greedy: roughly 10% each
    assert 0.05 < split.train.sum() / 10249 < 0.2
    again = split_from_spec(ip, json.loads(json.dumps(split.spec)))
    assert (again.test == split.test).all()


def test_disjoint_with_a_smaller_buffer_reports_its_leakage(ip):
    split = make_split(ip, "disjoint", train=0.1, seed=0, buffer=0)
    assert 0.0 < split.leakage < 0.2
    assert compute_leakage(split.train, split.test, 7) == split.leakage


# ----------------------------------------------------------------------------------------------
# Fixed maps


def _maps(scene: Scene, split: Split) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(scene.class_ids)[np.maximum(scene.labels, 0)]
    return np.where(split.train, ids, 0).astype(np.uint8), np.where(split.test, ids, 0).astype(np.uint8)


def test_fixed_split_from_files(ip, tmp_path):
    ref = make_split(ip, "ratio", train=0.1, val=0.0, seed=5)
    train_map, test_map = _maps(ip, ref)
    np.save(tmp_path / "train.npy", train_map)
    scipy.io.savemat(tmp_path / "test.mat", {"TSLabel": test_map})
    split = make_split(
        ip, "fixed", val=0.0, train_map=tmp_path / "train.npy", test_map=str(tmp_path / "test.mat")
    )
    assert (split.train == ref.train).all() and (split.test == ref.test).all() and not split.val.any()
    assert split.spec["train_map"] == str(tmp_path / "train.npy")
    # val comes out of the training map, the test map stays whole
    with_val = make_split(ip, "fixed", val=0.2, train_map=train_map, test_map=test_map, seed=1)
    check_basic(with_val, ip)
    assert (with_val.test == ref.test).all() and ((with_val.train | with_val.val) == ref.train).all()
    assert with_val.val.sum() > 0 and with_val.spec["train_map"] == "<array>"
    with pytest.raises(DataError, match="in-memory"):
        split_from_spec(ip, with_val.spec)
    again = split_from_spec(ip, json.loads(json.dumps(split.spec)))
    assert (again.train == split.train).all()
    # without a test map every other labelled pixel is a test pixel
    rest = make_split(ip, "fixed", val=0.0, train_map=train_map)
    assert ((rest.train | rest.test) == (ip.labels >= 0)).all()


def test_fixed_maps_are_checked(ip, tmp_path):
    ref = make_split(ip, "ratio", train=0.1, val=0.0, seed=5)
    train_map, test_map = _maps(ip, ref)
    bad_id = train_map.copy()
    bad_id[np.nonzero(ref.train)[0][0], np.nonzero(ref.train)[1][0]] = 40
    cases = [
        ({"train_map": bad_id, "test_map": test_map}, r"class ids \[40\]"),
        ({"train_map": np.where(train_map == 2, 3, train_map), "test_map": test_map}, "disagree"),
        ({"train_map": train_map, "test_map": train_map}, "share"),
        ({"train_map": train_map[:-1], "test_map": test_map}, "shape"),
        ({"train_map": np.where(ip.labels < 0, 1, train_map), "test_map": test_map}, "unlabelled"),
        ({"train_map": np.where(train_map == 9, 0, train_map), "test_map": test_map}, r"class 9 \('Oats'\)"),
        ({"train_map": tmp_path / "missing.npy"}, "not found"),
    ]
    for kw, msg in cases:
        with pytest.raises(DataError, match=msg):
            make_split(ip, "fixed", **kw)
