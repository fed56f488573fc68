"""The training loop shared by teachers, students and distillation.

``fit`` trains any registered model on a :class:`~blmkd.bundle.Bundle` with AdamW, a cosine schedule with linear warm-up, gradient clipping, optional
dihedral augmentation, model selection and early stopping on validation OA (ties broken by the
validation loss), best/last checkpoints, ``resume`` and a
metrics log; the loss comes from an *objective* so distillation reuses the whole loop.

Under ``torchrun`` the same ``fit`` trains data-parallel (:mod:`blmkd.distributed`): every rank
draws the same seeded permutation and takes its share of each global batch, gradients are
averaged by DistributedDataParallel, metrics are summed over ranks and only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from blmkd.bundle import Bundle
from blmkd.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from blmkd.errors import BlmkdError
from blmkd.io import atomic_write_json
from blmkd.models import model_config_dict
from blmkd.runs import resume_mismatch

# ----------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------
# Augmentation and inference


def dihedral(x: torch.Tensor, variant: int) -> torch.Tensor:
    """One of the 8 symmetries of the square on (N, C, P, P): rotation by 90°·(v % 4), then a flip if v ≥ 4."""
    if variant % 4:
        x = torch.rot90(x, variant % 4, dims=(2, 3))
    if variant >= 4:
        x = torch.flip(x, dims=(3,))
    return x


def apply_variants(x: torch.Tensor, variants: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample dihedral variant (N,) to x (N, C, P, P)."""
    out = x.clone()
    variants = variants.to(x.device)
    for v in torch.unique(variants).tolist():
        if v == 0:
            continue
        sel = variants == v
        out[sel] = dihedral(x[sel], v)
    return out


@torch.inference_mode()
def predict_logits(
    model: nn.Module, extractor, rows, cols, batch_size: int = 1024, variant: int = 0
) -> torch.Tensor:
    """Logits (N, K) for the windows centred at (rows, cols), in eval mode."""
    model.eval()
    rows, cols = np.asarray(rows), np.asarray(cols)
    device = next(model.parameters()).device
    outs = []
    for i in range(0, len(rows), batch_size):
        x = extractor.gather(rows[i : i + batch_size], cols[i : i + batch_size])
        if variant:
            x = dihedral(x, variant)
        outs.append(model(x.to(device)).float().cpu())
    if not outs:
        return torch.zeros(0, 0)
    return torch.cat(outs)


def predict_tta(model: nn.Module, extractor, rows, cols, batch_size: int = 1024) -> torch.Tensor:
    """Class probabilities (N, K) averaged over the 8 dihedral views of each window.

    Test-time augmentation: 8× the inference cost of :func:`predict_logits`. The models are
    trained with random dihedral views (``--augment``), so every view is one they know.
    """
    return (
        sum(predict_logits(model, extractor, rows, cols, batch_size, variant=v).softmax(1) for v in range(8))
        / 8
    )


def evaluate_model(
    model: nn.Module, bundle: Bundle, which: str = "test", batch_size: int = 1024, tta: bool = False
):
    """OA/AA/κ report of ``model`` on the ``which`` pixels of the bundle's split (``tta``: 8 dihedral views)."""
    from blmkd.metrics import classification_report

    rows, cols, y = bundle.coords(which)
    extractor = bundle.extractor(getattr(model, "input_kind", "float"))
    predict = predict_tta if tta else predict_logits
    pred = predict(model, extractor, rows, cols, batch_size).argmax(1).numpy()
    return classification_report(y, pred, bundle.scene.num_classes)


# ----------------------------------------------------------------------------------------------
# Training


AMP_MODES = ("off", "bf16")


