"""C exports built for other CPUs with a cross compiler, and checked there or under an emulator.

``blmkd export --c --c-target NAME`` builds the shared library (or, with ``--runner``, the static
push-broom program) for a Jetson, a Raspberry Pi or another x86-64 level; the export runs it on the
evaluation patches under ``qemu-user`` and compares its logits with PyTorch's.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blmkd.errors import ExportError
from blmkd.inference.c_build import BASE_CFLAGS, c_compiler, check_c_export, verify_c_source
from blmkd.io import atomic_path


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
