"""Ground truth sets: what classes each image truly has, for evaluation only (never for training).

Two sources, the first that has an image wins:

``file``
    A CSV, JSON or JSONL file of image → labels, imported with :func:`import_truth` into the ``ground_truth``
    table (multi-label projects). One transaction: a file with any problem writes nothing.
``folder``
    The image's folder name (``images.folder_label``), read live, so it never goes stale. Single-label
    projects: a folder that matches a class (see :func:`match_folder_labels`) gives that one class.
    Multi-label projects: a folder that matches a class is that class; otherwise a name joined with ``+``
    is the set of its parts — ``cat+dog/1.jpg`` is {cat, dog} — if every part matches a class. A folder
    that matches nothing gives no ground truth (the image is left out of evaluation). An image with none of
    the classes can only be said so by a file (an empty label list).

**Files** (the format by suffix: ``.csv``, ``.json``, ``.jsonl``/``.ndjson``; UTF-8, a BOM is fine):

- *CSV*: a header row. The image is named by the first of these columns there is: ``image_id`` (or
  ``id``), ``sha256`` (all 64 hex digits), ``path`` (the ``path`` a CSV/JSONL export gives it, else the
  absolute file path, else a unique ``rel_path``), ``rel_path``. Its labels are in a ``labels`` (or
  ``label``, ``classes``) column, joined with ``;`` (``sep``), or else in one-hot columns: every column
  named after a class (or ``class:<name>``) holds ``0`` or ``1``. A CSV written by the ``csv`` exporter
  reads back as ground truth (a leading ``'`` that the export adds against formula injection is removed).
- *JSON*: an object ``{"<path or sha256>": ["cat", "dog"], ...}``, or a list of objects as in JSONL.
- *JSONL*: one object per line, ``{"path": "cat/1.jpg", "labels": ["cat", "dog"]}`` (the image by
  ``image_id``/``id``, ``sha256``, ``path`` or ``rel_path``; the labels as ``labels``, ``classes`` or
  ``label``), so a JSONL export reads back too.

Class names match a project class exactly, else ignoring case with ``_`` as a space. The file is untrusted
input: every field is checked and each problem named by file, line and field (up to
:data:`MAX_ERRORS` of them); an unknown class name or image is an error unless ``drop_unknown_classes`` /
``skip_unknown_images`` is set (then it is counted in the report). Paths in the file are only compared
with the project's paths, never opened. The file may be at most :data:`MAX_BYTES` and
:data:`MAX_ROWS` rows.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from store import in_chunks, now, transaction

from .errors import InvalidInputError, NotReadyError
from .paths import export_paths
from .project import Project

#: Sources of ``ground_truth`` rows, the winning one first.
SOURCES = ("file", "folder")
#: The separator of class names in a multi-label folder name (``cat+dog``).
FOLDER_SEP = "+"
#: Largest truth file read, in bytes.
MAX_BYTES = 256 * 1024 * 1024
#: Most rows (CSV records, JSON entries, JSONL lines) a truth file may have.
MAX_ROWS = 2_000_000
#: Problems listed before the import gives up.
MAX_ERRORS = 20
#: Longest class name or image reference read from a file.
MAX_FIELD = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Columns (CSV) and keys (JSON) that name an image, in the order they are looked for.
IMAGE_KEYS = ("image_id", "id", "sha256", "path", "rel_path")
#: Columns (CSV) and keys (JSON) that hold the labels, in the order they are looked for.
LABEL_KEYS = ("labels", "label", "classes")


# --- class names ---------------------------------------------------------------------------------------
def normalize_class_name(name: str) -> str:
    """Key for matching folder names to class names: case-folded, '_' as space, spaces collapsed."""
    return " ".join(name.replace("_", " ").split()).casefold()


def match_folder_labels(folder_labels: Sequence[str | None], class_names: Sequence[str]) -> np.ndarray:
    """Class index of each folder label (-1 where none matches): exact name first, then normalised."""
    exact = {c: i for i, c in enumerate(class_names)}
    loose: dict[str, int] = {}
    for i, c in enumerate(class_names):
        loose.setdefault(normalize_class_name(c), i)
    out = np.full(len(folder_labels), -1, dtype=np.int64)
    for k, folder in enumerate(folder_labels):
        if folder:
            out[k] = exact.get(folder, loose.get(normalize_class_name(folder), -1))
    return out


def folder_truth(folder_label: str | None, classes: Sequence[str], multi_label: bool) -> list[str] | None:
    """The ground truth set a folder name gives (see the module docstring), or None when it gives none.

    Parameters
    ----------
    folder_label : str or None
        The image's folder name.
    classes : sequence of str
        The project's classes.
    multi_label : bool
        Whether ``+`` joins several classes (multi-label projects).

    Returns
    -------
    list of str or None
        Class names in class order (one for a single-label project).
    """
    if not folder_label:
        return None
    whole = int(match_folder_labels([folder_label], classes)[0])
    if whole >= 0:
        return [classes[whole]]
    if not multi_label or FOLDER_SEP not in folder_label:
        return None
    parts = [p for p in folder_label.split(FOLDER_SEP) if p.strip()]
    idx = match_folder_labels(parts, classes)
    if not parts or (idx < 0).any():
        return None
    return [classes[i] for i in sorted(set(idx.tolist()))]


# --- reading ---------------------------------------------------------------------------------------------
@dataclass
class TruthReport:
    """What :func:`import_truth` did."""

    file: str
    rows: int = 0  # entries read from the file
    written: int = 0  # images whose ground truth was written
    replaced: int = 0  # earlier file rows deleted (``replace``)
    skipped_images: int = 0  # entries naming no image of the project (``skip_unknown_images``)
    dropped_classes: dict[str, int] = field(default_factory=dict)  # unknown name → times (``drop_unknown_classes``)
    empty: int = 0  # images written with no class at all
    examples: list[str] = field(default_factory=list)  # the first skipped entries, as "line N: ..."

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "rows": self.rows,
            "written": self.written,
            "replaced": self.replaced,
            "skipped_images": self.skipped_images,
            "dropped_classes": dict(self.dropped_classes),
            "empty": self.empty,
            "examples": list(self.examples),
        }


class _Problems:
    """Collects a file's problems; raises them all at once (or as soon as there are MAX_ERRORS)."""

    def __init__(self, name: str):
        self.name = name
        self.items: list[str] = []

    def add(self, line: int | None, text: str) -> None:
        self.items.append(f"line {line}: {text}" if line is not None else text)
        if len(self.items) >= MAX_ERRORS:
            self.raise_()

    def raise_(self) -> None:
        if self.items:
            more = " (stopped there)" if len(self.items) >= MAX_ERRORS else ""
            raise InvalidInputError(
                f"ground truth file {self.name}: {len(self.items)} problem(s){more}, nothing imported: "
                + "; ".join(self.items)
            )