@dataclass
class TrainConfig:
    """Optimisation settings (paper: AdamW, lr 1e-3, weight decay 5e-4)."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 5  # linear LR warm-up before the cosine decay
    min_lr_ratio: float = 0.01  # cosine floor as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm (0 disables)
    augment: bool = True  # random dihedral flips/rotations of training patches
    patience: int = (
        30  # early stopping: epochs without a better val OA, or an equal one with lower val loss (0 disables)
    )
    label_smoothing: float = 0.0
    class_balance: float = 0.0  # β of the effective-number class weights (Cui et al. 2019); 0 = off
    ema: float = 0.0  # per-step decay of an exponential moving average of the weights (0 = off)
    amp: str = "off"  # mixed precision of the training steps: "off" (FP32) or "bf16" (autocast)
    eval_batch: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise TrainingError(f"--amp must be one of {', '.join(AMP_MODES)}, not {self.amp!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class WeightEMA:
    """Exponential moving average of a model's weights and buffers, updated after every optimizer step.

    ``decay`` is per step, warmed up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates so the
    first epochs are not dominated by the random initialisation. BatchNorm running statistics are
    averaged like the weights; integer buffers (``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        import copy

        self.decay, self.updates = decay, 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._pairs = list(zip(self.module.state_dict().values(), model.state_dict().values(), strict=True))

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, m in self._pairs:
            if e.dtype.is_floating_point:
                e.lerp_(m.detach(), 1.0 - d)
            else:
                e.copy_(m)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The averaged state, keyed ``ema.<name>`` (stored in ``last.safetensors`` for ``--resume``)."""
        return {f"ema.{k}": v for k, v in self.module.state_dict().items()}

    def state_from(self, ck: Checkpoint) -> dict[str, torch.Tensor]:
        """The averaged state stored by :meth:`tensors` in ``ck``."""
        state = {k: ck.extra(f"ema.{k}") for k in self.module.state_dict()}
        if any(v is None for v in state.values()):
            raise TrainingError(
                f"--resume with --ema: {ck.path} holds no averaged weights (trained without --ema?)"
            )
        return state


class TrainingError(BlmkdError):
    """Training stopped (NaN/Inf loss); the message names the epoch and the kept checkpoint."""


# objective(model, x, y, idx, variants, epoch) -> (loss, logits, parts)
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], tuple]


def class_balance_weights(labels, num_classes: int, beta: float) -> torch.Tensor:
    """Per-class loss weights ``(K,)`` from the effective number of samples (Cui et al., CVPR 2019).

    A class with ``n`` training pixels weighs ``1 / E_n`` with ``E_n = (1 − βⁿ) / (1 − β)``: for
    ``β → 0`` every class weighs the same per pixel (plain cross-entropy), for ``β → 1`` each class
    weighs the same in total (inverse frequency). The weights are scaled so that the training
    pixels' mean weight is 1, which keeps the loss scale, and so the learning rate, of the
    unweighted loss. Classes without training pixels get 0.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"class balance β must be in [0, 1), got {beta}")
    n = torch.bincount(torch.as_tensor(labels).long().flatten(), minlength=num_classes).double()  # (K,)
    effective = (1.0 - torch.pow(beta, n)) / (1.0 - beta)  # (K,); 0 where n = 0
    w = torch.where(n > 0, 1.0 / effective.clamp_min(1e-12), torch.zeros_like(n))  # (K,)
    return (w * n.sum() / (w * n).sum()).float()  # (K,): Σ_c n_c·w_c = Σ_c n_c


def ce_objective(label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None) -> Objective:
    """Cross-entropy; with ``class_weights (K,)`` each pixel's loss is scaled by its class's weight
    (a plain mean over the batch, as the distillation loss weighs its pixels)."""

    def objective(model, x, y, idx, variants, epoch):
        logits = model(x)
        if class_weights is None:
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        else:
            per_pixel = F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="none")  # (N,)
            loss = (class_weights.to(per_pixel.device)[y] * per_pixel).mean()
        return loss, logits, {"ce": float(loss.detach())}

    return objective


@dataclass
class FitResult:
    out_dir: Path
    best_epoch: int
    best_val_oa: float
    epochs_run: int
    stopped_early: bool
    test: dict = field(default_factory=dict)
    wall_s: float = 0.0
    selection: dict = field(default_factory=dict)  # which epoch was kept and why (:func:`selection_facts`)


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    warm = max(0, cfg.warmup_epochs * steps_per_epoch)
    total = max(1, cfg.epochs * steps_per_epoch)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _read_log(path: Path, upto_epoch: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("epoch", 0) <= upto_epoch]


