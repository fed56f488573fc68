"""Self-describing, safe checkpoints: safetensors weights with the JSON facts inside.

One ``.safetensors`` file holds the weights and, in its header metadata under ``"blmkd"``, a
JSON document with everything needed to rebuild and trust the model: the preset and its config,
the dataset facts (bands, classes with original ids and names), the preprocessing, the split
spec and seed, metrics, the teacher and KD settings for students, and package versions. A
``.json`` sidecar with the same document is written beside it for people and tools.

Nothing is unpickled: safetensors stores raw tensors, and the optimizer state needed by
``--resume`` is flattened into tensors too (its few scalars go to the JSON). A seal
(:mod:`blmkd.integrity`) over the tensor bytes and every metadata section is stored under
``"integrity"`` and checked on load, so an edited weight, preprocessing mean, config or split is
refused with the name of what changed; a truncated file fails safetensors' own header/size checks.
Checkpoints written before the seal existed still load: their tensors are checked against
``tensors_sha256`` and a note says once that their metadata is not verified. Writes are atomic
(temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from dataclasses import dataclass
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from blmkd.errors import ModelError
from blmkd.integrity import canonical, changed_parts, describe, seal
from blmkd.io import atomic_path, atomic_write_json
from blmkd.models import create_model, model_config_dict
from blmkd.version import __version__

FORMAT = "blmkd-checkpoint/1"
_OPT_PREFIX = "__optim__."


def versions() -> dict[str, str]:
    """Package versions recorded in every artifact."""
    return {
        "blmkd": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onnxruntime": _dist_version("onnxruntime"),
        "python": platform.python_version(),
    }


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, val in pstate.items():
            if torch.is_tensor(val):
                tensors[f"{_OPT_PREFIX}{pid}.{key}"] = val.detach().clone().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = val
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        pid, key = name[len(_OPT_PREFIX) :].split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    for pid, sc in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: dict,
    optimizer: torch.optim.Optimizer | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` (+ optional optimizer state) and ``meta`` to ``path`` atomically.

    ``meta`` is merged over the facts taken from the model itself (preset name, config,
    input kind) and the package versions.
    """
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    doc = dict(meta)
    doc["format"] = FORMAT
    doc["model"] = {
        "name": getattr(model, "blmkd_name", type(model).__name__),
        "family": getattr(model, "blmkd_family", "unknown"),
        "config": model_config_dict(model),
        "input_kind": getattr(model, "input_kind", "float"),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        **doc.get("model", {}),
    }
    doc["versions"] = versions()
    if optimizer is not None:
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        doc["optimizer"] = opt_meta
    for k, v in (extra_tensors or {}).items():
        tensors[f"__extra__.{k}"] = v.detach().contiguous().cpu()
    doc["tensors_sha256"] = _tensors_digest(tensors)
    doc = json.loads(json.dumps(doc, default=_json_default))  # the form a reader will see
    doc["integrity"] = seal(_sealed_parts(doc, doc["tensors_sha256"]))
    text = json.dumps(doc)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"blmkd": text})
    atomic_write_json(path.with_suffix(".json"), json.loads(text))
    return path


def _sealed_parts(meta: dict, tensors_digest: str) -> dict[str, bytes]:
    """What a checkpoint's seal covers: the tensors and each metadata section."""
    parts = {k: canonical(v) for k, v in meta.items() if k != "integrity"}
    parts["tensors"] = tensors_digest.encode()
    return parts


_LEGACY_NOTED: set[Path] = set()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the JSON document and the raw tensors (nothing unpickled)."""

    path: Path
    meta: dict
    tensors: dict[str, torch.Tensor]

    @property
    def model_name(self) -> str:
        return self.meta["model"]["name"]

    @property
    def config(self) -> dict:
        return dict(self.meta["model"]["config"])

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.tensors.items() if not k.startswith("__")}

    def optimizer_state(self) -> dict | None:
        if "optimizer" not in self.meta:
            return None
        opt = {k: v for k, v in self.tensors.items() if k.startswith(_OPT_PREFIX)}
        return _unflatten_optimizer(opt, self.meta["optimizer"])

    def extra(self, name: str) -> torch.Tensor | None:
        return self.tensors.get(f"__extra__.{name}")

    def build_model(self) -> nn.Module:
        """Rebuild the model from the recorded preset and config and load the weights."""
        cfg = self.config
        try:
            bands, num_classes = cfg.pop("bands"), cfg.pop("num_classes")
        except KeyError:
            raise ModelError(f"{self.path}: checkpoint config lacks bands/num_classes") from None
        model = create_model(self.model_name, bands=bands, num_classes=num_classes, **cfg)
        missing, unexpected = model.load_state_dict(self.model_state(), strict=False)
        if missing or unexpected:
            raise ModelError(
                f"{self.path}: weights do not match preset {self.model_name!r} "
                f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)"
            )
        model.eval()
        return model


def resolve_checkpoint_path(path: str | Path, which: str = "best") -> Path:
    """A run directory resolves to its ``best`` (or ``last``) checkpoint."""
    p = Path(path)
    if p.is_dir():
        cand = p / f"{which}.safetensors"
        if not cand.exists():
            raise ModelError(f"{p} is a folder without {cand.name}; is it a blmkd run directory?")
        return cand
    if not p.exists():
        raise ModelError(f"checkpoint not found: {p}")
    return p


def load_checkpoint(path: str | Path, which: str = "best") -> Checkpoint:
    """Load a checkpoint file (or a run directory's best one) without unpickling anything."""
    p = resolve_checkpoint_path(path, which)
    try:
        with safe_open(str(p), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types for truncation/corruption
        raise ModelError(
            f"{p}: not a readable safetensors checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if "blmkd" not in header:
        raise ModelError(f"{p}: safetensors file without blmkd metadata; not a blmkd checkpoint")
    try:
        meta = json.loads(header["blmkd"])
    except json.JSONDecodeError:
        raise ModelError(f"{p}: checkpoint metadata is not valid JSON (corrupt file?)") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{p}: unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    digest = _tensors_digest(tensors)
    if "integrity" in meta:
        changed = changed_parts(meta["integrity"], _sealed_parts(meta, digest))
        if changed is None:
            raise ModelError(f"{p}: its integrity record is not a blmkd seal (corrupt or edited file)")
        if changed:
            what = describe(["weights" if c == "tensors" else c for c in changed])
            raise ModelError(
                f"{p}: {what} changed since it was written (digest mismatch); the file was edited or is corrupt"
            )
    elif digest != meta.get("tensors_sha256"):
        raise ModelError(f"{p}: tensor checksum mismatch; the file was modified or is corrupt")
    elif p.resolve() not in _LEGACY_NOTED:
        _LEGACY_NOTED.add(p.resolve())
        print(
            f"note: {p} predates sealed metadata: its weights are verified, its metadata is not "
            "(training on from it or re-saving seals it)",
            file=sys.stderr,
        )
    return Checkpoint(path=p, meta=meta, tensors=tensors)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a whole file (recorded in exports as the source checkpoint hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
