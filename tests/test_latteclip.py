"""LatteCLIP's math (hand-computed cases, invariants) and its dynamics on synthetic features with planted classes.

The dynamics tests run the real training step (:class:`labeler.train.latte.LatteTask`, preset ``head``: a
learnable linear map on fixed image features) on a planted world: C class means μ in D dimensions, image
features μ_y + noise, label texts μ_c + a class-specific bias (so zero-shot is ≈ 70 % right), and captions /
group texts that are informative (μ_y + noise) or random.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labeler.errors import InvalidInputError
from labeler.methods.latteclip import (
    clip_loss,
    first_line,
    fuse_texts,
    prototype_preds,
    smoothed_targets,
    text_weights,
    update_prototypes,
)


# --- hand-computed cases ------------------------------------------------------------------------------------
def test_text_weights_are_the_top1_top2_gap_plus_the_floor():
    texts = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [3.0, 4.0]])
    protos = np.array([[2.0, 0.0], [0.0, 5.0]])  # not normalised: only directions count
    w = text_weights(texts, protos)
    np.testing.assert_allclose(w, [1 + 1e-6, 1e-6, 1 + 1e-6, 0.2 + 1e-6], rtol=0, atol=1e-7)
    # three prototypes: the gap is between the two best
    w3 = text_weights(np.array([[0.6, 0.8, 0.0]]), np.eye(3))
    np.testing.assert_allclose(w3, [0.2 + 1e-6], atol=1e-7)


def test_fuse_texts_is_the_weighted_mean_per_image():
    texts = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    fused = fuse_texts(texts, np.array([1.0, 3.0, 2.0]), np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(fused, [[0.25, 0.75], [1.0, 1.0]])  # not renormalised


def test_smoothed_targets_move_alpha_of_the_way():
    t = smoothed_targets(np.eye(2), np.array([[0.25, 0.75], [0.0, 3.0]]), np.array([0, 1]), alpha=0.2)
    np.testing.assert_allclose(t, [[0.85, 0.15], [0.0, 1.4]])


def test_update_prototypes_normalises_the_mean_of_each_seen_class():
    protos = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    out = update_prototypes(protos, np.array([[1.0, 1.0], [3.0, 1.0], [0.0, 2.0]]), np.array([0, 0, 1]))
    np.testing.assert_allclose(out, [[2 / 5**0.5, 1 / 5**0.5], [0.0, 1.0], [0.6, 0.8]])


def test_clip_loss_and_preds_by_hand():
    # identity features and targets at scale 1: each row's CE is log(1 + e^-1), both directions alike
    assert clip_loss(np.eye(2), np.eye(2), 1.0) == pytest.approx(np.log1p(np.exp(-1.0)), abs=1e-6)
    # swapped targets: the correct pair scores 0, the wrong one 1
    assert clip_loss(np.eye(2), np.eye(2)[::-1], 1.0) == pytest.approx(np.log1p(np.exp(1.0)), abs=1e-6)
    preds = prototype_preds(np.array([[1.0, 0.1], [0.1, 1.0], [-1.0, 0.2]]), np.array([[2.0, 0.0], [0.0, 1.0]]))
    assert preds.tolist() == [0, 1, 1]


def test_first_line_of_a_caption():
    assert first_line("  \nA dog on grass.\nSecond line") == "A dog on grass."
    assert first_line("") is None and first_line(None) is None


# --- invariants -------------------------------------------------------------------------------------------
def test_invariants_on_random_inputs():
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(5, 8))
    texts = rng.normal(size=(50, 8))
    w = text_weights(texts, protos)
    assert w.shape == (50,) and (w >= 1e-6).all()
    # a text equidistant to its two nearest prototypes (and far from the others) gets ≈ 0 weight
    p = np.eye(8)[:5]
    mid = (p[0] + p[1]) / np.sqrt(2)
    assert text_weights(mid[None], p)[0] == pytest.approx(1e-6, abs=1e-7)
    # prototypes stay unit-norm; absent classes are untouched
    unit = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    labels = np.array([0, 0, 2, 2, 2])
    new = update_prototypes(unit, rng.normal(size=(5, 8)), labels)
    np.testing.assert_allclose(np.linalg.norm(new, axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(new[[1, 3, 4]], unit[[1, 3, 4]])
    # alpha = 0 keeps the targets at the prototypes, alpha = 1 makes them the fused texts
    fused = rng.normal(size=(5, 8))
    np.testing.assert_allclose(smoothed_targets(unit, fused, labels, alpha=0.0), unit[labels])
    np.testing.assert_allclose(smoothed_targets(unit, fused, labels, alpha=1.0), fused)
    # fusing one text per image gives that text
    np.testing.assert_allclose(fuse_texts(fused, np.ones(5), np.arange(5), 5), fused)


def test_fused_targets_carry_gradients_to_the_texts_and_the_weights_do_not():
    from labeler.train import latte

    texts = torch.randn(6, 4, requires_grad=True)
    protos = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    w = latte.text_weights(texts, protos)
    assert not w.requires_grad
    fused = latte.fuse_texts(texts, w, torch.tensor([0, 0, 1, 1, 2, 2]), 3)
    target = latte.smoothed_targets(protos, fused, torch.tensor([0, 1, 2]), alpha=0.01)
    target.sum().backward()
    assert texts.grad is not None and texts.grad.abs().sum() > 0
    # d target / d text = alpha * w / Σw (per owner)
    expected = 0.01 * (w / torch.tensor([w[:2].sum(), w[2:4].sum(), w[4:].sum()]).repeat_interleave(2))
    torch.testing.assert_close(texts.grad[:, 0], expected)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: text_weights(np.ones(3), np.eye(2)), "texts must be a 2-D array"),
        (lambda: text_weights(np.ones((2, 3)), np.eye(2)), "prototypes must have 3 columns"),
        (lambda: text_weights(np.ones((2, 2)), np.ones((1, 2))), "at least 2 classes"),
        (lambda: text_weights(np.array([[np.nan, 1.0]]), np.eye(2)), "texts contains NaN"),
        (lambda: text_weights(np.ones((2, 2)), np.array([[0.0, 0.0], [0.0, 1.0]])), "zero row"),
        (
            lambda: fuse_texts(np.ones((2, 2)), np.ones(3), np.array([0, 1]), 2),
            "weights must be a 1-D array of length 2",
        ),
        (lambda: fuse_texts(np.ones((2, 2)), np.array([1.0, -1.0]), np.array([0, 1]), 2), ">= 0"),
        (lambda: fuse_texts(np.ones((2, 2)), np.ones(2), np.array([0, 0]), 2), "have no text"),
        (lambda: fuse_texts(np.ones((2, 2)), np.ones(2), np.array([0, 2]), 2), "owners must lie in 0..1"),
        (lambda: fuse_texts(np.ones((2, 2)), np.ones(2), np.array([0, 1]), 0), "n must be a positive integer"),
        (lambda: smoothed_targets(np.eye(2), np.ones((1, 2)), np.array([2]), 0.1), "labels must lie in 0..1"),
        (lambda: smoothed_targets(np.eye(2), np.ones((1, 2)), np.array([0]), 1.5), "alpha must be a number in"),
        (lambda: smoothed_targets(np.eye(2), np.ones((1, 2)), np.array([0.5]), 0.1), "labels must be integers"),
        (lambda: update_prototypes(np.eye(2), np.ones((2, 2)), np.array([0])), "labels must be a 1-D array of length"),
        (lambda: update_prototypes(np.eye(2), np.array([[1.0, 0], [-1.0, 0]]), np.array([0, 0])), "average to zero"),
        (lambda: clip_loss(np.eye(2), np.eye(2), 0.0), "scale must be a positive number"),
    ],
)
def test_bad_inputs_are_refused_by_name(call, match):
    with pytest.raises(InvalidInputError, match=match):
        call()


# --- dynamics on planted classes --------------------------------------------------------------------------------
def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def synthetic_world(seed=0, informative=True, C=4, n_per=100, D=32, image_noise=2.0, label_bias=1.2, text_noise=0.8):
    """(setup data for LatteTask, class means μ (C, D), true labels y, zero-shot labels)."""
    rng = np.random.default_rng(seed)
    mu = _unit(rng.normal(size=(C, D)))
    y = np.repeat(np.arange(C), n_per)
    n = len(y)
    x = _unit(mu[y] + image_noise * _unit(rng.normal(size=(n, D))))
    label = _unit(mu + label_bias * _unit(rng.normal(size=(C, D))))
    zs = (x @ label.T).argmax(1)  # the frozen zero-shot top-1
    if informative:
        caps = _unit(mu[y] + text_noise * _unit(rng.normal(size=(n, D))))
        groups = _unit(mu[y] + text_noise * _unit(rng.normal(size=(n, D))))
    else:
        caps, groups = _unit(rng.normal(size=(n, D))), _unit(rng.normal(size=(n, D)))
    data = {
        "rows": {"train": np.arange(n), "holdout": np.zeros(0, dtype=int), "val": np.zeros(0, dtype=int)},
        "verified": np.full(n, -1),
        "zero_shot": zs,
        "caption": np.arange(n),
        "group": np.arange(n),
        "holdout_teacher": zs,
        "label_emb": label.astype(np.float32),
        "caption_emb": caps.astype(np.float32),
        "group_emb": groups.astype(np.float32),
        "features": x.astype(np.float32),
    }
    return data, mu, y, zs


def train_synthetic(data, epochs=40, alpha=0.01, lr=1e-4, seed=0):
    """Steps 3–7 for ``epochs`` × 7 steps (batch 64) with the real task; (final prototypes, predictions)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: on a shared CPU more threads only wait for each other
    try:
        return _train(data, epochs, alpha, lr, seed)
    finally:
        torch.set_num_threads(threads)


