"""Data layer: readers, the dataset registry, preprocessing, splits and patch extraction."""

from blmkd.data.cache import data_dir
from blmkd.data.download import download_dataset, fetch
from blmkd.data.embedded import load_indian_pines
from blmkd.data.load import load_scene
from blmkd.data.readers import read_scene_files
from blmkd.data.registry import DATASETS, DatasetFile, DatasetInfo, get_dataset, list_datasets
from blmkd.data.scene import UNLABELLED, Scene, labels_from_ground_truth, scene_from_arrays
from blmkd.data.synthetic import make_synthetic_scene

__all__ = [
    "DATASETS",
    "DatasetFile",
    "DatasetInfo",
    "Scene",
    "UNLABELLED",
    "data_dir",
    "download_dataset",
    "fetch",
    "get_dataset",
    "labels_from_ground_truth",
    "list_datasets",
    "load_indian_pines",
    "load_scene",
    "make_synthetic_scene",
    "read_scene_files",
    "scene_from_arrays",
]
