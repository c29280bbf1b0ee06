"""Errors Labeler raises at its public boundary. Each message says what is wrong and, in words, what to do.

A message never names a CLI command or flag: what to run or set is a :class:`Hint` (a step id, an option
name, a value), and each front end words it its own way — the CLI as a command line
(``labeler.cli._common.hint_text``), the app as its step and button (``labeler.ui.common.hint_text``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The steps a hint can point at. A step that makes something ("features") is run first; a view
#: ("runs", "descriptions") is looked at; "cancel" stops the run whose id is the hint's value.
STEPS = (
    "init",
    "classes",
    "import",
    "features",
    "label",
    "describe",
    "descriptions",
    "captions",
    "cluster",
    "train",
    "runs",
    "cancel",
    "audit",
    "audit_reset",
)


@dataclass(frozen=True)
class Hint:
    """What to do about an error, as data: run ``step`` first (with ``option`` set to ``value``), or, without
    a step, set ``option`` (to ``value``).

    Attributes
    ----------
    step : str or None
        One of :data:`STEPS`.
    option : str or None
        An option by its library name (``"batch_size"``, ``"clip"``, ``"precision"``).
    value : str or None
        The value to give ``option``; for ``step="cancel"`` the run id.
    """

    step: str | None = None
    option: str | None = None
    value: str | None = None

    def __post_init__(self):
        if self.step is not None and self.step not in STEPS:
            raise ValueError(f"unknown hint step {self.step!r}; one of {', '.join(STEPS)}")
        if self.step is None and self.option is None:
            raise ValueError("a hint needs a step or an option")


class LabelerError(Exception):
    """Base class: an error a user can act on (the CLI prints it and exits non-zero).

    Parameters
    ----------
    message : str
        What is wrong and what to do, in words (names files and fields; no CLI syntax).
    hint : Hint, optional
        The step to run or option to set, rendered by each front end (``str(exc)`` is the message alone).
    """

    def __init__(self, message: str = "", *args, hint: Hint | None = None):
        super().__init__(message, *args)
        self.hint = hint


class InvalidInputError(LabelerError, ValueError):
    """A file, field or argument is not valid."""


class ProjectNotFoundError(LabelerError):
    """No project at the given name or path."""


class ProjectExistsError(LabelerError):
    """A project already exists where a new one was asked for."""


class ModelUnavailableError(LabelerError):
    """Model weights or configs cannot be found or loaded."""


class NotReadyError(LabelerError):
    """A step needs an earlier step first (e.g. features before labeling)."""


class JobCancelled(LabelerError):
    """A job stopped because a cancel was requested; its committed work is kept."""
