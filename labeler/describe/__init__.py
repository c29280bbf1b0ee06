"""LLM class descriptions and LMM image captions, through pluggable backends.

Backends (one front door for text and vision requests, :func:`get_backend`):

* ``template`` — built-in templates, offline, always available (the fallback);
* ``openai`` — any OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM, LM Studio);
* ``transformers`` — a local Hugging Face causal LM (descriptions) or image-text-to-text model (captions);
* ``file`` — descriptions from JSON (CuPL/NoLA ``{"class": [...]}``) or CSV (``class,description``).

>>> from labeler.describe import get_backend, generate_descriptions, class_texts   # doctest: +SKIP
>>> backend = get_backend("openai", model="llama3.2", base_url="http://localhost:11434/v1")
>>> generate_descriptions(project, backend, dry_run=True)        # how many requests, how many cached
>>> generate_descriptions(project, backend, domain="satellite photo")
>>> texts = class_texts(project, "both")                           # what zero-shot embeds per class

New backends: subclass :class:`Backend` and pass the class to :func:`register_backend`.

Every model answer is cached in the project's ``llm_cache`` table, so rerunning (or resuming) a job
sends no request twice.
"""

from __future__ import annotations

from .base import (
    BACKENDS,
    Backend,
    BackendError,
    Request,
    Response,
    get_backend,
    image_data_url,
    list_backends,
    load_image,
    register_backend,
    tile_grid,
)
from .cache import CONFIRM_ABOVE, cache_key, clear_cache, count_cached, run_requests
from .captions import (
    GROUP_MODES,
    calls_per_image,
    caption_counts,
    caption_images,
    caption_prompts,
    caption_requests,
    captions_by_image,
    import_captions,
    list_captions,
    make_groups,
    make_own_groups,
    pseudo_classes,
    read_captions_file,
    set_caption,
    set_caption_enabled,
    set_caption_prompts,
)
from .descriptions import (
    DESCRIPTION_MODES,
    add_description,
    class_texts,
    class_texts_report,
    delete_description,
    description_requests,
    descriptions_by_class,
    edit_description,
    export_descriptions,
    generate_descriptions,
    import_descriptions,
    list_descriptions,
    set_description_enabled,
)
from .hf import TransformersBackend
from .offline import FileBackend, TemplateBackend, read_descriptions_file, template_sentences, write_descriptions_file
from .openai_compat import OpenAIBackend
from .parse import clean_caption, is_refusal, is_wrong_language, normalize_key, parse_sentences

# The built-in backends, registered here so that any import of labeler.describe sees all of them.
for _cls in (TemplateBackend, FileBackend, OpenAIBackend, TransformersBackend):
    register_backend(_cls)
del _cls

__all__ = [
    "BACKENDS",
    "CONFIRM_ABOVE",
    "DESCRIPTION_MODES",
    "GROUP_MODES",
    "Backend",
    "BackendError",
    "FileBackend",
    "OpenAIBackend",
    "Request",
    "Response",
    "TemplateBackend",
    "TransformersBackend",
    "add_description",
    "cache_key",
    "calls_per_image",
    "caption_counts",
    "caption_images",
    "caption_prompts",
    "caption_requests",
    "captions_by_image",
    "class_texts",
    "class_texts_report",
    "clean_caption",
    "clear_cache",
    "count_cached",
    "delete_description",
    "description_requests",
    "descriptions_by_class",
    "edit_description",
    "export_descriptions",
    "generate_descriptions",
    "get_backend",
    "image_data_url",
    "import_captions",
    "import_descriptions",
    "is_refusal",
    "is_wrong_language",
    "list_backends",
    "list_captions",
    "list_descriptions",
    "load_image",
    "make_groups",
    "make_own_groups",
    "normalize_key",
    "parse_sentences",
    "pseudo_classes",
    "read_captions_file",
    "read_descriptions_file",
    "register_backend",
    "run_requests",
    "set_caption",
    "set_caption_enabled",
    "set_caption_prompts",
    "set_description_enabled",
    "template_sentences",
    "tile_grid",
    "write_descriptions_file",
]
