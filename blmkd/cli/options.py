"""Command-line options, declared once per config and composed into the commands.

Each config of :mod:`blmkd.api` has one group of options here: :data:`DATA`
(:class:`~blmkd.bundle.DataOptions`), :data:`TRAIN` (:class:`~blmkd.training.config.TrainConfig`),
:data:`KD` (:class:`~blmkd.distill.kd.KDConfig`) and :data:`RUN` (:class:`~blmkd.api.RunConfig`).
A command takes a group with its own defaults (``TRAIN.but(epochs=200)``), and :func:`command`
turns the group into options and their values back into the one config the command receives::

    @command(data=DATA, train=TRAIN, run=RUN.but(out=Path("runs/teacher")))
    def train_teacher(model: Model = "ssa_mamba_s", *, data: DataOptions, train: TrainConfig, run: RunConfig):
        ...
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from blmkd.api import RunConfig
from blmkd.bundle import DataOptions
from blmkd.cli.common import console, parse_seeds
from blmkd.cli.patch_options import PatchOrAuto
from blmkd.data.scene import read_class_names
from blmkd.distill.kd import KDConfig
from blmkd.training.config import TrainConfig


@dataclass(frozen=True)
class Opt:
    """One option: the command's parameter name, its ``Annotated[type, typer.Option(...)]`` and default."""

    name: str
    hint: object
    default: object = None


@dataclass(frozen=True)
class Group:
    """The options of one config and how their values make it (``make(**values)``)."""

    make: Callable[..., object]
    opts: tuple[Opt, ...]

    def but(self, *, drop: tuple[str, ...] = (), **changes) -> Group:
        """This group without the options ``drop``; ``changes``: a new default, or an :class:`Opt` replacing one."""
        opts = []
        for o in self.opts:
            if o.name in drop:
                continue
            new = changes.get(o.name, o.default)
            opts.append(new if isinstance(new, Opt) else replace(o, default=new))
        return Group(self.make, tuple(opts))


def command(**groups: Group):
    """Give a command the options of ``groups``; it receives each group as one config, by the group's name."""

    def wrap(fn):
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(fn).parameters.values() if p.name not in groups]  # fmt: skip
        added = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default, annotation=o.hint)
                 for g in groups.values() for o in g.opts]  # fmt: skip

        @functools.wraps(fn)
        def cmd(**values):
            for name, g in groups.items():
                values[name] = g.make(**{o.name: values.pop(o.name) for o in g.opts})
            return fn(**values)

        del cmd.__wrapped__  # typer reads the composed signature, not the function's own
        cmd.__signature__ = inspect.Signature([*own, *added], return_annotation=None)
        cmd.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
        return cmd

    return wrap


# ----------------------------------------------------------------------------------------------
# Data: the scene and its split (the options of `blmkd split` wherever data is read)

