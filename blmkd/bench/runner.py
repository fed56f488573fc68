"""`blmkd bench`: every artifact of a model on the same test split, timed the same way, in one table.

For each artifact (PyTorch checkpoint, ONNX FP32/FP16/INT8, TensorRT engine) :func:`run_bench`
measures, in this order and in this process:

* accuracy: OA/AA/κ on the test split the first checkpoint (or the first ONNX file's metadata)
  was tested on, each artifact fed through its own recorded preprocessing, and the argmax
  agreement with the model's FP32 reference (the first FP32 artifact with the same source
  checkpoint);
* latency: batch-1 p50/p90/p99 after warm-up (``time.perf_counter``; CUDA synchronized), over
  ``runs`` calls and at least :data:`LATENCY_MIN_SECONDS`;
* throughput: pixels per second at the larger batches;
* peak memory while it is opened, evaluated and timed (:class:`blmkd.bench.memory.PeakMemory`);
* size, parameters, FLOPs per pixel, and the fraction of this machine's measured FP32 matmul peak
  the model's FLOPs reach at its best throughput;
* on a Jetson, board power from tegrastats during the largest batch, and energy per 1,000 pixels;
* with a report, the whole-scene classification map (:mod:`blmkd.inference.scene`) and its speed.

An artifact that fails (cannot load, wrong bands, a device this machine lacks) keeps its row with
the reason. The result is a JSON-ready dict; :mod:`blmkd.bench.report` turns it into a report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blmkd.bench.budgets import default_target, get_profile, get_sensor, judge, load_profiles, with_sensor
from blmkd.bench.machine import cuda_status, jetson_model, machine_info, matmul_peak_gflops
from blmkd.bench.memory import PeakMemory
from blmkd.bench.tegrastats import TegrastatsMonitor, energy_per_kpx_mj, tegrastats_status
from blmkd.bench.timing import percentiles, time_samples
from blmkd.errors import BlmkdError, DataError, ModelError

FORMAT = "blmkd-bench/1"
DEFAULT_BATCHES = (1, 64, 1024)
_MAX_SAMPLES_KEPT = 2000  # raw latency samples kept per artifact for the distribution plot
#: Batch-1 latency is timed for at least this long (after ``runs`` calls, and a warm-up of a tenth
#: of it): ``--runs 100`` of a 30 µs C export alone are 3 ms, and the demo's short run once gave
#: that export a p50 of 0.056 ms where 2,000 calls give 0.033 (2-core AMD EPYC, 2026-12-03).
LATENCY_MIN_SECONDS = 0.5


# ----------------------------------------------------------------------------------------------
# What to run


@dataclass
class Job:
    """One row of the table: an artifact, where it runs and how."""

    path: Path
    kind: str  # checkpoint | onnx | engine | c
    device: str  # cpu | cuda
    variant: str = ""  # "" or, for PyTorch, "fp16-autocast" (CUDA) / "bf16-autocast"; ONNX: the EP
    skip: str = ""  # a reason not to run it here


def artifact_kind(path: Path) -> str:
    from blmkd.inference.base import C_SUFFIXES, CHECKPOINT_SUFFIXES, ENGINE_SUFFIXES, ONNX_SUFFIXES

    if path.is_dir() or path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if path.suffix.lower() in ONNX_SUFFIXES:
        return "onnx"
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return "engine"
    if path.suffix.lower() in C_SUFFIXES:
        return "c"
    raise ModelError(f"{path.name}: not a checkpoint, ONNX file, TensorRT engine or C export")


def plan_jobs(paths: list[Path], device: str, cpu_bf16: bool = False) -> list[Job]:
    """The rows to run: one per artifact on CPU (plus BF16 autocast for checkpoints with ``cpu_bf16``);
    on CUDA, PyTorch FP32 + FP16/BF16 autocast and the ONNX Runtime CUDA and TensorRT execution
    providers, each skipped with the reason where missing (C exports: a skipped CPU row)."""
    import onnxruntime as ort

    jobs: list[Job] = []
    cuda = device.startswith("cuda")
    ok, why = cuda_status() if cuda else (True, "")
    eps = ort.get_available_providers()
    for p in paths:
        kind = artifact_kind(p)
        if not cuda:
            jobs.append(Job(p, kind, "cpu"))
            if cpu_bf16 and kind == "checkpoint":
                ok16, why16 = cpu_bf16_status()
                jobs.append(Job(p, kind, "cpu", "bf16-autocast", "" if ok16 else why16))
        elif kind == "checkpoint":
            skip = "" if ok else why
            jobs.append(Job(p, kind, "cuda", "", skip))
            jobs.append(Job(p, kind, "cuda", "fp16-autocast", skip))
            bf16 = skip or ("" if _bf16_ok() else "this GPU has no BF16 support")
            jobs.append(Job(p, kind, "cuda", "bf16-autocast", bf16))
        elif kind == "c":
            jobs.append(Job(p, kind, "cpu", "", "a C export runs on the CPU; bench it with --device cpu"))
        elif kind == "onnx":
            for ep in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                skip = "" if ep in eps else f"ONNX Runtime here has no {ep} (it has {', '.join(eps)})"
                jobs.append(Job(p, kind, "cuda", ep, skip or ("" if ok else why)))
        else:
            jobs.append(Job(p, kind, "cuda"))
    for j in jobs:
        if j.kind == "engine" and not j.skip:
            from blmkd.inference.tensorrt_runner import tensorrt_status

            trt_ok, trt_why = tensorrt_status()
            j.skip = "" if trt_ok else trt_why
    return jobs


def cpu_bf16_status() -> tuple[bool, str]:
    """Whether this CPU has native BF16 dot products (AVX512-BF16 or AMX), where BF16 autocast pays."""
    import torch

    cpu = torch.cpu
    if (
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    ):
        return True, ""
    return (
        False,
        "this CPU has no BF16 dot products (AVX512-BF16 or AMX); BF16 would be emulated, slower than FP32",
    )


def _bf16_ok() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


class AutocastRunner:
    """A PyTorch runner under ``torch.autocast`` (FP16 or BF16 on CUDA, BF16 on CPU); FP32 logits out."""

    backend = "pytorch"

    def __init__(self, base, dtype_name: str, device_type: str = "cuda"):
        import torch

        self.base, self.dtype, self.device_type = base, getattr(torch, dtype_name), device_type
        self.name, self.path, self.input_kind = base.name, base.path, base.input_kind
        self.meta = {
            **base.meta,
            "precision": f"{dtype_name.replace('bfloat', 'bf').replace('float', 'fp')}-autocast",
        }

    @property
    def size_bytes(self) -> int:
        return self.base.size_bytes

    def run(self, x) -> np.ndarray:
        import torch

        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.base.run(x)


def open_job(job: Job, threads: int | None):
    """Open the runner of a job (raises a BlmkdError / library error on failure)."""
    from blmkd.inference.artifacts import open_artifact

    if job.kind == "checkpoint":
        r = open_artifact(job.path, device=job.device)
        if job.variant:
            dtype = {"fp16-autocast": "float16", "bf16-autocast": "bfloat16"}[job.variant]
            r = AutocastRunner(r, dtype, "cuda" if job.device.startswith("cuda") else "cpu")
        return r
    if job.kind == "onnx":
        eps = [job.variant, "CPUExecutionProvider"] if job.variant else ["CPUExecutionProvider"]
        r = open_artifact(job.path, providers=eps, threads=threads or 0)
        if job.variant and r.providers[0] != job.variant:
            raise BlmkdError(
                f"ONNX Runtime did not start {job.variant} for this model (it runs on {r.providers[0]})"
            )
        return r
    if job.kind == "c":
        return open_artifact(job.path, threads=threads or 0)
    return open_artifact(job.path)


def format_label(runner, job: Job) -> str:
    prec = str(runner.meta.get("precision", "fp32")).upper()
    if job.kind == "checkpoint":
        return "PyTorch" + ("" if prec == "FP32" else f" {prec}") + (" CUDA" if job.device == "cuda" else "")
    if job.kind == "onnx":
        ep = {"CUDAExecutionProvider": " (ORT CUDA)", "TensorrtExecutionProvider": " (ORT TensorRT)"}.get(
            job.variant, ""
        )
        byte_input = " byte-input" if runner.meta.get("export_format") == "onnx-int8-byte" else ""
        return f"ONNX {prec}{byte_input}{ep}"
    if job.kind == "c":
        return f"C {prec}"
    return f"TensorRT {prec}"


def _job_label(job: Job) -> str:
    return (
        f"{job.path.name}"
        + (f" [{job.variant}]" if job.variant else "")
        + (f" on {job.device}" if job.device != "cpu" else "")
    )


# ----------------------------------------------------------------------------------------------
# The test data


def _light_meta(path: Path) -> dict:
    """Metadata of an ONNX file, a C export or an engine's sidecar without opening a session."""
    if path.suffix.lower() == ".onnx":
        from blmkd.inference.onnx_meta import onnx_metadata

        return onnx_metadata(path)
    if artifact_kind(path) == "c":
        from blmkd.inference.c_build import read_c_metadata

        return read_c_metadata(path)
    side = path.with_name(path.name + ".json")
    meta = json.loads(side.read_text()) if side.exists() else {}
    src = path.with_name(str(meta.get("onnx", ""))) if meta.get("onnx") else None
    if src is not None and src.is_file():
        from blmkd.inference.onnx_meta import onnx_metadata

        meta = {**onnx_metadata(src), **meta}
    return meta


