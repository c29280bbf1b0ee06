"""Review queue orderings, the k-NN disagreement label-noise detector, and bulk actions."""

from __future__ import annotations

import numpy as np
import pytest

from labeler import labels, review
from labeler.errors import InvalidInputError, NotReadyError
from labeler.export import export, read_csv

from .explore_helpers import (
    add_features,
    add_images,
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
    assert review.label_counts(project)["total"] == 10 and review.excluded_images(project) == [ids[0], ids[5]]
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


# --- one queue: the Review step's views, paging, counts -----------------------------------------------------
def _views_project(project, multi: bool = False):
    """A project where every rule of the views matters (4 classes, 60 images):

    human and accepted labels; a human label and a run class that name a class removed since; images without
    a prediction; unsure marks (one relabeled since, so no longer unsure); an excluded image; confidences on
    both sides of 0.5 with ties.
    """
    from labeler.jobs import Job

    if multi:
        from labeler.project import set_multi_label

        set_multi_label(project, True)
    project.set_classes(["cat", "dog", "car", "bird"])
    ids = add_images(project, 60)
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4) * 0.6, size=52)
    probs[[4, 9, 20]] = [0.5, 0.3, 0.1, 0.1]  # exactly at the threshold, and tied with each other
    params = {"classes": ["cat", "dog", "car", "bird"], "multi_label": multi}
    with Job.start(project, "label", method="zeroshot", params=params) as job:
        picks = [sorted({int(p.argmax()), *np.flatnonzero(p > 0.3).tolist()}) for p in probs] if multi else None
        if multi:
            picks[7] = []  # a multi-label prediction of no class: unlabeled
        labels.write_predictions(project, job.id, ids[:52], probs, picks)  # ids[52:]: no prediction
    labels.set_human_labels(project, ids[0:6], ["dog"])
    labels.set_human_labels(project, [ids[6], ids[54]], ["bird"])  # bird is removed below: falls through
    labels.accept_pseudo_labels(project, ids[10:18])
    review.mark_unsure(project, [ids[30], ids[31], ids[5], ids[55]])  # clears ids[5]'s human label
    labels.set_human_labels(project, [ids[31]], ["car"])  # labeled since: no longer unsure
    review.exclude_images(project, [ids[40]])
    project.set_classes(["cat", "dog", "car"])
    return ids


def _oracle(project, view: str, threshold: float) -> list[int]:
    """The views as defined, image by image from the final labels (what review_items did before)."""
    conf = {i: s for i, (_, s) in labels.pseudo_top1(project).items()}
    unsure = {int(i) for i in project.get_meta(review.UNSURE_KEY) or []} - {
        r[0] for r in project.db.execute("select image_id from labels")
    }
    out = []
    for it in labels.final_labels(project):
        c = conf.get(it.image_id)
        if view == review.VIEW_REVIEW:
            keep = it.source not in ("human", "accepted") and (it.image_id in unsure or c is None or c < threshold)
        elif view == review.VIEW_UNLABELED:
            keep = not it.classes
        else:
            keep = view == review.VIEW_ALL or view in it.classes
        if keep:
            out.append((c if c is not None else -1.0, it.image_id))
    return [i for _, i in sorted(out)]


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
def test_views_match_their_definition(project, multi):
    ids = _views_project(project, multi=multi)
    views = [review.VIEW_REVIEW, review.VIEW_ALL, review.VIEW_UNLABELED, "cat", "dog", "car"]
    for threshold in (0.0, 0.5, 0.75, 1.0):
        counts = review.review_counts(project, threshold)
        for view in views:
            want = _oracle(project, view, threshold)
            q = review.review_queue(
                project, by="confidence", view=view, threshold=threshold, limit=100, include_labeled=True
            )
            assert [it["image_id"] for it in q.items] == want, (view, threshold)
            assert q.total == len(want) == counts.view_size(view), (view, threshold)
    # the planted cases land where they should
    q = {
        it["image_id"]: it
        for it in review.review_queue(
            project, by="confidence", view=review.VIEW_ALL, limit=100, include_labeled=True
        ).items
    }
    assert ids[40] not in q and len(q) == 59  # excluded
    assert q[ids[6]]["source"] in ("pseudo", None) and q[ids[54]]["labels"] == []  # removed class: falls through
    assert q[ids[0]]["source"] == "human" and q[ids[0]]["confidence"] is not None and q[ids[0]]["labels"] == ["dog"]
    assert q[ids[53]]["confidence"] is None and q[ids[53]]["pseudo"] is None  # no prediction
    assert q[ids[30]]["unsure"] and q[ids[55]]["unsure"] and not q[ids[31]]["unsure"]
    assert q[ids[5]]["unsure"] and q[ids[5]]["source"] != "human"  # marking unsure cleared its human label
    needs = {
        it["image_id"] for it in review.review_queue(project, by="confidence", view=review.VIEW_REVIEW, limit=100).items
    }
    assert {ids[30], ids[53], ids[55]} <= needs and not needs & {ids[0], ids[10], ids[31]}
    assert (ids[4] in needs) is False and ids[9] not in needs  # 0.5 is not below the threshold 0.5