@dataclass
class _Entry:
    line: int
    key: str  # one of IMAGE_KEYS
    ref: str
    labels: list[str] | None  # None: a problem was already reported


def _text(value, what: str, line: int, problems: _Problems) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        problems.add(line, f"field {what!r} must be text, not {type(value).__name__}")
        return None
    text = str(value)
    if len(text) > MAX_FIELD or "\x00" in text:
        problems.add(line, f"field {what!r} is longer than {MAX_FIELD} characters or holds a NUL")
        return None
    return text


def restore(cell: str) -> str:
    """A cell without the one leading ``'`` the csv exporter adds against formula injection
    (:func:`labeler.export.restore`, which this mirrors: importing it here would tie truth to the exporters)."""
    return cell[1:] if cell.startswith("'") else cell


def _split(cell: str, sep: str) -> list[str]:
    return [p.strip() for p in cell.split(sep) if p.strip()]


def _count(problems: _Problems, n: int) -> None:
    if n > MAX_ROWS:
        raise InvalidInputError(
            f"ground truth file {problems.name} has more than {MAX_ROWS} rows: split it or leave out the images "
            "that are not in the project"
        )


def _csv_entries(path: Path, classes: Sequence[str], sep: str, problems: _Problems) -> Iterator[_Entry]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, strict=True)
        try:
            header = [restore(h).strip() for h in next(reader, [])]
        except csv.Error as exc:
            problems.add(1, f"the header row is not valid CSV ({exc})")
            return
        if not header:
            problems.add(None, "the file is empty (it needs a header row)")
            return
        lower = [h.casefold() for h in header]
        dup = sorted({h for h in lower if lower.count(h) > 1})
        if dup:
            problems.add(1, f"column {dup[0]!r} appears twice in the header")
            return
        key = next((k for k in IMAGE_KEYS if k in lower), None)
        if key is None:
            problems.add(1, f"no column names the image: give one of {', '.join(IMAGE_KEYS)} (header: {header[:10]})")
            return
        key_col = lower.index(key)
        label_col = next((lower.index(k) for k in LABEL_KEYS if k in lower), None)
        onehot: list[tuple[int, str]] = []
        if label_col is None:
            by_name = {c.casefold(): c for c in classes}
            for i, h in enumerate(header):
                name = h[len("class:") :] if h.casefold().startswith("class:") else h
                if i != key_col and name.casefold() in by_name:
                    onehot.append((i, by_name[name.casefold()]))
            if not onehot:
                problems.add(
                    1,
                    f"no labels column ({', '.join(LABEL_KEYS)}) and no one-hot column named after a class "
                    f"(header: {header[:10]})",
                )
                return
        n = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                problems.add(reader.line_num, f"not valid CSV ({exc})")
                return
            line = reader.line_num
            n += 1
            _count(problems, n)
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            if len(row) != len(header):
                problems.add(line, f"{len(row)} cells, but the header has {len(header)} columns")
                continue
            ref = _text(restore(row[key_col]).strip(), header[key_col], line, problems)
            if ref is None:
                continue
            if not ref:
                problems.add(line, f"field {header[key_col]!r} is empty")
                continue
            if label_col is not None:
                cell = restore(row[label_col])
                if len(cell) > MAX_FIELD * 4:
                    problems.add(line, f"field {header[label_col]!r} is too long")
                    continue
                yield _Entry(line, key, ref, _split(cell, sep))
                continue
            labels: list[str] | None = []
            for i, name in onehot:
                value = row[i].strip()
                if value not in ("0", "1"):
                    problems.add(line, f"one-hot column {header[i]!r} must be 0 or 1, not {value[:20]!r}")
                    labels = None
                    break
                if value == "1":
                    labels.append(name)
            if labels is not None:
                yield _Entry(line, key, ref, labels)


