"""Multi-label review (issue 15): pseudo-label sets that follow per-class thresholds, live counts at candidate
thresholds, the near-threshold queue, one-class add/remove/toggle and their undo — on planted scores, each checked
against a brute-force pass image by image."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labeler.errors import InvalidInputError
from labeler.history import history, undo
from labeler.ingest import import_sources
from labeler.jobs import Job
from labeler.labels import (
    accept_pseudo_labels,
    apply_thresholds,
    final_labels,
    set_human_labels,
    write_predictions,
)
from labeler.project import Project
from labeler.review import (
    DEFAULT_THRESHOLD,
    class_thresholds,
    edit_label,
    near_scores,
    near_threshold_queue,
    review_counts,
    review_queue,
    set_image_labels,
    set_thresholds,
    threshold_counts,
    toggle_label,
)

from .conftest import class_folders

CLASSES = ["cat", "dog", "ship", "bird"]


def _planted(n: int, seed: int = 0) -> tuple[np.ndarray, list[list[int]]]:
    """Independent per-class scores (not a softmax) and the run's own sets (score ≥ 0.5, top-1 always in)."""
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0, 1, size=(n, len(CLASSES))).round(3).astype(np.float32)
    sets = [sorted({int(np.argmax(r))} | {int(i) for i in np.flatnonzero(r >= 0.5)}) for r in probs]
    return probs, sets


@pytest.fixture
def ml(tmp_path):
    """A multi-label project of 24 images (one without a prediction) and a run with planted scores."""
    p = Project.create(tmp_path / "proj", CLASSES, multi_label=True)
    import_sources(p, [str(class_folders(tmp_path / "imgs", 6, CLASSES))])
    ids = [im["id"] for im in p.images()][:-1]
    probs, sets = _planted(len(ids))
    job = Job.start(p, "label", method="zeroshot", params={"classes": list(CLASSES), "multi_label": True})
    write_predictions(p, job.id, ids, probs, sets)
    job.finish("done")
    p.planted = dict(zip(ids, probs.astype(np.float64), strict=True))  # type: ignore[attr-defined]
    p.run_sets = dict(zip(ids, sets, strict=True))  # type: ignore[attr-defined]
    yield p
    p.close()


def brute_sets(p) -> dict[int, set[str]]:
    """Each image's final label set, image by image: a stored label wins; else score ≥ threshold (saved), or the
    run's own set for a class without a saved threshold."""
    saved = p.thresholds()
    stored = {
        i: [c for c in json.loads(cl) if c in CLASSES] for i, cl in p.db.execute("select image_id, classes from labels")
    }
    out = {}
    for im in p.images():
        i = im["id"]
        if stored.get(i):
            out[i] = set(stored[i])
        elif i in p.planted:
            out[i] = {
                c for k, c in enumerate(CLASSES) if (p.planted[i][k] >= saved[c] if c in saved else k in p.run_sets[i])
            }
        else:
            out[i] = set()
    return out


def final_sets(p) -> dict[int, set[str]]:
    return {it.image_id: set(it.classes) for it in final_labels(p)}


def test_apply_thresholds_on_arrays():
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.3, 0.2], [0.5, 0.5, 0.49]])
    own = [[0], [1], [0, 1]]
    t = np.array([0.5, 0.5, np.nan])  # the third class keeps the run's decision
    assert apply_thresholds(probs, own, t) == [[0], [], [0, 1]]
    assert apply_thresholds(probs, own, np.array([0.0, 0.25, 0.2])) == [[0, 2], [1, 0, 2], [0, 1, 2]]
    got = apply_thresholds(np.array([[0.2, 0.7, 0.6]]), [[]], np.array([0.1, 0.1, 0.1]))
    assert got == [[1, 0, 2]]  # the best-scoring class first
    with pytest.raises(InvalidInputError, match="thresholds"):
        apply_thresholds(probs, own, np.array([0.5, 1.5, 0.5]))
    with pytest.raises(InvalidInputError, match="shape|\\(N, C\\)"):
        apply_thresholds(probs, own, np.array([0.5, 0.5]))


