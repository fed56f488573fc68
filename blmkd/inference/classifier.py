"""An artifact ready to classify the windows of a scene tile, in the fastest way its runtime allows.

Ways to classify a tile (``mode``):

* ``patch`` (any artifact: checkpoint, ONNX, TensorRT): gather the ``(N, bands, P, P)`` windows and
  run the model on them, as in training and evaluation.
* ``encode`` (PyTorch students with a per-pixel byte encoder): run the encoder once on the whole
  tile (:meth:`BLMStudent.encode`), gather ``(N, d_model, P, P)`` windows of the latent image and
  classify them with :meth:`BLMStudent.forward_latent`. Each pixel is encoded once instead of up to
  P² times; the result equals the patch path up to float rounding (tested).
* ``encode-ort``: the same, and more computed once per pixel: the first Mamba block's LayerNorm,
  in-projection and gate mix no tokens, so :meth:`BLMStudent.pixel_features` runs them on the whole
  latent tile too. The windows of those features, gathered straight into the model's scan order
  (``np.take``), are classified by ONNX Runtime running a graph of :meth:`BLMStudent.forward_tokens`
  exported when the classifier is opened (and checked against PyTorch), on small batches in
  parallel worker threads. About 3x faster than PyTorch on a CPU for the small matmuls of a
  student, and 1.06-1.16x faster than gathering latents alone (single thread, side by side,
  measured in two runs). ``auto`` picks it for PyTorch students on a CPU and says so in
  ``SceneClassifier.note`` if it has to use ``encode`` instead.
* ``encode-c`` (C exports, ``blmkd export --c``; ``auto`` for them): the same split in the compiled
  kernel: ``blm_pixels`` computes each pixel's latent and first-block features once per tile, the
  windows are gathered in scan order as for ``encode-ort`` and ``blm_tokens`` classifies them, in
  worker threads (the kernel is re-entrant and ``ctypes`` releases the GIL).
"""

from __future__ import annotations

import contextlib
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from blmkd.data.preprocess import Preprocessing
from blmkd.errors import BlmkdError, ModelError
from blmkd.inference.artifacts import open_runner
from blmkd.inference.latent import (
    ENCODE_CHUNK_BYTES,
    GPU_BATCH,
    LatentGraphError,
    encode_tile,
    latent_sessions,
    window_logits_torch,
)

MODES = ("auto", "encode", "encode-ort", "encode-c", "patch")


