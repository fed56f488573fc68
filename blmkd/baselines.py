"""Classical per-pixel baselines beside the deep models: RBF SVM, random forest, k-NN (scikit-learn).

Every deep result should be read next to what a 20-line classifier does on the same pixels. A
baseline here is trained on exactly the split and preprocessing of a deep run (rebuilt from its
checkpoint, or from the same split options), on the training pixels alone:

* features: each pixel's standardized spectrum (the deep run's preprocessing), or with
  ``window = W > 1`` its mean over the W × W window around it (a cheap spatial context), then a
  ``StandardScaler`` fitted on the training pixels;
* ``svm``: RBF SVM, C and γ chosen by stratified 3-fold cross-validation on the training pixels
  over :data:`SVM_GRID` (γ in units of 1/features, so the grid suits any band count);
* ``rf``: a random forest of ``trees`` trees (√features per split);
* ``knn``: k nearest neighbours, k chosen by the same cross-validation over :data:`KNN_GRID`.

The artifact is an ONNX file (skl2onnx) plus JSON, nothing pickled. The ONNX graph takes the same
``(N, bands, P, P)`` standardized windows as a teacher, crops or means the centre in the graph,
and returns ``(N, K)`` scores (the SVM's one-vs-rest decision values, the forest's and k-NN's class
probabilities) whose argmax is the class, so ``blmkd bench`` and ``blmkd predict`` run it like
any other artifact. It is checked against scikit-learn on the test pixels before it is written,
like every export. The run directory holds ``best.json`` with the same fields as a deep run's
(model, data, split with its digest, preprocessing, test metrics), so ``blmkd compare`` pairs it
with deep runs on the same split.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from blmkd.bundle import Bundle
from blmkd.errors import BlmkdError, ExportError
from blmkd.export.checks import compare
from blmkd.inference.onnx_meta import set_metadata
from blmkd.inference.onnx_runner import ort_session
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
    onnx: Path
    test: dict  # OA/AA/κ report (as a deep run's metrics.test)
    val_oa: float | None  # on the split's validation pixels (None: the split has none)
    params: dict  # the chosen hyperparameters
    cv_oa: float | None  # mean cross-validated OA of the chosen hyperparameters
    fit_s: float  # grid search and final fit
    check: dict = field(default_factory=dict)  # ONNX vs scikit-learn

    def summary(self) -> dict:
        return {"model": self.name, "dir": str(self.dir), "onnx": str(self.onnx), "test": self.test, "val_oa": self.val_oa,
                "params": self.params, "cv_oa": self.cv_oa, "fit_s": self.fit_s}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Features


def window_features(windows: np.ndarray, window: int) -> np.ndarray:
    """(N, B) features of (N, B, P, P) windows: the centre spectrum, or its W × W mean.

    The ONNX graph computes the same (:func:`_front_nodes`); this is its reference.
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


# ----------------------------------------------------------------------------------------------
# ONNX


def _front_nodes(bands: int, patch: int, window: int, out: str):
    """Nodes that turn the ``input`` windows (N, B, P, P) into the (N, B) features ``out``."""
    from onnx import helper, numpy_helper

    c, r = patch // 2, window // 2
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("win_starts", [c - r, c - r]), ("win_ends", [c + r + 1, c + r + 1]), ("win_axes", [2, 3]))]  # fmt: skip
    nodes = [helper.make_node("Slice", ["input", "win_starts", "win_ends", "win_axes"], ["win_centre"]),
             helper.make_node("ReduceMean", ["win_centre"], [out], axes=[2, 3], keepdims=0)]  # fmt: skip
    return nodes, inits


def _scaler(model) -> tuple[np.ndarray, np.ndarray]:
    """``x·a + c`` of the pipeline's StandardScaler, (d,) each."""
    sc = model.named_steps["scale"]
    a = (1.0 / sc.scale_).astype(np.float32)
    return a, (-sc.mean_ / sc.scale_).astype(np.float32)


