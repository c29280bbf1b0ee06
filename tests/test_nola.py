"""NoLA's pure functions on synthetic data with a planted answer; LaFTer's text classifier; training splits."""

from __future__ import annotations

import numpy as np
import pytest

from labeler.errors import InvalidInputError
from labeler.methods import get_method, list_methods
from labeler.methods.lafter import train_text_classifier
from labeler.methods.nola import default_k, description_classifier, fit_alignment, select_top_k
from labeler.methods.zeroshot import text_classifier
from labeler.train.data import split_rows


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _planted(C=5, n_per=80, D=32, beta=1.3, informative=True, seed=0):
    """Zero-shot probabilities about 55 % right (more confident when right), and DINO features that are
    tight clusters by true class (``informative``) or pure noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n_per)
    n = len(y)
    logits = rng.normal(size=(n, C))
    logits[np.arange(n), y] += beta
    probs = np.exp(3 * logits)
    probs /= probs.sum(1, keepdims=True)
    if informative:
        centers = _unit(rng.normal(size=(C, D)))
        dino = _unit(centers[y] + 0.2 * rng.normal(size=(n, D)))
    else:
        dino = _unit(rng.normal(size=(n, D)))
    return probs, dino.astype(np.float32), y


def test_alignment_on_clustered_dino_features_beats_noisy_zero_shot():
    probs, dino, y = _planted()
    zero_shot = (probs.argmax(1) == y).mean()
    assert 0.45 < zero_shot < 0.65  # the planted noise level
    idx, lab = select_top_k(probs)
    purity = (lab == y[idx]).mean()
    assert purity > zero_shot + 0.1  # confident top-1s are purer than the whole
    module = fit_alignment(dino, idx, lab, 5)
    aligned = (module.predict_proba(dino).argmax(1) == y).mean()
    assert aligned > zero_shot + 0.25  # the paper's claim: DINO's clusters fix CLIP's noisy labels
    assert module.history[-1] < module.history[0]


def test_alignment_on_uninformative_features_does_not_beat_zero_shot():
    probs, dino, y = _planted(informative=False)
    zero_shot = (probs.argmax(1) == y).mean()
    idx, lab = select_top_k(probs)
    aligned = (fit_alignment(dino, idx, lab, 5).predict_proba(dino).argmax(1) == y).mean()
    assert aligned < zero_shot


def test_alignment_dimensions_come_from_the_data():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(40, 7)).astype(np.float32)
    module = fit_alignment(feats, np.arange(12), np.arange(12) % 3, 3, hidden=5, epochs=2)
    assert module.mlp[0].in_features == 7 and module.mlp[0].out_features == 5 and module.mlp[2].out_features == 3
    p = module.predict_proba(feats)
    assert p.shape == (40, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(InvalidInputError, match=r"\(N, 7\)"):
        module.predict_proba(feats[:, :6])
    # Same seed, same module.
    again = fit_alignment(feats, np.arange(12), np.arange(12) % 3, 3, hidden=5, epochs=2)
    np.testing.assert_array_equal(again.predict_proba(feats), p)


def test_fit_alignment_validates_inputs():
    f = np.zeros((10, 4), dtype=np.float32)
    idx, lab = np.arange(4), np.array([0, 1, 0, 1])
    with pytest.raises(InvalidInputError, match="2-D"):
        fit_alignment(np.zeros(10), idx, lab, 2)
    bad = f.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        fit_alignment(bad, idx, lab, 2)
    with pytest.raises(InvalidInputError, match="same length"):
        fit_alignment(f, idx, lab[:3], 2)
    with pytest.raises(InvalidInputError, match=r"0\.\.9"):
        fit_alignment(f, np.array([0, 1, 2, 10]), lab, 2)
    with pytest.raises(InvalidInputError, match="duplicates"):
        fit_alignment(f, np.array([0, 1, 1, 2]), lab, 2)
    with pytest.raises(InvalidInputError, match=r"labels must lie in 0\.\.1"):
        fit_alignment(f, idx, np.array([0, 1, 2, 0]), 2)
    with pytest.raises(InvalidInputError, match="empty"):
        fit_alignment(f, np.zeros(0, dtype=int), np.zeros(0, dtype=int), 2)
    with pytest.raises(InvalidInputError, match="num_classes"):
        fit_alignment(f, idx, lab, 1)
    with pytest.raises(InvalidInputError, match="epochs"):
        fit_alignment(f, idx, lab, 2, epochs=0)


def test_select_top_k_keeps_the_k_most_confident_top1_images_per_class():
    probs = np.array(
        [
            [0.9, 0.05, 0.05],  # 0 → class 0
            [0.6, 0.3, 0.1],  # 1 → class 0
            [0.8, 0.1, 0.1],  # 2 → class 0
            [0.1, 0.7, 0.2],  # 3 → class 1
            [0.2, 0.5, 0.3],  # 4 → class 1
            [0.1, 0.1, 0.8],  # 5 → class 2
        ]
    )
    idx, lab = select_top_k(probs, k=2)
    assert idx.tolist() == [0, 2, 3, 4, 5] and lab.tolist() == [0, 0, 1, 1, 2]
    assert idx.dtype == np.int64 and lab.dtype == np.int64
    idx1, lab1 = select_top_k(probs, k=1)
    assert idx1.tolist() == [0, 3, 5] and lab1.tolist() == [0, 1, 2]


def test_select_top_k_falls_back_to_second_then_third_choice_without_duplicates():
    probs = np.array(
        [
            [0.70, 0.20, 0.06, 0.04],  # top-1 0, 2nd 1
            [0.60, 0.25, 0.10, 0.05],  # top-1 0, 2nd 1
            [0.50, 0.05, 0.40, 0.05],  # top-1 0, 2nd 2
            [0.45, 0.08, 0.35, 0.12],  # top-1 0, 2nd 2, 3rd 3
            [0.40, 0.06, 0.30, 0.24],  # top-1 0, 2nd 2, 3rd 3
        ]
    )
    idx, lab = select_top_k(probs, k=1)
    # class 0: its most confident top-1 image (0). Class 1 is nobody's top-1: the best 2nd choice still free (1;
    # 0 is taken). Class 2: best free 2nd choice (2). Class 3 is nobody's 2nd choice: best 3rd choice (4: 0.24 > 0.12).
    assert lab.tolist() == [0, 1, 2, 3]
    assert idx.tolist() == [0, 1, 2, 4]
    # With k = 3, class 0 takes images 0-2; no free image has class 1 as 2nd or 3rd choice.
    with pytest.raises(InvalidInputError, match="class 1 has no candidate"):
        select_top_k(probs, k=3)
    idx3, lab3 = select_top_k(probs, k=3, allow_empty=True)
    assert idx3[lab3 == 0].tolist() == [0, 1, 2]
    assert idx3[lab3 == 2].tolist() == [3, 4]  # 2nd choice, free images only
    assert (lab3 == 1).sum() == 0 and (lab3 == 3).sum() == 0  # 3's 3rd-choice images were taken by class 2
    assert len(set(idx3.tolist())) == len(idx3)  # no duplicates


def test_select_top_k_class_without_any_candidate():
    probs = np.array([[0.7, 0.2, 0.06, 0.04], [0.6, 0.3, 0.06, 0.04]])
    with pytest.raises(InvalidInputError, match="class 2 has no candidate"):
        select_top_k(probs, k=1)
    idx, lab = select_top_k(probs, k=1, allow_empty=True)
    assert lab.tolist() == [0, 1]  # class 1 takes the free image's 2nd choice; 2 and 3 get nothing
    assert idx.tolist() == [0, 1]


def test_select_top_k_default_k_and_validation():
    assert default_k(1000, 5) == 40 and default_k(100, 5) == 16 and default_k(10, 5) == 10
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=400)
    idx, lab = select_top_k(probs)
    assert np.bincount(lab).max() <= 20 and len(set(idx.tolist())) == len(idx)  # k = max(16, 400 // 20) = 20
    with pytest.raises(InvalidInputError, match="2-D"):
        select_top_k(np.ones(5))
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        select_top_k(np.ones((5, 1)))
    with pytest.raises(InvalidInputError, match="no rows"):
        select_top_k(np.ones((0, 3)))
    bad = probs.copy()
    bad[7, 2] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        select_top_k(bad)
    with pytest.raises(InvalidInputError, match="larger than the data"):
        select_top_k(probs, k=401)
    with pytest.raises(InvalidInputError, match="at least 1"):
        select_top_k(probs, k=0)
    with pytest.raises(InvalidInputError, match="integer"):
        select_top_k(probs, k=2.5)


def test_description_classifier_is_the_normalised_mean_of_normalised_texts():
    rng = np.random.default_rng(0)
    emb = [rng.normal(size=(3, 8)) * s for s in (1.0, 50.0)]
    T = description_classifier(emb)
    assert T.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(T, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(T, text_classifier(emb))
    expected = _unit(_unit(emb[1]).mean(0))
    np.testing.assert_allclose(T[1], expected, rtol=1e-5)
    with pytest.raises(InvalidInputError):
        description_classifier([np.ones((2, 4)), np.ones((2, 5))])


def test_text_classifier_transfers_from_texts_to_planted_images():
    rng = np.random.default_rng(0)
    centers = _unit(rng.normal(size=(3, 16)))
    texts = [_unit(c + 0.3 * rng.normal(size=(6, 16)) / 4) for c in centers]
    W = train_text_classifier(texts, steps=150)
    assert W.shape == (3, 16)
    y = rng.integers(0, 3, 90)
    images = _unit(centers[y] + 0.4 * rng.normal(size=(90, 16)) / 4)
    assert ((images @ W.T).argmax(1) == y).mean() > 0.9
    np.testing.assert_array_equal(W, train_text_classifier(texts, steps=150))  # seeded


def test_training_methods_are_registered_with_typed_params():
    names = {m["name"]: m for m in list_methods()}
    assert names["nola"]["available"] and names["lafter"]["available"]
    nola = get_method("nola")
    params = nola.params_from({"epochs": 2, "tokens": 4})
    assert params.epochs == 2 and params.tokens == 4 and params.k is None
    assert get_method("lafter").default_tokens == 50 and nola.default_tokens == 16
    with pytest.raises(InvalidInputError, match="no option"):
        nola.params_from({"bogus": 1})


def test_split_rows_holdout_validation_and_overrides():
    verified = np.full(100, -1)
    verified[:12] = np.repeat([0, 1], 6)  # 6 verified per class
    s = split_rows(verified, 2, holdout=0.1, val_split=0.5, seed=0)
    assert len(s["val"]) == 6 and set(verified[s["val"]]) == {0, 1}  # ceil(0.5 * 6) per class
    assert not set(s["val"]) & set(s["train"]) and not set(s["holdout"]) & set(s["train"])
    assert len(s["holdout"]) == 9 and (verified[s["holdout"]] < 0).all()  # 10 % of the 88 unlabeled
    assert len(s["train"]) == 100 - 6 - 9 and s["val_reason"] is None
    few = verified.copy()
    few[:4] = -1  # class 0 now has 2 verified labels
    s2 = split_rows(few, 2)
    assert len(s2["val"]) == 0 and "fewer than 5" in s2["val_reason"]
    s3 = split_rows(verified, 2, val_split=0.0)
    assert s3["optimistic"] and set(s3["val"]) <= set(s3["train"])
    assert len(split_rows(np.full(10, -1), 2)["holdout"]) == 0  # 1 image would be too few to watch
