"""Issue 12, review speed: the counts the Review and Explore steps show on every refresh come from grouped,
cached queries (:func:`labeler.review.label_groups`), not from a pass over the images — and they must equal
what a pass image by image gives, after every kind of edit, in single- and multi-label projects."""

from __future__ import annotations

import numpy as np
import pytest

from labeler.evaluate import classification_report, confusion_matrix, evaluate, match_folder_labels
from labeler.history import undo
from labeler.ingest import import_sources
from labeler.jobs import Job
from labeler.labels import (
    accept_pseudo_labels,
    active_run,
    clear_labels,
    final_labels,
    set_human_labels,
    write_predictions,
)
from labeler.project import Project
from labeler.review import (
    HIST_BINS,
    exclude_images,
    explore_counts,
    include_images,
    label_counts,
    label_groups,
    mark_unsure,
    review_counts,
    unsure_ids,
)

from .conftest import class_folders

CLASSES = ["cat", "dog", "ship", "bird"]


def _project(tmp_path, multi: bool) -> Project:
    p = Project.create(tmp_path / "proj", CLASSES, multi_label=multi)
    import_sources(p, [str(class_folders(tmp_path / "imgs", 6, CLASSES[:3] + ["frog"]))])  # frog: no class
    _label_run(p, seed=0)
    return p


def _label_run(p: Project, seed: int) -> int:
    """A done label run with random predictions (every image but the last has one)."""
    multi = p.multi_label
    ids = [im["id"] for im in p.images()][:-1]
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(len(CLASSES), 0.5), size=len(ids)).astype(np.float32)
    probs[0] = [1.0, 0, 0, 0]  # a confidence of exactly 1: the histogram's last, closed bin
    labels = [sorted({int(np.argmax(r))} | {int(i) for i in np.flatnonzero(r > 0.3)}) for r in probs] if multi else None
    job = Job.start(p, "label", method="zeroshot", params={"classes": list(CLASSES), "multi_label": multi})
    write_predictions(p, job.id, ids, probs, labels)
    job.finish("done")
    return job.id


# --- references: image by image, as the code did before ---------------------------------------------------
def ref_review_counts(p: Project, threshold: float) -> dict:
    run = active_run(p)
    scores = {}
    if run is not None:
        scores = dict(p.db.execute("select image_id, score from predictions where run_id = ?", [run["id"]]))
    unsure = unsure_ids(p)
    out = {"total": 0, "needs_review": 0, "unlabeled": 0}
    rows = {c: {"class": c, "images": 0, "reviewed": 0, "low confidence": 0} for c in p.classes}
    conf = []
    for it in final_labels(p):
        s = scores.get(it.image_id)
        decided = it.source in ("human", "accepted")
        low = s is not None and s < threshold
        out["total"] += 1
        out["unlabeled"] += not it.classes
        out["needs_review"] += not decided and (it.image_id in unsure or s is None or low)
        for c in it.classes:
            rows[c]["images"] += 1
            rows[c]["reviewed"] += decided
            rows[c]["low confidence"] += not decided and low
        if s is not None:
            conf.append(s)
    hist, edges = np.histogram(conf, HIST_BINS, range=(0, 1))
    out["classes"] = list(rows.values())
    out["histogram"] = [
        {"bin": f"{edges[k]:.1f}–{edges[k + 1]:.1f}", "low": float(edges[k]), "images": int(hist[k])}
        for k in range(HIST_BINS)
    ]
    return out


def ref_explore_counts(p: Project) -> dict:
    rows = {c: {"class": c, "images": 0, "reviewed": 0} for c in p.classes}
    total = reviewed = human = 0
    for it in final_labels(p):
        total += 1
        decided = it.source in ("human", "accepted")
        reviewed += decided
        human += it.source == "human"
        for c in it.classes:
            rows[c]["images"] += 1
            rows[c]["reviewed"] += decided
    excluded = p.db.execute("select count(*) from images where status = 'excluded'").fetchone()[0]
    return {"total": total, "reviewed": reviewed, "human": human, "excluded": excluded, "classes": list(rows.values())}


