"""Use a trained model: relabel a project (``label --run``), compare two label runs, label new image files.

>>> res = relabel(project, train_run_id)                 # doctest: +SKIP  (a new, active label run)
>>> res.metrics["comparison"]["agreement"]               # doctest: +SKIP  (vs the previously active run)
>>> probs = apply_model("model.pt", ["new/1.jpg"])      # doctest: +SKIP  ((1, C); classes in the file)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import NotReadyError

if TYPE_CHECKING:
    from PIL import Image

    from ..jobs import ProgressCallback
    from ..methods.base import RunResult
    from ..project import Project


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
    import torch

    from ..jobs import Job
    from ..labels import active_run, set_active_run, write_predictions
    from ..methods import get_method
    from ..methods.base import RunResult
    from .runner import train_run
    from .views import image_loader

    run = train_run(project, train_run_id)
    method = get_method(run["method"])
    if not hasattr(method, "load_predictor"):
        raise NotReadyError(f"run {run['id']} ({run['method']}) has no model to label with")
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
