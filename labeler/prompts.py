"""Prompt templates for CLIP text classifiers ("a photo of a {c}.").

The template sets are open_clip's ImageNet zero-shot templates (``open_clip.zero_shot_metadata``), copied here
as format strings so that building prompts needs no open_clip (which imports torch, transformers and torchvision:
seconds of start-up for a command that scores cached features); ``tests/test_zeroshot.py`` checks they match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .errors import InvalidInputError

#: CLIP's 80 ImageNet templates (``OPENAI_IMAGENET_TEMPLATES``), ``{c}`` where the class name goes.
OPENAI_TEMPLATES = (
    "a bad photo of a {c}.",
    "a photo of many {c}.",
    "a sculpture of a {c}.",
    "a photo of the hard to see {c}.",
    "a low resolution photo of the {c}.",
    "a rendering of a {c}.",
    "graffiti of a {c}.",
    "a bad photo of the {c}.",
    "a cropped photo of the {c}.",
    "a tattoo of a {c}.",
    "the embroidered {c}.",
    "a photo of a hard to see {c}.",
    "a bright photo of a {c}.",
    "a photo of a clean {c}.",
    "a photo of a dirty {c}.",
    "a dark photo of the {c}.",
    "a drawing of a {c}.",
    "a photo of my {c}.",
    "the plastic {c}.",
    "a photo of the cool {c}.",
    "a close-up photo of a {c}.",
    "a black and white photo of the {c}.",
    "a painting of the {c}.",
    "a painting of a {c}.",
    "a pixelated photo of the {c}.",
    "a sculpture of the {c}.",
    "a bright photo of the {c}.",
    "a cropped photo of a {c}.",
    "a plastic {c}.",
    "a photo of the dirty {c}.",
    "a jpeg corrupted photo of a {c}.",
    "a blurry photo of the {c}.",
    "a photo of the {c}.",
    "a good photo of the {c}.",
    "a rendering of the {c}.",
    "a {c} in a video game.",
    "a photo of one {c}.",
    "a doodle of a {c}.",
    "a close-up photo of the {c}.",
    "a photo of a {c}.",
    "the origami {c}.",
    "the {c} in a video game.",
    "a sketch of a {c}.",
    "a doodle of the {c}.",
    "a origami {c}.",
    "a low resolution photo of a {c}.",
    "the toy {c}.",
    "a rendition of the {c}.",
    "a photo of the clean {c}.",
    "a photo of a large {c}.",
    "a rendition of a {c}.",
    "a photo of a nice {c}.",
    "a photo of a weird {c}.",
    "a blurry photo of a {c}.",
    "a cartoon {c}.",
    "art of a {c}.",
    "a sketch of the {c}.",
    "a embroidered {c}.",
    "a pixelated photo of a {c}.",
    "itap of the {c}.",
    "a jpeg corrupted photo of the {c}.",
    "a good photo of a {c}.",
    "a plushie {c}.",
    "a photo of the nice {c}.",
    "a photo of the small {c}.",
    "a photo of the weird {c}.",
    "the cartoon {c}.",
    "art of the {c}.",
    "a drawing of the {c}.",
    "a photo of the large {c}.",
    "a black and white photo of a {c}.",
    "the plushie {c}.",
    "a dark photo of a {c}.",
    "itap of a {c}.",
    "graffiti of the {c}.",
    "a toy {c}.",
    "itap of my {c}.",
    "a photo of a cool {c}.",
    "a photo of a small {c}.",
    "a tattoo of the {c}.",
)
#: CLIP's 7-template "ensemble" (``SIMPLE_IMAGENET_TEMPLATES``).
SIMPLE_TEMPLATES = (
    "itap of a {c}.",
    "a bad photo of the {c}.",
    "a origami {c}.",
    "a photo of the large {c}.",
    "a {c} in a video game.",
    "art of the {c}.",
    "a photo of the small {c}.",
)


def _template(text: str) -> Callable[[str], str]:
    return lambda c: text.replace("{c}", c)


TEMPLATE_SETS: dict[str, tuple[Callable[[str], str], ...]] = {
    "photo": (_template("a photo of a {c}."),),
    "simple": tuple(_template(t) for t in SIMPLE_TEMPLATES),  # 7 templates, CLIP's "ensemble"
    "openai": tuple(_template(t) for t in OPENAI_TEMPLATES),  # 80 templates
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