def bench_bundle(paths: list[Path], dataset: str | None = None):
    """The scene, split and preprocessing to test on: the first checkpoint's, else the first ONNX
    file's (or engine sidecar's) recorded dataset, split spec and preprocessing.

    Returns:
        ``(bundle, source)``; ``source`` names the artifact the data facts came from.
    """
    from blmkd.bundle import Bundle, DataOptions, bundle_from_checkpoint
    from blmkd.checkpoint import load_checkpoint
    from blmkd.data.preprocess import Preprocessing

    over = {"dataset": dataset} if dataset else None
    for p in paths:
        if artifact_kind(p) == "checkpoint":
            return bundle_from_checkpoint(load_checkpoint(p), over), p.name
    for p in paths:
        meta = _light_meta(p)
        spec = meta.get("split") or {}
        if not spec or not meta.get("preprocessing"):
            continue
        from blmkd.data import load_scene
        from blmkd.data.splits import split_from_spec

        name = dataset or meta.get("dataset")
        if not name:
            raise DataError(f"{p.name} does not name its dataset; pass --dataset")
        try:
            scene = load_scene(name)
        except DataError as exc:
            raise DataError(f"{exc} (the dataset recorded in {p.name}; pass --dataset PATH)") from None
        split = split_from_spec(scene, spec)
        opts = DataOptions(dataset=name, strategy=spec.get("strategy", "ratio"), seed=int(spec.get("seed", 0)),
                           patch=int(meta.get("patch_size") or spec.get("patch_size", 7)))  # fmt: skip
        return Bundle(opts, scene, split, Preprocessing.from_dict(meta["preprocessing"])), p.name
    raise ModelError(
        "none of the models records its dataset and split (give a checkpoint or a blmkd ONNX export)"
    )


