"""`blmkd distill` (student from a teacher checkpoint) and `blmkd train-student` (no teacher)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import blmkd.api as api
from blmkd.bundle import DataOptions
from blmkd.cli.options import KD, RUN, STUDENT_TRAIN, TRAIN_DATA, command
from blmkd.cli.patch_options import CentreWeight, StudentPatch
from blmkd.distill.kd import KDConfig
from blmkd.training.config import TrainConfig

Student = Annotated[
    str, typer.Option("--student", "-s", help="Student preset (see `blmkd models --family student`).")
]


@command(training=STUDENT_TRAIN.but(drop=("label_smoothing",)), kd=KD, run=RUN.but(out=Path("runs/student")))
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
    student: Student = api.DEFAULT_STUDENT,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Must match the teacher's dataset; default: the teacher's."),
    ] = None,
    patch: StudentPatch = None,
    centre_weight: CentreWeight = 0.0,
    *,
    training: TrainConfig,
    kd: KDConfig,
    run: api.RunConfig,
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
    api.distill(
        teacher, student, training, kd, run, dataset=dataset, patch=patch, centre_weight=centre_weight
    )


@command(data=TRAIN_DATA, training=STUDENT_TRAIN, run=RUN.but(out=Path("runs/student_nokd")))
def train_student(
    student: Student = api.DEFAULT_STUDENT,
    centre_weight: CentreWeight = 0.0,
    *,
    data: DataOptions,
    training: TrainConfig,
    run: api.RunConfig,
) -> None:
    """Train a student on labels alone (no teacher), to measure what distillation adds."""
    api.train_student(student, data, training, run, centre_weight=centre_weight)


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)
    app.command("train-student")(train_student)
