"""What a training run shows after (and while) it runs: its curves and what it changed.

:func:`run_curve` reads a run's per-epoch metrics as long-format rows for a line plot;
:func:`train_outcome` finds the label run made with a training run's model and compares it with
the labels that were active before — for a multi-label run (CDUL) as label sets (:func:`multi_label_outcome`:
mAP and F1 against the ground truth sets, label cardinality, classes added and removed), not top-1.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..project import Project

#: Training-curve series worth plotting (others in a history row — lr, seconds, counts — are left out).
CURVE_KEYS = ("loss", "agreement", "accuracy")


def run_curve(project: Project, run_id: int) -> list[dict]:
    """A training run's curves: ``[{"step", "metric", "value"}]`` (long format, for a line plot).

    Read from the run's metrics — ``epochs`` (what :mod:`labeler.train.loop` writes after every epoch) or
    ``history`` — else from ``runs/<run_id>/metrics.jsonl``: a list of ``{"epoch"|"step", "loss",
    "train_agreement", "teacher_agreement", "val_accuracy", ...}``. Series: numeric keys whose name
    contains ``loss``, ``agreement`` or ``accuracy``.
    """
    from ..jobs import get_run

    run = get_run(project, int(run_id))
    history = run["metrics"].get("epochs")
    if not isinstance(history, list):
        history = run["metrics"].get("history")
    if not isinstance(history, list):
        history = []
        path = project.runs_dir / str(run["id"]) / "metrics.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    history.append(json.loads(line))
                except ValueError:
                    continue
    out = []
    for k, point in enumerate(history):
        if not isinstance(point, dict):
            continue
        step = point.get("epoch", point.get("step", k + 1))
        for key, value in point.items():
            if key in ("step", "epoch") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if any(word in key for word in CURVE_KEYS) and np.isfinite(value):
                out.append({"step": float(step), "metric": key, "value": float(value)})
    return out


def train_outcome(project: Project, train_run_id: int) -> dict | None:
    """What a training run changed: the newest label run made with its model, or None if there is none yet.

    Returns ``{"label_run", "active", "n", "failed", "class_counts", "comparison", "old_method",
    "multi_label"}``: ``comparison`` is :func:`labeler.train.apply.compare_runs` against the label run that was
    active before (None if there was none), ``old_method`` that run's method (``"zeroshot"``, ...), ``active``
    whether the new labels are still the project's active run, ``multi_label`` :func:`multi_label_outcome` for a
    multi-label label run (None for a single-label one).
    """
    from ..jobs import list_runs
    from ..labels import active_run

    label_runs = list_runs(project, kind="label")  # newest first
    made = [r for r in label_runs if r["status"] == "done" and r["params"].get("train_run") == int(train_run_id)]
    if not made:
        return None
    run = made[0]
    metrics = run["metrics"]
    comparison = metrics.get("comparison")
    methods = {r["id"]: r["method"] for r in label_runs}
    old_method = methods.get(int(comparison["old_run"])) if comparison else None  # None: deleted since
    current = active_run(project)
    multi = None
    if run["params"].get("multi_label"):
        old = int(comparison["old_run"]) if comparison and old_method is not None else None
        multi = multi_label_outcome(project, old, run["id"])
    return {
        "label_run": run["id"],
        "active": bool(current and current["id"] == run["id"]),
        "n": metrics.get("n", 0),
        "failed": metrics.get("failed", 0),
        "class_counts": metrics.get("class_counts") or {},
        "comparison": comparison,
        "old_method": old_method,
        "multi_label": multi,
    }


def _scores(project: Project, run_id: int | None) -> dict | None:
    """mAP, macro and micro F1 of a label run against the ground truth sets; None without ground truth."""
    from ..errors import LabelerError
    from ..evaluate import evaluate_multi_label

    if run_id is None:
        return None
    try:
        res = evaluate_multi_label(project, run_id=run_id)
    except LabelerError:  # no ground truth (or the run is gone)
        return None
    return {"map": res["map"], "macro_f1": res["macro_f1"], "micro_f1": res["micro"]["f1"], "n": res["n"]}


def multi_label_outcome(project: Project, old_run_id: int | None, new_run_id: int) -> dict:
    """A multi-label label run against the one active before it, as label sets under the project's thresholds.

    Parameters
    ----------
    project : Project
    old_run_id : int or None
        The label run active before (None: there was none, or it was deleted).
    new_run_id : int
        The label run made with the trained model.

    Returns
    -------
    dict
        ``{"old", "new"}`` each None (no run / no ground truth) or ``{"map", "macro_f1", "micro_f1", "n"}``
        (:func:`labeler.evaluate.evaluate_multi_label`); ``cardinality`` ``{"old", "new"}`` (mean labels per
        labeled image); ``n_common`` (images both runs labeled), ``changed`` (of them, those whose set changed),
        ``added`` / ``removed`` ``[{"class", "n"}]`` (images that gained / lost a class, most first);
        ``pseudo_labels`` (the training run's pseudo-label quality, :func:`labeler.methods.cdul.quality_text`,
        or None).
    """
    from ..evaluate import predicted_sets, run_score_rows
    from ..jobs import get_run

    classes = list(project.classes)
    t = np.full(len(classes), np.nan)
    for name, value in project.thresholds().items():
        if name in classes:
            t[classes.index(name)] = float(value)
    runs = {"new": get_run(project, int(new_run_id))}
    if old_run_id is not None:
        runs["old"] = get_run(project, int(old_run_id))
    marks = ", ".join("?" * len(runs))
    ids = [
        int(r[0])
        for r in project.db.execute(
            f"select distinct image_id from predictions where run_id in ({marks}) order by image_id",
            [r["id"] for r in runs.values()],
        )
    ]
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, run in runs.items():
        has, probs, own = run_score_rows(project, run, ids, classes)
        pred = predicted_sets(probs, own, t)
        pred[~has] = False
        sets[key] = (has, pred)
    cardinality = {
        key: (float(sets[key][1][sets[key][0]].sum(axis=1).mean()) if key in sets and sets[key][0].any() else None)
        for key in ("old", "new")
    }
    out: dict = {
        "old": _scores(project, old_run_id),
        "new": _scores(project, new_run_id),
        "cardinality": cardinality,
        "n_common": 0,
        "changed": 0,
        "added": [],
        "removed": [],
    }
    if "old" in sets:
        both = sets["old"][0] & sets["new"][0]
        old, new = sets["old"][1][both], sets["new"][1][both]
        gained, lost = (new & ~old).sum(axis=0), (old & ~new).sum(axis=0)
        out.update(
            n_common=int(both.sum()),
            changed=int((old != new).any(axis=1).sum()),
            added=[{"class": classes[k], "n": int(gained[k])} for k in np.argsort(-gained, kind="stable") if gained[k]],
            removed=[{"class": classes[k], "n": int(lost[k])} for k in np.argsort(-lost, kind="stable") if lost[k]],
        )
    quality = runs["new"]["metrics"].get("pseudo_labels")
    if isinstance(quality, dict) and quality:
        from ..methods.cdul import quality_text

        out["pseudo_labels"] = quality_text(quality)
    else:
        out["pseudo_labels"] = None
    return out
