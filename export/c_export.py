"""C export of byte-latent Mamba students: one dependency-free C99 file, and its runner.

``blmkd export --c`` writes ``<model>.c``: a metadata comment (the same facts an ONNX export
carries), the model's sizes as macros, its weights as ``static const float`` arrays (the input
dequantization folded into the first layer) and the kernel of ``blm_student.c``. It is what a team
without ONNX Runtime on board compiles into its firmware, and on a CPU host it is the fastest way to
classify one patch: a single call with no graph executor, no per-node dispatch and no allocation.
Measured side by side on a 2-core AMD EPYC (2026-12-03, ``docs/results.md``): ``blm_t`` batch-1 p50
27–36 µs against ONNX Runtime's 62–120 µs, whose fixed per-node cost dominates a 1-MFLOP student;
whole-scene maps through ``blm_pixels``/``blm_tokens`` (``predict --mode encode-c``) 75–94 k px/s
on 2 threads against encode-ort's 44–48 k in the same run.

:class:`CRunner` compiles the file with the system C compiler (``$CC``, else ``cc``/``gcc``/``clang``;
flags ``-O3 -march=native`` unless ``$BLMKD_CFLAGS`` says otherwise) into a shared library cached
under ``~/.cache/blmkd/native`` (``$BLMKD_NATIVE_DIR``), keyed by the source, compiler, flags and
CPU, and calls it through ``ctypes``. ``ctypes`` drops the GIL during the call and the kernel keeps its
scratch on the stack, so threads may call one library at once.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from blmkd.errors import ExportError, ModelError
from blmkd.export.runtime import Runner

ENV_NATIVE_DIR = "BLMKD_NATIVE_DIR"
ENV_CFLAGS = "BLMKD_CFLAGS"
# -ffp-contract=fast lets the compiler fuse multiply-adds (PyTorch's CPU kernels do too);
# -fno-math-errno lets it inline sqrtf. Nothing here changes IEEE semantics beyond that.
BASE_CFLAGS = ("-O3", "-ffp-contract=fast", "-fno-math-errno", "-std=c99")
ARCH_CFLAGS = ("-march=native",)
# The calling thread's stack is not ours to size: refuse models whose scratch (an upper bound) would
# not fit in half of Linux's usual 8 MiB main-thread stack (blm_t ~0.2 MiB, blm_paper at 8×8 ~2.0).
MAX_CALLER_STACK = 4 << 20
_META_RE = re.compile(r"^/\* BLMKD-META (.*) \*/$", re.MULTILINE)
#: The last line of a C export: its seal (:mod:`blmkd.integrity`) over everything above it.
_SEAL_RE = re.compile(r"/\* BLMKD-SEAL (\{[^\n]*\}) \*/\n\Z")


# ----------------------------------------------------------------------------------------------
# Writing the source


def _c_float(v: float) -> str:
    """A C float literal that reads back as the same float32 (9 significant digits)."""
    t = f"{v:.9g}"
    return t + ("f" if "e" in t or "." in t else ".0f")


def _array(name: str, a, ctype: str = "float") -> str:
    """``static const <ctype> name[d0][d1]... = {...};`` from an array (flat initializer list)."""
    a = np.asarray(a)
    dims = "".join(f"[{d}]" for d in a.shape)
    flat = a.reshape(-1)
    if ctype == "float":
        flat = flat.astype(np.float32)
        if not np.isfinite(flat).all():
            raise ExportError(f"C export: {name} has non-finite weights")
        items = [_c_float(float(v)) for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    lines = [", ".join(items[i : i + 8]) for i in range(0, len(items), 8)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}{dims} = {{\n    {body}\n}};\n"


def _meta_comment(meta: dict) -> str:
    # "*/" inside a JSON string would end the comment; "\/" is JSON's escape for "/".
    return "/* BLMKD-META " + json.dumps(meta, sort_keys=True).replace("*/", "*\\/") + " */\n"


def check_c_exportable(model) -> None:
    """Raise :class:`ModelError` unless ``model`` is a byte-latent Mamba student (what the kernel covers)."""
    from blmkd.students.blm import BLMStudent

    if not isinstance(model, BLMStudent):
        raise ModelError(
            f"--c covers the byte-latent Mamba students; {type(model).__name__} is not one (export it to ONNX instead)"
        )


def c_source(model, patch: int, meta: dict[str, Any]) -> str:
    """The C file of a :class:`~blmkd.students.blm.BLMStudent` in eval mode for ``patch``×``patch`` windows.

    Raises:
        ModelError: the model is not a BLM student, or uses a feature the kernel does not have.
    """
    import torch

    check_c_exportable(model)
    c = model.config
    if patch < 1:
        raise ModelError(f"C export: bad patch size {patch}")
    L = patch * patch
    blocks = list(model.layers)
    eps = {float(m.eps) for m in [model.norm_f, *(b.norm for b in blocks)]}
    if len(eps) != 1:
        raise ModelError(f"C export: the LayerNorms use different eps values {sorted(eps)}")
    f32 = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
    with torch.no_grad():
        w1, b1 = model.encoder._first(model.in_scale, model.in_offset)
        parts = [
            _array("blm_order", np.asarray(model.scan_order(patch)), "int"),
            _array("blm_enc1_w", f32(w1).reshape(-1)),
            _array("blm_enc1_b", f32(b1)),
            _array("blm_enc2_w", f32(model.encoder.conv2.weight).reshape(-1)),
            _array("blm_enc2_b", f32(model.encoder.conv2.bias)),
            _array("blm_ln_w", np.stack([f32(b.norm.weight) for b in blocks])),
            _array("blm_ln_b", np.stack([f32(b.norm.bias) for b in blocks])),
            _array("blm_in_w", np.stack([f32(b.in_proj.weight).reshape(-1) for b in blocks])),
            _array("blm_conv_w", np.stack([f32(b.conv1d.weight[:, 0]) for b in blocks])),
            _array("blm_conv_b", np.stack([f32(b.conv1d.bias) for b in blocks])),
            _array("blm_xproj_w", np.stack([f32(b.x_proj.weight).reshape(-1) for b in blocks])),
            _array("blm_dt_bias", np.stack([f32(b.dt_bias) for b in blocks])),
            _array("blm_A", np.stack([f32(-torch.exp(b.A_log)) for b in blocks])),
            _array("blm_Dskip", np.stack([f32(b.D) for b in blocks])),
            _array("blm_out_w", np.stack([f32(b.out_proj.weight).reshape(-1) for b in blocks])),
            _array("blm_normf_w", f32(model.norm_f.weight)),
            _array("blm_normf_b", f32(model.norm_f.bias)),
            _array("blm_head_w", f32(model.head.weight)),
            _array("blm_head_b", f32(model.head.bias)),
        ]
    b0 = blocks[0]
    macros = {
        "BLM_BANDS": c.bands,
        "BLM_P": patch,
        "BLM_L": L,
        "BLM_LP": -(-L // 16) * 16,
        "BLM_ENC": c.enc_hidden,
        "BLM_D": c.d_model,
        "BLM_DI": b0.d_inner,
        "BLM_STATE": b0.d_state,
        "BLM_HEADS": b0.n_heads,
        "BLM_HEADDIM": b0.headdim,
        "BLM_CONV": b0.d_conv,
        "BLM_LAYERS": len(blocks),
        "BLM_CLASSES": c.num_classes,
        "BLM_CENTER_MEAN": int(model.centre_weight > 0),
        "BLM_CENTER_W": _c_float(model.centre_weight),
        "BLM_CENTER": model._center_index(patch),
        "BLM_LN_EPS": _c_float(eps.pop()),
    }
    # No string from the checkpoint outside the escaped metadata JSON: the header is fixed text.
    head = (
        f"/* Byte-latent Mamba student exported by blmkd {_version()}: "
        f"{c.bands} bands, {patch}x{patch} byte patches -> {c.num_classes} logits.\n"
        " * Generated file: data only; the kernel and its notes follow the weights. */\n"
    )
    defines = "".join(f"#define {k} {v}\n" for k, v in macros.items())
    return "".join([head, _meta_comment(meta), "\n", defines, "\n", *parts, "\n", kernel_source()])


def kernel_source() -> str:
    """The kernel every C export ends with (``blm_student.c`` of this blmkd)."""
    return resources.files("blmkd.export").joinpath("blm_student.c").read_text()


# What the part of a C export before the kernel may hold, line by line: data, never code.
_NUM = r"-?(?:\d+\.?\d*(?:e[+-]?\d+)?f?)"
_PREAMBLE_LINES = [
    re.compile(
        r"/\* Byte-latent Mamba student exported by blmkd [\w.+-]*: \d+ bands, \d+x\d+ byte patches -> \d+ logits\."
    ),
    re.compile(r" \* Generated file: data only; the kernel and its notes follow the weights\. \*/"),
    re.compile(r"/\* BLMKD-META (?:(?!\*/).)* \*/"),
    re.compile(rf"#define BLM_[A-Z_]+ {_NUM}"),
    re.compile(r"static const (?:float|int) blm_[A-Za-z0-9_]+(?:\[\d+\])+ = \{"),
    re.compile(rf"    {_NUM}(?:, {_NUM})*,?"),
    re.compile(r"\};"),
    re.compile(r""),
]


def check_c_export(text: str, name: str) -> None:
    """Refuse a ``.c`` file that is not an unmodified blmkd C export before anything compiles it.

    blmkd compiles and loads a C export to run it, so, as with never unpickling a file, it only
    does that for files whose code is this blmkd's own kernel: everything before the kernel must be
    the generated header, metadata, ``#define``s of numbers and ``static const`` arrays of numbers.

    Raises:
        ExportError: naming the first line that is not generated data, or a kernel that differs.
    """
    kernel = kernel_source()
    if not text.endswith(kernel):
        raise ExportError(
            f"{name}: not an unmodified C export of this blmkd (its kernel differs from blmkd "
            f"{_version()}'s); re-export it with `blmkd export --c`, or compile it yourself"
        )
    for i, line in enumerate(text[: len(text) - len(kernel)].split("\n"), 1):
        if not any(rx.fullmatch(line) for rx in _PREAMBLE_LINES):
            raise ExportError(
                f"{name}: line {i} is not generated data ({line[:60]!r}); blmkd only compiles unmodified C exports"
            )


def _version() -> str:
    from blmkd import __version__

    return __version__


def read_c_metadata(path: str | Path) -> dict[str, Any]:
    """The blmkd metadata of a C export (its ``BLMKD-META`` comment), without compiling it."""
    p = Path(path)
    with open(p, "rb") as fh:
        raw = fh.read(1 << 16)
    try:
        head = raw.decode("utf-8")
    except UnicodeDecodeError:
        if b"\0" in raw or len(raw) < (1 << 16):
            raise ExportError(f"{p.name}: not a blmkd C export (a binary file, not UTF-8 text)") from None
        head = raw[: (1 << 16) - 4].decode("utf-8", errors="ignore")  # a multi-byte character cut at the end
    m = _META_RE.search(head)
    if m is None:
        raise ExportError(f"{p.name}: not a blmkd C export (no BLMKD-META comment)")
    try:
        return json.loads(m.group(1))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{p.name}: its BLMKD-META comment is not valid JSON ({exc})") from None


def _sealed_parts(body: str) -> dict[str, bytes]:
    """What a C export's seal covers: its metadata comment and everything else (code and weights)."""
    m = _META_RE.search(body)
    meta = m.group(0) if m else ""
    rest = body[: m.start()] + body[m.end() :] if m else body
    return {"metadata": meta.encode("utf-8"), "code and weights": rest.encode("utf-8")}


