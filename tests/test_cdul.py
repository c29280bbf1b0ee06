"""CDUL's functional API: snippet tiling, aggregation, refinement, and a synthetic multi-label set where the
paper's claims can be checked (aggregation beats global-only; refinement toward a good classifier helps)."""

from __future__ import annotations

import numpy as np
import pytest

from labeler.errors import InvalidInputError
from labeler.methods.cdul import (
    aggregate,
    gaussian_weight,
    global_scores,
    loss_gradient,
    refine,
    resolve_temperature,
    snippet_boxes,
    snippet_scores,
)
from labeler.metrics import mean_average_precision


# --- snippet_boxes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size,grid", [((7, 5), 3), ((100, 37), 3), ((3, 3), 3), ((32, 32), 3), ((10, 10), 4), ((5, 9), 1), ((64, 3), 3)]
)
def test_snippet_boxes_tile_the_image_exactly_once(size, grid):
    w, h = size
    boxes = snippet_boxes(w, h, grid)
    assert len(boxes) == grid * grid
    cover = np.zeros((h, w), dtype=np.int64)
    for left, top, right, bottom in boxes:
        assert 0 <= left < right <= w and 0 <= top < bottom <= h  # every crop holds a pixel
        cover[top:bottom, left:right] += 1
    assert (cover == 1).all()  # no gap, no overlap
    # row-major; every column but the last has width floor(W/grid) (the last takes the remainder)
    assert [b[0] for b in boxes[:grid]] == [j * (w // grid) for j in range(grid)]
    assert boxes[grid - 1][2] == w and boxes[-1][3] == h


def test_snippet_boxes_for_7x5_by_hand():
    assert snippet_boxes(7, 5) == [
        (0, 0, 2, 1), (2, 0, 4, 1), (4, 0, 7, 1),
        (0, 1, 2, 2), (2, 1, 4, 2), (4, 1, 7, 2),
        (0, 2, 2, 5), (2, 2, 4, 5), (4, 2, 7, 5),
    ]  # fmt: skip


@pytest.mark.parametrize("args", [(1, 1, 3), (2, 10, 3), (10, 2, 3), (10, 10, 0), (10.5, 10, 3), (True, 4, 1)])
def test_snippet_boxes_refuse_what_cannot_be_cut(args):
    with pytest.raises(InvalidInputError, match="snippet|cannot be cut"):
        snippet_boxes(*args)


# --- scores and temperature ---------------------------------------------------------------------------------
def test_scores_are_softmaxes_of_scaled_cosines():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 8))
    f = rng.normal(size=(5, 8)) * 3.0  # the norm must not matter
    g = global_scores(f, w, 10.0)
    cos = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    e = np.exp(10 * cos)
    np.testing.assert_allclose(g, e / e.sum(1, keepdims=True), rtol=1e-5)
    s = snippet_scores(np.stack([f, 2 * f], axis=1), w, 10.0)
    assert s.shape == (5, 2, 4)
    np.testing.assert_allclose(s[:, 0], g, rtol=1e-5)
    np.testing.assert_allclose(s[:, 1], g, rtol=1e-5)
    # the reproduction's raw logit_scale (ln 100 ≈ 4.6) flattens the softmax toward 1/C
    assert resolve_temperature("raw", 100.0) == pytest.approx(np.log(100))
    assert resolve_temperature("clip", 100.0) == 100.0 and resolve_temperature(None, 50.0) == 50.0
    flat = global_scores(f, w, resolve_temperature("raw", 100.0))
    assert np.ptp(flat, axis=1).mean() < np.ptp(global_scores(f, w, 100.0), axis=1).mean()
    with pytest.raises(InvalidInputError, match="temperature"):
        resolve_temperature(-1, 100.0)
    with pytest.raises(InvalidInputError, match="temperature"):
        resolve_temperature("hot", 100.0)
    with pytest.raises(InvalidInputError, match=r"\(C, 8\)"):
        global_scores(f, w[:, :3])