def test_counts_and_histogram_match_the_final_labels(project):
    _views_project(project)
    finals = labels.final_labels(project)
    conf = {i: s for i, (_, s) in labels.pseudo_top1(project).items()}
    for threshold in (0.3, 0.5):
        counts = review.review_counts(project, threshold)
        for row in counts.classes:
            mine = [it for it in finals if row["class"] in it.classes]
            assert row["images"] == len(mine)
            assert row["reviewed"] == sum(it.source in ("human", "accepted") for it in mine)
            low = sum(it.source == "pseudo" and conf.get(it.image_id, 1) < threshold for it in mine)
            assert row["low confidence"] == low, (row, threshold)
        assert counts.total == len(finals) == 59
        ok = {it.image_id for it in finals}
        want, _ = np.histogram([c for i, c in conf.items() if i in ok], bins=10, range=(0.0, 1.0))
        assert [h["images"] for h in counts.histogram] == want.tolist()
        assert counts.histogram[5]["bin"] == "0.5–0.6" and counts.histogram[5]["low"] == 0.5
    empty = review.review_counts(type(project).create(project.root.parent / "empty", ["a", "b"]))
    assert empty.histogram == [] and empty.total == 0


@pytest.mark.parametrize("by", ["confidence", "margin", "entropy"])
def test_pages_concatenate_to_the_whole_ordering(project, by):
    _views_project(project)
    for view in (None, review.VIEW_ALL, review.VIEW_REVIEW, "cat"):
        whole = review.review_queue(project, by=by, view=view, limit=1000, include_labeled=True)
        pages, offset = [], 0
        while True:
            q = review.review_queue(project, by=by, view=view, limit=7, offset=offset, include_labeled=True)
            assert q.total == whole.total
            if not q.items:
                break
            pages += q.items
            offset += 7
        assert pages == whole.items and len(pages) == whole.total, (by, view)
    # the margin ordering of a view is the margin ordering of everything, filtered; unscored images first
    allq = [it["image_id"] for it in review.review_queue(project, by="margin", limit=1000, include_labeled=True).items]
    cat = review.review_queue(project, by="margin", view="cat", limit=1000, include_labeled=True).items
    assert [it["image_id"] for it in cat] == [i for i in allq if i in {it["image_id"] for it in cat}]


def test_queue_defaults_and_new_options(project):
    ids = _views_project(project)
    q = review.review_queue(project)  # the CLI's and Explore's queue: margin, predicted images, no human labels
    assert q.by == "margin" and q.view is None and q.offset == 0
    human = {it.image_id for it in labels.final_labels(project) if it.source == "human"}
    whole = review.review_queue(project, limit=1000).items
    assert not human & {it["image_id"] for it in whole} and len(whole) == q.total == 51 - len(human) == 45
    assert q.items == whole[:45] and len(review.review_queue(project, limit=10).items) == 10
    assert all(it["confidence"] is not None for it in whole)  # no prediction: not in the queue without a view
    assert set(q.to_dict()) >= {"by", "run_id", "total", "features", "note", "items"}
    assert set(q.items[0]) >= {"image_id", "score", "label", "source", "pseudo", "confidence", "margin", "entropy",
                               "sha256", "path", "rel_path"}  # fmt: skip
    assert review.review_queue(project, by="confidence", view="cat", offset=1000).items == []
    with pytest.raises(InvalidInputError, match="not a class or a review view"):
        review.review_queue(project, by="confidence", view="zebra")
    with pytest.raises(InvalidInputError, match="offset"):
        review.review_queue(project, offset=-1)
    with pytest.raises(InvalidInputError, match="threshold"):
        review.review_queue(project, view=review.VIEW_REVIEW, threshold=1.5)
    assert ids  # views work without a run for the confidence order; the orderings need one
    fresh = type(project).create(project.root.parent / "norun", ["a", "b"])
    add_images(fresh, 3)
    assert review.review_queue(fresh, by="confidence", view=review.VIEW_ALL).total == 3
    with pytest.raises(NotReadyError):
        review.review_queue(fresh, view=review.VIEW_ALL)


def test_cli_queue_views_and_paging(project, capsys):
    import json

    from labeler.cli import main

    _views_project(project)
    root = str(project.root)
    want = _oracle(project, review.VIEW_REVIEW, 0.6)
    args = ["queue", root, "--by", "confidence", "--view", review.VIEW_REVIEW, "--threshold", "0.6", "--json"]
    assert main([*args, "--limit", "5", "--offset", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [it["image_id"] for it in out["items"]] == want[5:10] and out["total"] == len(want)
    assert out["view"] == review.VIEW_REVIEW and out["offset"] == 5 and {"by", "run_id", "note"} <= set(out)
    assert main(["queue", root, "--by", "confidence", "--view", "cat", "--include-labeled", "--limit", "3"]) == 0
    text = capsys.readouterr().out
    assert "view 'cat'" in text and f"3 of {len(_oracle(project, 'cat', 0.5))} images" in text