class _Extractors:
    """Patch extractors per (input kind, preprocessing): artifacts fitted on other training pixels
    see the scene through their own statistics."""

    def __init__(self, scene, patch: int):
        self.scene, self.patch, self._cache = scene, patch, {}

    def get(self, input_kind: str, prep_dict: dict):
        from blmkd.data.patches import PatchExtractor
        from blmkd.data.preprocess import Preprocessing

        key = (input_kind, json.dumps(prep_dict, sort_keys=True))
        if key not in self._cache:
            prep = Preprocessing.from_dict(prep_dict)
            cube = (
                prep.to_bytes(self.scene.cube) if input_kind == "uint8" else prep.standardize(self.scene.cube)
            )
            self._cache[key] = PatchExtractor(cube, self.patch)
        return self._cache[key]


def _check_fits(runner, bundle) -> None:
    meta, scene = runner.meta, bundle.scene
    if meta.get("bands") not in (None, scene.bands):
        raise ModelError(f"takes {meta['bands']} bands, {scene.name} has {scene.bands}")
    if meta.get("num_classes") not in (None, scene.num_classes):
        raise ModelError(f"has {meta['num_classes']} classes, {scene.name} has {scene.num_classes}")
    if meta.get("patch_size") not in (None, 0, bundle.patch_size):
        raise ModelError(
            f"takes {meta['patch_size']}×{meta['patch_size']} patches, the split uses {bundle.patch_size}"
        )
    ids = [c["id"] for c in meta.get("classes", [])]
    if ids and ids != list(scene.class_ids):
        raise ModelError(f"was trained on class ids {ids}, the scene has {list(scene.class_ids)}")
    if not meta.get("preprocessing"):
        raise ModelError("its metadata has no preprocessing")


