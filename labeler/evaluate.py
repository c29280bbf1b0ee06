"""Accuracy against folder names: images imported from ``root/<class>/...`` carry their class as ground truth.

A folder label matches a class when they are equal ignoring case and treating
``_`` and spaces alike (``golden_retriever`` = ``Golden Retriever``); images
whose folder matches no class are left out. Pure numpy: :func:`confusion_matrix`
and :func:`classification_report` work on plain arrays.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from .errors import InvalidInputError, NotReadyError
from .labels import active_run, get_label_run
from .project import Project
from .review import label_groups

#: ``by_source`` lists the sources in precedence order.
SOURCE_ORDER = {"human": 0, "accepted": 1, "pseudo": 2}
#: Above this many classes ``evaluate`` leaves out the (C, C) confusion matrix (it reports ``None``).
MAX_CONFUSION_CLASSES = 500


def normalize_class_name(name: str) -> str:
    """Key for matching folder names to class names: case-folded, '_' as space, spaces collapsed."""
    return " ".join(name.replace("_", " ").split()).casefold()


def match_folder_labels(folder_labels: Sequence[str | None], class_names: Sequence[str]) -> np.ndarray:
    """Class index of each folder label (-1 where none matches): exact name first, then normalised."""
    exact = {c: i for i, c in enumerate(class_names)}
    loose: dict[str, int] = {}
    for i, c in enumerate(class_names):
        loose.setdefault(normalize_class_name(c), i)
    out = np.full(len(folder_labels), -1, dtype=np.int64)
    for k, folder in enumerate(folder_labels):
        if folder:
            out[k] = exact.get(folder, loose.get(normalize_class_name(folder), -1))
    return out


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
