"""CLIP image/text encoders through open_clip: built-in names + tags, hf-hub ids, local files and folders."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..device import resolve_device
from ..errors import Hint, InvalidInputError, ModelUnavailableError
from ._hub import hf_cache_dir, hub_mode
from ._openclip import CONFIG_DIR, open_clip_module
from .available import DEFAULT_CLIP, DEFAULT_CLIP_TAG, TRY_TINY_CLIP, check_clip_available
from .base import Encoder, check_precision, seeded
from .registry import get_builder

__all__ = ["CONFIG_DIR", "DEFAULT_CLIP", "ClipModel", "load_clip", "open_clip_module", "tiny_random_clip"]

DEFAULT_TAGS = {DEFAULT_CLIP: DEFAULT_CLIP_TAG}

log = logging.getLogger(__name__)


@dataclass(eq=False, repr=False)
class ClipModel(Encoder):
    """A CLIP model: :class:`Encoder` plus text encoding.

    Attributes
    ----------
    tokenizer : callable
        open_clip tokenizer: list of strings -> LongTensor (T, context_length).
    logit_scale : float
        ``exp`` of the learnt temperature (100 for released CLIP models).
    logit_bias : float or None
        SigLIP's learnt bias, None for CLIP.
    """

    tokenizer: Any = None
    logit_scale: float = 100.0
    logit_bias: float | None = None

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def _convert(self, module: torch.nn.Module, precision: str) -> torch.nn.Module:
        if precision == "fp32" or self.precision != "fp32":
            return super()._convert(module, precision)
        from open_clip.factory import _set_model_device_and_precision

        # open_clip's own low-precision cast (as create_model(precision=...) does): LayerNorms stay fp32.
        _set_model_device_and_precision(module, self.device, precision)
        return module

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Features of ``texts``: (T, dim), float32, L2-normalised, on ``device``."""
        if isinstance(texts, str):
            raise InvalidInputError("encode_texts takes a list of strings, not one string")
        texts = list(texts)
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i : i + batch_size]).to(self.device)
            out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        if not out:
            return torch.zeros((0, self.dim), dtype=torch.float32, device=self.device)
        return torch.cat(out)


def _canonical_tag(tag: str) -> str:
    return tag.lower().replace("-", "_")


