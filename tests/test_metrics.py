"""OA / AA / κ, the confusion matrix and mean ± std, against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blmkd.metrics import (
    ClassificationReport,
    classification_report,
    confusion_matrix,
    format_mean_std,
    mean_std,
)


def test_golden_tiny_example():
    # true  0 0 0 1 1 2
    # pred  0 0 1 1 0 2
    # confusion [[2,1,0],[1,1,0],[0,0,1]]; OA = 4/6; recalls 2/3, 1/2, 1 -> AA = 13/18
    # p_e = (3·3 + 2·2 + 1·1) / 36 = 14/36; κ = (24/36 − 14/36) / (22/36) = 10/22
    rep = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 0, 2], 3)
    np.testing.assert_array_equal(rep.confusion, [[2, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert rep.confusion.dtype == np.int64
    assert rep.oa == pytest.approx(4 / 6)
    np.testing.assert_allclose(rep.per_class, [2 / 3, 1 / 2, 1.0])
    assert rep.aa == pytest.approx(13 / 18)
    assert rep.kappa == pytest.approx(10 / 22)


def test_aa_ignores_classes_absent_from_truth():
    # class 2 never occurs in y_true (but is predicted once): it has no accuracy to average.
    rep = classification_report([0, 0, 1, 1], [0, 2, 1, 1], 3)
    assert math.isnan(rep.per_class[2])
    assert rep.aa == pytest.approx((0.5 + 1.0) / 2)
    assert rep.oa == pytest.approx(3 / 4)
    d = rep.to_dict([1, 5, 9], ["a", "b", "c"])
    assert d["per_class"][2] == {"index": 2, "id": 9, "name": "c", "accuracy": None, "support": 0}
    json.dumps(d, allow_nan=False)  # strict JSON: no NaN


def test_kappa_extremes():
    assert classification_report([0, 1, 2, 1], [0, 1, 2, 1], 3).kappa == pytest.approx(1.0)
    assert classification_report([1, 1, 1], [1, 1, 1], 3).kappa == 1.0  # p_e = 1, perfect agreement
    # prediction independent of the truth: κ = 0
    assert classification_report([0, 0, 1, 1], [0, 1, 0, 1], 2).kappa == pytest.approx(0.0)


def test_to_dict_is_json_ready():
    rep = classification_report(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
    d = json.loads(json.dumps(rep.to_dict()))
    assert set(d) == {"oa", "aa", "kappa", "per_class", "confusion"}
    assert d["confusion"] == [[1, 0], [1, 1]]
    assert d["per_class"][1] == {"index": 1, "id": 1, "name": "class 1", "accuracy": 0.5, "support": 2}
    assert isinstance(rep, ClassificationReport)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60),
        )
    )
)
def test_confusion_matches_a_loop(case):
    k, pairs = case
    t, p = (np.array(x) for x in zip(*pairs))
    ref = np.zeros((k, k), dtype=np.int64)
    for a, b in pairs:
        ref[a, b] += 1
    np.testing.assert_array_equal(confusion_matrix(t, p, k), ref)
    rep = classification_report(t, p, k)
    assert rep.oa == pytest.approx(np.mean(t == p))
    present = np.unique(t)
    assert rep.aa == pytest.approx(np.mean([np.mean(p[t == c] == c) for c in present]))
    assert -1.0 <= rep.kappa <= 1.0


def test_bad_labels_raise():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="differ|labels"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError):
        classification_report([], [], 3)


def test_mean_std_uses_the_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))  # ddof=1; population std would be 0.816
    assert mean_std([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_format_mean_std():
    assert format_mean_std([0.9849, 0.9861, 0.9873]) == "98.61 ± 0.12"
    assert format_mean_std([0.5], scale=1, digits=3) == "0.500 ± 0.000"
