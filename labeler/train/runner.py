"""Start, resume and record training jobs: a ``runs`` row of kind ``train`` plus ``runs/<id>/`` files.

``runs/<id>/setup.pt``
    What the run fixed before its first step (image rows, splits, verified labels, the text classifier,
    the teacher's labels or weights): a resumed run reads it back instead of recomputing, so it trains
    on exactly the same targets even if labels changed meanwhile.
``runs/<id>/checkpoint.pt``
    Written after every epoch (see :mod:`labeler.train.loop`).
``runs/<id>/best.pt``
    The model selected so far (the method's model file; what ``label --run`` and the exporter use).

A rerun of the same training command (same method and params, runtime-only options aside) continues
the newest interrupted or cancelled run with those params instead of starting over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from ..errors import InvalidInputError, NotReadyError
from ..jobs import Job, ProgressCallback, get_run, list_runs
from .params import RUNTIME_FIELDS

if TYPE_CHECKING:
    from ..project import Project


@dataclass
class TrainResult:
    """Outcome of :func:`train`: the train run, its metrics, and whether it continued an earlier attempt."""

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
        raise InvalidInputError(f"there is no run {run_id!r}: list runs with `python -m labeler runs`") from None
    if run["kind"] != "train":
        raise InvalidInputError(f"run {run['id']} is a {run['kind']!r} run, not a training run")
    return run


def _reopen(project: Project, run_id: int, params: dict, on_progress: ProgressCallback | None) -> Job:
    return Job.reopen(project, run_id, {"params": json.dumps(params, default=str)}, on_progress)


def train(
    project: Project,
    method,
    params: Any = None,
    *,
    resume: int | str | None = "auto",
    overrides: dict | None = None,
    on_progress: ProgressCallback | None = None,
) -> TrainResult:
    """Run (or continue) a training job of a trainable method.

    Parameters
    ----------
    method : str or TrainableMethod
    params : the method's Params dataclass, a dict of options, or None (defaults)
    resume : "auto", int or None
        ``"auto"``: continue the newest interrupted/cancelled run with the same params if there is one;
        an int: continue that run (its own params; ``overrides`` may change device, precision, workers);
        None: always start a new run.
    overrides : dict, optional
        Runtime options (``device``, ``precision``, ``workers``) for a resumed run.

    Raises
    ------
    JobCancelled
        The run was cancelled (its last finished epoch is checkpointed: resume it).
    """
    from ..methods import get_method
    from ..methods.trainable import TrainableMethod
    from .loop import SETUP, atomic_save, load, run_training

    resumed = None
    if isinstance(resume, int) and not isinstance(resume, bool):
        resumed = train_run(project, resume)
        if method is not None:
            name = method if isinstance(method, str) else method.name
            if name != resumed["method"]:
                raise InvalidInputError(f"run {resumed['id']} trained {resumed['method']!r}, not {name!r}")
        method = get_method(resumed["method"])
        if resumed["status"] == "done":
            raise InvalidInputError(
                f"run {resumed['id']} already finished; relabel with it (`label --run {resumed['id']}`) or train anew"
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
        method = get_method(method) if isinstance(method, str) else method
        if not isinstance(method, TrainableMethod):
            raise InvalidInputError(f"method {method.name!r} does not train; training methods: nola, lafter")
        if params is None or isinstance(params, dict):
            params = method.params_from(params or {})
        params = method.resolve(project, params)
        if resume == "auto":
            resumed = find_resumable(project, method.name, params)
        elif resume is not None:
            raise InvalidInputError(f"resume must be 'auto', a run id or None, got {resume!r}")

    if resumed is not None:
        job = _reopen(project, resumed["id"], params, on_progress)
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
        task = method.build_task(project, params, setup, job)
        run_training(job, task, params, folder)
    return TrainResult(job.id, get_run(project, job.id)["metrics"], resumed=resumed is not None)
