"""Evaluation against ground truth.

Single-label (:func:`evaluate`): accuracy against folder names — images imported from ``root/<class>/...``
carry their class as ground truth. A folder label matches a class when they are equal ignoring case and
treating ``_`` and spaces alike (``golden_retriever`` = ``Golden Retriever``); images whose folder matches no
class are left out. For a multi-label project :func:`evaluate` still gives this top-1 view of one folder class.

Multi-label (:func:`evaluate_multi_label`): mAP (macro), per-class AP and F1 (per class, macro, micro) at the
chosen thresholds, and exact-set accuracy, against the ground truth sets of :mod:`labeler.truth` (a
CSV/JSON file of image → labels, or folder names such as ``cat+dog``). The metrics are those of
:mod:`labeler.metrics`.

Pure numpy: :func:`confusion_matrix`, :func:`classification_report`, :func:`predicted_sets` and
:func:`multi_label_report` work on plain arrays.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from store import in_chunks

from .errors import InvalidInputError, NotReadyError
from .labels import active_run, final_labels, get_label_run
from .metrics import f1_at, mean_average_precision
from .project import Project
from .review import label_groups
from .truth import match_folder_labels, normalize_class_name, truth_table

#: ``by_source`` lists the sources in precedence order.
SOURCE_ORDER = {"human": 0, "accepted": 1, "pseudo": 2}
#: Above this many classes ``evaluate`` leaves out the (C, C) confusion matrix (it reports ``None``).
MAX_CONFUSION_CLASSES = 500


def _check_labels(y: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise InvalidInputError(f"{what} must be one-dimensional, not shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise InvalidInputError(f"{what} must hold integer class indices")
    y = y.astype(np.int64, copy=False)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise InvalidInputError(f"{what} has a class index outside 0..{num_classes - 1}")
    return y


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts: row = true class, column = predicted class."""
    y_true = _check_labels(y_true, num_classes, "y_true")
    y_pred = _check_labels(y_pred, num_classes, "y_pred")
    if y_true.shape != y_pred.shape:
        raise InvalidInputError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def classification_report(y_true, y_pred, class_names: Sequence[str]) -> dict:
    """Accuracy and per-class precision, recall, F1 and support of top-1 predictions.

    Returns ``{"accuracy", "n", "per_class": {name: {"precision", "recall", "f1", "support"}},
    "macro": {"precision", "recall", "f1"}}``. Precision of a class never predicted
    and recall of a class with no examples are 0.0 (as scikit-learn reports them);
    the macro average is over classes that occur in ``y_true`` or ``y_pred``.
    Needs O(C) memory, not O(C²).
    """
    num_classes = len(class_names)
    y_true = _check_labels(y_true, num_classes, "y_true")
    y_pred = _check_labels(y_pred, num_classes, "y_pred")
    if y_true.shape != y_pred.shape:
        raise InvalidInputError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    support = np.bincount(y_true, minlength=num_classes)
    predicted = np.bincount(y_pred, minlength=num_classes)
    tp = np.bincount(y_true[y_true == y_pred], minlength=num_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    present = (support > 0) | (predicted > 0)
    macro = {
        key: (float(vals[present].mean()) if present.any() else 0.0)
        for key, vals in (("precision", precision), ("recall", recall), ("f1", f1))
    }
    n = int(y_true.size)
    return {
        "accuracy": float(tp.sum() / n) if n else None,
        "n": n,
        "per_class": per_class,
        "macro": macro,
    }


def _ground_truth_error() -> NotReadyError:
    return NotReadyError(
        "evaluation needs ground truth: import images in subfolders named after the classes "
        "(e.g. photos/cat/1.jpg, photos/dog/2.jpg); no image's folder matches a class name"
    )


def evaluate(project: Project, run_id: int | None = None) -> dict:
    """Score labels against the images' folder names.

    With ``run_id`` None the final labels are scored (human > accepted > pseudo
    from the active run); with a labeling run's id, that run's top-1 predictions
    (over the run's own class list).

    Returns ``{"accuracy", "top1_accuracy", "n", "n_unlabeled", "n_ground_truth",
    "classes", "per_class": {name: {"precision", "recall", "f1", "support"}},
    "macro", "confusion" (rows = truth, columns = predicted; None above
    MAX_CONFUSION_CLASSES classes), "run_id" (the run scored, or the active run),
    "multi_label", "by_source": {source: {"n", "accuracy"}}}``.
    ``n`` counts images with ground truth and a label; ``n_unlabeled`` those with
    ground truth but no label (no prediction, or an empty multi-label set), left
    out of the scores. For multi-label labels ``accuracy`` is the fraction whose
    true class is among the predicted classes and ``top1_accuracy`` the fraction
    whose primary (top-1) class is the true one; the per-class scores and
    confusion matrix use the top-1 class. ``by_source`` lists human, accepted, pseudo (those present) in
    that order. The final labels are counted in groups of equal values (:func:`labeler.review.label_groups`),
    not image by image, so a refresh of the app costs no pass over the images.
    """
    truth: list[int] = []
    top1: list[int] = []
    hit: list[bool] = []
    sources: list[str] = []
    n_ground_truth = 0
    weights: list[int] = []  # images per entry (the final labels come in groups of equal values)
    if run_id is None:
        classes = project.classes
        multi = project.multi_label
        # the final labels counted by folder (one grouped query at most, see label_groups): each distinct
        # (folder, label) once, however many images share it
        merged: dict[tuple, int] = {}
        for g in label_groups(project):
            merged[(g.folder_label, g.classes, g.source)] = (
                merged.get((g.folder_label, g.classes, g.source), 0) + g.images
            )
        groups = sorted(merged.items(), key=lambda kv: (SOURCE_ORDER.get(kv[0][2], 9), str(kv[0])))
        gt = match_folder_labels([key[0] for key, _ in groups], classes)
        index = {c: i for i, c in enumerate(classes)}
        active = active_run(project)
        used_run = active["id"] if active is not None else None
        for ((_, labels, source), n), t in zip(groups, gt, strict=True):
            if t < 0:
                continue
            n_ground_truth += n
            if not labels:
                continue
            pred = [index[c] for c in labels]
            truth.append(int(t))
            top1.append(pred[0])
            hit.append(int(t) in pred)
            sources.append(source)
            weights.append(n)
    else:
        run = get_label_run(project, run_id, require_done=False)
        used_run = run["id"]
        classes = list(run["params"]["classes"])
        multi = bool(run["params"].get("multi_label", False))
        rows = project.db.execute(
            "select i.folder_label, p.class_idx, p.labels from images i "
            "left join predictions p on p.image_id = i.id and p.run_id = ? where i.status = 'ok' order by i.id",
            [used_run],
        ).fetchall()
        gt = match_folder_labels([r[0] for r in rows], classes)
        for (_, class_idx, labels_json), t in zip(rows, gt, strict=True):
            if t < 0:
                continue
            n_ground_truth += 1
            predicted = json.loads(labels_json) if (multi and labels_json is not None) else [class_idx]
            if class_idx is None or not predicted:
                continue  # no prediction, or a multi-label run that predicted no class: unlabeled
            truth.append(int(t))
            top1.append(int(class_idx))
            hit.append(int(t) in predicted)
            sources.append("run")
            weights.append(1)
    if n_ground_truth == 0:
        raise _ground_truth_error()
    if not truth:
        raise NotReadyError(
            f"none of the {n_ground_truth} images with ground truth has a label yet: run labeling first"
        )
    w = np.asarray(weights, dtype=np.int64)
    y_true = np.repeat(np.asarray(truth, dtype=np.int64), w)
    y_pred = np.repeat(np.asarray(top1, dtype=np.int64), w)
    hits = np.repeat(np.asarray(hit, dtype=bool), w)

    report = classification_report(y_true, y_pred, classes)
    by_source: dict[str, dict] = {}
    src = np.asarray(sources)
    hit_w = np.asarray(hit, dtype=bool) * w
    for name in dict.fromkeys(sources):
        mask = src == name
        n = int(w[mask].sum())
        by_source[name] = {"n": n, "accuracy": int(hit_w[mask].sum()) / n}
    n_classes = len(classes)
    confusion = confusion_matrix(y_true, y_pred, n_classes).tolist() if n_classes <= MAX_CONFUSION_CLASSES else None
    return {
        "accuracy": float(hits.mean()) if multi else report["accuracy"],
        "top1_accuracy": report["accuracy"],
        "n": int(y_true.size),
        "n_unlabeled": n_ground_truth - int(y_true.size),
        "n_ground_truth": n_ground_truth,
        "classes": list(classes),
        "per_class": report["per_class"],
        "macro": report["macro"],
        "confusion": confusion,
        "run_id": used_run,
        "multi_label": multi,
        "by_source": by_source,
    }


# --- multi-label: sets of classes against ground truth sets -------------------------------------------------
def predicted_sets(probs: np.ndarray, run_sets: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """A run's label sets with per-class thresholds applied where a person set one.

    Parameters
    ----------
    probs : array (N, C)
        The run's per-class scores.
    run_sets : array (N, C) of bool
        The run's own label sets.
    thresholds : array (C,)
        A score in [0, 1] for a class with a threshold (``probs >= t`` is labeled), NaN for one without (the
        run's set stands).

    Returns
    -------
    array (N, C) of bool
    """
    p = np.asarray(probs, dtype=np.float64)
    s = np.asarray(run_sets, dtype=bool)
    t = np.asarray(thresholds, dtype=np.float64)
    if p.ndim != 2 or s.shape != p.shape or t.shape != (p.shape[1],):
        raise InvalidInputError(
            f"probs (N, C), run_sets (N, C) and thresholds (C,) must agree, got {p.shape}, {s.shape}, {t.shape}"
        )
    has = np.isfinite(t)
    if (t[has] < 0).any() or (t[has] > 1).any():
        raise InvalidInputError("thresholds must be in [0, 1] (NaN: none)")
    return np.where(has[None, :], p >= np.where(has, t, 0.0)[None, :], s)


def _num(x) -> float | None:
    """A JSON-safe number: NaN (undefined) as None."""
    x = float(x)
    return x if np.isfinite(x) else None


def multi_label_report(
    scores: np.ndarray | None,
    predicted: np.ndarray,
    truth: np.ndarray,
    class_names: Sequence[str],
    scored: np.ndarray | None = None,
) -> dict:
    """mAP, per-class AP and F1 (per class, macro, micro) of multi-label predictions against truth sets.

    Parameters
    ----------
    scores : array (N, C) or None
        Per-class scores for the ranking metrics (None: no mAP).
    predicted, truth : arrays (N, C) of bool
        The label sets and the true sets.
    class_names : sequence of str, length C
    scored : array (N,) of bool, optional
        Which rows have scores (the others count for F1 only). Default: all.

    Returns
    -------
    dict
        ``map`` (macro over classes with a positive among the scored rows; None without scores), ``ap``
        ``{class: float | None}``, ``per_class`` ``{class: {"ap", "precision", "recall", "f1", "support",
        "predicted"}}``, ``macro_f1``, ``micro`` ``{"precision", "recall", "f1"}``, ``exact_match`` (the
        fraction of rows whose set equals the truth), ``n``, ``n_scored``, ``ap_bars`` (``[{"class", "ap"}]``
        for the classes with an AP, in class order: a bar chart's rows). Undefined values are None.
    """
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    names = list(class_names)
    if t.ndim != 2 or p.shape != t.shape or t.shape[1] != len(names):
        raise InvalidInputError(
            f"predicted and truth must be (N, C) with C = {len(names)} classes, got {p.shape} and {t.shape}"
        )
    n = t.shape[0]
    mask = np.ones(n, dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    if mask.shape != (n,):
        raise InvalidInputError(f"scored must be (N,) = ({n},), got {mask.shape}")
    if scores is not None and mask.any():
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != t.shape:
            raise InvalidInputError(f"scores must be (N, C) = {t.shape}, got {s.shape}")
        m, ap = mean_average_precision(s[mask], t[mask])
    else:
        m, ap = float("nan"), np.full(len(names), np.nan)
    f = f1_at(p, t)
    per_class = {
        c: {
            "ap": _num(ap[k]),
            "precision": _num(f["precision"][k]),
            "recall": _num(f["recall"][k]),
            "f1": _num(f["f1"][k]),
            "support": int(t[:, k].sum()),
            "predicted": int(p[:, k].sum()),
        }
        for k, c in enumerate(names)
    }
    return {
        "map": _num(m),
        "ap": {c: _num(ap[k]) for k, c in enumerate(names)},
        "per_class": per_class,
        "macro_f1": _num(f["macro_f1"]),
        "micro": {k: _num(v) for k, v in f["micro"].items()},
        "exact_match": float((p == t).all(axis=1).mean()) if n else None,
        "n": int(n),
        "n_scored": int(mask.sum()) if scores is not None else 0,
        "ap_bars": [{"class": c, "ap": float(ap[k])} for k, c in enumerate(names) if np.isfinite(ap[k])],
    }


def run_score_rows(
    project: Project, run: dict, image_ids: list[int], classes: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(has (N,) bool, probs (N, C), sets (N, C) bool) of a run for ``image_ids``, columns in ``classes`` order
    (a class the run did not have scores 0 and is never in its sets)."""
    run_classes = list(run["params"]["classes"])
    col = {c: k for k, c in enumerate(classes)}
    where = np.array([col.get(c, -1) for c in run_classes], dtype=np.int64)
    keep = where >= 0
    pos = {i: k for k, i in enumerate(image_ids)}
    n, c = len(image_ids), len(classes)
    has = np.zeros(n, dtype=bool)
    probs = np.zeros((n, c), dtype=np.float64)
    sets = np.zeros((n, c), dtype=bool)
    for chunk, marks in in_chunks(image_ids):
        for image_id, class_idx, labels, blob in project.db.execute(
            f"select image_id, class_idx, labels, probs from predictions where run_id = ? and image_id in ({marks})",
            [run["id"], *chunk],
        ):
            k = pos[int(image_id)]
            vec = np.frombuffer(blob or b"", dtype="<f4")
            if vec.size != len(run_classes):
                raise InvalidInputError(
                    f"run {run['id']}: the stored scores of image {image_id} have {vec.size} values, not "
                    f"{len(run_classes)}; rerun the labeling"
                )
            has[k] = True
            probs[k, where[keep]] = vec[keep]
            listed = json.loads(labels) if labels is not None else ([] if class_idx is None else [class_idx])
            for i in listed:
                if 0 <= int(i) < len(run_classes) and where[int(i)] >= 0:
                    sets[k, where[int(i)]] = True
    return has, probs, sets


def evaluate_multi_label(
    project: Project, run_id: int | None = None, thresholds: dict[str, float] | None = None
) -> dict:
    """Score multi-label labels against the ground truth sets (:func:`labeler.truth.truth_sets`).

    With ``run_id`` None the final labels are scored: human and accepted labels as they are, pseudo-labels
    the active run's; with a labeling run's id, that run's predictions. A run's label sets get the per-class
    ``thresholds`` (default :meth:`Project.thresholds`) where set — a class is labeled when its score is at
    least the threshold — and keep the run's own sets elsewhere. mAP and AP rank the run's per-class scores
    (the active run's for final labels; human labels have none) over the images the run predicted; F1
    compares the label sets.

    Returns
    -------
    dict
        :func:`multi_label_report`'s keys, and ``multi_label`` (True), ``run_id``, ``labels`` ("final
        labels" or "run N (method)"), ``classes``, ``thresholds`` ``{class: float | None}``,
        ``n_ground_truth``, ``truth_sources`` ``{"file", "folder"}``, ``by_source`` (images per label
        source, final labels only) and ``accuracy`` (= ``exact_match``).

    Raises
    ------
    NotReadyError
        No image has ground truth, or nothing is labeled and there is no run.
    InvalidInputError
        ``run_id`` is not a labeling run, or a threshold is not in [0, 1].
    """
    classes = project.classes
    table = truth_table(project)
    if not table:
        raise NotReadyError(
            "evaluation needs ground truth sets: import a CSV or JSON file of image → labels, or import images "
            "in folders named after their classes (a folder named cat+dog holds images of both)"
        )
    chosen = project.thresholds() if thresholds is None else dict(thresholds)
    t = np.full(len(classes), np.nan)
    for name, value in chosen.items():
        if name not in classes:
            raise InvalidInputError(f"threshold for unknown class {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise InvalidInputError(f"threshold of {name!r} must be a number in [0, 1], got {value!r}")
        t[classes.index(name)] = float(value)
    run = get_label_run(project, run_id, require_done=False) if run_id is not None else active_run(project)
    ids = sorted(table)
    col = {c: k for k, c in enumerate(classes)}
    truth = np.zeros((len(ids), len(classes)), dtype=bool)
    for k, i in enumerate(ids):
        for name in table[i][0]:
            truth[k, col[name]] = True
    if run is not None:
        has, probs, sets = run_score_rows(project, run, ids, classes)
        pred = predicted_sets(probs, sets, t)
        pred[~has] = False
    else:
        has = np.zeros(len(ids), dtype=bool)
        probs = None
        pred = np.zeros_like(truth)
    by_source: dict[str, int] = {}
    if run_id is None:
        final = {it.image_id: it for it in final_labels(project, ids)}
        for k, image_id in enumerate(ids):
            it = final[image_id]
            source = it.source or "unlabeled"
            by_source[source] = by_source.get(source, 0) + 1
            if it.source in ("human", "accepted"):
                pred[k] = False
                for name in it.classes:
                    pred[k, col[name]] = True
            elif it.source is None:
                pred[k] = False
        if run is None and not any(s in by_source for s in ("human", "accepted")):
            raise NotReadyError(f"none of the {len(ids)} images with ground truth has a label yet: run labeling first")
    res = multi_label_report(probs, pred, truth, classes, scored=has)
    sources = [s for _, s in table.values()]
    res.update(
        multi_label=True,
        run_id=run["id"] if run is not None else None,
        labels="final labels" if run_id is None else f"run {run['id']} ({run.get('method') or run['kind']})",
        classes=list(classes),
        thresholds={c: _num(t[k]) for k, c in enumerate(classes)},
        n_ground_truth=len(ids),
        truth_sources={"file": sources.count("file"), "folder": sources.count("folder")},
        by_source=by_source,
        accuracy=res["exact_match"],
    )
    return res


__all__ = [
    "MAX_CONFUSION_CLASSES",
    "classification_report",
    "confusion_matrix",
    "evaluate",
    "evaluate_multi_label",
    "match_folder_labels",
    "multi_label_report",
    "normalize_class_name",
    "predicted_sets",
]
