"""C exports of byte students, compiled here (:mod:`blmkd.inference.c_build`) and called through ``ctypes``.

``ctypes`` drops the GIL during the call and the kernel keeps its scratch on the stack, so threads
may call one library at once. On a CPU host it is the fastest way to classify one patch: a single
call with no graph executor, no per-node dispatch and no allocation.
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from blmkd.errors import ExportError, ModelError
from blmkd.inference.base import Runner
from blmkd.inference.c_build import c_compiler, compile_c, read_c_metadata

# The calling thread's stack is not ours to size: refuse models whose scratch (an upper bound) would
# not fit in half of Linux's usual 8 MiB main-thread stack (blm_t ~0.2 MiB, blm_paper at 8×8 ~2.0).
MAX_CALLER_STACK = 4 << 20


class CRunner(Runner):
    """A C export, compiled here and called through ``ctypes``: ``run(x)`` on uint8 patches → logits.

    Batches of at least ``2 × min_chunk`` patches are
    split over ``threads`` threads (0: all cores; ``ctypes`` releases the GIL during each call);
    smaller ones, batch 1 above all, run in the calling thread.
    """

    backend = "c"
    input_kind = "uint8"
    min_chunk = 64

    def __init__(self, path: str | Path, threads: int = 0):
        self.path = Path(path)
        self.name = self.path.name
        self.meta = read_c_metadata(self.path)
        self.compiler = c_compiler()[0]
        self.library = compile_c(self.path)
        self.threads = int(threads) if threads and threads > 0 else (os.cpu_count() or 1)
        self._pool = None
        try:
            lib = ctypes.CDLL(str(self.library))
        except OSError as exc:  # e.g. $CC is a cross compiler: the library is for another machine
            raise ExportError(
                f"{self.name}: cannot load the library {self.compiler} built ({exc}); $CC must compile for this "
                f"machine (cross compilers go by `blmkd export --c --c-target`)"
            ) from None
        shape = (ctypes.c_int * 3)()
        lib.blm_shape(shape)
        self.bands, self.patch, self.num_classes = (int(v) for v in shape)
        self._check_sizes()
        widths = (ctypes.c_int * 2)()
        lib.blm_widths(widths)
        # widths of pixel_features' h, x, z: d_model, d_inner, d_inner
        self.feature_widths = (int(widths[0]), int(widths[1]), int(widths[1]))
        self._fn = lib.blm_forward
        self._fn.restype = ctypes.c_int
        self._fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        ptr = ctypes.c_void_p
        self._pixels, self._tokens = lib.blm_pixels, lib.blm_tokens
        self._pixels.argtypes = [ptr, ctypes.c_int, ptr, ptr, ptr]
        self._tokens.argtypes = [ptr, ptr, ptr, ctypes.c_int, ptr]
        lib.blm_stack_bytes.restype = ctypes.c_long
        self.stack_bytes = int(lib.blm_stack_bytes())
        if self.stack_bytes > MAX_CALLER_STACK:
            raise ModelError(
                f"{self.name}: one call needs ~{self.stack_bytes >> 20} MiB of stack (scratch arrays), more "
                f"than the {MAX_CALLER_STACK >> 20} MiB blmkd relies on; use its ONNX export for a model this size"
            )
        order = (ctypes.c_int * (self.patch * self.patch))()
        lib.blm_scan_order(order)
        self.scan_order = tuple(int(v) for v in order)
        lib.blm_build.restype = ctypes.c_char_p
        self.build = (
            lib.blm_build().decode()
        )  # which matmul path the compiler got, e.g. "matmul=vector vw=8 mr=6"
        if sorted(self.scan_order) != list(range(self.patch * self.patch)):
            raise ExportError(
                f"{self.name}: its scan order is not a permutation of the {self.patch}x{self.patch} window; refusing to run it"
            )
        self._lib = lib
        self.providers = [f"C ({self.library.name}, {self.build})"]

    def _check_sizes(self) -> None:
        """The sizes compiled into the library against the metadata: they must agree before anything runs."""
        compiled = {"bands": self.bands, "patch_size": self.patch, "num_classes": self.num_classes}
        for key, value in compiled.items():
            if key in self.meta and int(self.meta[key]) != value:
                raise ExportError(
                    f"{self.name}: compiled with {key} {value} but its metadata says {self.meta[key]}; refusing to run it"
                )
        if min(compiled.values()) < 1:
            raise ExportError(f"{self.name}: compiled with impossible sizes {compiled}; refusing to run it")

    def run(self, x) -> np.ndarray:
        x = self._prepare(x)  # uint8, contiguous
        if x.shape[1:] != (self.bands, self.patch, self.patch):  # the kernel reads exactly this much
            raise ModelError(
                f"{self.name}: expected patches (N, {self.bands}, {self.patch}, {self.patch}), got {x.shape}"
            )
        n = x.shape[0]
        out = np.empty((n, self.num_classes), np.float32)
        if n < 2 * self.min_chunk:  # batch 1 above all: one call, no split (a few µs of Python less)
            self._fn(x.ctypes.data, n, out.ctypes.data)
            return out
        self._parallel(
            [
                (self._fn, x[a:b].ctypes.data, int(b - a), out[a:b].ctypes.data)
                for a, b in self._bounds(n, self.min_chunk)
            ]
        )
        return out

    def _bounds(self, n: int, min_chunk: int) -> list[tuple[int, int]]:
        """``n`` items in up to ``threads`` contiguous parts of at least ``min_chunk``."""
        parts = max(1, min(self.threads, n // min_chunk))
        b = [n * i // parts for i in range(parts + 1)]
        return list(zip(b[:-1], b[1:]))

    def _parallel(self, calls: list[tuple]) -> None:
        """Run ``fn(*args)`` for each ``(fn, *args)``: in this thread if one, else on the pool
        (``ctypes`` releases the GIL during each call)."""
        if len(calls) == 1:
            fn, *args = calls[0]
            fn(*args)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="blmkd-c")
        with self.thread_stack():  # the pool starts its threads on submit
            jobs = [self._pool.submit(*c) for c in calls]
        for j in jobs:
            j.result()

    @contextmanager
    def thread_stack(self):
        """Threads started inside get a stack of at least twice what one kernel call needs (the
        kernel keeps its scratch there; musl's default thread stack is 128 KiB)."""
        want = max(2 * self.stack_bytes + (1 << 20), 8 << 20)
        old = threading.stack_size()
        if old >= want:
            yield
            return
        threading.stack_size(want)
        try:
            yield
        finally:
            threading.stack_size(old)

    def pixel_features(self, px: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-pixel latents and first-block features of ``px (n, bands)`` bytes (channels last):
        ``h (n, d_model)``, ``x (n, d_inner)``, ``z (n, d_inner)``, what :meth:`run_tokens` gathers.
        Split over the runner's threads for large ``n``."""
        px = np.ascontiguousarray(px, dtype=np.uint8)
        if px.ndim != 2 or px.shape[1] != self.bands:
            raise ModelError(f"{self.name}: expected pixels (n, {self.bands}), got shape {px.shape}")
        n = px.shape[0]
        h, x, z = (np.empty((n, w), np.float32) for w in self.feature_widths)
        bounds = self._bounds(n, 4096)
        self._parallel(
            [(self._pixels, px[a:b].ctypes.data, int(b - a), h[a:b].ctypes.data, x[a:b].ctypes.data, z[a:b].ctypes.data)
             for a, b in bounds]
        )  # fmt: skip
        return h, x, z

    def run_tokens(self, h: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Logits of ``n`` windows given as :meth:`pixel_features` gathered in :attr:`scan_order`:
        ``h (n, L, d_model)``, ``x`` and ``z (n, L, d_inner)``, contiguous float32. Calling thread."""
        n, L = h.shape[0], self.patch * self.patch
        arrays = [np.ascontiguousarray(a, np.float32) for a in (h, x, z)]
        for a, w in zip(arrays, self.feature_widths):
            if a.shape != (n, L, w):  # the kernel reads exactly this much
                raise ModelError(f"{self.name}: expected windows {(n, L, w)}, got {a.shape}")
        out = np.empty((n, self.num_classes), np.float32)
        self._tokens(*(a.ctypes.data for a in arrays), n, out.ctypes.data)
        return out

    def __repr__(self) -> str:
        return f"CRunner({self.name}, {self.library.name})"
