"""Offline backends: ``template`` (built-in sentences, always available) and ``file`` (JSON/CSV descriptions)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import InvalidInputError
from .base import Backend, Request, Response
from .parse import clean_imported
from .prompts import with_article

#: Visual sentences the template backend writes before CLIP's 80 ImageNet templates.
ATTRIBUTE_SENTENCES: tuple[str, ...] = (
    "a photo of {a}, showing its typical shape and colours.",
    "{A} seen clearly in the centre of the photo.",
    "a close-up photo of {a}, showing its details and texture.",
    "{A} in its typical surroundings.",
    "a photo showing the whole {n}.",
    "a photo of {a} seen from the side.",
    "a photo of {a} seen from the front.",
    "a photo of a typical {n}.",
    "a photo of {a} in natural light.",
    "a photo of a small {n} in the distance.",
)


def template_sentences(class_name: str, count: int = 50, domain: str | None = None) -> list[str]:
    """Deterministic descriptions of a class from templates: attribute sentences, then CLIP's ImageNet templates."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES  # imports torch: only when needed

    a = with_article(class_name)
    subs = {"{a}": a, "{A}": a[:1].upper() + a[1:], "{n}": class_name}
    out = []
    if domain:
        out.append(f"a {domain} of {a}.")
    for t in ATTRIBUTE_SENTENCES:
        for k, v in subs.items():
            t = t.replace(k, v)
        out.append(t if not domain else t.replace("a photo", f"a {domain}").replace("the photo", f"the {domain}"))
    out.extend(t(class_name) for t in OPENAI_IMAGENET_TEMPLATES)
    seen, unique = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    return unique[: max(1, count)]


class TemplateBackend(Backend):
    """Built-in templates: offline, instant, always available (the fallback).

    Class descriptions are template sentences (see :func:`template_sentences`); captions are
    ``"a photo of a {class}."`` using the image's (pseudo-)class when the request has one.
    """

    name = "template"
    summary = "built-in templates, offline and instant (the fallback); captions are 'a photo of a {class}.'"
    source = "template"
    supports_images = True  # it never looks at them, but answers caption requests
    cacheable = False
    sampling = False

    def __init__(self, model: str = "builtin"):
        self.model = model
        self.batch_size = 10_000

    def sentences_from(self, text: str) -> list[str]:
        return [line for line in text.split("\n") if line.strip()]

    def work_text(self, stats: dict[str, int], n_classes: int) -> str:
        return f"built-in templates for {n_classes} classes (offline, no requests sent)"

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        out = []
        for r in requests:
            cls = r.meta.get("class_name")
            if r.task == "describe" and cls:
                text = "\n".join(template_sentences(cls, int(r.meta.get("count", 50)), r.meta.get("domain")))
            elif r.task in ("caption", "group"):
                text = f"a photo of {with_article(cls)}." if cls else "a photo."
            else:
                text = ""
            out.append(Response([text] * max(1, r.n)))
        return out


# --- description files -----------------------------------------------------------------------------------------