# --- aggregate ------------------------------------------------------------------------------------------------
def test_aggregate_by_hand():
    g = np.array([[0.6, 0.3, 0.1]])
    local = np.array([[[0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.3, 0.2, 0.5]]])  # (1, S=3, C=3)
    # threshold 0: γ ≡ 1, local = max = [0.5, 0.7, 0.5]
    np.testing.assert_allclose(aggregate(g, local), [[0.55, 0.5, 0.3]], rtol=1e-6)
    # threshold 0.6: only class 1's max (0.7) reaches it; classes 0, 2 take the min [0.2, -, 0.1]
    np.testing.assert_allclose(aggregate(g, local, threshold=0.6), [[0.4, 0.5, 0.1]], rtol=1e-6)
    # λ = 1: ½(g + l + |g − l|) = max(g, l)
    np.testing.assert_allclose(aggregate(g, local, lam=1.0), [[0.6, 0.7, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(aggregate(g, local, threshold=0.6, lam=0.5), [[0.5, 0.6, 0.1]], rtol=1e-6)


def test_aggregate_matches_its_definition_on_random_inputs():
    rng = np.random.default_rng(1)
    g = rng.dirichlet(np.ones(5), size=20)
    local = rng.dirichlet(np.ones(5), size=(20, 9))
    for thr in (0.0, 0.2, 0.5, 1.0):
        for lam in (0.0, 0.3, 1.0):
            a, b = local.max(1), local.min(1)
            loc = np.where(a >= thr, a, b)
            want = 0.5 * (g + loc + lam * np.abs(g - loc))
            np.testing.assert_allclose(aggregate(g, local, thr, lam), want, rtol=1e-5)
    assert (aggregate(g, local, threshold=1.01 - 0.01) <= 1).all()
    # a flat softmax (≈ 1/C) never reaches a threshold of 0.3: the local score is the min everywhere
    flat = np.full((2, 9, 5), 0.2) + rng.normal(0, 0.01, (2, 9, 5))
    np.testing.assert_allclose(aggregate(np.full((2, 5), 0.2), flat, 0.3), 0.5 * (0.2 + flat.min(1)), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"lam": -0.1}, "lam"),
        ({"local_scores": np.zeros((2, 3))}, r"\(N, S, C\)"),
        ({"local_scores": np.zeros((3, 4, 3))}, "local_scores"),
        ({"global_scores": np.full((2, 3), 2.0)}, r"\[0, 1\]"),
        ({"global_scores": np.full((2, 3), np.nan)}, "NaN"),
    ],
)
def test_aggregate_validates(kwargs, match):
    args = {"global_scores": np.full((2, 3), 0.3), "local_scores": np.full((2, 4, 3), 0.3), **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        aggregate(**args)


# --- refine ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["kl", "bce"])
def test_loss_gradient_matches_autograd(loss):
    import torch

    rng = np.random.default_rng(2)
    y = rng.uniform(0.05, 0.95, size=(4, 5))
    p = rng.dirichlet(np.ones(5), size=4) if loss == "kl" else rng.uniform(0.05, 0.95, size=(4, 5))
    yt = torch.tensor(y, requires_grad=True)
    pt = torch.tensor(p)
    if loss == "kl":  # torchmetrics kl_divergence(pseudo, preds): rows renormalised, batch mean
        yn, pn = yt / yt.sum(1, keepdim=True), pt / pt.sum(1, keepdim=True)
        value = (yn * (yn.log() - pn.log())).sum(1).mean()
    else:
        value = -(yt * pt.log() + (1 - yt) * (1 - pt).log()).sum(1).mean()
    (grad,) = torch.autograd.grad(value, yt)
    np.testing.assert_allclose(loss_gradient(y, p, loss), grad.numpy(), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("loss", ["kl", "bce"])
def test_refine_moves_pseudo_labels_toward_confident_predictions_and_stays_in_range(loss):
    y = np.array([[0.5, 0.5, 0.5], [0.2, 0.6, 0.3]])
    p = np.array([[0.8, 0.15, 0.05], [0.1, 0.1, 0.8]])
    out = refine(y, p, loss=loss)
    assert out.shape == y.shape and out.dtype == np.float32
    assert ((out > 0) & (out < 1)).all()
    assert out[0, 0] > y[0, 0] and out[0, 2] < y[0, 2]  # up where the prediction is confident, down where not
    assert out[1, 2] > y[1, 2] and out[1, 1] < y[1, 1]
    # the step is ψ(y)·g in logit space: exactly
    logit = np.log(y / (1 - y)) - gaussian_weight(y) * loss_gradient(y, p, loss)
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-logit)), rtol=1e-5)
    # a larger step moves further; extreme inputs stay strictly inside (0, 1)
    assert np.abs(refine(y, p, step=5.0, loss=loss) - y).sum() > np.abs(out - y).sum()
    edge = refine(np.array([[0.0, 1.0, 0.5]]), np.array([[1.0, 0.0, 0.0]]), step=100.0, loss=loss)
    assert np.isfinite(edge).all() and ((edge > 0) & (edge < 1)).all()
    assert gaussian_weight(0.5) == pytest.approx(0.3989, abs=1e-4)


