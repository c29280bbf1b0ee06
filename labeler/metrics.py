"""Ranking and set metrics for multi-label labels: average precision, mAP, F1 at thresholds.

One home for them: evaluation (``labeler.evaluate``), CDUL's pseudo-label quality report
(``labeler.methods.cdul``) and the benches all call these. Pure functions on arrays.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidInputError


def _check_pair(scores, truth, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth)
    if s.ndim != ndim or t.shape != s.shape:
        want = "(N,)" if ndim == 1 else "(N, C)"
        raise InvalidInputError(
            f"scores and truth must both be {want} arrays of one shape, got {s.shape} and {t.shape}"
        )
    if not np.isfinite(s).all():
        raise InvalidInputError("scores contain NaN or inf")
    if t.dtype != bool:
        if not np.isin(t, (0, 1)).all():
            raise InvalidInputError("truth must be 0/1 or boolean")
        t = t.astype(bool)
    return s, t


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Average precision of one class: the mean, over its positives, of the precision at each one's rank.

    Ties are broken pessimistically (positives ranked after negatives of the same score), so a constant
    score gets no credit for the input order. This is the uninterpolated AP that scikit-learn's
    ``average_precision_score`` computes for tie-free scores.

    Parameters
    ----------
    scores : array (N,)
        Higher means more likely positive.
    truth : array (N,) of bool or 0/1

    Returns
    -------
    float in [0, 1], or NaN when ``truth`` has no positive.
    """
    s, t = _check_pair(scores, truth, 1)
    n_pos = int(t.sum())
    if n_pos == 0:
        return float("nan")
    order = np.lexsort((t.astype(np.int8), -s))  # by score descending, negatives first within a tie
    hits = t[order]
    ranks = np.flatnonzero(hits) + 1
    precision_at_hits = np.arange(1, n_pos + 1) / ranks
    return float(precision_at_hits.mean())


def mean_average_precision(scores: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    """Macro mAP over the classes that have a positive, and every class's AP.

    Parameters
    ----------
    scores : array (N, C)
    truth : array (N, C) of bool or 0/1

    Returns
    -------
    (map, ap)
        ``map``: mean of the finite per-class APs (NaN if no class has a positive); ``ap``: (C,) float64,
        NaN for a class with no positive.
    """
    s, t = _check_pair(scores, truth, 2)
    ap = np.array([average_precision(s[:, c], t[:, c]) for c in range(s.shape[1])], dtype=np.float64)
    finite = ap[np.isfinite(ap)]
    return (float(finite.mean()) if finite.size else float("nan")), ap


def f1_at(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Precision, recall and F1 of set predictions, per class and pooled.

    Parameters
    ----------
    predicted, truth : arrays (N, C) of bool or 0/1
        Which classes each image is labeled with / truly has.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1``: (C,) float64 (NaN where undefined: nothing predicted / no
        positive); ``macro_f1``: mean of the finite per-class F1; ``micro``: ``{"precision", "recall",
        "f1"}`` over all image-class pairs; ``tp``, ``fp``, ``fn``: (C,) int64.
    """
    p, t = _check_pair(predicted, truth, 2)
    p = p.astype(bool)
    tp = (p & t).sum(axis=0)
    fp = (p & ~t).sum(axis=0)
    fn = (~p & t).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan)
        rec = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan)
        f1 = np.where(tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
    finite = f1[np.isfinite(f1)]
    TP, FP, FN = int(tp.sum()), int(fp.sum()), int(fn.sum())
    micro = {
        "precision": TP / (TP + FP) if TP + FP else float("nan"),
        "recall": TP / (TP + FN) if TP + FN else float("nan"),
        "f1": 2 * TP / (2 * TP + FP + FN) if TP + FP + FN else float("nan"),
    }
    return {
        "precision": prec.astype(np.float64),
        "recall": rec.astype(np.float64),
        "f1": f1.astype(np.float64),
        "macro_f1": float(finite.mean()) if finite.size else float("nan"),
        "micro": micro,
        "tp": tp.astype(np.int64),
        "fp": fp.astype(np.int64),
        "fn": fn.astype(np.int64),
    }
