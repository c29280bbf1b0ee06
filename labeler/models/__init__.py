"""Image (and text) encoders: one front door over a small registry, open_clip and transformers.

>>> m = load_clip("tiny-random", device="cpu")          # doctest: +SKIP
>>> feats = m.encode_images(torch.stack([m.preprocess(img)]))   # (1, 64), L2-normalised

Names registered with :func:`register_model` (``tiny-random`` for both kinds: seeded random
weights, for tests and demos) take precedence; other names go to open_clip (CLIP) or
transformers (DINO). Nothing is ever downloaded while the Hub is unreachable: missing weights
raise :class:`labeler.errors.ModelUnavailableError` saying how to point at local files.
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError
from ._hub import hf_cache_dir, hub_mode, hub_offline
from .base import Encoder
from .clip import DEFAULT_CLIP, ClipModel, load_clip, tiny_random_clip
from .dino import DEFAULT_DINO, DinoModel, load_dino, tiny_random_dino
from .registry import KINDS, MODELS, register_model, registered

# The built-in builders, registered here so that any import of labeler.models sees them.
register_model("clip", "tiny-random")(tiny_random_clip)
register_model("dino", "tiny-random")(tiny_random_dino)

__all__ = [
    "ClipModel",
    "DinoModel",
    "Encoder",
    "MODELS",
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
    from .clip import open_clip_module

    oc = open_clip_module()
    return {
        "clip": {
            "default": f"{DEFAULT_CLIP}:laion2b_s34b_b79k",
            "registered": registered("clip"),
            "architectures": oc.list_models(),
            "pretrained": oc.list_pretrained(as_str=True),
        },
        "dino": {"default": DEFAULT_DINO, "registered": registered("dino"), "suggested": list(DINO_SUGGESTED)},
    }