def test_refine_validates():
    with pytest.raises(InvalidInputError, match="loss"):
        refine(np.full((1, 2), 0.5), np.full((1, 2), 0.5), loss="mse")
    with pytest.raises(InvalidInputError, match="one shape"):
        refine(np.full((1, 2), 0.5), np.full((1, 3), 0.5))
    with pytest.raises(InvalidInputError, match="step"):
        refine(np.full((1, 2), 0.5), np.full((1, 2), 0.5), step=0)
    with pytest.raises(InvalidInputError, match="sigma"):
        refine(np.full((1, 2), 0.5), np.full((1, 2), 0.5), sigma=-1)


# --- the synthetic multi-label set ------------------------------------------------------------------------------
def synthetic_multilabel(n=240, classes=6, dim=64, grid=3, seed=0, signal=0.25, noise=0.08):
    """Images of 1–3 objects, each visible in 1–3 of the 9 snippets; a background common to all.

    Returns (global features (N, D), snippet features (N, S, D), truth (N, C) bool, class texts (C, D)). A
    snippet is background + noise + ``signal`` × the direction of each object in it; the whole image is the
    mean of its snippets plus noise: a diluted mixture, where an object in one snippet of nine is faint.
    """
    rng = np.random.default_rng(seed)
    s = grid * grid
    texts = rng.normal(size=(classes, dim))
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    background = rng.normal(size=dim)
    background /= np.linalg.norm(background)
    snippets = background + 3 * noise * rng.normal(size=(n, s, dim)) / np.sqrt(dim)
    truth = np.zeros((n, classes), dtype=bool)
    for i in range(n):
        objects = rng.choice(classes, rng.integers(1, 4), replace=False)
        truth[i, objects] = True
        for o in objects:
            snippets[i, rng.choice(s, rng.integers(1, 4), replace=False)] += signal * texts[o]
    whole = snippets.mean(axis=1) + noise * rng.normal(size=(n, dim)) / np.sqrt(dim)
    return whole, snippets, truth, texts


def _map(scores, truth) -> float:
    return mean_average_precision(scores, truth)[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aggregation_beats_global_only_and_a_mean_aggregation(seed):
    whole, snippets, truth, texts = synthetic_multilabel(seed=seed)
    g = global_scores(whole, texts, 100.0)
    local = snippet_scores(snippets, texts, 100.0)
    agg = _map(aggregate(g, local), truth)
    glob = _map(g, truth)
    broken = _map(0.5 * (g + local.mean(axis=1)), truth)  # mean instead of max/min
    assert agg > glob + 0.05, (agg, glob)
    assert agg > broken + 0.02, (agg, broken)


@pytest.mark.parametrize("loss", ["kl", "bce"])
def test_refinement_toward_a_good_classifier_raises_pseudo_label_map(loss):
    for seed in range(3):
        whole, snippets, truth, texts = synthetic_multilabel(seed=seed)
        pseudo = aggregate(global_scores(whole, texts), snippet_scores(snippets, texts))
        rng = np.random.default_rng(seed + 10)
        logits = 4.5 * truth + rng.normal(size=truth.shape)  # a classifier on features that carry the labels
        if loss == "kl":
            probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        else:
            probs = 1 / (1 + np.exp(-(logits - 1)))
        assert _map(probs, truth) > _map(pseudo, truth)
        y = pseudo.copy()
        for _ in range(10):  # 10 refinement epochs of batches of 8, as in training
            for b in range(0, len(y), 8):
                y[b : b + 8] = refine(y[b : b + 8], probs[b : b + 8], loss=loss)
        before, after = _map(pseudo, truth), _map(y, truth)
        assert after > before + 0.003, (seed, before, after)


@pytest.mark.parametrize("loss", ["bce", "kl"])
def test_human_targets_none_of_the_classes_per_loss(loss):
    """A person's empty set is an all-zero fixed target for bce; kl cannot express it, so the row keeps its
    pseudo-label (and is refined) and is counted as skipped."""
    from labeler.methods.cdul import human_targets

    agg = np.array([[0.2, 0.9], [0.7, 0.4], [0.6, 0.5]], dtype=np.float32)
    sets = np.array([[1, 0], [0, 0], [0, 0]], dtype=np.float32)
    has = np.array([True, True, False])  # row 1: "none of the classes"; row 2: no human label
    targets, fixed, skipped = human_targets(agg, sets, has, loss)
    np.testing.assert_array_equal(targets[0], [1, 0])
    np.testing.assert_array_equal(targets[2], agg[2])
    if loss == "bce":
        assert skipped == 0 and fixed.tolist() == [True, True, False]
        np.testing.assert_array_equal(targets[1], [0, 0])
    else:
        assert skipped == 1 and fixed.tolist() == [True, False, False]
        np.testing.assert_array_equal(targets[1], agg[1])
    with pytest.raises(InvalidInputError, match="loss"):
        human_targets(agg, sets, has, "mse")