def _is_pathlike(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~")) or Path(text).exists()


def _unavailable_tag_message(name: str, tag: str, hub: str, offline: bool) -> str:
    where = f"the Hugging Face repo {hub}" if hub else "its download URL"
    why = (
        f"are not on this machine and cannot be downloaded now (offline or unreachable; looked in the Hugging Face "
        f"cache {hf_cache_dir()})"
        if offline
        else f"could not be downloaded from {where}"
    )
    return (
        f"CLIP weights {name} / {tag} {why}. Either download them once with network access (they come from "
        f"{where}), set HF_HOME to a cache that holds them, give the path of a checkpoint file for {name} "
        "(open_clip_pytorch_model.bin or open_clip_model.safetensors) as its pretrained weights, or give a folder "
        "holding open_clip_config.json and the weights as the CLIP model"
    )


def _resolve(name: str, pretrained: str | None) -> tuple[str, str | None, str, dict]:
    """Turn the user's (name, pretrained) into (open_clip model name, pretrained arg, cache key, info)."""
    oc = open_clip_module()
    if name.startswith("hf-hub:"):
        return name, None, f"clip:{name}", {"source": "hf-hub", "hub": name[len("hf-hub:") :]}
    arch = name.replace("/", "-")  # open_clip accepts "ViT-B/32" for "ViT-B-32"
    if name.startswith("local-dir:") or (_is_pathlike(name) and not oc.get_model_config(arch)):
        folder = Path(name[len("local-dir:") :] if name.startswith("local-dir:") else name).expanduser().resolve()
        if not folder.is_dir():
            raise ModelUnavailableError(f"CLIP model folder {folder} does not exist")
        if not (folder / "open_clip_config.json").is_file():
            raise ModelUnavailableError(
                f"{folder} is not an open_clip model folder: it has no open_clip_config.json (with 'model_cfg'); "
                "give a checkpoint file as the pretrained weights and an architecture name as the model instead",
                hint=Hint(option="pretrained"),
            )
        spec = f"local-dir:{folder}"
        return spec, None, f"clip:{spec}", {"source": "local-dir"}
    if oc.get_model_config(arch) is None:
        known = ", ".join(oc.list_models()[:12])
        raise ModelUnavailableError(
            f"unknown CLIP model {name!r}: give an open_clip architecture (e.g. {known}, ...), an "
            "hf-hub:org/repo id, or a local open_clip model folder"
        )
    if pretrained is None or str(pretrained).strip().lower() in ("", "none"):
        return arch, None, f"clip:{arch}:none", {"source": "random"}
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    cfg = get_pretrained_cfg(arch, pretrained)
    if cfg:
        tag = _canonical_tag(pretrained)
        return arch, tag, f"clip:{arch}:{tag}", {"source": "tag", "cfg": cfg}
    path = Path(pretrained).expanduser()
    if path.is_file():
        path = path.resolve()
        return arch, str(path), f"clip:{arch}:{path}", {"source": "file"}
    tags = ", ".join(list_pretrained_tags_by_model(arch)) or "none"
    raise ModelUnavailableError(
        f"pretrained {pretrained!r} is neither a known tag for {arch} (known tags: {tags}) nor an existing "
        "checkpoint file: give a tag, a path to open_clip_pytorch_model.bin / .safetensors, or 'none' for random init"
    )


class _QuietOpenClip(logging.Filter):
    """Drops open_clip's own error lines (Labeler raises one error saying the same, with what to do), and its
    "No pretrained weights loaded" warning when random init was asked for."""

    def __init__(self, random_init: bool):
        super().__init__()
        self.random_init = random_init

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "open_clip" in (record.pathname or ""):
            return False
        return not (self.random_init and "No pretrained weights loaded" in record.getMessage())


@contextlib.contextmanager
def _quiet_open_clip(random_init: bool):
    flt = _QuietOpenClip(random_init)
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _build(name: str, pretrained: str | None, device: torch.device, precision: str) -> ClipModel:
    oc = open_clip_module()
    spec, weights, key, info = _resolve(name, pretrained)
    kwargs: dict[str, Any] = {}
    cfg = info.get("cfg") or {}
    if cfg.get("quick_gelu") and not (oc.get_model_config(spec) or {}).get("quick_gelu"):
        kwargs["force_quick_gelu"] = True  # e.g. ViT-B-32 + openai: the weights were trained with QuickGELU
    try:
        with hub_mode() as offline, _quiet_open_clip(weights is None):
            model = oc.create_model(spec, pretrained=weights, device=device, precision=precision, **kwargs)
            tokenizer = oc.get_tokenizer(spec)
    except ModelUnavailableError:
        raise
    except Exception as e:
        if info["source"] == "tag":
            hub = cfg.get("hf_hub", "").rstrip("/")
            msg = _unavailable_tag_message(spec, weights, hub, offline)
        elif info["source"] == "hf-hub":
            msg = (
                f"CLIP model {spec} could not be loaded"
                + (" (offline: it is not in the Hugging Face cache " + hf_cache_dir() + ")" if offline else "")
                + ": download it once with network access, set HF_HOME to a cache that holds it, or save it to a "
                "folder with open_clip_config.json + open_clip_model.safetensors and give that folder as the model"
            )
        elif info["source"] == "file":
            msg = (
                f"cannot load checkpoint {weights} into CLIP architecture {spec} (wrong architecture or damaged file?)"
            )
        else:
            msg = f"cannot load CLIP model {spec}"
        raise ModelUnavailableError(
            f"{msg.rstrip('.')}. Cause: {type(e).__name__}: {e}",
            hint=Hint(option="pretrained") if info["source"] == "file" else TRY_TINY_CLIP,
        ) from e
    model.eval()
    from open_clip.transform import PreprocessCfg, image_transform_v2

    pp = PreprocessCfg(**model.visual.preprocess_cfg)
    size = pp.size if isinstance(pp.size, int) else pp.size[0]
    if not isinstance(pp.size, int) and pp.size[0] != pp.size[1]:
        raise ModelUnavailableError(f"CLIP model {spec} takes non-square input {pp.size}; Labeler supports square only")
    preprocess = image_transform_v2(pp, is_train=False)
    dim = getattr(model.visual, "output_dim", None)
    if not isinstance(dim, int):
        with torch.inference_mode():
            dim = int(model.encode_image(torch.zeros(1, 3, size, size, device=device, dtype=_dtype(model))).shape[-1])
    logit_bias = getattr(model, "logit_bias", None)
    return ClipModel(
        key=key,
        kind="clip",
        name=spec,
        pretrained=weights,
        dim=dim,
        device=device,
        precision=precision,
        image_size=int(size),
        preprocess=preprocess,
        model=model,
        tokenizer=tokenizer,
        logit_scale=float(model.logit_scale.detach().float().exp().item()),
        logit_bias=None if logit_bias is None else float(logit_bias.detach().float().reshape(-1)[0].item()),
    )


def _dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.visual.parameters()).dtype


