"""Shared fixtures.

`ip_crop_path` is a real crop of Indian Pines (rows 0–59, cols 0–59: 2,299 labelled pixels in 10
classes with the non-contiguous original ids 2, 3, 4, 5, 6, 10, 11, 12, 15, 16) saved as .npz,
so that end-to-end tests read real AVIRIS spectra through the file readers and still finish in
seconds on two cores. Tests of the full scene load it through the registry.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

# Two cores on CI: keep torch from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def ip_crop_path(tmp_path_factory):
    from blmkd.data import load_scene

    scene = load_scene("indian_pines")
    gt = np.zeros((60, 60), dtype=np.uint8)
    lab = scene.labels[:60, :60]
    ids = np.asarray(scene.class_ids)
    gt[lab >= 0] = ids[lab[lab >= 0]]
    path = tmp_path_factory.mktemp("data") / "ip_crop.npz"
    np.savez(path, cube=np.ascontiguousarray(scene.cube[:60, :60]), gt=gt)
    return path


def _edit_checkpoint_meta(src: Path, dst: Path, change) -> Path:
    """Copy checkpoint ``src`` to ``dst`` (the same path is fine) with ``change(meta)`` applied to its
    header metadata only: what an edited or corrupted file looks like, tensors untouched."""
    data = Path(src).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["blmkd"])
    change(meta)
    header["__metadata__"]["blmkd"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    Path(dst).write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    return Path(dst)


@pytest.fixture(scope="session")
def edit_checkpoint_meta():
    """``edit(src, dst, change)``: a copy of a checkpoint with its metadata changed (see above)."""
    return _edit_checkpoint_meta