def test_thresholds_change_the_sets_everywhere_and_counts_match(ml):
    assert final_sets(ml) == brute_sets(ml)  # no threshold: the run's own sets
    before = final_sets(ml)
    set_thresholds(ml, {"cat": 0.3, "dog": 0.8})
    assert final_sets(ml) == brute_sets(ml) != before
    i = next(i for i, v in ml.planted.items() if 0.3 <= v[0] < 0.5 and 0 not in ml.run_sets[i])
    assert "cat" in final_sets(ml)[i]  # a score of 0.3–0.5 now carries cat
    want = brute_sets(ml)
    counts = review_counts(ml, 0.5)
    assert {r["class"]: r["images"] for r in counts.classes} == {c: sum(c in s for s in want.values()) for c in CLASSES}
    assert counts.unlabeled == sum(not s for s in want.values())
    for view in ["cat", "dog", "unlabeled"]:  # the views read the same sets
        q = review_queue(ml, by="confidence", view=view, limit=1000, include_labeled=True)
        expect = {i for i, s in want.items() if (view in s if view in CLASSES else not s)}
        assert {it["image_id"] for it in q.items} == expect and q.total == len(expect)
        assert all(set(it["labels"]) == want[it["image_id"]] for it in q.items)
    # accepting copies the set as the thresholds make it; human labels win over it
    ids = sorted(ml.planted)[:4]
    accept_pseudo_labels(ml, ids)
    set_human_labels(ml, ids[:1], ["bird"])
    set_thresholds(ml, {"cat": 1.0, "dog": 0.0, "ship": 0.0, "bird": 1.0})
    got = final_sets(ml)
    assert got == brute_sets(ml) and got[ids[0]] == {"bird"} and got[ids[1]] == want[ids[1]]
    assert all(s == {"dog", "ship"} for i, s in got.items() if i in ml.planted and i not in ids)


def test_threshold_counts_equal_a_brute_force_pass(ml):
    set_human_labels(ml, sorted(ml.planted)[:3], ["ship", "cat"])
    for cand in ({}, {"cat": 0.0}, {"cat": 0.25, "dog": 0.731, "bird": 1.0}, {"ship": 0.5}):
        got = threshold_counts(ml, cand)
        set_thresholds(ml, {**class_thresholds(ml), **cand}, replace=True)
        want = brute_sets(ml)
        assert {c: r["images"] for c, r in got.items()} == {c: sum(c in s for s in want.values()) for c in CLASSES}
        assert {r["class"]: r["images"] for r in review_counts(ml).classes} == {c: r["images"] for c, r in got.items()}
        assert all(r["decided"] == 3 if c in ("ship", "cat") else r["decided"] == 0 for c, r in got.items())
    assert threshold_counts(ml)["cat"]["threshold"] == 0.25  # what was saved last
    with pytest.raises(InvalidInputError, match="unknown class"):
        threshold_counts(ml, {"frog": 0.2})
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        threshold_counts(ml, {"cat": 2})


def test_near_threshold_queue_order_and_margin(ml):
    set_thresholds(ml, {"cat": 0.4})
    t = np.array([class_thresholds(ml)[c] for c in CLASSES])
    assert t.tolist() == [0.4, DEFAULT_THRESHOLD, DEFAULT_THRESHOLD, DEFAULT_THRESHOLD]
    labeled = sorted(ml.planted)[:2]
    set_human_labels(ml, labeled, ["dog"])
    dist = {i: float(np.min(np.abs(v - t))) for i, v in ml.planted.items() if i not in labeled}
    expect = sorted((d, i) for i, d in dist.items() if d <= 0.05 + 1e-12)
    q = near_threshold_queue(ml, margin=0.05, limit=1000)
    assert [it["image_id"] for it in q.items] == [i for _, i in expect] and q.total == len(expect) > 0
    first = q.items[0]
    k = int(np.argmin(np.abs(ml.planted[first["image_id"]] - t)))
    assert first["near"] == CLASSES[k] and first["distance"] == pytest.approx(expect[0][0], abs=1e-6)
    page = near_threshold_queue(ml, margin=0.05, limit=2, offset=1)
    assert [it["image_id"] for it in page.items] == [i for _, i in expect[1:3]]
    everyone = near_threshold_queue(ml, margin=1.0, limit=1000, include_labeled=True)
    assert everyone.total == len(ml.planted)
    d, k = near_scores(np.array([[0.1, 0.9]]), np.array([np.nan, 0.8]))
    assert d.tolist() == pytest.approx([0.1]) and k.tolist() == [1]


def _labels_rows(p) -> list:
    return [list(r) for r in p.db.execute("select * from labels order by image_id")]


