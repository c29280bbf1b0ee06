"""Review queue orderings, the k-NN disagreement label-noise detector, and bulk actions."""

from __future__ import annotations

import numpy as np
import pytest

from labeler import labels, review
from labeler.errors import InvalidInputError, NotReadyError
from labeler.export import export, read_csv

from .explore_helpers import (
    add_features,
    label_run,
    make_project,
    one_faiss_thread,  # noqa: F401  (autouse fixture)
    planted,
    probs_for,
)

HAND = np.array(
    [
        [0.90, 0.05, 0.05],  # 0: confident
        [0.50, 0.45, 0.05],  # 1: torn between two (small margin, middling entropy)
        [0.34, 0.33, 0.33],  # 2: uniform (lowest confidence, highest entropy)
        [0.60, 0.20, 0.20],  # 3
        [0.55, 0.44, 0.01],  # 4: small margin, low third class
    ]
)


def test_orderings_on_hand_made_probabilities():
    np.testing.assert_allclose(review.confidence_scores(HAND), HAND.max(1))
    np.testing.assert_allclose(review.margin_scores(HAND), [0.85, 0.05, 0.01, 0.40, 0.11], atol=1e-9)
    ent = review.entropy_scores(HAND)
    assert ent[2] == pytest.approx(np.log(3), abs=1e-3) and ent.argmax() == 2 and ent.argmin() == 0
    assert review.order_by(HAND, "confidence")[0].tolist() == [2, 1, 4, 3, 0]
    assert review.order_by(HAND, "margin")[0].tolist() == [2, 1, 4, 3, 0]
    assert review.order_by(HAND, "entropy")[0].tolist() == [2, 3, 1, 4, 0]
    # Margin and entropy disagree where they should: [.5,.45,.05] vs [.6,.2,.2].
    assert review.margin_scores(HAND)[1] < review.margin_scores(HAND)[3]
    assert review.entropy_scores(HAND)[1] < review.entropy_scores(HAND)[3]
    with pytest.raises(InvalidInputError, match="order must be"):
        review.order_by(HAND, "bogus")
    with pytest.raises(InvalidInputError, match="NaN"):
        review.margin_scores(np.array([[np.nan, 1.0]]))


def test_knn_vote_and_disagreement_pure():
    votes = review.knn_vote(np.array([[0, 0, 1], [-1, -1, -1]]), np.array([[0.9, 0.9, 0.2], [1, 1, 1]]), 2)
    np.testing.assert_allclose(votes[0], [0.9, 0.1], atol=1e-5)
    assert votes[1].sum() == 0
    np.testing.assert_allclose(review.disagreement_scores([1, 0], votes), [0.9, 0.0], atol=1e-5)


def _noisy_project(project, dino_random: bool = False, with_dino: bool = True, seed: int = 0):
    """3 planted classes (90 images each) in DINO space; CLIP pseudo-labels right except 12 planted flips."""
    rng = np.random.default_rng(seed)
    _, dino, y = planted(3, 32, 270, noise=0.6, seed=seed)
    ids = np.asarray(make_project(project, planted(3, 16, 270, seed=seed + 1)[1], kind="clip"))
    if with_dino:
        feats = planted(3, 32, 270, seed=seed + 7)[1][rng.permutation(270)] if dino_random else dino
        add_features(project, feats, kind="dino")
    flips = rng.choice(270, 12, replace=False)
    pseudo = y.copy()
    pseudo[flips] = (y[flips] + rng.integers(1, 3, 12)) % 3
    # The flipped ones are confidently wrong: confidence orderings cannot find them.
    label_run(project, ids, probs_for(pseudo, 3, confidence=0.8, seed=seed + 2))
    return ids, set(ids[flips].tolist())