def seal_c_source(source: str) -> str:
    """``source`` with its seal as the last line (a stale seal replaced)."""
    from blmkd.integrity import canonical, seal

    body = _SEAL_RE.sub("", source)
    if not body.endswith("\n"):
        body += "\n"
    return body + "/* BLMKD-SEAL " + canonical(seal(_sealed_parts(body))).decode() + " */\n"


def verify_c_source(text: str, name: str) -> str:
    """The text of a C export without its seal line, after checking the seal.

    Raises:
        ExportError: no seal (an edited file, or one that is not a blmkd C export), or a seal that
            does not hold, naming what changed (its metadata, or its code and weights).
    """
    from blmkd.integrity import changed_parts, describe

    m = _SEAL_RE.search(text)
    if m is None:
        raise ExportError(
            f"{name}: carries no BLMKD-SEAL line; blmkd only compiles sealed C exports (re-export it with `blmkd export --c`)"
        )
    body = text[: m.start()]
    try:
        recorded = json.loads(m.group(1))
    except json.JSONDecodeError:
        recorded = None
    changed = changed_parts(recorded, _sealed_parts(body))
    if changed is None:
        raise ExportError(f"{name}: its BLMKD-SEAL line is not a blmkd seal (corrupt or edited file)")
    if changed:
        raise ExportError(
            f"{name}: {describe(changed)} changed since it was exported (digest mismatch); the file was edited or is corrupt"
        )
    return body


