"""Two gloo ranks on the CPU: data-parallel training equals one process, sharded maps equal one map.

The ranks are real processes (``torch.multiprocessing.spawn``) that find their group through the
same environment variables torchrun sets, so :func:`blmkd.distributed.init_from_env` is what joins
them. Each rank writes into its own folder: that rank 1's stays absent shows that only rank 0
writes, and that resuming works without a shared filesystem (rank 0 reads and broadcasts).
"""

from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist

from blmkd.bundle import DataOptions, prepare_data
from blmkd.checkpoint import load_checkpoint, save_checkpoint
from blmkd.models import create_model
from blmkd.training.config import TrainConfig
from blmkd.training.loop import fit

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()),
        reason="torch.distributed with gloo is unavailable",
    ),
]
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_group(rank: int, port: int) -> None:
    """The environment torchrun gives a rank; ``fit`` and the sharding join the group from it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), BLMKD_DIST_BACKEND="gloo", BLMKD_NO_PROGRESS="1")  # fmt: skip
    torch.set_num_threads(1)


def _spawn(fn, *args, timeout: float = 240.0) -> None:
    """Run ``fn(rank, *args)`` on WORLD processes; fail (not hang) if they do not finish in time."""
    import torch.multiprocessing as mp

    ctx = mp.spawn(fn, args=args, nprocs=WORLD, join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{WORLD} ranks did not finish in {timeout:.0f} s")


# ----------------------------------------------------------------------------------------------
# Training


def _train_twice(crop: str, out) -> tuple[list[dict], float]:
    """One epoch, then ``resume`` to two: the per-step global losses and the test OA."""
    bundle = prepare_data(DataOptions(dataset=crop, patch=7, seed=0))
    steps: list[dict] = []
    for epochs, resume in ((1, False), (2, True)):
        torch.manual_seed(0)
        model = create_model(
            "blm_test", bands=bundle.scene.bands, num_classes=bundle.scene.num_classes, dropout=0.0
        )
        model.set_dequant(*[torch.as_tensor(a) for a in bundle.prep.dequant_affine()])
        cfg = TrainConfig(epochs=epochs, batch_size=64, warmup_epochs=1, patience=0, eval_batch=256)
        res = fit(model, bundle, cfg, out, resume=resume, progress=False, on_step=steps.append)
    return steps, res.test["oa"]


def _train_rank(rank: int, port: int, crop: str, tmp: str) -> None:
    _join_group(rank, port)
    steps, oa = _train_twice(crop, os.path.join(tmp, f"rank{rank}"))
    with open(os.path.join(tmp, f"steps{rank}.json"), "w") as f:
        json.dump({"steps": steps, "oa": oa}, f)


def test_two_ranks_train_like_one_process_on_the_global_batch(ip_crop_path, tmp_path):
    # blm_test has no BatchNorm and dropout is off: nothing differs but the float summation order.
    assert not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in create_model("blm_test", 8, 3).modules()
    )
    single_steps, single_oa = _train_twice(str(ip_crop_path), tmp_path / "single")

    _spawn(_train_rank, _free_port(), str(ip_crop_path), str(tmp_path))

    runs = [json.loads((tmp_path / f"steps{r}.json").read_text()) for r in range(WORLD)]
    assert runs[0] == runs[1]  # every rank saw the same global losses and test report
    steps = runs[0]["steps"]
    assert [s["step"] for s in steps] == [s["step"] for s in single_steps]
    assert [s["n"] for s in steps] == [s["n"] for s in single_steps]  # global batches of 64, not 32
    assert len(steps) >= 6 and steps[0]["n"] == 64
    got, want = np.array([s["loss"] for s in steps]), np.array([s["loss"] for s in single_steps])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert runs[0]["oa"] == pytest.approx(single_oa, abs=2e-3)

    # one writer; its checkpoint is complete, resumed to epoch 2 and has the same weights
    assert not (tmp_path / "rank1").exists()
    last = load_checkpoint(tmp_path / "rank0" / "last.safetensors")
    assert last.meta["train_state"]["epoch"] == 2
    log = [json.loads(line) for line in (tmp_path / "rank0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    ref = load_checkpoint(tmp_path / "single" / "last.safetensors").model_state()
    for k, v in last.model_state().items():
        torch.testing.assert_close(v, ref[k], rtol=1e-4, atol=1e-5)
    best = load_checkpoint(tmp_path / "rank0")
    assert "test" in best.meta["metrics"]
    best.build_model()


# ----------------------------------------------------------------------------------------------
# Sharded scene maps

P = 5


def _student_checkpoint(scene, path):
    from blmkd.data.preprocess import fit_preprocessing

    prep = fit_preprocessing(scene.cube, np.random.default_rng(0).random(scene.labels.shape) < 0.3)
    torch.manual_seed(1)
    model = create_model("blm_test", bands=scene.bands, num_classes=scene.num_classes).eval()
    model.set_dequant(*[torch.as_tensor(a) for a in prep.dequant_affine()])
    classes = [
        {"index": i, "id": c, "name": n} for i, (c, n) in enumerate(zip(scene.class_ids, scene.class_names))
    ]
    return save_checkpoint(
        path, model, {"data": {"patch_size": P, "classes": classes}, "preprocessing": prep.to_dict()}
    )


def _maps_rank(rank: int, port: int, ckpt: str, cubes: list, masks: list, tmp: str) -> None:
    from blmkd.bench.shard import predict_scene_sharded, predict_scenes_sharded
    from blmkd.inference.classifier import open_classifier

    _join_group(rank, port)
    clf = open_classifier(ckpt, mode="encode")
    one = predict_scene_sharded(clf, cubes[0], tile=4, return_logits=True)
    many = predict_scenes_sharded(clf, cubes, tile=3, masks=masks)
    if rank != 0:
        assert one is None and many is None  # the map lives on rank 0 only
        return
    arrays = {
        "one_pred": one.pred,
        "one_logits": one.logits,
        "pixels": [one.pixels] + [m.pixels for m in many],
    }
    arrays.update({f"many_{i}": m.pred for i, m in enumerate(many)})
    np.savez(os.path.join(tmp, "maps.npz"), **arrays)


def test_sharded_maps_equal_the_single_process_map(tmp_path):
    from blmkd.data import make_synthetic_scene
    from blmkd.inference.classifier import open_classifier
    from blmkd.inference.scene import predict_scene

    scene = make_synthetic_scene(23, 19, 12, 4, seed=3)
    ckpt = _student_checkpoint(scene, tmp_path / "student.safetensors")
    cubes = [np.asarray(scene.cube), np.ascontiguousarray(scene.cube[3:20, 2:17])]
    masks = [None, np.random.default_rng(1).random(cubes[1].shape[:2]) < 0.6]

    _spawn(_maps_rank, _free_port(), str(ckpt), cubes, masks, str(tmp_path))

    got = np.load(tmp_path / "maps.npz")
    clf = open_classifier(ckpt, mode="encode")
    ref = predict_scene(clf, cubes[0], tile=4, return_logits=True)
    np.testing.assert_array_equal(got["one_pred"], ref.pred)
    np.testing.assert_allclose(got["one_logits"], ref.logits, rtol=1e-5, atol=1e-6)
    for i, (cube, mask) in enumerate(zip(cubes, masks)):
        want = predict_scene(clf, cube, tile=3, mask=mask)
        np.testing.assert_array_equal(got[f"many_{i}"], want.pred)
        assert got["pixels"][i + 1] == want.pixels
    assert got["pixels"][0] == 23 * 19
    assert (got["many_1"][~masks[1]] == -1).all() and (got["many_1"][masks[1]] >= 0).all()