def tiny_random_clip(pretrained: str | None, device: torch.device, precision: str) -> ClipModel:
    """A 2-layer, 64-wide ViT/text CLIP on 32x32 inputs, random init under a fixed seed (tests, demos, CI).

    With ``pretrained`` set to a checkpoint file, that file is loaded into the same architecture.
    """
    if pretrained is None or str(pretrained).strip().lower() in ("", "none", "auto"):
        with seeded():
            # Build on CPU so every device starts from the same numbers, then move.
            m = _build("tiny-random", None, torch.device("cpu"), "fp32")
        if device.type != "cpu" or precision != "fp32":
            return _to(m, device, precision)
        return m
    return _build("tiny-random", pretrained, device, precision)


def _to(m: ClipModel, device: torch.device, precision: str) -> ClipModel:
    if precision == "fp32":
        m.model.to(device)
    else:
        from open_clip.factory import _set_model_device_and_precision

        _set_model_device_and_precision(m.model, device, precision)
    m.device, m.precision = device, precision
    return m


def load_clip(
    name: str = DEFAULT_CLIP,
    pretrained: str | None = "auto",
    device: str | torch.device | None = "auto",
    precision: str = "fp32",
) -> ClipModel:
    """Load a CLIP model for inference.

    Parameters
    ----------
    name : str
        A registered name (``tiny-random``), an open_clip architecture (``ViT-B-32``), an
        ``hf-hub:org/repo`` id, or a local folder (``local-dir:/path`` or just the path) holding
        ``open_clip_config.json`` and the weights.
    pretrained : str or None
        For an architecture name: a pretrained tag (``laion2b_s34b_b79k``), a local checkpoint
        file, or None / ``"none"`` for random init. ``"auto"`` (default): the model's default tag
        (``laion2b_s34b_b79k`` for ViT-B-32, none for ``tiny-random``). Ignored for hf-hub ids
        and folders.
    device : str
        ``auto`` | ``cpu`` | ``cuda[:N]`` | ``mps`` (see :func:`labeler.device.resolve_device`).
    precision : str
        ``fp32``; ``bf16`` (weights in bfloat16: faster only on CPUs with native bf16, e.g. AVX512-BF16/AMX,
        and on GPUs); ``fp16`` (GPU only). Features are float32 in every case.

    Raises
    ------
    ModelUnavailableError
        The name, tag or file is unknown or the weights cannot be had (offline and not cached);
        the message says how to point at local files. Never waits on the network: when the Hub
        cannot be reached, only the local cache is used.
    """
    dev = resolve_device(device)
    prec = check_precision(precision, dev)
    name = (name or DEFAULT_CLIP).strip()
    builder = get_builder("clip", name)
    if builder is not None:
        return builder(None if pretrained == "auto" else pretrained, dev, prec)
    check_clip_available(name, pretrained)  # offline and not cached: fails here, before open_clip is imported
    if pretrained == "auto":
        pretrained = _default_tag(name)
    return _build(name, pretrained, dev, prec)


def _default_tag(name: str) -> str | None:
    if name in DEFAULT_TAGS:
        return DEFAULT_TAGS[name]
    if name.startswith(("hf-hub:", "local-dir:")) or _is_pathlike(name):
        return None
    from open_clip.pretrained import list_pretrained_tags_by_model

    open_clip_module()
    tags = list_pretrained_tags_by_model(name.replace("/", "-"))
    if not tags:
        raise ModelUnavailableError(
            f"CLIP architecture {name!r} has no known pretrained tag: give a checkpoint file as the pretrained "
            "weights, or none for random init",
            hint=Hint(option="pretrained"),
        )
    return tags[0]
