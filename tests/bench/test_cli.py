"""`blmkd bench` and `blmkd predict` end to end on tiny checkpoints trained on real Indian Pines."""

from __future__ import annotations

import json
import platform

import numpy as np
import pytest
from typer.testing import CliRunner

from blmkd.bench.budgets import PROFILES
from blmkd.bench.machine import cpu_isa, cuda_status
from blmkd.cli import app, main
from blmkd.inference.c_build import c_compiler

runner = CliRunner(env={"COLUMNS": "220", "BLMKD_NO_PROGRESS": "1"})


@pytest.fixture(scope="module")
def bench_run(teacher_ckpt, student_ckpt, student_onnx, tmp_path_factory):
    """One `blmkd bench` with a report over teacher, student, its INT8 ONNX, a corrupt ONNX file and
    an engine this machine cannot run."""
    d = tmp_path_factory.mktemp("bench")
    bad = d / "corrupt.onnx"
    bad.write_bytes(b"not an onnx file")
    engine = d / "student.fp16.engine"
    engine.write_bytes(b"\0" * 16)
    models = [teacher_ckpt.path, student_ckpt.path, student_onnx["int8"], bad, engine]
    toml = d / "targets.toml"
    toml.write_text("[targets.drone]\nlatency_ms = 1000\nmin_throughput_px_s = 1\nmemory_mb = 100000\n")
    args = ["bench", *map(str, models), "--report", str(d / "report"), "--runs", "10", "--batch", "1,32",
            "--eval-size", "400", "--threads", "1", "--target", "cpu,drone", "--targets-file", str(toml)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output, d / "report", json.loads((d / "report" / "report.json").read_text())


def test_bench_rows_carry_measurements(bench_run):
    out, _, rep = bench_run
    rows = rep["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed", "skipped"]
    assert "not a readable ONNX model" in rows[3]["reason"]
    assert "TensorRT" in rows[4]["reason"]
    for r in rows[:3]:
        assert 0 <= r["oa"] <= 1 and r["test_pixels"] == 400
        lat = r["latency"]
        assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] and lat["runs"] >= 5
        assert [t["batch"] for t in r["throughput"]] == [1, 32] and r["best_px_s"] > 0
        assert (
            r["memory_mb"] is not None and r["size_mb"] > 0 and r["parameters"] > 0 and r["flops_per_px"] > 0
        )
        assert 0 < r["peak_fraction"] < 2 and r["map"]["pixels"] == 145 * 145
        assert r["power_w"] is None and "not found" in r["power_note"]
    teacher, student, int8 = rows[:3]
    assert (
        teacher["format"] == "PyTorch"
        and teacher["model"] == "ssa_mamba_test"
        and teacher["agreement"] == 1.0
    )
    assert student["map"]["mode"] == "encode-ort" and int8["map"]["mode"] == "patch"
    assert int8["format"] == "ONNX INT8" and int8["reference"] == student["name"]  # same source checkpoint
    assert 0 < int8["agreement"] <= 1 and int8["parameters"] == student["parameters"]
    assert rep["matmul_peak"]["gflops"] > 0 and rep["data"]["test_pixels"] > 8000
    assert "blm_test · ONNX INT8" in out and "❌ failed" in out and "➖ skipped" in out