def _train(data, epochs, alpha, lr, seed):
    from labeler.train.latte import LatteNet, LatteTask

    torch.manual_seed(seed)
    net = LatteNet("head", data["features"].shape[1], None, 100.0)
    task = LatteTask(net, data, {"batch_size": 64, "alpha": alpha, "warmup": 0}, torch.device("cpu"), {})
    opt = task.optimizer(lr, 0.2)
    for epoch in range(epochs):
        for batch in task.batches(torch.Generator().manual_seed(1000 * seed + epoch)):
            loss, _, _ = task.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    preds, _ = task.predict_rows(np.arange(len(data["zero_shot"])))
    return task.prototypes.numpy().astype(np.float64), preds


def alignment(protos: np.ndarray, mu: np.ndarray) -> float:
    """Mean cosine of each class prototype with its true class mean."""
    return float((_unit(protos) * mu).sum(1).mean())


@pytest.fixture(scope="module")
def informative():
    data, mu, y, zs = synthetic_world(0, informative=True)
    protos, preds = train_synthetic(data)
    return data, mu, y, zs, protos, preds


def test_informative_captions_pull_prototypes_to_the_class_means_and_beat_zero_shot(informative):
    data, mu, y, zs, protos, preds = informative
    start = alignment(data["label_emb"], mu)
    zs_acc, acc = float((zs == y).mean()), float((preds == y).mean())
    assert 0.55 < zs_acc < 0.85  # the planted zero-shot is noisy
    assert alignment(protos, mu) > start + 0.1, (start, alignment(protos, mu))
    assert acc > zs_acc + 0.05, (zs_acc, acc)
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, atol=1e-5)


def test_random_captions_do_not_make_prototypes_drift():
    data, mu, y, zs = synthetic_world(0, informative=False)
    protos, preds = train_synthetic(data)
    start = alignment(data["label_emb"], mu)
    assert abs(alignment(protos, mu) - start) < 0.02, (start, alignment(protos, mu))
    assert float((preds == y).mean()) > float((zs == y).mean()) - 0.03


def test_alpha_zero_keeps_the_prototypes_at_the_label_texts():
    data, *_ = synthetic_world(0, informative=True)
    protos, _ = train_synthetic(data, epochs=3, alpha=0.0)
    np.testing.assert_allclose(protos, _unit(data["label_emb"].astype(np.float64)), atol=1e-5)


def test_the_same_run_twice_ends_at_the_same_prototypes(informative):
    """The yardstick for the mutation tests (tests/test_mutations.py): a rerun differs by float noise only."""
    data, _, _, _, protos, _ = informative
    again, _ = train_synthetic(data)
    assert float(1 - (_unit(protos) * _unit(again)).sum(1).min()) < 1e-4
