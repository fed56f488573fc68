"""Distillation on the shared loop: cached teacher = live teacher, CLI end to end, bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from blmkd.bundle import DataOptions, prepare_data, with_patch
from blmkd.checkpoint import load_checkpoint
from blmkd.cli import main
from blmkd.data.scene import UNLABELLED
from blmkd.distill.cache import UnlabelledPool, ensemble_cache, teacher_cache, unlabelled_coords
from blmkd.distill.kd import DistillationLoss, KDConfig, KDLoss, kd_objective, lambda_schedule
from blmkd.errors import BlmkdError
from blmkd.models import create_model
from blmkd.training.config import TrainConfig
from blmkd.training.evaluation import apply_variants
from blmkd.training.loop import fit


@pytest.fixture(scope="module")
def bundle(ip_crop_path):
    return prepare_data(DataOptions(dataset=str(ip_crop_path), patch=7, seed=0))


@pytest.fixture(scope="module")
def teacher_dir(bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    t = create_model("ssa_mamba_test", bands=bundle.scene.bands, num_classes=bundle.scene.num_classes)
    fit(t, bundle, TrainConfig(epochs=1, batch_size=256, patience=0), out, progress=False)
    return out


def _student(bundle):
    torch.manual_seed(0)
    s = create_model("blm_test", bands=bundle.scene.bands, num_classes=bundle.scene.num_classes)
    s.set_dequant(*[torch.as_tensor(a) for a in bundle.prep.dequant_affine()])
    return s


def test_cached_teacher_gives_the_live_teacher_loss(bundle, teacher_dir):
    teacher = load_checkpoint(teacher_dir).build_model()
    cache = teacher_cache(teacher, bundle, variants=8)
    rows, cols, labels = bundle.coords("train")
    assert cache.shape == (len(rows), 8, bundle.scene.num_classes)
    cfg = KDConfig(temperature=3.0, warmup_epochs=4, lambda_max=1.0)
    objective = kd_objective(cfg, cache)
    student = _student(bundle).eval()
    idx = torch.arange(0, 40)
    variants = torch.arange(40) % 8
    x_u8 = apply_variants(bundle.byte_extractor.gather(rows[:40], cols[:40]), variants)
    y = torch.from_numpy(labels[:40])
    loss_cached, _, parts = objective(student, x_u8, y, idx, variants, epoch=3)
    # live: the teacher sees the same float patches under the same symmetries
    with torch.inference_mode():
        z_t = teacher(apply_variants(bundle.float_extractor.gather(rows[:40], cols[:40]), variants))
    lam = lambda_schedule(2, 4)
    live, _ = DistillationLoss(temperature=3.0)(student(x_u8), z_t, y, lam)
    assert parts["lambda"] == pytest.approx(0.5)
    assert loss_cached.item() == pytest.approx(live.item(), rel=1e-5, abs=1e-6)


def test_unlabelled_pool_adds_lambda_times_kd_on_pixels_without_labels(bundle, teacher_dir):
    teacher = load_checkpoint(teacher_dir).build_model()
    ur, uc = unlabelled_coords(bundle, 50, seed=0)
    assert len(ur) == 50 and (bundle.scene.labels[ur, uc] == UNLABELLED).all()
    for which in ("train", "val", "test"):  # never a pixel of the split
        assert not getattr(bundle.split, which)[ur, uc].any()
    assert (unlabelled_coords(bundle, 50, seed=0)[0] == ur).all()  # seeded
    logits = teacher_cache(teacher, bundle, 1, coords=(ur, uc))[:, 0]
    with torch.inference_mode():
        assert torch.allclose(logits, teacher(bundle.float_extractor.gather(ur, uc)), atol=1e-5)
    pool = UnlabelledPool(ur, uc, logits, bundle.byte_extractor)
    rows, cols, labels = bundle.coords("train")
    cache = teacher_cache(teacher, bundle, variants=1)
    cfg = KDConfig(temperature=2.0, warmup_epochs=0, lambda_max=0.5, unlabelled=50)
    student = _student(bundle).eval()  # eval: BatchNorm does not couple the two halves of the batch
    idx = torch.arange(0, 16)
    x = bundle.byte_extractor.gather(rows[:16], cols[:16])
    y = torch.from_numpy(labels[:16])
    total, _, parts = kd_objective(cfg, cache, pool=pool, seed=3)(
        student, x, y, idx, torch.zeros(16, dtype=torch.long), 1
    )
    j = torch.randint(0, 50, (16,), generator=torch.Generator().manual_seed(3)).numpy()  # the pixels it drew
    loss = DistillationLoss(temperature=2.0)
    base, _ = loss(student(x), cache[idx, 0], y, 0.5)
    ku = loss.kd(student(bundle.byte_extractor.gather(ur[j], uc[j])), logits[j])
    assert parts["kd_unlabelled"] == pytest.approx(ku.item(), rel=1e-5)
    assert total.item() == pytest.approx(base.item() + 0.5 * ku.item(), rel=1e-5)


def test_cli_distills_a_tiny_student_end_to_end(teacher_dir, tmp_path, capsys):
    out = tmp_path / "student"
    main(["distill", "--teacher", str(teacher_dir), "--student", "blm_test", "--epochs", "2", "--warmup-epochs", "1",
          "--batch", "128", "--out", str(out), "--no-progress"])  # fmt: skip
    ck = load_checkpoint(out)
    assert ck.meta["teacher"]["model"] == "ssa_mamba_test"
    assert ck.meta["kd"]["temperature"] == KDConfig().temperature == 2.0  # the CLI's defaults are KDConfig's
    assert ck.meta["kd"]["lambda_max"] == KDConfig().lambda_max == 0.5
    assert ck.meta["split"]["digest"] == load_checkpoint(teacher_dir).meta["split"]["digest"]  # same split
    test = ck.meta["metrics"]["test"]  # OA is the support-weighted mean of the per-class accuracies
    rows = [r for r in test["per_class"] if r["support"]]
    assert test["oa"] == pytest.approx(
        sum(r["accuracy"] * r["support"] for r in rows) / sum(r["support"] for r in rows)
    )
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["lambda"] for r in log] == [0.0, 0.5]  # λ_0 → the default λ_max
    text = capsys.readouterr().out
    assert "teacher vs student" in text and "FLOPs/px" in text


def test_decoupled_kd_objective_targets_the_label_and_the_cli_records_it(bundle, teacher_dir, tmp_path):
    teacher = load_checkpoint(teacher_dir).build_model()
    cache = teacher_cache(teacher, bundle, variants=1)
    rows, cols, labels = bundle.coords("train")
    cfg = KDConfig(
        temperature=2.0, kd_loss="dkd", warmup_epochs=0, lambda_max=0.5, dkd_alpha=0.25, dkd_beta=2.0
    )
    student = _student(bundle).eval()
    x, y = bundle.byte_extractor.gather(rows[:32], cols[:32]), torch.from_numpy(labels[:32])
    idx = torch.arange(32)
    _, _, parts = kd_objective(cfg, cache)(student, x, y, idx, torch.zeros(32, dtype=torch.long), 1)
    with torch.inference_mode():
        z_s = student(x)
    want = KDLoss(2.0, "dkd", 0.25, 2.0)(z_s, cache[idx, 0], y)  # the label is DKD's target class
    assert parts["kd"] == pytest.approx(want.item(), rel=1e-5)
    out = tmp_path / "dkd"
    main(["distill", "--teacher", str(teacher_dir), "--student", "blm_test", "--epochs", "1", "--batch", "128",
          "--kd-loss", "dkd", "--dkd-alpha", "0.25", "--class-shrink", "5", "--out", str(out), "--no-progress"])  # fmt: skip
    kd = load_checkpoint(out).meta["kd"]
    assert (kd["kd_loss"], kd["dkd_alpha"], kd["dkd_beta"], kd["class_shrink"]) == ("dkd", 0.25, 1.0, 5.0)


def _step_on_32_pixels(bundle, teacher_dir, cfg, **objective_kwargs):
    """One ``kd_objective`` step on the first 32 training pixels: the total loss, the student's
    logits, the labels and the teacher's cached logits for those pixels."""
    teacher = load_checkpoint(teacher_dir).build_model()
    cache = teacher_cache(teacher, bundle, variants=1)
    rows, cols, labels = bundle.coords("train")
    student = _student(bundle).eval()
    x, y = bundle.byte_extractor.gather(rows[:32], cols[:32]), torch.from_numpy(labels[:32]).long()
    idx = torch.arange(32)
    total, _, _ = kd_objective(cfg, cache, **objective_kwargs)(
        student, x, y, idx, torch.zeros(32, dtype=torch.long), 1
    )
    with torch.inference_mode():
        z_s = student(x)
    return total, z_s, y, cache[idx, 0]


