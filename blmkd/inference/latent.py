"""A student's latent image of a tile, its windows in scan order, and the GPU map path.

A byte student encodes each pixel on its own (a per-pixel encoder), so a tile is encoded once
(:func:`encode_tile`) and its ``P×P`` windows are gathered from the latent image straight into the
model's scan order: :func:`window_logits_torch` in PyTorch, :func:`latent_sessions` in ONNX Runtime
(the ``encode-ort`` mode of :class:`blmkd.inference.classifier.SceneClassifier`), and
:func:`map_bytes_torch` for a whole byte scene already on the GPU.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from blmkd.data.patches import check_patch_size
from blmkd.errors import BlmkdError
from blmkd.inference.onnx_runner import ort_session
from blmkd.inference.scene import reflect_index

ENCODE_CHUNK_BYTES = 32 << 20  # float input of the encoder per call


def encode_tile(model, x, device, chunk_bytes: int | None = ENCODE_CHUNK_BYTES):
    """The ``(hp, wp, d_model)`` latent image of a tile ``x (hp, wp, bands)`` (numpy or torch, bytes
    or floats, channels last): a torch tensor on ``device``, each pixel encoded once.

    The encoder's token form reads the channels-last tile as ``(pixels, bands)`` rows: one GEMM per
    layer, ~6x faster on a CPU than its 1x1 convolutions on the same pixels, and the very computation
    the per-patch forward does (byte tiles are dequantized by the model's ``in_scale``/``in_offset``).
    Students without it are encoded with ``encode``. The float input stays about ``chunk_bytes``:
    the tile is encoded in row chunks into one float32 image; ``None`` encodes it in one call and
    returns the encoder's own output (its dtype under ``torch.autocast``).
    """
    hp, wp, bands = x.shape
    tokens = getattr(getattr(model, "encoder", None), "tokens", None)
    is_bytes = x.dtype in (np.uint8, torch.uint8)
    dequant = (model.in_scale, model.in_offset) if is_bytes and hasattr(model, "in_scale") else (None, None)
    step = hp if chunk_bytes is None else max(1, chunk_bytes // (wp * bands * 4))
    lat = None
    with torch.inference_mode():
        for c0 in range(0, hp, step):
            xc = x[c0 : c0 + step]
            xc = torch.from_numpy(xc) if isinstance(xc, np.ndarray) else xc
            xin = xc.to(device).permute(2, 0, 1)[None]  # (1, B, rows, Wp) view
            rows = xin.shape[2]
            if tokens is not None:
                z = tokens(xin, *dequant).reshape(rows, wp, -1)  # (rows, Wp, d_model)
            else:
                z = model.encode(xin)[0].permute(1, 2, 0)  # (rows, Wp, d_model)
            if step >= hp:
                return z.contiguous()
            if lat is None:
                lat = torch.empty((hp, wp, z.shape[-1]), dtype=torch.float32, device=z.device)
            lat[c0 : c0 + step] = z
    return lat


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
            lat = encode_tile(model, x, dev, chunk_bytes=None)  # (hp, wp, d_model)
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
