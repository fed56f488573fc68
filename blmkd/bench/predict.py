"""Full-scene classification maps, streamed in row tiles so that memory stays bounded.

The scene is read ``tile`` rows at a time with ``P // 2`` halo rows above and below (reflected at the
scene's top and bottom edge, as ``np.pad(mode="reflect")`` does), preprocessed (bytes for students,
standardized floats for teachers), padded by reflection left and right, and classified; the next
tile starts from the file again. Preprocessing is per pixel, so a tile's windows are exactly the
windows of :class:`blmkd.data.patches.PatchExtractor` on the once-padded scene. A memory-mapped cube
has its pages dropped from the process after every tile (``madvise(MADV_DONTNEED)``; the page cache
keeps them), so the resident set does not grow with the scene either.

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
import mmap
import queue
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blmkd.data.patches import check_patch_size
from blmkd.data.preprocess import Preprocessing
from blmkd.errors import BlmkdError, DataError, ModelError

MODES = ("auto", "encode", "encode-ort", "encode-c", "patch")
MAP_SUFFIXES = (".png", ".npy", ".tif", ".tiff")
_ENCODE_CHUNK_BYTES = 32 << 20  # float input of the encoder per call


# ----------------------------------------------------------------------------------------------
# Reading the scene in tiles


def release_pages(cube) -> bool:
    """Drop the pages of a memory-mapped cube from this process (they stay in the page cache).

    Returns False for an in-memory array or a copy-on-write map (whose pages may hold changes).
    """
    a = cube
    while a is not None:
        mm = a if isinstance(a, mmap.mmap) else getattr(a, "_mmap", None)
        if isinstance(mm, mmap.mmap):
            if getattr(a, "mode", "r") == "c" or not hasattr(mm, "madvise"):
                return False
            mm.madvise(mmap.MADV_DONTNEED)
            return True
        a = getattr(a, "base", None)
    return False


def reflect_index(start: int, stop: int, size: int) -> np.ndarray:
    """Indices ``start..stop-1`` into an axis of ``size``, reflected at both ends without repeating
    the edge (``np.pad(mode="reflect")``); valid for overhangs of at most ``size - 1``."""
    i = np.abs(np.arange(start, stop))
    return np.where(i > size - 1, 2 * (size - 1) - i, i)


def tile_input(cube, prep: Preprocessing, input_kind: str, r0: int, r1: int, radius: int) -> np.ndarray:
    """Preprocessed rows ``r0 - radius .. r1 + radius`` of ``cube``, reflect-padded by ``radius`` columns.

    Returns:
        ``(r1 - r0 + 2r, W + 2r, bands)`` uint8 bytes (``input_kind == "uint8"``) or float32.
    """
    h = cube.shape[0]
    idx = reflect_index(r0 - radius, r1 + radius, h)
    s0, s1 = int(idx.min()), int(idx.max()) + 1
    block = cube[s0:s1]  # a view: a memmap is read block by block by the preprocessing
    y = prep.to_bytes(block) if input_kind == "uint8" else prep.standardize(block)
    if not np.array_equal(idx, np.arange(s0, s1)):
        y = y[idx - s0]  # halo rows reflected at the top or bottom edge
    return np.pad(y, ((0, 0), (radius, radius), (0, 0)), mode="reflect")


# ----------------------------------------------------------------------------------------------
# Classifiers


@dataclass
class SceneClassifier:
    """An artifact ready to classify tiles.

    Attributes:
        runner: the :class:`blmkd.export.runtime.Runner` of the artifact.
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
            import torch

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
        from numpy.lib.stride_tricks import sliding_window_view

        p = self.patch_size
        xc = np.ascontiguousarray(np.moveaxis(x, 2, 0))  # (B, h + 2r, W + 2r)
        win = sliding_window_view(xc, (p, p), axis=(1, 2)).transpose(1, 2, 0, 3, 4)  # (h, W, B, P, P) view
        out = [
            self.runner.run(win[rows[i : i + batch], cols[i : i + batch]]) for i in range(0, len(rows), batch)
        ]
        return np.concatenate(out).astype(np.float32, copy=False)

    def encode_tile(self, x: np.ndarray):
        """The ``(h + 2r, W + 2r, d_model)`` latent image of a tile, channels last (a torch tensor
        on the runner's device)."""
        import torch

        model, dev = self.runner.model, self.runner.device
        hp, wp, bands = x.shape
        # The encoder's token form reads the channels-last tile as (pixels, bands) rows: one GEMM per
        # layer, ~6x faster on a CPU than its 1x1 convolutions on the same pixels, and the very
        # computation the per-patch forward does. Students without it are encoded with `encode`.
        tokens = getattr(getattr(model, "encoder", None), "tokens", None)
        dequant = (
            (model.in_scale, model.in_offset)
            if x.dtype == np.uint8 and hasattr(model, "in_scale")
            else (None, None)
        )
        lat = None
        with torch.inference_mode():
            # Encode in row chunks: the encoder's float copy of the input stays ~32 MB.
            step = max(1, _ENCODE_CHUNK_BYTES // (wp * bands * 4))
            for c0 in range(0, hp, step):
                xin = (
                    torch.from_numpy(x[c0 : c0 + step]).to(dev).permute(2, 0, 1)[None]
                )  # (1, B, rows, Wp) view
                rows = xin.shape[2]
                if tokens is not None:
                    z = tokens(xin, *dequant).reshape(rows, wp, -1)  # (rows, Wp, d_model)
                else:
                    z = model.encode(xin)[0].permute(1, 2, 0)  # (rows, Wp, d_model)
                if lat is None:
                    lat = torch.empty((hp, wp, z.shape[-1]), dtype=torch.float32, device=z.device)
                lat[c0 : c0 + step] = z
        return lat

    def _pixel_features(self, lat) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`BLMStudent.pixel_features` of a latent tile ``(hp, wp, d)``, as two contiguous
        ``(hp·wp, d_inner)`` numpy arrays (``np.take`` copies a non-contiguous source whole), computed
        in row chunks into them (no full-size intermediates)."""
        import torch

        model = self.runner.model
        hp, wp, _ = lat.shape
        outs = tuple(np.empty((hp * wp, model.pixel_feature_dim), np.float32) for _ in range(2))
        step = max(1, _ENCODE_CHUNK_BYTES // (wp * 2 * model.pixel_feature_dim * 4))
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
        import torch

        lat = self.encode_tile(x)  # (hp, wp, d)
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
            from concurrent.futures import ThreadPoolExecutor

            # C exports keep their scratch on the thread's stack: size the workers' for it
            stack = getattr(self.runner, "thread_stack", contextlib.nullcontext)
            with ThreadPoolExecutor(self.workers) as pool, stack():
                out = list(pool.map(run, starts))
        else:
            out = [run(i) for i in starts]
        return np.concatenate(out).astype(np.float32, copy=False)


GPU_BATCH = 16384  # windows per call of the GPU map path (SceneClassifier.default_batch on CUDA)


def window_logits_torch(model, lat, rows, cols, patch: int, batch: int = GPU_BATCH, forward=None):
    """Logits ``(N, K)`` float32, on ``lat``'s device, of the ``P×P`` windows of an encoded tile
    ``lat (hp, wp, d_model)`` whose top-left corners are ``(rows, cols)``.

    Each batch of windows is one gather from the flat latent image straight into scan order,
    ``(n, L, d_model)`` tokens, classified by ``forward`` (default :meth:`BLMStudent.forward_scanned`):
    no ``(n, P, P, d)`` intermediate and no reorder of the tokens. A given ``forward`` (e.g. a
    ``torch.compile(..., dynamic=False)`` of it) always sees ``batch`` windows: the last batch is
    padded, so one compiled shape serves the whole scene.
    """
    import torch

    hp, wp, d = lat.shape
    dev = lat.device
    order = torch.tensor(model.scan_order(patch), device=dev)  # (L,) raster indices in scan order
    offsets = (order // patch) * wp + order % patch  # (L,) flat offsets of a window's tokens
    r, c = (
        a.to(dev, torch.int64)
        if isinstance(a, torch.Tensor)
        else torch.from_numpy(np.asarray(a, np.int64)).to(dev)
        for a in (rows, cols)
    )
    starts = r * wp + c  # (N,) flat index of each window's top-left token
    flat = lat.reshape(hp * wp, d)  # (hp·wp, d) view
    fwd = forward or model.forward_scanned
    out = []
    with torch.inference_mode():
        for i in range(0, len(starts), batch):
            idx = starts[i : i + batch]  # (n,)
            n = len(idx)
            if forward is not None and n < batch:  # one shape for a compiled forward: pad the last batch
                idx = torch.cat([idx, idx.new_zeros(batch - n)])
            out.append(fwd(flat[idx[:, None] + offsets])[:n].float())  # (n, K)
    return torch.cat(out) if out else torch.zeros((0, model.config.num_classes), device=dev)


def map_bytes_torch(model, cube, patch: int, *, tile: int = 256, batch: int = 65536, forward=None):
    """``(H, W)`` class indices (int64, on the GPU) of a whole byte scene ``cube (H, W, bands)``, a
    uint8 tensor already on the student's device: the GPU map path with no host round trip.

    The scene travels as bytes (uploaded once, a quarter of its float size); per tile of rows it
    is reflect-padded by index (the windows :func:`predict_scene` makes), dequantized and encoded
    once per pixel, and its windows are classified by :func:`window_logits_torch`. Wrap the call in
    ``torch.autocast`` for BF16/FP16.
    """
    import torch

    h, w, _ = (int(v) for v in cube.shape)
    r = check_patch_size(patch, h, w) // 2
    dev = cube.device
    cidx = torch.from_numpy(reflect_index(-r, w + r, w)).to(dev)  # (W + 2r,)
    pred = torch.empty((h, w), dtype=torch.int64, device=dev)
    with torch.inference_mode():
        for r0 in range(0, h, tile):
            r1 = min(h, r0 + tile)
            ridx = torch.from_numpy(reflect_index(r0 - r, r1 + r, h)).to(dev)  # (rows + 2r,)
            x = cube.index_select(0, ridx).index_select(1, cidx)  # (rows + 2r, W + 2r, bands) uint8
            hp, wp, bands = x.shape
            lat = model.encoder.tokens(
                x.permute(2, 0, 1)[None], model.in_scale, model.in_offset
            )  # (1, hp·wp, d)
            lat = lat.reshape(hp, wp, -1)  # (hp, wp, d_model)
            rr = torch.arange(r1 - r0, device=dev).repeat_interleave(w)  # (rows·W,)
            cc = torch.arange(w, device=dev).repeat(r1 - r0)  # (rows·W,)
            lg = window_logits_torch(model, lat, rr, cc, patch, batch, forward)  # (rows·W, K)
            pred[r0:r1] = lg.argmax(1).view(r1 - r0, w)
    return pred


class LatentGraphError(BlmkdError):
    """The ``forward_tokens`` graph of a student could not be exported or does not match PyTorch."""


def latent_sessions(model, patch_size: int, n: int = 1, atol: float = 1e-4) -> list:
    """``n`` ONNX Runtime sessions (one intra-op thread each) of ``model.forward_tokens`` on windows of the
    latents ``h (N, P², d_model)`` and of the two :meth:`BLMStudent.pixel_features` ``x, z (N, P², d_inner)``
    in scan order (separate inputs, so that the graph slices nothing), exported now and checked
    against PyTorch on random features.

    Raises:
        LatentGraphError: the export fails or its logits differ from PyTorch by more than ``atol``
            (relative to the logits' scale).
    """
    import tempfile
    import warnings

    import torch

    from blmkd.export.runtime import ort_session

    if not (hasattr(model, "pixel_features") and hasattr(model, "forward_tokens")):
        raise LatentGraphError(f"{type(model).__name__} has no pixel_features/forward_tokens token form")

    class _Tokens(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, h, x, z):  # (N, L, d), (N, L, d_inner) × 2 → (N, K)
            return self.m.forward_tokens(h, x, z)

    gen = torch.Generator().manual_seed(0)
    L = patch_size * patch_size
    names = ["h", "x", "z"]
    widths = [model.config.d_model, model.pixel_feature_dim, model.pixel_feature_dim]
    probe = tuple(torch.randn(64, L, w, generator=gen) for w in widths)
    wrapper = _Tokens(model).eval()
    with tempfile.TemporaryDirectory(prefix="blmkd-latent-") as tmp:
        path = Path(tmp) / "latent.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
                torch.onnx.export(wrapper, tuple(t[:2] for t in probe), str(path), opset_version=17, dynamo=False,
                                  input_names=names, output_names=["logits"],
                                  dynamic_axes={**{k: {0: "n"} for k in names}, "logits": {0: "n"}})  # fmt: skip
        except Exception as exc:  # the exporter raises many types
            raise LatentGraphError(
                f"cannot export forward_tokens to ONNX ({type(exc).__name__}: {exc})"
            ) from None
        graph = path.read_bytes()
    sessions = [ort_session(graph, threads=1, inter_op_num_threads=1) for _ in range(max(1, n))]
    with torch.inference_mode():
        ref = wrapper(*probe).numpy()
    got = sessions[0].run(None, {k: t.numpy() for k, t in zip(names, probe)})[0]
    err = float(np.abs(got - ref).max())
    if not err <= atol * max(1.0, float(np.abs(ref).max())):
        raise LatentGraphError(f"the ONNX latent graph differs from PyTorch by {err:.2e}")
    return sessions


def open_classifier(
    path: str | Path, *, device: str = "cpu", threads: int | None = None, mode: str = "auto"
) -> SceneClassifier:
    """Open a checkpoint, ONNX file or engine for scene mapping (see :func:`open_runner`)."""
    return SceneClassifier.from_runner(open_runner(path, device=device, threads=threads), mode, threads)


def open_runner(path: str | Path, *, device: str = "cpu", threads: int | None = None):
    """A :class:`blmkd.export.runtime.Runner` on ``device``: PyTorch for checkpoints, ONNX Runtime
    with the matching execution provider for ONNX files, TensorRT for engines, the compiled library
    of a C export (CPU only).

    Raises:
        BlmkdError: a missing file, or a device this machine does not have.
    """
    from blmkd.export.runtime import C_SUFFIXES, CHECKPOINT_SUFFIXES, ONNX_SUFFIXES, open_artifact

    p = Path(path)
    if not p.exists():
        raise ModelError(f"model not found: {p}")
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise BlmkdError(f"--device must be cpu, cuda or cuda:N, not {device!r}")
    if device.startswith("cuda"):
        from blmkd.bench.machine import cuda_status

        ok, why = cuda_status()
        if not ok:
            raise BlmkdError(f"--device cuda: {why}")
    if p.is_dir() or p.suffix.lower() in CHECKPOINT_SUFFIXES:
        return open_artifact(p, device=device)
    if p.suffix.lower() in C_SUFFIXES:
        if device.startswith("cuda"):
            raise BlmkdError(f"{p.name} is a C export; it runs on the CPU (--device cpu)")
        return open_artifact(p, threads=threads or 0)
    if p.suffix.lower() in ONNX_SUFFIXES:
        import onnxruntime as ort

        want = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
        if want not in ort.get_available_providers():
            raise BlmkdError(
                f"ONNX Runtime here has no {want} (it has {', '.join(ort.get_available_providers())})"
            )
        return open_artifact(p, providers=[want], threads=threads or 0)
    return open_artifact(p)


# ----------------------------------------------------------------------------------------------
# The scene loop


@dataclass
class SceneMap:
    """A classified scene.

    Attributes:
        pred: ``(H, W)`` int16 class indices, -1 where no pixel was classified (masked).
        pixels: pixels classified.
        seconds: wall time of the whole loop (reading, preprocessing, inference).
        mode, tile, batch: how it was made.
        logits: ``(H, W, K)`` float32 where asked for (tests), else None.
    """

    pred: np.ndarray
    pixels: int
    seconds: float
    mode: str
    tile: int
    batch: int
    logits: np.ndarray | None = None

    @property
    def px_per_s(self) -> float:
        return self.pixels / self.seconds if self.seconds > 0 else float("inf")


def predict_scene(
    clf: SceneClassifier,
    cube,
    *,
    tile: int = 256,
    batch: int | None = None,
    mask: np.ndarray | None = None,
    return_logits: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SceneMap:
    """Classify every pixel of ``cube`` (``(H, W, bands)``, a np.memmap is fine) in row tiles.

    Args:
        clf: the classifier (:func:`open_classifier`).
        cube: the raw scene, in the file's values; it is preprocessed here with the artifact's own
            statistics.
        tile: rows per tile (memory grows linearly with it; the result does not depend on it).
        batch: windows per model call (default: what suits the runtime, 64 for ONNX Runtime and
            256 for PyTorch).
        mask: ``(H, W)`` bool, classify only these pixels (the rest is -1).
        return_logits: also return the ``(H, W, K)`` logits (small scenes only).
        progress: ``progress(rows_done, rows_total)`` after each tile.
    """
    if cube.ndim != 3:
        raise DataError(f"scene cube must be (H, W, bands), got shape {tuple(cube.shape)}")
    h, w, bands = (int(s) for s in cube.shape)
    if bands != clf.prep.bands:
        raise ModelError(f"{clf.name} takes {clf.prep.bands} bands but the scene has {bands}")
    batch = batch or clf.default_batch
    if tile < 1 or batch < 1:
        raise BlmkdError("--tile and --batch must be at least 1")
    if mask is not None and mask.shape != (h, w):
        raise DataError(f"mask {mask.shape} does not match the scene ({h}, {w})")
    p = check_patch_size(clf.patch_size, h, w)
    r = p // 2
    pred = np.full((h, w), -1, dtype=np.int16)
    logits = np.zeros((h, w, clf.num_classes), np.float32) if return_logits else None
    release_pages(cube)  # whatever loading the scene touched
    n = 0
    t0 = time.perf_counter()
    for r0 in range(0, h, tile):
        r1 = min(h, r0 + tile)
        sel = np.ones((r1 - r0, w), bool) if mask is None else np.asarray(mask[r0:r1], bool)
        rows, cols = np.nonzero(sel)
        if len(rows):
            x = tile_input(cube, clf.prep, clf.input_kind, r0, r1, r)
            release_pages(cube)  # the raw rows are no longer needed once preprocessed
            lg = clf.classify(x, rows, cols, batch)
            del x
            pred[r0 + rows, cols] = lg.argmax(1)
            if logits is not None:
                logits[r0 + rows, cols] = lg
            n += len(rows)
        release_pages(cube)
        if progress:
            progress(r1, h)
    return SceneMap(pred, n, time.perf_counter() - t0, clf.mode, tile, batch, logits)


def predict_patches_ref(clf: SceneClassifier, cube, batch: int = 1024) -> np.ndarray:
    """Slow, obvious reference: every pixel's window from the once-padded scene, run per patch.

    Returns the ``(H, W, K)`` logits (small scenes only; the whole preprocessed cube is in memory).
    """
    from blmkd.data.patches import PatchExtractor

    x = clf.prep.to_bytes(cube) if clf.input_kind == "uint8" else clf.prep.standardize(cube)
    ex = PatchExtractor(x, clf.patch_size)
    h, w = cube.shape[:2]
    rows, cols = np.divmod(np.arange(h * w), w)
    out = [
        clf.runner.run(ex.gather(rows[i : i + batch], cols[i : i + batch]).numpy())
        for i in range(0, h * w, batch)
    ]
    return np.concatenate(out).reshape(h, w, -1)


# ----------------------------------------------------------------------------------------------
# Writing maps


def class_colors(k: int) -> np.ndarray:
    """``(k, 3)`` RGB in [0, 1]: tab20 and tab20b/c first (distinct), then evenly spaced hues."""
    import matplotlib

    cols = [matplotlib.colormaps[name](i)[:3] for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    if k > len(cols):
        import colorsys

        cols += [colorsys.hsv_to_rgb(i / (k - len(cols)), 0.8, 0.9) for i in range(k - len(cols))]
    return np.asarray(cols[:k], dtype=np.float64)


def to_class_ids(pred: np.ndarray, class_ids: list[int]) -> np.ndarray:
    """Class indices → original ground-truth ids (0 where ``pred`` is -1), in the smallest unsigned dtype."""
    lut = np.asarray([0, *class_ids], dtype=np.int64)
    dtype = np.uint8 if lut.max() < 256 else (np.uint16 if lut.max() < 65536 else np.uint32)
    return lut[pred.astype(np.int64) + 1].astype(dtype)


def rgb_map(pred: np.ndarray, k: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 image of class indices; -1 is black."""
    lut = np.vstack([np.zeros((1, 3)), class_colors(k)])
    return np.rint(255 * lut).astype(np.uint8)[pred.astype(np.intp) + 1]


def legend_handles(class_ids: list[int], class_names: list[str]):
    from matplotlib.patches import Patch

    colors = class_colors(len(class_ids))
    return [
        Patch(facecolor=colors[i], edgecolor="none", label=f"{cid} {name}")
        for i, (cid, name) in enumerate(zip(class_ids, class_names))
    ]


def check_map_path(path: str | Path) -> Path:
    """Refuse an output whose suffix is not a map format, or a GeoTIFF without rasterio (before any work)."""
    p = Path(path)
    suf = p.suffix.lower()
    if suf not in MAP_SUFFIXES:
        raise BlmkdError(f"{p.name}: map output must end in {', '.join(MAP_SUFFIXES)}")
    if suf in (".tif", ".tiff"):
        try:
            import rasterio  # noqa: F401
        except ImportError:
            raise BlmkdError(
                f"{p.name}: writing GeoTIFF needs rasterio (pip install 'blmkd[geo]'); use .png or .npy"
            ) from None
    return p


def write_map(
    path: str | Path, pred: np.ndarray, class_ids: list[int], class_names: list[str], title: str = ""
) -> Path:
    """Write a map by suffix: ``.npy`` original class ids, ``.png`` colour map with legend, ``.tif`` GeoTIFF."""
    from blmkd.io import atomic_path

    p = check_map_path(path)
    suf = p.suffix.lower()
    if suf == ".npy":
        with atomic_path(p, suffix=".npy") as tmp:
            np.save(tmp, to_class_ids(pred, class_ids))
    elif suf == ".png":
        _write_png(p, pred, class_ids, class_names, title)
    else:
        _write_geotiff(p, to_class_ids(pred, class_ids))
    return p


def _write_png(path: Path, pred: np.ndarray, class_ids, class_names, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from blmkd.io import atomic_path

    side = max(pred.shape)
    if side > 2000:  # nearest-neighbour subsampling: a display map; the .npy keeps every pixel
        step = -(-side // 2000)
        pred = pred[::step, ::step]
    h, w = pred.shape
    scale = min(2000, max(600, max(h, w))) / max(h, w)  # long side 600..2000 px at 100 dpi
    img_w, img_h = w * scale / 100, h * scale / 100  # inches
    ncol = 1 if len(class_ids) <= 24 else 2
    legend_w, top = 2.6 * ncol, 0.35 if title else 0.05
    fig_w, fig_h = img_w + legend_w, max(img_h + top, 0.2 * len(class_ids) / ncol + 0.6)
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=100)
    ax = fig.add_axes((0.0, (fig_h - top - img_h) / fig_h, img_w / fig_w, img_h / fig_h))
    ax.imshow(rgb_map(pred, len(class_ids)), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.legend(handles=legend_handles(class_ids, class_names), loc="center left",
               bbox_to_anchor=(img_w / fig_w + 0.01, 0.5), fontsize=7, frameon=False, ncol=ncol)  # fmt: skip
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _write_geotiff(path: Path, ids: np.ndarray) -> None:
    import rasterio

    from blmkd.io import atomic_path

    with atomic_path(path, suffix=".tif") as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", height=ids.shape[0], width=ids.shape[1], count=1,
                           dtype=str(ids.dtype), nodata=0, compress="deflate") as dst:  # fmt: skip
            dst.write(ids, 1)


def load_scene_for_map(scene: str, gt: str | None = None):
    """``(cube, labels or None, name, class_ids or None)`` of a registry name or a file; a ``.npy``
    without ``--gt`` is a bare cube (a .npy file holds one array, so it cannot carry ground truth)."""
    from blmkd.data import load_scene

    p = Path(scene)
    if gt is None and p.suffix.lower() == ".npy" and p.is_file():
        try:
            cube = np.load(p, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{p}: not a readable .npy cube ({exc})") from None
        if cube.ndim != 3:
            raise DataError(f"{p}: a cube must be (H, W, bands), got shape {cube.shape}")
        return cube, None, p.stem, None
    s = load_scene(scene, gt)
    return s.cube, s.labels, s.name, list(s.class_ids)
