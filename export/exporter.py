"""The one export entry: a checkpoint in, checked artifacts out.

``export(ckpt, formats=["onnx", "onnx-fp16", "onnx-int8", "trt"])`` rebuilds the checkpoint's
model and data (same split, same preprocessing), exports the FP32 graph once and derives the
others from it. Like optimum-cli, every artifact is checked before it is reported done: it runs in
its own runtime on the real test patches and is compared with PyTorch (max |logit difference|,
argmax agreement, OA). The file is written to a temporary name and only renamed into place once
its check passes, so a failed export leaves nothing that looks valid.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from blmkd.bundle import bundle_from_checkpoint
from blmkd.checkpoint import Checkpoint, load_checkpoint
from blmkd.errors import ExportError
from blmkd.export import formats as F
from blmkd.export.onnx_export import (
    INPUT_NAME,
    cast_uint8_inputs_first,
    check_model,
    set_metadata,
    simplify,
    ssm_decay_island,
    to_fp16,
    torch_to_onnx,
    uint8_input_feeds_cast,
)
from blmkd.export.runtime import OnnxRunner, TensorRTRunner, artifact_meta
from blmkd.export.targets import Target, device_script, engine_name, get_target, onnx_source, script_name
from blmkd.export.tensorrt import build_engine, local_compute_capability, tensorrt_status
from blmkd.io import atomic_path, atomic_write_json, atomic_write_text, check_writable_dir
from blmkd.runs import RunLock, clean_leftovers

_ENGINE_SOURCE = {"fp32": "onnx", "fp16": "onnx", "int8": "onnx-int8"}
_PRECISION_FORMAT = {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8"}


@dataclass
class Check:
    """How an artifact compares with the PyTorch checkpoint on the evaluation patches."""

    pixels: int  # test patches compared
    max_abs_diff: float  # max |logit − PyTorch logit|
    agreement: float  # fraction of equal argmax decisions
    oa: float  # overall accuracy of the artifact
    oa_reference: float  # overall accuracy of PyTorch on the same patches
    criterion: str  # what had to hold
    passed: bool

    @property
    def oa_drop_pp(self) -> float:
        return 100.0 * (self.oa_reference - self.oa)

    def line(self) -> str:
        return (
            f"max|Δlogit| {self.max_abs_diff:.2e}, argmax agreement {100 * self.agreement:.2f}%, "
            f"OA {100 * self.oa:.2f}% (PyTorch {100 * self.oa_reference:.2f}%) on {self.pixels} test patches "
            f"[{self.criterion}: {'ok' if self.passed else 'FAILED'}]"
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Artifact:
    """One file written by :func:`export`."""

    format: str  # row of the format table: onnx, onnx-fp16, onnx-int8, onnx-int8-byte, c, trt
    kind: str  # "onnx", "c", "engine", "script"; "runner" and "library" beside a C export
    path: Path
    precision: str | None
    size_bytes: int
    check: Check | None = None
    note: str = ""


class EvalSet:
    """The test patches every artifact is judged on (all of them, or a seeded sample)."""

    def __init__(
        self, bundle, input_kind: str, size: int | None = None, seed: int = 0, batch_size: int = 1024
    ):
        rows, cols, labels = bundle.coords("test")
        if len(rows) == 0:
            raise ExportError("the checkpoint's split has no test pixels to check the export on")
        if size is not None and size < len(rows):
            pick = np.sort(np.random.default_rng(seed).choice(len(rows), size, replace=False))
            rows, cols, labels = rows[pick], cols[pick], labels[pick]
        self.rows, self.cols, self.labels = rows, cols, labels
        self.extractor = bundle.extractor(input_kind)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self):
        for i in range(0, len(self.rows), self.batch_size):
            yield self.extractor.gather(
                self.rows[i : i + self.batch_size], self.cols[i : i + self.batch_size]
            ).numpy()

    def logits(self, run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.concatenate([run(x) for x in self.batches()]).astype(np.float32, copy=False)


def compare(logits: np.ndarray, ref: np.ndarray, labels: np.ndarray, criterion: dict[str, float]) -> Check:
    """Judge ``logits`` against the PyTorch ``ref`` logits.

    ``criterion`` holds ``atol`` (max |Δlogit|), and/or ``min_agreement`` and ``max_oa_drop`` (pp).
    """
    if logits.shape != ref.shape:
        raise ExportError(f"artifact returned logits of shape {logits.shape}, PyTorch {ref.shape}")
    finite = bool(np.isfinite(logits).all())
    diff = float(np.abs(logits - ref).max()) if finite else float("inf")
    pred = logits.argmax(1)
    agreement = float((pred == ref.argmax(1)).mean())
    oa, oa_ref = float((pred == labels).mean()), float((ref.argmax(1) == labels).mean())
    parts, ok = [], finite
    if "atol" in criterion:
        parts.append(f"max|Δlogit| <= {criterion['atol']:g}")
        ok &= diff <= criterion["atol"]
    if "min_agreement" in criterion:
        parts.append(f"agreement >= {100 * criterion['min_agreement']:g}%")
        ok &= agreement >= criterion["min_agreement"]
    if "max_oa_drop" in criterion:
        parts.append(f"OA drop <= {criterion['max_oa_drop']:g} pp")
        ok &= 100.0 * (oa_ref - oa) <= criterion["max_oa_drop"] + 1e-9
    return Check(len(ref), diff, agreement, oa, oa_ref, ", ".join(parts), bool(ok))


def _criterion(opts: dict, precision: str, atol: float | None = None) -> dict:
    """What an artifact of this precision is checked by: INT8 by its decisions, others by logits."""
    if precision == "int8":
        return {"min_agreement": opts["min_agreement"], "max_oa_drop": opts["max_oa_drop"]}
    return {"atol": atol if atol is not None else opts["atol"]}


def _human(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def export(
    checkpoint,
    formats: list[str] | str | None = None,
    out_dir: str | Path | None = None,
    *,
    force: bool = False,
    target: str | None = None,
    build_engine: bool | None = None,
    calibration: str | None = None,
    calib_size: int | None = None,
    atol: float | None = None,
    opset: int | None = None,
    simplify: bool | None = None,
    min_agreement: float | None = None,
    max_oa_drop: float | None = None,
    workspace_mb: int | None = None,
    batch_profile: tuple[int, int, int] | None = None,
    eval_size: int | None = None,
    runner: bool | None = None,
    c_target: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[Artifact]:
    """Export a checkpoint to the requested formats and check every artifact.

    Args:
        checkpoint: a checkpoint path, run directory or :class:`blmkd.checkpoint.Checkpoint`.
        formats: names from :data:`blmkd.export.formats.FORMATS` (default ``["onnx"]``). ``trt``
            builds one engine per requested ONNX precision (FP32 if none) and writes the device
            script; FP32/FP16 engines are built from the FP32 ONNX, which is then written too.
        out_dir: output folder (default: ``export/`` beside the checkpoint).
        force: overwrite existing outputs.
        target: device for ``trt`` (see :data:`blmkd.export.targets.TARGETS`).
        build_engine: ``trt``: fail unless the engine can be built here.
        calibration, calib_size: ``onnx-int8`` calibrator and number of training patches.
        atol: max |Δlogit| for FP32/FP16 artifacts (defaults per format).
        opset, simplify: ONNX opset (>= 17) and onnxslim on/off.
        min_agreement, max_oa_drop: ``onnx-int8`` acceptance (argmax agreement, OA drop in pp).
        workspace_mb, batch_profile: ``trt`` builder workspace (MiB) and (min, opt, max) batch.
        eval_size: check on a seeded sample of this many test patches (default: all of them).
        runner: ``c``: also write ``<model>_runner.c``, the standalone push-broom runner (checked:
            built here with ``cc -O3`` and its map of the first scene lines equal to ``predict``'s).
        c_target: ``c``: also build for this CPU (:data:`blmkd.export.c_export.C_TARGETS`) with its
            cross compiler, run the test patches there (under qemu where the host differs) and check
            the logits like the host build's; writes ``<model>-<target>.so`` (and the runner's static
            executable ``<model>_runner-<target>``).
        seed: seed of the calibration and evaluation samples.
        log: where progress lines go.

    Returns:
        The written artifacts, in format-table order (device script and engines last).

    Raises:
        ExportError / ModelError: bad options, an unreadable checkpoint, existing outputs without
            ``force``, or an artifact that fails its check (that file is not written).
    """
    requested = F.resolve_formats(formats)
    names = {f.name for f in requested}
    engine_precisions: list[str] = []
    if "trt" in names:
        engine_precisions = [p for p, n in _PRECISION_FORMAT.items() if n in names] or ["fp32"]
        names |= {_ENGINE_SOURCE[p] for p in engine_precisions}  # engine sources are written too
    fmts = F.resolve_formats(sorted(names))
    opts = F.validate_options(
        fmts,
        dict(target=target, build_engine=build_engine, calibration=calibration, calib_size=calib_size, atol=atol,
             opset=opset, simplify=simplify, min_agreement=min_agreement, max_oa_drop=max_oa_drop,
             workspace_mb=workspace_mb, batch_profile=tuple(batch_profile) if batch_profile else None,
             runner=runner or None, c_target=c_target),
    )  # fmt: skip
    if eval_size is not None and eval_size < 1:
        raise ExportError(f"--eval-size must be at least 1, got {eval_size}")

    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    stem = ck.model_name
    out = Path(out_dir) if out_dir is not None else ck.path.parent / "export"
    onnx_fmts = [f for f in fmts if f.runtime == "onnxruntime"]
    tgt: Target | None = get_target(opts["trt"]["target"]) if "trt" in opts else None
    c_fmt = F.FORMATS["c"] if "c" in names else None
    planned = [out / f"{stem}{f.suffix}" for f in onnx_fmts + ([c_fmt] if c_fmt else [])]
    if c_fmt is not None:
        planned += _c_extra_paths(out, stem, opts["c"])
    if tgt is not None:
        planned.append(out / script_name(tgt))
        planned += [out / engine_name(stem, p) for p in engine_precisions]
    if not force:
        existing = [p for p in planned if p.exists()]
        if existing:
            raise ExportError(f"{existing[0]} already exists; pass --force to overwrite")
    check_writable_dir(out, "export folder")  # before the export and its checks, not after them

    # ---- model, data, reference ------------------------------------------------------------
    model = ck.build_model()
    input_kind = getattr(model, "input_kind", "float")
    if c_fmt is not None:
        from blmkd.export.c_export import c_compiler, check_c_exportable

        check_c_exportable(model)  # before any other work: a teacher has no C export
        cc, why = c_compiler()
        if cc is None:
            raise ExportError(f"--c: {why} (the C file is compiled here to check it against PyTorch)")
        if opts["c"]["c_target"]:
            from blmkd.export.c_export import cross_compiler, get_c_target

            cross, why = cross_compiler(get_c_target(opts["c"]["c_target"]))
            if cross is None:
                raise ExportError(f"--c-target: {why}")
    bundle = bundle_from_checkpoint(ck)
    ev = EvalSet(bundle, input_kind, eval_size, seed)
    with torch.inference_mode():
        ref = ev.logits(lambda x: model(torch.from_numpy(x)).float().numpy())
    labels = ev.labels
    meta = artifact_meta(ck)
    log(
        f"{stem} ({input_kind} input, {meta['bands']} bands, {meta['patch_size']}×{meta['patch_size']} patches) "
        f"from {ck.path}: PyTorch OA {100 * float((ref.argmax(1) == labels).mean()):.2f}% on {len(ev)} test patches"
    )

    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):  # one export per folder at a time; what a killed one left is removed first
        clean_leftovers(out)
        artifacts: list[Artifact] = []
        onnx_paths: dict[str, Path] = {}
        if onnx_fmts:
            with tempfile.TemporaryDirectory(prefix="blmkd-export-") as tmp:
                base_opts = opts[onnx_fmts[0].name]
                fp32, simplified = _fp32_graph(
                    model, ev, Path(tmp), base_opts["opset"], base_opts["simplify"], log
                )
                for fmt in onnx_fmts:
                    o = opts[fmt.name]
                    extra: dict[str, Any] = {}
                    if fmt.precision == "fp32":
                        proto = fp32
                    elif fmt.precision == "fp16":
                        island = ssm_decay_island(fp32)
                        proto = to_fp16(fp32, island)
                        extra["fp32_nodes"] = sorted(island)
                    elif fmt.name == "onnx-int8-byte":
                        from blmkd.export.quantize import quantize_byte_input

                        proto, extra["quantization"] = quantize_byte_input(fp32)
                    else:
                        from blmkd.export.quantize import PatchReader, calibration_coords, quantize_int8

                        rows, cols = calibration_coords(bundle, int(o["calib_size"]), seed)
                        reader = PatchReader(
                            bundle.extractor(input_kind), rows, cols, fp32.graph.input[0].name
                        )
                        log(f"{fmt.name}: calibrating ({o['calibration']}) on {len(rows)} training patches")
                        proto, extra["quantization"] = quantize_int8(fp32, reader, o["calibration"], log=log)
                    path = out / f"{stem}{fmt.suffix}"
                    art = _write_checked_onnx(
                        proto, path, fmt, {**meta, "precision": fmt.precision, "export_format": fmt.name, "opset": o["opset"], "simplified": simplified, **extra},
                        ev, ref, labels, _criterion(o, fmt.precision), log,
                    )  # fmt: skip
                    artifacts.append(art)
                    onnx_paths[fmt.name] = path

        if c_fmt is not None:
            o = opts["c"]
            artifacts += _write_checked_c(
                model, out / f"{stem}{c_fmt.suffix}", c_fmt,
                {**meta, "precision": c_fmt.precision, "export_format": c_fmt.name},
                ev, ref, labels, _criterion(o, c_fmt.precision), log, o, bundle,
            )  # fmt: skip
        if tgt is not None:
            artifacts += _tensorrt(
                tgt, stem, engine_precisions, onnx_paths, meta, opts, ev, ref, labels, out, log
            )
        return artifacts


def _fp32_graph(
    model, ev: EvalSet, tmp: Path, opset: int, do_simplify: bool, log
) -> tuple[onnx.ModelProto, str]:
    x = ev.extractor.gather(ev.rows[:2], ev.cols[:2]).numpy()
    path = tmp / "fp32.onnx"
    torch_to_onnx(model, torch.from_numpy(x), path, opset)
    proto = onnx.load(str(path))
    if do_simplify:
        proto, simplified = simplify(proto, log)
    else:
        simplified = "no: disabled"
    if not uint8_input_feeds_cast(proto) and cast_uint8_inputs_first(proto):
        log(
            "note: moved the uint8 → float Cast to the graph input (TensorRT needs UINT8 inputs to feed a Cast)"
        )
    return proto, simplified


def _write_checked_onnx(
    proto, path: Path, fmt, meta: dict, ev: EvalSet, ref, labels, criterion, log
) -> Artifact:
    """Save to a temporary name, check in ONNX Runtime (CPU), then rename into place."""
    set_metadata(proto, meta)
    check_model(proto)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(proto, str(tmp))
        runner = OnnxRunner(tmp, providers=["CPUExecutionProvider"])
        chk = compare(ev.logits(runner.run), ref, labels, criterion)
        size = tmp.stat().st_size
        log(f"{fmt.name}: {path.name} {_human(size)}; {chk.line()}")
        if not chk.passed:
            raise ExportError(
                f"{fmt.name} export failed its check against PyTorch ({chk.criterion}); {path.name} was not written. {chk.line()}"
            )
        set_metadata(
            proto,
            {
                "test_oa": chk.oa,
                "agreement": chk.agreement,
                "max_abs_diff": chk.max_abs_diff,
                "check": chk.to_dict(),
            },
        )
        onnx.save(proto, str(tmp))
    return Artifact(fmt.name, "onnx", path, fmt.precision, path.stat().st_size, chk)


def _c_extra_paths(out: Path, stem: str, o: dict) -> list[Path]:
    """The files ``--runner`` and ``--c-target`` add beside ``<stem>.c``."""
    paths = [out / f"{stem}_runner.c"] if o["runner"] else []
    if o["c_target"]:
        t = o["c_target"]
        paths.append(out / f"{stem}-{t}.so")
        if o["runner"]:
            paths.append(out / f"{stem}_runner-{t}")
    return paths


def _write_checked_c(
    model, path: Path, fmt, meta: dict, ev: EvalSet, ref, labels, criterion, log, o: dict, bundle
) -> list[Artifact]:
    """Write the C source to a temporary name, compile and check it here (and on ``--c-target``),
    then rename it into place; then the runner and the target builds (:func:`_c_extras`)."""
    from blmkd.export.c_export import CRunner, c_source, run_on_target, seal_c_source, with_metadata

    source = c_source(model, int(meta["patch_size"]), meta)
    with atomic_path(path, suffix=".c") as tmp:
        tmp.write_text(seal_c_source(source))
        runner = CRunner(tmp)
        chk = compare(ev.logits(runner.run), ref, labels, criterion)
        log(
            f"{fmt.name}: {path.name} {_human(tmp.stat().st_size)} (compiled with {runner.compiler}, {runner.build}); {chk.line()}"
        )
        if not chk.passed:
            raise ExportError(
                f"{fmt.name} export failed its check against PyTorch ({chk.criterion}); {path.name} was not written. {chk.line()}"
            )
        result = {
            "test_oa": chk.oa,
            "agreement": chk.agreement,
            "max_abs_diff": chk.max_abs_diff,
            "check": chk.to_dict(),
        }
        if o["c_target"]:
            x = np.concatenate(list(ev.batches()))
            tr = run_on_target(tmp, o["c_target"], x)
            tchk = compare(tr.logits, ref, labels, criterion)
            log(f"{fmt.name}: built for {tr.target} ({shlex.join([tr.compiler, *tr.flags])}, {tr.build}), "
                f"run {'under ' + tr.runner if tr.runner != 'native' else 'here'}; {tchk.line()}")  # fmt: skip
            if not tchk.passed:
                raise ExportError(
                    f"{fmt.name} export built for {tr.target} failed its check against PyTorch ({tchk.criterion}); "
                    f"{path.name} was not written. {tchk.line()}"
                )
            result["targets"] = {tr.target: {"compiler": tr.compiler, "flags": tr.flags, "ran": tr.runner,
                                             "build": tr.build, "check": tchk.to_dict()}}  # fmt: skip
        final = with_metadata(source, {**meta, **result})
        tmp.write_text(seal_c_source(final))
    arts = [Artifact(fmt.name, "c", path, fmt.precision, path.stat().st_size, chk)]
    return arts + _c_extras(path, final, {**meta, **result}, o, runner, bundle, log)


def _c_extras(path: Path, source: str, meta: dict, o: dict, host, bundle, log) -> list[Artifact]:
    """``--runner``: ``<stem>_runner.c``, built here with ``cc -O3`` and checked: its map of the first
    scene lines (read as a BIL stream) equals :func:`predict_scene`'s with the host build ``host``.
    ``--c-target``: the shared library and the runner's static executable for the target."""
    from blmkd.export.c_export import build_for_target, runner_source

    stem, out = path.stem, path.parent
    arts: list[Artifact] = []
    if o["runner"]:
        rpath = out / f"{stem}_runner.c"
        with atomic_path(rpath, suffix=".c") as tmp:
            tmp.write_text(runner_source(source, meta))
            note = _check_runner(tmp, host, bundle)
            log(f"c: {rpath.name} {_human(tmp.stat().st_size)}; {note}")
        arts.append(Artifact("c", "runner", rpath, "fp32", rpath.stat().st_size, None, note))
    if o["c_target"]:
        t = o["c_target"]
        lib = build_for_target(path, t, out / f"{stem}-{t}.so")
        log(f"c: {lib.name} (shared library for {t})")
        arts.append(Artifact("c", "library", lib, "fp32", lib.stat().st_size, None, f"for {t}"))
        if o["runner"]:
            exe = build_for_target(out / f"{stem}_runner.c", t, out / f"{stem}_runner-{t}", runner=True)
            log(f"c: {exe.name} (static runner executable for {t})")
            arts.append(Artifact("c", "runner", exe, "fp32", exe.stat().st_size, None, f"static, for {t}"))
    return arts


