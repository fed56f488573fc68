"""The training loop shared by teachers, students and distillation.

``fit`` trains any registered model on a :class:`~blmkd.bundle.Bundle` with AdamW, a cosine
schedule with linear warm-up, gradient clipping, optional dihedral augmentation, model selection
and early stopping on validation OA (ties broken by the validation loss), best/last checkpoints,
``resume`` and a metrics log; the loss comes from an *objective*
(:mod:`blmkd.training.config`) so distillation reuses the whole loop.

Under ``torchrun`` the same ``fit`` trains data-parallel (:mod:`blmkd.distributed`): every rank
draws the same seeded permutation and takes its share of each global batch, gradients are
averaged by DistributedDataParallel, metrics are summed over ranks and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import blmkd.distributed as D
from blmkd.bundle import Bundle
from blmkd.checkpoint import load_checkpoint, save_checkpoint
from blmkd.errors import TrainingError
from blmkd.io import atomic_write_text
from blmkd.models import model_config_dict
from blmkd.runs import resume_mismatch
from blmkd.training.config import Objective, TrainConfig, ce_objective, class_balance_weights, lr_lambda
from blmkd.training.ema import WeightEMA
from blmkd.training.evaluation import apply_variants, evaluate_model, evaluate_sharded, val_stats
from blmkd.training.summary import EpochProgress, better, selection_facts


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
    the end with its test metrics and ``metrics.selection``, which epoch was kept and why. With
    ``resume`` the loop continues from ``last.safetensors`` (weights, optimizer, schedule
    position, early-stopping state).

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
    run = _Run(
        model, bundle, cfg, Path(out_dir), objective, meta_extra, extra_tensors, extra_modules, on_step
    )
    if resume:
        run.resume()
    run.start()
    stopped_early, epoch = False, run.sel.epoch
    with EpochProgress(progress and run.main, cfg.epochs, run.sel.epoch) as bar, _quiet_ddp():
        for epoch in range(run.sel.epoch + 1, cfg.epochs + 1):
            row = run.train_epoch(epoch)
            row.update(run.validate(row))
            improved = run.sel.judge(epoch, row["val_oa"], row["val_loss"])
            run.save(epoch, row, improved)
            bar.update(row, run.sel.best_val)
            if on_epoch:
                on_epoch(row)
            if cfg.patience and run.sel.bad_epochs >= cfg.patience:
                stopped_early = True
                break
    return run.finish(epoch, stopped_early)


@dataclass
class Selection:
    """Model selection and early stopping: the best epoch so far and the epochs since (``train_state``)."""

    epoch: int = 0  # the last finished epoch
    best_val: float = -1.0
    best_val_loss: float = math.inf  # tie-break of equal validation OA (lower wins)
    best_epoch: int = 0
    bad_epochs: int = 0

    def judge(self, epoch: int, val_oa: float, val_loss: float) -> bool:
        """Record epoch ``epoch``'s validation; True when it is the new best."""
        self.epoch = epoch
        improved = better(val_oa, val_loss, self.best_val, self.best_val_loss)
        if improved:
            self.best_val, self.best_val_loss, self.best_epoch, self.bad_epochs = val_oa, val_loss, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    def state(self) -> dict:
        return {"epoch": self.epoch, "best_val": self.best_val, "best_val_loss": self.best_val_loss,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}  # fmt: skip


@contextlib.contextmanager
def _quiet_ddp():
    with warnings.catch_warnings():
        # A 1×1 convolution's weight grad may come channels-last: the same layout for size-1 dims, but DDP warns.
        warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides")
        yield


