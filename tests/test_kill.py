"""Kill tests: `train-teacher`, `train-student`, `distill` and `export` are SIGKILLed at seeded random
points (real subprocesses, real Indian Pines crop, tiny presets). After every kill each artifact left
is absent or loads and verifies, no `metrics.jsonl` row of a checkpointed epoch is lost, and the
next start (`--resume` where a `last.safetensors` exists) continues and says after which epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from blmkd.checkpoint import load_checkpoint
from blmkd.cli import main
from blmkd.runs import LOCK_NAME, checkpoint_header, existing_run, last_epoch

pytestmark = pytest.mark.slow

ENV = {**os.environ, "BLMKD_NO_PROGRESS": "1"}
KILLS = 5  # per training command; the export is killed 6 times: 21 kill points


def _blmkd(args, log_path, kill=None, run=None):
    """Run `blmkd args` and SIGKILL it at ``kill``: ``("lock", s)``, s seconds after it holds ``run``'s
    lock; ``("checkpoint", s)``, s seconds after it wrote ``run/last.safetensors``; ``("start", s)``.
    Returns (killed, exit code, output)."""
    with open(log_path, "w") as log:
        before = _mtime(run / "last.safetensors") if run else None
        proc = subprocess.Popen(
            [sys.executable, "-m", "blmkd", *args], stdout=log, stderr=subprocess.STDOUT, env=ENV
        )
        t0 = time.monotonic() if kill and kill[0] == "start" else None
        killed = False
        while proc.poll() is None and kill is not None:
            if t0 is None and kill[0] == "lock" and _lock_pid(run) == proc.pid:
                t0 = time.monotonic()
            if (
                t0 is None
                and kill[0] == "checkpoint"
                and _mtime(run / "last.safetensors") not in (None, before)
            ):
                t0 = time.monotonic()
            if t0 is not None and time.monotonic() - t0 >= kill[1]:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
        rc = proc.wait(timeout=600)
    return killed and rc == -signal.SIGKILL, rc, log_path.read_text()


def _mtime(path):
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _lock_pid(folder):
    try:
        return json.loads((folder / LOCK_NAME).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def _check_run(out) -> int | None:
    """Every artifact in the run folder loads and verifies; returns the epoch of last.safetensors."""
    if not out.exists():
        return None
    for p in out.iterdir():
        if p.name.startswith("."):  # temporary files of interrupted atomic writes: not artifacts
            continue
        if p.suffix == ".safetensors":
            load_checkpoint(p)  # the tensor checksum is verified on load
        elif p.suffix == ".json":
            json.loads(p.read_text())
    last = last_epoch(out)
    assert (last is None) == (not (out / "last.safetensors").exists())
    if (out / "metrics.jsonl").exists():
        epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert epochs == list(range(1, len(epochs) + 1))
        assert last is None or len(epochs) >= last, (
            f"rows {epochs}, last.safetensors at epoch {last}: a row was lost"
        )
    else:
        assert last is None, "a checkpointed epoch without its metrics row"
    return last


def _kill_and_resume(args, out, epochs, seed, tmp_path):
    """KILLS seeded kills, each start continuing the previous one's run; then a start that finishes.

    A third of the kills fall in the first 1.5 s after the lock is taken (model build, teacher cache,
    first epoch), the others up to 0.4 s after a checkpoint this start wrote (the next epoch, its writes).
    """
    rng = np.random.default_rng(seed)
    kills, resumed_from = 0, []
    for i in range(KILLS + 1):
        last = _check_run(out)
        extra = ["--resume"] if last is not None else (["--force"] if existing_run(out) else [])
        early = rng.random() < 1 / 3
        kill = (
            None
            if i == KILLS
            else ("lock", rng.uniform(0, 1.5))
            if early
            else ("checkpoint", rng.uniform(0, 0.4))
        )
        killed, rc, text = _blmkd([*args, *extra], tmp_path / f"log{i}.txt", kill, run=out)
        kills += killed
        if not killed:
            assert rc == 0, text
        if last is not None and "resuming" in text:
            assert f"after epoch {last} " in text, text
            resumed_from.append(last)
    assert kills == KILLS, f"only {kills} of {KILLS} starts were killed before they finished"
    # the finished run: complete, verified, no leftovers, no lock
    assert _check_run(out) == epochs
    assert len((out / "metrics.jsonl").read_text().splitlines()) == epochs
    assert "test" in load_checkpoint(out).meta["metrics"]
    for stem in ("best", "last"):
        assert json.loads((out / f"{stem}.json").read_text()) == checkpoint_header(
            out / f"{stem}.safetensors"
        )
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    return kills, resumed_from


@pytest.fixture(scope="module")
def teacher_run(ip_crop_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "teacher"
    main(["train-teacher", "--model", "ssa_mamba_test", "--dataset", str(ip_crop_path), "--epochs", "2", "--batch", "128",
          "--no-progress", "--out", str(out)])  # fmt: skip
    return out


@pytest.mark.parametrize("command, epochs", [("train-teacher", 12), ("train-student", 24), ("distill", 24)])
def test_killed_training_leaves_verified_artifacts_and_resumes(
    command, epochs, ip_crop_path, teacher_run, tmp_path
):
    out = tmp_path / "run"
    common = ["--epochs", str(epochs), "--batch", "128", "--no-progress", "--out", str(out)]
    args = {
        "train-teacher": ["train-teacher", "--model", "ssa_mamba_test", "--dataset", str(ip_crop_path)],
        "train-student": ["train-student", "--student", "blm_test", "--dataset", str(ip_crop_path)],
        "distill": [
            "distill",
            "--teacher",
            str(teacher_run),
            "--student",
            "blm_test",
            "--warmup-epochs",
            "2",
        ],
    }[command]
    _, resumed_from = _kill_and_resume(
        [*args, *common], out, epochs, seed=25 + len(command), tmp_path=tmp_path
    )
    assert resumed_from, "no start resumed a killed run"


def test_killed_export_leaves_only_verified_files(teacher_run, tmp_path):
    ref = tmp_path / "ref"
    args = ["export", str(teacher_run), "--onnx", "--int8"]
    t0 = time.monotonic()
    _, rc, text = _blmkd([*args, "--out", str(ref)], tmp_path / "ref.txt")
    wall = time.monotonic() - t0
    assert rc == 0, text
    reference = {p.name: p.read_bytes() for p in ref.iterdir() if not p.name.startswith(".")}
    assert {"ssa_mamba_test.onnx", "ssa_mamba_test.int8.onnx"} <= set(reference)
    rng = np.random.default_rng(2025)
    out, kills, starts = tmp_path / "out", 0, 0
    while kills < KILLS + 1 and starts < KILLS + 5:  # an export that finished first is checked, not counted
        kill = ("start", rng.uniform(0.1, 0.8) * wall)
        killed, rc, text = _blmkd([*args, "--out", str(out), "--force"], tmp_path / f"log{starts}.txt", kill)
        kills, starts = kills + killed, starts + 1
        assert killed or rc == 0, text
        for p in out.iterdir() if out.exists() else []:
            if not p.name.startswith("."):  # every visible file is the whole, checked export
                assert p.read_bytes() == reference[p.name], (
                    f"{p.name} differs from a clean export after a kill"
                )
    assert kills == KILLS + 1
    _, rc, text = _blmkd([*args, "--out", str(out), "--force"], tmp_path / "final.txt")
    assert rc == 0, text
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} == reference
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == [], f"the next export leaves no temporary file of a killed one: {hidden}"