def _check_runner(src: Path, host, bundle, lines: int = 24) -> str:
    """Build the runner at ``src`` with ``cc -O3`` and classify the first ``lines`` lines of the
    checkpoint's scene with it (a BIL float32 stream on stdin); its map must equal predict's."""
    import subprocess
    import tempfile

    from blmkd.bench.predict import SceneClassifier, predict_scene, to_class_ids
    from blmkd.export.c_export import c_compiler

    cube = np.asarray(bundle.scene.cube[: max(lines, host.patch)], dtype=np.float32)  # (h, W, bands)
    h, w, b = cube.shape
    clf = SceneClassifier.from_runner(host, "encode-c", threads=1)
    want = to_class_ids(predict_scene(clf, cube).pred, clf.class_ids)
    cc = c_compiler()[0]
    with tempfile.TemporaryDirectory(prefix="blmkd-runner-") as tmp:
        exe = Path(tmp) / "runner"
        res = subprocess.run(
            [*shlex.split(cc), "-O3", "-o", str(exe), str(src), "-lm"], capture_output=True, text=True
        )
        if res.returncode != 0:
            raise ExportError(
                f"--runner: {cc} -O3 failed on the runner: {res.stderr.strip().splitlines()[:1]}"
            )
        run = subprocess.run([str(exe), "--width", str(w), "--interleave", "bil", "--dtype", "float32", "-"],
                             input=np.ascontiguousarray(cube.transpose(0, 2, 1)).tobytes(), capture_output=True)  # fmt: skip
    if run.returncode != 0:
        raise ExportError(
            f"--runner: the runner failed on the scene: {run.stderr.decode(errors='replace').strip()}"
        )
    got = np.frombuffer(run.stdout, want.dtype)
    if got.size != want.size or not np.array_equal(got.reshape(want.shape), want):
        raise ExportError(
            "--runner: the runner's map of the first scene lines differs from blmkd predict's; the runner was not written"
        )
    return f"built with `{cc} -O3`; its map of {h}×{w} scene pixels equals predict's"


