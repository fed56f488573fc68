"""The Python API: every step of the pipeline as one function of config dataclasses.

Train a teacher, then distil a student from it (docs/python-api.md)::

    from blmkd import api

    data = api.DataOptions(dataset="indian_pines", seed=0)
    teacher = api.train_teacher("ssa_mamba_s", data, api.TrainConfig(epochs=40, ema=0.99), api.RunConfig("runs/teacher"))
    student = api.distill(teacher.out, "blm_t", api.TrainConfig(epochs=100, lr=3e-3),
                          api.KDConfig(temperature=2.0, lambda_max=0.5), api.RunConfig("runs/student"))

Each function returns a result object (run folders, checkpoints, metrics, artifacts) and prints
nothing unless given a rich ``console`` (``RunConfig.console`` for training); the ``blmkd`` commands
are these functions with their options parsed into the same configs. The configs are importable
from here too: :class:`DataOptions` (the scene and its split), :class:`TrainConfig` (optimiser and
selection), :class:`KDConfig` (distillation), :class:`BaselineConfig` and the ones below.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

import blmkd.distributed as D
from blmkd.baselines import BaselineConfig, BaselineResult, train_baselines
from blmkd.bench.memory import peak_rss_bytes
from blmkd.bench.runner import run_bench
from blmkd.bench.shard import predict_scene_sharded
from blmkd.bundle import (
    Bundle,
    DataOptions,
    bundle_from_checkpoint,
    held_out_bundle,
    prepare_data,
    with_patch,
)
from blmkd.checkpoint import load_checkpoint
from blmkd.defaults import DEFAULT_STUDENT
from blmkd.distill.kd import KDConfig, kd_objective
from blmkd.distill.teachers import (
    check_same_data,
    side_by_side,
    side_by_side_table,
    teacher_for_seed,
    teacher_targets,
)
from blmkd.errors import BlmkdError, DataError, ModelError
from blmkd.export import export as export_artifacts
from blmkd.inference.classifier import open_classifier
from blmkd.inference.maps import check_map_path, load_scene_for_map, write_map
from blmkd.io import atomic_write_json, check_writable_dir, check_writable_file
from blmkd.models import create_model, model_entry
from blmkd.runs import existing_run
from blmkd.training.config import TrainConfig, class_balance_weights
from blmkd.training.evaluation import evaluate_model
from blmkd.training.patch_select import select_patch, select_patch_for
from blmkd.training.seeds import RunConfig, TrainResult, silent, train_seeds
from blmkd.training.summary import report_table, seeds_line, write_summary

__all__ = [
    "DEFAULT_STUDENT", "BaselineConfig", "BaselineRuns", "BenchConfig", "DataOptions", "EvalResult", "ExportConfig",
    "KDConfig", "PredictConfig", "PredictResult", "RunConfig", "TrainConfig", "TrainResult", "baseline", "bench",
    "distill", "evaluate", "export", "predict", "train_student", "train_teacher",
]  # fmt: skip


def _check_family(name: str, family: str, hint: str) -> None:
    if model_entry(name).family != family:
        raise ModelError(f"{name!r} is a {model_entry(name).family} preset{hint}")


def _check_training(train: TrainConfig, run: RunConfig) -> None:
    train.validate()
    D.set_local_device(run.device)  # checked here, before any data or teacher is loaded


def _train(title: str, data: DataOptions, train: TrainConfig, run: RunConfig, build) -> TrainResult:
    out, seeds = Path(run.out), run.seeds or [data.seed]
    choice = None
    if data.patch == "auto":  # P from the first seed's validation pixels (blmkd.training.patch_select)
        check_writable_dir(out, "--out")  # before any candidate trains
        choice = select_patch_for(replace(data, seed=seeds[0]), build, replace(train, seed=seeds[0]),
                                  say=run.say if D.is_main() else silent)  # fmt: skip
        data = replace(data, patch=choice.patch)
    runs, summary = train_seeds(seeds, out, lambda s: prepare_data(replace(data, seed=s)), build, train,
                                resume=run.resume, force=run.force, progress=run.progress, title=title, say=run.say)  # fmt: skip
    if choice is not None and D.is_main():
        choice.write(out / "patch_select.json")
    return TrainResult(out, runs, summary, patch_choice=choice)


def train_teacher(model: str = "ssa_mamba_s", data: DataOptions | None = None, train: TrainConfig | None = None,
                  run: RunConfig | None = None, *, centre_weight: float = 0.0) -> TrainResult:  # fmt: skip
    """Train a teacher preset on ``data``: OUT/best.safetensors (with test metrics), last, metrics.jsonl.

    ``data.patch`` may be ``"auto"``: P is chosen on validation pixels first (OUT/patch_select.json).
    ``centre_weight`` w pools ``(1 − w)·mean + w·centre`` (thin structures; 0 = the plain mean).
    """
    data, train, run = data or DataOptions(), train or TrainConfig(), run or RunConfig("runs/teacher")
    _check_family(model, "teacher", "; use `blmkd train-student` for students")
    _check_training(train, run)

    def build(bundle: Bundle):
        return create_model(model, bands=bundle.scene.bands, num_classes=bundle.scene.num_classes,
                            centre_weight=centre_weight)  # fmt: skip

    return _train(f"teacher {model}", data, train, run, build)


def train_student(student: str = DEFAULT_STUDENT, data: DataOptions | None = None, train: TrainConfig | None = None,
                  run: RunConfig | None = None, *, centre_weight: float = 0.0) -> TrainResult:  # fmt: skip
    """Train a student on labels alone (no teacher), to measure what distillation adds (``data.patch``
    and ``centre_weight`` as in :func:`train_teacher`)."""
    data, run = data or DataOptions(), run or RunConfig("runs/student_nokd")
    train = train or TrainConfig(epochs=200, lr=3e-3, patience=60)
    _check_family(student, "student", ", not a student")
    _check_training(train, run)

    def build(bundle: Bundle):
        m = create_model(student, bands=bundle.scene.bands, num_classes=bundle.scene.num_classes,
                         centre_weight=centre_weight)  # fmt: skip
        m.set_dequant(*[torch.as_tensor(a) for a in bundle.prep.dequant_affine()])
        return m

    return _train(f"student {student} (no teacher)", data, train, run, build)


def distill(teacher: str | Path | list, student: str = DEFAULT_STUDENT, train: TrainConfig | None = None,
            kd: KDConfig | None = None, run: RunConfig | None = None, *, dataset: str | None = None,
            patch: int | str | None = None, centre_weight: float = 0.0) -> TrainResult:  # fmt: skip
    """Distil ``student`` from a teacher run (or an ensemble: a list of runs, logits averaged).

    Data, split and preprocessing are the teacher's (``dataset`` may only confirm them; ``patch``
    gives the student another window on the same pixels, ``"auto"`` one chosen on the validation
    pixels by short label-only runs; ``centre_weight`` as in :func:`train_teacher`). The teacher's logits are cached once per
    augmentation view; the loss is :func:`blmkd.distill.kd.kd_objective`. With ``run.seeds`` and a
    teacher folder of seed_<s>/ runs, each seed distils from its own teacher.
    """
    train, kd = train or TrainConfig(epochs=200, lr=3e-3, patience=60), kd or KDConfig()
    run = run or RunConfig("runs/student")
    _check_family(student, "student", ", not a student")
    teachers = [teacher] if isinstance(teacher, (str, Path)) else list(teacher)
    kd.validate()
    _check_training(train, run)  # before the teacher loads
    if len(teachers) > 1 and kd.hint_weight > 0:
        raise BlmkdError("--hint-weight needs a single teacher (an ensemble has no one feature space)")
    first = teacher_for_seed(teachers[0], run.seeds[0] if run.seeds else None)
    t_options = first.meta.get("data", {}).get("options", {})
    if dataset is not None and dataset != t_options.get("dataset"):
        raise BlmkdError(f"the teacher was trained on {t_options.get('dataset')!r}, not {dataset!r}; "
                         "distill on the teacher's own data (or train a teacher for this one)")  # fmt: skip
    out, seeds = Path(run.out), run.seeds or [int(t_options.get("seed", 0))]
    result = TrainResult(out, [])
    for s in seeds:  # each seed distils from its own teacher(s), on their data, split and preprocessing
        cks = [teacher_for_seed(t, s) for t in teachers]
        t_bundle = bundle_from_checkpoint(cks[0])
        if t_bundle.options.seed != s and len(seeds) > 1:
            raise BlmkdError(
                f"teacher {cks[0].path} was trained with split seed {t_bundle.options.seed}, not {s}"
            )
        check_same_data(cks)
        t_bundles = [
            with_patch(t_bundle, c.meta.get("data", {}).get("options", {}).get("patch")) for c in cks
        ]

        def build(bundle: Bundle):
            return create_model(student, bands=bundle.scene.bands, num_classes=bundle.scene.num_classes,
                                centre_weight=centre_weight)  # fmt: skip

        if patch == "auto":  # the student's P, on this split's validation pixels
            result.patch_choice = select_patch(t_bundle, build, replace(train, seed=s),
                                               say=run.say if D.is_main() else silent)  # fmt: skip
            patch = result.patch_choice.patch
        bundle = with_patch(t_bundle, patch)  # the student's window on the teacher's pixels
        run_dir = out if len(seeds) == 1 else out / f"seed_{s}"

        def setup(s, bundle, model, cks=cks, t_bundles=t_bundles) -> dict:
            t = teacher_targets(cks, t_bundles, bundle, model, kd, train.augment, s, run.say, run.status)
            labels, k = bundle.coords("train")[2], bundle.scene.num_classes
            counts = torch.bincount(torch.as_tensor(labels).long(), minlength=k)
            weights = class_balance_weights(labels, k, train.class_balance) if train.class_balance else None
            objective = kd_objective(kd, t.cache, t.features, t.hint, t.pool, seed=s, class_counts=counts,
                                     class_weights=weights)  # fmt: skip
            return {"objective": objective, "meta_extra": t.meta, "extra_modules": t.extra_modules}

        resume_s = run.resume and (
            len(seeds) == 1 or bool(existing_run(run_dir))
        )  # a seed not started starts
        runs, _ = train_seeds([bundle.options.seed], run_dir, lambda _s, b=bundle: b, build, train,
                                   resume=resume_s, force=run.force, progress=run.progress,
                                   title=f"student {student}", setup=setup, say=run.say)  # fmt: skip
        result.runs += runs
        if D.is_main():  # under torchrun rank 0 alone times and prints
            rows = side_by_side(cks, run_dir, [*t_bundles, bundle])
            result.side_by_side.append({"seed": s, "rows": rows})
            run.say(side_by_side_table(rows))
    if result.patch_choice is not None and D.is_main():
        result.patch_choice.write(out / "patch_select.json")
    if len(seeds) > 1 and D.is_main():
        result.summary = write_summary(out / "summary.json", result.runs)
        run.say(seeds_line(f"student {student}", seeds, result.summary))
    return result


@dataclass
class EvalResult:
    """A checkpoint's report on one set of pixels, and how far that set is from its training pixels."""

    checkpoint: Path
    model: str
    scene: str
    which: str  # test | val | train
    tta: bool
    report: dict  # OA, AA, κ, per class, confusion
    held_out: dict  # own_split, note, pixels, leakage

    def to_dict(self) -> dict:
        return {"checkpoint": str(self.checkpoint), "set": self.which, "tta": self.tta,
                "leakage": self.held_out["leakage"], "held_out": self.held_out, **self.report}  # fmt: skip


