"""Prompts for class descriptions (CuPL/NoLA question forms) and image captions (LatteCLIP)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidInputError

#: CuPL-style question forms, as ``(plain, with a domain hint)``. ``{c}`` is the class name with its
#: article ("a cat", "an owl"), ``{n}`` the bare name, ``{d}`` the domain hint ("satellite photo").
QUESTION_FORMS: tuple[tuple[str, str], ...] = (
    ("Describe what {c} looks like.", "Describe what {c} looks like in a {d}."),
    ("How can you identify {c}?", "How can you identify {c} in a {d}?"),
    ("What does {c} look like in a photo?", "What does {c} look like in a {d}?"),
    ("Describe an image from the internet of {c}.", "Describe a {d} of {c}."),
    ("A caption of an image of {c}:", "A caption of a {d} of {c}:"),
    ("What are the identifying visual characteristics of {c}?", "What are the visual characteristics of {c} in a {d}?"),
)

#: How an answer should look; ``{k}`` sentences, each naming the class so CLIP's text encoder sees it.
DESCRIBE_SYSTEM = (
    "You write short visual descriptions for an image classifier. Answer with {k} different sentences, "
    "one per line, each a complete sentence that names the {n} and says what it looks like "
    "(shape, colour, texture, parts, typical surroundings). No numbering, no preamble, English only."
)

#: LatteCLIP's per-image prompt (the paper's shape: "Describe the texture in the photo concisely, less than 20
#: words."); ``{c}`` is the image's (pseudo-)class, ``{a}`` the class with its article.
CAPTION_PROMPT = "Describe the {c} in the photo concisely, less than 20 words."
#: The per-image prompt when the image has no class.
CAPTION_PROMPT_NO_CLASS = "Describe the photo concisely, less than 20 words."
#: LatteCLIP's group prompt, asked about a 2×2 grid of ``{k}`` images of one pseudo-class.
GROUP_PROMPT = "Describe the common visual attributes of the {c} in all the photos concisely, less than 20 words."
GROUP_PROMPT_NO_CLASS = "Describe the common visual attributes of all the photos concisely, less than 20 words."


def with_article(name: str) -> str:
    """``"a cat"``, ``"an owl"`` (by the first letter; names already starting with an article stay)."""
    n = name.strip()
    if n.lower().startswith(("a ", "an ", "the ")):
        return n
    return ("an " if n[:1].lower() in "aeiou" else "a ") + n


def question_prompts(class_name: str, domain: str | None = None, forms: Sequence[str] | None = None) -> list[str]:
    """The questions asked about one class.

    Parameters
    ----------
    class_name : str
    domain : str, optional
        A hint such as ``"satellite photo"`` or ``"texture"``; switches to the domain variants.
    forms : sequence of str, optional
        Your own question forms with ``{c}`` (class with article), ``{n}`` (bare name), ``{d}`` (domain).
    """
    if forms is None:
        chosen = [f[1] if domain else f[0] for f in QUESTION_FORMS]
    else:
        chosen = list(forms)
        for f in chosen:
            if "{c}" not in f and "{n}" not in f:
                raise InvalidInputError(f"question form {f!r} has no '{{c}}' or '{{n}}' where the class name goes")
    d = (domain or "photo").strip()
    return [f.replace("{c}", with_article(class_name)).replace("{n}", class_name).replace("{d}", d) for f in chosen]


def fill_class(prompt: str, class_name: str | None, fallback: str) -> str:
    """Put the class into a caption prompt (``{c}``: the name, ``{a}``: with article); ``fallback`` without a class."""
    if class_name is None:
        return fallback if ("{c}" in prompt or "{a}" in prompt) else prompt
    return prompt.replace("{a}", with_article(class_name)).replace("{c}", class_name)
