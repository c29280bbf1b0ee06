"""Method registry: ``zeroshot``, ``nola`` and ``lafter`` (trainable) now; ``latteclip`` and ``cdul`` as they land.

>>> from labeler.methods import get_method            # doctest: +SKIP
>>> method = get_method("zeroshot")
>>> result = method.run(project, method.params_from({"templates": "simple"}))
"""

from __future__ import annotations

from ..errors import InvalidInputError
from .base import Method, RunResult

METHODS: dict[str, type[Method]] = {}

#: Methods on the roadmap, with the one-line reason they cannot be picked yet.
PLANNED: dict[str, str] = {
    "nola": "NoLA (CLIP + DINO alignment + prompt tuning) is not implemented yet",
    "latteclip": "LatteCLIP (LMM descriptions + prototypes) is not implemented yet",
    "cdul": "CDUL (multi-label global-local aggregation) is not implemented yet",
}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    METHODS[cls.name] = cls
    PLANNED.pop(cls.name, None)
    return cls


def get_method(name: str) -> Method:
    """An instance of the method registered as ``name``."""
    if name in METHODS:
        return METHODS[name]()
    if name in PLANNED:
        raise InvalidInputError(f"{PLANNED[name]}; available now: {', '.join(sorted(METHODS))}")
    raise InvalidInputError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")


def list_methods() -> list[dict]:
    """Every method, ``{"name", "available", "summary"}``; planned ones carry the reason as summary."""
    out = [{"name": n, "available": True, "summary": m.summary} for n, m in sorted(METHODS.items())]
    out += [{"name": n, "available": False, "summary": why} for n, why in PLANNED.items()]
    return out


from . import lafter, nola, zeroshot  # noqa: E402,F401  (register themselves; nola, lafter train: labeler.train)

__all__ = ["METHODS", "PLANNED", "Method", "RunResult", "get_method", "list_methods", "register_method"]
