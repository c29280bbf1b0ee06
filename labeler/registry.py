"""One registry type for everything Labeler looks up by name: models, methods, description backends, exporters.

>>> methods = Registry("method")
>>> @methods.register("echo")
... class Echo:
...     "Repeat the input."
>>> methods.get("echo") is Echo, methods.names(), "echo" in methods
(True, ['echo'], True)
>>> methods.register("echo", object())
Traceback (most recent call last):
...
labeler.errors.InvalidInputError: method 'echo' is already registered; pass replace=True to replace it

Every registry has the same verbs: :meth:`~Registry.register` (refuses to overwrite a name unless
``replace=True``; works as a decorator too), :meth:`~Registry.get` (an unknown name raises a
:class:`~labeler.errors.LabelerError` that lists the known ones), :meth:`~Registry.names`,
:meth:`~Registry.list` (what the UI and ``--help`` show), ``in`` and iteration. Names on the
roadmap can be declared with :meth:`~Registry.plan`: they are listed as not available, with the
reason, and asking for one says why and what is available now.

Each package that owns a concept creates its registry and registers its built-ins explicitly when it
is imported (``labeler.methods``, ``labeler.describe``, ``labeler.export``, ``labeler.models``), so the
full list is there whatever was imported first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from .errors import InvalidInputError

T = TypeVar("T")

_MISSING: Any = object()


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One line of :meth:`Registry.list`.

    Attributes
    ----------
    name : str
        The registered (or planned) name.
    summary : str
        One line saying what it is (a planned entry: the reason it cannot be picked yet).
    available : bool
        False for a planned entry.
    reason : str
        Why it is not available ("" when it is).
    obj : object or None
        The registered object (None for a planned entry).
    """

    name: str
    summary: str
    available: bool = True
    reason: str = ""
    obj: T | None = None


def _first_doc_line(obj: Any) -> str:
    lines = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def default_summary(obj: Any) -> str:
    """``obj.summary`` if it is a non-empty string, else the first line of its docstring."""
    summary = getattr(obj, "summary", None)
    return summary if isinstance(summary, str) and summary else _first_doc_line(obj)


class Registry(Generic[T]):
    """Objects of one kind by name.

    Parameters
    ----------
    kind : str
        What the names are, for messages (``method``, ``description backend``, ``export format``).
    summary : callable, optional
        ``summary(obj) -> str`` for :meth:`list`; default :func:`default_summary`.
    """

    def __init__(self, kind: str, summary: Callable[[T], str] | None = None) -> None:
        self.kind = kind
        self._summary = summary or default_summary
        self._items: dict[str, T] = {}
        self._planned: dict[str, str] = {}

    # --- registering --------------------------------------------------------------------------------------------
    @overload
    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, replace: bool = False) -> T: ...

    def register(self, name: str, obj: T = _MISSING, *, replace: bool = False) -> T | Callable[[T], T]:
        """Register ``obj`` as ``name``; without ``obj``, a decorator that does so.

        Registering the very same object again is a no-op; a planned name becomes available.

        Raises
        ------
        InvalidInputError
            ``name`` is empty or not a string, or is taken by another object and ``replace`` is False.
        """
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if obj is _MISSING:

            def deco(item: T) -> T:
                return self.register(name, item, replace=replace)

            return deco
        if name in self._items and self._items[name] is not obj and not replace:
            raise InvalidInputError(f"{self.kind} {name!r} is already registered; pass replace=True to replace it")
        self._items[name] = obj
        self._planned.pop(name, None)
        return obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return what was registered (for tests and plugins that clean up).

        Raises
        ------
        InvalidInputError
            ``name`` is not registered.
        """
        self.get(name)
        return self._items.pop(name)

    def plan(self, name: str, reason: str) -> None:
        """Declare a name on the roadmap: listed as not available with ``reason``; ignored once registered."""
        if name not in self._items:
            self._planned[name] = reason

    # --- looking up ---------------------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises
        ------
        InvalidInputError
            ``name`` is planned (the message gives the reason) or unknown; either way the message lists
            the names available now.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            pass
        known = ", ".join(self.names()) or "(none)"
        if isinstance(name, str) and name in self._planned:
            raise InvalidInputError(f"{self._planned[name]}; available now: {known}") from None
        raise InvalidInputError(f"unknown {self.kind} {name!r}; choose one of {known}") from None

    def names(self) -> list[str]:
        """The registered names, sorted (planned ones not included)."""
        return sorted(self._items)

    def planned(self) -> dict[str, str]:
        """Planned names and why each is not available yet, in the order they were declared."""
        return dict(self._planned)

    def list(self) -> list[Entry[T]]:
        """What the UI and ``--help`` show: every registered entry by name, then the planned ones."""
        out = [Entry(n, self._summary(self._items[n]), obj=self._items[n]) for n in self.names()]
        out += [Entry(n, why, available=False, reason=why) for n, why in self._planned.items()]
        return out

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


__all__ = ["Entry", "Registry", "default_summary"]
