"""Run folders that cannot be lost: one writer at a time, no silent overwrite, safe resume.

A run folder (``--out`` of `train-teacher`, `train-student` and `distill`) holds
``best.safetensors``, ``last.safetensors``, their ``.json`` sidecars and ``metrics.jsonl``.
:func:`claim_run` opens one for writing:

* a lock file (``.blmkd.lock``, holding the writer's pid and host) refuses a second writer while
  the first is alive; the lock is an ``flock`` on Linux/macOS, released by the kernel when its
  process dies, so a killed run's lock is simply taken over by the next start;
* an existing run is only overwritten with ``force`` and only continued with ``resume``;
* the temporary files of atomic writes that a killed process left behind (``.best.safetensors.*``,
  ``.metrics.jsonl.*.tmp``, ``*.part``) are removed, and a ``.json`` sidecar left older than its
  checkpoint (a kill between the two writes) is rewritten from the checkpoint.

:func:`resume_mismatch` names what differs between a run's ``last.safetensors`` and the run a
``--resume`` asks for (model, dataset, split, preprocessing), so that a model is never trained on
two splits and labelled as one.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

from safetensors import safe_open

from blmkd.errors import RunError
from blmkd.io import _json_default, atomic_write_json

try:  # POSIX: the kernel drops the lock with its process, so no lock outlives a killed run
    import fcntl
except ImportError:  # pragma: no cover - Windows: the pid in the lock file decides
    fcntl = None

LOCK_NAME = ".blmkd.lock"
RUN_FILES = ("best.safetensors", "best.json", "last.safetensors", "last.json", "metrics.jsonl")
# blmkd.io.atomic_path's temporary names: ".<target>.<8 random chars><suffix>"
_TMP_RE = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)+$")


# ----------------------------------------------------------------------------------------------
# The lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _read_owner(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text())
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    """The write lock of one run folder; :meth:`release` (or leaving the ``with`` block) frees it."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_NAME
        self._fh = None

    def acquire(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(5):
            fh = open(self.path, "a+")  # noqa: SIM115 - held open for as long as the lock
            if fcntl is not None:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    fh.close()
                    self._refuse(_read_owner(self.path))
                # the holder we waited on may have unlinked the file: lock the file the path names
                try:
                    same = os.fstat(fh.fileno()).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    fh.close()
                    continue
            else:  # pragma: no cover
                owner = _read_owner(self.path)
                if (
                    owner.get("pid") not in (None, os.getpid())
                    and owner.get("host") == me["host"]
                    and _pid_alive(owner["pid"])
                ):
                    fh.close()
                    self._refuse(owner)
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(me) + "\n")
            fh.flush()
            self._fh = fh
            return self
        raise RunError(
            f"{self.path.parent}: could not take the lock {self.path.name} (another process keeps replacing it)"
        )

    def _refuse(self, owner: dict) -> None:
        who = f"process {owner.get('pid', '?')} on {owner.get('host', '?')}"
        if owner.get("started"):
            who += f" (started {owner['started']})"
        raise RunError(
            f"{self.path.parent} is being written by {who}; wait for it to finish or choose another --out"
        )

    def release(self) -> None:
        if self._fh is None:
            return
        try:
            self.path.unlink(
                missing_ok=True
            )  # unlinked while still held: a waiting process re-checks the inode
        finally:
            self._fh.close()  # closing drops the flock
            self._fh = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------------------------
# Claiming a run folder


def existing_run(out: str | Path) -> list[str]:
    """The run files (checkpoints, sidecars, metrics log) already in ``out``."""
    out = Path(out)
    return [name for name in RUN_FILES if (out / name).exists()]


def clean_leftovers(out: str | Path) -> list[Path]:
    """Remove what killed atomic writes left in ``out``; rewrite sidecars older than their checkpoint.

    Only call it while holding the folder's lock: another writer's temporary files are in flight.

    Returns:
        The temporary files removed.
    """
    out = Path(out)
    removed = []
    for p in sorted(out.iterdir()) if out.is_dir() else []:
        if p.name == LOCK_NAME or not p.is_file():
            continue
        if _TMP_RE.match(p.name) or p.name.endswith(".part"):
            p.unlink(missing_ok=True)
            removed.append(p)
    for stem in ("best", "last"):
        _repair_sidecar(out / f"{stem}.safetensors")
    return removed


def _repair_sidecar(ckpt: Path) -> None:
    meta = checkpoint_header(ckpt)
    if meta is None:
        return
    side = ckpt.with_suffix(".json")
    try:
        if json.loads(side.read_text()) == meta:
            return
    except (OSError, ValueError):
        pass
    atomic_write_json(side, meta)


