"""ONNX files in ONNX Runtime, opened with blmkd's session settings and checked against their seal."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from onnx.external_data_helper import uses_external_data

from blmkd.errors import ExportError
from blmkd.inference.base import Runner
from blmkd.inference.onnx_meta import load_verified, read_metadata

_UNSEALED_NOTED: set[Path] = set()


def _note_unsealed(path: Path) -> None:
    if path.resolve() not in _UNSEALED_NOTED:
        _UNSEALED_NOTED.add(path.resolve())
        print(
            f"note: {path.name} carries no blmkd seal; its weights and metadata are not verified",
            file=sys.stderr,
        )


#: ONNX Runtime graph rewrites turned off in every session blmkd opens. ``SkipLayerNormFusion``
#: merges a residual Add with the LayerNorm after it; on the students' narrow tokens (d_model 32)
#: the fused CPU kernel is several times slower than the two ops (profiled: 569 µs vs 195 µs per 64
#: patches in the INT8 graph, where quant_pre_process makes the pattern match). With it off, INT8
#: ``blm_s`` went from 0.93x/0.89x/1.10x of FP32 to 1.04x/1.06x/1.12x at batch 1/64/1024 (one thread,
#: side by side); FP32 was unchanged within noise.
ORT_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def ort_session(model, providers: list[str] | None = None, threads: int = 0, **options):
    """An ``onnxruntime.InferenceSession`` of ``model`` (path or bytes) with blmkd's settings:
    ``threads`` intra-op threads (0: ORT's default), quiet logging, :data:`ORT_DISABLED_OPTIMIZERS`;
    ``options`` set further ``SessionOptions`` attributes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # ORT's warnings about unused initializers etc. are not ours to show
    for k, v in options.items():
        setattr(opts, k, v)
    src = str(model) if isinstance(model, (str, Path)) else model
    return ort.InferenceSession(
        src,
        opts,
        providers=providers or ["CPUExecutionProvider"],
        disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS),
    )


class OnnxRunner(Runner):
    """An ONNX file in ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        providers: execution providers; default CUDA where ORT has it, then CPU.
        threads: ``intra_op_num_threads`` (0: ORT's default).
    """

    backend = "onnxruntime"

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        self.name = self.path.name
        model, data, self.sealed = load_verified(self.path)
        if not self.sealed:
            _note_unsealed(self.path)
        if providers is None:
            avail = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        try:
            # the verified bytes, not the path: what runs is what was checked
            self.session = ort_session(
                data if not _has_external_data(model) else self.path, providers, threads
            )
        except Exception as exc:  # ORT raises its own exception types
            raise ExportError(
                f"{self.name}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})"
            ) from None
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_kind = "uint8" if inp.type == "tensor(uint8)" else "float"
        self.meta = read_metadata(dict(self.session.get_modelmeta().custom_metadata_map))

    def run(self, x) -> np.ndarray:
        return self.session.run(None, {self.input_name: self._prepare(x)})[0].astype(np.float32, copy=False)


def _has_external_data(model) -> bool:
    return any(uses_external_data(t) for t in model.graph.initializer)
