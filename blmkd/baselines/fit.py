"""Fitting the baselines on a deep run's split: features, scikit-learn models, checked ONNX artifacts.

scikit-learn is imported where a model is fitted.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from blmkd.baselines.onnx_graph import check_line, check_onnx, to_onnx
from blmkd.bundle import Bundle
from blmkd.checkpoint import versions
from blmkd.errors import BlmkdError
from blmkd.inference.onnx_meta import set_metadata
from blmkd.io import atomic_path, atomic_write_json
from blmkd.metrics import classification_report
from blmkd.version import __version__

FORMAT = "blmkd-baseline/1"
MODELS = ("svm", "rf", "knn")
#: C and γ·features tried by the SVM's cross-validation (γ = 1/features is scikit-learn's "scale"
#: for standardized features).
SVM_GRID = {"C": (1.0, 10.0, 100.0, 1000.0, 10000.0), "gamma_x_features": (0.01, 0.1, 1.0, 10.0)}
KNN_GRID = (1, 3, 5, 7, 9, 15)
_BATCH = 2048  # windows per feature batch


@dataclass
class BaselineConfig:
    """What to train (the options of `blmkd baseline`)."""

    models: tuple[str, ...] = MODELS  # any of svm, rf, knn
    window: int = 1  # W: mean the spectra over W × W pixels (odd, ≤ the split's patch size); 1 = own spectrum
    trees: int = 200  # random forest size
    cv_folds: int = 3  # folds of the SVM / k-NN grid search on the training pixels
    seed: int = 0  # cross-validation folds and forest
    jobs: int = 1  # scikit-learn workers of the grid search and the forest

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, patch: int) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise BlmkdError(
                f"baseline models must be among {', '.join(MODELS)}, got {', '.join(self.models) or 'none'}"
            )
        if self.window < 1 or self.window % 2 == 0 or self.window > patch:
            raise BlmkdError(
                f"--window must be odd, between 1 and the split's patch size {patch}, got {self.window}"
            )
        if self.trees < 1:
            raise BlmkdError(f"--trees must be at least 1, got {self.trees}")
        if self.cv_folds < 2:
            raise BlmkdError(f"--cv-folds must be at least 2, got {self.cv_folds}")


@dataclass
class BaselineResult:
    """One trained baseline: where it was written and how it did."""

    name: str  # svm | rf | knn
    dir: Path
    onnx: Path | None  # None: the graph failed its check against scikit-learn and was not written
    test: dict  # OA/AA/κ report (as a deep run's metrics.test)
    val_oa: float | None  # on the split's validation pixels (None: the split has none)
    params: dict  # the chosen hyperparameters
    cv_oa: float | None  # mean cross-validated OA of the chosen hyperparameters
    fit_s: float  # grid search and final fit
    check: dict = field(default_factory=dict)  # ONNX vs scikit-learn

    def summary(self) -> dict:
        return {"model": self.name, "dir": str(self.dir), "onnx": str(self.onnx) if self.onnx else None, "test": self.test, "val_oa": self.val_oa,
                "params": self.params, "cv_oa": self.cv_oa, "fit_s": self.fit_s}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Features


def window_features(windows: np.ndarray, window: int) -> np.ndarray:
    """(N, B) features of (N, B, P, P) windows: the centre spectrum, or its W × W mean.

    The ONNX graph computes the same (:func:`blmkd.baselines.onnx_graph.to_onnx`); this is its reference.
    """
    p = windows.shape[-1]
    c, r = p // 2, window // 2
    return (
        windows[:, :, c - r : c + r + 1, c - r : c + r + 1]
        .mean(axis=(2, 3), dtype=np.float64)
        .astype(np.float32)
    )


def pixel_features(bundle: Bundle, which: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, B) and labels (N,) of the ``which`` pixels, from the teacher's standardized windows."""
    rows, cols, y = bundle.coords(which)
    ext = bundle.extractor("float")
    feats = [window_features(ext.gather(rows[i : i + _BATCH], cols[i : i + _BATCH]).numpy(), window)
             for i in range(0, len(rows), _BATCH)]  # fmt: skip
    x = np.concatenate(feats) if feats else np.zeros((0, bundle.scene.bands), np.float32)
    return x, y


# ----------------------------------------------------------------------------------------------
# Models


