"""Predictions, pseudo-labels and human decisions (labeler.labels)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from labeler.errors import InvalidInputError, NotReadyError
from labeler.jobs import Job
from labeler.labels import (
    accept_pseudo_labels,
    active_run,
    clear_labels,
    final_labels,
    read_predictions,
    set_active_run,
    set_human_labels,
    write_predictions,
)
from labeler.project import Project
from labeler.review import label_counts
from store import now


def add_images(project, root, rel_paths, folder_labels=None, status="ok"):
    """Insert one images row per rel path (with a real small file under ``root``); returns the ids."""
    ids = []
    for k, rel in enumerate(rel_paths):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = f"image {rel} {k}".encode()
        path.write_bytes(data)
        row = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "path": str(path),
            "rel_path": rel,
            "root": str(root),
            "folder_label": folder_labels[k] if folder_labels else None,
            "width": 32,
            "height": 24,
            "format": "PNG",
            "bytes": len(data),
            "status": status,
            "added_at": now(),
        }
        with project.db.conn:
            ids.append(project.db["images"].insert(row).last_pk)
    return ids


def label_run(project, classes, ids, probs, multi=False, labels=None, status="done"):
    """A labeling run with the given predictions; returns its id."""
    job = Job.start(project, "label", method="zeroshot", params={"classes": classes, "multi_label": multi})
    write_predictions(project, job.id, ids, np.asarray(probs, dtype=np.float32), labels)
    job.finish(status)
    return job.id


def onehot(idx, num_classes=3, hi=0.8):
    probs = np.full((len(idx), num_classes), (1 - hi) / (num_classes - 1), dtype=np.float32)
    probs[np.arange(len(idx)), idx] = hi
    return probs


def by_id(project, **kw):
    return {it.image_id: it for it in final_labels(project, **kw)}


@pytest.fixture
def imgs(project, tmp_path):
    return add_images(project, tmp_path / "src", [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(3)])


# --- predictions -----------------------------------------------------------------------------------------
def test_write_and_read_predictions_round_trip(project, imgs):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=len(imgs)).astype(np.float32)
    run_id = label_run(project, ["cat", "dog", "car"], imgs, probs)
    ids, got, classes = read_predictions(project, run_id)
    assert ids.tolist() == imgs and classes == ["cat", "dog", "car"]
    assert got.dtype == np.float32 and np.array_equal(got, probs)
    rows = project.db.execute(
        "select image_id, class_idx, score, labels from predictions where run_id = ? order by image_id", [run_id]
    ).fetchall()
    assert [r[1] for r in rows] == probs.argmax(1).tolist()
    assert np.allclose([r[2] for r in rows], probs.max(1))
    assert all(r[3] is None for r in rows)
    # A rewrite of the same image replaces its row.
    write_predictions(project, run_id, imgs[:1], onehot([2]))
    ids2, got2, _ = read_predictions(project, run_id)
    assert len(ids2) == len(imgs) and got2[0].argmax() == 2


def test_write_predictions_validates(project, imgs):
    job = Job.start(project, "label", method="zeroshot", params={"classes": ["cat", "dog", "car"]})
    with pytest.raises(InvalidInputError, match="shape"):
        write_predictions(project, job.id, imgs[:2], np.ones((2, 4)))
    with pytest.raises(InvalidInputError, match="shape"):
        write_predictions(project, job.id, imgs[:3], np.ones((2, 3)))
    bad = onehot([0, 1])
    bad[1, 2] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        write_predictions(project, job.id, imgs[:2], bad)
    with pytest.raises(InvalidInputError, match="do not exist"):
        write_predictions(project, job.id, [imgs[0], 9999], onehot([0, 1]))
    with pytest.raises(InvalidInputError, match="duplicates"):
        write_predictions(project, job.id, [imgs[0], imgs[0]], onehot([0, 1]))
    with pytest.raises(InvalidInputError, match="single-label"):
        write_predictions(project, job.id, imgs[:1], onehot([0]), labels=[[0]])
    with pytest.raises(InvalidInputError, match="no run"):
        write_predictions(project, 12345, imgs[:1], onehot([0]))
    no_classes = Job.start(project, "label", method="zeroshot", params={})
    with pytest.raises(InvalidInputError, match="classes"):
        write_predictions(project, no_classes.id, imgs[:1], onehot([0]))
    multi = Job.start(project, "label", params={"classes": ["cat", "dog", "car"], "multi_label": True})
    with pytest.raises(InvalidInputError, match="multi-label"):
        write_predictions(project, multi.id, imgs[:1], onehot([0]))
    with pytest.raises(InvalidInputError, match="outside"):
        write_predictions(project, multi.id, imgs[:1], onehot([0]), labels=[[0, 3]])
    assert project.db.execute("select count(*) from predictions").fetchone()[0] == 0


# --- active run ------------------------------------------------------------------------------------------
def test_active_run_and_switching(project, imgs):
    assert active_run(project) is None
    first = label_run(project, ["cat", "dog", "car"], imgs, onehot([0] * 6))
    second = label_run(project, ["cat", "dog", "car"], imgs, onehot([1] * 6))
    label_run(project, ["cat", "dog", "car"], imgs, onehot([2] * 6), status="failed")
    features = Job.start(project, "features", params={"classes": ["x"]})
    features.finish("done")
    assert active_run(project)["id"] == second
    assert {it.label for it in final_labels(project)} == {"dog"}

    assert set_active_run(project, first)["id"] == first
    assert active_run(project)["id"] == first
    assert {it.label for it in final_labels(project)} == {"cat"}
    assert {it.run_id for it in final_labels(project)} == {first}
    # final_labels can also read another run's pseudo-labels without switching.
    assert {it.label for it in final_labels(project, run_id=second)} == {"dog"}

    for bad in (features.id, 999):
        with pytest.raises(InvalidInputError):
            set_active_run(project, bad)
    failed = project.db.execute("select id from runs where status = 'failed'").fetchone()[0]
    with pytest.raises(InvalidInputError, match="failed"):
        set_active_run(project, failed)
    assert set_active_run(project, None)["id"] == second
    # A chosen run that no longer qualifies falls back to the newest.
    set_active_run(project, first)
    with project.db.conn:
        project.db.execute("update runs set status = 'cancelled' where id = ?", [first])
    assert active_run(project)["id"] == second


# --- precedence ------------------------------------------------------------------------------------------
def test_precedence_human_over_accepted_over_pseudo(project, imgs):
    run = label_run(project, ["cat", "dog", "car"], imgs, onehot([0, 0, 0, 1, 1, 1], hi=0.9))
    a, b, c, d, e, f = imgs
    assert set_human_labels(project, [a, d], "car") == 2
    assert accept_pseudo_labels(project, [a, b, c]) == 2  # a has a human label: skipped
    labels = by_id(project)
    assert (labels[a].classes, labels[a].source, labels[a].score, labels[a].run_id) == (["car"], "human", None, None)
    assert (labels[b].label, labels[b].source, labels[b].run_id) == ("cat", "accepted", run)
    assert labels[b].score == pytest.approx(0.9)
    assert (labels[d].label, labels[d].source) == ("car", "human")
    assert (labels[e].label, labels[e].source, labels[e].run_id) == ("dog", "pseudo", run)
    assert labels[e].score == pytest.approx(0.9)

    # A newer run changes pseudo-labels, not accepted or human ones.
    label_run(project, ["cat", "dog", "car"], imgs, onehot([2] * 6))
    labels = by_id(project)
    assert [labels[i].label for i in imgs] == ["car", "cat", "cat", "car", "car", "car"]
    assert [labels[i].source for i in imgs] == ["human", "accepted", "accepted", "human", "pseudo", "pseudo"]
    # A human label overrides an accepted one.
    set_human_labels(project, b, "dog")
    assert (by_id(project)[b].label, by_id(project)[b].source) == ("dog", "human")

    first = final_labels(project)[0]
    assert first.sha256 and first.path.endswith("cat/0.png") and first.rel_path == "cat/0.png"
    assert (first.width, first.height, first.folder_label) == (32, 24, None)


def test_accept_never_overwrites_human_and_respects_filters(project, imgs):
    scores = [0.9, 0.5, 0.95, 0.4, 0.99, 0.6]
    probs = np.array([[s, 1 - s, 0.0] for s in scores], dtype=np.float32)
    first = label_run(project, ["cat", "dog", "car"], imgs, probs)
    set_human_labels(project, imgs[0], "dog")
    assert accept_pseudo_labels(project, min_score=0.8) == 2  # imgs[2], imgs[4]; imgs[0] is human
    rows = dict(project.db.execute("select image_id, source from labels").fetchall())
    assert rows == {imgs[0]: "human", imgs[2]: "accepted", imgs[4]: "accepted"}
    assert by_id(project)[imgs[0]].classes == ["dog"]

    # Accepting everything from another run still leaves the human label alone and replaces accepted ones.
    second = label_run(project, ["cat", "dog", "car"], imgs, onehot([2] * 6))
    assert accept_pseudo_labels(project) == 5
    labels = by_id(project)
    assert labels[imgs[0]].classes == ["dog"] and labels[imgs[0]].source == "human"
    assert all(labels[i].label == "car" and labels[i].run_id == second for i in imgs[1:])
    # An explicit run and an image subset.
    clear_labels(project, None, sources=["accepted"])
    assert accept_pseudo_labels(project, image_ids=[imgs[1], imgs[2]], run_id=first) == 2
    labels = by_id(project)
    assert [labels[i].source for i in imgs] == ["human", "accepted", "accepted", "pseudo", "pseudo", "pseudo"]
    assert labels[imgs[1]].label == "cat" and labels[imgs[3]].label == "car"


def test_accept_needs_a_run(project, imgs):
    with pytest.raises(NotReadyError):
        accept_pseudo_labels(project)


def test_set_human_labels_validates(project, imgs):
    with pytest.raises(InvalidInputError, match="not a class"):
        set_human_labels(project, imgs[0], "horse")
    with pytest.raises(InvalidInputError, match="single-label"):
        set_human_labels(project, imgs[0], ["cat", "dog"])
    with pytest.raises(InvalidInputError, match="do not exist"):
        set_human_labels(project, [imgs[0], 777], "cat")
    with pytest.raises(InvalidInputError, match="no class"):
        set_human_labels(project, imgs[0], [])
    assert set_human_labels(project, imgs[:2], "CAT") == 2  # matched ignoring case
    assert [by_id(project)[i].classes for i in imgs[:2]] == [["cat"], ["cat"]]


def test_clear_labels_by_source_falls_back_to_pseudo(project, imgs):
    label_run(project, ["cat", "dog", "car"], imgs, onehot([1] * 6))
    set_human_labels(project, imgs[:2], "car")
    accept_pseudo_labels(project)
    assert clear_labels(project, imgs, sources=["accepted"]) == 4
    assert [by_id(project)[i].source for i in imgs] == ["human"] * 2 + ["pseudo"] * 4
    assert clear_labels(project, [imgs[0]]) == 1
    labels = by_id(project)
    assert (labels[imgs[0]].label, labels[imgs[0]].source) == ("dog", "pseudo")
    assert labels[imgs[1]].source == "human"
    with pytest.raises(InvalidInputError):
        clear_labels(project, imgs, sources=["pseudo"])


def test_removed_classes_are_dropped(project, imgs):
    # The run was made with an older class order: its indices map through its own list.
    label_run(project, ["car", "cat", "dog"], imgs, onehot([0, 1, 2, 0, 1, 2]))
    set_human_labels(project, imgs[3], "car")
    assert [by_id(project)[i].label for i in imgs] == ["car", "cat", "dog", "car", "cat", "dog"]
    project.set_classes(["cat", "dog", "bird"])
    labels = by_id(project)
    # The pseudo "car" is gone; the human "car" label falls through to the (dropped) pseudo one.
    assert [labels[i].label for i in imgs] == [None, "cat", "dog", None, "cat", "dog"]
    assert labels[imgs[0]].source is None and labels[imgs[0]].score is None and labels[imgs[0]].run_id is None
    counts = label_counts(project)
    assert counts["unlabeled"] == 2 and counts["pseudo"] == 4 and counts["human"] == 0
    assert counts["per_class"] == {"cat": 2, "dog": 2, "bird": 0}


def test_multi_label_pseudo_and_human(tmp_path):
    project = Project.create(tmp_path / "multi", ["cat", "dog", "car"], multi_label=True)
    ids = add_images(project, tmp_path / "src", ["a.png", "b.png", "c.png"])
    probs = np.array([[0.6, 0.7, 0.1], [0.9, 0.1, 0.8], [0.2, 0.3, 0.1]], dtype=np.float32)
    run = label_run(project, ["cat", "dog", "car"], ids, probs, multi=True, labels=[[0, 1], [2, 0], []])
    rows = project.db.execute("select labels from predictions where run_id = ? order by image_id", [run]).fetchall()
    assert [r[0] for r in rows] == ["[0, 1]", "[0, 2]", "[]"]
    labels = by_id(project)
    assert labels[ids[0]].classes == ["dog", "cat"]  # top-1 first
    assert labels[ids[1]].classes == ["cat", "car"]
    assert labels[ids[2]].classes == [] and labels[ids[2]].source is None
    set_human_labels(project, ids[2], ["car", "Dog", "car"])
    assert by_id(project)[ids[2]].classes == ["car", "dog"]
    assert accept_pseudo_labels(project) == 2
    assert by_id(project)[ids[0]].classes == ["dog", "cat"] and by_id(project)[ids[0]].source == "accepted"
    counts = label_counts(project)
    assert counts["per_class"] == {"cat": 2, "dog": 2, "car": 2}
    assert (counts["human"], counts["accepted"], counts["pseudo"], counts["unlabeled"]) == (1, 2, 0, 0)


def test_label_counts_and_missing_images(project, imgs, tmp_path):
    gone = add_images(project, tmp_path / "src", ["gone.png"], status="missing")
    label_run(project, ["cat", "dog", "car"], imgs + gone, onehot([0, 0, 1, 1, 2, 2, 0]))
    set_human_labels(project, imgs[0], "dog")
    accept_pseudo_labels(project, imgs[1:3])
    assert gone[0] not in by_id(project)
    counts = label_counts(project)
    assert counts == {
        "human": 1,
        "accepted": 2,
        "pseudo": 3,
        "unlabeled": 0,
        "total": 6,
        "per_class": {"cat": 1, "dog": 3, "car": 2},
    }
    # Only ok images are accepted.
    assert project.db.execute("select count(*) from labels where image_id = ?", gone).fetchone()[0] == 0


def test_final_labels_is_one_query(project, tmp_path):
    ids = add_images(project, tmp_path / "src", [f"{i}.png" for i in range(300)])
    label_run(project, ["cat", "dog", "car"], ids, onehot([i % 3 for i in range(300)]))
    set_human_labels(project, ids[:100], "car")
    statements = []
    project.db.conn.set_trace_callback(statements.append)
    try:
        items = final_labels(project)
    finally:
        project.db.conn.set_trace_callback(None)
    assert len(items) == 300
    joins = [s for s in statements if "from images" in s]
    assert len(joins) == 1 and len(statements) < 30, statements  # not one per image
    subset = final_labels(project, image_ids=[ids[5], ids[150]])
    assert [(it.image_id, it.source) for it in subset] == [(ids[5], "human"), (ids[150], "pseudo")]