def fit(
    model: nn.Module,
    bundle: Bundle,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    objective: Objective | None = None,
    resume: bool = False,
    meta_extra: dict | None = None,
    progress: bool = True,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    extra_modules: list[nn.Module] | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``bundle`` and write ``best``/``last`` checkpoints and ``metrics.jsonl``.

    The best checkpoint (highest validation OA, equal OAs told apart by the lower validation mean
    cross-entropy; training OA and loss where the split has no validation pixels) is re-saved at
    the end with its test metrics and ``metrics.selection``, which epoch was kept and why. With ``resume`` the loop continues
    from ``last.safetensors`` (weights, optimizer, schedule position, early-stopping state).

    Under ``torchrun`` (a process group from :func:`blmkd.distributed.init_from_env`):

    * ``cfg.batch_size`` is the *global* batch: each step every rank draws the same permutation
      and variants and trains on its contiguous share (``batch_size / world_size`` samples) of
      the same global batch single-process training would use. Each rank's loss is weighted by
      its share so that DistributedDataParallel's gradient average is the gradient of the global
      batch mean; the schedule, step count and results match a single process up to float
      rounding (and BatchNorm: statistics are per rank, SyncBatchNorm on CUDA only).
    * the loss, correct and seen counts are summed over ranks each step, validation is sharded
      and its correct count summed, so every rank takes the same early-stopping decisions;
    * only rank 0 writes checkpoints and ``metrics.jsonl`` and shows progress; with ``resume``
      rank 0 reads ``last.safetensors`` and broadcasts it (nodes need no shared filesystem);
    * the test evaluation of the best weights is sharded and gathered.

    With ``cfg.ema > 0`` an exponential moving average of the weights (:class:`WeightEMA`) is
    validated, kept as ``best`` and tested; ``last`` holds the live weights plus the average, for
    ``resume``.

    The objective is called with the DistributedDataParallel wrapper: it must call the model,
    not reach into its attributes. ``on_epoch(row)`` and ``on_step({"epoch", "step", "loss",
    "n", "lr"})`` (the global batch's mean loss and size) are called on every rank with the same
    values. The model is trained on the rank's device and returned to its own device at the end.
    """
    import blmkd.distributed as D

    ctx = D.init_from_env()
    world, main = ctx.world_size, ctx.is_main
    out = Path(out_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    # Dropout masks differ between ranks (rank 0 draws the single-process ones); the batch generator
    # is the same on every rank, so all ranks draw the same permutation and variants.
    torch.manual_seed(cfg.seed + ctx.rank)
    gen = torch.Generator().manual_seed(cfg.seed + 1)

    input_kind = getattr(model, "input_kind", "float")
    device, home = ctx.device, next(model.parameters()).device
    extractor = bundle.extractor(input_kind, device)  # on a GPU: the cube uploaded once, windows cut there
    rows, cols, labels = bundle.coords("train")
    if len(rows) == 0:
        raise TrainingError("the split has no training pixels")
    if objective is None:
        weights = (
            class_balance_weights(labels, bundle.scene.num_classes, cfg.class_balance)
            if cfg.class_balance
            else None
        )
        objective = ce_objective(cfg.label_smoothing, weights)
    vrows, vcols, vlabels = bundle.coords("val")
    use_val = len(vrows) > 0
    y_all = torch.from_numpy(labels)
    steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    if world > 1 and min(cfg.batch_size, len(rows)) < 2 * world:
        raise TrainingError(
            f"batch {min(cfg.batch_size, len(rows))} is the global batch: with {world} ranks it must be "
            f"at least {2 * world} (every rank needs two samples for BatchNorm)"
        )

    model.to(device)
    for m in extra_modules or []:
        m.to(device)
    if ctx.distributed and device.type == "cuda":
        # torch's SyncBatchNorm trains on CUDA (HPU, XPU) only; on the CPU each rank keeps its own statistics.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    extra_params = [p for m in (extra_modules or []) for p in m.parameters()]
    params = list(model.parameters()) + extra_params
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps_per_epoch))
    meta_base = {**bundle.meta(), **(meta_extra or {}), "training": cfg.to_dict()}

    start_epoch, best_val, best_epoch, bad_epochs = 1, -1.0, 0, 0
    best_val_loss = math.inf  # tie-break of equal validation OA (lower wins)
    log_path = out / "metrics.jsonl"
    ema = WeightEMA(model, cfg.ema) if cfg.ema > 0 else None
    if resume:
        last = out / "last.safetensors"
        state = None
        problem = None
        if main and last.exists():
            ck = load_checkpoint(last)
            problem = resume_mismatch(ck.meta, getattr(model, "blmkd_name", type(model).__name__),
                                      model_config_dict(model), meta_base)  # fmt: skip
            if problem is None:
                ema_state = ema.state_from(ck) if ema is not None else None
                state = (ck.model_state(), ck.optimizer_state(), ck.meta["train_state"], ema_state)
        problem = D.broadcast_object(problem)
        if problem is not None:  # every rank stops: a model trained on two splits would carry one's label
            raise TrainingError(
                f"--resume refused: {problem}; resume with the run's own options, or start a new run"
            )
        state = D.broadcast_object(state)
        if state is None:
            raise TrainingError(f"--resume: no {last} to resume from")
        model_state, opt_state, st, ema_state = state
        try:
            model.load_state_dict(model_state)
        except RuntimeError as exc:  # same preset, other sizes (bands, classes, options)
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise TrainingError(f"--resume: {last} does not fit this model ({first})") from None
        if ema is not None:
            ema.module.load_state_dict(ema_state)
            ema.updates = st["ema_updates"]  # written with every last.safetensors that holds an average
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        start_epoch, best_val, best_epoch, bad_epochs = (
            st["epoch"] + 1,
            st["best_val"],
            st["best_epoch"],
            st["bad_epochs"],
        )
        best_val_loss = st.get(
            "best_val_loss", math.inf
        )  # absent from checkpoints written before the tie-break
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps_per_epoch))
        with warnings.catch_warnings():  # replaying the schedule before any optimizer step is intended
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(st["epoch"] * steps_per_epoch):  # replay the schedule position
                sched.step()
        gen.manual_seed(cfg.seed + 1 + st["epoch"])
    history = _read_log(log_path, start_epoch - 1) if main else []
    log_lines = [json.dumps(r) for r in history]
    net = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # BF16 autocast: matmuls and convolutions in bfloat16, reductions and the loss in float32; no
    # loss scaling is needed (bfloat16 has float32's exponent range). Validation stays FP32.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
    y_dev = y_all.to(device)
    t0 = time.perf_counter()
    stopped_early = False
    epoch = start_epoch - 1
    step_no = (start_epoch - 1) * steps_per_epoch
    prog = _Progress(progress and main, cfg.epochs, start_epoch - 1)
    with prog, warnings.catch_warnings():
        # A 1×1 convolution's weight grad may come channels-last: the same layout for size-1 dims, but DDP warns.
        warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides")
        for epoch in range(start_epoch, cfg.epochs + 1):
            net.train()
            perm = torch.randperm(len(rows), generator=gen)
            tot_loss, correct, seen = 0.0, 0, 0
            parts_sum: dict[str, float] = {}
            for b in range(steps_per_epoch):
                idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                step_no += 1
                if len(idx) < 2 * world and b > 0:  # BatchNorm cannot train on a batch of one (per rank)
                    continue
                variants = (
                    torch.randint(0, 8, (len(idx),), generator=gen)
                    if cfg.augment
                    else torch.zeros(len(idx), dtype=torch.long)
                )
                n_global = len(idx)
                if world > 1:  # this rank's share of the global batch (all ranks drew the same idx, variants)
                    share = D.shard(n_global)
                    idx, variants = idx[share], variants[share]
                x = extractor.gather(rows[idx.numpy()], cols[idx.numpy()])  # on `device`
                if cfg.augment:
                    x = apply_variants(x, variants)
                y = y_dev[idx.to(device, non_blocking=True)]
                with autocast:
                    loss, logits, parts = objective(net, x, y, idx, variants, epoch)
                n = len(idx)
                stats = [float(loss.detach()) * n, n, int((logits.detach().argmax(1) == y).sum())]
                stats += [v * n for v in parts.values()]
                stats = D.all_reduce_sum(stats)  # global sums: the same on every rank
                if not math.isfinite(stats[0]):  # so every rank stops here together
                    kept = (f"the checkpoint of epoch {epoch - 1} is kept in {out / 'last.safetensors'}" if epoch > 1
                            else "no checkpoint was written")  # fmt: skip
                    raise TrainingError(
                        f"loss became {stats[0] / stats[1]} at epoch {epoch}; training stopped, {kept}"
                    )
                if world > 1:  # DDP averages over ranks: weighted by its share, that is the global-batch mean
                    loss = loss * (n * world / n_global)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                D.all_reduce_grads(extra_params)  # DDP owns only the model's
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update()
                tot_loss += stats[0]
                correct += int(stats[2])
                seen += int(stats[1])
                for k, v in zip(parts, stats[3:]):
                    parts_sum[k] = parts_sum.get(k, 0.0) + v
                if on_step:
                    on_step({"epoch": epoch, "step": step_no, "loss": stats[0] / stats[1], "n": int(stats[1]),
                             "lr": opt.param_groups[0]["lr"]})  # fmt: skip
            train_oa = correct / max(1, seen)
            judged = ema.module if ema is not None else model  # the weights validated and kept as best
            if use_val:
                share = D.shard(len(vrows))
                hits, ce_sum = _val_stats(
                    judged, extractor, vrows[share], vcols[share], vlabels[share], cfg.eval_batch
                )
                hits, ce_sum = D.all_reduce_sum([hits, ce_sum])
                val_oa, val_loss = hits / len(vrows), ce_sum / len(vrows)
            else:
                val_oa, val_loss = train_oa, tot_loss / max(1, seen)
            row = {
                "epoch": epoch,
                "loss": tot_loss / max(1, seen),
                **{k: v / max(1, seen) for k, v in parts_sum.items()},
                "train_oa": train_oa,
                "val_oa": val_oa,
                "val_loss": val_loss,
                "lr": opt.param_groups[0]["lr"],
                "time_s": time.perf_counter() - t0,
            }
            improved = _better(val_oa, val_loss, best_val, best_val_loss)
            if improved:
                best_val, best_val_loss, best_epoch, bad_epochs = val_oa, val_loss, epoch, 0
            else:
                bad_epochs += 1
            state = {"epoch": epoch, "best_val": best_val, "best_val_loss": best_val_loss, "best_epoch": best_epoch,
                     "bad_epochs": bad_epochs}  # fmt: skip
            if ema is not None:
                state["ema_updates"] = ema.updates
            meta = {
                **meta_base,
                "train_state": state,
                "metrics": {"val_oa": val_oa, "val_loss": val_loss, "train_oa": train_oa, "epoch": epoch},
            }
            if main:
                if improved:
                    save_checkpoint(out / "best.safetensors", judged, meta, extra_tensors=extra_tensors)
                # the row before last.safetensors: a kill between the two repeats this epoch on --resume
                # (the row is rewritten) instead of resuming after it without its row
                log_lines.append(json.dumps(row))
                _write_lines(log_path, log_lines)
                last_extra = {**(extra_tensors or {}), **(ema.tensors() if ema is not None else {})}
                save_checkpoint(
                    out / "last.safetensors", model, meta, optimizer=opt, extra_tensors=last_extra or None
                )
            prog.update(row, best_val)
            if on_epoch:
                on_epoch(row)
            if cfg.patience and bad_epochs >= cfg.patience:
                stopped_early = True
                break

    wall = time.perf_counter() - t0
    best = load_checkpoint(out / "best.safetensors") if main else None
    model.load_state_dict(D.broadcast_object(best.model_state() if main else None))
    if ctx.distributed:
        report = _evaluate_sharded(model, bundle, "test", cfg.eval_batch)
    else:
        report = evaluate_model(model, bundle, "test", cfg.eval_batch)
    test = report.to_dict(bundle.scene.class_ids, bundle.scene.class_names)
    selection = selection_facts(
        [json.loads(line) for line in log_lines], best_epoch, best_val, best_val_loss, use_val
    )
    if main:
        meta = dict(best.meta)
        meta["metrics"] = {**meta.get("metrics", {}), "test": test, "best_epoch": best_epoch, "train_wall_s": wall,
                           "selection": selection}  # fmt: skip
        save_checkpoint(out / "best.safetensors", model, meta, extra_tensors=extra_tensors)
    model.to(home)
    for m in extra_modules or []:
        m.to(home)
    D.barrier()  # every rank returns once the final checkpoint is written
    return FitResult(out, best_epoch, best_val, epoch, stopped_early, test, wall, selection)


def _val_stats(model: nn.Module, extractor, rows, cols, labels, batch_size: int) -> tuple[int, float]:
    """How many of the windows at (rows, cols) the model classifies as ``labels``, and the sum of
    their cross-entropies (one pass)."""
    if len(rows) == 0:
        return 0, 0.0
    logits = predict_logits(model, extractor, rows, cols, batch_size)  # (N, K)
    y = torch.as_tensor(labels, dtype=torch.long)  # (N,)
    ce = F.cross_entropy(logits, y, reduction="sum")
    return int((logits.argmax(1) == y).sum()), float(ce)


def _better(val_oa: float, val_loss: float, best_oa: float, best_loss: float) -> bool:
    """Model selection: a higher validation OA wins; an equal one wins with a lower validation loss.

    With a few hundred validation pixels many epochs reach the same OA; the first of them is often
    an under-trained one, the loss tells the better-trained weights apart.
    """
    return val_oa > best_oa or (val_oa == best_oa and val_loss < best_loss)


def selection_facts(
    rows: list[dict], best_epoch: int, best_oa: float, best_loss: float, use_val: bool
) -> dict:
    """Which epoch was kept and why, from the ``metrics.jsonl`` rows of a run.

    Returns ``{"epoch", "val_oa", "val_loss", "tied_epochs", "first_epoch_at_best_oa", "on", "reason"}``;
    ``on`` is ``"validation"`` or ``"training"`` (a split without validation pixels), ``reason`` a
    sentence such as ``"val OA 0.9712 (tied with 14 epochs), lowest val loss 0.083"``.
    """
    on = "val" if use_val else "train"
    tied = [r["epoch"] for r in rows if r.get("val_oa") == best_oa and r["epoch"] != best_epoch]
    first = min([best_epoch, *tied])
    reason = f"{on} OA {best_oa:.4f}"
    if tied:
        reason += (
            f" (tied with {len(tied)} epoch{'s' if len(tied) > 1 else ''}), lowest {on} loss {best_loss:.4g}"
        )
    else:
        reason += " (highest)"
    return {"epoch": best_epoch, "val_oa": best_oa, "val_loss": None if math.isinf(best_loss) else best_loss,
            "tied_epochs": len(tied), "first_epoch_at_best_oa": first,
            "on": "validation" if use_val else "training", "reason": reason}  # fmt: skip


def _evaluate_sharded(model: nn.Module, bundle: Bundle, which: str, batch_size: int):
    """:func:`evaluate_model` with the pixels shared out over the ranks and the predictions all-gathered."""
    import blmkd.distributed as D
    from blmkd.metrics import classification_report

    rows, cols, y = bundle.coords(which)
    share = D.shard(len(rows))
    ext = bundle.extractor(getattr(model, "input_kind", "float"))
    pred = np.zeros(0, np.int64)
    if share.stop > share.start:
        pred = predict_logits(model, ext, rows[share], cols[share], batch_size).argmax(1).numpy()
    pred = np.concatenate(D.all_gather_object(pred))
    return classification_report(y, pred, bundle.scene.num_classes)


def _write_lines(path: Path, lines: list[str]) -> None:
    from blmkd.io import atomic_write_text

    atomic_write_text(path, "\n".join(lines) + "\n")


class _Progress:
    """A rich progress bar over epochs showing loss, train/val OA and the ETA."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.enabled = enabled and os.environ.get("BLMKD_NO_PROGRESS") != "1"
        self.total, self.done = total, done
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._p = Progress(
                TextColumn("epoch"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._p.__enter__()
            self._task = self._p.add_task("train", total=self.total, completed=self.done, info="")
        return self

    def update(self, row: dict, best: float) -> None:
        if self._p is not None:
            info = f"loss {row['loss']:.4f}  train OA {row['train_oa']:.4f}  val OA {row['val_oa']:.4f}  best {best:.4f}"
            self._p.update(self._task, advance=1, info=info)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
        return False


def write_summary(path: Path, runs: list[dict]) -> dict:
    """Aggregate per-seed test metrics into mean ± std (sample std) and write it as JSON."""
    from blmkd.metrics import mean_std

    summary: dict = {"runs": runs}
    for key in ("oa", "aa", "kappa"):
        vals = [r["test"][key] for r in runs]
        m, s = mean_std(vals)
        summary[key] = {"mean": m, "std": s, "values": vals}
    atomic_write_json(path, summary)
    return summary