def test_class_shrink_gives_small_classes_less_teacher(bundle, teacher_dir):
    labels = bundle.coords("train")[2]
    counts = torch.bincount(torch.from_numpy(labels).long(), minlength=bundle.scene.num_classes)
    cfg = KDConfig(temperature=2.0, warmup_epochs=0, lambda_max=0.5, class_shrink=10.0)
    total, z_s, y, z_t = _step_on_32_pixels(bundle, teacher_dir, cfg, class_counts=counts)
    trust = counts[y].float() / (counts[y].float() + 10.0)
    ce_i = F.cross_entropy(z_s, y, reduction="none")
    kd_i = KDLoss(2.0).per_pixel(z_s, z_t)
    want = ((1 - 0.5 * trust) * ce_i + 0.5 * trust * kd_i).mean()
    assert total.item() == pytest.approx(want.item(), rel=1e-5)
    assert trust.min() < trust.max()  # the crop's classes differ in size, so the test means something
    with pytest.raises(ValueError, match="class_counts"):
        kd_objective(cfg, z_t[:, None])


def test_class_weights_scale_each_labelled_pixel(bundle, teacher_dir):
    from blmkd.training.config import class_balance_weights

    w = class_balance_weights(bundle.coords("train")[2], bundle.scene.num_classes, 0.9)
    cfg = KDConfig(temperature=2.0, warmup_epochs=0, lambda_max=0.5)
    total, z_s, y, z_t = _step_on_32_pixels(bundle, teacher_dir, cfg, class_weights=w)
    mixed = 0.5 * F.cross_entropy(z_s, y, reduction="none") + 0.5 * KDLoss(2.0).per_pixel(z_s, z_t)
    assert total.item() == pytest.approx((w[y] * mixed).mean().item(), rel=1e-5)
    assert w[y].min() < w[y].max()  # pixels of differently sized classes, so the weights matter


