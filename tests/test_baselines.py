"""Classical baselines: trained on a deep run's split, exported to ONNX without pickle, checked against
scikit-learn, paired by `compare` and timed by `bench` beside the deep models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from blmkd.baselines import BaselineConfig, best_baseline, to_onnx, train_baselines, window_features
from blmkd.bench.report import baseline_lines
from blmkd.cli import main
from blmkd.inference.onnx_runner import OnnxRunner, ort_session


@pytest.fixture(scope="module")
def deep_run(ip_crop_path, tmp_path_factory):
    """A real deep run: the tiny teacher, one epoch on the Indian Pines crop."""
    out = tmp_path_factory.mktemp("deep") / "teacher"
    main(["train-teacher", "--model", "ssa_mamba_test", "--dataset", str(ip_crop_path), "--epochs", "1", "--batch", "128",
          "--out", str(out), "--no-progress"])  # fmt: skip
    return out


@pytest.fixture(scope="module")
def trained(deep_run, tmp_path_factory):
    from blmkd.bundle import bundle_from_checkpoint
    from blmkd.checkpoint import load_checkpoint

    bundle = bundle_from_checkpoint(load_checkpoint(deep_run))
    out = tmp_path_factory.mktemp("baselines")
    res = train_baselines(bundle, BaselineConfig(window=3, trees=30), out, log=lambda s: None)
    return bundle, out, res


def test_window_features_are_the_centre_or_its_mean():
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(window_features(x, 1), x[:, :, 2, 2])
    np.testing.assert_allclose(window_features(x, 3), x[:, :, 1:4, 1:4].mean(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_allclose(window_features(x, 5), x.mean(axis=(2, 3)), rtol=1e-6)


def test_every_baseline_writes_a_checked_onnx_file_and_json_only(trained):
    bundle, out, res = trained
    assert [r.name for r in res] == ["svm", "rf", "knn"]
    rows, cols, y = bundle.coords("test")
    windows = bundle.extractor("float").gather(rows, cols).numpy()
    for r in res:
        files = sorted(p.name for p in r.dir.iterdir())
        assert files == sorted([f"{r.name}.onnx", "best.json"])  # nothing pickled
        doc = json.loads((r.dir / "best.json").read_text())
        assert doc["model"]["name"] == r.name and doc["model"]["family"] == "baseline"
        assert doc["split"]["digest"] == bundle.split.spec["digest"]
        assert doc["metrics"]["test"]["oa"] == r.test["oa"] and len(doc["metrics"]["test"]["per_class"]) == 10
        assert doc["check"]["passed"] and doc["check"]["agreement"] >= 0.995
        # The ONNX file in ONNX Runtime, on the deep model's own windows, gives the recorded accuracy.
        runner = OnnxRunner(r.onnx, threads=1)
        assert (
            runner.meta["family"] == "baseline"
            and runner.meta["patch_size"] == 7
            and runner.input_kind == "float"
        )
        assert runner.meta["split"]["digest"] == bundle.split.spec["digest"]
        pred = runner.run(windows).argmax(1)
        assert abs(float((pred == y).mean()) - r.test["oa"]) <= 0.001
    assert res[0].params.keys() == {"C", "gamma"} and res[0].cv_oa is not None
    assert res[2].params.keys() == {"n_neighbors"}
    assert best_baseline(res).val_oa == max(r.val_oa for r in res)


def test_a_graph_that_fails_its_check_is_withheld_and_the_other_models_go_on(trained, monkeypatch, tmp_path):
    """A real ONNX graph with its classes reversed disagrees with scikit-learn: no file, metrics kept."""
    import blmkd.baselines.fit as fit

    bundle = trained[0]
    real = fit.to_onnx

    def reversed_classes(name, model, *args):
        m = real(name, model, *args)
        if name == "knn":  # reverse the class order of the graph's output: its argmax is wrong
            k = bundle.scene.num_classes
            perm = numpy_helper.from_array(np.arange(k)[::-1].astype(np.int64), "blmkd_reverse")
            m.graph.initializer.append(perm)
            old = m.graph.output[0].name
            for node in m.graph.node:
                node.output[:] = [o if o != old else "blmkd_unreversed" for o in node.output]
            m.graph.node.append(
                helper.make_node("Gather", ["blmkd_unreversed", "blmkd_reverse"], [old], axis=1)
            )
            onnx.checker.check_model(m)
        return m

    monkeypatch.setattr(fit, "to_onnx", reversed_classes)
    lines = []
    res = train_baselines(
        bundle, BaselineConfig(models=("knn", "rf"), window=3, trees=10), tmp_path, log=lines.append
    )
    knn, rf = res
    assert knn.onnx is None and not (tmp_path / "knn" / "knn.onnx").exists()
    doc = json.loads((tmp_path / "knn" / "best.json").read_text())
    assert doc["artifact"] is None and doc["check"]["passed"] is False
    assert doc["metrics"]["test"]["oa"] == knn.test["oa"] > 0.3  # scikit-learn's own result stands
    assert any(line.startswith("warning: knn: its ONNX graph disagrees") for line in lines)
    assert rf.onnx is not None and rf.onnx.exists() and rf.check["passed"]  # the next model went on


def test_matmul_graphs_match_skl2onnx_and_scikit_learn():
    """The SVM and k-NN graphs written here against skl2onnx's own graphs and scikit-learn."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rng = np.random.default_rng(1)
    x = rng.standard_normal((240, 6, 3, 3)).astype(np.float32)
    y = rng.integers(0, 4, 240)
    x[np.arange(240), y] += 1.0
    feats = window_features(x, 1)
    for name, clf in (("svm", SVC(C=10, gamma=0.2, break_ties=True)), ("knn", KNeighborsClassifier(5))):
        model = Pipeline([("scale", StandardScaler()), ("clf", clf)]).fit(feats, y)
        ours = ort_session(to_onnx(name, model, 6, 3, 1, np.arange(4), 4).SerializeToString()).run(
            None, {"input": x}
        )[0]
        ref = ort_session(
            to_onnx(name, model, 6, 3, 1, np.arange(4), 4, converter="skl2onnx").SerializeToString()
        )
        theirs = ref.run(["logits"], {"input": x})[0]
        want = model.decision_function(feats) if name == "svm" else model.predict_proba(feats)
        np.testing.assert_allclose(ours, want, atol=1e-4)
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
        assert (ours.argmax(1) == model.predict(feats)).all()