Dataset = Annotated[
    str, typer.Option("--dataset", "-d", help="Registry name (see `blmkd datasets`) or path to a cube file.")
]
GT = Annotated[
    Path | None, typer.Option("--gt", help="Ground-truth file, when it is not inside the cube file.")
]
CubeKey = Annotated[
    str | None,
    typer.Option(
        "--cube-key", help="Variable holding the cube in a .mat/.npz/.h5 (default: found automatically)."
    ),
]
GTKey = Annotated[
    str | None,
    typer.Option("--gt-key", help="Variable holding the ground truth (default: found automatically)."),
]
Fill = Annotated[float | None, typer.Option("--fill", help="Replace NaN/Inf cube values with this number.")]
ClassNames = Annotated[
    Path | None,
    typer.Option(
        "--class-names",
        help="Text file naming the classes of a scene read by path: one name per line in the order of the ground-truth ids, or `ID: NAME` lines.",
    ),
]
Strategy = Annotated[str, typer.Option("--strategy", help="Split: ratio | per-class | disjoint | fixed.")]
TrainAmount = Annotated[
    float,
    typer.Option(
        "--train",
        help="Training pixels: a fraction per class (ratio, disjoint) or a count per class (per-class).",
    ),
]
Val = Annotated[
    float, typer.Option("--val", help="Validation pixels: fraction of each class's non-training pixels.")
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the split and of the model initialisation.")]
Patch = Annotated[int, typer.Option("--patch", help="Odd patch (window) size P; the model sees P×P pixels.")]
Buffer = Annotated[
    int | None,
    typer.Option("--buffer", help="Disjoint split: pixels between train and test (default: P // 2)."),
]
AllowSmall = Annotated[
    bool,
    typer.Option(
        "--allow-small", help="Give a class too small for the split one training pixel instead of failing."
    ),
]
TrainMap = Annotated[
    Path | None,
    typer.Option("--train-map", help="Fixed split: map of training pixels (ground-truth ids, 0 = not used)."),
]
TestMap = Annotated[Path | None, typer.Option("--test-map", help="Fixed split: map of test pixels.")]


def data_options(**kw) -> DataOptions:
    """:class:`DataOptions` from option values: paths become strings, a class-names file its names."""
    if kw.get("class_names") is not None:
        kw["class_names"] = read_class_names(kw["class_names"])
    return DataOptions(**{k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()})


DATA = Group(data_options, (
    Opt("dataset", Dataset, "indian_pines"), Opt("gt", GT), Opt("cube_key", CubeKey), Opt("gt_key", GTKey),
    Opt("fill", Fill), Opt("class_names", ClassNames), Opt("strategy", Strategy, "ratio"),
    Opt("train", TrainAmount, 0.1), Opt("val", Val, 0.05), Opt("seed", Seed, 0), Opt("patch", Patch, 7),
    Opt("buffer", Buffer), Opt("allow_small", AllowSmall, False), Opt("train_map", TrainMap),
    Opt("test_map", TestMap),
))  # fmt: skip
#: The data of a training command: ``--patch`` may also be ``auto`` (chosen on validation pixels).
TRAIN_DATA = DATA.but(patch=Opt("patch", PatchOrAuto, 7))

# ----------------------------------------------------------------------------------------------
# Training: optimiser, schedule, selection (TrainConfig)

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
#: The teacher's --ema (on by default there, so its help gives no example value).
TeacherEMA = Annotated[
    float,
    typer.Option(
        "--ema",
        help="Validate, keep and test an exponential moving average of the weights with this per-step decay (0 = off).",
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
Amp = Annotated[
    str,
    typer.Option(
        "--amp",
        help="Mixed precision of the training steps: off (FP32) or bf16 (bfloat16 autocast; CUDA GPUs and CPUs with BF16 units).",
    ),
]


def train_config(*, batch: int, lr_warmup: int, **kw) -> TrainConfig:
    return TrainConfig(batch_size=batch, warmup_epochs=lr_warmup, **kw)


TRAIN = Group(train_config, (
    Opt("epochs", Epochs, 100), Opt("batch", Batch, 64), Opt("lr", LR, 1e-3), Opt("weight_decay", WD, 5e-4),
    Opt("lr_warmup", Warmup, 5), Opt("patience", Patience, 30), Opt("augment", Augment, True),
    Opt("ema", EMA, 0.0), Opt("label_smoothing", LabelSmoothing, 0.0), Opt("class_balance", ClassBalance, 0.0),
    Opt("amp", Amp, "off"),
))  # fmt: skip
#: The students' recipe (train-student, distill): longer, a higher learning rate, more patience.
STUDENT_TRAIN = TRAIN.but(epochs=200, lr=3e-3, patience=60)

# ----------------------------------------------------------------------------------------------
# Distillation (KDConfig)

_KD = KDConfig()  # the defaults of the KD options are the config's own
KD = Group(KDConfig, (
    Opt("temperature", Annotated[float, typer.Option(
        "--temperature", "-T", help="Softening temperature T (> 0; paper's best range 2–6).")], _KD.temperature),
    Opt("warmup_epochs", Annotated[int, typer.Option(
        "--warmup-epochs", help="Epochs over which λ_t rises linearly from λ_0 to λ_max.")], 20),
    Opt("lambda_0", Annotated[float, typer.Option("--lambda-0", help="λ at epoch 0, in [0, 1].")], 0.0),
    Opt("lambda_max", Annotated[float, typer.Option(
        "--lambda-max", help="λ after the warm-up, in [0, 1]; < 1 keeps some hard-label signal.")], _KD.lambda_max),
    Opt("kd_loss", Annotated[str, typer.Option(
        "--kd-loss",
        help="kl: T²·KL(teacher ‖ student); soft-ce: the paper's soft cross-entropy; dkd: decoupled KD, T²·(α·TCKD + β·NCKD): the teacher's confidence in the label and its view of the other classes, weighted apart.",
    )], "kl"),
    Opt("dkd_alpha", Annotated[float, typer.Option(
        "--dkd-alpha",
        help="--kd-loss dkd: weight α of the target-class term (≥ 0; 0 leaves the confidence to the labels).",
    )], 0.0),
    Opt("dkd_beta", Annotated[float, typer.Option(
        "--dkd-beta", help="--kd-loss dkd: weight β of the non-target term (≥ 0).")], 1.0),
    Opt("class_shrink", Annotated[float, typer.Option(
        "--class-shrink",
        help="Trust the teacher less on classes it learnt from few pixels: a pixel's λ is λ_t·n/(n + K), n the training pixels of its class (0 = off).",
    )], 0.0),
    Opt("hint_weight", Annotated[float, typer.Option(
        "--hint-weight", help="Weight of a feature-level hint loss through a learned projection (0 = off).")], 0.0),
    Opt("unlabelled", Annotated[int, typer.Option(
        "--unlabelled",
        help="Also distil on up to N pixels the ground truth leaves unlabelled (never train/val/test; teacher logits cached once); 0 = off.",
    )], 0),
    Opt("teacher_tta", Annotated[bool, typer.Option(
        "--teacher-tta",
        help="Target: the teacher's logits averaged over the 8 dihedral views of each patch (test-time augmentation of the teacher; 8× its caching time).",
    )], False),
))  # fmt: skip

# ----------------------------------------------------------------------------------------------
# Where and how a run goes (RunConfig)

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
TrainDevice = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where to train: auto (a CUDA GPU where one is visible, else the CPU), cpu, cuda or cuda:N. Under torchrun each rank uses its own GPU.",
    ),
]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


def run_config(*, seeds: str | None, **kw) -> RunConfig:
    return RunConfig(seeds=parse_seeds(seeds), console=console, **kw)


RUN = Group(run_config, (
    Opt("seeds", Seeds), Opt("out", Out, Path("runs/run")), Opt("resume", Resume, False),
    Opt("force", Force, False), Opt("device", TrainDevice, "auto"), Opt("progress", Progress, True),
))  # fmt: skip
