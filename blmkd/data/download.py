"""Resumable, verified, atomic downloads into the data cache.

The cache is :func:`blmkd.data.cache.data_dir`. :func:`fetch` writes to
``dest.part``; an interrupted transfer is resumed with an HTTP ``Range`` request (appended if the
server answers 206 Partial Content, restarted if it answers 200), and ``dest`` appears only once
the whole file is there and its sha256 matches. A half-downloaded file is therefore never read as
data.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from blmkd.data.registry import DatasetInfo
from blmkd.errors import DataError
from blmkd.io import atomic_write_text

CHUNK = 1 << 16
_RETRY_DELAY_S = 1.0  # times the attempt number; tests set it to 0
_USER_AGENT = "blmkd (+https://pypi.org/project/blmkd)"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    progress: bool = True,
    *,
    retries: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already exists.

    An existing ``dest`` is trusted without re-hashing: it only appears after a complete, verified
    transfer.

    Args:
        url: http(s) URL.
        dest: final path; the transfer goes to ``dest.part`` first.
        sha256: expected hex digest; on mismatch the ``.part`` file is deleted and DataError
            names both hashes. None skips the check.
        progress: show a rich progress bar on stderr.
        retries: further attempts after a dropped connection or timeout; each one resumes.
        timeout: socket timeout in seconds.

    Returns:
        ``dest``.

    Raises:
        DataError: HTTP error, too many failed attempts (the ``.part`` file is kept so that the
            next call resumes), or checksum mismatch.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(_RETRY_DELAY_S * attempt)
        try:
            _transfer(url, part, progress=progress, timeout=timeout)
            break
        except urllib.error.HTTPError as e:
            raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            last_error = e
    else:
        kept = part.exists() and part.stat().st_size > 0
        raise DataError(
            f"download of {url} failed after {retries + 1} attempts ({_describe(last_error)}); "
            + (f"the partial file {part} is kept: run again to resume" if kept else "nothing was received")
        )

    if sha256 is not None:
        got = sha256_file(part)
        if got.lower() != sha256.lower():
            part.unlink()
            raise DataError(f"checksum mismatch for {url}: expected sha256 {sha256.lower()}, got {got}")
    with open(part, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    return dest


def _transfer(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """One attempt: resume ``part`` from its current size (or start it) and read to the end."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # Range not satisfiable: the .part is not a prefix we can extend; start over.
            part.unlink()
            return _transfer(url, part, progress=progress, timeout=timeout)
        raise
    with response:
        status = getattr(response, "status", 200)
        if status == 206:
            mode = "ab"
        else:  # 200: the server ignored the Range header and sends the whole file
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            open(part, mode) as fh,
            _progress_bar(part.name[: -len(".part")], total, have, progress) as advance,
        ):
            received = 0
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                fh.write(block)
                received += len(block)
                advance(len(block))
        if length is not None and received < int(length):
            raise http.client.IncompleteRead(b"", int(length) - received)


@contextlib.contextmanager
def _progress_bar(
    label: str, total: int | None, completed: int, enabled: bool
) -> Iterator[Callable[[int], None]]:
    """A rich download bar on stderr (nothing when ``enabled`` is False); yields ``advance(nbytes)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, completed=completed)
        yield lambda n: bar.advance(task, n)


def _describe(error: Exception | None) -> str:
    if error is None:
        return "unknown error"
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def download_dataset(info: DatasetInfo, progress: bool = True) -> tuple[Path, Path]:
    """Fetch a registry dataset's cube and ground-truth files into the cache (if missing).

    Returns:
        (cube path, ground-truth path).

    Raises:
        DataError: the dataset has no public download (Houston 2013), or a download failed.
    """
    cube_path, gt_path = info.local_paths()
    missing = [(f, p) for f, p in ((info.cube, cube_path), (info.gt, gt_path)) if not p.is_file()]
    for file, _ in missing:
        if file.url is None:
            raise DataError(
                f"{info.title} cannot be downloaded ({info.note or 'no public URL is known'}); "
                f"put {info.cube.filename} and {info.gt.filename} in {info.local_dir()}, "
                f"or pass the files: load_scene(CUBE_PATH, gt=GT_PATH)"
            )
    for file, path in missing:
        fetch(file.url, path, sha256=file.sha256, progress=progress)
    for file, path in ((info.cube, cube_path), (info.gt, gt_path)):
        verify_cached(path, file.sha256)
    return cube_path, gt_path


_VERIFIED: dict[tuple[str, int, int], str] = {}


def verify_cached(path: Path, pinned: str | None) -> None:
    """Check a cached dataset file against its pinned sha256, or, where none is published, against
    the digest recorded beside it (``<file>.sha256``) the first time blmkd saw it; a file that
    changed in the cache (a bad copy, a disk error, an edit) is refused instead of read as data.

    Raises:
        DataError: the file's sha256 is not the pinned or recorded one.
    """
    side = path.with_name(path.name + ".sha256")
    recorded = side.read_text().split()[0] if side.is_file() and side.read_text().strip() else None
    want = (pinned or recorded or "").lower() or None
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    got = _VERIFIED.get(key) or sha256_file(path)
    _VERIFIED[key] = got
    if want is None:
        with contextlib.suppress(
            OSError
        ):  # a read-only cache still loads; it is checked next time it can record
            atomic_write_text(side, f"{got}  {path.name}\n")
        return
    if got != want:
        what = "pinned sha256" if pinned else f"digest recorded in {side.name} when it was first cached"
        raise DataError(
            f"{path}: sha256 {got[:16]}… differs from the {what} ({want[:16]}…); the cached file is corrupt or "
            "was replaced: delete it to download it again"
        )
