"""Prompt templates for CLIP text classifiers ("a photo of a {c}.").

The template sets come from open_clip's ImageNet zero-shot metadata, so they
match what CLIP's authors evaluated with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from .errors import InvalidInputError

TEMPLATE_SETS: dict[str, tuple[Callable[[str], str], ...]] = {
    "photo": (lambda c: f"a photo of a {c}.",),
    "simple": tuple(SIMPLE_IMAGENET_TEMPLATES),  # 7 templates, CLIP's "ensemble"
    "openai": tuple(OPENAI_IMAGENET_TEMPLATES),  # 80 templates
}
DEFAULT_TEMPLATES = "simple"


def class_prompts(class_name: str, templates: str | Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
    """Texts for one class.

    Parameters
    ----------
    class_name : str
        The class, e.g. ``"golden retriever"``.
    templates : str or sequence of str
        A set name (``photo``, ``simple``, ``openai``) or format strings with ``{c}``
        (or ``{}``) where the class name goes.
    """
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise InvalidInputError(f"unknown template set {templates!r}; choose one of {', '.join(TEMPLATE_SETS)}")
        return [t(class_name) for t in TEMPLATE_SETS[templates]]
    out = []
    for t in templates:
        if "{c}" not in t and "{}" not in t:
            raise InvalidInputError(f"template {t!r} has no '{{c}}' where the class name goes")
        out.append(t.replace("{c}", "{}").format(class_name))
    return out