def test_classes_without_training_pixels_are_never_chosen():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    rng = np.random.default_rng(2)
    x = rng.standard_normal((90, 4, 1, 1)).astype(np.float32)
    y = np.repeat([0, 2, 3], 30)  # class 1 of 4 has no training pixel
    x[np.arange(90), y] += 2.0
    model = Pipeline([("clf", RandomForestClassifier(10, random_state=0))]).fit(window_features(x, 1), y)
    out = ort_session(to_onnx("rf", model, 4, 1, 1, model.classes_, 4).SerializeToString()).run(
        None, {"input": x}
    )[0]
    assert out.shape == (90, 4) and (out[:, 1] < -1e8).all()
    np.testing.assert_array_equal(out.argmax(1), model.predict(window_features(x, 1)))


def test_cli_baseline_from_run_pairs_with_compare(deep_run, tmp_path, capsys):
    out = tmp_path / "bl"
    main(["baseline", "--from-run", str(deep_run), "-m", "knn", "--out", str(out)])
    doc = json.loads((out / "knn" / "best.json").read_text())
    deep = json.loads((deep_run / "best.json").read_text())
    assert doc["split"]["digest"] == deep["split"]["digest"] and doc["from_run"].endswith("best.safetensors")
    assert doc["preprocessing"] == deep["preprocessing"]  # the deep run's, not refitted
    capsys.readouterr()
    main(["compare", str(deep_run), str(out / "knn"), "--json", str(tmp_path / "cmp.json")])
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert len(cmp["pairs"]) == 1 and cmp["pairs"][0]["oa_b"] == doc["metrics"]["test"]["oa"]
    assert "verdict" in capsys.readouterr().out


