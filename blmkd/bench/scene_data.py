"""The data `blmkd bench` tests on: the scene, split and preprocessing every artifact records.

The first checkpoint's bundle, else the dataset, split spec and preprocessing in the first ONNX
file's (or C export's, or engine sidecar's) metadata; each artifact then sees the scene through its
own recorded preprocessing (:class:`Extractors`), and :func:`check_fits` refuses one that does not
fit the scene.
"""

from __future__ import annotations

import json
from pathlib import Path

from blmkd.bench.jobs import artifact_kind
from blmkd.bundle import Bundle, DataOptions, bundle_from_checkpoint
from blmkd.checkpoint import load_checkpoint
from blmkd.data import load_scene
from blmkd.data.patches import PatchExtractor
from blmkd.data.preprocess import Preprocessing
from blmkd.data.splits import split_from_spec
from blmkd.errors import DataError, ModelError
from blmkd.inference.c_build import read_c_metadata
from blmkd.inference.onnx_meta import onnx_metadata


def light_meta(path: Path) -> dict:
    """Metadata of an ONNX file, a C export or an engine's sidecar without opening a session."""
    if path.suffix.lower() == ".onnx":
        return onnx_metadata(path)
    if artifact_kind(path) == "c":
        return read_c_metadata(path)
    side = path.with_name(path.name + ".json")
    meta = json.loads(side.read_text()) if side.exists() else {}
    src = path.with_name(str(meta.get("onnx", ""))) if meta.get("onnx") else None
    if src is not None and src.is_file():
        meta = {**onnx_metadata(src), **meta}
    return meta


def bench_bundle(paths: list[Path], dataset: str | None = None):
    """The scene, split and preprocessing to test on: the first checkpoint's, else the first ONNX
    file's (or engine sidecar's) recorded dataset, split spec and preprocessing.

    Returns:
        ``(bundle, source)``; ``source`` names the artifact the data facts came from.
    """
    over = {"dataset": dataset} if dataset else None
    for p in paths:
        if artifact_kind(p) == "checkpoint":
            return bundle_from_checkpoint(load_checkpoint(p), over), p.name
    for p in paths:
        meta = light_meta(p)
        spec = meta.get("split") or {}
        if not spec or not meta.get("preprocessing"):
            continue
        name = dataset or meta.get("dataset")
        if not name:
            raise DataError(f"{p.name} does not name its dataset; pass --dataset")
        try:
            scene = load_scene(name)
        except DataError as exc:
            raise DataError(f"{exc} (the dataset recorded in {p.name}; pass --dataset PATH)") from None
        split = split_from_spec(scene, spec)
        opts = DataOptions(dataset=name, strategy=spec.get("strategy", "ratio"), seed=int(spec.get("seed", 0)),
                           patch=int(meta.get("patch_size") or spec.get("patch_size", 7)))  # fmt: skip
        return Bundle(opts, scene, split, Preprocessing.from_dict(meta["preprocessing"])), p.name
    raise ModelError(
        "none of the models records its dataset and split (give a checkpoint or a blmkd ONNX export)"
    )


class Extractors:
    """Patch extractors per (input kind, preprocessing): artifacts fitted on other training pixels
    see the scene through their own statistics."""

    def __init__(self, scene, patch: int):
        self.scene, self.patch, self._cache = scene, patch, {}

    def get(self, input_kind: str, prep_dict: dict):
        key = (input_kind, json.dumps(prep_dict, sort_keys=True))
        if key not in self._cache:
            prep = Preprocessing.from_dict(prep_dict)
            cube = (
                prep.to_bytes(self.scene.cube) if input_kind == "uint8" else prep.standardize(self.scene.cube)
            )
            self._cache[key] = PatchExtractor(cube, self.patch)
        return self._cache[key]


def check_fits(runner, bundle) -> None:
    meta, scene = runner.meta, bundle.scene
    if meta.get("bands") not in (None, scene.bands):
        raise ModelError(f"takes {meta['bands']} bands, {scene.name} has {scene.bands}")
    if meta.get("num_classes") not in (None, scene.num_classes):
        raise ModelError(f"has {meta['num_classes']} classes, {scene.name} has {scene.num_classes}")
    if meta.get("patch_size") not in (None, 0, bundle.patch_size):
        raise ModelError(
            f"takes {meta['patch_size']}×{meta['patch_size']} patches, the split uses {bundle.patch_size}"
        )
    ids = [c["id"] for c in meta.get("classes", [])]
    if ids and ids != list(scene.class_ids):
        raise ModelError(f"was trained on class ids {ids}, the scene has {list(scene.class_ids)}")
    if not meta.get("preprocessing"):
        raise ModelError("its metadata has no preprocessing")