def _estimator(name: str, cfg: BaselineConfig, n_features: int, y: np.ndarray):
    """The scikit-learn pipeline of ``name`` (a grid search where it has one)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    counts = np.bincount(y)
    if counts.max(initial=0) < cfg.cv_folds:
        raise BlmkdError(
            f"every class has fewer than {cfg.cv_folds} training pixels: too few for {cfg.cv_folds}-fold cross-validation"
        )
    # Classes with fewer training pixels than folds miss from some folds (scikit-learn warns); the
    # split gave them that few, the baseline takes what the deep models had.
    cv = StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed)
    if name == "rf":
        # No scaler: trees do not care about scale, and without one the ONNX graph feeds the forest the
        # very float32 features scikit-learn does.
        return Pipeline([("clf", RandomForestClassifier(cfg.trees, random_state=cfg.seed, n_jobs=cfg.jobs))])
    if name == "svm":
        # break_ties: predict is the argmax of the one-vs-rest decision values, the scores the ONNX
        # graph returns, so the two agree on every pixel.
        pipe = Pipeline([("scale", StandardScaler()), ("clf", SVC(kernel="rbf", break_ties=True))])
        grid = {
            "clf__C": list(SVM_GRID["C"]),
            "clf__gamma": [g / n_features for g in SVM_GRID["gamma_x_features"]],
        }
    else:
        pipe = Pipeline([("scale", StandardScaler()), ("clf", KNeighborsClassifier())])
        grid = {"clf__n_neighbors": [k for k in KNN_GRID if k <= len(y) - len(y) // cfg.cv_folds - 1] or [1]}
    return GridSearchCV(pipe, grid, cv=cv, n_jobs=cfg.jobs, error_score="raise")


def _scores(model, x: np.ndarray) -> np.ndarray:
    """(N, k) scores whose argmax is scikit-learn's prediction (columns: ``classes_``)."""
    clf = model.steps[-1][1]
    return model.decision_function(x) if type(clf).__name__ == "SVC" else model.predict_proba(x)


def _size_facts(name: str, model, n_features: int) -> dict:
    """Stored parameters and matmul FLOPs per pixel (kernel / distance evaluations; none for trees)."""
    clf = model.steps[-1][1]
    if name == "svm":
        n_sv = int(clf.support_vectors_.shape[0])
        params = n_sv * n_features + int(clf.dual_coef_.size) + int(clf.intercept_.size) + 2 * n_features
        return {"parameters": params, "flops_per_px": 2 * n_sv * n_features, "support_vectors": n_sv}
    if name == "knn":
        n = int(clf.n_samples_fit_)
        return {"parameters": n * n_features + 2 * n_features, "flops_per_px": 2 * n * n_features}
    nodes = int(sum(t.tree_.node_count for t in clf.estimators_))
    return {"parameters": nodes, "flops_per_px": None, "tree_nodes": nodes}