def _sq_dists(model, refs: np.ndarray):
    """Nodes: scaled ``features`` (N, d) → squared distances ``d2`` (N, n) to the rows of ``refs`` (n, d),
    as ``|x|² − 2·x·rᵀ + |r|²`` (one MatMul)."""
    from onnx import helper, numpy_helper

    a, c = _scaler(model)
    refs = refs.astype(np.float32)
    inits = [numpy_helper.from_array(a[None], "scale_a"), numpy_helper.from_array(c[None], "scale_c"),
             numpy_helper.from_array(np.ascontiguousarray(refs.T), "refs_t"),
             numpy_helper.from_array((refs.astype(np.float64) ** 2).sum(1)[None].astype(np.float32), "refs_sq"),
             numpy_helper.from_array(np.array(-2.0, np.float32), "minus_two")]  # fmt: skip
    nodes = [
        helper.make_node("Mul", ["features", "scale_a"], ["xs_a"]),
        helper.make_node("Add", ["xs_a", "scale_c"], ["xs"]),  # (N, d) standardized
        helper.make_node("ReduceSumSquare", ["xs"], ["xx"], axes=[1], keepdims=1),  # (N, 1)
        helper.make_node("MatMul", ["xs", "refs_t"], ["xr"]),  # (N, n)
        helper.make_node("Mul", ["xr", "minus_two"], ["xr2"]),
        helper.make_node("Add", ["xr2", "xx"], ["d2_a"]),
        helper.make_node("Add", ["d2_a", "refs_sq"], ["d2"]),  # (N, n)
    ]
    return nodes, inits


def _svm_nodes(model):
    """Nodes: ``features`` → ``scores`` (N, k), scikit-learn's one-vs-rest decision values of an RBF SVC.

    ovo decision of pair (i, j): ``D = K(x, SV)·W + b`` with ``W`` holding each support vector's dual
    coefficient for the pairs of its class; then scikit-learn's ``_ovr_decision_function``: votes
    (``D ≥ 0`` votes i, else j) plus the summed confidences squashed into (−1/3, 1/3).
    """
    from onnx import helper, numpy_helper

    svc = model.named_steps["clf"]
    k = len(svc.classes_)
    sv, dual, nsv = svc.support_vectors_, svc.dual_coef_, svc.n_support_
    starts = np.r_[0, np.cumsum(nsv)]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    W = np.zeros((len(sv), len(pairs)), np.float64)  # (n_SV, P)
    S = np.zeros((len(pairs), k), np.float32)  # confidences: +D to i, −D to j
    V = np.zeros(
        (len(pairs), k), np.float32
    )  # votes: +1 to i, −1 to j where D ≥ 0 (j's vote is the constant)
    for p, (i, j) in enumerate(pairs):
        W[starts[i] : starts[i + 1], p] = dual[j - 1, starts[i] : starts[i + 1]]
        W[starts[j] : starts[j + 1], p] = dual[i, starts[j] : starts[j + 1]]
        S[p, i], S[p, j], V[p, i], V[p, j] = 1, -1, 1, -1
    const = np.array([sum(1 for _, j in pairs if j == c) for c in range(k)], np.float32)[None]  # (1, k)
    nodes, inits = _sq_dists(model, sv)
    inits += [numpy_helper.from_array(np.array(-float(svc._gamma), np.float32), "neg_gamma"),
              numpy_helper.from_array(W.astype(np.float32), "ovo_w"),
              numpy_helper.from_array(svc.intercept_.astype(np.float32)[None], "ovo_b"),
              numpy_helper.from_array(S, "ovr_conf"), numpy_helper.from_array(V, "ovr_votes"),
              numpy_helper.from_array(const, "ovr_const"), numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(1.0, np.float32), "one"),
              numpy_helper.from_array(np.array(3.0, np.float32), "three")]  # fmt: skip
    nodes += [
        helper.make_node("Mul", ["d2", "neg_gamma"], ["kern_arg"]),
        helper.make_node("Exp", ["kern_arg"], ["kern"]),  # (N, n_SV)
        helper.make_node("MatMul", ["kern", "ovo_w"], ["ovo_a"]),
        helper.make_node("Add", ["ovo_a", "ovo_b"], ["ovo"]),  # (N, P)
        helper.make_node("GreaterOrEqual", ["ovo", "zero"], ["wins_b"]),
        helper.make_node("Cast", ["wins_b"], ["wins"], to=1),
        helper.make_node("MatMul", ["wins", "ovr_votes"], ["votes_a"]),
        helper.make_node("Add", ["votes_a", "ovr_const"], ["votes"]),  # (N, k)
        helper.make_node("MatMul", ["ovo", "ovr_conf"], ["conf"]),  # (N, k)
        helper.make_node("Abs", ["conf"], ["conf_abs"]),
        helper.make_node("Add", ["conf_abs", "one"], ["conf_den_a"]),
        helper.make_node("Mul", ["conf_den_a", "three"], ["conf_den"]),
        helper.make_node("Div", ["conf", "conf_den"], ["conf_sq"]),
        helper.make_node("Add", ["votes", "conf_sq"], ["scores"]),
    ]
    return nodes, inits