def test_disagreement_ranks_planted_label_flips_first(project):
    ids, flipped = _noisy_project(project)
    q = review.review_queue(project, by="disagreement", limit=len(flipped))
    assert q.features == "dino:fake:none" and q.note == "" and q.total == 270
    top = {it["image_id"] for it in q.items}
    assert len(top & flipped) / len(flipped) >= 0.8
    first = q.items[0]
    assert first["knn_label"] != first["label"] and first["knn_share"] > 0.5 and first["score"] > 0.5
    # The confidence ordering, by contrast, does not see them.
    conf = {it["image_id"] for it in review.review_queue(project, by="confidence", limit=len(flipped)).items}
    assert len(conf & flipped) / len(flipped) < 0.5
    # Once a person labels an image, it leaves the queue.
    review.label_images(project, first["image_id"], first["knn_label"])
    q2 = review.review_queue(project, by="disagreement", limit=5)
    assert first["image_id"] not in {it["image_id"] for it in q2.items} and q2.total == 269


def test_disagreement_with_random_dino_features_finds_nothing(project):
    _, flipped = _noisy_project(project, dino_random=True)
    q = review.review_queue(project, by="disagreement", limit=len(flipped))
    assert len({it["image_id"] for it in q.items} & flipped) / len(flipped) < 0.5


def test_disagreement_falls_back_to_clip_and_says_so(project):
    _noisy_project(project, with_dino=False)
    q = review.review_queue(project, by="disagreement", limit=3)
    assert q.features == "clip:fake:none" and "no DINO features" in q.note and len(q.items) == 3


def test_queue_needs_a_run_and_valid_options(project):
    with pytest.raises(NotReadyError, match="no finished labeling run") as info:
        review.review_queue(project)
    assert info.value.hint.step == "label"
    ids = make_project(project, planted(3, 8, 30)[1])
    label_run(project, ids, HAND[np.arange(30) % 5])
    with pytest.raises(InvalidInputError, match="'by' must be"):
        review.review_queue(project, by="random")
    with pytest.raises(InvalidInputError, match="limit"):
        review.review_queue(project, limit=0)
    q = review.review_queue(project, by="margin", limit=4)
    assert [it["image_id"] for it in q.items] == [ids[2], ids[7], ids[12], ids[17]]
    assert q.items[0]["pseudo"] == "cat" and q.items[0]["margin"] == pytest.approx(0.01, abs=1e-6)


def test_bulk_label_accept_exclude_and_export(project, tmp_path):
    ids = make_project(project, planted(3, 8, 12)[1])
    label_run(project, ids, probs_for(np.arange(12) % 3, 3))
    shas = {r[0]: r[1] for r in project.db.execute("select id, sha256 from images")}

    def exported():
        return {r["sha256"]: r for r in read_csv(export(project, "csv", tmp_path / "out.csv"))}

    assert review.label_images(project, ids[:4], "car") == 4
    rows = exported()
    assert [rows[shas[i]]["label"] for i in ids[:4]] == ["car"] * 4
    assert {rows[shas[i]]["source"] for i in ids[:4]} == {"human"}
    assert review.accept_images(project, ids[:6]) == 2  # the human ones keep theirs
    assert exported()[shas[ids[4]]]["source"] == "accepted"
    # Exclude: gone from final labels, counts and the export at once; include brings it back unchanged.
    assert review.exclude_images(project, [ids[0], ids[5]]) == 2
    assert review.exclude_images(project, [ids[0]]) == 0
    rows = exported()
    assert len(rows) == 10 and shas[ids[0]] not in rows and shas[ids[5]] not in rows
    assert labels.label_counts(project)["total"] == 10 and review.excluded_images(project) == [ids[0], ids[5]]
    assert all(it.image_id not in (ids[0], ids[5]) for it in labels.final_labels(project))
    assert ids[0] not in {it["image_id"] for it in review.review_queue(project, limit=20).items}
    assert review.include_images(project, [ids[0], ids[5]]) == 2
    rows = exported()
    assert len(rows) == 12 and rows[shas[ids[0]]]["label"] == "car" and rows[shas[ids[5]]]["source"] == "accepted"
    with pytest.raises(InvalidInputError, match="no images selected"):
        review.label_images(project, [], "car")
    with pytest.raises(InvalidInputError, match="do not exist"):
        review.exclude_images(project, [99999])
    with pytest.raises(InvalidInputError, match="not a class"):
        review.label_images(project, ids[:1], "zebra")