# ----------------------------------------------------------------------------------------------
# Model size and compute


def model_stats(runner, stats_cache: dict) -> dict:
    """Parameters and FLOPs per pixel: from the PyTorch model where there is one, else from the
    same source checkpoint benchmarked earlier, else from the preset rebuilt with its defaults."""
    import torch

    from blmkd.flops import count_flops, count_params

    if runner.meta.get("family") == "baseline":  # scikit-learn models: their export records both
        return {"parameters": runner.meta.get("parameters"), "flops_per_px": runner.meta.get("flops_per_px"),
                "stats_from": "artifact metadata"}  # fmt: skip
    key = runner.meta.get("source_sha256") or runner.meta.get("model")
    model = getattr(runner, "model", None) or getattr(getattr(runner, "base", None), "model", None)
    if model is None and key in stats_cache:
        return {**stats_cache[key], "stats_from": "source checkpoint"}
    how = "this model"
    if model is None:
        from blmkd.models import create_model

        meta = runner.meta
        try:
            model = create_model(
                meta["model"], bands=int(meta["bands"]), num_classes=int(meta["num_classes"])
            ).eval()
        except (KeyError, BlmkdError):
            return {
                "parameters": None,
                "flops_per_px": None,
                "stats_from": "unknown (no model name in metadata)",
            }
        how = f"preset {meta['model']} (default config)"
    p = int(runner.meta.get("patch_size") or 7)
    dev = next(model.parameters()).device
    # batch 1, as everywhere FLOPs are shown (blmkd.flops): the teachers do per-call work a batch amortizes
    x = torch.zeros((1, int(runner.meta.get("bands") or model.config.bands), p, p), device=dev)
    if getattr(model, "input_kind", "float") == "uint8":
        x = x.to(torch.uint8)
    out = {"parameters": count_params(model), "flops_per_px": int(count_flops(model, x)), "stats_from": how}
    if how == "this model":
        stats_cache[key] = {k: out[k] for k in ("parameters", "flops_per_px")}
    return out


# ----------------------------------------------------------------------------------------------
# One artifact


@dataclass
class _Ctx:
    bundle: object
    rows: np.ndarray
    cols: np.ndarray
    labels: np.ndarray
    extractors: _Extractors
    batches: tuple[int, ...]
    runs: int
    threads: int | None
    maps: bool
    tile: int
    power: bool
    stats: dict = field(default_factory=dict)
    log: Callable[[str], None] = print


def _sync_for(job: Job):
    if job.device == "cuda" and job.kind == "checkpoint":
        import torch

        return torch.cuda.synchronize
    return None


