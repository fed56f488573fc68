"""The data a model is trained and tested on: a scene, its split and its preprocessing.

``prepare_data`` turns dataset and split options (:class:`DataOptions`, the options of
``blmkd split``) into a :class:`Bundle`: the scene, the seeded split, the preprocessing fitted on
training pixels only, and patch extractors for float and byte models. ``bundle_from_checkpoint``
rebuilds the bundle a checkpoint was trained on from the facts it records, ``held_out_bundle``
re-evaluates a model on another split without its own training and validation pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import cached_property

import numpy as np
import torch

from blmkd.checkpoint import Checkpoint
from blmkd.data import load_scene
from blmkd.data.patches import PatchExtractor
from blmkd.data.preprocess import Preprocessing, fit_preprocessing
from blmkd.data.scene import with_class_names
from blmkd.data.splits import Split, _digest, compute_leakage, make_split
from blmkd.errors import BlmkdError, ModelError


@dataclass
class DataOptions:
    """How to read the scene and split it (the options of `blmkd split`)."""

    dataset: str = "indian_pines"  # registry name or path to the cube file
    gt: str | None = None  # ground truth in a second file
    cube_key: str | None = None
    gt_key: str | None = None
    fill: float | None = None  # value for NaN/Inf cube entries
    strategy: str = "ratio"  # ratio | per-class | disjoint | fixed
    train: float = 0.1  # fraction (ratio, disjoint) or count per class (per-class)
    val: float = 0.05  # fraction of each class's non-training pixels
    seed: int = 0
    patch: int = 7  # odd window size P
    buffer: int | None = None  # disjoint: gap between train and test, default P // 2
    allow_small: bool = False
    train_map: str | None = None  # fixed: train/test maps
    test_map: str | None = None
    class_names: list[str] | dict | None = None  # names of the classes, in id order or id -> name

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Bundle:
    """A scene, its split and its preprocessing: everything a model is trained and tested on."""

    options: DataOptions
    scene: object  # blmkd.data.Scene
    split: object  # blmkd.data.splits.Split
    prep: object  # blmkd.data.preprocess.Preprocessing

    @property
    def patch_size(self) -> int:
        return self.options.patch

    @cached_property
    def float_extractor(self):
        return PatchExtractor(self.prep.standardize(self.scene.cube), self.patch_size)

    @cached_property
    def byte_extractor(self):
        return PatchExtractor(self.prep.to_bytes(self.scene.cube), self.patch_size)

    def extractor(self, input_kind: str, device: torch.device | str | None = None):
        """The patch extractor of the model's input kind; on ``device`` (a GPU), a copy of the padded
        cube is uploaded there once (in its own dtype: bytes stay bytes) and windows are cut there."""
        ext = self.byte_extractor if input_kind == "uint8" else self.float_extractor
        if device is None or torch.device(device).type == "cpu":
            return ext
        on = self.__dict__.setdefault("_on_device", {})
        key = (input_kind, str(torch.device(device)))
        if key not in on:
            on[key] = ext.to(device)
        return on[key]

    def coords(self, which: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """rows, cols, labels of the ``train``/``val``/``test`` pixels in row-major order."""
        mask = getattr(self.split, which)
        rows, cols = np.nonzero(mask)
        return rows, cols, self.scene.labels[rows, cols].astype(np.int64)

    def meta(self) -> dict:
        """The data facts that every checkpoint carries."""
        return {
            "data": {**self.scene.facts(), "options": self.options.to_dict(), "patch_size": self.patch_size},
            "preprocessing": self.prep.to_dict(),
            "split": {
                **self.split.spec,
                "leakage": float(self.split.leakage),
                "counts": self.split.summary(self.scene),
            },
        }


def prepare_data(opts: DataOptions) -> Bundle:
    """Load the scene, make the seeded split and fit the preprocessing on training pixels."""

    scene = load_scene(opts.dataset, opts.gt, cube_key=opts.cube_key, gt_key=opts.gt_key, fill=opts.fill)
    if opts.class_names:
        scene = with_class_names(scene, opts.class_names)
    split = split_for(scene, opts)
    prep = fit_preprocessing(scene.cube, split.train)
    return Bundle(opts, scene, split, prep)


def split_for(scene, opts: DataOptions):
    """The seeded split of ``scene`` that ``opts`` describe."""

    train = int(opts.train) if opts.strategy == "per-class" else float(opts.train)
    return make_split(
        scene,
        opts.strategy,
        train=train,
        val=opts.val,
        seed=opts.seed,
        patch_size=opts.patch,
        buffer=opts.buffer,
        allow_small=opts.allow_small,
        train_map=opts.train_map,
        test_map=opts.test_map,
    )


def with_patch(bundle: Bundle, patch: int | None) -> Bundle:
    """``bundle``'s scene, split and preprocessing seen through ``patch × patch`` windows.

    The split is remade for the new window (its leakage depends on it) and must select the same
    pixels: a distilled student that sees less context than its teacher is then tested on exactly
    the teacher's test pixels. Splits whose pixels follow the window (``disjoint``: blocks and
    buffer scale with P) are refused.

    Raises:
        BlmkdError: the split at ``patch`` selects other pixels.
    """
    if patch is None or patch == bundle.patch_size:
        return bundle
    opts = replace(bundle.options, patch=patch)
    split = split_for(bundle.scene, opts)
    if split.spec["digest"] != bundle.split.spec["digest"]:
        raise BlmkdError(
            f"a {patch}×{patch} window changes this {opts.strategy} split (its blocks and buffer follow the "
            f"window): use the teacher's window, {bundle.patch_size}"
        )
    return Bundle(opts, bundle.scene, split, bundle.prep)


def bundle_from_checkpoint(ckpt: Checkpoint, overrides: dict | None = None) -> Bundle:
    """Rebuild the data a checkpoint was trained on (same split, same preprocessing).

    ``overrides`` replaces data options (e.g. another dataset path or split strategy); the
    recorded preprocessing is kept, since the model was trained with it.
    """

    data = ckpt.meta.get("data", {})
    opts = DataOptions(
        **{**data.get("options", {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    )
    bundle = prepare_data(opts)
    bundle.prep = Preprocessing.from_dict(ckpt.meta["preprocessing"])
    check_compatible(ckpt, bundle)
    return bundle


def check_compatible(ckpt: Checkpoint, bundle: Bundle) -> None:
    """Refuse a checkpoint whose bands or classes differ from the data's."""
    cfg = ckpt.meta["model"]["config"]
    scene = bundle.scene
    if cfg.get("bands") != scene.bands:
        raise ModelError(
            f"{ckpt.path.name} expects {cfg.get('bands')} bands but {scene.name} has {scene.bands}"
        )
    if cfg.get("num_classes") != scene.num_classes:
        raise ModelError(
            f"{ckpt.path.name} has {cfg.get('num_classes')} classes but {scene.name} has {scene.num_classes}"
        )
    ids = [c["id"] for c in ckpt.meta.get("data", {}).get("classes", [])]
    if ids and ids != list(scene.class_ids):
        raise ModelError(
            f"{ckpt.path.name} was trained on class ids {ids}, the data has {list(scene.class_ids)}"
        )


