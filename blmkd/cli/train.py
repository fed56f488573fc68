"""`blmkd train-teacher` and `blmkd evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import blmkd.api as api
from blmkd.bundle import DataOptions
from blmkd.cli.common import confusion_table, console, per_class_table
from blmkd.cli.options import GT, RUN, TRAIN, TRAIN_DATA, Opt, TeacherEMA, command
from blmkd.cli.patch_options import CentreWeight
from blmkd.io import atomic_write_json, check_writable_file
from blmkd.training.config import TrainConfig
from blmkd.training.summary import report_table


@command(
    data=TRAIN_DATA,
    training=TRAIN.but(ema=Opt("ema", TeacherEMA, 0.99)),
    run=RUN.but(out=Path("runs/teacher")),
)
def train_teacher(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Teacher preset (see `blmkd models`).")
    ] = "ssa_mamba_s",
    centre_weight: CentreWeight = 0.0,
    *,
    data: DataOptions,
    training: TrainConfig,
    run: api.RunConfig,
) -> None:
    """Train an SSA-Mamba teacher on a scene and write self-describing checkpoints.

    Writes OUT/best.safetensors (highest validation OA, ties broken by the lower validation loss;
    with test metrics and which epoch was kept and why), OUT/last.safetensors
    (for --resume) and OUT/metrics.jsonl. With --seeds, one run per seed in OUT/seed_<s> and
    the mean ± std of OA/AA/κ in OUT/summary.json.
    """
    api.train_teacher(model, data, training, run, centre_weight=centre_weight)


def evaluate(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint file or run directory (uses its best.safetensors).")
    ],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Evaluate on another scene (default: the checkpoint's)."),
    ] = None,
    gt: GT = None,
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
    if json_out:
        check_writable_file(json_out, "--json")
    res = api.evaluate(checkpoint, split_set, tta=tta, dataset=dataset, gt=gt, strategy=strategy, train=train,
                       seed=seed)  # fmt: skip
    held = res.held_out
    if not held["own_split"]:
        console.print(
            f"another split than the model's: {held['note']} ({held['pixels']} px left)", highlight=False
        )
    title = (f"{res.model}{' (8-view TTA)' if tta else ''} on {res.scene} ({split_set} split, leakage "
             f"{held['leakage']:.3f} vs the model's training pixels)")  # fmt: skip
    console.print(report_table(title, [(res.model, res.report)]))
    console.print(per_class_table(res.report))
    cm = confusion_table(res.report)
    if cm is not None:
        console.print(cm)
    if json_out:
        atomic_write_json(json_out, res.to_dict())


def register(app: typer.Typer) -> None:
    app.command("train-teacher")(train_teacher)
    app.command("evaluate")(evaluate)
