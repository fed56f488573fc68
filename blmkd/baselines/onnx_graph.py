"""The baselines' ONNX graphs: ``(N, bands, P, P)`` standardized windows in, ``(N, K)`` scores out.

The SVM and k-NN are written as MatMul graphs (the kernel or distance matrix in one MatMul); the
forest is skl2onnx's ``TreeEnsembleClassifier`` (skl2onnx is imported where it is used). Every graph
is checked against scikit-learn on the test pixels before it is written (:func:`check_onnx`).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from blmkd.errors import ExportError
from blmkd.export.checks import compare
from blmkd.inference.onnx_runner import ort_session


def _front_nodes(bands: int, patch: int, window: int, out: str):
    """Nodes that turn the ``input`` windows (N, B, P, P) into the (N, B) features ``out``."""
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


def check_onnx(
    m, ref_scores: np.ndarray, x_windows_fn, labels: np.ndarray, name: str, *, strict: bool = True
):
    """Run the ONNX graph on the test windows and compare it with scikit-learn (before writing).

    Judged by decisions: scikit-learn computes in float64, ONNX Runtime in float32, and each of these
    models has a discontinuity a rounding can cross (an SVM's pairwise vote, a tree's threshold, the
    order of two equidistant neighbours). ``max_abs_diff`` is recorded beside. ``strict``: a failed
    check raises :class:`ExportError`; otherwise the caller reads ``chk.passed``.
    """
    sess = ort_session(m.SerializeToString())
    got = np.concatenate([sess.run(["logits"], {"input": xb})[0] for xb in x_windows_fn()])
    crit = (
        {"min_agreement": 0.999, "max_oa_drop": 0.05}
        if name == "svm"
        else {"min_agreement": 0.995, "max_oa_drop": 0.1}
    )
    chk = compare(got, ref_scores.astype(np.float32), labels, crit)
    if strict and not chk.passed:
        raise ExportError(f"the ONNX {name} disagrees with scikit-learn: {check_line(chk)}")
    return chk


def check_line(chk) -> str:
    return (f"argmax agreement {100 * chk.agreement:.2f}%, OA {100 * chk.oa:.2f}% (scikit-learn {100 * chk.oa_reference:.2f}%), "
            f"max|Δscore| {chk.max_abs_diff:.1e} on {chk.pixels} test pixels [{chk.criterion}: {'ok' if chk.passed else 'FAILED'}]")  # fmt: skip