def model_pixels(ck: Checkpoint, scene=None) -> tuple[np.ndarray, np.ndarray, object]:
    """The training and validation masks ``ck`` was trained and selected on, and their scene.

    The checkpoint records its data options and its split's digest; the split is remade on
    ``scene`` when that is the model's scene (same digest), else on the model's own recorded
    scene, which is loaded for it.

    Raises:
        BlmkdError: the checkpoint records no split digest, or its pixels cannot be rebuilt (its
            scene cannot be read, or the split made from it differs from the recorded one).
    """

    digest = ck.meta.get("split", {}).get("digest")
    if not digest:
        raise BlmkdError(
            f"{ck.path.name} records no split digest: its training pixels are unknown, so another split cannot be tested without leakage"
        )
    opts = DataOptions(**ck.meta.get("data", {}).get("options", {}))
    if scene is not None:
        try:
            split = split_for(scene, opts)
        except BlmkdError:
            split = None
        if split is not None and split.spec["digest"] == digest:
            return split.train, split.val, scene
    try:
        own = load_scene(
            opts.dataset, opts.gt, cube_key=opts.cube_key, gt_key=opts.gt_key, fill=opts.fill, progress=False
        )
        split = split_for(own, opts)
    except BlmkdError as exc:
        raise BlmkdError(f"cannot rebuild the pixels {ck.path.name} was trained on ({str(exc).splitlines()[0]}); "
                         "evaluate it on its own split") from None  # fmt: skip
    if split.spec["digest"] != digest:
        raise BlmkdError(f"the split of {opts.dataset} differs from the one {ck.path.name} was trained on (digest "
                         f"{split.spec['digest']} != {digest}): its training pixels are unknown")  # fmt: skip
    return split.train, split.val, own


