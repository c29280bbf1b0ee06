"""The backend interface: requests, responses, the registry, and image helpers.

Every backend answers the same :class:`Request` (a prompt, an optional system
message, optional images, a number of samples) with a :class:`Response` (the
sampled texts). Requests also say what they are about (``task``, ``meta``), so
that offline backends (``template``, ``file``) can answer without a model.
"""

from __future__ import annotations

import base64
import inspect
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from ..errors import InvalidInputError, JobCancelled, LabelerError
from ..registry import Registry

#: An image in a request: a PIL image, a file path, or a callable that builds one when it is needed.
ImageLike = Image.Image | str | os.PathLike | Callable[[], Image.Image]


class BackendError(LabelerError):
    """A description/caption backend failed (unreachable, refused, answered garbage); the message says what to do."""


class DeadlineExceeded(JobCancelled):
    """A describe/caption job ran past its overall deadline and stopped; the answers so far are kept.

    Attributes
    ----------
    partial : list of Response or None
        Set by :meth:`Backend.complete` when it stops mid-batch: the answers that did arrive
        (None where a request got none), in request order.
    """

    partial: list | None = None


@dataclass
class Request:
    """One prompt to a text or vision model.

    Attributes
    ----------
    prompt : str
        The user message.
    system : str or None
        An optional system message.
    images : list
        Images for vision models (PIL images, paths, or callables returning a PIL image).
    n : int
        Number of samples wanted; a backend returns ``n`` texts.
    temperature : float
        Sampling temperature (0 = greedy).
    max_tokens : int
        Upper bound on generated tokens per sample.
    sample : int
        Sample index: part of the cache key, and the seed of local samplers.
    subject : str
        What the request is about, for the cache key: ``class:<name>``, ``image:<sha256>``,
        ``group:<sha256>,<sha256>,...``.
    task : str
        ``describe`` (class descriptions), ``caption`` (one image), ``group`` (a grid of images)
        or ``text``.
    meta : dict
        Extra facts for offline backends, e.g. ``{"class_name": "cat", "count": 50}``.
    """

    prompt: str
    system: str | None = None
    images: list[ImageLike] = field(default_factory=list)
    n: int = 1
    temperature: float = 0.8
    max_tokens: int = 300
    sample: int = 0
    subject: str = ""
    task: str = "text"
    meta: dict[str, Any] = field(default_factory=dict)

    def messages(self) -> list[dict[str, str]]:
        """The request as chat messages with plain-text content (images are added by each backend)."""
        out = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        out.append({"role": "user", "content": self.prompt})
        return out


@dataclass
class Response:
    """The answer to one :class:`Request`: ``n`` texts (some may be empty)."""

    texts: list[str]
    cached: bool = False


class Backend:
    """Base class of description/caption backends.

    Subclasses set the class attributes and implement :meth:`complete`.

    Attributes
    ----------
    name : str
        Registry name (``template``, ``openai``, ...).
    source : str
        What ``descriptions.source`` says for sentences it wrote (``llm``, ``template``, ``file``).
    supports_images : bool
        Whether requests may carry images.
    cacheable : bool
        Whether answers go to the ``llm_cache`` table (False for instant, deterministic backends).
    sampling : bool
        False for backends that answer a class the same way every time: they get one request per
        class instead of several question forms × samples.
    batch_size : int
        How many requests :func:`labeler.describe.cache.run_requests` hands over at once; the
        cache is written and cancel is checked between batches.
    model : str
        The model name, part of the cache key.
    deadline : float or None
        While a job with a deadline runs, the :func:`time.monotonic` time it ends (set by
        :func:`labeler.describe.cache.run_requests`); backends that can stop mid-request (``openai``)
        cut requests there and raise :class:`DeadlineExceeded`, others are stopped between batches.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    source: ClassVar[str] = "llm"
    supports_images: bool = False
    cacheable: bool = True
    sampling: bool = True
    batch_size: int = 8
    model: str = ""
    deadline: float | None = None

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        """Answer each request (in order). Raises :class:`BackendError` or another LabelerError."""
        raise NotImplementedError

    def sentences_from(self, text: str) -> list[str]:
        """Description sentences in one answer (model backends parse it; offline ones split lines)."""
        from .parse import parse_sentences

        return parse_sentences(text)

    def info(self) -> dict[str, Any]:
        """What a run records about the backend (never secrets)."""
        return {"backend": self.name, "model": self.model}

    def work_text(self, stats: dict[str, int], n_classes: int) -> str:
        """What a run did to get its answers, for people: ``stats`` from
        :func:`~labeler.describe.cache.run_requests`; backends that send nothing say what they did instead."""
        return f"{stats.get('sent', 0)} requests sent, {stats.get('cached', 0)} from cache"

    def close(self) -> None:
        """Release connections or models (optional)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