class _Run:
    """One call of :func:`fit`: the model on its device, the data, optimiser, schedule and log."""

    def __init__(self, model, bundle, cfg, out, objective, meta_extra, extra_tensors, extra_modules, on_step):
        ctx = D.init_from_env()
        self.ctx, self.world, self.main = ctx, ctx.world_size, ctx.is_main
        self.cfg, self.bundle, self.out, self.on_step = cfg, bundle, out, on_step
        self.extra_tensors, self.extra_modules = extra_tensors, extra_modules or []
        if self.main:
            out.mkdir(parents=True, exist_ok=True)
        # Dropout masks differ between ranks (rank 0 draws the single-process ones); the batch generator
        # is the same on every rank, so all ranks draw the same permutation and variants.
        torch.manual_seed(cfg.seed + ctx.rank)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)

        self.device, self.home = ctx.device, next(model.parameters()).device
        # on a GPU: the cube uploaded once, windows cut there
        self.extractor = bundle.extractor(getattr(model, "input_kind", "float"), self.device)
        self.rows, self.cols, labels = bundle.coords("train")
        if len(self.rows) == 0:
            raise TrainingError("the split has no training pixels")
        if objective is None:
            weights = (class_balance_weights(labels, bundle.scene.num_classes, cfg.class_balance)
                       if cfg.class_balance else None)  # fmt: skip
            objective = ce_objective(cfg.label_smoothing, weights)
        self.objective = objective
        self.vrows, self.vcols, self.vlabels = bundle.coords("val")
        self.use_val = len(self.vrows) > 0
        self.y_all = torch.from_numpy(labels)
        self.steps_per_epoch = math.ceil(len(self.rows) / cfg.batch_size)
        if self.world > 1 and min(cfg.batch_size, len(self.rows)) < 2 * self.world:
            raise TrainingError(
                f"batch {min(cfg.batch_size, len(self.rows))} is the global batch: with {self.world} ranks it must be "
                f"at least {2 * self.world} (every rank needs two samples for BatchNorm)"
            )

        model.to(self.device)
        for m in self.extra_modules:
            m.to(self.device)
        if ctx.distributed and self.device.type == "cuda":
            # torch's SyncBatchNorm trains on CUDA (HPU, XPU) only; on the CPU each rank keeps its own statistics.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.extra_params = [p for m in self.extra_modules for p in m.parameters()]
        self.params = list(model.parameters()) + self.extra_params
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg, self.steps_per_epoch))
        self.meta_base = {**bundle.meta(), **(meta_extra or {}), "training": cfg.to_dict()}
        self.sel = Selection()
        self.log_path = out / "metrics.jsonl"
        self.ema = WeightEMA(model, cfg.ema) if cfg.ema > 0 else None

    def resume(self) -> None:
        """Load ``last.safetensors`` (rank 0 reads, every rank receives): weights, optimiser, position."""
        cfg, last = self.cfg, self.out / "last.safetensors"
        state, problem = None, None
        if self.main and last.exists():
            ck = load_checkpoint(last)
            problem = resume_mismatch(ck.meta, getattr(self.model, "blmkd_name", type(self.model).__name__),
                                      model_config_dict(self.model), self.meta_base)  # fmt: skip
            if problem is None:
                ema_state = self.ema.state_from(ck) if self.ema is not None else None
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
            self.model.load_state_dict(model_state)
        except RuntimeError as exc:  # same preset, other sizes (bands, classes, options)
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise TrainingError(f"--resume: {last} does not fit this model ({first})") from None
        if self.ema is not None:
            self.ema.module.load_state_dict(ema_state)
            self.ema.updates = st["ema_updates"]  # written with every last.safetensors that holds an average
        if opt_state is not None:
            self.opt.load_state_dict(opt_state)
        # best_val_loss is absent from checkpoints written before the tie-break
        self.sel = Selection(st["epoch"], st["best_val"], st.get("best_val_loss", math.inf), st["best_epoch"],
                             st["bad_epochs"])  # fmt: skip
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg, self.steps_per_epoch))
        with warnings.catch_warnings():  # replaying the schedule before any optimizer step is intended
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(st["epoch"] * self.steps_per_epoch):  # replay the schedule position
                self.sched.step()
        self.gen.manual_seed(cfg.seed + 1 + st["epoch"])

    def start(self) -> None:
        """The log so far, the DDP wrapper, autocast and the clock."""
        self.log_lines = (
            [json.dumps(r) for r in _read_log(self.log_path, self.sel.epoch)] if self.main else []
        )
        self.net = self.model
        if self.ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        # BF16 autocast: matmuls and convolutions in bfloat16, reductions and the loss in float32; no
        # loss scaling is needed (bfloat16 has float32's exponent range). Validation stays FP32.
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp == "bf16")
        self.y_dev = self.y_all.to(self.device)
        self.step_no = self.sel.epoch * self.steps_per_epoch
        self.t0 = time.perf_counter()

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training pixels in a seeded order; the epoch's loss, its parts and train OA."""
        cfg, world = self.cfg, self.world
        self.net.train()
        perm = torch.randperm(len(self.rows), generator=self.gen)
        tot_loss, correct, seen = 0.0, 0, 0
        parts_sum: dict[str, float] = {}
        for b in range(self.steps_per_epoch):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            self.step_no += 1
            if len(idx) < 2 * world and b > 0:  # BatchNorm cannot train on a batch of one (per rank)
                continue
            variants = (torch.randint(0, 8, (len(idx),), generator=self.gen) if cfg.augment
                        else torch.zeros(len(idx), dtype=torch.long))  # fmt: skip
            stats, parts = self.step(epoch, idx, variants)
            tot_loss += stats[0]
            correct += int(stats[2])
            seen += int(stats[1])
            for k, v in zip(parts, stats[3:]):
                parts_sum[k] = parts_sum.get(k, 0.0) + v
            if self.on_step:
                self.on_step({"epoch": epoch, "step": self.step_no, "loss": stats[0] / stats[1], "n": int(stats[1]),
                              "lr": self.opt.param_groups[0]["lr"]})  # fmt: skip
        return {"epoch": epoch, "loss": tot_loss / max(1, seen), **{k: v / max(1, seen) for k, v in parts_sum.items()},
                "train_oa": correct / max(1, seen)}  # fmt: skip

    def step(self, epoch: int, idx: torch.Tensor, variants: torch.Tensor) -> tuple[list[float], dict]:
        """One optimiser step on the global batch ``idx``; its summed loss, size, hits and loss parts."""
        n_global = len(idx)
        if self.world > 1:  # this rank's share of the global batch (all ranks drew the same idx, variants)
            share = D.shard(n_global)
            idx, variants = idx[share], variants[share]
        x = self.extractor.gather(self.rows[idx.numpy()], self.cols[idx.numpy()])  # on `device`
        if self.cfg.augment:
            x = apply_variants(x, variants)
        y = self.y_dev[idx.to(self.device, non_blocking=True)]
        with self.autocast:
            loss, logits, parts = self.objective(self.net, x, y, idx, variants, epoch)
        n = len(idx)
        stats = [float(loss.detach()) * n, n, int((logits.detach().argmax(1) == y).sum())]
        stats += [v * n for v in parts.values()]
        stats = D.all_reduce_sum(stats)  # global sums: the same on every rank
        if not math.isfinite(stats[0]):  # so every rank stops here together
            kept = (f"the checkpoint of epoch {epoch - 1} is kept in {self.out / 'last.safetensors'}" if epoch > 1
                    else "no checkpoint was written")  # fmt: skip
            raise TrainingError(
                f"loss became {stats[0] / stats[1]} at epoch {epoch}; training stopped, {kept}"
            )
        if self.world > 1:  # DDP averages over ranks: weighted by its share, that is the global-batch mean
            loss = loss * (n * self.world / n_global)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        D.all_reduce_grads(self.extra_params)  # DDP owns only the model's
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update()
        return stats, parts

    @property
    def judged(self) -> nn.Module:
        """The weights validated and kept as best: the average with ``--ema``, else the live ones."""
        return self.ema.module if self.ema is not None else self.model

    def validate(self, row: dict) -> dict:
        """Validation OA and mean cross-entropy (the training ones where the split has no validation pixels)."""
        if self.use_val:
            share = D.shard(len(self.vrows))
            hits, ce_sum = val_stats(self.judged, self.extractor, self.vrows[share], self.vcols[share],
                                     self.vlabels[share], self.cfg.eval_batch)  # fmt: skip
            hits, ce_sum = D.all_reduce_sum([hits, ce_sum])
            val_oa, val_loss = hits / len(self.vrows), ce_sum / len(self.vrows)
        else:
            val_oa, val_loss = row["train_oa"], row["loss"]
        return {"val_oa": val_oa, "val_loss": val_loss, "lr": self.opt.param_groups[0]["lr"],
                "time_s": time.perf_counter() - self.t0}  # fmt: skip

    def save(self, epoch: int, row: dict, improved: bool) -> None:
        """``best`` when improved, the log row, then ``last`` with the optimiser (rank 0 only)."""
        state = self.sel.state()
        if self.ema is not None:
            state["ema_updates"] = self.ema.updates
        metrics = {
            "val_oa": row["val_oa"],
            "val_loss": row["val_loss"],
            "train_oa": row["train_oa"],
            "epoch": epoch,
        }
        meta = {**self.meta_base, "train_state": state, "metrics": metrics}
        if not self.main:
            return
        if improved:
            save_checkpoint(
                self.out / "best.safetensors", self.judged, meta, extra_tensors=self.extra_tensors
            )
        # the row before last.safetensors: a kill between the two repeats this epoch on --resume
        # (the row is rewritten) instead of resuming after it without its row
        self.log_lines.append(json.dumps(row))
        atomic_write_text(self.log_path, "\n".join(self.log_lines) + "\n")
        last_extra = {**(self.extra_tensors or {}), **(self.ema.tensors() if self.ema is not None else {})}
        save_checkpoint(self.out / "last.safetensors", self.model, meta, optimizer=self.opt,
                        extra_tensors=last_extra or None)  # fmt: skip

    def finish(self, epoch: int, stopped_early: bool) -> FitResult:
        """Test the best weights, seal them with their test metrics and why they were kept."""
        model, bundle, sel, cfg = self.model, self.bundle, self.sel, self.cfg
        wall = time.perf_counter() - self.t0
        best = load_checkpoint(self.out / "best.safetensors") if self.main else None
        model.load_state_dict(D.broadcast_object(best.model_state() if self.main else None))
        if self.ctx.distributed:
            report = evaluate_sharded(model, bundle, "test", cfg.eval_batch)
        else:
            report = evaluate_model(model, bundle, "test", cfg.eval_batch)
        test = report.to_dict(bundle.scene.class_ids, bundle.scene.class_names)
        rows = [json.loads(line) for line in self.log_lines]
        selection = selection_facts(rows, sel.best_epoch, sel.best_val, sel.best_val_loss, self.use_val)
        if self.main:
            meta = dict(best.meta)
            meta["metrics"] = {**meta.get("metrics", {}), "test": test, "best_epoch": sel.best_epoch,
                               "train_wall_s": wall, "selection": selection}  # fmt: skip
            save_checkpoint(self.out / "best.safetensors", model, meta, extra_tensors=self.extra_tensors)
        model.to(self.home)
        for m in self.extra_modules:
            m.to(self.home)
        D.barrier()  # every rank returns once the final checkpoint is written
        return FitResult(self.out, sel.best_epoch, sel.best_val, epoch, stopped_early, test, wall, selection)


def _read_log(path: Path, upto_epoch: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("epoch", 0) <= upto_epoch]