def held_out_bundle(ck: Checkpoint, bundle: Bundle, which: str = "test") -> tuple[Bundle, dict]:
    """``bundle`` with the pixels ``ck`` was trained and selected on removed from its sets, and the
    leakage of its ``which`` set measured against the model's own training pixels.

    On the model's own split nothing changes. On another split (strategy, fraction or seed) of the
    same scene, the model's training and validation pixels are dropped from every set (a pixel the
    model was trained or selected on is no test of it), and the leakage is the share of the
    remaining ``which`` windows that contain one of the model's training pixels. On another scene
    (other height or width) the model saw none of its pixels.

    Returns:
        ``(bundle, facts)``; ``facts``: ``own_split``, ``removed`` (``{"train", "val"}``: the model's
        training / validation pixels taken out of the ``which`` set), ``pixels`` (left in it),
        ``leakage`` (windows holding a model training pixel), ``leakage_train_val`` (… a training or
        validation pixel), ``note``.

    Raises:
        BlmkdError: the model's pixels cannot be rebuilt, or none of the ``which`` pixels is left.
    """

    p = bundle.patch_size
    own_digest = ck.meta.get("split", {}).get("digest")
    if own_digest and bundle.split.spec.get("digest") == own_digest:
        sp = bundle.split
        mask = getattr(sp, which)
        return bundle, {"own_split": True, "removed": {"train": 0, "val": 0}, "pixels": int(mask.sum()),
                        "leakage": compute_leakage(sp.train, mask, p),
                        "leakage_train_val": compute_leakage(sp.train | sp.val, mask, p),
                        "note": "the model's own split"}  # fmt: skip
    m_train, m_val, m_scene = model_pixels(ck, bundle.scene)
    sp = bundle.split
    if m_train.shape != sp.train.shape:
        mask = getattr(sp, which)
        return bundle, {"own_split": False, "removed": {"train": 0, "val": 0}, "pixels": int(mask.sum()),
                        "leakage": 0.0, "leakage_train_val": 0.0,
                        "note": f"another scene than the model's ({m_scene.name}): none of its pixels was seen in training"}  # fmt: skip
    seen = m_train | m_val
    mask = getattr(sp, which)
    removed = {"train": int((mask & m_train).sum()), "val": int((mask & m_val).sum())}
    train, val, test = sp.train & ~seen, sp.val & ~seen, sp.test & ~seen
    left = {"train": train, "val": val, "test": test}[which]
    if not left.any():
        raise BlmkdError(f"every {which} pixel of this split was a training or validation pixel of {ck.path.name}; "
                         "nothing is left to evaluate it on")  # fmt: skip
    spec = {**sp.spec, "minus_model_pixels": own_digest, "digest": _digest(train, val, test)}
    split = Split(train, val, test, spec, compute_leakage(m_train, test, p))
    facts = {"own_split": False, "removed": removed, "pixels": int(left.sum()),
             "leakage": compute_leakage(m_train, left, p), "leakage_train_val": compute_leakage(seen, left, p),
             "note": f"the model's {removed['train']} training and {removed['val']} validation pixels in this {which} "
                     f"set were removed; leakage is against the model's training pixels"}  # fmt: skip
    return Bundle(bundle.options, bundle.scene, split, bundle.prep), facts
