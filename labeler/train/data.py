"""Which images a training run learns from, watches and validates on (pure numpy + one query).

* **verified labels** — ``human`` and ``accepted`` labels (:mod:`labeler.labels`). They override the
  teacher's pseudo-labels in the training set and join every pseudo-label selection.
* **validation set** — *human* labels only: an accepted label is an earlier model's output, not ground
  truth. Only when every class has at least ``min_per_class`` (5) human labels: per class a seeded
  ``val_split`` fraction (default half, at least one) of them is kept out of training and scored every
  epoch, so the accuracy reported is not measured on training images. ``val_split = 0`` keeps them all
  in training and validates on them anyway (flagged ``optimistic``).
* **held-out slice** — a seeded ``holdout`` fraction (10 %, at most 500) of the images without a verified
  label, never trained on, where the student's agreement with the teacher and the churn of its
  predictions between epochs are measured (the label-free model-selection signals).
* **audit images** — the images of the audit sample (:mod:`labeler.audit`) are an unbiased test set: they
  are in none of the above. :func:`without_audit` drops them from the images a run trains on (so also from
  NoLA's alignment set and the held-out slice), and :func:`verified_labels` ignores their labels. A
  person's audit verdict lives in the ``audit`` table and never becomes training data.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..project import Project

MIN_VERIFIED_PER_CLASS = 5
MAX_HOLDOUT = 500


def without_audit(project: Project, image_ids) -> list[int]:
    """``image_ids`` without the images of the audit sample (checked or not), in their order."""
    from ..audit import sampled_ids

    audited = sampled_ids(project)
    return [int(i) for i in image_ids if int(i) not in audited]


def verified_labels(
    project: Project, image_ids, classes: list[str], sources: tuple[str, ...] = ("human", "accepted")
) -> np.ndarray:
    """Per image id: the class index (into ``classes``) of its label of one of ``sources``, -1 where none.

    Multi-class labels count by their primary (first) class; labels naming a class not in ``classes`` are ignored,
    and so are the labels of audit images (:mod:`labeler.audit`: a test set, never training data).
    """
    from ..audit import sampled_ids

    index = {c: i for i, c in enumerate(classes)}
    pos = {int(i): r for r, i in enumerate(image_ids)}
    out = np.full(len(pos), -1, dtype=np.int64)
    marks = ",".join("?" * len(sources))
    audited = sampled_ids(project)
    for image_id, names in project.db.execute(
        f"select image_id, classes from labels where source in ({marks})", list(sources)
    ):
        r = pos.get(int(image_id))
        if r is None or int(image_id) in audited:
            continue
        try:
            first = (json.loads(names) or [None])[0]
        except (TypeError, ValueError):
            continue
        if first in index:
            out[r] = index[first]
    return out


def split_rows(
    verified: np.ndarray,
    num_classes: int,
    *,
    holdout: float = 0.1,
    val_split: float = 0.5,
    seed: int = 0,
    min_per_class: int = MIN_VERIFIED_PER_CLASS,
    max_holdout: int = MAX_HOLDOUT,
    human: np.ndarray | None = None,
) -> dict:
    """Split rows 0..N-1 into training, held-out and validation rows.

    ``human`` (bool, N): which verified rows are human labels, the only ones validation may use (None:
    all of them). Accepted rows still train.

    Returns
    -------
    dict
        ``train``, ``holdout``, ``val`` (sorted int64 arrays; ``val`` rows may also be in ``train`` when
        ``optimistic``), ``optimistic`` (bool), ``verified`` (count), ``val_reason`` (why there is no
        validation set, or None).
    """
    verified = np.asarray(verified, dtype=np.int64)
    n = len(verified)
    rng = np.random.default_rng(seed)
    truth = verified.copy()
    if human is not None:
        truth[~np.asarray(human, dtype=bool)] = -1
    counts = np.bincount(truth[truth >= 0], minlength=num_classes)
    val = np.zeros(0, dtype=np.int64)
    optimistic = False
    reason = None
    if counts.size and counts.min() >= min_per_class:
        if val_split <= 0:
            val = np.flatnonzero(truth >= 0)
            optimistic = True
        else:
            parts = []
            for c in range(num_classes):
                rows = rng.permutation(np.flatnonzero(truth == c))
                take = min(len(rows), max(1, math.ceil(val_split * len(rows))))
                parts.append(rows[:take])
            val = np.sort(np.concatenate(parts)).astype(np.int64)
    else:
        short = int((counts < min_per_class).sum())
        reason = (
            f"no validation set: {short} of {num_classes} classes have fewer than {min_per_class} human labels "
            "(accepted pseudo-labels are not ground truth); model selection uses held-out teacher agreement "
            "(the last epoch when there are too few images to hold some out)"
        )
    unlabeled = np.flatnonzero(verified < 0)
    n_hold = min(max_holdout, int(round(holdout * len(unlabeled))))
    if n_hold < 2 or len(unlabeled) - n_hold < 2:
        n_hold = 0
    hold = np.sort(rng.permutation(unlabeled)[:n_hold]).astype(np.int64)
    excluded = np.zeros(n, dtype=bool)
    excluded[hold] = True
    if not optimistic:
        excluded[val] = True
    return {
        "train": np.flatnonzero(~excluded).astype(np.int64),
        "holdout": hold,
        "val": val,
        "optimistic": optimistic,
        "verified": int((verified >= 0).sum()),
        "val_reason": reason,
    }


def training_split(project: Project, image_ids, classes: list[str], params: dict) -> tuple[np.ndarray, dict]:
    """The verified labels of a run's images and their train / held-out / validation rows.

    ``verified`` (N,) is the class index of each image's human or accepted label (-1: none); validation may only
    use human labels. ``params`` gives ``holdout``, ``val_split`` and ``seed`` (:func:`split_rows`).

    Raises
    ------
    NotReadyError
        No row is left to train on after the held-out and validation splits.
    """
    from ..errors import NotReadyError

    verified = verified_labels(project, image_ids, classes)
    human = verified_labels(project, image_ids, classes, sources=("human",)) >= 0  # validation: ground truth only
    rows = split_rows(
        verified,
        len(classes),
        holdout=params["holdout"],
        val_split=params["val_split"],
        seed=params["seed"],
        human=human,
    )
    if len(rows["train"]) == 0:
        raise NotReadyError("no image is left to train on after the held-out and validation splits")
    return verified, rows