@dataclass
class SceneClassifier:
    """An artifact ready to classify tiles.

    Attributes:
        runner: the :class:`~blmkd.inference.base.Runner` of the artifact.
        mode: ``"encode"`` (student: encoder once per tile, windows in PyTorch), ``"encode-ort"``
            (encoder and first-block prefix once per tile, windows in ONNX Runtime through a graph of
            ``forward_tokens`` exported on the fly and checked against PyTorch) or ``"patch"``
            (per-window inference).
        patch_size, prep, input_kind: how its inputs are made (from the artifact's metadata).
        class_ids, class_names: the classes of its outputs, in output order.
        workers: threads running batches concurrently (``encode-ort``, one ORT thread each; ``encode-c``).
        note: why ``auto`` chose a slower path than it could, where it did.
    """

    runner: object
    mode: str
    patch_size: int
    prep: Preprocessing
    input_kind: str
    class_ids: list[int]
    class_names: list[str]
    workers: int = 1
    note: str = ""
    sessions: list = field(default_factory=list)  # `encode-ort`: one ONNX Runtime session per worker

    @property
    def session(self):
        """The first ``encode-ort`` session (``None`` in the other modes)."""
        return self.sessions[0] if self.sessions else None

    @property
    def name(self) -> str:
        return self.runner.name

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    @property
    def label(self) -> str:
        """``blm_s · onnxruntime int8``: model, runtime and precision."""
        meta = self.runner.meta
        return f"{meta.get('model', self.name)} · {getattr(self.runner, 'backend', '')} {meta.get('precision', 'fp32')}"

    @property
    def default_batch(self) -> int:
        # ONNX Runtime is fastest on small batches here (the (N, H, L, L) SSM decay matrices of
        # 64 windows stay in L2); so is the C kernel's window path (the gathered windows stay in
        # cache); PyTorch pays ~0.3 ms per call and chunks big batches itself.
        small = (
            self.mode in ("encode-ort", "encode-c") or getattr(self.runner, "backend", "") == "onnxruntime"
        )
        if not str(getattr(self.runner, "device", "cpu")).startswith("cpu"):
            return GPU_BATCH  # a GPU wants big launches: one call per 16,384 windows
        return 64 if small else 256

    @classmethod
    def from_runner(cls, runner, mode: str = "auto", threads: int | None = None) -> SceneClassifier:
        """Wrap an open runner.

        ``mode="auto"`` picks ``encode-ort`` for PyTorch students on CPU (``encode`` on CUDA, or where
        the latent graph cannot be exported; ``note`` says so), ``encode-c`` for C exports, else
        ``patch``.
        """
        if mode not in MODES:
            raise BlmkdError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        meta = runner.meta
        if not meta.get("preprocessing"):
            raise ModelError(
                f"{runner.name}: its metadata has no preprocessing; cannot prepare scene pixels for it"
            )
        patch = int(meta.get("patch_size") or 0)
        if patch < 1:
            raise ModelError(f"{runner.name}: its metadata has no patch size")
        model = getattr(runner, "model", None)
        can_encode = model is not None and hasattr(model, "encode") and hasattr(model, "forward_latent")
        if mode in ("encode", "encode-ort") and not can_encode:
            raise BlmkdError(
                f"{runner.name}: --mode {mode} needs a PyTorch student checkpoint with a per-pixel encoder"
            )
        can_encode_c = hasattr(runner, "pixel_features") and hasattr(runner, "run_tokens")  # a C export
        if mode == "encode-c" and not can_encode_c:
            raise BlmkdError(
                f"{runner.name}: --mode encode-c needs a C export of a student (blmkd export --c)"
            )
        on_cpu = str(getattr(runner, "device", "cpu")).startswith("cpu")
        if mode == "encode-ort" and not on_cpu:
            raise BlmkdError("--mode encode-ort runs on the CPU; use --mode encode on CUDA")
        classes = meta.get("classes") or []
        ids = [int(c["id"]) for c in classes] or list(range(1, int(meta.get("num_classes", 0)) + 1))
        names = [str(c["name"]) for c in classes] or [f"class {i}" for i in ids]
        requested = mode
        if mode == "auto":
            mode = (
                "encode-c"
                if can_encode_c
                else ("encode-ort" if on_cpu else "encode")
                if can_encode
                else "patch"
            )
        clf = cls(
            runner, mode, patch, Preprocessing.from_dict(meta["preprocessing"]), runner.input_kind, ids, names
        )
        if mode == "encode-c":
            clf.workers = max(1, threads or runner.threads)
        if mode == "encode-ort":
            clf.workers = max(1, threads or torch.get_num_threads())
            try:
                clf.sessions = latent_sessions(model, patch, clf.workers)
            except LatentGraphError as exc:
                if requested == "encode-ort":
                    raise
                clf.mode, clf.workers, clf.note = (
                    "encode",
                    1,
                    f"encode-ort unavailable ({exc}); windows run in PyTorch",
                )
        return clf

    def classify(
        self, x: np.ndarray, rows: np.ndarray, cols: np.ndarray, batch: int | None = None
    ) -> np.ndarray:
        """Logits ``(N, K)`` of the windows of tile ``x`` (from :func:`tile_input`) at ``(rows, cols)``,
        tile-local coordinates of the unpadded pixels."""
        batch = batch or self.default_batch
        if len(rows) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        if self.mode.startswith("encode"):
            return self._classify_encoded(x, rows, cols, batch)
        return self._classify_patches(x, rows, cols, batch)

    def _classify_patches(self, x, rows, cols, batch) -> np.ndarray:
        p = self.patch_size
        xc = np.ascontiguousarray(np.moveaxis(x, 2, 0))  # (B, h + 2r, W + 2r)
        win = sliding_window_view(xc, (p, p), axis=(1, 2)).transpose(1, 2, 0, 3, 4)  # (h, W, B, P, P) view
        out = [
            self.runner.run(win[rows[i : i + batch], cols[i : i + batch]]) for i in range(0, len(rows), batch)
        ]
        return np.concatenate(out).astype(np.float32, copy=False)

    def _pixel_features(self, lat) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`BLMStudent.pixel_features` of a latent tile ``(hp, wp, d)``, as two contiguous
        ``(hp·wp, d_inner)`` numpy arrays (``np.take`` copies a non-contiguous source whole), computed
        in row chunks into them (no full-size intermediates)."""
        model = self.runner.model
        hp, wp, _ = lat.shape
        outs = tuple(np.empty((hp * wp, model.pixel_feature_dim), np.float32) for _ in range(2))
        step = max(1, ENCODE_CHUNK_BYTES // (wp * 2 * model.pixel_feature_dim * 4))
        with torch.inference_mode():
            for r0 in range(0, hp, step):
                for out, f in zip(
                    outs, model.pixel_features(lat[r0 : r0 + step])
                ):  # (rows, wp, d_inner) each
                    out[r0 * wp : (r0 + f.shape[0]) * wp] = f.reshape(-1, f.shape[-1]).numpy()
        return outs

    def _classify_encoded(self, x, rows, cols, batch) -> np.ndarray:
        p = self.patch_size
        if self.mode == "encode-c":  # no torch on this path
            hp, wp, bands = x.shape
            feats = self.runner.pixel_features(x.reshape(hp * wp, bands))  # (hp·wp, ·) × 3
            return self._classify_tokens(
                feats, self.runner.scan_order, wp, rows, cols, batch, self.runner.run_tokens
            )
        lat = encode_tile(self.runner.model, x, self.runner.device)  # (hp, wp, d)
        hp, wp, d = lat.shape
        shape = (hp - p + 1, wp - p + 1, p, p, d)
        if lat.device.type != "cpu":
            return window_logits_torch(self.runner.model, lat, rows, cols, p, batch).cpu().numpy()
        if self.session is not None:
            feats = (lat.reshape(hp * wp, d).numpy(), *self._pixel_features(lat))  # (hp·wp, ·) × 3
            # Each worker runs its own session: two threads calling one session contend inside ORT
            # (2-core AMD EPYC, 2026-12-02: ORT alone on pre-gathered windows 27.0 vs 22.2 µs per window,
            # one shared vs one each; a whole Indian Pines map 1.03x, medians of 15 interleaved).
            free = queue.SimpleQueue()
            for sess in self.sessions:
                free.put(sess)

            def tokens(h, x, z) -> np.ndarray:
                sess = free.get()
                try:
                    return sess.run(None, {"h": h, "x": x, "z": z})[0]  # (n, K)
                finally:
                    free.put(sess)

            return self._classify_tokens(
                feats, self.runner.model.scan_order(p), wp, rows, cols, batch, tokens
            )
        # On the CPU numpy gathers the channels-last windows ~8x faster than torch indexing.
        lat_np = lat.numpy()
        s = lat_np.strides
        win = np.lib.stride_tricks.as_strided(lat_np, shape, (s[0], s[1], s[0], s[1], s[2]), writeable=False)

        def run(i: int) -> np.ndarray:
            hb = win[rows[i : i + batch], cols[i : i + batch]]  # (n, P, P, d) contiguous copy
            with torch.inference_mode():
                return (
                    self.runner.model.forward_latent(torch.from_numpy(hb).permute(0, 3, 1, 2)).float().numpy()
                )

        return self._over_batches(run, len(rows), batch)

    def _classify_tokens(self, feats, order, wp: int, rows, cols, batch: int, tokens) -> np.ndarray:
        """Windows of per-pixel features ``feats = (h, x, z)``, each ``(hp·wp, ·)`` over the tile,
        gathered straight into scan ``order`` (raster indices in the window) and classified by
        ``tokens(h, x, z)`` on ``(n, L, ·)`` batches."""
        p = self.patch_size
        order = np.asarray(order)
        offsets = (order // p) * wp + order % p  # (L,) flat offsets of a window's tokens, scan order
        starts_flat = np.asarray(rows, np.int64) * wp + np.asarray(cols, np.int64)  # (N,)

        def run(i: int) -> np.ndarray:
            idx = starts_flat[i : i + batch, None] + offsets  # (n, L)
            return tokens(*(np.take(a, idx, axis=0) for a in feats))  # (n, K)

        return self._over_batches(run, len(rows), batch)

    def _over_batches(self, run, n: int, batch: int) -> np.ndarray:
        """``run(i)`` for the batches starting at ``0, batch, ...`` below ``n``, on ``workers`` threads
        (ONNX Runtime and the C kernel release the GIL while they run), concatenated."""
        starts = range(0, n, batch)
        if self.workers > 1:
            # C exports keep their scratch on the thread's stack: size the workers' for it
            stack = getattr(self.runner, "thread_stack", contextlib.nullcontext)
            with ThreadPoolExecutor(self.workers) as pool, stack():
                out = list(pool.map(run, starts))
        else:
            out = [run(i) for i in starts]
        return np.concatenate(out).astype(np.float32, copy=False)


def open_classifier(
    path: str | Path, *, device: str = "cpu", threads: int | None = None, mode: str = "auto"
) -> SceneClassifier:
    """Open a checkpoint, ONNX file or engine for scene mapping (see :func:`open_runner`)."""
    return SceneClassifier.from_runner(open_runner(path, device=device, threads=threads), mode, threads)
