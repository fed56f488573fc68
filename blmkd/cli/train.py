"""`blmkd train-teacher` and `blmkd evaluate`."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from blmkd.cli import common as C
from blmkd.cli.patch_options import CentreWeight, PatchOrAuto
from blmkd.errors import BlmkdError
from blmkd.io import check_writable_dir, check_writable_file


def _train_cfg(
    epochs,
    batch,
    lr,
    weight_decay,
    warmup,
    patience,
    augment,
    seed,
    ema=0.0,
    label_smoothing=0.0,
    class_balance=0.0,
    *,
    device="cpu",
    amp="off",
):
    from blmkd.distributed import set_local_device
    from blmkd.train import AMP_MODES, TrainConfig

    if epochs < 1:
        raise BlmkdError("--epochs must be at least 1")
    if batch < 2:
        raise BlmkdError("--batch must be at least 2 (BatchNorm needs two samples)")
    if lr <= 0:
        raise BlmkdError("--lr must be positive")
    if not 0.0 <= ema < 1.0:
        raise BlmkdError(f"--ema must be in [0, 1) (0 = off), got {ema}")
    if not 0.0 <= label_smoothing < 1.0:
        raise BlmkdError(f"--label-smoothing must be in [0, 1), got {label_smoothing}")
    if not 0.0 <= class_balance < 1.0:
        raise BlmkdError(f"--class-balance must be in [0, 1) (0 = off), got {class_balance}")
    if amp not in AMP_MODES:
        raise BlmkdError(f"--amp must be one of {', '.join(AMP_MODES)}, not {amp!r}")
    set_local_device(device)  # checked here, before any data or teacher is loaded
    return TrainConfig(
        epochs=epochs, batch_size=batch, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup,
        patience=patience, augment=augment, seed=seed, ema=ema, label_smoothing=label_smoothing,
        class_balance=class_balance, amp=amp,
    )  # fmt: skip


Epochs = Annotated[int, typer.Option("--epochs", help="Maximum number of epochs.")]
Batch = Annotated[int, typer.Option("--batch", help="Training batch size.")]
LR = Annotated[float, typer.Option("--lr", help="AdamW peak learning rate (paper: 1e-3).")]
WD = Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (paper: 5e-4).")]
Warmup = Annotated[
    int, typer.Option("--lr-warmup", help="Epochs of linear learning-rate warm-up before the cosine decay.")
]
Patience = Annotated[
    int,
    typer.Option(
        "--patience",
        help="Early stopping: epochs without a better validation OA, or an equal one with a lower validation loss (0 = off).",
    ),
]
Augment = Annotated[
    bool, typer.Option("--augment/--no-augment", help="Random dihedral flips/rotations of training patches.")
]
EMA = Annotated[
    float,
    typer.Option(
        "--ema",
        help="Validate, keep and test an exponential moving average of the weights with this per-step decay, e.g. 0.99 (0 = off).",
    ),
]
LabelSmoothing = Annotated[
    float, typer.Option("--label-smoothing", help="Cross-entropy label smoothing in [0, 1).")
]
ClassBalance = Annotated[
    float,
    typer.Option(
        "--class-balance",
        help="Weigh each pixel's loss by its class: 1/effective number of the class's training pixels, (1 − βⁿ)/(1 − β) (Cui et al. 2019), mean weight 1. β in [0, 1), e.g. 0.9; 0 = off.",
    ),
]
Seeds = Annotated[
    str | None,
    typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2: one run each, then mean ± std."),
]
Out = Annotated[Path, typer.Option("--out", "-o", help="Run directory (checkpoints, metrics.jsonl).")]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue from OUT/last.safetensors (says which epoch; refuses another model, dataset, split or preprocessing).",
    ),
]
Force = Annotated[
    bool,
    typer.Option("--force", help="Replace the run already in OUT (without it, an existing run is refused)."),
]


def train_teacher(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Teacher preset (see `blmkd models`).")
    ] = "ssa_mamba_s",
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
    epochs: Epochs = 100,
    batch: Batch = 64,
    lr: LR = 1e-3,
    weight_decay: WD = 5e-4,
    lr_warmup: Warmup = 5,
    patience: Patience = 30,
    augment: Augment = True,
    ema: Annotated[
        float,
        typer.Option(
            "--ema",
            help="Validate, keep and test an exponential moving average of the weights with this per-step decay (0 = off).",
        ),
    ] = 0.99,
    label_smoothing: LabelSmoothing = 0.0,
    class_balance: ClassBalance = 0.0,
    out: Out = Path("runs/teacher"),
    resume: Resume = False,
    force: Force = False,
    device: C.TrainDevice = "auto",
    amp: C.Amp = "off",
    progress: C.Progress = True,
) -> None:
    """Train an SSA-Mamba teacher on a scene and write self-describing checkpoints.

    Writes OUT/best.safetensors (highest validation OA, ties broken by the lower validation loss;
    with test metrics and which epoch was kept and why), OUT/last.safetensors
    (for --resume) and OUT/metrics.jsonl. With --seeds, one run per seed in OUT/seed_<s> and
    the mean ± std of OA/AA/κ in OUT/summary.json.
    """
    from blmkd.models import create_model, model_entry

    if model_entry(model).family != "teacher":
        raise BlmkdError(
            f"{model!r} is a {model_entry(model).family} preset; use `blmkd train-student` for students"
        )
    cfg = _train_cfg(
        epochs, batch, lr, weight_decay, lr_warmup, patience, augment, seed, ema, label_smoothing, class_balance,
        device=device, amp=amp,
    )  # fmt: skip  # every option checked before the data loads; each seed's run gets a copy with its seed
    seed_list = C.parse_seeds(seeds) or [seed]
    _run_seeds(
        seed_list,
        out,
        lambda s, bundle: create_model(model, bands=bundle.scene.bands, num_classes=bundle.scene.num_classes,
                                       centre_weight=centre_weight),
        dict(dataset=dataset, gt=gt, cube_key=cube_key, gt_key=gt_key, fill=fill, class_names=class_names, strategy=strategy, train=train,
             val=val, patch=patch, buffer=buffer, allow_small=allow_small, train_map=train_map, test_map=test_map),
        lambda s: replace(cfg, seed=s),
        resume=resume,
        force=force,
        progress=progress,
        title=f"teacher {model}",
    )  # fmt: skip


def _run_seeds(seed_list, out, build, data_kw, cfg_for_seed, *, resume, progress, title, fit_kwargs=None, bundle=None,
               force=False):  # fmt: skip
    """Train one run per seed (OUT itself for a single seed) and print/record the results.

    ``bundle`` reuses prepared data (distillation takes the teacher's) instead of ``data_kw``.
    Each run folder is claimed first (:func:`blmkd.runs.claim_run`: locked, cleaned, refused if it
    holds a run and neither ``resume`` nor ``force`` is given); with several seeds OUT is locked too,
    and under ``resume`` a seed whose folder holds no run yet starts at epoch 1. The seed is set
    before the model is built, so the same command and seed give the same run.
    Under torchrun every rank trains and only rank 0 prints, locks and writes the summary.
    """
    import torch

    from blmkd.distributed import is_main
    from blmkd.flops import count_flops, count_params
    from blmkd.patch_select import select_patch_for
    from blmkd.runs import RunLock, claim_run, existing_run, last_epoch
    from blmkd.train import fit, prepare_data, write_summary

    say = C.console.print if is_main() else (lambda *a, **k: None)
    check_writable_dir(out, "--out")  # before any data loads or model trains
    choice = None
    if data_kw.get("patch") == "auto":  # P from the first seed's validation pixels (blmkd/patch_select.py)
        choice = select_patch_for(C.data_options(seed=seed_list[0], **{**data_kw, "patch": 1}),
                                  lambda b: build(seed_list[0], b), cfg_for_seed(seed_list[0]), say=say)  # fmt: skip
        data_kw = {**data_kw, "patch": choice.patch}
    runs = []
    with contextlib.ExitStack() as stack:
        if len(seed_list) > 1:
            out.mkdir(parents=True, exist_ok=True)
            root = _on_main(lambda: RunLock(out).acquire())
            if root is not None:
                stack.enter_context(root)
        for s in seed_list:
            run_dir = out if len(seed_list) == 1 else out / f"seed_{s}"
            if bundle is None or len(seed_list) > 1:
                bundle = prepare_data(C.data_options(seed=s, **data_kw))
            cfg = cfg_for_seed(s)
            resume_s = resume and (len(seed_list) == 1 or bool(existing_run(run_dir)))
            if resume and not resume_s:
                say(f"[bold]{title}[/] seed {s}: no run in {run_dir} yet, starting at epoch 1")
            lock = _on_main(lambda run_dir=run_dir, r=resume_s: claim_run(run_dir, resume=r, force=force))
            try:
                if resume_s:
                    ep = last_epoch(run_dir) if is_main() else None
                    left = (
                        f"epochs {ep + 1}–{cfg.epochs} to go"
                        if ep is not None and ep < cfg.epochs
                        else "no epochs left"
                    )
                    say(
                        f"[bold]{title}[/] seed {s}: resuming {run_dir} from last.safetensors after epoch {ep} ({left})"
                    )
                torch.manual_seed(s)  # the initial weights are the seed's, not whatever ran before
                model = build(s, bundle)
                kwargs = fit_kwargs(s, bundle, model) if fit_kwargs else {}
                say(
                    f"[bold]{title}[/] seed {s}: {bundle.scene.name} {bundle.scene.height}×{bundle.scene.width}×{bundle.scene.bands}, "
                    f"{int(bundle.split.train.sum())} train / {int(bundle.split.val.sum())} val / {int(bundle.split.test.sum())} test px, "
                    f"leakage {bundle.split.leakage:.3f}"
                )
                res = fit(model, bundle, cfg, run_dir, resume=resume_s, progress=progress, **kwargs)
            finally:
                if lock is not None:
                    lock.release()
            x = bundle.extractor(getattr(model, "input_kind", "float")).gather([0], [0])
            stats = {"parameters": count_params(model), "flops_per_pixel": count_flops(model, x)}
            runs.append({"seed": s, "dir": str(run_dir), "test": res.test, "best_epoch": res.best_epoch,
                         "epochs_run": res.epochs_run, "selection": res.selection, "wall_s": res.wall_s, "leakage": float(bundle.split.leakage), **stats})  # fmt: skip
            say(
                C.report_table(
                    f"{title} seed {s}: test split (best epoch {res.best_epoch}, {res.wall_s:.0f} s)",
                    [(title, res.test)],
                )
            )
            if res.selection:
                say(
                    f"kept epoch {res.best_epoch} of {res.epochs_run}: {res.selection['reason']}",
                    highlight=False,
                )
        if choice is not None and is_main():
            choice.write(out / "patch_select.json")
        if len(seed_list) > 1 and is_main():
            summ = write_summary(out / "summary.json", runs)
            say(
                f"[bold]{title}[/] over seeds {seed_list}: "
                + "  ".join(
                    f"{k.upper()} {100 * summ[k]['mean']:.2f} ± {100 * summ[k]['std']:.2f}"
                    for k in ("oa", "aa", "kappa")
                )
            )
    return runs


def _on_main(claim):
    """``claim()`` (a lock) on rank 0 alone (None elsewhere); its refusal is raised on every rank, so none trains."""
    from blmkd import distributed as D
    from blmkd.runs import RunError

    D.init_from_env()
    lock, err = None, None
    if D.is_main():
        try:
            lock = claim()
        except BlmkdError as exc:
            err = str(exc)
    err = D.broadcast_object(err)
    if err is not None:
        raise RunError(err)
    return lock


def evaluate(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint file or run directory (uses its best.safetensors).")
    ],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Evaluate on another scene (default: the checkpoint's)."),
    ] = None,
    gt: C.GT = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="Another split strategy (default: the checkpoint's).")
    ] = None,
    train: Annotated[float | None, typer.Option("--train", help="Split amount for --strategy.")] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Split seed (default: the checkpoint's).")
    ] = None,
    split_set: Annotated[str, typer.Option("--set", help="Which pixels: test | val | train.")] = "test",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="Test-time augmentation: average the class probabilities of the 8 dihedral views of each window (8× the inference time).",
        ),
    ] = False,
) -> None:
    """OA/AA/κ, per-class accuracy and the confusion matrix of a checkpoint on its test split.

    Defaults to the checkpoint's own dataset, split and preprocessing, so the numbers are the
    ones it was trained to be judged on. On another split (--strategy, --train, --seed) the pixels
    the model was trained and selected on are removed from the evaluated set, and the leakage shown
    is the share of its windows that contain one of the model's own training pixels.
    """
    from blmkd.checkpoint import load_checkpoint
    from blmkd.io import atomic_write_json
    from blmkd.train import bundle_from_checkpoint, evaluate_model, held_out_bundle

    if split_set not in ("test", "val", "train"):
        raise BlmkdError(f"--set must be test, val or train, not {split_set!r}")
    if json_out:
        check_writable_file(json_out, "--json")
    ck = load_checkpoint(checkpoint)
    bundle = bundle_from_checkpoint(
        ck, dict(dataset=dataset, gt=str(gt) if gt else None, strategy=strategy, train=train, seed=seed)
    )
    bundle, held = held_out_bundle(ck, bundle, split_set)
    model = ck.build_model()
    rep = evaluate_model(model, bundle, split_set, tta=tta).to_dict(
        bundle.scene.class_ids, bundle.scene.class_names
    )
    if not held["own_split"]:
        C.console.print(
            f"another split than the model's: {held['note']} ({held['pixels']} px left)", highlight=False
        )
    C.console.print(
        C.report_table(
            f"{ck.model_name}{' (8-view TTA)' if tta else ''} on {bundle.scene.name} ({split_set} split, leakage {held['leakage']:.3f} vs the model's training pixels)",
            [(ck.model_name, rep)],
        )
    )
    C.console.print(C.per_class_table(rep))
    _print_confusion(rep)
    if json_out:
        atomic_write_json(json_out, {"checkpoint": str(ck.path), "set": split_set, "tta": tta, "leakage": held["leakage"],
                                     "held_out": held, **rep})  # fmt: skip


def _print_confusion(rep: dict) -> None:
    from rich.table import Table

    cm = rep.get("confusion")
    if cm is None:
        return
    t = Table(title="confusion matrix (rows: true, columns: predicted; original ids)")
    ids = [str(c["id"]) for c in rep.get("per_class", [])] or [str(i) for i in range(len(cm))]
    t.add_column("")
    for i in ids:
        t.add_column(i, justify="right")
    for i, row in zip(ids, cm):
        t.add_row(i, *[str(v) if v else "·" for v in row])
    C.console.print(t)


def register(app: typer.Typer) -> None:
    app.command("train-teacher")(train_teacher)
    app.command("evaluate")(evaluate)
