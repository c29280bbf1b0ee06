"""DINOv2, DINO v1 (``facebook/dino-vitb16``, a ``ViTModel``) and other transformers vision backbones as image
encoders: hub ids and local folders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision import transforms as T

from ..device import resolve_device
from ..errors import ModelUnavailableError
from ._hub import hf_cache_dir, hub_mode
from .available import DEFAULT_DINO, TRY_TINY_DINO, check_dino_available, dino_missing_message
from .base import PRECISIONS, Encoder, check_precision, seeded
from .registry import get_builder

__all__ = ["DEFAULT_DINO", "DinoModel", "build_preprocess", "check_dino_available", "load_dino"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PIL resample codes (what preprocessor_config.json stores) -> torchvision modes.
_RESAMPLE = {
    0: T.InterpolationMode.NEAREST,
    1: T.InterpolationMode.LANCZOS,
    2: T.InterpolationMode.BILINEAR,
    3: T.InterpolationMode.BICUBIC,
    4: T.InterpolationMode.BOX,
    5: T.InterpolationMode.HAMMING,
}


@dataclass(eq=False, repr=False)
class DinoModel(Encoder):
    """A DINO-style backbone. Features are the CLS token after the final layernorm (``pooler_output``
    of ``Dinov2Model``, equal to ``last_hidden_state[:, 0]``; for a ``ViTModel`` such as DINO v1, whose
    ``pooler_output`` is an extra dense + tanh layer DINO never trained, ``last_hidden_state[:, 0]``).

    Attributes
    ----------
    processor_config : dict
        The image-processor settings the preprocessing was built from (size, crop_size, mean, std, resample).
    """

    processor_config: dict | None = None

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        if getattr(self.model.config, "model_type", None) == "vit":
            return out.last_hidden_state[:, 0]
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Save weights, config and preprocessing to ``folder`` (load it back with ``load_dino(folder)``)."""
        from transformers import BitImageProcessor

        self.model.save_pretrained(folder)
        cfg = dict(self.processor_config or {})
        BitImageProcessor(
            size=cfg.get("size"),
            crop_size=cfg.get("crop_size"),
            do_center_crop=cfg.get("do_center_crop", True),
            resample=cfg.get("resample", 3),
            image_mean=cfg.get("image_mean", IMAGENET_MEAN),
            image_std=cfg.get("image_std", IMAGENET_STD),
        ).save_pretrained(folder)


def _size(value: Any, default: int) -> tuple[int, int] | int:
    """HF size dict -> torchvision size: int = shortest side, (h, w) = exact."""
    if value is None:
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
        if "height" in value and "width" in value:
            return (int(value["height"]), int(value["width"]))
    raise ModelUnavailableError(f"image processor size {value!r} is not supported")


def build_preprocess(cfg: dict, image_size: int) -> tuple[T.Compose, int]:
    """torchvision transforms equal to a transformers image processor config (resize, crop, normalize).

    Returns the transform and the side of the square it outputs.
    """
    resample = cfg.get("resample", 3)
    resample = getattr(resample, "value", resample)
    interp = (
        _RESAMPLE.get(int(resample), T.InterpolationMode.BICUBIC)
        if resample is not None
        else T.InterpolationMode.BICUBIC
    )
    steps: list[Any] = [_ToRGB()]
    out = image_size
    if cfg.get("do_resize", True):
        size = _size(cfg.get("size"), image_size)
        steps.append(T.Resize(size, interpolation=interp, antialias=True))
        out = size if isinstance(size, int) else size[0]
    if cfg.get("do_center_crop", True):
        crop = _size(cfg.get("crop_size"), out)
        crop = (crop, crop) if isinstance(crop, int) else crop
        steps.append(T.CenterCrop(crop))
        out = crop[0]
    steps.append(T.ToTensor())  # rescale 1/255
    if cfg.get("do_normalize", True):
        steps.append(
            T.Normalize(tuple(cfg.get("image_mean") or IMAGENET_MEAN), tuple(cfg.get("image_std") or IMAGENET_STD))
        )
    return T.Compose(steps), int(out)


def _to_rgb(img):
    return img.convert("RGB") if img.mode != "RGB" else img


class _ToRGB:
    """Picklable RGB conversion."""

    def __call__(self, img):
        return _to_rgb(img)

    def __repr__(self) -> str:
        return "ToRGB()"