def test_cli_baseline_errors_are_one_line(deep_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["baseline", "--from-run", str(deep_run), "--window", "4", "--out", str(tmp_path)])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --window must be odd")


def test_bench_times_a_baseline_beside_the_deep_model(deep_run, trained):
    from blmkd.bench.runner import run_bench

    _, _, res = trained
    svm = res[0]
    out = run_bench(
        [deep_run / "best.safetensors", svm.onnx], runs=5, batches=[1, 64], threads=1, log=lambda s: None
    )
    deep_row, svm_row = out["rows"]
    assert svm_row["status"] == "ok", svm_row.get("reason")
    assert svm_row["family"] == "baseline" and svm_row["model"] == "svm"
    assert svm_row["oa"] == pytest.approx(svm.test["oa"], abs=0.001)
    assert (
        svm_row["parameters"] > 0
        and svm_row["flops_per_px"] > 0
        and svm_row["stats_from"] == "artifact metadata"
    )
    assert not svm_row.get("other_split")  # the same split as the deep run
    assert len(out["baselines"]) == 1 and out["baselines"][0].startswith("Baseline svm · ONNX FP32 (OA ")


def test_baseline_lines_say_plainly_when_a_baseline_is_as_accurate_and_cheaper():
    def row(name, family, oa, px_s):
        return {"status": "ok", "name": name, "family": family, "oa": oa, "best_px_s": px_s}

    student = row("blm_t · ONNX INT8", "student", 0.900, 100_000)
    teacher = row("ssa_mamba_t · PyTorch", "teacher", 0.930, 10_000)
    close = row("svm · ONNX FP32", "baseline", 0.896, 200_000)  # 0.4 pp below the student, 2× its px/s
    lines = baseline_lines([teacher, student, close])
    assert lines == ["Baseline svm · ONNX FP32 (OA 89.60%, 5.00 µs/px) is as accurate (within 0.5 pp OA, or better) and "
                     "cheaper per pixel than: blm_t · ONNX INT8 (OA 90.00%, 10.00 µs/px)."]  # fmt: skip
    far = row("knn · ONNX FP32", "baseline", 0.85, 200_000)
    (line,) = baseline_lines([teacher, student, far])
    assert (
        "is not both as accurate and cheaper" in line
        and "8.00 pp below" in line
        and "cheaper per pixel than 2 of the 2" in line
    )
    slow = row("rf · ONNX FP32", "baseline", 0.91, 50_000)  # as accurate as the student but slower
    (line,) = baseline_lines([student, slow])
    assert "not cheaper per pixel than any" in line


def test_cli_baseline_from_a_seeds_folder_runs_one_per_seed(ip_crop_path, tmp_path, capsys):
    deep = tmp_path / "teachers"
    main(["train-teacher", "--model", "ssa_mamba_test", "--dataset", str(ip_crop_path), "--seeds", "0,1", "--epochs", "1",
          "--batch", "256", "--out", str(deep), "--no-progress"])  # fmt: skip
    out = tmp_path / "bl"
    main(["baseline", "--from-run", str(deep), "-m", "knn", "--out", str(out)])
    for s in (0, 1):
        doc = json.loads((out / "knn" / f"seed_{s}" / "best.json").read_text())
        assert (
            doc["split"]["digest"]
            == json.loads((deep / f"seed_{s}" / "best.json").read_text())["split"]["digest"]
        )
    summ = json.loads((out / "knn" / "summary.json").read_text())
    assert [r["seed"] for r in summ["runs"]] == [0, 1] and len(summ["oa"]["values"]) == 2
    main(["compare", str(deep), str(out / "knn"), "--json", str(tmp_path / "cmp.json")])
    assert [p["seed"] for p in json.loads((tmp_path / "cmp.json").read_text())["pairs"]] == [0, 1]
    with pytest.raises(SystemExit):
        main(["baseline", "--from-run", str(deep), "--seeds", "7", "--out", str(out)])
    assert "no run under" in capsys.readouterr().err
