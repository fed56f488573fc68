"""The dataset registry: the standard benchmarks, name matching, cache status, registry-named loads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from blmkd.data import get_dataset, list_datasets, load_scene, registry
from blmkd.errors import DataError

from .test_readers import write_mat5

# name: (bands, classes)
EXPECTED = {
    "indian_pines": (200, 16),
    "salinas": (204, 16),
    "salinas_a": (204, 6),
    "pavia_university": (103, 9),
    "pavia_centre": (102, 9),
    "ksc": (176, 13),
    "botswana": (145, 14),
    "houston_2013": (144, 15),
}


def test_the_standard_benchmarks_are_registered():
    assert {n: (d.bands, d.num_classes) for n, d in registry.DATASETS.items()} == EXPECTED
    for info in registry.DATASETS.values():
        assert len(set(info.class_names)) == info.num_classes
        assert info.sensor and info.citation
        assert info.cube.filename.endswith(".mat") and info.gt.filename.endswith(".mat")


def test_entries_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.SALINAS.bands = 3


@pytest.mark.parametrize("name", ["indian_pines", "IndianPines", "indian-pines", "INDIAN PINES", "ip"])
def test_names_are_case_underscore_and_dash_insensitive(name):
    assert get_dataset(name).name == "indian_pines"


def test_aliases_do_not_collide():
    seen: dict[str, str] = {}
    for info in registry.DATASETS.values():
        for alias in (info.name, *info.aliases):
            key = registry.normalize_name(alias)
            assert seen.setdefault(key, info.name) == info.name, alias


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DataError, match="unknown dataset 'nope'; known datasets: indian_pines, salinas"):
        get_dataset("nope")


def test_public_urls_and_checksums():
    ip = get_dataset("indian_pines")
    assert ip.cube.url == "https://www.ehu.eus/ccwintco/uploads/6/67/Indian_pines_corrected.mat"
    assert ip.cube.sha256 == "ec2f8808710919d566f70f0d4aa885aae1ddfd42b734aba71c5e12ca65450939"
    assert ip.checksum_status == "partly verified"
    assert get_dataset("paviau").checksum_status == "not verified"
    for name in EXPECTED:
        info = get_dataset(name)
        assert info.downloadable == (name != "houston_2013")
        if info.downloadable:
            assert info.cube.url.startswith("https://www.ehu.eus/ccwintco/uploads/")
    assert "registration" in get_dataset("houston").note


def test_salinas_a_keeps_the_salinas_ids():
    info = get_dataset("salinas-a")
    assert info.class_ids == [1, 10, 11, 12, 13, 14]
    assert info.class_name(10) == "Corn_senesced_green_weeds"
    assert info.class_name(99) == "class 99"


def test_list_datasets_reports_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("BLMKD_DATA_DIR", str(tmp_path))
    rows = {r["name"]: r for r in list_datasets()}
    assert set(rows) == set(EXPECTED)
    assert rows["indian_pines"]["cached"] and rows["indian_pines"]["embedded"]
    assert not rows["ksc"]["cached"]
    assert rows["ksc"]["checksum"] == "not verified"
    for path in rows["ksc"]["files"]:
        (tmp_path / "ksc").mkdir(exist_ok=True)
        (tmp_path / "ksc" / path.rsplit("/", 1)[-1]).write_bytes(b"")
    assert {r["name"]: r for r in list_datasets()}["ksc"]["cached"]


def test_cached_registry_files_load_with_registry_class_names(monkeypatch, tmp_path):
    monkeypatch.setenv("BLMKD_DATA_DIR", str(tmp_path))
    info = get_dataset("salinas_a")
    info.local_dir().mkdir(parents=True)
    cube_path, gt_path = info.local_paths()
    rng = np.random.default_rng(0)
    gt = rng.choice(np.array([0, 1, 10, 11, 12, 13, 14], np.uint8), size=(8, 7))
    gt[0, :6] = [1, 10, 11, 12, 13, 14]
    write_mat5(cube_path, salinasA_corrected=rng.integers(0, 9000, size=(8, 7, 204)).astype(np.int16))
    write_mat5(gt_path, salinasA_gt=gt)
    scene = load_scene("SalinasA")
    assert scene.name == "salinas_a"
    assert scene.class_ids == [1, 10, 11, 12, 13, 14]
    assert scene.class_names == info.class_names
    assert scene.cube.dtype == np.int16
    assert "citation" in scene.extra


def test_houston_loads_when_the_user_puts_its_files_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("BLMKD_DATA_DIR", str(tmp_path))
    info = get_dataset("houston_2013")
    info.local_dir().mkdir(parents=True)
    cube_path, gt_path = info.local_paths()
    write_mat5(cube_path, whatever=np.ones((4, 4, 144), np.float32))
    write_mat5(gt_path, labels=np.full((4, 4), 15, np.uint8))
    scene = load_scene("houston")
    assert scene.class_names == ["Running Track"]
