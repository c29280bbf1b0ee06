"""Can a model's weights be had right now? Checked before anything is built or fetched, without importing torch.

While the Hugging Face Hub is offline (``HF_HUB_OFFLINE`` set, or unreachable), a model whose weights are not in
the local cache cannot load: these checks say so at once, in one message naming the files to place and where,
with a :class:`~labeler.errors.Hint` to the random-weight ``tiny-random`` model that runs without any weights.
The loaders (:func:`labeler.models.load_clip`, :func:`labeler.models.load_dino`) call them first; a front end may
call :func:`check_encoder_available` for every model of a job before starting the first.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import Hint, ModelUnavailableError
from ._hub import hf_cache_dir, hub_offline
from .registry import get_builder

DEFAULT_CLIP = "ViT-B-32"
DEFAULT_CLIP_TAG = "laion2b_s34b_b79k"
DEFAULT_DINO = "facebook/dinov2-small"
#: open_clip's file names in a Hugging Face repo (open_clip prefers the safetensors one).
CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CLIP_CONFIG_FILE = "open_clip_config.json"
#: transformers' file names in a Hugging Face repo or a save_pretrained folder.
DINO_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: The hub repo of the default weights (open_clip's table, known here so the check needs no open_clip import).
KNOWN_CLIP_REPOS = {(DEFAULT_CLIP, DEFAULT_CLIP_TAG): "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"}

#: What runs with no weights at all: the hint every "weights missing" error carries.
TRY_TINY_CLIP = Hint(option="clip", value="tiny-random")
TRY_TINY_DINO = Hint(option="dino", value="tiny-random")
#: What a missing text encoder (zero-shot, text search over cached features) suggests: CLIP features of the tiny
#: model, whose text tower runs with no weights.
TRY_TINY_FEATURES = Hint("features", option="clip", value="tiny-random")


def _offline_reason() -> str:
    env = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(v, "").strip()]
    return f"{env[0]} is set" if env else "the Hugging Face Hub cannot be reached"


def hf_cache_file(repo: str, filename: str) -> str:
    """Where ``filename`` of hub repo ``repo`` lives in the Hugging Face cache (``REVISION``: any folder name,
    written also into ``refs/main`` beside ``snapshots``)."""
    return os.path.join(hf_cache_dir(), f"models--{repo.replace('/', '--')}", "snapshots", "REVISION", filename)


def cached_file(repo: str, filenames: tuple[str, ...] | list[str]) -> str | None:
    """The local path of the first of ``filenames`` of ``repo`` in the Hugging Face cache, or None (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    for name in filenames:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return found
    return None


def _is_path(name: str) -> bool:
    return name.startswith(("local-dir:", ".", "~", os.sep)) or Path(name).expanduser().exists()


def _clip_repo(name: str, tag: str) -> tuple[str, tuple[str, ...]] | None:
    """(hub repo, weight file names) of an open_clip architecture + pretrained tag, or None if it has none."""
    arch = name.replace("/", "-")
    repo = KNOWN_CLIP_REPOS.get((arch, tag.lower().replace("-", "_")))
    if repo:
        return repo, CLIP_WEIGHT_FILES
    from ._openclip import open_clip_module

    open_clip_module()
    from open_clip.pretrained import get_pretrained_cfg

    hub = (get_pretrained_cfg(arch, tag) or {}).get("hf_hub", "")
    if not hub:
        return None
    if hub.endswith("/"):
        return hub.rstrip("/"), CLIP_WEIGHT_FILES
    repo, filename = os.path.split(hub)
    stem = filename.rsplit(".", 1)[0]
    return repo, (f"{stem}.safetensors", filename) if filename.endswith((".bin", ".pth")) else (filename,)


def clip_missing_message(name: str, tag: str | None, repo: str, files: tuple[str, ...], reason: str) -> str:
    """The one message for CLIP weights that are not on this machine while nothing can be downloaded."""
    what = f"CLIP weights {name} / {tag}" if tag else f"CLIP model {name}"
    either = " or ".join(files)
    place = (
        f"{what} are not on this machine and cannot be downloaded now ({reason}). For the real weights, put "
        f"{either} from the Hugging Face repo {repo} into the Hugging Face cache as {hf_cache_file(repo, files[-1])} "
        "(with a file refs/main beside snapshots holding REVISION; a download with network access puts it there, "
        "and HF_HOME moves the cache)"
    )
    if tag:
        place += (
            f", or save that file anywhere and give its path as the pretrained weights of {name}, or give a folder "
            f"holding {CLIP_CONFIG_FILE} and {CLIP_WEIGHT_FILES[0]} as the CLIP model"
        )
    else:
        place += f" together with {CLIP_CONFIG_FILE}, or give a folder holding both as the CLIP model"
    return place + ". To try the whole flow now, use the test model tiny-random (random weights, meaningless labels)"


def dino_missing_message(name: str, reason: str) -> str:
    """The one message for DINO weights that are not on this machine while nothing can be downloaded."""
    either = " or ".join(DINO_WEIGHT_FILES)
    return (
        f"DINO model {name} is not on this machine and cannot be downloaded now ({reason}). For the real weights, "
        f"put config.json, preprocessor_config.json and {either} from the Hugging Face repo {name} into the "
        f"Hugging Face cache as {hf_cache_file(name, '...')} (with a file refs/main beside snapshots holding "
        "REVISION; a download with network access puts them there, and HF_HOME moves the cache), or give a folder "
        f"holding config.json and {DINO_WEIGHT_FILES[0]} (as save_pretrained writes them) as the DINO model. "
        "To try the whole flow now, use the test model tiny-random (random weights)"
    )


def check_clip_available(name: str | None = None, pretrained: str | None = "auto", hint: Hint | None = None) -> None:
    """Raise :class:`ModelUnavailableError` at once when the CLIP weights are not cached and the Hub is offline.

    Registered names, local files and folders, random init and anything while the Hub is reachable pass without
    loading anything (the loader reports what is wrong with those). Never touches the network beyond
    :func:`labeler.models.hub_offline`'s one probe (none with ``HF_HUB_OFFLINE`` set).

    Parameters
    ----------
    name, pretrained : str
        As for :func:`labeler.models.load_clip` (``pretrained="auto"``: the model's default tag).
    hint : Hint, optional
        What the error suggests (default: the CLIP model ``tiny-random``).
    """
    name = (name or DEFAULT_CLIP).strip()
    if get_builder("clip", name) is not None or (not name.startswith("hf-hub:") and _is_path(name)):
        return
    hub = name.startswith("hf-hub:")  # pretrained is ignored for hub ids
    if not hub and (pretrained is None or str(pretrained).strip().lower() in ("", "none")):
        return  # random init, as load_clip reads None
    if pretrained != "auto" and Path(str(pretrained)).expanduser().is_file():
        return
    if not hub_offline():
        return
    if name.startswith("hf-hub:"):
        repo = name[len("hf-hub:") :]
        if cached_file(repo, [CLIP_CONFIG_FILE]) and cached_file(repo, CLIP_WEIGHT_FILES):
            return
        found: tuple[str, tuple[str, ...]] | None = (repo, CLIP_WEIGHT_FILES)
        tag = None
    else:
        tag = pretrained
        if tag == "auto":
            tag = DEFAULT_CLIP_TAG if name.replace("/", "-") == DEFAULT_CLIP else _first_tag(name)
            if tag is None:
                return  # the loader says there is no known tag
        found = _clip_repo(name, str(tag))
        if found is None or cached_file(*found):
            return
    raise ModelUnavailableError(
        clip_missing_message(name, tag, found[0], found[1], _offline_reason()), hint=hint or TRY_TINY_CLIP
    )


def _first_tag(name: str) -> str | None:
    from ._openclip import open_clip_module

    oc = open_clip_module()
    from open_clip.pretrained import list_pretrained_tags_by_model

    if oc.get_model_config(name.replace("/", "-")) is None:
        return None
    tags = list_pretrained_tags_by_model(name.replace("/", "-"))
    return tags[0] if tags else None


def check_dino_available(name: str | None = None, hint: Hint | None = None) -> None:
    """Raise :class:`ModelUnavailableError` at once when a DINO hub id is not cached and the Hub is offline.

    Registered names, folders and, while the Hub is reachable, any id pass without loading anything.

    Parameters
    ----------
    name : str
        As for :func:`labeler.models.load_dino`.
    hint : Hint, optional
        What the error suggests (default: the DINO model ``tiny-random``).
    """
    name = (name or DEFAULT_DINO).strip()
    if get_builder("dino", name) is not None or _is_path(name) or name.count("/") > 1:
        return  # a folder, or a path that is not there: the loader says so
    if not hub_offline():
        return
    if cached_file(name, ["config.json"]) and cached_file(name, DINO_WEIGHT_FILES):
        return
    raise ModelUnavailableError(dino_missing_message(name, _offline_reason()), hint=hint or TRY_TINY_DINO)


def check_encoder_available(kind: str, name: str | None = None, pretrained: str | None = "auto") -> None:
    """:func:`check_clip_available` or :func:`check_dino_available` by ``kind`` (``clip`` / ``dino``)."""
    if kind == "dino":
        check_dino_available(name)
    else:
        check_clip_available(name, pretrained)
