"""Use a trained model: relabel a project (``label --run``), compare two label runs, label new image files.

>>> res = relabel(project, train_run_id)                 # doctest: +SKIP  (a new, active label run)
>>> res.metrics["comparison"]["agreement"]               # doctest: +SKIP  (vs the previously active run)
>>> probs = apply_model("model.pt", ["new/1.jpg"])      # doctest: +SKIP  ((1, C); classes in the file)
>>> res = apply_to_files("model.pt", ["new/", "x.jpg"])  # doctest: +SKIP  (folders expanded, bad files skipped)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidInputError, NotReadyError
from ..methods import get_method
from .runs import compare_runs, train_run

if TYPE_CHECKING:
    from PIL import Image

    from ..jobs import ProgressCallback, RunResult
    from ..project import Project

__all__ = ["AppliedFiles", "apply_model", "apply_to_files", "compare_runs", "image_files", "relabel"]


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
    return method.relabel(
        project, run, device=device, batch_size=batch_size, workers=workers, on_progress=on_progress, activate=activate
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
    (``TrainedModel.load(path).classes``); a CDUL file gives its head's per-class (multi-label) scores. The base
    CLIP weights (a CDUL head on DINO features: the DINO ones) must be loadable here (by name and
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
            img = item if hasattr(item, "convert") else load_rgb(item, getattr(model, "min_side", None))
            batch.append(model.transform(img.convert("RGB")))
        out.append(model.predict_proba(torch.stack(batch)))
    return np.concatenate(out).astype(np.float32)


@dataclass
class AppliedFiles:
    """What :func:`apply_to_files` did.

    ``paths`` (N,) the images it labeled, in order; ``probs`` (N, C) their class probabilities, columns in
    ``classes`` order; ``skipped``: ``{"path", "reason"}`` for each file or folder it could not label.
    A multi-label model (CDUL) also gives ``thresholds`` (C,) and ``labels``: per image the classes whose
    score reaches their threshold (its top class when none does); single-label: ``labels`` is empty.
    """

    classes: list[str]
    paths: list[str] = field(default_factory=list)
    probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    skipped: list[dict] = field(default_factory=list)
    multi_label: bool = False
    thresholds: list[float] | None = None
    labels: list[list[str]] = field(default_factory=list)


def image_files(paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[dict]]:
    """Expand ``paths`` into image files: a folder stands for the image files below it (recursive, sorted).

    Returns
    -------
    files : list of str
        Files given by name (whatever their extension) and the image files (by extension) found in folders.
    skipped : list of dict
        ``{"path", "reason"}`` for a path that does not exist and a folder without image files.
    """
    from ..ingest import IMAGE_EXTENSIONS, is_image_name

    files: list[str] = []
    skipped: list[dict] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found = []
            for dirpath, dirnames, names in os.walk(p):
                dirnames.sort()
                found += [os.path.join(dirpath, n) for n in sorted(names) if is_image_name(n)]
            if not found:
                exts = ", ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
                skipped.append({"path": p, "reason": f"a folder with no image files ({exts}) in it"})
            files += found
        elif not os.path.exists(p):
            skipped.append({"path": p, "reason": "does not exist"})
        else:
            files.append(p)
    return files, skipped


def apply_to_files(
    path: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    *,
    device: str = "auto",
    batch_size: int = 64,
) -> AppliedFiles:
    """Label image files and folders with an exported model file, skipping what cannot be read.

    Parameters
    ----------
    path : path
        A model file (``export --format model``).
    images : sequence of paths
        Image files, or folders (their image files, recursively: :func:`image_files`).
    device, batch_size
        As in :func:`apply_model`.

    Returns
    -------
    AppliedFiles
        The labeled files with their (N, C) probabilities (multi-label: per-class scores and label sets by the
        file's thresholds), and each skipped file with the reason (missing, not an image, truncated, …); one
        bad file does not stop the others.
    """
    import torch

    from ..ingest import load_rgb
    from .student import TrainedModel

    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
    files, skipped = image_files(images)
    model = TrainedModel.load(path, device)
    result = AppliedFiles(classes=list(model.classes), skipped=skipped)
    min_side = getattr(model, "min_side", None)  # CDUL: decode as the feature cache did (same features)
    out: list[np.ndarray] = []
    batch: list = []

    def flush() -> None:
        if batch:
            out.append(model.predict_proba(torch.stack(batch)))
            batch.clear()

    for f in files:
        try:
            batch.append(model.transform(load_rgb(f, min_side).convert("RGB")))
        except (InvalidInputError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
            skipped.append({"path": f, "reason": reason})
            continue
        result.paths.append(f)
        if len(batch) >= batch_size:
            flush()
    flush()
    classes = len(result.classes)
    result.probs = np.concatenate(out).astype(np.float32) if out else np.zeros((0, classes), dtype=np.float32)
    if getattr(model, "multi_label", False):
        from ..methods.cdul import label_sets

        result.multi_label = True
        result.thresholds = [float(t) for t in model.thresholds]
        sets = label_sets(result.probs, model.thresholds) if len(result.probs) else []
        result.labels = [[result.classes[c] for c in row] for row in sets]
    return result