def _tensorrt(
    tgt: Target, stem, precisions, onnx_paths, meta, opts, ev, ref, labels, out: Path, log
) -> list[Artifact]:
    """The device script always; engines where TensorRT and a matching GPU are here."""
    o = opts["trt"]
    profile = tuple(o["batch_profile"] or tgt.batch_profile)
    workspace = int(o["workspace_mb"] or tgt.workspace_mb)
    sample_shape = (meta["bands"], meta["patch_size"], meta["patch_size"])
    # The device script writes a short JSON per engine; the runtime completes it from the source ONNX.
    engine_meta = {
        p: {
            "model": stem,
            "precision": p,
            "target": tgt.name,
            "onnx": onnx_source(stem, p),
            "source_sha256": meta["source_sha256"],
        }
        for p in precisions
    }
    header = f"From {meta['source_checkpoint']} (sha256 {meta['source_sha256'][:16]}…), {meta['model']}, blmkd {meta['blmkd_version']}."
    script = device_script(tgt, stem, precisions, INPUT_NAME, sample_shape, engine_meta,
                           batch_profile=profile, workspace_mb=workspace, header=header)  # fmt: skip
    spath = out / script_name(tgt)
    atomic_write_text(spath, script)
    os.chmod(spath, 0o755)
    log(
        f"trt: wrote {spath.name} (trtexec builds of {', '.join(precisions)} for {tgt.name}, then `blmkd bench`)"
    )
    arts = [
        Artifact("trt", "script", spath, None, spath.stat().st_size, note=f"device script for {tgt.name}")
    ]

    ok, reason = tensorrt_status()
    here = local_compute_capability()
    if ok and tgt.compute_capability not in (None, here):
        ok, reason = False, f"this GPU is SM {here}, {tgt.name} is SM {tgt.compute_capability}"
    if not ok:
        msg = f"TensorRT engine not built here ({reason}); build it on the {tgt.name} with {spath.name}"
        if o["build_engine"]:
            raise ExportError(msg)
        log(f"trt: {msg}")
        arts[0].note = f"engine to build on the {tgt.name}"
        return arts

    for p in precisions:
        epath = out / engine_name(stem, p)
        src = onnx_paths[_ENGINE_SOURCE[p]]
        log(f"trt: building {epath.name} from {src.name} ({reason})")
        info = build_engine(
            src,
            epath,
            p,
            input_name=INPUT_NAME,
            sample_shape=sample_shape,
            batch_profile=profile,
            workspace_mb=workspace,
        )
        fmt_opts = (
            opts[_PRECISION_FORMAT[p]]
            if _PRECISION_FORMAT[p] in opts
            else F.FORMATS[_PRECISION_FORMAT[p]].defaults
        )
        try:
            chk = compare(
                ev.logits(TensorRTRunner(epath).run),
                ref,
                labels,
                _criterion(fmt_opts, p, o["atol"]),
            )
        except Exception:
            epath.unlink(missing_ok=True)
            raise
        log(f"trt: {epath.name} {_human(epath.stat().st_size)}; {chk.line()}")
        if not chk.passed:
            epath.unlink(missing_ok=True)
            raise ExportError(
                f"TensorRT {p} engine failed its check against PyTorch ({chk.criterion}); engine removed"
            )
        atomic_write_json(
            epath.with_name(epath.name + ".json"),
            {**meta, **engine_meta[p], **info, "test_oa": chk.oa, "check": chk.to_dict()},
        )
        arts.append(Artifact("trt", "engine", epath, p, epath.stat().st_size, chk))
    return arts
