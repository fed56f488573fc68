"""`blmkd distill` (student from a teacher checkpoint) and `blmkd train-student` (no teacher)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from blmkd.cli import common as C
from blmkd.cli.patch_options import CentreWeight, PatchOrAuto, StudentPatch
from blmkd.cli.train import (
    EMA,
    LR,
    WD,
    Augment,
    Batch,
    ClassBalance,
    Epochs,
    Force,
    LabelSmoothing,
    Out,
    Patience,
    Resume,
    Seeds,
    Warmup,
    _run_seeds,
    _train_cfg,
)
from blmkd.errors import BlmkdError, ModelError

Student = Annotated[
    str, typer.Option("--student", "-s", help="Student preset (see `blmkd models --family student`).")
]


def _check_student(name: str) -> None:
    from blmkd.models import model_entry

    if model_entry(name).family != "student":
        raise BlmkdError(f"{name!r} is a {model_entry(name).family} preset, not a student")


def _teacher_for_seed(teacher: Path, seed: int | None):
    """A teacher path may be a single run or a multi-seed folder with seed_<s>/ runs."""
    from blmkd.checkpoint import load_checkpoint

    if not teacher.exists():
        raise ModelError(f"teacher not found: {teacher}")
    if seed is not None and (teacher / f"seed_{seed}").is_dir():
        return load_checkpoint(teacher / f"seed_{seed}")
    return load_checkpoint(teacher)


def distill(
    teacher: Annotated[
        list[Path],
        typer.Option(
            "--teacher",
            "-t",
            metavar="PATH",
            help="Teacher checkpoint or run directory (or a --seeds folder with seed_<s>/ runs). Repeat it to distil from an ensemble: the teachers' logits are averaged; they must share the data and split.",
        ),
    ],
    student: Student = C.DEFAULT_STUDENT,
    temperature: Annotated[
        float,
        typer.Option("--temperature", "-T", help="Softening temperature T (> 0; paper's best range 2–6)."),
    ] = 2.0,  # KDConfig's default
    warmup_epochs: Annotated[
        int, typer.Option("--warmup-epochs", help="Epochs over which λ_t rises linearly from λ_0 to λ_max.")
    ] = 20,
    lambda_0: Annotated[float, typer.Option("--lambda-0", help="λ at epoch 0, in [0, 1].")] = 0.0,
    lambda_max: Annotated[
        float,
        typer.Option(
            "--lambda-max", help="λ after the warm-up, in [0, 1]; < 1 keeps some hard-label signal."
        ),
    ] = 0.5,  # KDConfig's default
    kd_loss: Annotated[
        str,
        typer.Option(
            "--kd-loss",
            help="kl: T²·KL(teacher ‖ student); soft-ce: the paper's soft cross-entropy; dkd: decoupled KD, T²·(α·TCKD + β·NCKD): the teacher's confidence in the label and its view of the other classes, weighted apart.",
        ),
    ] = "kl",
    dkd_alpha: Annotated[
        float,
        typer.Option(
            "--dkd-alpha",
            help="--kd-loss dkd: weight α of the target-class term (≥ 0; 0 leaves the confidence to the labels).",
        ),
    ] = 0.0,
    dkd_beta: Annotated[
        float, typer.Option("--dkd-beta", help="--kd-loss dkd: weight β of the non-target term (≥ 0).")
    ] = 1.0,
    class_shrink: Annotated[
        float,
        typer.Option(
            "--class-shrink",
            help="Trust the teacher less on classes it learnt from few pixels: a pixel's λ is λ_t·n/(n + K), n the training pixels of its class (0 = off).",
        ),
    ] = 0.0,
    hint_weight: Annotated[
        float,
        typer.Option(
            "--hint-weight",
            help="Weight of a feature-level hint loss through a learned projection (0 = off).",
        ),
    ] = 0.0,
    unlabelled: Annotated[
        int,
        typer.Option(
            "--unlabelled",
            help="Also distil on up to N pixels the ground truth leaves unlabelled (never train/val/test; teacher logits cached once); 0 = off.",
        ),
    ] = 0,
    teacher_tta: Annotated[
        bool,
        typer.Option(
            "--teacher-tta",
            help="Target: the teacher's logits averaged over the 8 dihedral views of each patch (test-time augmentation of the teacher; 8× its caching time).",
        ),
    ] = False,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Must match the teacher's dataset; default: the teacher's."),
    ] = None,
    patch: StudentPatch = None,
    centre_weight: CentreWeight = 0.0,
    seeds: Seeds = None,
    epochs: Epochs = 200,
    batch: Batch = 64,
    lr: LR = 3e-3,
    weight_decay: WD = 5e-4,
    lr_warmup: Warmup = 5,
    patience: Patience = 60,
    augment: Augment = True,
    ema: EMA = 0.0,
    class_balance: ClassBalance = 0.0,
    out: Out = Path("runs/student"),
    resume: Resume = False,
    force: Force = False,
    device: C.TrainDevice = "auto",
    amp: C.Amp = "off",
    progress: C.Progress = True,
) -> None:
    """Distill a byte-latent Mamba student from a teacher checkpoint.

    Dataset, split and preprocessing come from the teacher's checkpoint, so no test pixel leaks
    through the teacher. The teacher's logits are computed once per augmentation variant and
    cached. Loss: (1 − λ_t)·CE + λ_t·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)).
    Repeat --teacher to distil from an ensemble (averaged logits); --unlabelled N also distils on
    pixels without ground truth. The defaults are the paper's schedule; docs/distillation.md gives
    the recipes (--temperature, --lambda-max, --unlabelled, --class-balance) and what each is for.
    Ends with teacher vs student side by side: OA/AA/κ, parameters, FLOPs per pixel and CPU latency.
    """
    import contextlib

    import torch

    from blmkd.distill.kd import KDConfig, ensemble_cache, kd_objective, teacher_cache
    from blmkd.distributed import is_main
    from blmkd.models import create_model
    from blmkd.patch_select import select_patch
    from blmkd.runs import existing_run
    from blmkd.train import bundle_from_checkpoint, class_balance_weights, with_patch

    _check_student(student)
    teacher = (
        [teacher] if isinstance(teacher, (str, Path)) else list(teacher)
    )  # Python callers may pass one path
    kd = KDConfig(
        temperature,
        kd_loss,
        warmup_epochs,
        lambda_0,
        lambda_max,
        hint_weight,
        unlabelled,
        teacher_tta,
        dkd_alpha,
        dkd_beta,
        class_shrink,
    )
    kd.validate()
    # Built (and checked) before the teacher loads; each seed's run gets a copy with its seed.
    train_cfg = _train_cfg(
        epochs,
        batch,
        lr,
        weight_decay,
        lr_warmup,
        patience,
        augment,
        0,
        ema,
        0.0,
        class_balance,
        device=device,
        amp=amp,
    )
    if len(teacher) > 1 and kd.hint_weight > 0:
        raise BlmkdError("--hint-weight needs a single teacher (an ensemble has no one feature space)")
    seed_list = C.parse_seeds(seeds)
    first = _teacher_for_seed(teacher[0], seed_list[0] if seed_list else None)
    tdata = first.meta.get("data", {})
    if dataset is not None and dataset != tdata.get("options", {}).get("dataset"):
        raise BlmkdError(
            f"the teacher was trained on {tdata.get('options', {}).get('dataset')!r}, not {dataset!r}; "
            "distill on the teacher's own data (or train a teacher for this one)"
        )
    if seed_list is None:
        seed_list = [int(tdata.get("options", {}).get("seed", 0))]
    teachers: dict[int, list] = {}
    t_bundles: dict[int, list] = {}  # per seed, each teacher's data through its own window

    def build(s, bundle):
        return create_model(
            student,
            bands=bundle.scene.bands,
            num_classes=bundle.scene.num_classes,
            centre_weight=centre_weight,
        )

    def fit_kwargs(s, bundle, model):
        cks, tbs = teachers[s], t_bundles[s]
        t_models = [ck.build_model() for ck in cks]
        for p in (p for t in t_models for p in t.parameters()):
            p.requires_grad_(False)
        model.set_dequant(*[torch.as_tensor(a) for a in bundle.prep.dequant_affine()])
        variants = 8 if augment else 1
        who = "teacher" if len(cks) == 1 else f"{len(cks)} teachers'"
        views = 8 if kd.teacher_tta else variants
        msg = f"caching {who} logits ({views} view(s) × {int(bundle.split.train.sum())} patches)"
        with C.console.status(msg) if is_main() else contextlib.nullcontext():
            if kd.hint_weight > 0:
                cache, feats = teacher_cache(t_models[0], tbs[0], variants, features=True)
            else:
                cache, feats = ensemble_cache(t_models, tbs, variants, tta=kd.teacher_tta), None
        pool = None
        used = {}
        if kd.unlabelled:
            from blmkd.distill.kd import UnlabelledPool, unlabelled_coords

            ur, uc = unlabelled_coords(bundle, kd.unlabelled, s)
            available = int((bundle.scene.labels < 0).sum())
            used = {"unlabelled_used": len(ur), "unlabelled_available": available}
            if is_main():
                C.console.print(f"unlabelled pixels: {len(ur)} used of {available} in {bundle.scene.name} (--unlabelled {kd.unlabelled})"
                                + (": the scene has fewer than asked" if len(ur) < kd.unlabelled else ""), highlight=False)  # fmt: skip
            with (
                C.console.status(f"caching {who} logits for {len(ur)} unlabelled pixels")
                if is_main()
                else contextlib.nullcontext()
            ):
                ul = ensemble_cache(t_models, tbs, 1, coords=(ur, uc), tta=kd.teacher_tta)[:, 0]
            pool = UnlabelledPool(ur, uc, ul, bundle.extractor(model.input_kind))
        hint = None
        extra = []
        if feats is not None:
            from blmkd.distill.losses import HintLoss

            _, f_s = model(bundle.extractor(model.input_kind).gather([0, 1], [0, 1]), return_features=True)
            hint = HintLoss(f_s.shape[1], feats.shape[-1])
            extra = [hint]
        facts = [{"path": str(ck.path), "model": ck.model_name, "config": ck.config, "patch": b.patch_size,
                  "metrics": ck.meta.get("metrics", {}), "parameters": ck.meta["model"].get("parameters")} for ck, b in zip(cks, tbs, strict=True)]  # fmt: skip
        meta = {"teacher": facts[0], "kd": {**kd.to_dict(), **used}}
        if len(facts) > 1:
            meta["teachers"] = facts  # an ensemble: "teacher" is its first member
        labels, K = bundle.coords("train")[2], bundle.scene.num_classes
        counts = torch.bincount(torch.as_tensor(labels).long(), minlength=K)
        weights = class_balance_weights(labels, K, class_balance) if class_balance else None
        objective = kd_objective(
            kd, cache, feats, hint, pool, seed=s, class_counts=counts, class_weights=weights
        )
        return {"objective": objective, "meta_extra": meta, "extra_modules": extra}

    # Each seed uses its teacher's own data: same dataset, split and preprocessing.
    runs, choice = [], None
    for s in seed_list:
        cks = [_teacher_for_seed(t, s) for t in teacher]
        teachers[s] = cks
        ck = cks[0]
        tbundle = bundle_from_checkpoint(ck)
        if tbundle.options.seed != s and len(seed_list) > 1:
            raise BlmkdError(f"teacher {ck.path} was trained with split seed {tbundle.options.seed}, not {s}")
        _check_same_data(cks)
        t_bundles[s] = [
            with_patch(tbundle, c.meta.get("data", {}).get("options", {}).get("patch")) for c in cks
        ]
        if patch == "auto":  # the student's P, on this split's validation pixels (blmkd/patch_select.py)
            choice = select_patch(tbundle, lambda b, s=s: build(s, b), dataclasses.replace(train_cfg, seed=s),
                                  say=C.console.print)  # fmt: skip
            patch = choice.patch
        bundle = with_patch(tbundle, patch)  # the student's window on the teacher's pixels
        run_dir = out if len(seed_list) == 1 else out / f"seed_{s}"
        resume_s = resume and (
            len(seed_list) == 1 or bool(existing_run(run_dir))
        )  # a seed not started yet starts
        runs += _run_seeds(
            [bundle.options.seed], run_dir, build, {}, lambda _s: dataclasses.replace(train_cfg, seed=_s),
            resume=resume_s, force=force, progress=progress, title=f"student {student}", fit_kwargs=fit_kwargs,
            bundle=bundle,
        )  # fmt: skip
        if is_main():  # under torchrun rank 0 alone prints, times and writes
            _side_by_side(cks, run_dir, t_bundles[s] + [bundle])
    if choice is not None and is_main():
        choice.write(out / "patch_select.json")
    if len(seed_list) > 1 and is_main():
        from blmkd.train import write_summary

        summ = write_summary(out / "summary.json", runs)
        C.console.print(
            f"[bold]student {student}[/] over seeds {seed_list}: "
            + "  ".join(
                f"{k.upper()} {100 * summ[k]['mean']:.2f} ± {100 * summ[k]['std']:.2f}"
                for k in ("oa", "aa", "kappa")
            )
        )


def _check_same_data(cks) -> None:
    """The members of a teacher ensemble must have seen the same data, split and preprocessing."""
    ref = cks[0]
    for ck in cks[1:]:
        for what, fact in (
            ("split", lambda m: m.get("split", {}).get("digest")),
            ("preprocessing", lambda m: m.get("preprocessing")),
        ):
            if fact(ref.meta) != fact(ck.meta):
                raise BlmkdError(
                    f"teachers {ref.path} and {ck.path} differ in their {what}; an ensemble needs the same data"
                )


def _side_by_side(teacher_cks, student_dir: Path, bundles) -> None:
    """Print teacher(s) vs student: OA/AA/κ, parameters, FLOPs per pixel, CPU batch-1 latency;
    ``bundles``: each teacher's data, then the student's (each measured on its own window)."""
    import torch
    from rich.table import Table

    from blmkd.bench.timing import time_call
    from blmkd.checkpoint import load_checkpoint
    from blmkd.flops import count_flops, count_params

    rows = []
    roles = [("teacher", t) for t in teacher_cks] + [("student", load_checkpoint(student_dir))]
    for (role, ck), bundle in zip(roles, bundles, strict=True):
        m = ck.build_model()
        x1 = bundle.extractor(getattr(m, "input_kind", "float")).gather([0], [0])
        with torch.inference_mode():
            t = time_call(
                lambda m=m, x1=x1: m(x1), warmup=5, runs=200 if role == "student" else 30, max_seconds=5
            )
        test = ck.meta.get("metrics", {}).get("test", {})
        rows.append(
            (role, ck.model_name, bundle.patch_size, test, count_params(m), count_flops(m, x1), t.p50_ms)
        )
    tb = Table(title="teacher vs student (test split, CPU batch-1 latency p50)")
    windows = len({r[2] for r in rows}) > 1  # a window column only where the windows differ
    for c in (
        "role",
        "preset",
        *(["window"] if windows else []),
        "OA %",
        "AA %",
        "κ ×100",
        "params",
        "FLOPs/px",
        "latency ms",
    ):
        tb.add_column(c, justify="left" if c in ("role", "preset") else "right")
    for role, name, p, test, params, flops, lat in rows:
        tb.add_row(role, name, *([f"{p}×{p}"] if windows else []), f"{100 * test.get('oa', float('nan')):.2f}", f"{100 * test.get('aa', float('nan')):.2f}",
                   f"{100 * test.get('kappa', float('nan')):.2f}", f"{params:,}", f"{flops / 1e6:.2f} M", f"{lat:.3f}")  # fmt: skip
    C.console.print(tb)


def train_student(
    student: Student = C.DEFAULT_STUDENT,
    dataset: C.Dataset = "indian_pines",
    gt: C.GT = None,
    cube_key: C.CubeKey = None,
    gt_key: C.GTKey = None,
    fill: C.Fill = None,
    class_names: C.ClassNames = None,
    strategy: C.Strategy = "ratio",
    train: C.TrainAmount = 0.1,
    val: C.Val = 0.05,
    seed: C.Seed = 0,
    seeds: Seeds = None,
    patch: PatchOrAuto = 7,
    centre_weight: CentreWeight = 0.0,
    buffer: C.Buffer = None,
    allow_small: C.AllowSmall = False,
    train_map: C.TrainMap = None,
    test_map: C.TestMap = None,
    epochs: Epochs = 200,
    batch: Batch = 64,
    lr: LR = 3e-3,
    weight_decay: WD = 5e-4,
    lr_warmup: Warmup = 5,
    patience: Patience = 60,
    augment: Augment = True,
    ema: EMA = 0.0,
    label_smoothing: LabelSmoothing = 0.0,
    class_balance: ClassBalance = 0.0,
    out: Out = Path("runs/student_nokd"),
    resume: Resume = False,
    force: Force = False,
    device: C.TrainDevice = "auto",
    amp: C.Amp = "off",
    progress: C.Progress = True,
) -> None:
    """Train a student on labels alone (no teacher), to measure what distillation adds."""
    import torch

    from blmkd.models import create_model

    _check_student(student)
    cfg = _train_cfg(
        epochs, batch, lr, weight_decay, lr_warmup, patience, augment, seed, ema, label_smoothing, class_balance,
        device=device, amp=amp,
    )  # fmt: skip  # every option checked before the data loads; each seed's run gets a copy with its seed

    def build(s, bundle):
        m = create_model(
            student,
            bands=bundle.scene.bands,
            num_classes=bundle.scene.num_classes,
            centre_weight=centre_weight,
        )
        m.set_dequant(*[torch.as_tensor(a) for a in bundle.prep.dequant_affine()])
        return m

    _run_seeds(
        C.parse_seeds(seeds) or [seed], out, build,
        dict(dataset=dataset, gt=gt, cube_key=cube_key, gt_key=gt_key, fill=fill, class_names=class_names, strategy=strategy, train=train,
             val=val, patch=patch, buffer=buffer, allow_small=allow_small, train_map=train_map, test_map=test_map),
        lambda s: dataclasses.replace(cfg, seed=s),
        resume=resume, force=force, progress=progress, title=f"student {student} (no teacher)",
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)
    app.command("train-student")(train_student)