def _object_entry(obj, line: int, problems: _Problems) -> _Entry | None:
    if not isinstance(obj, dict):
        problems.add(line, f"expected an object with the image and its labels, not {type(obj).__name__}")
        return None
    key = next((k for k in IMAGE_KEYS if k in obj), None)
    if key is None:
        problems.add(line, f"no field names the image: give one of {', '.join(IMAGE_KEYS)}")
        return None
    ref = _text(obj[key], key, line, problems)
    if ref is None:
        return None
    lkey = next((k for k in LABEL_KEYS if k in obj), None)
    if lkey is None:
        problems.add(line, f"no labels field: give one of {', '.join(LABEL_KEYS)} (a list of class names)")
        return None
    return _labels_entry(obj[lkey], lkey, key, ref.strip(), line, problems)


def _labels_entry(value, what: str, key: str, ref: str, line: int, problems: _Problems) -> _Entry | None:
    if value is None:
        value = []
    if not isinstance(value, list):
        problems.add(line, f"field {what!r} must be a list of class names, not {type(value).__name__}")
        return None
    if len(value) > 10_000:
        problems.add(line, f"field {what!r} lists {len(value)} labels")
        return None
    labels = []
    for item in value:
        name = _text(item, what, line, problems) if isinstance(item, str) else None
        if name is None:
            if not isinstance(item, str):
                problems.add(line, f"field {what!r} must hold class names (text), found {type(item).__name__}")
            return None
        if name.strip():
            labels.append(name.strip())
    if not ref:
        problems.add(line, f"field {key!r} is empty")
        return None
    return _Entry(line, key, ref, labels)


