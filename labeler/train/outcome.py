"""What a training run shows after (and while) it runs: its curves and what it changed.

:func:`run_curve` reads a run's per-epoch metrics as long-format rows for a line plot;
:func:`train_outcome` finds the label run made with a training run's model and compares it with
the labels that were active before.
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

    Returns ``{"label_run", "active", "n", "failed", "class_counts", "comparison", "old_method"}``:
    ``comparison`` is :func:`labeler.train.apply.compare_runs` against the label run that was active before
    (None if there was none), ``old_method`` that run's method (``"zeroshot"``, ...), ``active`` whether the
    new labels are still the project's active run.
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
    return {
        "label_run": run["id"],
        "active": bool(current and current["id"] == run["id"]),
        "n": metrics.get("n", 0),
        "failed": metrics.get("failed", 0),
        "class_counts": metrics.get("class_counts") or {},
        "comparison": comparison,
        "old_method": old_method,
    }
