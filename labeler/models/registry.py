"""Named model builders: ``register_model("clip", "tiny-random")`` maps a name to a builder function.

One :class:`labeler.registry.Registry` per kind (:data:`MODELS`). Names that are not registered fall
through to open_clip (CLIP) or transformers (DINO). The built-in ``tiny-random`` builders are
registered by :mod:`labeler.models` when it is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidInputError
from ..registry import Registry

KINDS = ("clip", "dino")

#: kind -> name -> builder(pretrained, device, precision) -> encoder
MODELS: dict[str, Registry[Callable[..., Any]]] = {
    "clip": Registry("registered CLIP model"),
    "dino": Registry("registered DINO model"),
}


def models_of(kind: str) -> Registry[Callable[..., Any]]:
    """The registry of one model kind (``clip`` or ``dino``).

    Raises
    ------
    InvalidInputError
        Unknown kind.
    """
    try:
        return MODELS[kind]
    except (KeyError, TypeError):
        raise InvalidInputError(f"model kind must be one of {', '.join(KINDS)}, got {kind!r}") from None


def register_model(
    kind: str, name: str, *, replace: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``builder(pretrained, device, precision)`` under ``(kind, name)``.

    >>> @register_model("clip", "my-model")          # doctest: +SKIP
    ... def build(pretrained, device, precision): ...

    Raises
    ------
    InvalidInputError
        Unknown kind, or the name is taken and ``replace`` is False.
    """
    return models_of(kind).register(name, replace=replace)


def get_builder(kind: str, name: str) -> Callable[..., Any] | None:
    """The registered builder for ``(kind, name)``, or None (the name then goes to open_clip / transformers)."""
    models = models_of(kind)
    return models.get(name) if name in models else None


def registered(kind: str) -> list[str]:
    """Registered names of one kind, sorted."""
    return models_of(kind).names()
