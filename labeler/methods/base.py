"""What every labeling method is: a params dataclass and ``run(project, params, on_progress)``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InvalidInputError
from ..jobs import RunResult

if TYPE_CHECKING:
    from ..jobs import ProgressCallback
    from ..project import Project


class Method:
    """Base class. Subclasses set ``name``, ``summary``, ``Params`` and implement :meth:`run`."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Params: ClassVar[type]

    @classmethod
    def params_from(cls, values: dict[str, Any] | None = None) -> Any:
        """Build the params dataclass from a dict, rejecting unknown fields by name."""
        values = {k: v for k, v in (values or {}).items() if v is not None}
        known = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInputError(
                f"method {cls.name!r} has no option {', '.join(unknown)}; its options are {', '.join(sorted(known))}"
            )
        return cls.Params(**values)

    def run(self, project: Project, params: Any, on_progress: ProgressCallback | None = None) -> RunResult:
        raise NotImplementedError
