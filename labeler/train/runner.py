"""Start, resume and record training jobs by method name: a ``runs`` row of kind ``train`` plus ``runs/<id>/``.

:func:`train` turns a method name (or a resumed run's ``method``) into the registered method and hands
it to :func:`labeler.train.runs.train_method`, which does the work; the run-folder helpers live there
too (``setup.pt``, ``checkpoint.pt``, ``best.pt``) and are re-exported here.

A rerun of the same training command (same method and params, runtime-only options aside) continues
the newest interrupted or cancelled run with those params instead of starting over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from ..jobs import ProgressCallback
from ..methods import get_method
from ..methods.trainable import TrainableMethod
from .runs import TrainResult, find_resumable, run_dir, signature, train_method, train_run

if TYPE_CHECKING:
    from ..project import Project

__all__ = ["TrainResult", "find_resumable", "run_dir", "signature", "train", "train_run", "training_methods"]


def training_methods() -> list[str]:
    """The names of the available methods that train (registration order)."""
    from ..methods import METHODS

    return [e.name for e in METHODS.list() if e.available and issubclass(e.obj, TrainableMethod)]


def train(
    project: Project,
    method: str | TrainableMethod | None,
    params: Any = None,
    *,
    resume: int | str | None = "auto",
    overrides: dict | None = None,
    on_progress: ProgressCallback | None = None,
) -> TrainResult:
    """Run (or continue) a training job of a trainable method.

    Parameters
    ----------
    method : str, TrainableMethod or None
        None only with ``resume`` a run id: the run's own method.
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
    if isinstance(resume, int) and not isinstance(resume, bool):
        resumed = train_run(project, resume)
        if method is not None:
            name = method if isinstance(method, str) else method.name
            if name != resumed["method"]:
                raise InvalidInputError(f"run {resumed['id']} trained {resumed['method']!r}, not {name!r}")
        method = get_method(resumed["method"])
    else:
        method = get_method(method) if isinstance(method, str) else method
        if not isinstance(method, TrainableMethod):
            name = getattr(method, "name", method)
            raise InvalidInputError(
                f"method {name!r} does not train; training methods: {', '.join(training_methods())}"
            )
    return train_method(project, method, params, resume=resume, overrides=overrides, on_progress=on_progress)
