"""Training infrastructure shared by the training methods (NoLA, LaFTer; later LatteCLIP and CDUL).

* :mod:`~labeler.train.runner` — :func:`train`: a ``train`` job (a ``runs`` row + ``runs/<id>/``),
  new or resumed (``resume="auto"`` continues an interrupted run with the same params), by method name.
* :mod:`~labeler.train.runs` — the same for a method object (what a method's own ``run`` calls),
  relabeling with a trained model, :func:`compare_runs`, the run folder.
* :mod:`~labeler.train.loop` — :class:`TrainTask` (what a method provides) and :func:`run_training`
  (epochs, AMP on GPU, per-epoch metrics and checkpoints, cancel between steps, label-free model
  selection and early stopping).
* :mod:`~labeler.train.data` — verified labels, training / held-out / validation splits.
* :mod:`~labeler.train.prompt` — :class:`PromptedCLIP`, VPT-shallow prompts for open_clip ViTs.
* :mod:`~labeler.train.views` — weak and strong views, the decoding DataLoader.
* :mod:`~labeler.train.student` — the prompt-tuning task, its teachers, the model file, :class:`TrainedModel`.
* :mod:`~labeler.train.apply` — :func:`relabel` (``label --run``), :func:`compare_runs`, :func:`apply_model`.

Nothing is imported eagerly (torch stays unimported until training or applying a model); the ``model``
exporter lives with the other exporters in :mod:`labeler.export`.
"""

from __future__ import annotations

import importlib

from ..frontdoor import make_callable

_LAZY = {
    "train": "runner",
    "TrainResult": "runs",
    "find_resumable": "runs",
    "run_dir": "runs",
    "TrainTask": "loop",
    "run_training": "loop",
    "TrainParams": "params",
    "PromptedCLIP": "prompt",
    "TrainedModel": "student",
    "relabel": "apply",
    "compare_runs": "runs",
    "apply_model": "apply",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
make_callable(__name__)  # labeler.train(...) is labeler.train.runner.train(...): the front door's name for it
