"""The ``model`` exporter: a trained model as one ``torch.save`` file (see :mod:`labeler.train.student`).

Registered when :mod:`labeler.train` is imported (``import labeler.methods`` does it), so
``export(project, "model", "out.pt")`` works next to the label exporters. Load the file with
:class:`labeler.train.student.TrainedModel` or label new images with :func:`labeler.train.apply.apply_model`.
"""

from __future__ import annotations

from pathlib import Path

from store import now

from ..errors import InvalidInputError, NotReadyError
from ..export import ExportReport, register_exporter
from ..project import Project


def _pick_run(project: Project, run: int | None) -> dict:
    from ..jobs import list_runs
    from ..labels import active_run
    from .loop import BEST
    from .runner import run_dir, train_run

    if run is not None:
        return train_run(project, run)
    active = active_run(project)
    if active and active["params"].get("train_run") is not None:
        return train_run(project, active["params"]["train_run"])
    for candidate in list_runs(project, kind="train"):
        if candidate["status"] == "done" and (run_dir(project, candidate["id"]) / BEST).is_file():
            return candidate
    raise NotReadyError("no trained model in this project: train one first (`python -m labeler train PROJECT`)")


@register_exporter("model", suffix=".pt")
def export_trained_model(project: Project, out: Path, *, run: int | None = None) -> ExportReport:
    """The trained model (prompts + LayerNorms + head, base model name, classes) as one torch file."""
    from .loop import BEST, atomic_save
    from .runner import run_dir
    from .student import read_model_file

    chosen = _pick_run(project, run)
    src = run_dir(project, chosen["id"]) / BEST
    if not src.is_file():
        raise NotReadyError(f"run {chosen['id']} has no trained model yet (no epoch finished)")
    data = read_model_file(src)
    if out.exists() and out.is_dir():
        raise InvalidInputError(f"{out} is a folder; give a file name such as model.pt")
    data.update({"project": project.name, "exported_at": now(), "train_status": chosen["status"]})
    atomic_save(data, out)
    extra = {
        "train_run": chosen["id"],
        "method": data.get("method"),
        "base": data.get("base"),
        "classes": len(data.get("classes", [])),
        "epoch": data.get("epoch"),
    }
    return ExportReport("model", out, n_files=1, extra=extra)