def read_descriptions_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read class → sentences from JSON or CSV.

    JSON: ``{"class": ["sentence", ...]}`` (CuPL/NoLA files as they are; a single string is one
    sentence) or ``[{"class": ..., "description": ...}, ...]``. CSV: ``class,description`` rows,
    with or without that header (a header may also name the column ``text``); unquoted commas in
    the description are kept.

    Raises
    ------
    InvalidInputError
        Missing file, unknown extension, or a malformed file (the message names the line or key).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"descriptions file {path} not found")
    ext = path.suffix.lower()
    if ext == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInputError(
                f'{path} is not valid JSON ({exc}); expected {{"class": ["sentence", ...]}}'
            ) from None
        out: dict[str, list[str]] = {}
        if isinstance(data, dict):
            for cls, items in data.items():
                if isinstance(items, str):
                    items = [items]
                if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                    raise InvalidInputError(f"{path}: the value of {cls!r} must be a list of sentences")
                out.setdefault(str(cls).strip(), []).extend(items)
        elif isinstance(data, list):
            for i, row in enumerate(data):
                if not isinstance(row, dict) or "class" not in row or not ({"description", "text"} & set(row)):
                    raise InvalidInputError(f'{path}: item {i} must be {{"class": ..., "description": ...}}')
                out.setdefault(str(row["class"]).strip(), []).append(str(row.get("description", row.get("text"))))
        else:
            raise InvalidInputError(f'{path}: expected a JSON object {{"class": ["sentence", ...]}}')
        return out
    if ext in (".csv", ".tsv"):
        delimiter = "\t" if ext == ".tsv" else ","
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f, delimiter=delimiter))
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8 CSV") from None
        except csv.Error as exc:
            raise InvalidInputError(f"{path}: malformed CSV ({exc})") from None
        out = {}
        ci, di, start = 0, None, 0
        if rows:
            header = [h.strip().lower() for h in rows[0]]
            if "class" in header and ({"description", "text"} & set(header)):
                ci = header.index("class")
                di = header.index("description") if "description" in header else header.index("text")
                start = 1
        for lineno, row in enumerate(rows[start:], start=start + 1):
            if not row or all(not c.strip() for c in row):
                continue
            if di is not None:
                if len(row) <= max(ci, di):
                    raise InvalidInputError(f"{path}, line {lineno}: expected the class and description columns")
                cls, text = row[ci], row[di]
            else:
                if len(row) < 2:
                    raise InvalidInputError(f"{path}, line {lineno}: expected 'class,description', got {row!r}")
                cls, text = row[0], delimiter.join(row[1:])
            out.setdefault(cls.strip(), []).append(text)
        return out
    raise InvalidInputError(f"{path}: descriptions files must be .json or .csv, not {ext or 'no extension'!r}")


def write_descriptions_file(path: str | os.PathLike, descriptions: Mapping[str, Sequence[str]]) -> Path:
    """Write class → sentences as JSON (CuPL/NoLA format) or CSV (``class,description``), by extension."""
    path = Path(path)
    ext = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if ext == ".json":
        tmp.write_text(
            json.dumps({k: list(v) for k, v in descriptions.items()}, indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
    elif ext in (".csv", ".tsv"):
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t" if ext == ".tsv" else ",")
            w.writerow(["class", "description"])
            for cls, items in descriptions.items():
                for text in items:
                    w.writerow([cls, text])
    else:
        raise InvalidInputError(f"{path}: export descriptions to a .json or .csv file, not {ext or 'no extension'!r}")
    os.replace(tmp, path)
    return path


class FileBackend(Backend):
    """Descriptions read from a JSON or CSV file (see :func:`read_descriptions_file`); no model, no captions."""

    name = "file"
    summary = "class descriptions from a JSON ({class: [sentences]}, CuPL/NoLA format) or CSV (class,description) file"
    source = "file"
    supports_images = False
    cacheable = False
    sampling = False

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.data = read_descriptions_file(self.path)
        self._folded = {k.casefold(): k for k in self.data}
        self.model = self.path.name
        self.batch_size = 10_000

    def sentences(self, class_name: str) -> list[str] | None:
        """The file's cleaned sentences for a class (matched exactly, else ignoring case); None if absent."""
        key = class_name if class_name in self.data else self._folded.get(class_name.casefold())
        if key is None:
            return None
        return clean_imported(self.data[key])[0]

    def sentences_from(self, text: str) -> list[str]:
        return [line for line in text.split("\n") if line.strip()]

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        out = []
        for r in requests:
            if r.images:
                raise InvalidInputError(
                    "the file backend only imports class descriptions; for captions pick the openai, "
                    "transformers or template backend"
                )
            found = self.sentences(r.meta.get("class_name", "")) if r.task == "describe" else None
            out.append(Response(["\n".join(found or [])] * max(1, r.n)))
        return out

    def info(self) -> dict:
        return {"backend": self.name, "model": self.model, "path": str(self.path)}

    def work_text(self, stats: dict[str, int], n_classes: int) -> str:
        return f"read {self.path} for {n_classes} classes (no requests sent)"