def test_bulk_add_remove_and_toggle_undo_exactly(ml):
    ids = sorted(ml.planted)[:8]
    accept_pseudo_labels(ml, ids[:2])
    set_human_labels(ml, ids[2:3], ["cat", "dog"])
    rows, sets = _labels_rows(ml), final_sets(ml)
    out = edit_label(ml, ids, "bird", "add")
    assert out["changed"] == 8 == out["selected"]  # those that had bird as a pseudo-label now have it by a person
    assert all(it.source == "human" for it in final_labels(ml, ids))
    got = final_sets(ml)
    assert all(got[i] == sets[i] | {"bird"} for i in ids) and all(got[i] == sets[i] for i in got if i not in ids)
    assert history(ml, 1)[0]["action"] == "add bird to 8 images"
    undo(ml)
    assert _labels_rows(ml) == rows and final_sets(ml) == sets  # one undo takes back every label set
    # remove: images without the class are left alone; the only class of an image is never removed
    have = [i for i in ids if "dog" in sets[i] and len(sets[i]) > 1]
    out = edit_label(ml, ids, "dog", "remove")
    assert sorted(out["image_ids"]) == sorted(have) and all("dog" not in final_sets(ml)[i] for i in have)
    undo(ml)
    assert _labels_rows(ml) == rows
    only = next(i for i in ids if len(sets[i]) == 1)  # removing the only class: "none of these", undoable
    out = edit_label(ml, [only], next(iter(sets[only])), "remove")
    it = final_labels(ml, [only])[0]
    assert out["changed"] == 1 and it.classes == [] and it.source == "human" and it.labeled
    undo(ml)
    assert _labels_rows(ml) == rows
    # toggle: the human label is the current final set with one class flipped
    target = ids[5]
    extra = next(c for c in CLASSES if c not in sets[target])
    toggle_label(ml, target, extra)
    it = final_labels(ml, [target])[0]
    assert set(it.classes) == sets[target] | {extra} and it.source == "human"
    toggle_label(ml, target, extra)
    assert set(final_labels(ml, [target])[0].classes) == sets[target]
    undo(ml)
    undo(ml)
    assert _labels_rows(ml) == rows
    assert set_image_labels(ml, target, sorted(sets[target]))["changed"] == 0  # the same set: nothing written
    res = set_image_labels(ml, target, [extra])
    assert res["added"] == [extra] and set(res["removed"]) == sets[target]
    assert set_image_labels(ml, target, [])["removed"] == [extra]  # no box ticked: none of the classes
    assert final_labels(ml, [target])[0].classes == [] and set_image_labels(ml, target, [])["changed"] == 0
    with pytest.raises(InvalidInputError, match="not a class"):
        edit_label(ml, ids, "frog", "add")


def test_threshold_changes_undo(ml):
    before = final_sets(ml)
    set_thresholds(ml, {"cat": 0.2})
    set_thresholds(ml, {"cat": 0.9, "dog": 0.1})
    assert history(ml, 1)[0]["action"].startswith("set thresholds cat 0.90")
    undo(ml)
    assert ml.thresholds() == {"cat": 0.2}
    undo(ml)
    assert ml.thresholds() == {} and final_sets(ml) == before
    assert set_thresholds(ml, {}) == {} and not history(ml)  # nothing changed: no entry


def test_single_label_projects_refuse_and_ignore_thresholds(tmp_path):
    p = Project.create(tmp_path / "s", CLASSES)
    import_sources(p, [str(class_folders(tmp_path / "imgs", 2, CLASSES))])
    ids = [im["id"] for im in p.images()]
    job = Job.start(p, "label", method="zeroshot", params={"classes": list(CLASSES), "multi_label": False})
    write_predictions(p, job.id, ids, _planted(len(ids))[0])
    job.finish("done")
    before = final_sets(p)
    with pytest.raises(InvalidInputError, match="single-label"):
        set_thresholds(p, {"cat": 0.1})
    with pytest.raises(InvalidInputError, match="single-label"):
        edit_label(p, ids[:2], "cat", "add")
    p.set_thresholds({"cat": 0.0})  # saved by other means: a single-label run ignores it
    assert final_sets(p) == before
    p.close()