def ref_evaluate(p: Project) -> dict:
    classes, items = p.classes, final_labels(p)
    gt = match_folder_labels([it.folder_label for it in items], classes)
    index = {c: i for i, c in enumerate(classes)}
    truth, top1, hit, sources, n_gt = [], [], [], [], 0
    for it, t in zip(items, gt, strict=True):
        if t < 0:
            continue
        n_gt += 1
        if not it.classes:
            continue
        pred = [index[c] for c in it.classes]
        truth.append(int(t))
        top1.append(pred[0])
        hit.append(int(t) in pred)
        sources.append(it.source)
    y_true, y_pred, hits = np.array(truth), np.array(top1), np.array(hit)
    report = classification_report(y_true, y_pred, classes)
    src = np.array(sources)
    run = active_run(p)
    return {
        "accuracy": float(hits.mean()) if p.multi_label else report["accuracy"],
        "top1_accuracy": report["accuracy"],
        "n": len(truth),
        "n_unlabeled": n_gt - len(truth),
        "n_ground_truth": n_gt,
        "classes": list(classes),
        "per_class": report["per_class"],
        "macro": report["macro"],
        "confusion": confusion_matrix(y_true, y_pred, len(classes)).tolist(),
        "run_id": run["id"] if run is not None else None,
        "multi_label": p.multi_label,
        "by_source": {s: {"n": int((src == s).sum()), "accuracy": float(hits[src == s].mean())} for s in set(sources)},
    }


def ref_label_counts(p: Project) -> dict:
    counts = {"human": 0, "accepted": 0, "pseudo": 0, "unlabeled": 0, "total": 0}
    per_class = dict.fromkeys(p.classes, 0)
    for it in final_labels(p):
        counts["total"] += 1
        counts[it.source or "unlabeled"] += 1
        for c in it.classes:
            per_class[c] += 1
    return {**counts, "per_class": per_class}


def check(p: Project) -> None:
    for threshold in (0.5, 0.0, 0.35, 1.0):  # 0.5 first: what the last check left cached (explore, evaluate)
        got = review_counts(p, threshold)
        want = ref_review_counts(p, threshold)
        assert {k: getattr(got, k) for k in want} == want, threshold
    assert explore_counts(p) == ref_explore_counts(p)
    assert evaluate(p) == ref_evaluate(p)
    assert label_counts(p) == ref_label_counts(p)  # the Project and Export steps' counts, `labeler status`


def edits(p: Project):
    """Every kind of change the counts must follow, one at a time."""
    ids = [im["id"] for im in p.images()]
    two = [CLASSES[1], CLASSES[0]] if p.multi_label else CLASSES[1]
    yield lambda: accept_pseudo_labels(p, ids[:5])
    yield lambda: set_human_labels(p, ids[3:9], two)
    yield lambda: mark_unsure(p, ids[10:13])
    yield lambda: set_human_labels(p, ids[11:12], CLASSES[2])  # a marked image gets a label: no longer unsure
    yield lambda: exclude_images(p, ids[0:2] + ids[20:22])
    yield lambda: undo(p)  # the exclusion back
    yield lambda: exclude_images(p, ids[20:22])
    yield lambda: include_images(p, ids[21:22])
    yield lambda: accept_pseudo_labels(p, min_score=0.4)
    yield lambda: clear_labels(p, ids[:4])
    yield lambda: p.set_classes(CLASSES[1:])  # a removed class: labels that only had it fall through
    yield lambda: p.set_classes(CLASSES)
    yield lambda: p.set_thresholds({"cat": 0.3, "dog": 0.6})  # multi-label: these two classes by score
    yield lambda: accept_pseudo_labels(p, ids[12:16])  # accepted as the thresholds make them
    yield lambda: p.set_thresholds({"ship": 0.0, "bird": 1.0})  # every image gets ship, none bird
    yield lambda: _label_run(p, seed=1)  # a new active run
    yield lambda: p.set_thresholds({}, replace=True)  # back to the run's own sets
    yield lambda: undo(p)
    yield lambda: undo(p)


