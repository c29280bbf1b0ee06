"""Train runs of a method object: start or continue a ``train`` job, relabel with its model, compare runs.

What :mod:`labeler.train.runner` and :mod:`labeler.train.apply` do once the method is known: these
functions take the :class:`~labeler.methods.trainable.TrainableMethod` itself, so a method's own
:meth:`~labeler.methods.trainable.TrainableMethod.run` calls them without going back through the
method registry (which :func:`labeler.train.runner.train` and :func:`labeler.train.apply.relabel`
consult to turn a name or a run's ``method`` into a method).

``runs/<id>/setup.pt``
    What the run fixed before its first step (image rows, splits, verified labels, the text classifier,
    the teacher's labels or weights): a resumed run reads it back instead of recomputing, so it trains
    on exactly the same targets even if labels changed meanwhile.
``runs/<id>/checkpoint.pt``
    Written after every epoch (see :mod:`labeler.train.loop`).
``runs/<id>/best.pt``
    The model selected so far (the method's model file; what ``label --run`` and the exporter use).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlite_utils

from ..errors import Hint, InvalidInputError, NotReadyError
from ..jobs import Job, ProgressCallback, RunResult, get_run, list_runs
from .params import RUNTIME_FIELDS

if TYPE_CHECKING:
    from ..methods.trainable import TrainableMethod
    from ..project import Project


@dataclass
class TrainResult:
    """Outcome of a training job: the train run, its metrics, and whether it continued an earlier attempt."""

    run_id: int
    metrics: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False


def run_dir(project: Project, run_id: int) -> Path:
    """``<project>/runs/<run id>/``."""
    return project.runs_dir / str(int(run_id))


def _jsonable(params: dict) -> dict:
    return json.loads(json.dumps(params, default=str))


def signature(params: dict) -> dict:
    """Params that decide what a run learns (runtime-only options left out)."""
    return {k: v for k, v in _jsonable(params).items() if k not in RUNTIME_FIELDS}


def find_resumable(project: Project, method: str, params: dict) -> dict | None:
    """The newest interrupted/cancelled ``train`` run of ``method`` with the same params and a setup file."""
    want = signature(params)
    for run in list_runs(project, kind="train"):
        if run["method"] != method or run["status"] not in ("interrupted", "cancelled"):
            continue
        if signature(run["params"]) == want and (run_dir(project, run["id"]) / "setup.pt").exists():
            return run
    return None


def train_run(project: Project, run_id: int) -> dict:
    """The decoded ``runs`` row of a training run; InvalidInputError when it is not one."""
    try:
        run = get_run(project, int(run_id))
    except (sqlite_utils.db.NotFoundError, TypeError, ValueError):
        raise InvalidInputError(f"there is no run {run_id!r}", hint=Hint("runs")) from None
    if run["kind"] != "train":
        raise InvalidInputError(f"run {run['id']} is a {run['kind']!r} run, not a training run")
    return run


def train_method(
    project: Project,
    method: TrainableMethod,
    params: Any = None,
    *,
    resume: int | str | None = "auto",
    overrides: dict | None = None,
    on_progress: ProgressCallback | None = None,
) -> TrainResult:
    """Run (or continue) a training job of ``method`` (see :func:`labeler.train.runner.train`).

    Parameters
    ----------
    method : TrainableMethod
        The method itself; a resumed run (``resume`` an int) must have been trained by it.
    params, resume, overrides, on_progress
        As in :func:`labeler.train.runner.train`.

    Raises
    ------
    InvalidInputError
        A resumed run of another method, a finished or running run, or a bad ``resume``.
    NotReadyError
        A resumed run stopped before its setup was saved.
    JobCancelled
        The run was cancelled (its last finished epoch is checkpointed: resume it).
    """
    from ..precision import training_precision
    from .loop import SETUP, atomic_save, load, run_training

    resumed = None
    if isinstance(resume, int) and not isinstance(resume, bool):
        resumed = train_run(project, resume)
        if method.name != resumed["method"]:
            raise InvalidInputError(f"run {resumed['id']} trained {resumed['method']!r}, not {method.name!r}")
        if resumed["status"] == "done":
            raise InvalidInputError(
                f"run {resumed['id']} already finished: relabel the images with its model or train anew"
            )
        if resumed["status"] == "running":
            raise InvalidInputError(
                f"run {resumed['id']} is still running (in a live process, or another machine's with a recent "
                f"heartbeat): cancel it first (`cancel PROJECT {resumed['id']}`) or wait for it"
            )
        if not (run_dir(project, resumed["id"]) / SETUP).exists():
            raise NotReadyError(f"run {resumed['id']} stopped before its setup was saved: start a new run instead")
        params = dict(resumed["params"])
        for k, v in (overrides or {}).items():
            if k in RUNTIME_FIELDS and v is not None:
                params[k] = v
    else:
        if params is None or isinstance(params, dict):
            params = method.params_from(params or {})
        params = method.resolve(project, params)
        if resume == "auto":
            resumed = find_resumable(project, method.name, params)
        elif resume is not None:
            raise InvalidInputError(f"resume must be 'auto', a run id or None, got {resume!r}")

    if resumed is not None:
        job = Job.reopen(project, resumed["id"], {"params": json.dumps(params, default=str)}, on_progress)
    else:
        job = Job.start(project, "train", method=method.name, params=params, on_progress=on_progress)
    with job:  # from here on the job ends (and releases the project's writer lock) whatever happens
        folder = run_dir(project, job.id)
        folder.mkdir(parents=True, exist_ok=True)
        setup = load(folder / SETUP) if resumed is not None else None
        if setup is None:
            setup = method.setup(project, params, job)
            atomic_save(setup, folder / SETUP)
            job.update_metrics(setup=setup.get("report", {}))
        # ``auto`` resolved for this machine (bf16 autocast on a native-bf16 CPU whose probe passed); the run's
        # recorded params keep ``auto``, so a resume elsewhere decides again. The loop records the amp it used.
        runtime = {**params, "precision": training_precision(project, params)}
        task = method.build_task(project, runtime, setup, job)
        run_training(job, task, runtime, folder)
    return TrainResult(job.id, get_run(project, job.id)["metrics"], resumed=resumed is not None)


def relabel_with(
    project: Project,
    method: TrainableMethod,
    run: dict,
    *,
    device: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
    activate: bool = True,
) -> RunResult:
    """Label every ok image with the model ``method`` trained in ``run`` (see :func:`labeler.train.apply.relabel`).

    Parameters
    ----------
    method : TrainableMethod
        The method that trained ``run``.
    run : dict
        The decoded ``train`` run (:func:`train_run`).
    """
    import torch

    from ..labels import active_run, set_active_run, write_predictions
    from .views import image_loader

    predictor = method.load_predictor(project, run, device)
    previous = active_run(project)
    images = project.images()
    if not images:
        raise NotReadyError("the project has no images to label: import some first")
    classes = list(predictor.classes)
    params = {
        "classes": classes,
        "multi_label": False,
        "train_run": run["id"],
        "train_method": run["method"],
        "train_status": run["status"],
        "epoch": predictor.info.get("epoch"),
        "selection": predictor.info.get("selection"),
        "base": predictor.info.get("base"),
        "device": str(predictor.device),
    }
    with Job.start(project, "label", method=run["method"], params=params, on_progress=on_progress) as job:
        loader = image_loader(
            [im["path"] for im in images],
            predictor.transform,
            batch_size,
            num_workers=workers,
            device=predictor.device,
            min_side=2 * predictor.image_size,
        )
        counts = np.zeros(len(classes), dtype=np.int64)
        conf, done, failed = 0.0, 0, 0
        job.progress(0, len(images), "labeling with the trained model", force=True)
        with torch.no_grad():
            for rows, views, bad in loader:
                failed += len(bad)
                if len(rows):
                    probs = predictor.predict_proba(views[0])
                    write_predictions(project, job.id, [images[r]["id"] for r in rows.tolist()], probs)
                    counts += np.bincount(probs.argmax(1), minlength=len(classes))
                    conf += float(probs.max(1).sum())
                done += len(rows) + len(bad)
                job.progress(done, len(images), f"labeled {done - failed} of {len(images)} images")
        n = int(counts.sum())
        metrics = {
            "n": n,
            "failed": failed,
            "mean_confidence": conf / n if n else None,
            "class_counts": dict(zip(classes, counts.tolist(), strict=True)),
            "train_run": run["id"],
            "epoch": predictor.info.get("epoch"),
        }
        metrics["comparison"] = compare_runs(project, previous["id"], job.id) if previous else None
        job.update_metrics(**metrics)
    if activate and n:
        set_active_run(project, job.id)
    return RunResult(job.id, metrics)


def compare_runs(project: Project, old_run_id: int, new_run_id: int, max_listed: int = 50) -> dict:
    """How two label runs differ on the images both labeled (classes compared by name).

    Returns ``{"old_run", "new_run", "n_common", "agreement", "changed", "changed_image_ids" (at most
    ``max_listed``), "transitions": [{"from", "to", "n"}] (the 10 most common changes), "accuracy":
    {"old", "new"}}`` — accuracies against folder-name ground truth (:func:`labeler.evaluate.evaluate`),
    None where there is none.
    """
    from ..evaluate import evaluate
    from ..labels import read_predictions

    ids_a, probs_a, cls_a = read_predictions(project, old_run_id)
    ids_b, probs_b, cls_b = read_predictions(project, new_run_id)
    common, ia, ib = np.intersect1d(ids_a, ids_b, return_indices=True)
    names_a = np.asarray(cls_a, dtype=object)[probs_a[ia].argmax(1)] if len(common) else np.zeros(0, dtype=object)
    names_b = np.asarray(cls_b, dtype=object)[probs_b[ib].argmax(1)] if len(common) else np.zeros(0, dtype=object)
    diff = names_a != names_b
    transitions = Counter(zip(names_a[diff].tolist(), names_b[diff].tolist(), strict=True))

    def _acc(run_id: int) -> float | None:
        try:
            return evaluate(project, run_id)["top1_accuracy"]
        except NotReadyError:
            return None

    return {
        "old_run": int(old_run_id),
        "new_run": int(new_run_id),
        "n_common": int(len(common)),
        "agreement": float((~diff).mean()) if len(common) else None,
        "changed": int(diff.sum()),
        "changed_image_ids": [int(i) for i in common[diff][:max_listed]],
        "transitions": [{"from": a, "to": b, "n": n} for (a, b), n in transitions.most_common(10)],
        "accuracy": {"old": _acc(old_run_id), "new": _acc(new_run_id)},
    }