def test_cli_distills_on_unlabelled_pixels(teacher_dir, tmp_path):
    out = tmp_path / "student_u"
    main(["distill", "--teacher", str(teacher_dir), "--student", "blm_test", "--epochs", "2", "--warmup-epochs", "1",
          "--batch", "128", "--unlabelled", "300", "--class-balance", "0.9", "--out", str(out), "--no-progress"])  # fmt: skip
    meta = load_checkpoint(out).meta
    assert meta["kd"]["unlabelled"] == 300 and meta["training"]["class_balance"] == 0.9
    available = int((bundle_labels(teacher_dir) < 0).sum())
    assert meta["kd"]["unlabelled_used"] == 300 and meta["kd"]["unlabelled_available"] == available > 300
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["kd_unlabelled"] == 0.0 and log[1]["kd_unlabelled"] > 0  # λ is 0 in the first epoch


def bundle_labels(run):
    from blmkd.bundle import bundle_from_checkpoint

    return bundle_from_checkpoint(load_checkpoint(run)).scene.labels


def test_cli_distill_says_how_many_unlabelled_pixels_it_used(teacher_dir, tmp_path, capsys):
    """A scene with fewer unlabelled pixels than asked: all of them are used, and the run says so."""
    available = int((bundle_labels(teacher_dir) < 0).sum())
    assert available < 5000  # the 60×60 crop
    out = tmp_path / "student_all"
    main(["distill", "--teacher", str(teacher_dir), "--student", "blm_test", "--epochs", "1", "--batch", "256",
          "--unlabelled", "5000", "--out", str(out), "--no-progress"])  # fmt: skip
    kd = load_checkpoint(out).meta["kd"]
    assert (kd["unlabelled"], kd["unlabelled_used"], kd["unlabelled_available"]) == (
        5000,
        available,
        available,
    )
    text = capsys.readouterr().out.replace("\n", " ")
    assert f"unlabelled pixels: {available} used of {available}" in text and "fewer than asked" in text


