"""Errors Labeler raises at its public boundary. Each message says what to do."""


class LabelerError(Exception):
    """Base class: an error a user can act on (the CLI prints it and exits non-zero)."""


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