def _json_entries(path: Path, problems: _Problems) -> Iterator[_Entry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        problems.add(None, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
        return
    except json.JSONDecodeError as exc:
        problems.add(exc.lineno, f"not valid JSON ({exc.msg}, column {exc.colno})")
        return
    except RecursionError:
        problems.add(None, "the JSON is nested too deeply")
        return
    if isinstance(data, dict):
        _count(problems, len(data))
        for k, (ref, value) in enumerate(data.items(), start=1):
            text = _text(ref, "image", k, problems)
            if text is None:
                continue
            text = text.strip()
            key = "sha256" if _SHA256.fullmatch(text.lower()) else "path"
            entry = _labels_entry(value, f"labels of {text[:80]!r}", key, text, k, problems)
            if entry is not None:
                yield entry
    elif isinstance(data, list):
        _count(problems, len(data))
        for k, obj in enumerate(data, start=1):
            entry = _object_entry(obj, k, problems)
            if entry is not None:
                yield entry
    else:
        problems.add(None, f"expected a JSON object (image → labels) or a list of objects, not {type(data).__name__}")


def _jsonl_entries(path: Path, problems: _Problems) -> Iterator[_Entry]:
    with open(path, encoding="utf-8-sig", errors="strict") as handle:
        n = 0
        line = 0
        while True:
            try:
                text = handle.readline(MAX_FIELD * 64)
            except UnicodeDecodeError as exc:
                problems.add(line + 1, f"not UTF-8 text ({exc.reason})")
                return
            if not text:
                return
            line += 1
            if not text.endswith("\n") and len(text) >= MAX_FIELD * 64:
                problems.add(line, f"the line is longer than {MAX_FIELD * 64} characters")
                return
            if not text.strip():
                continue
            n += 1
            _count(problems, n)
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.add(line, f"not valid JSON ({exc.msg}, column {exc.colno})")
                continue
            except RecursionError:
                problems.add(line, "the JSON is nested too deeply")
                continue
            entry = _object_entry(obj, line, problems)
            if entry is not None:
                yield entry


# --- matching a file to the project ----------------------------------------------------------------------
class _Images:
    """The project's images by every name a truth file may use."""

    def __init__(self, project: Project):
        rows = project.db.execute("select id, sha256, path, rel_path from images").fetchall()
        self.ids = {int(r[0]) for r in rows}
        self.sha = {str(r[1]).lower(): int(r[0]) for r in rows}
        self.abs = {str(r[2]): int(r[0]) for r in rows}
        self.export = {p: i for i, p in export_paths(project).paths.items()}
        rel: dict[str, list[int]] = {}
        for r in rows:
            rel.setdefault(str(r[3]), []).append(int(r[0]))
        self.rel = rel

    def find(self, key: str, ref: str) -> tuple[int | None, str | None]:
        """(image id, None) or (None, why not)."""
        if key in ("image_id", "id"):
            if not ref.isdigit() or len(ref) > 18:
                return None, f"{key} {ref[:40]!r} is not an image id (a whole number)"
            return (int(ref), None) if int(ref) in self.ids else (None, f"there is no image with id {ref}")
        if key == "sha256":
            low = ref.lower()
            if not _SHA256.fullmatch(low):
                return None, f"sha256 {ref[:80]!r} is not 64 hex digits"
            return (self.sha[low], None) if low in self.sha else (None, f"no image has sha256 {low[:12]}…")
        if key == "path":
            for table in (self.export, self.abs):
                if ref in table:
                    return table[ref], None
        hits = self.rel.get(ref, [])
        if len(hits) == 1:
            return hits[0], None
        if len(hits) > 1:
            return None, f"{key} {ref[:80]!r} names {len(hits)} images: give the export path or sha256"
        return None, f"no image of the project has {key} {ref[:80]!r}"


def _class_matcher(classes: Sequence[str]):
    exact = set(classes)
    loose: dict[str, str] = {}
    for c in classes:
        loose.setdefault(normalize_class_name(c), c)

    def match(name: str) -> str | None:
        return name if name in exact else loose.get(normalize_class_name(name))

    return match


def import_truth(
    project: Project,
    path: str | os.PathLike,
    *,
    replace: bool = False,
    skip_unknown_images: bool = False,
    drop_unknown_classes: bool = False,
    sep: str = ";",
) -> TruthReport:
    """Import a ground truth file (CSV, JSON or JSONL; see the module docstring) into ``ground_truth``.

    All or nothing: the file is read and checked whole, then written in one transaction. An image the file
    names gets its file row (replacing an earlier one); ``replace`` first deletes every earlier file row.

    Parameters
    ----------
    path : path-like
        ``.csv``, ``.json``, ``.jsonl`` or ``.ndjson``.
    replace : bool
        Drop the ground truth of earlier files first (the folder names stay).
    skip_unknown_images, drop_unknown_classes : bool
        Count an entry naming no image of the project (a class name that is no project class) instead of
        refusing the file.
    sep : str
        The separator of class names in a CSV labels column.

    Returns
    -------
    TruthReport

    Raises
    ------
    InvalidInputError
        The file is missing, too large, of an unknown kind or has problems (each named by line and field).
    NotReadyError
        The project is single-label (its ground truth is the folder names) or has no classes.
    """
    if not project.multi_label:
        raise NotReadyError(
            "ground truth files are for multi-label projects; a single-label project takes its ground truth from "
            "class-named folders"
        )
    classes = project.classes
    if not classes:
        raise NotReadyError("the project has no classes yet: set them first")
    if not isinstance(sep, str) or not sep or sep.isspace():
        raise InvalidInputError(f"sep must be a visible separator such as ';', not {sep!r}")
    file = Path(path).expanduser()
    name = file.name
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise InvalidInputError(f"cannot read ground truth file {file}: {exc.strerror or exc}") from None
    if not file.is_file():
        raise InvalidInputError(f"{file} is not a file")
    if size > MAX_BYTES:
        raise InvalidInputError(f"ground truth file {name} is {size} bytes; at most {MAX_BYTES} are read")
    suffix = file.suffix.lower()
    problems = _Problems(name)
    if suffix == ".csv":
        entries: Iterator[_Entry] = _csv_entries(file, classes, sep, problems)
    elif suffix == ".json":
        entries = _json_entries(file, problems)
    elif suffix in (".jsonl", ".ndjson"):
        entries = _jsonl_entries(file, problems)
    else:
        raise InvalidInputError(f"ground truth file {name}: give a .csv, .json or .jsonl file, not {suffix or 'none'}")
    images = _Images(project)
    match = _class_matcher(classes)
    order = {c: i for i, c in enumerate(classes)}
    report = TruthReport(str(file))
    seen: dict[int, tuple[int, list[str]]] = {}
    try:
        for entry in entries:
            report.rows += 1
            image_id, why = images.find(entry.key, entry.ref)
            if image_id is None:
                if skip_unknown_images and why and why.startswith(("no image", "there is no image")):
                    report.skipped_images += 1
                    if len(report.examples) < 10:
                        report.examples.append(f"line {entry.line}: {why}")
                else:
                    problems.add(entry.line, f"field {entry.key!r}: {why}")
                continue
            names: list[str] = []
            bad = False
            for raw in entry.labels or []:
                canon = match(raw)
                if canon is None:
                    if drop_unknown_classes:
                        report.dropped_classes[raw[:100]] = report.dropped_classes.get(raw[:100], 0) + 1
                        continue
                    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
                    problems.add(entry.line, f"{raw[:100]!r} is not a class of the project (classes: {shown})")
                    bad = True
                    break
                if canon not in names:
                    names.append(canon)
            if bad:
                continue
            names.sort(key=order.__getitem__)
            if image_id in seen:
                first, before = seen[image_id]
                if before != names:
                    problems.add(entry.line, f"the image of line {first} is given again, with other labels")
                continue
            seen[image_id] = (entry.line, names)
    except UnicodeDecodeError as exc:
        problems.add(None, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    problems.raise_()
    t = now()
    rows = [(i, json.dumps(n, ensure_ascii=False), "file", str(file), t) for i, (_, n) in seen.items()]
    with transaction(project.db):
        if replace:
            report.replaced = project.db.execute("delete from ground_truth where source = 'file'").rowcount
        project.db.conn.executemany(
            "insert or replace into ground_truth (image_id, labels, source, file, created_at) values (?, ?, ?, ?, ?)",
            rows,
        )
    report.written = len(rows)
    report.empty = sum(1 for _, n in seen.values() if not n)
    return report


def clear_truth(project: Project, source: str | None = "file") -> int:
    """Delete ``ground_truth`` rows of ``source`` (None: all). Returns the rows deleted."""
    if source is not None and source not in SOURCES:
        raise InvalidInputError(f"source must be one of {', '.join(SOURCES)} or None, not {source!r}")
    with transaction(project.db):
        if source is None:
            return int(project.db.execute("delete from ground_truth").rowcount)
        return int(project.db.execute("delete from ground_truth where source = ?", [source]).rowcount)


# --- the sets --------------------------------------------------------------------------------------------
def truth_table(project: Project, image_ids: Sequence[int] | None = None) -> dict[int, tuple[list[str], str]]:
    """Image id → (true classes in class order, source ``file`` | ``folder``) for ok images with ground truth.

    A ``ground_truth`` row wins over the folder name. Class names that are no longer project classes are
    dropped (a file row left empty by that stays: the image has none of the current classes).
    """
    classes = project.classes
    multi = project.multi_label
    keep = {c: i for i, c in enumerate(classes)}
    sql = "select i.id, i.folder_label, g.labels, g.source from images i left join ground_truth g on g.image_id = i.id"
    sql += " where i.status = 'ok'"
    rows: list[tuple] = []
    if image_ids is None:
        rows = project.db.execute(sql + " order by i.id").fetchall()
    else:
        for chunk, marks in in_chunks(sorted({int(i) for i in image_ids})):
            rows += project.db.execute(sql + f" and i.id in ({marks}) order by i.id", chunk).fetchall()
    out: dict[int, tuple[list[str], str]] = {}
    folders: dict[str, list[str] | None] = {}
    for image_id, folder, labels, source in rows:
        if labels is not None:
            try:
                names = json.loads(labels)
            except ValueError:
                names = None
            if isinstance(names, list):
                out[int(image_id)] = (sorted({n for n in names if n in keep}, key=keep.__getitem__), source)
                continue
        if folder is None:
            continue
        if folder not in folders:
            folders[folder] = folder_truth(folder, classes, multi)
        found = folders[folder]
        if found is not None:
            out[int(image_id)] = (list(found), "folder")
    return out


def truth_sets(project: Project) -> dict[int, list[str]]:
    """Image id → its true classes (class order) for every ok image with ground truth (file > folder name)."""
    return {i: names for i, (names, _) in truth_table(project).items()}


def truth_summary(project: Project) -> dict:
    """``{"images", "file", "folder", "files"}``: ok images with ground truth, by source, and the files used."""
    table = truth_table(project)
    files = [r[0] for r in project.db.execute("select distinct file from ground_truth where source = 'file'")]
    return {
        "images": len(table),
        "file": sum(1 for _, s in table.values() if s == "file"),
        "folder": sum(1 for _, s in table.values() if s == "folder"),
        "files": sorted(f for f in files if f),
    }


__all__ = [
    "FOLDER_SEP",
    "MAX_BYTES",
    "MAX_ROWS",
    "SOURCES",
    "TruthReport",
    "clear_truth",
    "folder_truth",
    "import_truth",
    "match_folder_labels",
    "normalize_class_name",
    "truth_sets",
    "truth_summary",
    "truth_table",
]
