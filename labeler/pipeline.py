"""A folder of images to a label file in one call: open (or create) the project, import, compute CLIP features,
pseudo-label, export. What ``labeler run`` does, as a library function.

>>> from labeler.pipeline import run_pipeline                                     # doctest: +SKIP
>>> res = run_pipeline("~/Pictures/pets", ["cat", "dog"], "labels.csv", clip="tiny-random")
>>> res.imported.added, res.label.run_id, res.export.path

Every step is the library function the matching CLI command calls, so a rerun resumes: images already
imported and features already computed are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InvalidInputError
from .project import Project, resolve_project_path

if TYPE_CHECKING:
    from .export import ExportReport
    from .ingest import ImportReport
    from .jobs import ProgressCallback
    from .methods.base import RunResult

#: The steps, in order, as named to ``progress`` and ``on_step``.
STEPS = ("project", "import", "features", "label", "export")


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` did; filled in step by step (``on_step`` sees it grow).

    Attributes
    ----------
    project : Project
        The project opened or created.
    classes_updated : bool
        True when an existing project's class list was replaced by the one given.
    imported : ImportReport or None
        The import step's report.
    features : list of dict
        One :func:`labeler.features.compute_features` result per encoder (CLIP).
    label : RunResult or None
        The label run (``run_id``, ``metrics``).
    export : ExportReport or None
        What was written, and where.
    """

    project: Project
    classes_updated: bool = False
    imported: ImportReport | None = None
    features: list[dict] = field(default_factory=list)
    label: RunResult | None = None
    export: ExportReport | None = None


def run_pipeline(
    source: str | os.PathLike,
    classes: Sequence[str],
    output: str | os.PathLike,
    *,
    project: str | os.PathLike | None = None,
    multi_label: bool = False,
    clip: str = "ViT-B-32",
    pretrained: str | None = "auto",
    method: str = "zeroshot",
    format: str = "csv",
    device: str = "auto",
    progress: Callable[[str], ProgressCallback | None] | None = None,
    on_step: Callable[[str, PipelineResult], None] | None = None,
) -> PipelineResult:
    """Import ``source``, compute CLIP features, label with ``method`` and export ``format`` to ``output``.

    Parameters
    ----------
    source : path
        A folder of images (searched recursively) or a .zip.
    classes : sequence of str
        The class names; an existing project's class list is replaced when it differs.
    output : path
        The export's file (csv, jsonl, model) or folder (imagefolder).
    project : str or path, optional
        Project name (under $LABELER_DATA_DIR) or folder; default: the source's name.
    multi_label : bool
        For a new project: an image may have several classes.
    clip, pretrained : str
        The CLIP model and its pretrained tag or checkpoint (``"auto"``: the model's default; None: random init).
    method : str
        The labeling method (see :func:`labeler.methods.list_methods`).
    format : str
        The export format (see :func:`labeler.export.formats`).
    device : str
        auto, cpu, cuda, cuda:1, mps.
    progress : callable, optional
        ``progress(step)`` gives the ProgressCallback for the ``import``, ``features`` and ``label`` steps (or None).
    on_step : callable, optional
        ``on_step(step, result)`` after each of :data:`STEPS`, with the result so far.

    Returns
    -------
    PipelineResult
    """
    from .export import export_report
    from .features import compute_features
    from .ingest import import_sources
    from .methods import get_method
    from .models import load_encoder
    from .precision import choose_encoder

    folder = Path(source)
    if not folder.exists():
        raise InvalidInputError(f"{folder} does not exist: give a folder of images (or a zip)")
    names = list(classes)
    if not names:
        raise InvalidInputError("give the class names, e.g. classes=['cat', 'dog']")
    progress = progress or (lambda step: None)
    done = on_step or (lambda step, result: None)

    root = resolve_project_path(project or (folder.resolve().stem or "images"))
    opened = Project.open_or_create(root, names, multi_label=multi_label)
    result = PipelineResult(opened)
    if opened.classes != names:
        opened.set_classes(names)
        result.classes_updated = True
    done("project", result)

    result.imported = import_sources(opened, [folder], on_progress=progress("import"))
    done("import", result)

    model, _choice = choose_encoder(opened, load_encoder("clip", clip, pretrained, device=device), "auto")
    result.features = [compute_features(opened, model, on_progress=progress("features"))]
    done("features", result)

    labeler = get_method(method)
    params = labeler.params_from({"device": device, "features": None})
    result.label = labeler.run(opened, params, on_progress=progress("label"))
    done("label", result)

    result.export = export_report(opened, format, output)
    done("export", result)
    return result
