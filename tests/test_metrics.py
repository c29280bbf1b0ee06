"""Average precision, mAP and F1 against hand-computed values (and scikit-learn where it is installed)."""

import numpy as np
import pytest

from labeler.errors import InvalidInputError
from labeler.metrics import average_precision, f1_at, mean_average_precision


def test_average_precision_hand_computed():
    # ranks of the positives: 1 and 3 → (1/1 + 2/3) / 2
    assert average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0.1, 0.2, 0.3], [1, 1, 1]) == pytest.approx(1.0)
    assert np.isnan(average_precision([0.1, 0.2], [0, 0]))


def test_ties_get_no_credit_for_input_order():
    # all scores equal: positives ranked last → AP = mean(1/3, 2/4)
    assert average_precision([0.5] * 4, [1, 1, 0, 0]) == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_map_skips_classes_without_positives_and_matches_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.random((200, 5)) < 0.3
    truth[:, 4] = False
    scores = truth * 0.3 + rng.random((200, 5))
    m, ap = mean_average_precision(scores, truth)
    assert np.isnan(ap[4]) and np.isfinite(ap[:4]).all()
    assert m == pytest.approx(float(np.mean(ap[:4])))
    sklearn = pytest.importorskip("sklearn.metrics")
    for c in range(4):
        assert ap[c] == pytest.approx(sklearn.average_precision_score(truth[:, c], scores[:, c]))


def test_f1_per_class_and_micro():
    pred = np.array([[1, 0], [1, 1], [0, 1]], bool)
    truth = np.array([[1, 0], [0, 1], [0, 0]], bool)
    out = f1_at(pred, truth)
    # class 0: tp 1, fp 1 → P 0.5 R 1 F1 2/3; class 1: tp 1 fp 1 fn 0 → the same
    assert out["f1"] == pytest.approx([2 / 3, 2 / 3])
    assert out["micro"]["precision"] == pytest.approx(0.5) and out["micro"]["recall"] == pytest.approx(1.0)
    assert out["macro_f1"] == pytest.approx(2 / 3)


def test_bad_shapes_and_values_are_refused():
    with pytest.raises(InvalidInputError, match="one shape"):
        mean_average_precision(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(InvalidInputError, match="0/1"):
        average_precision([0.1, 0.2], [2, 0])
    with pytest.raises(InvalidInputError, match="NaN"):
        average_precision([np.nan, 0.2], [1, 0])


def test_project_thresholds_validate_merge_and_drop_removed_classes(tmp_path):
    from labeler.project import Project

    p = Project.create(tmp_path / "p", ["cat", "dog", "car"], multi_label=True)
    assert p.thresholds() == {}
    assert p.set_thresholds({"cat": 0.3}) == {"cat": 0.3}
    assert p.set_thresholds({"dog": 1}) == {"cat": 0.3, "dog": 1.0}
    assert p.set_thresholds({"car": 0.2}, replace=True) == {"car": 0.2}
    with pytest.raises(InvalidInputError, match="unknown class 'cow'"):
        p.set_thresholds({"cow": 0.5})
    with pytest.raises(InvalidInputError, match="in \\[0, 1\\]"):
        p.set_thresholds({"cat": 1.5})
    p.set_classes(["cat", "dog"])
    assert p.thresholds() == {}