def with_metadata(source: str, meta: dict[str, Any]) -> str:
    """``source`` with its metadata comment replaced by ``meta``."""
    return _META_RE.sub(lambda _: _meta_comment(meta).rstrip("\n"), source, count=1)


# ----------------------------------------------------------------------------------------------
# Compiling


def c_compiler() -> tuple[str | None, str]:
    """``(compiler, "")`` for the C compiler to use (``$CC``, else cc, gcc, clang), or ``(None, why)``."""
    env = os.environ.get("CC")
    names = [env] if env else ["cc", "gcc", "clang"]
    for n in names:
        exe = shutil.which(shlex.split(n)[0]) if n else None
        if exe:
            return n, ""
    return None, (
        f"no C compiler found ({'$CC=' + env if env else 'cc, gcc, clang'}); install gcc or clang, or set CC"
    )


def native_dir() -> Path:
    env = os.environ.get(ENV_NATIVE_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "blmkd" / "native"


def _cflags() -> list[str]:
    env = os.environ.get(ENV_CFLAGS)
    return shlex.split(env) if env is not None else [*BASE_CFLAGS, *ARCH_CFLAGS]


def _compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([*shlex.split(cc), "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


@lru_cache(maxsize=1)
def _cpu_id() -> str:
    """What ``-march=native`` compiles for: the CPU model and feature flags (Linux), else the
    platform's processor string. Part of the cache key, so that a home directory shared by
    different machines never hands one a library built for another's instruction set."""
    import platform

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    keep = [
        ln
        for ln in info.splitlines()
        if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")
    ]
    return platform.machine() + "\n" + "\n".join(sorted(set(keep)))


def compile_c(path: str | Path) -> Path:
    """The shared library of a C export, compiled once and cached (atomic rename into the cache).

    Raises:
        ExportError: not an unmodified blmkd C export (:func:`check_c_export`), no compiler, or the
            compiler failed (its first error line is in the message).
    """
    src = Path(path)
    code = src.read_bytes()
    try:
        text = code.decode("utf-8")
    except UnicodeDecodeError:
        raise ExportError(f"{src.name}: not a blmkd C export (a binary file, not UTF-8 text)") from None
    check_c_export(verify_c_source(text, src.name), src.name)
    cc, why = c_compiler()
    if cc is None:
        raise ExportError(f"cannot run {src.name}: {why}")
    flags = _cflags()
    key = hashlib.sha256(
        code + repr((cc, flags, _compiler_version(cc), sys.platform, _cpu_id())).encode()
    ).hexdigest()[:24]
    out_dir = native_dir()
    lib = out_dir / f"{src.stem}-{key}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{lib.name}.", suffix=".tmp")
    os.close(fd)
    cmd = [*shlex.split(cc), *flags, "-shared", "-fPIC", str(src), "-o", tmp, "-lm"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 and os.environ.get(ENV_CFLAGS) is None and "march" in res.stderr:
            # a compiler without -march=native (some ARM GCCs spell it -mcpu=native): portable build
            flags = [f for f in flags if f not in ARCH_CFLAGS]
            cmd = [c for c in cmd if c not in ARCH_CFLAGS]
            res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            lines = res.stderr.splitlines()
            first = next(
                (ln for ln in lines if " error:" in ln or ln.startswith("error")), "\n".join(lines[:1])
            )
            first = first.replace(str(src), src.name)
            raise ExportError(f"{src.name}: the C compiler failed ({shlex.join([cc, *flags])}): {first}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


# ----------------------------------------------------------------------------------------------
# Other targets: cross compilers, checked under an emulator


@dataclass(frozen=True)
class CTarget:
    """A CPU a C export is built for with a cross compiler (``blmkd export --c --c-target NAME``)."""

    name: str
    machine: str  # platform.machine() of the target: "aarch64", "x86_64"
    triple: str  # GNU triple: the cross compiler is <triple>-gcc
    flags: tuple[str, ...]  # architecture flags, after BASE_CFLAGS
    emulator: str  # user-mode emulator that runs its programs on another host ("" when none is needed)
    description: str


C_TARGETS: dict[str, CTarget] = {
    t.name: t
    for t in (
        CTarget("aarch64", "aarch64", "aarch64-linux-gnu", ("-march=armv8-a",), "qemu-aarch64",
                "any 64-bit Arm CPU (Armv8-A, 128-bit NEON)"),
        CTarget("cortex-a78ae", "aarch64", "aarch64-linux-gnu", ("-mcpu=cortex-a78ae",), "qemu-aarch64",
                "Jetson Orin Nano / NX / AGX (Cortex-A78AE)"),
        CTarget("cortex-a57", "aarch64", "aarch64-linux-gnu", ("-mcpu=cortex-a57",), "qemu-aarch64",
                "Jetson Nano, TX1, TX2 (Cortex-A57)"),
        CTarget("cortex-a72", "aarch64", "aarch64-linux-gnu", ("-mcpu=cortex-a72",), "qemu-aarch64",
                "Raspberry Pi 4 and many Arm flight computers (Cortex-A72)"),
        CTarget("x86-64-v3", "x86_64", "x86_64-linux-gnu", ("-march=x86-64-v3",), "",
                "x86-64 with AVX2 and FMA, no AVX-512 (Haswell and later, AMD Zen)"),
    )
}  # fmt: skip


def get_c_target(name: str) -> CTarget:
    """The C target called ``name``; unknown names list the known ones."""
    t = C_TARGETS.get(str(name).strip().lower())
    if t is None:
        raise ExportError(f"unknown --c-target {name!r}; known: {', '.join(C_TARGETS)}")
    return t


def _host_machine() -> str:
    import platform

    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def _dumpmachine(cc: str) -> str:
    try:
        out = subprocess.run([*shlex.split(cc), "-dumpmachine"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cross_compiler(target: CTarget) -> tuple[str | None, str]:
    """``(compiler, "")`` that builds for ``target``, or ``(None, why)``: ``$CC`` when it is a compiler
    for the target's machine, else ``<triple>-gcc``, else (same machine as this host) the host compiler."""
    env = os.environ.get("CC")
    if env and shutil.which(shlex.split(env)[0]) and _dumpmachine(env).startswith(target.machine):
        return env, ""
    gcc = f"{target.triple}-gcc"
    if shutil.which(gcc):
        return gcc, ""
    if target.machine == _host_machine():
        return c_compiler()
    return None, (
        f"no C compiler for {target.name} ({gcc} not found, and $CC is not one); on Debian/Ubuntu: "
        f"apt-get install gcc-{target.triple} libc6-dev-{_DEB_ARCH.get(target.machine, target.machine)}-cross"
    )


_DEB_ARCH = {"aarch64": "arm64", "x86_64": "amd64"}


def emulator(target: CTarget) -> tuple[list[str] | None, str]:
    """The command prefix that runs ``target``'s programs here (``[]`` on the same machine), or
    ``(None, why)``."""
    if target.machine == _host_machine():
        return [], ""
    exe = shutil.which(target.emulator) if target.emulator else None
    if exe is None:
        return (
            None,
            f"cannot run {target.name} programs here: {target.emulator or 'an emulator'} not found (apt-get install qemu-user)",
        )
    return [exe], ""


def _compile(cc: str, flags: list[str], sources: list[Path], out: Path, extra: tuple[str, ...] = ()) -> None:
    cmd = [*shlex.split(cc), *flags, *extra, *map(str, sources), "-o", str(out), "-lm"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        lines = res.stderr.splitlines()
        first = next((ln for ln in lines if " error:" in ln or ln.startswith("error")), "\n".join(lines[:1]))
        raise ExportError(f"{sources[0].name}: the C compiler failed ({shlex.join([cc, *flags])}): {first}")


# Reads n patches (uint8, the model's shape) from argv[1], writes their logits (float32) to argv[2].
_CHECK_MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
int blm_forward(const uint8_t *x, int n, float *logits);
int blm_shape(int *out);
const char *blm_build(void);
int main(int argc, char **argv) {
    int s[3];
    blm_shape(s);
    const long per = (long)s[0] * s[1] * s[1];
    FILE *f = fopen(argv[1], "rb");
    if (argc != 3 || !f) return 2;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f) / per;
    fseek(f, 0, SEEK_SET);
    uint8_t *x = malloc((size_t)(n * per) + 1);
    float *y = malloc(sizeof(float) * (size_t)(n * s[2]) + 1);
    if (!x || !y || fread(x, 1, (size_t)(n * per), f) != (size_t)(n * per)) return 3;
    for (long i = 0; i < n; i++) blm_forward(x + i * per, 1, y + i * s[2]);
    FILE *o = fopen(argv[2], "wb");
    if (!o || fwrite(y, sizeof(float), (size_t)(n * s[2]), o) != (size_t)(n * s[2])) return 4;
    fclose(o);
    puts(blm_build());
    return 0;
}
"""


@dataclass
class TargetRun:
    """Logits of a C export built for a target and run there (or under its emulator)."""

    target: str
    compiler: str
    flags: list[str]
    runner: str  # "native" or the emulator
    build: str  # blm_build() on the target, e.g. "matmul=vector vw=4 mr=4"
    logits: np.ndarray


def run_on_target(path: str | Path, target: str | CTarget, x: np.ndarray) -> TargetRun:
    """Cross-compile the C export at ``path`` for ``target`` (a static program around ``blm_forward``),
    run it on the uint8 patches ``x`` there or under the target's emulator, return its logits.

    Raises:
        ExportError: not an unmodified C export, no cross compiler or emulator (the message says
            what to install), or the build or the run failed.
    """
    import tempfile

    src = Path(path)
    check_c_export(verify_c_source(src.read_text(), src.name), src.name)
    t = target if isinstance(target, CTarget) else get_c_target(target)
    cc, why = cross_compiler(t)
    if cc is None:
        raise ExportError(why)
    prefix, why = emulator(t)
    if prefix is None:
        raise ExportError(why)
    flags = [*BASE_CFLAGS, *t.flags]
    x = np.ascontiguousarray(x, dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="blmkd-target-") as tmp:
        d = Path(tmp)
        (d / "check_main.c").write_text(_CHECK_MAIN)
        exe = d / "check"
        _compile(cc, flags, [src, d / "check_main.c"], exe, ("-static",))
        x.tofile(d / "x.bin")
        res = subprocess.run(
            [*prefix, str(exe), str(d / "x.bin"), str(d / "y.bin")], capture_output=True, text=True
        )
        if res.returncode != 0:
            raise ExportError(
                f"{src.name} built for {t.name} failed to run (exit {res.returncode}): {res.stderr.strip()[:200]}"
            )
        y = np.fromfile(d / "y.bin", np.float32).reshape(len(x), -1)
    return TargetRun(
        t.name, cc, flags, " ".join(Path(p).name for p in prefix) or "native", res.stdout.strip(), y
    )


def build_for_target(path: str | Path, target: str | CTarget, out: str | Path, runner: bool = False) -> Path:
    """Cross-compile a C export for ``target``: its shared library (``runner=False``; the API CRunner
    calls) or, for a runner source (:func:`runner_source`), a static executable. Atomic write."""
    from blmkd.io import atomic_path

    src = Path(path)
    t = target if isinstance(target, CTarget) else get_c_target(target)
    cc, why = cross_compiler(t)
    if cc is None:
        raise ExportError(why)
    dst = Path(out)
    with atomic_path(dst, suffix=dst.suffix or ".bin") as tmp:
        _compile(
            cc, [*BASE_CFLAGS, *t.flags], [src], Path(tmp), ("-static",) if runner else ("-shared", "-fPIC")
        )
        if runner:
            os.chmod(tmp, 0o755)
    return dst


# ----------------------------------------------------------------------------------------------
# The on-board runner


def runner_template() -> str:
    """The push-broom runner every runner source ends with (``blm_runner.c`` of this blmkd)."""
    return resources.files("blmkd.export").joinpath("blm_runner.c").read_text()


def runner_source(c_text: str, meta: dict[str, Any]) -> str:
    """The standalone runner of a C export: its source ``c_text``, the fitted byte quantization and
    class ids from ``meta`` (the export's metadata), then :func:`runner_template`. One file, built with
    ``cc -O3 -o runner <file> -lm``.

    Raises:
        ExportError: the metadata has no preprocessing, or its band count differs from the model's.
    """
    from blmkd.data.preprocess import Preprocessing

    if not meta.get("preprocessing"):
        raise ExportError(
            "--runner: the export's metadata has no preprocessing (the runner quantizes raw values)"
        )
    prep = Preprocessing.from_dict(meta["preprocessing"])
    if prep.bands != int(meta.get("bands", prep.bands)):
        raise ExportError(f"--runner: preprocessing has {prep.bands} bands, the model {meta.get('bands')}")
    ids = [int(c["id"]) for c in meta.get("classes") or []] or list(range(1, int(meta["num_classes"]) + 1))
    gain = (np.float32(255.0) / prep._range()).astype(np.float32)  # exactly Preprocessing.to_bytes's
    data = [
        "\n/* ---- the fitted byte quantization (Preprocessing.to_bytes) and the original class ids ---- */\n",
        _array("blm_q_lo", prep.lo),
        _array("blm_q_gain", gain),
        _array("blm_class_ids", np.asarray(ids), "int"),
        "\n",
    ]
    return "".join([c_text, *data, runner_template()])


# ----------------------------------------------------------------------------------------------
# Running


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
            from concurrent.futures import ThreadPoolExecutor

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
