"""The ``model`` exporter, kept importable here for old code: it now lives in :mod:`labeler.export`.

It is registered with the other exporters there, so ``export(project, "model", "out.pt")`` works
whatever was imported first. Load the file with :class:`labeler.train.student.TrainedModel` or
label new images with :func:`labeler.train.apply.apply_model`.
"""

from __future__ import annotations

from ..export import export_trained_model

__all__ = ["export_trained_model"]