@pytest.mark.parametrize("multi", [False, True], ids=["single-label", "multi-label"])
def test_counts_equal_an_image_by_image_pass_after_every_edit(tmp_path, multi):
    p = _project(tmp_path, multi)
    check(p)
    for step in edits(p):
        step()
        check(p)
        check(p)  # again: the cached result is the same


def test_an_edit_by_another_connection_is_seen_at_once(tmp_path):
    """The cache is keyed on SQLite's data_version: a commit by any connection (another process's CLI, another
    user's request) makes the next count read the change."""
    p = _project(tmp_path, False)
    before = review_counts(p, 0.5)
    other = Project(p.root)
    ids = [im["id"] for im in other.images()]
    set_human_labels(other, ids[:7], "ship")
    other.close()
    after = review_counts(p, 0.5)
    assert after != before and after.classes == ref_review_counts(p, 0.5)["classes"]


def test_label_groups_reads_only_the_decided_images_once_the_base_is_known(tmp_path, monkeypatch):
    """After an edit, only images with a stored label (or an unsure mark) are read again: the label-free base
    (images × predictions) is kept while its fingerprint holds."""
    p = _project(tmp_path, False)
    label_groups(p)
    statements: list[str] = []
    p.db.conn.set_trace_callback(statements.append)
    set_human_labels(p, [im["id"] for im in p.images()][:2], "dog")
    statements.clear()
    label_groups(p)
    grouped = [s for s in statements if "group by" in s]
    assert len(grouped) == 1 and "l.image_id is not null" in grouped[0], grouped
    p.db.conn.set_trace_callback(None)


def test_a_cached_page_follows_every_commit(tmp_path):
    """Pages of the confidence order are kept until the next commit of any connection: a selection change
    reads nothing again, an edit (here by another connection) shows at once."""
    from labeler.review import review_queue

    p = _project(tmp_path, False)

    def page():
        q = review_queue(p, by="confidence", view="dog", limit=5, include_labeled=True)
        return q.total, [(it["image_id"], it["source"]) for it in q.items]

    first = page()
    assert page() == first
    other = Project(p.root)
    target = first[1][0][0]
    set_human_labels(other, [target], "ship")
    other.close()
    total, items = page()
    assert total == first[0] - 1 and target not in [i for i, _ in items]
    set_human_labels(p, [target], "dog")  # and by its own connection
    assert (target, "human") in page()[1]


@pytest.mark.parametrize("multi", [False, True], ids=["single-label", "multi-label"])
def test_pages_from_the_cached_order_equal_the_sql_query_after_every_edit(tmp_path, monkeypatch, multi):
    """The Review step's pages (confidence order, every view) come from a cached review order and the live labels;
    they must be the pages the SQL query gives, after every kind of edit."""
    import labeler.review as review

    p = _project(tmp_path, multi)

    def pages(fast: bool) -> list:
        monkeypatch.setattr(review, "FAST_PAGES", fast)
        out = []
        for view in [*review.VIEWS, *p.classes]:
            for threshold, offset, limit in ((0.5, 0, 7), (0.35, 7, 7), (1.0, 0, 100), (0.0, 30, 5)):
                q = review.review_queue(
                    p, by="confidence", view=view, threshold=threshold, limit=limit, offset=offset,
                    include_labeled=True,
                )  # fmt: skip
                out.append((view, threshold, offset, q.total, q.items))
        return out

    assert pages(True) == pages(False)
    for step in edits(p):
        step()
        assert pages(True) == pages(False)
