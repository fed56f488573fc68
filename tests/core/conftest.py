from __future__ import annotations

import pytest

from blmkd.bundle import DataOptions, prepare_data


@pytest.fixture(scope="session")
def ip_bundle(ip_crop_path):
    """Real Indian Pines crop, 10% stratified split, 7×7 patches, seed 0."""
    return prepare_data(DataOptions(dataset=str(ip_crop_path), patch=7, seed=0))