def test_ensemble_cache_is_the_mean_of_the_members(bundle, teacher_dir):
    t = load_checkpoint(teacher_dir).build_model()
    torch.manual_seed(1)
    other = create_model(
        "ssa_mamba_test", bands=bundle.scene.bands, num_classes=bundle.scene.num_classes
    ).eval()
    one, two = teacher_cache(t, bundle, 2), teacher_cache(other, bundle, 2)
    assert torch.equal(ensemble_cache([t], bundle, 2), one)
    assert torch.allclose(ensemble_cache([t, other], bundle, 2), (one + two) / 2, atol=1e-6)


def test_with_patch_keeps_the_pixels_and_refuses_a_split_that_follows_the_window(bundle, ip_crop_path):
    assert with_patch(bundle, None) is bundle and with_patch(bundle, 7) is bundle
    small = with_patch(bundle, 5)
    assert small.patch_size == 5 and small.options.patch == 5 and bundle.patch_size == 7
    assert small.split.spec["digest"] == bundle.split.spec["digest"]  # the same train/val/test pixels
    assert small.split.leakage < bundle.split.leakage  # a smaller window reaches fewer training pixels
    assert small.prep is bundle.prep and small.scene is bundle.scene
    assert tuple(small.byte_extractor.gather([3], [4]).shape[-2:]) == (5, 5)
    disjoint = prepare_data(DataOptions(dataset=str(ip_crop_path), strategy="disjoint", patch=7, seed=0))
    with pytest.raises(BlmkdError, match="changes this disjoint split"):
        with_patch(disjoint, 9)


def test_ensemble_cache_runs_each_member_on_its_own_window(bundle, teacher_dir):
    t = load_checkpoint(teacher_dir).build_model()
    small = with_patch(bundle, 5)
    seven, five = teacher_cache(t, bundle, 1), teacher_cache(t, small, 1)
    assert (seven - five).abs().max() > 1e-4  # the windows really differ
    assert torch.allclose(ensemble_cache([t, t], [bundle, small], 1), (seven + five) / 2, atol=1e-6)


