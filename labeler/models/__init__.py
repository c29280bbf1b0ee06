"""Image (and text) encoders: one front door over a small registry, open_clip and transformers.

>>> m = load_clip("tiny-random", device="cpu")          # doctest: +SKIP
>>> feats = m.encode_images(torch.stack([m.preprocess(img)]))   # (1, 64), L2-normalised

Names registered with :func:`register_model` (``tiny-random`` for both kinds: seeded random
weights, for tests and demos) take precedence; other names go to open_clip (CLIP) or
transformers (DINO). Nothing is ever downloaded while the Hub is unreachable: missing weights
raise :class:`labeler.errors.ModelUnavailableError` saying how to point at local files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from ._hub import hf_cache_dir, hub_mode, hub_offline
from .available import (
    DEFAULT_CLIP,
    DEFAULT_DINO,
    TRY_TINY_FEATURES,
    check_clip_available,
    check_dino_available,
    check_encoder_available,
)
from .registry import KINDS, MODELS, register_model, registered

if TYPE_CHECKING:
    import torch

    from .base import Encoder
    from .clip import ClipModel
    from .dino import DinoModel

# torch, open_clip, torchvision and transformers load only when a model does (importing this package is cheap):
# the classes below come from their modules on first use, and the built-in builders import theirs when called.
_LAZY = {"Encoder": "base", "ClipModel": "clip", "DinoModel": "dino"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tiny_random_clip(pretrained: str | None, device: torch.device, precision: str) -> ClipModel:
    """The ``tiny-random`` CLIP builder (:func:`labeler.models.clip.tiny_random_clip`)."""
    from .clip import tiny_random_clip as build

    return build(pretrained, device, precision)


def tiny_random_dino(pretrained: str | None, device: torch.device, precision: str) -> DinoModel:
    """The ``tiny-random`` DINO builder (:func:`labeler.models.dino.tiny_random_dino`)."""
    from .dino import tiny_random_dino as build

    return build(pretrained, device, precision)


# The built-in builders, registered here so that any import of labeler.models sees them.
register_model("clip", "tiny-random")(tiny_random_clip)
register_model("dino", "tiny-random")(tiny_random_dino)

__all__ = [
    "ClipModel",
    "DinoModel",
    "Encoder",
    "MODELS",
    "TRY_TINY_FEATURES",
    "check_clip_available",
    "check_dino_available",
    "check_encoder_available",
    "hf_cache_dir",
    "hub_mode",
    "hub_offline",
    "list_models",
    "load_clip",
    "load_dino",
    "load_encoder",
    "register_model",
]

#: Suggestions shown by :func:`list_models` (any transformers vision backbone id or folder works).
DINO_SUGGESTED = ["facebook/dinov2-small", "facebook/dinov2-base", "facebook/dinov2-large", "facebook/dinov2-giant"]


def load_clip(
    name: str = DEFAULT_CLIP,
    pretrained: str | None = "auto",
    device: str | torch.device | None = "auto",
    precision: str = "fp32",
) -> ClipModel:
    """Load a CLIP model for inference: see :func:`labeler.models.clip.load_clip`."""
    from .clip import load_clip as load

    return load(name, pretrained, device, precision)


def load_dino(
    name: str = DEFAULT_DINO, device: str | torch.device | None = "auto", precision: str = "fp32"
) -> DinoModel:
    """Load a DINO-style vision backbone for inference: see :func:`labeler.models.dino.load_dino`."""
    from .dino import load_dino as load

    return load(name, device, precision)


def load_encoder(
    kind: str,
    name: str | None = None,
    pretrained: str | None = "auto",
    device: str | torch.device | None = "auto",
    precision: str = "fp32",
) -> ClipModel | DinoModel:
    """Load a ``clip`` or ``dino`` encoder (``name`` None: the kind's default model).

    ``pretrained`` applies to CLIP only; DINO takes a hub id or folder as ``name``.
    """
    kind = str(kind).strip().lower()
    if kind == "clip":
        return load_clip(name or DEFAULT_CLIP, pretrained=pretrained, device=device, precision=precision)
    if kind == "dino":
        if pretrained not in (None, "auto", "none", ""):
            raise InvalidInputError(
                f"DINO models take no pretrained tag (got {pretrained!r}): give a hub id or a local folder as the model"
            )
        return load_dino(name or DEFAULT_DINO, device=device, precision=precision)
    raise InvalidInputError(f"model kind must be one of {', '.join(KINDS)}, got {kind!r}")


def list_models() -> dict:
    """What can be loaded, for ``labeler models`` and the UI.

    Returns
    -------
    dict
        ``{"clip": {"default", "registered", "architectures", "pretrained": ["ViT-B-32:laion2b_s34b_b79k", ...]},
        "dino": {"default", "registered", "suggested"}}``.
    """
    architectures, pretrained = _open_clip_lists()
    return {
        "clip": {
            "default": f"{DEFAULT_CLIP}:laion2b_s34b_b79k",
            "registered": registered("clip"),
            "architectures": architectures,
            "pretrained": pretrained,
        },
        "dino": {"default": DEFAULT_DINO, "registered": registered("dino"), "suggested": list(DINO_SUGGESTED)},
    }


def _open_clip_lists() -> tuple[list[str], list[str]]:
    """open_clip's architectures and ``arch:tag`` list: from :mod:`._open_clip_snapshot` when the installed open_clip is
    the version it was taken from and open_clip is not loaded yet (no import), else from open_clip."""
    import sys

    from . import _open_clip_snapshot as snapshot

    if "open_clip" not in sys.modules:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("open_clip_torch")
        except PackageNotFoundError:
            installed = None
        if installed == snapshot.VERSION:
            return list(snapshot.ARCHITECTURES), list(snapshot.PRETRAINED)
    from ._openclip import open_clip_module

    oc = open_clip_module()
    return oc.list_models(), oc.list_pretrained(as_str=True)