def checkpoint_header(path: str | Path) -> dict | None:
    """The blmkd JSON of a checkpoint's safetensors header (no tensors read), or None if unreadable."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return json.loads((fh.metadata() or {})["blmkd"])
    except Exception:  # absent, truncated or foreign: the caller decides what that means
        return None


def last_epoch(out: str | Path) -> int | None:
    """The epoch ``out/last.safetensors`` holds (what ``--resume`` continues after), or None."""
    meta = checkpoint_header(Path(out) / "last.safetensors")
    try:
        return int(meta["train_state"]["epoch"])
    except (TypeError, KeyError, ValueError):
        return None


def claim_run(out: str | Path, *, resume: bool = False, force: bool = False) -> RunLock:
    """Lock ``out`` for writing a run and make it ready: cleaned, and either empty or resumable.

    Args:
        out: the run folder (created if missing).
        resume: the run in ``out`` is to be continued from its ``last.safetensors``.
        force: a run already in ``out`` is to be replaced (its run files are deleted).

    Returns:
        The held lock; release it when the run is written (it is a context manager).

    Raises:
        RunError: another live process writes ``out``; ``out`` holds a run and neither ``resume``
            nor ``force`` was given; ``resume`` without a ``last.safetensors``; both flags.
    """
    out = Path(out)
    if resume and force:
        raise RunError("--resume continues the run in --out and --force replaces it: give one of them")
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out).acquire()
    try:
        clean_leftovers(out)
        found = existing_run(out)
        if resume and not (out / "last.safetensors").exists():
            why = f" (it holds {', '.join(found)}: it stopped in its first epoch)" if found else ""
            hint = "start it again with --force" if found else "start it without --resume"
            raise RunError(f"--resume: {out} has no last.safetensors to resume from{why}; {hint}")
        if found and not resume:
            if not force:
                raise RunError(
                    f"{out} already holds a run ({', '.join(found)}); pass --resume to continue it or --force to overwrite it"
                )
            for name in found:
                (out / name).unlink(missing_ok=True)
    except BaseException:
        lock.release()
        raise
    return lock


# ----------------------------------------------------------------------------------------------
# What a resume may not change


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_json_default))


def resume_mismatch(saved: dict, model_name: str, model_config: dict, meta: dict) -> str | None:
    """What differs between a run's saved metadata and the run a ``--resume`` would continue.

    Args:
        saved: the metadata of the run's ``last.safetensors``.
        model_name, model_config: the model built for the resumed run.
        meta: the data facts of the resumed run (:meth:`blmkd.bundle.Bundle.meta`).

    Returns:
        None when model, dataset, split and preprocessing are the same; else one sentence naming
        the first difference.
    """
    sm = saved.get("model", {})
    if sm.get("name") != model_name:
        return f"the run trains model {sm.get('name')!r}, not {model_name!r}"
    new_cfg, old_cfg = _jsonable(model_config), sm.get("config", {})
    diff = [k for k in sorted(set(new_cfg) | set(old_cfg)) if new_cfg.get(k) != old_cfg.get(k)]
    if diff:
        k = diff[0]
        return f"the run's model has {k}={old_cfg.get(k)!r}, this one {k}={new_cfg.get(k)!r}"
    new = _jsonable(meta)
    old_opts, new_opts = saved.get("data", {}).get("options", {}), new.get("data", {}).get("options", {})
    for key, what in (("dataset", "dataset"), ("gt", "ground truth"), ("cube_key", "cube key"), ("gt_key", "ground-truth key"),
                      ("fill", "fill value")):  # fmt: skip
        if old_opts.get(key) != new_opts.get(key):
            return f"the run was trained on {what} {old_opts.get(key)!r}, not {new_opts.get(key)!r}"
    for key in ("shape", "bands", "num_classes", "classes"):
        if saved.get("data", {}).get(key) != new.get("data", {}).get(key):
            return f"the dataset's {key} differ from the run's (another file under the same name?)"
    diff = [k for k in ("strategy", "train", "val", "seed", "patch", "buffer", "allow_small", "train_map", "test_map")
            if old_opts.get(k) != new_opts.get(k)]  # fmt: skip
    if diff:
        parts = ", ".join(f"{k} {old_opts.get(k)!r} → {new_opts.get(k)!r}" for k in diff)
        return f"the split differs from the run's ({parts})"
    if saved.get("split", {}).get("digest") != new.get("split", {}).get("digest"):
        return "the split selects other pixels than the run's (same options, other data?)"
    if saved.get("preprocessing") != new.get("preprocessing"):
        return "the preprocessing differs from the run's"
    return None