def test_cli_distills_a_student_with_a_smaller_window_than_its_teacher(teacher_dir, tmp_path, capsys):
    out = tmp_path / "student_p5"
    main(["distill", "--teacher", str(teacher_dir), "--student", "blm_test", "--patch", "5", "--epochs", "1",
          "--batch", "128", "--out", str(out), "--no-progress"])  # fmt: skip
    meta, tmeta = load_checkpoint(out).meta, load_checkpoint(teacher_dir).meta
    assert meta["data"]["patch_size"] == 5 and meta["split"]["patch_size"] == 5
    assert meta["split"]["digest"] == tmeta["split"]["digest"]  # tested on the teacher's test pixels
    assert meta["teacher"]["patch"] == 7 == tmeta["data"]["patch_size"]
    table = capsys.readouterr().out
    assert re.search(r"│ +7×7 │", table) and re.search(r"│ +5×5 │", table)  # each row on its own window
    with pytest.raises(SystemExit):
        main(["distill", "--teacher", str(teacher_dir), "--student", "blm_test", "--patch", "4", "--epochs", "1",
              "--out", str(tmp_path / "bad"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "odd" in err[0]


def test_teacher_tta_cache_is_the_mean_over_the_8_views(bundle, teacher_dir):
    t = load_checkpoint(teacher_dir).build_model()
    views = teacher_cache(t, bundle, 8)  # (N, 8, K)
    tta = ensemble_cache([t], bundle, 1, tta=True)  # whatever the student's variants
    assert tta.shape == (views.shape[0], 1, views.shape[2])
    assert torch.allclose(tta[:, 0], views.mean(1), atol=1e-6)
    assert (views - views[:, :1]).abs().max() > 1e-4  # the views really differ


def test_cli_distills_from_the_teacher_tta_targets(teacher_dir, tmp_path, capsys):
    out = tmp_path / "student_tta"
    main(["distill", "--teacher", str(teacher_dir), "--student", "blm_test", "--epochs", "1", "--warmup-epochs", "0",
          "--batch", "128", "--teacher-tta", "--ema", "0.9", "--out", str(out), "--no-progress"])  # fmt: skip
    meta = load_checkpoint(out).meta
    assert meta["kd"]["teacher_tta"] is True and meta["training"]["ema"] == 0.9
    with pytest.raises(SystemExit):
        main(["distill", "--teacher", str(teacher_dir), "--student", "blm_test", "--teacher-tta", "--hint-weight", "1",
              "--out", str(tmp_path / "bad"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--teacher-tta" in err[0]


def test_cli_distills_from_an_ensemble_and_refuses_mixed_splits(teacher_dir, ip_crop_path, tmp_path, capsys):
    # the second member: a student trained alone on the same data and split (seed 0)
    main(["train-student", "--student", "blm_test", "--dataset", str(ip_crop_path), "--epochs", "1", "--batch", "256",
          "--out", str(tmp_path / "s0"), "--no-progress"])  # fmt: skip
    out = tmp_path / "ens"
    main(["distill", "--teacher", str(teacher_dir), "--teacher", str(tmp_path / "s0"), "--student", "blm_test",
          "--epochs", "1", "--batch", "128", "--out", str(out), "--no-progress"])  # fmt: skip
    meta = load_checkpoint(out).meta
    assert [t["model"] for t in meta["teachers"]] == ["ssa_mamba_test", "blm_test"]
    roles = re.findall(r"│ (teacher|student) +│", capsys.readouterr().out)  # the side-by-side table's rows
    assert roles == ["teacher", "teacher", "student"]
    main(["train-student", "--student", "blm_test", "--dataset", str(ip_crop_path), "--seed", "1", "--epochs", "1",
          "--batch", "256", "--out", str(tmp_path / "s1"), "--no-progress"])  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["distill", "--teacher", str(teacher_dir), "--teacher", str(tmp_path / "s1"), "--student", "blm_test",
              "--epochs", "1", "--out", str(tmp_path / "bad"), "--no-progress"])  # fmt: skip
    assert "differ in their split" in capsys.readouterr().err


def test_cli_train_student_without_teacher(ip_crop_path, tmp_path):
    main(["train-student", "--student", "blm_test", "--dataset", str(ip_crop_path), "--epochs", "1", "--batch", "256",
          "--out", str(tmp_path / "s"), "--no-progress"])  # fmt: skip
    ck = load_checkpoint(tmp_path / "s")
    assert "teacher" not in ck.meta and ck.meta["model"]["input_kind"] == "uint8"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--student", "nope"], "unknown model preset"),
        (["--student", "ssa_mamba_test"], "not a student"),
        (["--temperature", "0"], "--temperature must be > 0"),
        (["--warmup-epochs", "-1"], "--warmup-epochs must be"),
        (["--lambda-max", "1.5"], "--lambda-max must be in [0, 1]"),
        (["--lambda-0", "-0.1"], "--lambda-0 must be in [0, 1]"),
        (["--dataset", "salinas"], "the teacher was trained on"),
        (["--unlabelled", "-1"], "--unlabelled must be ≥ 0"),
        (["--kd-loss", "mse"], "--kd-loss must be kl, soft-ce or dkd"),
        (["--kd-loss", "dkd", "--dkd-beta", "-1"], "--dkd-beta must be ≥ 0"),
        (["--class-shrink", "-1"], "--class-shrink must be ≥ 0"),
        (["--class-balance", "1.2"], "--class-balance must be in [0, 1)"),
    ],
)
def test_bad_distill_arguments_are_one_line_errors(teacher_dir, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        main(["distill", "--teacher", str(teacher_dir), "--out", str(tmp_path / "x"), "--epochs", "1", *args])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_missing_teacher(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["distill", "--teacher", str(tmp_path / "none"), "--out", str(tmp_path / "x")])
    assert "teacher not found" in capsys.readouterr().err


def test_every_command_uses_the_one_default_student():
    import inspect

    from blmkd.cli.demo import demo
    from blmkd.cli.distill import distill, train_student
    from blmkd.defaults import DEFAULT_STUDENT
    from blmkd.models import model_entry

    assert model_entry(DEFAULT_STUDENT).family == "student"
    for command in (distill, train_student, demo):
        assert inspect.signature(command).parameters["student"].default == DEFAULT_STUDENT
