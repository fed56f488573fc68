"""The metadata and seal of an ONNX export: written by the export, checked before anything runs it.

Metadata values are strings as they are, everything else JSON; the entry ``blmkd_integrity`` seals
the graph with its weights and every other entry (:mod:`blmkd.integrity`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from blmkd.errors import ExportError
from blmkd.integrity import check_seal, seal

META_FORMAT = "blmkd-export/1"
#: The metadata entry that holds the file's seal (:mod:`blmkd.integrity`).
SEAL_KEY = "blmkd_integrity"
# Metadata values that are plain strings; every other value is stored as JSON.
STRING_KEYS = frozenset(
    {"format", "model", "family", "input_kind", "input_name", "output_name", "precision", "dataset",
     "source_checkpoint", "source_sha256", "blmkd_version", "simplified"}
)  # fmt: skip


def set_metadata(model: onnx.ModelProto, meta: dict[str, Any]) -> None:
    """Write ``meta`` into ``metadata_props`` (strings as is, everything else as JSON)."""
    current = {p.key: p.value for p in model.metadata_props}
    for k, v in meta.items():
        current[k] = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    current.pop(SEAL_KEY, None)
    del model.metadata_props[:]
    for k, v in current.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "blmkd"
    model.metadata_props.add(
        key=SEAL_KEY, value=json.dumps(seal(_sealed_parts(model)), separators=(",", ":"))
    )


def _sealed_parts(model: onnx.ModelProto) -> dict[str, bytes]:
    """What an ONNX file's seal covers: the graph with its weights (everything but the metadata,
    serialized deterministically) and each metadata entry."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.metadata_props[:]
    parts = {"graph and weights": bare.SerializeToString(deterministic=True)}
    for p in model.metadata_props:
        if p.key != SEAL_KEY:
            parts[p.key] = p.value.encode("utf-8")
    return parts


def verify_onnx(model: onnx.ModelProto, name: str) -> bool:
    """Check an ONNX model against its seal: ``True`` when it holds, ``False`` for a file without one
    (written by another tool, or by a blmkd that did not seal).

    Raises:
        ExportError: naming what changed (the graph and weights, or a metadata entry such as
            ``preprocessing``).
    """
    props = {p.key: p.value for p in model.metadata_props}
    if SEAL_KEY not in props:
        return False
    check_seal(props[SEAL_KEY], _sealed_parts(model), name, f"{SEAL_KEY} entry", ExportError)
    return True


def load_verified(path: str | Path, load_external_data: bool = True) -> tuple[onnx.ModelProto, bytes, bool]:
    """``(model, file bytes, sealed)`` of an ONNX file checked against its seal.

    Raises:
        ExportError: not an ONNX model (another file, truncated), or it fails its seal.
    """
    p = Path(path)
    data = p.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ExportError(
            f"{p.name}: not a readable ONNX model (truncated or another kind of file? {type(exc).__name__})"
        ) from None
    if not model.graph.node and not model.graph.input:
        raise ExportError(f"{p.name}: not an ONNX model (no graph); truncated or another kind of file?")
    return model, data, verify_onnx(model, p.name)


def read_metadata(props: dict[str, str] | onnx.ModelProto) -> dict[str, Any]:
    """The inverse of :func:`set_metadata` (also takes ORT's ``custom_metadata_map``)."""
    if isinstance(props, onnx.ModelProto):
        props = {p.key: p.value for p in props.metadata_props}
    out: dict[str, Any] = {}
    for k, v in props.items():
        if k == SEAL_KEY:
            continue
        if k in STRING_KEYS:
            out[k] = v
            continue
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The blmkd metadata of an ONNX file, checked against the file's seal.

    Raises:
        ExportError: not a readable ONNX file, or one whose seal does not hold.
    """
    return read_metadata(load_verified(path)[0])