def evaluate(checkpoint: str | Path, which: str = "test", *, tta: bool = False, dataset: str | None = None,
             gt: str | Path | None = None, strategy: str | None = None, train: float | None = None,
             seed: int | None = None) -> EvalResult:  # fmt: skip
    """OA/AA/κ of a checkpoint on its own split (default) or another one without its training pixels."""
    if which not in ("test", "val", "train"):
        raise BlmkdError(f"--set must be test, val or train, not {which!r}")
    ck = load_checkpoint(checkpoint)
    overrides = dict(dataset=dataset, gt=str(gt) if gt else None, strategy=strategy, train=train, seed=seed)
    bundle, held = held_out_bundle(ck, bundle_from_checkpoint(ck, overrides), which)
    rep = evaluate_model(ck.build_model(), bundle, which, tta=tta)
    report = rep.to_dict(bundle.scene.class_ids, bundle.scene.class_names)
    return EvalResult(Path(ck.path), ck.model_name, bundle.scene.name, which, tta, report, held)


@dataclass
class ExportConfig:
    """Checks and options of :func:`blmkd.export.export` (None: the format's default)."""

    force: bool = False
    target: str | None = None  # TensorRT device
    build_engine: bool | None = None
    calibration: str | None = None  # INT8 calibrator
    calib_size: int | None = None
    atol: float | None = None
    min_agreement: float | None = None
    max_oa_drop: float | None = None
    eval_size: int | None = None
    runner: bool | None = None  # C: also the standalone runner
    c_target: str | None = None  # C: cross-build and check for this CPU


