"""What every runner is: ``run(x)`` on ``(N, bands, P, P)`` patches → ``(N, K)`` FP32 logits, with ``.meta``.

Every runner carries ``.meta``, the facts the artifact was exported with (classes with their
original ids and names, bands, patch size, preprocessing, input kind, precision, source checkpoint
hash, accuracy at export ...): read from the ONNX ``metadata_props``, the engine's JSON sidecar, the
C file's metadata comment or the checkpoint itself, so that a benchmark or a deployment knows what it is running.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blmkd.errors import ModelError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")
CHECKPOINT_SUFFIXES = (".safetensors",)
C_SUFFIXES = (".c",)


class Runner:
    """Common interface of the runtimes: ``run(x)`` on ``(N, bands, P, P)`` patches → ``(N, K)`` FP32 logits."""

    name: str
    path: Path
    input_kind: str  # "uint8" (students) or "float" (teachers)
    meta: dict
    backend: str

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def _prepare(self, x) -> np.ndarray:
        x = np.asarray(x)
        want = (self.meta.get("bands"), self.meta.get("patch_size"), self.meta.get("patch_size"))
        if x.ndim != 4 or (None not in want and tuple(x.shape[1:]) != want):
            shape = "(N, {}, {}, {})".format(*want) if None not in want else "(N, bands, P, P)"
            raise ModelError(f"{self.name}: expected patches {shape}, got shape {tuple(x.shape)}")
        if self.input_kind == "uint8":
            if x.dtype != np.uint8:
                raise ModelError(f"{self.name} takes uint8 byte patches, got {x.dtype}")
        else:
            x = x.astype(np.float32, copy=False)
        return np.ascontiguousarray(x)

    def run(self, x) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path.name}, {self.backend}, input {self.input_kind})"
