"""What every labeling method is (a params dataclass and ``run(project, params, on_progress)``), and their registry.

The built-in methods are registered by :mod:`labeler.methods` itself when it is imported.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InvalidInputError
from ..jobs import RunResult
from ..registry import Registry

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


#: Methods by name (classes; :func:`get_method` makes an instance). See :class:`labeler.registry.Registry`.
METHODS: Registry[type[Method]] = Registry("method")


def register_method(cls: type[Method], *, replace: bool = False) -> type[Method]:
    """Make a method class available by its ``name`` (usable as a class decorator).

    Raises
    ------
    InvalidInputError
        Another method already has that name and ``replace`` is False.
    """
    return METHODS.register(cls.name, cls, replace=replace)


def get_method(name: str) -> Method:
    """An instance of the method registered as ``name``.

    Raises
    ------
    InvalidInputError
        Unknown or planned method; the message lists the methods available now.
    """
    return METHODS.get(name)()


def list_methods() -> list[dict[str, Any]]:
    """Every method, ``{"name", "available", "summary"}``; planned ones carry the reason as summary."""
    return [{"name": e.name, "available": e.available, "summary": e.summary} for e in METHODS.list()]


def method_defaults(name: str) -> dict:
    """The default options of a method (its params dataclass) as a JSON-ready dict."""
    method = get_method(name)
    params = method.Params()
    out = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        out[f.name] = value if isinstance(value, (str, int, float, bool, list, dict, type(None))) else str(value)
    return out