def export(checkpoint: str | Path, formats: list[str] | None = None, out_dir: str | Path | None = None,
           cfg: ExportConfig | None = None, log: Callable[[str], None] = silent) -> list:  # fmt: skip
    """Export a checkpoint to ``formats`` (default ONNX), each artifact checked against PyTorch."""
    return export_artifacts(
        checkpoint, formats or ["onnx"], out_dir, **asdict(cfg or ExportConfig()), log=log
    )


@dataclass
class BenchConfig:
    """What :func:`blmkd.bench.runner.run_bench` measures and judges."""

    dataset: str | None = None
    targets: list[str] | None = None
    targets_file: str | Path | None = None
    sensor: str | None = None
    batches: tuple[int, ...] = (1, 64, 1024)
    device: str = "cpu"
    runs: int = 100
    threads: int | None = None
    eval_size: int | None = None
    maps: bool | None = None
    tile: int = 256
    cpu_bf16: bool = False


def bench(models: list, report_dir: str | Path | None = None, cfg: BenchConfig | None = None,
          log: Callable[[str], None] = silent) -> dict:  # fmt: skip
    """Benchmark artifacts on one test split; rows, verdicts and (with ``report_dir``) the report's paths."""
    cfg = cfg or BenchConfig()
    return run_bench(models, report_dir, **{**asdict(cfg), "batches": list(cfg.batches)}, log=log)