def bench_one(job: Job, ctx: _Ctx) -> tuple[dict, dict]:
    """Benchmark one job; returns (JSON row, extras with the predictions for agreement and maps)."""
    row: dict = {"name": _job_label(job), "path": str(job.path), "kind": job.kind, "device": job.device,
                 "variant": job.variant, "status": "ok", "reason": ""}  # fmt: skip
    extras: dict = {}
    if job.skip:
        row.update(status="skipped", reason=job.skip, format=_job_label(job))
        return row, extras
    mem_device = "cuda" if (job.device == "cuda" and job.kind == "checkpoint") else "cpu"
    try:
        with PeakMemory(mem_device) as mem:
            runner = open_job(job, ctx.threads)
            _check_fits(runner, ctx.bundle)
            own = (runner.meta.get("split") or {}).get("digest")
            if own and own != ctx.bundle.split.spec.get("digest"):
                row["other_split"] = (
                    own  # trained on other pixels: some test pixels may be its training pixels
                )
            fmt = format_label(runner, job)
            model = runner.meta.get("model", "?")
            row.update(format=fmt, name=f"{model} · {fmt}", model=model, precision=runner.meta.get("precision", "fp32"),
                       family=runner.meta.get("family", ""), source_sha256=runner.meta.get("source_sha256"),
                       backend=getattr(runner, "backend", ""), providers=getattr(runner, "providers", None),
                       size_mb=runner.size_bytes / 1e6, input_kind=runner.input_kind)  # fmt: skip
            row["recorded"] = {k: runner.meta.get(k) for k in ("check", "checkpoint_test_oa", "split")}
            ex = ctx.extractors.get(runner.input_kind, runner.meta["preprocessing"])
            _evaluate(runner, ex, ctx, row, extras)
            _time(runner, ex, job, ctx, row)
        row["memory_mb"], row["memory_method"] = mem.peak_mb, mem.method
        row.update(model_stats(runner, ctx.stats))
        if ctx.maps:
            _map(runner, ctx, row, extras)
    except Exception as exc:  # noqa: BLE001  (a failing artifact keeps its row, with the reason)
        row.update(
            status="failed", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
        row.setdefault("format", _job_label(job))
        ctx.log(f"{row['name']}: failed: {row['reason']}")
    return row, extras


def _evaluate(runner, ex, ctx: _Ctx, row: dict, extras: dict) -> None:
    from blmkd.metrics import classification_report

    bs = max(ctx.batches)
    logits = [
        runner.run(ex.gather(ctx.rows[i : i + bs], ctx.cols[i : i + bs]).numpy())
        for i in range(0, len(ctx.rows), bs)
    ]
    pred = np.concatenate(logits).argmax(1)
    sc = ctx.bundle.scene
    rep = classification_report(ctx.labels, pred, sc.num_classes)
    d = rep.to_dict(sc.class_ids, sc.class_names)
    row.update(oa=d["oa"], aa=d["aa"], kappa=d["kappa"], per_class=d["per_class"], test_pixels=int(len(pred)))
    extras["test_pred"] = pred
    extras["confusion"] = rep.confusion


def _inputs(ex, ctx: _Ctx, n: int) -> np.ndarray:
    idx = np.resize(np.arange(len(ctx.rows)), n)  # repeats the test pixels if there are fewer than n
    return ex.gather(ctx.rows[idx], ctx.cols[idx]).numpy()


def _time(runner, ex, job: Job, ctx: _Ctx, row: dict) -> None:
    sync = _sync_for(job)
    x1 = _inputs(ex, ctx, 1)
    s = time_samples(
        lambda: runner.run(x1),
        warmup=10,
        runs=ctx.runs,
        max_seconds=10.0,
        sync=sync,
        min_seconds=LATENCY_MIN_SECONDS,
    )
    row["latency"] = percentiles(s).to_dict()
    row["latency_samples_ms"] = [float(v) for v in (s[:_MAX_SAMPLES_KEPT] * 1e3)]
    thr = [{"batch": 1, "p50_ms": row["latency"]["p50_ms"], "px_s": 1e3 / row["latency"]["p50_ms"]}]
    big = sorted({b for b in ctx.batches if b > 1})
    for b in big:
        xb = _inputs(ex, ctx, b)
        t = percentiles(
            time_samples(
                lambda xb=xb: runner.run(xb),
                warmup=2,
                runs=max(3, ctx.runs // 10),
                max_seconds=10.0,
                sync=sync,
            )
        )
        thr.append({"batch": b, "p50_ms": t.p50_ms, "px_s": b * 1e3 / t.p50_ms})
    row["throughput"] = thr
    row["best_px_s"] = max(t["px_s"] for t in thr)
    row["power_w"] = row["energy_mj_per_kpx"] = None
    if not ctx.power:
        row["power_note"] = tegrastats_status()[1] if not tegrastats_status()[0] else "disabled"
        return
    b = big[-1] if big else 1
    xb = _inputs(ex, ctx, b)
    with TegrastatsMonitor() as mon:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 2.0:  # long enough for ~20 tegrastats samples
            runner.run(xb)
            n += b
        if sync:
            sync()
        dt = time.perf_counter() - t0
    summ = mon.summary()
    if "power_w" in summ:
        row["power_w"], row["power_max_w"] = summ["power_w"], summ["max_power_w"]
        row["energy_mj_per_kpx"] = energy_per_kpx_mj(summ["power_w"], dt, n)
        row["power_note"] = f"tegrastats {summ['source']}, {summ['samples']} samples at batch {b}"
        row["board_ram_peak_mb"] = summ.get("ram_peak_mb")
    else:
        row["power_note"] = summ["error"]


def _map(runner, ctx: _Ctx, row: dict, extras: dict) -> None:
    from blmkd.inference.classifier import SceneClassifier
    from blmkd.inference.scene import predict_scene

    clf = SceneClassifier.from_runner(runner, threads=ctx.threads)
    sm = predict_scene(clf, ctx.bundle.scene.cube, tile=ctx.tile)
    row["map"] = {
        "px_s": sm.px_per_s,
        "seconds": sm.seconds,
        "pixels": sm.pixels,
        "mode": sm.mode,
        "tile": sm.tile,
        "batch": sm.batch,
        "note": clf.note,
    }
    extras["map"] = sm.pred


# ----------------------------------------------------------------------------------------------
# The whole run


@contextmanager
def _torch_threads(n: int | None):
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_bench(
    models,
    report_dir: str | Path | None = None,
    *,
    dataset: str | None = None,
    targets: list[str] | None = None,
    targets_file: str | Path | None = None,
    sensor: str | None = None,
    batches: tuple[int, ...] | list[int] = DEFAULT_BATCHES,
    device: str = "cpu",
    runs: int = 100,
    threads: int | None = None,
    eval_size: int | None = None,
    maps: bool | None = None,
    tile: int = 256,
    seed: int = 0,
    cpu_bf16: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Benchmark artifacts on one test split and (with ``report_dir``) write the report.

    Args:
        models: checkpoint files or run directories, ONNX files, TensorRT engines.
        report_dir: folder for report.md/.html/.json and the plots (None: no report).
        dataset: read this dataset (registry name or path) instead of the recorded one.
        targets: target profile names (``jetson-orin-nano@7W`` picks a power mode); default the one
            describing this machine.
        targets_file: TOML overriding or adding profiles (see :mod:`blmkd.bench.budgets`).
        sensor: a sensor preset (``enmap``, ...) or ``swath=PX,rate=LINES_PER_S`` (see
            :func:`blmkd.bench.budgets.get_sensor`): every target's throughput budget becomes the
            pixel rate of that sensor, and the verdicts say with what margin the artifact keeps up.
        batches: batch sizes; 1 gives the latency, the others the throughput.
        device: ``cpu`` or ``cuda``.
        cpu_bf16: on CPU, also run checkpoints under BF16 autocast (skipped with the reason on a CPU
            without BF16 dot products).
        runs: timed calls at batch 1 (a tenth of it, at least 3, at the larger batches).
        threads: torch and ONNX Runtime intra-op threads (default: the libraries' own).
        eval_size: evaluate on a seeded sample of this many test pixels (default: all).
        maps: classify the whole scene with every artifact (default: only with a report).
        tile: rows per tile of the scene maps.
        seed: seed of the ``eval_size`` sample.
        log: where progress lines go.

    Returns:
        A JSON-serialisable dict: ``machine``, ``matmul_peak``, ``data``, ``settings``, ``rows`` (one
        per artifact and device variant, failed ones with their ``reason``), ``targets``,
        ``verdicts`` and, with a report, ``report`` (the files written).
    """
    paths = [Path(m) for m in models]
    if not paths:
        raise BlmkdError("no models given")
    for p in paths:
        if not p.exists():
            raise ModelError(f"model not found: {p}")
        artifact_kind(p)
    batches = tuple(sorted({int(b) for b in batches}))
    if not batches or min(batches) < 1:
        raise BlmkdError("--batch sizes must be positive integers")
    if runs < 1:
        raise BlmkdError("--runs must be at least 1")
    if device not in ("cpu", "cuda"):
        raise BlmkdError(f"--device must be cpu or cuda, not {device!r}")
    if report_dir is not None:
        from blmkd.io import check_writable_dir

        check_writable_dir(report_dir, "--report")  # before the benchmark, not after it
    profiles = load_profiles(targets_file)
    chosen = [get_profile(t, profiles) for t in (targets or [default_target(device)])]
    sensor_obj = get_sensor(sensor) if sensor else None
    if sensor_obj is not None:
        chosen = [with_sensor(p, sensor_obj) for p in chosen]
        log(f"sensor {sensor_obj.text()}")
    maps = bool(report_dir) if maps is None else maps

    bundle, data_source = bench_bundle(paths, dataset)
    rows_, cols_, labels_ = bundle.coords("test")
    if len(rows_) == 0:
        raise DataError("the split has no test pixels to benchmark on")
    if eval_size is not None and eval_size < len(rows_):
        if eval_size < 1:
            raise BlmkdError("--eval-size must be at least 1")
        pick = np.sort(np.random.default_rng(seed).choice(len(rows_), eval_size, replace=False))
        rows_, cols_, labels_ = rows_[pick], cols_[pick], labels_[pick]
    jobs = plan_jobs(paths, device, cpu_bf16=cpu_bf16)
    power_ok = tegrastats_status()[0]
    ctx = _Ctx(bundle, rows_, cols_, labels_, _Extractors(bundle.scene, bundle.patch_size), batches, runs, threads,
               maps, tile, power_ok, log=log)  # fmt: skip

    with _torch_threads(threads):
        peak_dev = device if (device == "cpu" or cuda_status()[0]) else None
        peak = matmul_peak_gflops(peak_dev) if peak_dev else {"gflops": None, "note": cuda_status()[1]}
        log(
            f"matmul peak here: {peak['gflops']:.1f} GFLOP/s (FP32)"
            if peak["gflops"]
            else f"matmul peak: {peak['note']}"
        )
        rows, extras = [], []
        for job in jobs:
            log(f"benchmarking {_job_label(job)}")
            r, e = bench_one(job, ctx)
            rows.append(r)
            extras.append(e)

    _agreement(rows, extras)
    _check_recorded(rows, bundle, evaluated_all=len(rows_) == len(bundle.coords("test")[0]))
    _unique_names(rows)
    for r in rows:
        if r["status"] == "ok" and peak.get("gflops") and r.get("flops_per_px"):
            r["peak_fraction"] = r["flops_per_px"] * r["best_px_s"] / (peak["gflops"] * 1e9)
    measured_on = "jetson" if jetson_model() else device
    verdicts = [judge(p, r, measured_on).to_dict() for p in chosen for r in rows if r["status"] == "ok"]
    from blmkd.bench.report import baseline_lines

    sc = bundle.scene
    result = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(device),
        "matmul_peak": peak,
        "data": {
            "scene": sc.name, "shape": [sc.height, sc.width, sc.bands], "classes": sc.classes(),
            "split": {k: v for k, v in bundle.split.spec.items() if k != "counts"},
            "patch_size": bundle.patch_size, "test_pixels": int(len(bundle.coords("test")[0])),
            "evaluated_pixels": int(len(rows_)), "from": data_source,
        },
        "settings": {"batches": list(batches), "runs": runs, "device": device, "threads": threads,
                     "eval_size": eval_size, "maps": maps, "tile": tile},
        "rows": rows,
        "targets": [p.to_dict() for p in chosen],
        "sensor": sensor_obj.to_dict() if sensor_obj is not None else None,
        "verdicts": verdicts,
        "baselines": baseline_lines(rows),
    }  # fmt: skip
    if report_dir is not None:
        from blmkd.bench.report import write_report

        result["report"] = write_report(result, extras, Path(report_dir), bundle)
    return json.loads(json.dumps(result, default=_json_default))


def _agreement(rows: list[dict], extras: list[dict]) -> None:
    """Argmax agreement of each artifact with its model's FP32 reference on the test pixels."""
    refs: dict = {}
    for i, r in enumerate(rows):
        if r["status"] != "ok":
            continue
        key = r.get("source_sha256") or r.get("model")
        if key not in refs and r.get("precision") == "fp32":
            refs[key] = i
    for i, r in enumerate(rows):
        if r["status"] != "ok":
            continue
        j = refs.get(r.get("source_sha256") or r.get("model"))
        if j is None:
            r["agreement"], r["reference"] = None, None
            continue
        r["agreement"] = float((extras[i]["test_pred"] == extras[j]["test_pred"]).mean())
        r["reference"] = rows[j]["name"]


#: How far an export may fall below what its own export check recorded before bench refuses it:
#: bench's pixels are not the check's, so a little slack, but never the ✅ of a broken file.
RECORDED_SLACK = 0.05


def _check_recorded(rows: list[dict], bundle, evaluated_all: bool) -> None:
    """Fail an export whose results here contradict the check recorded when it was exported:
    its argmax agreement with its PyTorch checkpoint (when that is benchmarked too), else its OA
    against the checkpoint's recorded test OA (on the same split, all test pixels)."""
    split_digest = bundle.split.spec.get("digest")
    for r in rows:
        rec = r.pop("recorded", None)
        if r["status"] != "ok" or r["kind"] == "checkpoint" or not rec:
            continue
        check = rec.get("check") or {}
        why = ""
        if r.get("agreement") is not None and isinstance(check.get("agreement"), (int, float)):
            want = float(check["agreement"]) - RECORDED_SLACK
            if r["agreement"] < want:
                why = (f"agrees with its PyTorch checkpoint on {100 * r['agreement']:.2f}% of the test pixels; "
                       f"its export check recorded {100 * check['agreement']:.2f}%")  # fmt: skip
        elif evaluated_all and isinstance(rec.get("checkpoint_test_oa"), (int, float)):
            same_split = split_digest and (rec.get("split") or {}).get("digest") == split_digest
            if same_split and r["oa"] < float(rec["checkpoint_test_oa"]) - RECORDED_SLACK:
                why = (f"OA {100 * r['oa']:.2f}% on its own test split, its checkpoint recorded "
                       f"{100 * rec['checkpoint_test_oa']:.2f}%")  # fmt: skip
        if why:
            r.update(status="failed", reason=f"fails its recorded export check: {why}")


def _unique_names(rows: list[dict]) -> None:
    """Give rows that share a label (two checkpoints of one preset) their file names too."""
    seen: dict[str, int] = {}
    for r in rows:
        seen[r["name"]] = seen.get(r["name"], 0) + 1
    for r in rows:
        if seen[r["name"]] > 1:
            p = Path(r["path"])
            r["name"] = (
                f"{r['name']} ({p.parent.name}/{p.name})" if p.parent.name else f"{r['name']} ({p.name})"
            )
    counts: dict[str, int] = {}
    for r in rows:  # the same file twice (or two run folders of one name): number them
        counts[r["name"]] = counts.get(r["name"], 0) + 1
    again = {k for k, v in counts.items() if v > 1}
    index: dict[str, int] = {}
    for r in rows:
        if r["name"] in again:
            index[r["name"]] = index.get(r["name"], 0) + 1
            r["name"] = f"{r['name']} #{index[r['name']]}"


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