def _knn_nodes(model):
    """Nodes: ``features`` → ``scores`` (N, k), the class shares among the nearest training pixels."""
    from onnx import helper, numpy_helper

    knn = model.named_steps["clf"]
    onehot = np.eye(len(knn.classes_), dtype=np.float32)[knn._y]  # (n, k)
    nodes, inits = _sq_dists(model, knn._fit_X)
    inits += [numpy_helper.from_array(np.array([knn.n_neighbors], np.int64), "k_nn"),
              numpy_helper.from_array(onehot, "train_onehot")]  # fmt: skip
    nodes += [
        helper.make_node(
            "TopK", ["d2", "k_nn"], ["nn_d2", "nn_idx"], axis=1, largest=0, sorted=1
        ),  # (N, k_nn)
        helper.make_node("Gather", ["train_onehot", "nn_idx"], ["nn_onehot"], axis=0),  # (N, k_nn, k)
        helper.make_node("ReduceMean", ["nn_onehot"], ["scores"], axes=[1], keepdims=0),  # (N, k)
    ]
    return nodes, inits


def _skl2onnx_graph(model, n_features):
    """The skl2onnx graph of ``model`` (``features`` → its outputs) and the name of its score output."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    clf = model.steps[-1][1]
    with warnings.catch_warnings():  # skl2onnx reads SVC.probA_, deprecated in scikit-learn 1.9
        warnings.simplefilter("ignore", FutureWarning)
        m = convert_sklearn(model, initial_types=[("features", FloatTensorType([None, n_features]))],
                            options={id(clf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})  # fmt: skip
    return m, m.graph.output[1].name  # (label, probabilities / decision values)


def to_onnx(name: str, model, n_features: int, patch: int, window: int, classes: np.ndarray, num_classes: int,
            converter: str = "blmkd"):  # fmt: skip
    """The ONNX graph of a fitted pipeline: (N, B, P, P) float windows in, (N, K) FP32 scores out.

    ``converter="blmkd"`` writes the SVM and k-NN as MatMul graphs (kernel or distance matrix in one
    MatMul); skl2onnx's ``SVMClassifier`` and ``Scan`` graphs compute the same values 10-40× slower
    in ONNX Runtime. The forest is always skl2onnx's ``TreeEnsembleClassifier``.
    ``converter="skl2onnx"`` uses skl2onnx for every model (the reference the tests compare with).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if converter == "blmkd" and name in ("svm", "knn"):
        core, core_inits = (_svm_nodes if name == "svm" else _knn_nodes)(model)
        g = helper.make_graph(core, f"blmkd_{name}", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", len(classes)])], core_inits)  # fmt: skip
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        scores = "scores"
    else:
        m, scores = _skl2onnx_graph(model, n_features)
    g = m.graph
    front, inits = _front_nodes(n_features, patch, window, "features")
    if len(classes) < num_classes or not np.array_equal(classes, np.arange(num_classes)):
        # Columns of the classes with no training pixel: never chosen.
        place = np.zeros((len(classes), num_classes), np.float32)
        place[np.arange(len(classes)), classes] = 1.0
        bias = np.full(num_classes, -1e9, np.float32)
        bias[classes] = 0.0
        inits += [numpy_helper.from_array(place, "class_place"), numpy_helper.from_array(bias, "class_bias")]
        tail = [helper.make_node("MatMul", [scores, "class_place"], ["scores_k"]),
                helper.make_node("Add", ["scores_k", "class_bias"], ["logits"])]  # fmt: skip
    else:
        tail = [helper.make_node("Identity", [scores], ["logits"])]
    nodes = front + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)
    del g.input[:]
    g.input.extend(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_features, patch, patch])]
    )
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes])])
    onnx.checker.check_model(m, full_check=True)
    return m


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


