"""The teachers of a distillation run: found per seed, checked to agree, turned into cached targets,
and set beside the student at the end (accuracy, size, compute, CPU latency)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.table import Table
from torch import nn

from blmkd.bench.timing import time_call
from blmkd.bundle import Bundle
from blmkd.checkpoint import Checkpoint, load_checkpoint
from blmkd.distill.cache import UnlabelledPool, ensemble_cache, teacher_cache, unlabelled_coords
from blmkd.distill.kd import HintLoss, KDConfig
from blmkd.errors import BlmkdError, ModelError
from blmkd.flops import count_flops, count_params


def teacher_for_seed(teacher: str | Path, seed: int | None) -> Checkpoint:
    """A teacher path may be a single run or a multi-seed folder with seed_<s>/ runs."""
    teacher = Path(teacher)
    if not teacher.exists():
        raise ModelError(f"teacher not found: {teacher}")
    if seed is not None and (teacher / f"seed_{seed}").is_dir():
        return load_checkpoint(teacher / f"seed_{seed}")
    return load_checkpoint(teacher)


def check_same_data(cks: list[Checkpoint]) -> None:
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


@dataclass
class TeacherTargets:
    """What the student is distilled towards: cached teacher logits (N, V, K) and what goes with them."""

    cache: torch.Tensor
    features: torch.Tensor | None = None  # (N, V, D) for the hint loss
    hint: HintLoss | None = None
    pool: UnlabelledPool | None = None
    meta: dict = field(default_factory=dict)  # the teacher facts every student checkpoint records

    @property
    def extra_modules(self) -> list[nn.Module]:
        return [self.hint] if self.hint is not None else []


def teacher_targets(
    cks: list[Checkpoint],
    t_bundles: list[Bundle],
    bundle: Bundle,
    student: nn.Module,
    kd: KDConfig,
    augment: bool,
    seed: int,
    say: Callable[..., None],
    status: Callable[[str], contextlib.AbstractContextManager],
) -> TeacherTargets:
    """Run the frozen teacher(s) once over the training patches (every view the student will see)."""
    t_models = [ck.build_model() for ck in cks]
    for p in (p for t in t_models for p in t.parameters()):
        p.requires_grad_(False)
    student.set_dequant(*[torch.as_tensor(a) for a in bundle.prep.dequant_affine()])
    variants = 8 if augment else 1
    who = "teacher" if len(cks) == 1 else f"{len(cks)} teachers'"
    views = 8 if kd.teacher_tta else variants
    with status(f"caching {who} logits ({views} view(s) × {int(bundle.split.train.sum())} patches)"):
        if kd.hint_weight > 0:
            cache, feats = teacher_cache(t_models[0], t_bundles[0], variants, features=True)
        else:
            cache, feats = ensemble_cache(t_models, t_bundles, variants, tta=kd.teacher_tta), None
    pool, used = None, {}
    if kd.unlabelled:
        ur, uc = unlabelled_coords(bundle, kd.unlabelled, seed)
        available = int((bundle.scene.labels < 0).sum())
        used = {"unlabelled_used": len(ur), "unlabelled_available": available}
        say(f"unlabelled pixels: {len(ur)} used of {available} in {bundle.scene.name} (--unlabelled {kd.unlabelled})"
            + (": the scene has fewer than asked" if len(ur) < kd.unlabelled else ""), highlight=False)  # fmt: skip
        with status(f"caching {who} logits for {len(ur)} unlabelled pixels"):
            ul = ensemble_cache(t_models, t_bundles, 1, coords=(ur, uc), tta=kd.teacher_tta)[:, 0]
        pool = UnlabelledPool(ur, uc, ul, bundle.extractor(student.input_kind))
    hint = None
    if feats is not None:
        _, f_s = student(bundle.extractor(student.input_kind).gather([0, 1], [0, 1]), return_features=True)
        hint = HintLoss(f_s.shape[1], feats.shape[-1])
    facts = [{"path": str(ck.path), "model": ck.model_name, "config": ck.config, "patch": b.patch_size,
              "metrics": ck.meta.get("metrics", {}), "parameters": ck.meta["model"].get("parameters")}
             for ck, b in zip(cks, t_bundles, strict=True)]  # fmt: skip
    meta = {"teacher": facts[0], "kd": {**kd.to_dict(), **used}}
    if len(facts) > 1:
        meta["teachers"] = facts  # an ensemble: "teacher" is its first member
    return TeacherTargets(cache, feats, hint, pool, meta)


def side_by_side(teacher_cks: list[Checkpoint], student_dir: Path, bundles: list[Bundle]) -> list[dict]:
    """Teacher(s) vs student: test OA/AA/κ, parameters, FLOPs per pixel, CPU batch-1 latency p50;
    ``bundles``: each teacher's data, then the student's (each measured on its own window)."""
    rows = []
    roles = [("teacher", t) for t in teacher_cks] + [("student", load_checkpoint(student_dir))]
    for (role, ck), bundle in zip(roles, bundles, strict=True):
        m = ck.build_model()
        x1 = bundle.extractor(getattr(m, "input_kind", "float")).gather([0], [0])
        with torch.inference_mode():
            t = time_call(
                lambda m=m, x1=x1: m(x1), warmup=5, runs=200 if role == "student" else 30, max_seconds=5
            )
        rows.append({"role": role, "model": ck.model_name, "patch": bundle.patch_size,
                     "test": ck.meta.get("metrics", {}).get("test", {}), "parameters": count_params(m),
                     "flops_per_pixel": count_flops(m, x1), "latency_p50_ms": t.p50_ms})  # fmt: skip
    return rows


def side_by_side_table(rows: list[dict]) -> Table:
    tb = Table(title="teacher vs student (test split, CPU batch-1 latency p50)")
    windows = len({r["patch"] for r in rows}) > 1  # a window column only where the windows differ
    cols = ("role", "preset", *(["window"] if windows else []), "OA %", "AA %", "κ ×100", "params", "FLOPs/px",
            "latency ms")  # fmt: skip
    for c in cols:
        tb.add_column(c, justify="left" if c in ("role", "preset") else "right")
    for r in rows:
        test, p = r["test"], r["patch"]
        tb.add_row(r["role"], r["model"], *([f"{p}×{p}"] if windows else []),
                   *(f"{100 * test.get(k, float('nan')):.2f}" for k in ("oa", "aa", "kappa")),
                   f"{r['parameters']:,}", f"{r['flops_per_pixel'] / 1e6:.2f} M", f"{r['latency_p50_ms']:.3f}")  # fmt: skip
    return tb