def test_thresholds_command(ml, capsys):
    from labeler.cli import main

    root = str(ml.root)
    assert main(["thresholds", root, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["saved"] == {} and [r["class"] for r in data["classes"]] == CLASSES
    assert all(r["threshold"] == DEFAULT_THRESHOLD and not r["saved"] for r in data["classes"])
    assert main(["thresholds", root, "DOG=0.3", "cat=0.75", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["saved"] == {"dog": 0.3, "cat": 0.75} and data["undo"].startswith("set thresholds")
    want = brute_sets(ml)
    rows = {r["class"]: r for r in data["classes"]}
    assert rows["dog"]["images"] == sum("dog" in s for s in want.values()) and rows["dog"]["saved"]
    assert main(["thresholds", root]) == 0
    assert "0.30" in capsys.readouterr().out
    assert main(["undo", root]) == 0
    assert ml.thresholds() == {}
    assert main(["thresholds", root, "ship=0.2", "--clear"]) == 0
    assert ml.thresholds() == {"ship": 0.2}
    capsys.readouterr()
    assert main(["thresholds", root, "ship=high"]) != 0
    assert "CLASS=VALUE" in capsys.readouterr().err
    assert main(["thresholds", root, "frog=0.2"]) != 0


def test_none_of_the_classes_is_a_human_label(ml):
    """An empty human set: a decision ("none of these") that wins over accepted and pseudo-labels, is not
    unlabeled in counts and views, undoes and clears — distinct from a label whose classes were all removed."""
    from labeler.labels import clear_labels
    from labeler.review import label_counts

    ids = sorted(ml.planted)[:3]
    accept_pseudo_labels(ml, ids[:1])
    before_rows, before = _labels_rows(ml), final_sets(ml)
    unlabeled = review_counts(ml).unlabeled
    assert set_human_labels(ml, ids[:2], []) == 2
    assert history(ml, 1)[0]["action"] == "label 2 images as none of the classes"
    got = {it.image_id: it for it in final_labels(ml, ids)}
    for i in ids[:2]:  # human > accepted > pseudo, with no class
        assert got[i].classes == [] and got[i].source == "human" and got[i].label is None and got[i].labeled
    assert got[ids[2]].source == "pseudo" and set(got[ids[2]].classes) == before[ids[2]]
    counts = label_counts(ml)
    assert counts["human"] == 2 and review_counts(ml).unlabeled == unlabeled  # decided, not unlabeled
    q = review_queue(ml, by="confidence", view="unlabeled", limit=1000, include_labeled=True)
    assert not {it["image_id"] for it in q.items} & set(ids[:2])
    q = review_queue(ml, by="confidence", view="all images", limit=1000, include_labeled=True)
    shown = {it["image_id"]: it for it in q.items}
    assert shown[ids[0]]["labels"] == [] and shown[ids[0]]["source"] == "human"
    for c in CLASSES:  # in no class's view or count
        q = review_queue(ml, by="confidence", view=c, limit=1000, include_labeled=True)
        assert not {it["image_id"] for it in q.items} & set(ids[:2])
        assert threshold_counts(ml)[c]["decided"] == 0
    undo(ml)
    assert _labels_rows(ml) == before_rows and final_sets(ml) == before
    set_human_labels(ml, ids[:1], [])
    assert clear_labels(ml, ids[:1]) == 1 and final_labels(ml, ids[:1])[0].source == "pseudo"
    # a label whose classes were all removed since falls through; an empty one stays "none of these"
    set_human_labels(ml, ids[0], ["bird"])
    set_human_labels(ml, ids[1], [])
    ml.set_classes(["cat", "dog", "ship"])
    assert final_labels(ml, ids[:1])[0].source == "pseudo"
    assert final_labels(ml, ids[1:2])[0].source == "human"


def test_single_label_projects_refuse_an_empty_label(tmp_path):
    p = Project.create(tmp_path / "s", CLASSES)
    import_sources(p, [str(class_folders(tmp_path / "imgs", 1, CLASSES))])
    ids = [im["id"] for im in p.images()]
    with pytest.raises(InvalidInputError, match="no class given: this project is single-label.*cannot be set to none"):
        set_human_labels(p, ids[:1], [])
    with pytest.raises(InvalidInputError, match="single-label"):
        set_image_labels(p, ids[0], [])
    assert p.db.execute("select count(*) from labels").fetchone()[0] == 0
    p.close()


def test_cdul_human_label_sets_take_none_of_the_classes_as_all_zero(ml):
    from labeler.methods.cdul import human_label_sets

    ids = sorted(ml.planted)[:4]
    set_human_labels(ml, ids[0], ["dog", "bird"])
    set_human_labels(ml, ids[1], [])
    accept_pseudo_labels(ml, ids[2:3])
    sets, has = human_label_sets(ml, ids, CLASSES)
    assert has.tolist() == [True, True, True, False]
    assert sets[0].tolist() == [0, 1, 0, 1] and sets[1].tolist() == [0, 0, 0, 0] and sets[3].sum() == 0
    # a label whose classes are all outside the list decides nothing there
    _, has = human_label_sets(ml, ids, ["cat", "ship"])
    assert has[0] == (bool({"cat", "ship"} & set(final_labels(ml, ids[:1])[0].classes)))
