"""Labeler: annotation-free image labeling with CLIP, DINO and LLM descriptions.

The library is the front door; the CLI (``python -m labeler``) and the browser app (``python app.py``)
only call it::

    from labeler import Project, compute_features, export, get_method, import_sources, load_clip

    project = Project.create("pets", ["cat", "dog"])
    import_sources(project, ["~/Pictures/pets"])
    compute_features(project, load_clip("tiny-random"))
    get_method("zeroshot").run(project)
    export(project, "csv", "labels.csv")

Every name in :data:`__all__` is imported on first use, so ``import labeler`` stays cheap (no torch,
open_clip or transformers until a model or a feature computation needs them).

``train`` and ``export`` are also a subpackage and a module (``labeler.train.loop``,
``labeler.export.formats``); both can be called (:mod:`labeler.frontdoor`): ``train(...)`` is
:func:`labeler.train.runner.train`, ``export(...)`` is :func:`labeler.export.export`.
"""

from __future__ import annotations

import importlib
import sys

__version__ = "0.1.0"

#: Front-door name → the module that defines it (imported on first use).
_LAZY = {
    # projects and images
    "Project": "project",
    "import_sources": "ingest",
    "ImportReport": "ingest",
    # features and models
    "compute_features": "features",
    "feature_matrix": "features",
    "load_clip": "models",
    "load_dino": "models",
    "list_models": "models",
    # labeling, review, training
    "get_method": "methods",
    "list_methods": "methods",
    "register_method": "methods",
    "final_labels": "labels",
    "review_queue": "review",
    "relabel": "train.apply",
    "apply_model": "train.apply",
    # output and the whole pipeline
    "export_report": "export",
    "register_exporter": "export",
    "run_pipeline": "pipeline",
    "train": "train",  # the package, callable (labeler.frontdoor): train(...) is labeler.train.runner.train
    "export": "export",  # the module, callable: export(...) is labeler.export.export
    # errors
    "LabelerError": "errors",
    "Hint": "errors",
    "InvalidInputError": "errors",
    "NotReadyError": "errors",
    "ModelUnavailableError": "errors",
    "ProjectNotFoundError": "errors",
    "ProjectExistsError": "errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        value = module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)
        setattr(sys.modules[__name__], name, value)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
