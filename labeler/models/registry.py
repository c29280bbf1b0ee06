"""Named model builders: ``register_model("clip", "tiny-random")`` maps a name to a function.

Names that are not registered fall through to open_clip (CLIP) or transformers (DINO).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: (kind, name) -> builder(pretrained, device, precision) -> encoder
_REGISTRY: dict[tuple[str, str], Callable[..., Any]] = {}
KINDS = ("clip", "dino")


def register_model(kind: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``builder(pretrained, device, precision)`` under ``(kind, name)``.

    >>> @register_model("clip", "my-model")          # doctest: +SKIP
    ... def build(pretrained, device, precision): ...
    """
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[(kind, name)] = fn
        return fn

    return deco


def get_builder(kind: str, name: str) -> Callable[..., Any] | None:
    """The registered builder for ``(kind, name)``, or None."""
    return _REGISTRY.get((kind, name))


def registered(kind: str) -> list[str]:
    """Registered names of one kind, sorted."""
    return sorted(n for k, n in _REGISTRY if k == kind)