@dataclass
class PredictConfig:
    """How a scene is mapped: tiles, batch, execution path and device."""

    mask_unlabelled: bool = False  # classify only pixels labelled in the ground truth
    tile: int = 256  # rows per streamed tile
    batch: int | None = None  # windows per model call (default per runtime)
    mode: str = "auto"  # auto | encode | encode-ort | encode-c | patch
    device: str = "cpu"
    threads: int | None = None


@dataclass
class PredictResult:
    pred: np.ndarray  # (H, W) class indices, -1 where not classified
    paths: list[Path]  # the maps written, then their JSON summary
    summary: dict  # model, scene, shape, mode, speed, peak memory, classes (the JSON written)
    wall_s: float  # mapping and writing, after the model and the scene are loaded


def predict(model: str | Path, scene: str, out: list[str | Path], cfg: PredictConfig | None = None, *,
            gt: str | Path | None = None, progress: Callable[[int, int], None] | None = None,
            console: Console | None = None) -> PredictResult | None:  # fmt: skip
    """Classify every pixel of a scene and write the map(s) and a JSON summary beside the first.

    Under torchrun the row tiles are dealt to the ranks and rank 0 writes; the others return None.
    """
    cfg = cfg or PredictConfig()
    paths = [check_writable_file(check_map_path(p), "--out") for p in out]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    D.init_from_env()  # under torchrun: join the group so that --device cuda means cuda:LOCAL_RANK
    clf = open_classifier(model, device=cfg.device, threads=cfg.threads, mode=cfg.mode)
    cube, labels, name, scene_ids = load_scene_for_map(scene, str(gt) if gt else None)
    if cfg.mask_unlabelled and labels is None:
        raise DataError(f"--mask-unlabelled needs ground truth; {scene} has none (pass --gt)")
    h, w, b = cube.shape
    if console is not None:
        console.print(f"{clf.label} ({clf.name}): {clf.mode} path, {h}×{w}×{b} {name}, tiles of {cfg.tile} rows",
                      highlight=False)  # fmt: skip
        if clf.note:
            console.print(f"note: {clf.note}", highlight=False)
    mask = (labels >= 0) if cfg.mask_unlabelled else None
    t0 = time.perf_counter()
    sm = predict_scene_sharded(clf, cube, tile=cfg.tile, batch=cfg.batch, mask=mask, progress=progress)
    if sm is None:  # another torchrun rank: rank 0 writes the map
        return None
    summary = {
        "model": str(model), "scene": scene, "shape": [h, w, b], "mode": sm.mode, "tile": cfg.tile, "batch": sm.batch,
        "pixels": sm.pixels, "seconds": sm.seconds, "px_s": sm.px_per_s, "peak_rss_mb": (peak_rss_bytes() or 0) / 2**20,
        "classes": [{"index": i, "id": c, "name": n} for i, (c, n) in enumerate(zip(clf.class_ids, clf.class_names))],
    }  # fmt: skip
    if labels is not None and scene_ids == clf.class_ids:
        lab = labels >= 0
        summary["oa_labelled"] = float((sm.pred[lab] == labels[lab]).mean()) if lab.any() else None
    for p in paths:
        write_map(p, sm.pred, clf.class_ids, clf.class_names, title=f"{clf.label} on {name}")
    atomic_write_json(paths[0].with_suffix(".json"), summary)
    return PredictResult(sm.pred, [*paths, paths[0].with_suffix(".json")], summary, time.perf_counter() - t0)