def test_report_files_carry_the_numbers(bench_run):
    _, d, rep = bench_run
    for name in ("report.md", "report.html", "maps.png", "confusion.png", "pareto.png", "latency.png"):
        assert (d / name).stat().st_size > 1000, name
    md, page = (d / "report.md").read_text(), (d / "report.html").read_text()
    for r in rep["rows"][:3]:
        for text in (
            f"{100 * r['oa']:.2f}",
            f"{r['latency']['p50_ms']:.4f}",
            f"{r['best_px_s']:,.0f}",
            f"{r['memory_mb']:.1f}",
        ):
            assert text in md and text in page, text
    assert md.count("data:image") == 0 and page.count("data:image/png;base64,") == 4  # self-contained HTML
    assert "corrupt.onnx" in md and "❌ failed" in md
    assert rep["machine"]["cpu_isa"]["note"] in md  # which low-precision paths pay on this CPU
    verdicts = {(v["target"], v["artifact"]): v for v in rep["verdicts"]}
    assert len(verdicts) == 2 * 3
    drone = verdicts[("drone", rep["rows"][1]["name"])]  # generous budgets from the TOML file
    assert drone["verdict"] == "INCOMPLETE" and drone["checks"][-1]["passed"] is None  # power unmeasured
    # The built-in cpu budgets against the teacher row's own numbers: the verdict follows from them.
    teacher, budget = rep["rows"][0], PROFILES["cpu"]
    cpu = verdicts[("cpu", teacher["name"])]
    measured = [
        teacher["latency"]["p50_ms"],
        teacher["memory_mb"],
        max(teacher["best_px_s"], teacher["map"]["px_s"]),
    ]
    assert [c["quantity"] for c in cpu["checks"]] == ["latency", "memory", "throughput"]
    assert [c["measured"] for c in cpu["checks"]] == pytest.approx(measured)
    met = [
        measured[0] <= budget.latency_ms,
        measured[1] <= budget.memory_mb,
        measured[2] >= budget.min_throughput_px_s,
    ]
    assert [c["passed"] for c in cpu["checks"]] == met
    assert cpu["verdict"] == ("PASS" if all(met) else "FAIL") and "latency" in md and "drone" in md


@pytest.mark.skipif(cuda_status()[0], reason="a CUDA GPU is present")
def test_bench_on_cuda_skips_cleanly_here(student_ckpt, student_onnx):
    from blmkd.bench.runner import run_bench

    res = run_bench([student_ckpt.path, student_onnx["fp32"]], device="cuda", runs=5, log=lambda s: None)
    rows = res["rows"]
    assert len(rows) == 5 and all(r["status"] == "skipped" and r["reason"] for r in rows)
    assert {r["variant"] for r in rows} == {"", "fp16-autocast", "bf16-autocast", "CUDAExecutionProvider",
                                           "TensorrtExecutionProvider"}  # fmt: skip
    assert res["matmul_peak"]["gflops"] is None and res["verdicts"] == []
    assert json.loads(json.dumps(res)) == res  # what `blmkd demo` stores


def test_bench_cpu_bf16_row(student_ckpt):
    """`--bf16` adds a BF16-autocast row per checkpoint on CPU: run and compared with FP32 where the
    CPU has BF16 dot products, skipped with the reason elsewhere."""
    from blmkd.bench.jobs import cpu_bf16_status
    from blmkd.bench.runner import run_bench

    res = run_bench([student_ckpt.path], runs=5, batches=[1, 32], eval_size=300, threads=1, cpu_bf16=True,
                    log=lambda s: None)  # fmt: skip
    fp32, bf16 = res["rows"]
    assert (fp32["variant"], bf16["variant"]) == ("", "bf16-autocast")
    ok, why = cpu_bf16_status()
    if platform.machine() in ("x86_64", "AMD64"):  # PyTorch's detection agrees with the kernel's CPU flags
        assert ok == any(f in cpu_isa()["flags"] for f in ("avx512_bf16", "amx_bf16")), cpu_isa()["flags"]
    if not ok:
        assert bf16["status"] == "skipped" and bf16["reason"] == why
        return
    assert (
        bf16["status"] == "ok" and bf16["reference"] == fp32["name"] and bf16["precision"] == "bf16-autocast"
    )
    assert 0.9 <= bf16["agreement"] <= 1 and abs(bf16["oa"] - fp32["oa"]) < 0.05
    assert bf16["latency"]["p50_ms"] > 0


