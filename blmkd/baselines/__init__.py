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

Modules: :mod:`~blmkd.baselines.fit` (features, models, training) and
:mod:`~blmkd.baselines.onnx_graph` (the ONNX graphs and their check).
"""

from blmkd.baselines.fit import (
    FORMAT,
    KNN_GRID,
    MODELS,
    SVM_GRID,
    BaselineConfig,
    BaselineResult,
    best_baseline,
    pixel_features,
    train_baselines,
    window_features,
)
from blmkd.baselines.onnx_graph import check_line, to_onnx

__all__ = [
    "FORMAT",
    "KNN_GRID",
    "MODELS",
    "SVM_GRID",
    "BaselineConfig",
    "BaselineResult",
    "best_baseline",
    "check_line",
    "pixel_features",
    "to_onnx",
    "train_baselines",
    "window_features",
]
