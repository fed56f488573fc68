"""A C export before it runs: its metadata and seal, the check that it is blmkd's own code, the build.

blmkd compiles a C export (``blmkd export --c``) with the system C compiler (``$CC``, else
``cc``/``gcc``/``clang``; flags ``-O3 -march=native`` unless ``$BLMKD_CFLAGS`` says otherwise) into a
shared library cached under ``~/.cache/blmkd/native`` (``$BLMKD_NATIVE_DIR``), keyed by the source,
compiler, flags and CPU. It only compiles sealed, unmodified exports whose code is this blmkd's
kernel (``blm_student.c``, beside this module).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from blmkd.errors import ExportError
from blmkd.integrity import canonical, check_seal, seal
from blmkd.version import __version__

ENV_NATIVE_DIR = "BLMKD_NATIVE_DIR"
ENV_CFLAGS = "BLMKD_CFLAGS"
# -ffp-contract=fast lets the compiler fuse multiply-adds (PyTorch's CPU kernels do too);
# -fno-math-errno lets it inline sqrtf. Nothing here changes IEEE semantics beyond that.
BASE_CFLAGS = ("-O3", "-ffp-contract=fast", "-fno-math-errno", "-std=c99")
ARCH_CFLAGS = ("-march=native",)
# The calling thread's stack is not ours to size: refuse models whose scratch (an upper bound) would
# not fit in half of Linux's usual 8 MiB main-thread stack (blm_t ~0.2 MiB, blm_paper at 8×8 ~2.0).
META_RE = re.compile(r"^/\* BLMKD-META (.*) \*/$", re.MULTILINE)
#: The last line of a C export: its seal (:mod:`blmkd.integrity`) over everything above it.
SEAL_RE = re.compile(r"/\* BLMKD-SEAL (\{[^\n]*\}) \*/\n\Z")


def meta_comment(meta: dict) -> str:
    # "*/" inside a JSON string would end the comment; "\/" is JSON's escape for "/".
    return "/* BLMKD-META " + json.dumps(meta, sort_keys=True).replace("*/", "*\\/") + " */\n"


def kernel_source() -> str:
    """The kernel every C export ends with (``blm_student.c`` of this blmkd)."""
    return resources.files("blmkd.inference").joinpath("blm_student.c").read_text()


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
            f"{__version__}'s); re-export it with `blmkd export --c`, or compile it yourself"
        )
    for i, line in enumerate(text[: len(text) - len(kernel)].split("\n"), 1):
        if not any(rx.fullmatch(line) for rx in _PREAMBLE_LINES):
            raise ExportError(
                f"{name}: line {i} is not generated data ({line[:60]!r}); blmkd only compiles unmodified C exports"
            )


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
    m = META_RE.search(head)
    if m is None:
        raise ExportError(f"{p.name}: not a blmkd C export (no BLMKD-META comment)")
    try:
        return json.loads(m.group(1))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{p.name}: its BLMKD-META comment is not valid JSON ({exc})") from None


def _sealed_parts(body: str) -> dict[str, bytes]:
    """What a C export's seal covers: its metadata comment and everything else (code and weights)."""
    m = META_RE.search(body)
    meta = m.group(0) if m else ""
    rest = body[: m.start()] + body[m.end() :] if m else body
    return {"metadata": meta.encode("utf-8"), "code and weights": rest.encode("utf-8")}


def seal_c_source(source: str) -> str:
    """``source`` with its seal as the last line (a stale seal replaced)."""
    body = SEAL_RE.sub("", source)
    if not body.endswith("\n"):
        body += "\n"
    return body + "/* BLMKD-SEAL " + canonical(seal(_sealed_parts(body))).decode() + " */\n"


def verify_c_source(text: str, name: str) -> str:
    """The text of a C export without its seal line, after checking the seal.

    Raises:
        ExportError: no seal (an edited file, or one that is not a blmkd C export), or a seal that
            does not hold, naming what changed (its metadata, or its code and weights).
    """
    m = SEAL_RE.search(text)
    if m is None:
        raise ExportError(
            f"{name}: carries no BLMKD-SEAL line; blmkd only compiles sealed C exports (re-export it with `blmkd export --c`)"
        )
    body = text[: m.start()]
    check_seal(m.group(1), _sealed_parts(body), name, "BLMKD-SEAL line", ExportError)
    return body


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