def _check(m, ref_scores: np.ndarray, x_windows_fn, labels: np.ndarray, name: str):
    """Run the ONNX graph on the test windows and compare it with scikit-learn (before writing).

    Judged by decisions: scikit-learn computes in float64, ONNX Runtime in float32, and each of these
    models has a discontinuity a rounding can cross (an SVM's pairwise vote, a tree's threshold, the
    order of two equidistant neighbours). ``max_abs_diff`` is recorded beside.
    """
    sess = ort_session(m.SerializeToString())
    got = np.concatenate([sess.run(["logits"], {"input": xb})[0] for xb in x_windows_fn()])
    crit = (
        {"min_agreement": 0.999, "max_oa_drop": 0.05}
        if name == "svm"
        else {"min_agreement": 0.995, "max_oa_drop": 0.1}
    )
    chk = compare(got, ref_scores.astype(np.float32), labels, crit)
    if not chk.passed:
        raise ExportError(f"the ONNX {name} disagrees with scikit-learn: {check_line(chk)}")
    return chk


def check_line(chk) -> str:
    return (f"argmax agreement {100 * chk.agreement:.2f}%, OA {100 * chk.oa:.2f}% (scikit-learn {100 * chk.oa_reference:.2f}%), "
            f"max|Δscore| {chk.max_abs_diff:.1e} on {chk.pixels} test pixels [{chk.criterion}: {'ok' if chk.passed else 'FAILED'}]")  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Training


def train_baselines(bundle: Bundle, cfg: BaselineConfig, out_dir: str | Path, *, seed_dir: str | None = None,
                    meta_extra: dict | None = None, log=print) -> list[BaselineResult]:  # fmt: skip
    """Train every ``cfg.models`` baseline on ``bundle``'s training pixels, test it, write OUT/<name>/
    (OUT/<name>/<seed_dir>/ where given: one run per seed under each model, as `--seeds` lays out).

    Each OUT/<name>/ gets ``<name>.onnx`` (checked against scikit-learn on the test pixels before it
    is written) and ``best.json``: model, data, split, preprocessing and metrics as a deep run
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
        chk = _check(m, full, test_windows, y_te, name)
        set_metadata(m, _export_meta(bundle, name, cfg, params, size, test["oa"]))
        run = out / name / seed_dir if seed_dir else out / name
        onnx_path = run / f"{name}.onnx"
        with atomic_path(onnx_path, suffix=".onnx") as tmp:
            tmp.write_bytes(m.SerializeToString())
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

    from blmkd.checkpoint import versions

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
        "artifact": onnx_path.name,
        "check": chk.to_dict(),
        "versions": {**versions(), "scikit-learn": sklearn.__version__},
    }  # fmt: skip


def best_baseline(results: list[BaselineResult]) -> BaselineResult:
    """The baseline a user would pick without looking at the test set: the highest validation OA
    (ties: the higher cross-validated OA)."""

    def key(r):
        return (r.val_oa if r.val_oa is not None else -1.0, r.cv_oa if r.cv_oa is not None else -1.0)

    return max(results, key=key)
