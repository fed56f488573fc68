"""Seals: one SHA-256 over everything an artifact is, with a digest per part to name what changed.

A checkpoint seals its tensors and every section of its metadata (model and config, data facts,
preprocessing, split, metrics ...); an ONNX file its graph with the weights and each metadata
entry; a C export its whole text. The seal is recorded in the artifact and checked on every load,
so an edit (a digit of the preprocessing mean, a weight, a ``#define``) or a corrupt copy is refused
with one line naming the part that changed.

A seal detects accidents and edits; it is not a signature. Someone who recomputes it can still
pass off an edited file, so code that runs an artifact validates what it relies on as well (the C
runner checks the sizes compiled into the library against the metadata).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

ALGORITHM = "sha256"


def canonical(obj: Any) -> bytes:
    """``obj`` as canonical JSON bytes (sorted keys, no spaces): equal values, equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal(parts: dict[str, bytes]) -> dict[str, Any]:
    """The seal of named parts: a digest per part and one over all of them."""
    digests = {k: sha256(v) for k, v in sorted(parts.items())}
    return {"algorithm": ALGORITHM, "parts": digests, "sha256": sha256(canonical(digests))}


def changed_parts(recorded: Any, parts: dict[str, bytes]) -> list[str] | None:
    """The names of the parts that differ from the ``recorded`` seal (added and removed ones too);
    ``[]`` when it holds, ``None`` when ``recorded`` is not a seal at all."""
    if not isinstance(recorded, dict) or recorded.get("algorithm") != ALGORITHM:
        return None
    want = recorded.get("parts")
    if not isinstance(want, dict) or recorded.get("sha256") != sha256(canonical(want)):
        return ["seal"]
    have = seal(parts)["parts"]
    return sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))


def describe(names: list[str]) -> str:
    """``"preprocessing"``, ``"preprocessing and split"``, ``"a, b and c"``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def check_seal(
    recorded_text: str, parts: dict[str, bytes], name: str, entry: str, error: type[Exception]
) -> None:
    """Check the seal ``recorded_text`` (its JSON) of file ``name`` against ``parts``.

    Raises:
        error: the ``entry`` holding the seal is not a seal (corrupt or edited file), or the parts it
            names changed since it was written.
    """
    try:
        recorded = json.loads(recorded_text)
    except json.JSONDecodeError:
        recorded = None
    changed = changed_parts(recorded, parts)
    if changed is None:
        raise error(f"{name}: its {entry} is not a blmkd seal (corrupt or edited file)")
    if changed:
        raise error(
            f"{name}: {describe(changed)} changed since it was exported (digest mismatch); the file was edited or is corrupt"
        )