def _export_meta(
    bundle: Bundle, name: str, cfg: BaselineConfig, params: dict, size: dict, test_oa: float
) -> dict:
    sc = bundle.scene
    return {
        "format": "blmkd-export/1", "model": name, "family": "baseline", "input_kind": "float", "precision": "fp32",
        "bands": sc.bands, "num_classes": sc.num_classes, "patch_size": bundle.patch_size,
        "classes": [{"index": i, "id": int(c), "name": str(n)} for i, (c, n) in enumerate(zip(sc.class_ids, sc.class_names))],
        "dataset": str(bundle.options.dataset), "preprocessing": bundle.prep.to_dict(),
        "split": {k: v for k, v in bundle.split.spec.items() if k != "counts"},
        "checkpoint_test_oa": test_oa, "baseline": {"window": cfg.window, "params": params},
        "parameters": size["parameters"], "flops_per_px": size["flops_per_px"], "blmkd_version": __version__,
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Training


def train_baselines(bundle: Bundle, cfg: BaselineConfig, out_dir: str | Path, *, seed_dir: str | None = None,
                    meta_extra: dict | None = None, log=print) -> list[BaselineResult]:  # fmt: skip
    """Train every ``cfg.models`` baseline on ``bundle``'s training pixels, test it, write OUT/<name>/
    (OUT/<name>/<seed_dir>/ where given: one run per seed under each model, as `--seeds` lays out).

    Each OUT/<name>/ gets ``<name>.onnx`` (checked against scikit-learn on the test pixels before it
    is written; a graph that fails the check is not written, its run keeps the scikit-learn metrics
    with ``artifact: null`` and the failed check, and the other models go on) and ``best.json``: model, data, split, preprocessing and metrics as a deep run
    records them (``metrics.test``: OA/AA/κ, per class and the confusion matrix).
    """
    from sklearn.exceptions import ConvergenceWarning

    cfg.validate(bundle.patch_size)
    out = Path(out_dir)
    sc = bundle.scene
    x_tr, y_tr = pixel_features(bundle, "train", cfg.window)
    if len(y_tr) < 2 or len(np.unique(y_tr)) < 2:
        raise BlmkdError("a baseline needs training pixels of at least two classes")
    x_val, y_val = pixel_features(bundle, "val", cfg.window)
    x_te, y_te = pixel_features(bundle, "test", cfg.window)
    if len(y_te) == 0:
        raise BlmkdError("the split has no test pixels")
    rows, cols, _ = bundle.coords("test")
    ext = bundle.extractor("float")

    def test_windows():
        for i in range(0, len(rows), _BATCH):
            yield ext.gather(rows[i : i + _BATCH], cols[i : i + _BATCH]).numpy()

    results = []
    for name in cfg.models:
        t0 = time.perf_counter()
        est = _estimator(name, cfg, x_tr.shape[1], y_tr)
        with warnings.catch_warnings():
            # Tiny classes (fewer pixels than folds) are legal splits; scikit-learn's warning is noise here.
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(x_tr, y_tr)
        fit_s = time.perf_counter() - t0
        model = getattr(est, "best_estimator_", est)
        params = {k.removeprefix("clf__"): v for k, v in getattr(est, "best_params_", {}).items()}
        if name == "rf":
            params = {"trees": cfg.trees}
        cv_oa = float(est.best_score_) if hasattr(est, "best_score_") else None
        classes = model.classes_.astype(np.int64)
        ref = _scores(model, x_te)
        if ref.ndim == 1:  # two classes: one decision value, positive for classes[1]
            ref = np.stack([-ref, ref], axis=1)
        pred = classes[ref.argmax(1)]
        # The reference scores in the K columns the ONNX graph returns.
        full = np.full((len(ref), sc.num_classes), -1e9, np.float64)
        full[:, classes] = ref
        test = classification_report(y_te, pred, sc.num_classes).to_dict(sc.class_ids, sc.class_names)
        val_oa = float((model.predict(x_val) == y_val).mean()) if len(y_val) else None
        size = _size_facts(name, model, x_tr.shape[1])
        m = to_onnx(name, model, x_tr.shape[1], bundle.patch_size, cfg.window, classes, sc.num_classes)
        chk = check_onnx(m, full, test_windows, y_te, name, strict=False)
        set_metadata(m, _export_meta(bundle, name, cfg, params, size, test["oa"]))
        run = out / name / seed_dir if seed_dir else out / name
        onnx_path = run / f"{name}.onnx"
        if chk.passed:
            with atomic_path(onnx_path, suffix=".onnx") as tmp:
                tmp.write_bytes(m.SerializeToString())
        else:  # the scikit-learn result stands; only the artifact that would misreport it is withheld
            onnx_path.unlink(missing_ok=True)  # never leave an earlier run's graph beside this run's facts
            onnx_path = None
            log(f"warning: {name}: its ONNX graph disagrees with scikit-learn ({check_line(chk)}); "
                "no ONNX file written, the scikit-learn metrics are kept")  # fmt: skip
        doc = _run_doc(
            bundle, name, cfg, params, size, test, val_oa, cv_oa, fit_s, chk, onnx_path, meta_extra
        )
        atomic_write_json(run / "best.json", doc)
        res = BaselineResult(name, run, onnx_path, test, val_oa, params, cv_oa, fit_s, chk.to_dict())
        log(f"{name}: test OA {100 * test['oa']:.2f}%  AA {100 * test['aa']:.2f}%  κ {100 * test['kappa']:.2f}  "
            f"({_params_text(params)}; fit {fit_s:.1f} s); ONNX check: {check_line(chk)}")  # fmt: skip
        results.append(res)
    return results


def _params_text(params: dict) -> str:
    return (
        ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items())
        or "defaults"
    )


def _run_doc(bundle, name, cfg, params, size, test, val_oa, cv_oa, fit_s, chk, onnx_path, meta_extra) -> dict:
    """The run's ``best.json``: the facts a deep run's checkpoint JSON carries, for `compare` and people."""
    import sklearn

    return {
        "format": FORMAT,
        **bundle.meta(),
        **(meta_extra or {}),
        "model": {"name": name, "family": "baseline", "config": {"window": cfg.window, **params},
                  "input_kind": "float", "parameters": size["parameters"]},
        "baseline": {**cfg.to_dict(), "models": list(cfg.models), "features": "spectrum" if cfg.window == 1 else
                     f"{cfg.window}x{cfg.window} mean spectrum", "size": size},
        "metrics": {"test": test, "val_oa": val_oa, "cv_oa": cv_oa, "fit_s": fit_s,
                    "selection": {"reason": f"{cfg.cv_folds}-fold CV OA {cv_oa:.4f} on the training pixels"
                                  if cv_oa is not None else "fixed settings"}},
        "artifact": onnx_path.name if onnx_path else None,
        "check": chk.to_dict(),
        "versions": {**versions(), "scikit-learn": sklearn.__version__},
    }  # fmt: skip


def best_baseline(results: list[BaselineResult]) -> BaselineResult:
    """The baseline a user would pick without looking at the test set: the highest validation OA
    (ties: the higher cross-validated OA)."""

    def key(r):
        return (r.val_oa if r.val_oa is not None else -1.0, r.cv_oa if r.cv_oa is not None else -1.0)

    return max(results, key=key)