def test_predict_with_onnx_writes_maps(student_onnx, tmp_path):
    png, npy = tmp_path / "map.png", tmp_path / "map.npy"
    result = runner.invoke(app, ["predict", str(student_onnx["int8"]), "--scene", "indian_pines", "-o", str(png),
                                 "-o", str(npy), "--mask-unlabelled", "--threads", "1"])  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    ids = np.load(npy)
    from blmkd.data import load_scene

    sc = load_scene("indian_pines")
    assert ids.shape == (145, 145) and ((ids == 0) == (sc.labels < 0)).all()
    assert set(np.unique(ids[ids > 0])) <= set(sc.class_ids)
    summary = json.loads((tmp_path / "map.json").read_text())
    assert summary["mode"] == "patch" and summary["pixels"] == int((sc.labels >= 0).sum())
    lab = sc.labels >= 0  # the map's ids against the ground truth's, over every labelled pixel
    assert summary["oa_labelled"] == pytest.approx(
        float((ids[lab] == np.asarray(sc.class_ids)[sc.labels[lab]]).mean())
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "px/s" in result.output


def _error_line(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code != 0 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_errors_are_one_line(capsys, student_ckpt, tmp_path):
    assert "not found" in _error_line(capsys, ["bench", str(tmp_path / "missing.safetensors")])
    assert "not found" in _error_line(capsys, ["predict", str(tmp_path / "missing.onnx"), "--scene", "indian_pines",
                                               "-o", str(tmp_path / "m.png")])  # fmt: skip
    ck = str(student_ckpt.path)
    assert "unknown target" in _error_line(capsys, ["bench", ck, "--target", "toaster"])
    assert "--batch" in _error_line(capsys, ["bench", ck, "--batch", "1,x"])
    assert "must end in" in _error_line(
        capsys, ["predict", ck, "--scene", "indian_pines", "-o", str(tmp_path / "m.jpg")]
    )


def test_demo_runs_end_to_end_on_tiny_presets(tmp_path, capsys, monkeypatch):
    """`blmkd demo` chains the commands as Python calls: a change to one of them must not break it."""
    monkeypatch.setenv("BLMKD_NATIVE_DIR", str(tmp_path / "native"))  # the C export's library
    out = tmp_path / "demo"
    main(["demo", "--out", str(out), "--teacher-model", "ssa_mamba_test", "--teacher-epochs", "1",
          "--student", "blm_test", "--student-epochs", "1", "--no-progress"])  # fmt: skip
    res = json.loads((out / "demo.json").read_text())
    for role in ("teacher", "student"):  # the summary carries each run's recorded test metrics
        recorded = json.loads((out / role / "best.json").read_text())["metrics"]["test"]
        assert (res[role]["oa"], res[role]["kappa"]) == (recorded["oa"], recorded["kappa"])
    assert (out / "report" / "report.html").is_file() and (out / "export" / "blm_test.onnx").is_file()
    printed = capsys.readouterr().out.replace("\n", "")
    assert str(out / "report" / "report.html") in printed
    # The INT8 file is written, or the demo says why its check refused it (a one-epoch student).
    assert (out / "export" / "blm_test.int8.onnx").is_file() != ("INT8 export skipped" in printed)
    # The byte-input INT8 file is written, or the demo says why its check refused it.
    assert (out / "export" / "blm_test.int8b.onnx").is_file() != ("INT8 byte-input export skipped" in printed)
    if c_compiler()[0] is not None:  # the C export is benchmarked beside the ONNX files
        assert (out / "export" / "blm_test.c").is_file()
        c_row = next(r for r in res["bench"]["rows"] if r.get("format") == "C FP32")
        assert c_row["status"] == "ok" and c_row["agreement"] == 1.0
    else:
        assert "C export skipped: no C compiler" in printed
    # The RBF SVM baseline on the same split, benchmarked beside the student, with the report's plain verdict.
    assert 0 <= res["baseline"]["oa"] <= 1 and (out / "baseline" / "svm" / "svm.onnx").is_file()
    svm_row = next(r for r in res["bench"]["rows"] if r.get("family") == "baseline")
    assert svm_row["status"] == "ok" and svm_row["oa"] == pytest.approx(res["baseline"]["oa"], abs=0.001)
    assert res["bench"]["baselines"][0].startswith("Baseline svm · ONNX FP32")
    assert "Classical baselines" in (out / "report" / "report.md").read_text()
    kd = json.loads((out / "student" / "best.json").read_text())["kd"]
    assert (kd["temperature"], kd["lambda_max"], kd["unlabelled"]) == (2.0, 0.5, 20000)  # the measured recipe
    assert json.loads((out / "student" / "best.json").read_text())["training"]["class_balance"] == 0.9