@dataclass
class BaselineRuns:
    """Baselines per model name, one :class:`~blmkd.baselines.BaselineResult` per seed."""

    out: Path
    results: dict[str, list[BaselineResult]]
    summaries: dict[str, dict] = field(default_factory=dict)  # mean ± std per model, with several seeds


def baseline(cfg: BaselineConfig | None = None, data: DataOptions | None = None, *, from_run: str | Path | None = None,
             seeds: list[int] | None = None, out: str | Path = "runs/baselines",
             console: Console | None = None) -> BaselineRuns:  # fmt: skip
    """Classical baselines (SVM, RF, k-NN) on the split of a deep run (``from_run``) or of ``data``."""
    cfg, out = cfg or BaselineConfig(), Path(out)
    say = console.print if console is not None else silent
    jobs = baseline_bundles(from_run, seeds, data or DataOptions())
    cfg.validate(jobs[0][1].patch_size)
    res = BaselineRuns(out, {})
    runs: dict[str, list[dict]] = {}
    for s, bundle, source in jobs:
        sc, sp = bundle.scene, bundle.split
        say(f"[bold]baselines[/] seed {s}: {sc.name} {sc.height}×{sc.width}×{sc.bands}, {int(sp.train.sum())} train / "
            f"{int(sp.val.sum())} val / {int(sp.test.sum())} test px, leakage {sp.leakage:.3f}"
            + (f" (the split of {source})" if source else ""))  # fmt: skip
        got = train_baselines(bundle, cfg, out, seed_dir=f"seed_{s}" if len(jobs) > 1 else None,
                              meta_extra={"from_run": source} if source else None,
                              log=lambda line: say(line, highlight=False, markup=False))  # fmt: skip
        say(report_table(f"baselines seed {s}: test split", [(r.name, r.test) for r in got]))
        for r in got:
            res.results.setdefault(r.name, []).append(r)
            runs.setdefault(r.name, []).append({"seed": s, "dir": str(r.dir), "test": r.test, "val_oa": r.val_oa,
                                                "leakage": float(sp.leakage)})  # fmt: skip
    if len(jobs) > 1:
        for name, rr in runs.items():
            res.summaries[name] = write_summary(out / name / "summary.json", rr)
            say(seeds_line(name, [r["seed"] for r in rr], res.summaries[name]))
    return res


def baseline_bundles(from_run: str | Path | None, seeds: list[int] | None,
                     data: DataOptions) -> list[tuple[int, Bundle, str | None]]:  # fmt: skip
    """(seed, bundle, source run) per seed: the deep run's own data, or ``data``'s split."""
    if from_run is None:
        return [(s, prepare_data(replace(data, seed=s)), None) for s in (seeds or [data.seed])]
    from_run = Path(from_run)
    if not from_run.exists():
        raise BlmkdError(f"run not found: {from_run}")
    if from_run.is_dir() and not (from_run / "best.safetensors").exists():
        dirs = sorted(
            from_run.glob("seed_*/best.safetensors"), key=lambda p: int(p.parent.name.split("_")[1])
        )
        if not dirs:
            raise BlmkdError(f"{from_run} holds neither best.safetensors nor seed_<s>/ runs")
        cks = [load_checkpoint(p) for p in dirs]
    else:
        cks = [load_checkpoint(from_run)]
    out = []
    for ck in cks:
        bundle = bundle_from_checkpoint(ck)
        if ck.meta.get("split", {}).get("digest") != bundle.split.spec["digest"]:
            raise BlmkdError(
                f"the split rebuilt for {ck.path} differs from the one it recorded: its data changed"
            )
        if seeds is None or bundle.options.seed in seeds:
            out.append((bundle.options.seed, bundle, str(ck.path)))
    if not out:
        raise BlmkdError(f"no run under {from_run} has a seed among {seeds}")
    return out
