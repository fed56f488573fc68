"""Run folders that cannot be lost: lock, no silent overwrite, checked resume, cleaned leftovers;
and the same command and seed give the same run (real Indian Pines crop, tiny presets)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch

from blmkd.checkpoint import load_checkpoint
from blmkd.cli import main
from blmkd.errors import RunError
from blmkd.runs import RunLock, claim_run, existing_run, resume_mismatch


def _teacher_args(data, out, *extra):
    return ["train-teacher", "--model", "ssa_mamba_test", "--dataset", str(data), "--epochs", "1", "--batch", "128",
            "--no-progress", "--out", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def teacher_run(ip_crop_path, tmp_path_factory):
    """A finished one-epoch teacher run made by the CLI."""
    out = tmp_path_factory.mktemp("runs") / "teacher"
    main(_teacher_args(ip_crop_path, out))
    return out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


def test_lock_refuses_a_second_writer_and_is_taken_over_after_a_kill(tmp_path):
    with RunLock(tmp_path).acquire():
        with pytest.raises(RunError, match=f"process {os.getpid()} on {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".blmkd.lock").exists()  # released: nothing left behind
    # another process holds it, then dies by SIGKILL: its lock is taken over
    code = "import sys, time; from blmkd.runs import RunLock; lock = RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match=f"being written by process {proc.pid} "):
            RunLock(tmp_path).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (
        json.loads((tmp_path / ".blmkd.lock").read_text())["pid"] == proc.pid
    )  # the dead writer's lock is still there
    with RunLock(tmp_path).acquire() as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_claim_run_cleans_leftovers_and_refuses_to_overwrite(teacher_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(teacher_run, run)
    # what kills between and inside atomic writes leave: 0-byte and partial temp files, a stale sidecar
    leftovers = [
        run / ".best.safetensors.ab12cd34.safetensors",
        run / ".metrics.jsonl.x_9yz0ab.tmp",
        run / "cube.npz.part",
    ]
    leftovers[0].touch()
    leftovers[1].write_text('{"epoch": 1')
    leftovers[2].write_bytes(b"\0" * 10)
    (run / "best.json").write_text("{}")
    with pytest.raises(RunError, match="already holds a run .*--resume.*--force"):
        claim_run(run)
    assert not any(p.exists() for p in leftovers)
    assert (
        json.loads((run / "best.json").read_text()) == load_checkpoint(run).meta
    )  # rewritten from the checkpoint
    with pytest.raises(RunError, match="give one of them"):
        claim_run(run, resume=True, force=True)
    with claim_run(run, resume=True):
        assert existing_run(run)  # resume keeps the run
    with claim_run(run, force=True):
        assert existing_run(run) == []  # --force replaces it
    with pytest.raises(RunError, match="no last.safetensors to resume from; start it without --resume"):
        claim_run(run, resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file"):
        claim_run(tmp_path / "file")


def test_cli_refuses_overwrite_changed_resume_and_duplicate_seeds(
    teacher_run, ip_crop_path, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(teacher_run, run)
    before = (run / "best.safetensors").read_bytes()
    with pytest.raises(SystemExit) as e:
        main(_teacher_args(ip_crop_path, run))
    line = _error_line(capsys)
    assert e.value.code == 2 and "already holds a run" in line and "--force" in line and "--resume" in line
    assert (run / "best.safetensors").read_bytes() == before  # the good run is untouched
    for extra, named in ((["--seed", "3"], "seed 0 → 3"), (["--train", "0.2"], "train 0.1 → 0.2"),
                         (["--patch", "5"], "patch 7 → 5")):  # fmt: skip
        with pytest.raises(SystemExit):
            main(_teacher_args(ip_crop_path, run, "--resume", *extra))
        assert named in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train-student", "--student", "blm_test", "--dataset", str(ip_crop_path), "--epochs", "1", "--out", str(run),
              "--resume", "--no-progress"])  # fmt: skip
    assert "model 'ssa_mamba_test', not 'blm_test'" in _error_line(capsys)
    with pytest.raises(SystemExit):
        main(_teacher_args(ip_crop_path, tmp_path / "seeds", "--seeds", "1,2,1"))
    assert "--seeds repeats 1" in _error_line(capsys)
    assert not (tmp_path / "seeds").exists()  # refused before anything was written
    assert (run / "best.safetensors").read_bytes() == before
    # an unchanged --resume says where it continues from
    main(_teacher_args(ip_crop_path, run, "--resume"))
    assert "resuming" in (out := capsys.readouterr().out) and "after epoch 1 (no epochs left)" in out


def test_resume_mismatch_names_the_difference(teacher_run):
    ck = load_checkpoint(teacher_run / "last.safetensors")
    name, cfg = ck.model_name, ck.config
    same = {k: ck.meta[k] for k in ("data", "split", "preprocessing")}
    assert resume_mismatch(ck.meta, name, cfg, same) is None
    assert "not 'blm_test'" in resume_mismatch(ck.meta, "blm_test", cfg, same)
    assert "d_state" in resume_mismatch(ck.meta, name, {**cfg, "d_state": cfg["d_state"] + 1}, same)
    other = json.loads(json.dumps(same))
    other["data"]["options"]["dataset"] = "salinas"
    assert "not 'salinas'" in resume_mismatch(ck.meta, name, cfg, other)
    other = json.loads(json.dumps(same))
    other["preprocessing"]["mean"][0] += 1.0
    assert resume_mismatch(ck.meta, name, cfg, other) == "the preprocessing differs from the run's"
    other = json.loads(json.dumps(same))
    other["split"]["digest"] = "0" * 16
    assert "other pixels" in resume_mismatch(ck.meta, name, cfg, other)


def test_same_command_and_seed_give_the_same_run(ip_crop_path, tmp_path):
    """The seed is set before the model is built: whatever ran before, the run is the same."""
    args = ["train-student", "--student", "blm_test", "--dataset", str(ip_crop_path), "--epochs", "2", "--batch", "64",
            "--seed", "1", "--no-progress"]  # fmt: skip
    results = []
    for i, noise in enumerate((1, 1000)):
        torch.rand(noise)  # a different global random state before each run
        main([*args, "--out", str(tmp_path / f"r{i}")])
        rows = [json.loads(line) for line in (tmp_path / f"r{i}" / "metrics.jsonl").read_text().splitlines()]
        best = load_checkpoint(tmp_path / f"r{i}")
        results.append(([{k: v for k, v in r.items() if k != "time_s"} for r in rows], best.meta["metrics"]["test"],
                        best.model_state()))  # fmt: skip
    (rows0, test0, w0), (rows1, test1, w1) = results
    assert len(rows0) == 2 and rows0 == rows1
    assert test0 == test1
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