# --- registry -----------------------------------------------------------------------------------------------------

#: Backends by name (classes; :func:`get_backend` builds one). The built-ins are registered by
#: :mod:`labeler.describe` when it is imported. See :class:`labeler.registry.Registry`.
BACKENDS: Registry[type[Backend]] = Registry("description backend")


def register_backend(cls: type[Backend], *, replace: bool = False) -> type[Backend]:
    """Make a backend class available to :func:`get_backend` by its ``name`` (usable as a class decorator).

    Raises
    ------
    InvalidInputError
        The class has no ``name``, or another backend has it and ``replace`` is False.
    """
    if not cls.name:
        raise InvalidInputError(f"backend class {cls.__name__} has no name: set its `name` class attribute")
    return BACKENDS.register(cls.name, cls, replace=replace)


def _options_of(cls: type[Backend]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [p for p, v in params.items() if p != "self" and v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD)]


def get_backend(name: str | Backend, **options: Any) -> Backend:
    """Build a backend by name.

    Parameters
    ----------
    name : str or Backend
        ``template``, ``openai``, ``transformers``, ``file`` or a registered name; a Backend is returned as is.
    **options
        The backend's options (``None`` values are ignored, so CLI flags can be passed straight through).

    Raises
    ------
    InvalidInputError
        Unknown backend or option.
    """
    if isinstance(name, Backend):
        return name
    cls = BACKENDS.get(name)
    options = {k: v for k, v in options.items() if v is not None}
    known = _options_of(cls)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InvalidInputError(
            f"backend {name!r} has no option {', '.join(unknown)}; its options are {', '.join(known) or '(none)'}"
        )
    return cls(**options)


def list_backends() -> list[dict[str, Any]]:
    """Every registered backend: ``{"name", "summary", "supports_images", "options"}`` by name."""
    return [
        {
            "name": e.name,
            "summary": e.summary,
            "supports_images": bool(e.obj.supports_images),
            "options": _options_of(e.obj),
        }
        for e in BACKENDS.list()
    ]


# --- images -----------------------------------------------------------------------------------------------------


def load_image(item: ImageLike) -> Image.Image:
    """A request image as an RGB PIL image.

    Raises
    ------
    InvalidInputError
        The file is missing or not an image.
    """
    if callable(item) and not isinstance(item, Image.Image):
        item = item()
    if isinstance(item, Image.Image):
        return item if item.mode == "RGB" else item.convert("RGB")
    path = Path(item)
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise InvalidInputError(f"image {path} is missing: re-import the folder or restore the file") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read image {path}: {exc}") from None


def image_data_url(item: ImageLike, max_side: int = 1024, quality: int = 90) -> str:
    """The image as a ``data:image/jpeg;base64,...`` URL, downscaled so its longer side is at most ``max_side``."""
    im = load_image(item)
    if max(im.size) > max_side:
        im = im.copy()
        im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def tile_grid(
    images: Sequence[ImageLike], cols: int | None = None, cell: int = 336, gap: int = 4, background=(255, 255, 255)
) -> Image.Image:
    """Tile images into one grid image (LatteCLIP's group view: 4 images → 2×2).

    Each image is scaled to fit a ``cell`` × ``cell`` square keeping its aspect ratio, centred;
    empty cells stay ``background``.

    Parameters
    ----------
    images : sequence of images
    cols : int, optional
        Columns; default ``ceil(sqrt(len(images)))`` (2 for 2–4 images).
    cell : int
        Side of one cell in pixels.
    gap : int
        Pixels between cells.
    """
    if not images:
        raise InvalidInputError("tile_grid needs at least one image")
    n = len(images)
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    width = cols * cell + (cols - 1) * gap
    height = rows * cell + (rows - 1) * gap
    grid = Image.new("RGB", (width, height), background)
    for i, item in enumerate(images):
        im = load_image(item).copy()
        im.thumbnail((cell, cell), Image.Resampling.BICUBIC)
        if max(im.size) < cell:  # upscale small images (e.g. 32×32 CIFAR) to fill the cell
            scale = cell / max(im.size)
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.BICUBIC)
        r, c = divmod(i, cols)
        x = c * (cell + gap) + (cell - im.width) // 2
        y = r * (cell + gap) + (cell - im.height) // 2
        grid.paste(im, (x, y))
    return grid