def _wrap(model, key: str, name: str, device: torch.device, precision: str, proc_cfg: dict) -> DinoModel:
    model.eval()
    model.to(device=device, dtype=PRECISIONS[precision])
    image_size = int(getattr(model.config, "image_size", 224) or 224)
    preprocess, side = build_preprocess(proc_cfg, image_size)
    return DinoModel(
        key=key,
        kind="dino",
        name=name,
        pretrained=None,
        dim=int(model.config.hidden_size),
        device=device,
        precision=precision,
        image_size=side,
        preprocess=preprocess,
        model=model,
        processor_config=proc_cfg,
    )


def tiny_random_dino(pretrained: str | None, device: torch.device, precision: str) -> DinoModel:
    """A 2-layer, 32-wide DINOv2 on 32x32 inputs, random init under a fixed seed (tests, demos, CI)."""
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=8, image_size=32
    )
    with seeded():
        model = Dinov2Model(config)
    proc = {
        "size": {"shortest_edge": 32},
        "crop_size": {"height": 32, "width": 32},
        "resample": 3,
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
    }
    return _wrap(model, "dino:tiny-random", "tiny-random", device, precision, proc)


def _processor_config(source: str, offline: bool, local: bool) -> dict:
    from transformers import AutoImageProcessor

    try:
        proc = AutoImageProcessor.from_pretrained(source, local_files_only=offline or local)
    except Exception:
        if local:
            return {}  # a folder with only model files: DINOv2 defaults below
        raise
    cfg = proc.to_dict()
    return {
        k: cfg.get(k)
        for k in (
            "size",
            "crop_size",
            "do_resize",
            "do_center_crop",
            "resample",
            "do_normalize",
            "image_mean",
            "image_std",
        )
        if k in cfg
    }


def _default_processor(image_size: int) -> dict:
    """DINOv2's own preprocessing (resize 256, crop 224), scaled down for small models."""
    crop = min(224, image_size)
    resize = round(crop * 256 / 224) if crop == 224 else crop
    return {"size": {"shortest_edge": resize}, "crop_size": {"height": crop, "width": crop}, "resample": 3}


def load_dino(
    name: str = DEFAULT_DINO, device: str | torch.device | None = "auto", precision: str = "fp32"
) -> DinoModel:
    """Load a DINO-style vision backbone for inference.

    Parameters
    ----------
    name : str
        A registered name (``tiny-random``), a Hugging Face hub id (``facebook/dinov2-small``), or a
        local folder saved with ``save_pretrained`` (config.json + weights; preprocessor_config.json
        optional, DINOv2's resize 256 / crop 224 otherwise).
    device, precision : str
        As for :func:`labeler.models.load_clip`.

    Raises
    ------
    ModelUnavailableError
        Unknown id, missing folder, or weights not cached while offline (never waits on the network).
    """
    dev = resolve_device(device)
    prec = check_precision(precision, dev)
    name = (name or DEFAULT_DINO).strip()
    builder = get_builder("dino", name)
    if builder is not None:
        return builder(None, dev, prec)
    path = Path(name).expanduser()
    local = path.is_dir()
    if not local and (name.startswith((".", "~", os.sep)) or name.count("/") > 1):
        raise ModelUnavailableError(f"DINO model folder {path} does not exist")
    if not local:
        check_dino_available(name)  # offline and not cached: fails here, before transformers is imported
    source = str(path.resolve()) if local else name
    key = f"dino:{source}"
    from transformers import AutoModel

    with hub_mode() as offline:
        try:
            model = AutoModel.from_pretrained(source, local_files_only=offline or local)
            proc_cfg = _processor_config(source, offline, local)
        except Exception as e:
            if local:
                msg = (
                    f"cannot load the DINO model folder {source}: it needs config.json and model.safetensors "
                    "(or pytorch_model.bin), as written by save_pretrained"
                )
            elif offline:
                msg = dino_missing_message(name, f"offline; looked in {hf_cache_dir()}")
            else:
                msg = (
                    f"DINO model {name!r} could not be downloaded. Download it once with network access, set HF_HOME "
                    "to a Hugging Face cache that holds it, or give a local folder saved with save_pretrained as the "
                    "DINO model (e.g. /path/to/dinov2-small)"
                )
            raise ModelUnavailableError(
                f"{msg}. Cause: {type(e).__name__}: {e}", hint=None if local else TRY_TINY_DINO
            ) from e
    if not hasattr(model.config, "hidden_size"):
        raise ModelUnavailableError(
            f"{name!r} is not a vision backbone with a hidden_size (got {type(model).__name__})"
        )
    if not proc_cfg:
        proc_cfg = _default_processor(int(getattr(model.config, "image_size", 224) or 224))
    return _wrap(model, key, name if not local else source, dev, prec, proc_cfg)
