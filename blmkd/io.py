"""Atomic file writes: a temporary file in the destination folder, fsync, then rename.

An interrupted run therefore leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blmkd.errors import BlmkdError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    Use it for writers that want a file name (torch.onnx.export, safetensors, savefig).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file 0600; the result gets the mode any new file of the user gets
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process's umask (read without changing it where Linux allows)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore
    os.umask(mask)
    return mask


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Check that folder ``path`` can be created (where missing) and written into, without creating
    it, so that a command fails in its first second, not after an hour of work.

    Raises:
        BlmkdError: ``path`` (or a folder on its path) is a file, or it cannot be written into.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise BlmkdError(f"{what} {p} is a file, not a folder")
    probe_in = p
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise BlmkdError(f"{what} {p}: {probe_in} is a file, not a folder")
    try:  # a real write: permission bits say nothing on read-only mounts or for root
        fd, probe = tempfile.mkstemp(dir=probe_in, prefix=".blmkd-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BlmkdError(f"{what} {p} is not writable ({exc.strerror or exc}: {probe_in})") from None
    return p


def check_writable_file(path: str | os.PathLike, what: str) -> Path:
    """Check that file ``path`` can be written (its folder as :func:`check_writable_dir`)."""
    p = Path(path)
    if p.is_dir():
        raise BlmkdError(f"{what} {p} is a folder, not a file")
    check_writable_dir(p.parent, what)
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths: the usual things that end up in metrics and metadata.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
