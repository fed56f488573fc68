"""C export of byte-latent Mamba students: one dependency-free C99 file, and its runner.

``blmkd export --c`` writes ``<model>.c``: a metadata comment (the same facts an ONNX export
carries), the model's sizes as macros, its weights as ``static const float`` arrays (the input
dequantization folded into the first layer) and the kernel of ``blm_student.c``. It is what a team
without ONNX Runtime on board compiles into its firmware, and on a CPU host it is the fastest way to
classify one patch: a single call with no graph executor, no per-node dispatch and no allocation.
Measured side by side on a 2-core AMD EPYC (2026-12-03, ``docs/results.md``): ``blm_t`` batch-1 p50
27–36 µs against ONNX Runtime's 62–120 µs, whose fixed per-node cost dominates a 1-MFLOP student;
whole-scene maps through ``blm_pixels``/``blm_tokens`` (``predict --mode encode-c``) 75–94 k px/s
on 2 threads against encode-ort's 44–48 k in the same run.

This module writes the source; :mod:`blmkd.inference.c_build` checks and compiles it and
:class:`blmkd.inference.c_runner.CRunner` runs it; :mod:`blmkd.export.cross_compile` builds it for
other CPUs.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blmkd.data.preprocess import Preprocessing
from blmkd.errors import ExportError, ModelError
from blmkd.export.checks import Artifact, EvalSet, compare, human_size
from blmkd.export.cross_compile import build_for_target, run_on_target
from blmkd.inference.c_build import META_RE, c_compiler, kernel_source, meta_comment, seal_c_source
from blmkd.inference.c_runner import CRunner
from blmkd.inference.classifier import SceneClassifier
from blmkd.inference.maps import to_class_ids
from blmkd.inference.scene import predict_scene
from blmkd.io import atomic_path
from blmkd.students.blm import BLMStudent
from blmkd.version import __version__

# ----------------------------------------------------------------------------------------------
# Writing the source


def _c_float(v: float) -> str:
    """A C float literal that reads back as the same float32 (9 significant digits)."""
    t = f"{v:.9g}"
    return t + ("f" if "e" in t or "." in t else ".0f")


def _array(name: str, a, ctype: str = "float") -> str:
    """``static const <ctype> name[d0][d1]... = {...};`` from an array (flat initializer list)."""
    a = np.asarray(a)
    dims = "".join(f"[{d}]" for d in a.shape)
    flat = a.reshape(-1)
    if ctype == "float":
        flat = flat.astype(np.float32)
        if not np.isfinite(flat).all():
            raise ExportError(f"C export: {name} has non-finite weights")
        items = [_c_float(float(v)) for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    lines = [", ".join(items[i : i + 8]) for i in range(0, len(items), 8)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}{dims} = {{\n    {body}\n}};\n"


def check_c_exportable(model) -> None:
    """Raise :class:`ModelError` unless ``model`` is a byte-latent Mamba student (what the kernel covers)."""
    if not isinstance(model, BLMStudent):
        raise ModelError(
            f"--c covers the byte-latent Mamba students; {type(model).__name__} is not one (export it to ONNX instead)"
        )


def c_source(model, patch: int, meta: dict[str, Any]) -> str:
    """The C file of a :class:`~blmkd.students.blm.BLMStudent` in eval mode for ``patch``×``patch`` windows.

    Raises:
        ModelError: the model is not a BLM student, or uses a feature the kernel does not have.
    """
    check_c_exportable(model)
    c = model.config
    if patch < 1:
        raise ModelError(f"C export: bad patch size {patch}")
    L = patch * patch
    blocks = list(model.layers)
    eps = {float(m.eps) for m in [model.norm_f, *(b.norm for b in blocks)]}
    if len(eps) != 1:
        raise ModelError(f"C export: the LayerNorms use different eps values {sorted(eps)}")
    f32 = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
    with torch.no_grad():
        w1, b1 = model.encoder._first(model.in_scale, model.in_offset)
        parts = [
            _array("blm_order", np.asarray(model.scan_order(patch)), "int"),
            _array("blm_enc1_w", f32(w1).reshape(-1)),
            _array("blm_enc1_b", f32(b1)),
            _array("blm_enc2_w", f32(model.encoder.conv2.weight).reshape(-1)),
            _array("blm_enc2_b", f32(model.encoder.conv2.bias)),
            _array("blm_ln_w", np.stack([f32(b.norm.weight) for b in blocks])),
            _array("blm_ln_b", np.stack([f32(b.norm.bias) for b in blocks])),
            _array("blm_in_w", np.stack([f32(b.in_proj.weight).reshape(-1) for b in blocks])),
            _array("blm_conv_w", np.stack([f32(b.conv1d.weight[:, 0]) for b in blocks])),
            _array("blm_conv_b", np.stack([f32(b.conv1d.bias) for b in blocks])),
            _array("blm_xproj_w", np.stack([f32(b.x_proj.weight).reshape(-1) for b in blocks])),
            _array("blm_dt_bias", np.stack([f32(b.dt_bias) for b in blocks])),
            _array("blm_A", np.stack([f32(-torch.exp(b.A_log)) for b in blocks])),
            _array("blm_Dskip", np.stack([f32(b.D) for b in blocks])),
            _array("blm_out_w", np.stack([f32(b.out_proj.weight).reshape(-1) for b in blocks])),
            _array("blm_normf_w", f32(model.norm_f.weight)),
            _array("blm_normf_b", f32(model.norm_f.bias)),
            _array("blm_head_w", f32(model.head.weight)),
            _array("blm_head_b", f32(model.head.bias)),
        ]
    b0 = blocks[0]
    macros = {
        "BLM_BANDS": c.bands,
        "BLM_P": patch,
        "BLM_L": L,
        "BLM_LP": -(-L // 16) * 16,
        "BLM_ENC": c.enc_hidden,
        "BLM_D": c.d_model,
        "BLM_DI": b0.d_inner,
        "BLM_STATE": b0.d_state,
        "BLM_HEADS": b0.n_heads,
        "BLM_HEADDIM": b0.headdim,
        "BLM_CONV": b0.d_conv,
        "BLM_LAYERS": len(blocks),
        "BLM_CLASSES": c.num_classes,
        "BLM_CENTER_MEAN": int(model.centre_weight > 0),
        "BLM_CENTER_W": _c_float(model.centre_weight),
        "BLM_CENTER": model._center_index(patch),
        "BLM_LN_EPS": _c_float(eps.pop()),
    }
    # No string from the checkpoint outside the escaped metadata JSON: the header is fixed text.
    head = (
        f"/* Byte-latent Mamba student exported by blmkd {__version__}: "
        f"{c.bands} bands, {patch}x{patch} byte patches -> {c.num_classes} logits.\n"
        " * Generated file: data only; the kernel and its notes follow the weights. */\n"
    )
    defines = "".join(f"#define {k} {v}\n" for k, v in macros.items())
    return "".join([head, meta_comment(meta), "\n", defines, "\n", *parts, "\n", kernel_source()])


def with_metadata(source: str, meta: dict[str, Any]) -> str:
    """``source`` with its metadata comment replaced by ``meta``."""
    return META_RE.sub(lambda _: meta_comment(meta).rstrip("\n"), source, count=1)


# ----------------------------------------------------------------------------------------------
# The on-board runner


def runner_template() -> str:
    """The push-broom runner every runner source ends with (``blm_runner.c`` of this blmkd)."""
    return resources.files("blmkd.export").joinpath("blm_runner.c").read_text()


def runner_source(c_text: str, meta: dict[str, Any]) -> str:
    """The standalone runner of a C export: its source ``c_text``, the fitted byte quantization and
    class ids from ``meta`` (the export's metadata), then :func:`runner_template`. One file, built with
    ``cc -O3 -o runner <file> -lm``.

    Raises:
        ExportError: the metadata has no preprocessing, or its band count differs from the model's.
    """
    if not meta.get("preprocessing"):
        raise ExportError(
            "--runner: the export's metadata has no preprocessing (the runner quantizes raw values)"
        )
    prep = Preprocessing.from_dict(meta["preprocessing"])
    if prep.bands != int(meta.get("bands", prep.bands)):
        raise ExportError(f"--runner: preprocessing has {prep.bands} bands, the model {meta.get('bands')}")
    ids = [int(c["id"]) for c in meta.get("classes") or []] or list(range(1, int(meta["num_classes"]) + 1))
    gain = (np.float32(255.0) / prep._range()).astype(np.float32)  # exactly Preprocessing.to_bytes's
    data = [
        "\n/* ---- the fitted byte quantization (Preprocessing.to_bytes) and the original class ids ---- */\n",
        _array("blm_q_lo", prep.lo),
        _array("blm_q_gain", gain),
        _array("blm_class_ids", np.asarray(ids), "int"),
        "\n",
    ]
    return "".join([c_text, *data, runner_template()])


# ----------------------------------------------------------------------------------------------
# Writing a checked C export (blmkd.export.exporter.export)


def c_extra_paths(out: Path, stem: str, o: dict) -> list[Path]:
    """The files ``--runner`` and ``--c-target`` add beside ``<stem>.c``."""
    paths = [out / f"{stem}_runner.c"] if o["runner"] else []
    if o["c_target"]:
        t = o["c_target"]
        paths.append(out / f"{stem}-{t}.so")
        if o["runner"]:
            paths.append(out / f"{stem}_runner-{t}")
    return paths


def write_checked_c(
    model, path: Path, fmt, meta: dict, ev: EvalSet, ref, labels, criterion, log, o: dict, bundle
) -> list[Artifact]:
    """Write the C source to a temporary name, compile and check it here (and on ``--c-target``),
    then rename it into place; then the runner and the target builds (:func:`_c_extras`)."""
    source = c_source(model, int(meta["patch_size"]), meta)
    with atomic_path(path, suffix=".c") as tmp:
        tmp.write_text(seal_c_source(source))
        runner = CRunner(tmp)
        chk = compare(ev.logits(runner.run), ref, labels, criterion)
        log(
            f"{fmt.name}: {path.name} {human_size(tmp.stat().st_size)} (compiled with {runner.compiler}, {runner.build}); {chk.line()}"
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
    stem, out = path.stem, path.parent
    arts: list[Artifact] = []
    if o["runner"]:
        rpath = out / f"{stem}_runner.c"
        with atomic_path(rpath, suffix=".c") as tmp:
            tmp.write_text(runner_source(source, meta))
            note = _check_runner(tmp, host, bundle)
            log(f"c: {rpath.name} {human_size(tmp.stat().st_size)}; {note}")
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
