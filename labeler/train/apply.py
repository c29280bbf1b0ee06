"""Use a trained model: relabel a project (``label --run``), compare two label runs, label new image files.

>>> res = relabel(project, train_run_id)                 # doctest: +SKIP  (a new, active label run)
>>> res.metrics["comparison"]["agreement"]               # doctest: +SKIP  (vs the previously active run)
>>> probs = apply_model("model.pt", ["new/1.jpg"])      # doctest: +SKIP  ((1, C); classes in the file)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import NotReadyError
from ..methods import get_method
from .runs import compare_runs, relabel_with, train_run

if TYPE_CHECKING:
    from PIL import Image

    from ..jobs import ProgressCallback, RunResult
    from ..project import Project

__all__ = ["apply_model", "compare_runs", "relabel"]


def relabel(
    project: Project,
    train_run_id: int,
    *,
    device: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
    activate: bool = True,
) -> RunResult:
    """Label every ok image with the trained model of a ``train`` run: a new label run (active by default).

    The model is the run's selected one (``best.pt``; an unfinished run's best so far). The result's
    metrics hold ``n``, ``failed``, ``class_counts``, ``mean_confidence``, ``train_run``, ``epoch`` and
    ``comparison`` with the label run that was active before (:func:`compare_runs`; None if there was none).
    """
    run = train_run(project, train_run_id)
    method = get_method(run["method"])
    if not hasattr(method, "load_predictor"):
        raise NotReadyError(f"run {run['id']} ({run['method']}) has no model to label with")
    return relabel_with(
        project,
        method,
        run,
        device=device,
        batch_size=batch_size,
        workers=workers,
        on_progress=on_progress,
        activate=activate,
    )


def apply_model(
    path: str | os.PathLike,
    images: Sequence[str | os.PathLike | Image.Image],
    *,
    device: str = "auto",
    batch_size: int = 64,
) -> np.ndarray:
    """Class probabilities (N, C) of new images under an exported model file (``export --format model``).

    ``images``: file paths or PIL images. The class order is the file's ``classes``
    (``TrainedModel.load(path).classes``). The base CLIP weights must be loadable here (by name and
    pretrained tag, from the Hugging Face cache or a local file). Raises ``InvalidInputError`` for an
    image that cannot be read.
    """
    import torch

    from ..ingest import load_rgb
    from .student import TrainedModel

    model = TrainedModel.load(path, device)
    items = list(images)
    if not items:
        return np.zeros((0, len(model.classes)), dtype=np.float32)
    out = []
    for start in range(0, len(items), batch_size):
        batch = []
        for item in items[start : start + batch_size]:
            img = item if hasattr(item, "convert") else load_rgb(item)
            batch.append(model.transform(img.convert("RGB")))
        out.append(model.predict_proba(torch.stack(batch)))
    return np.concatenate(out).astype(np.float32)
