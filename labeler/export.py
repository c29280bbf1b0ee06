"""Exporters: write a project's final labels (human > accepted > pseudo) to files.

Add a format with :func:`register_exporter`; run one with :func:`export` (returns
the path written) or :func:`export_report` (also returns counts). Built in:

``csv``
    One row per ok image: ``path`` (unique, see *Paths*), ``sha256``, ``label``,
    ``score``, ``source``, ``run_id``, ``root`` (the image's import root); multi-label
    classes are joined with ``;`` (option ``sep``), and ``one_hot=True`` adds a 0/1
    column per class (after ``root``). ``scores=True`` then adds a ``score:<class>`` column per
    class: the per-class scores of the run the label came from (:func:`class_scores`; empty for
    human labels and unlabeled images).

    *None of the classes* (multi-label): an image a person said holds none of the classes has an
    empty ``label``, every one-hot column 0 and ``source`` ``human``; an unlabeled image has an empty
    ``label`` and an empty ``source``. ``report.n_none`` counts the former.

    *Encoding*: UTF-8 **with a BOM** (option ``bom=False`` to leave it out).
    Excel only detects UTF-8 in a CSV by its BOM (without it non-ASCII class
    names turn to mojibake); LibreOffice, pandas and ``encoding="utf-8-sig"``
    read it transparently. Rows end in CRLF and cells are quoted by the
    :mod:`csv` module when needed (RFC 4180), so commas, quotes and newlines in
    names survive.

    *Formula injection*: a text cell that starts with ``=``, ``+``, ``-``, ``@``,
    tab or CR would run as a formula in a spreadsheet; it is written with a
    leading ``'``. A text cell that already starts with ``'`` gets one too, so
    the rule is reversible: :func:`read_csv` removes one leading ``'`` from every
    cell and gives back exactly what was exported. (Spreadsheets show the ``'``.)

``imagefolder``
    ``out/<class>/<file name>``, copied (default) or linked (``link=True``: a symlink, where the
    file system has none a hard link, else a copy; ``report.extra["links"]`` counts each kind);
    what torchvision's ``ImageFolder`` and Keras read. Class names become safe folder names (no
    ``/``, ``\\``, ``..``, control or Windows-reserved characters; unicode kept); a file name
    already used in a class folder (ignoring case) gets a short sha256 prefix. *Multi-label*: an
    ImageFolder holds one class per image, so a multi-label project is refused unless
    ``link=True`` (or use ``csv`` with ``one_hot``, or ``jsonl``); with it each image is linked
    into the folder of every one of its labels. Links and files are only ever made inside
    ``out`` (a class folder there that is a link is refused). Unlabeled images are not written
    (counted in the report), nor are images a person labeled "none of the classes" (no folder is
    theirs; ``report.n_none`` and the manifest's ``counts["none"]`` count them). The output folder
    must be missing or empty, or a previous imagefolder export: Labeler writes a manifest ``labeler-export.json`` first,
    and re-exporting into that folder deletes only the files that manifest lists.
    An image file is copied (or linked) only if it is a regular file whose real path is not under
    ``/proc``, ``/sys`` or ``/dev``; a copy must also still have the sha256 recorded at import (read once,
    hashed while copied). Anything else counts as missing — so a tampered database cannot make the
    export read files that are not the project's images.

``jsonl``
    One JSON object per ok image: ``path``, ``sha256``, ``classes``, ``score``,
    ``source``, ``run_id``, ``width``, ``height``, ``root`` (UTF-8, no BOM); in a multi-label
    project (or with ``scores=True``) also ``scores``: ``{class: score}`` of the run the label
    came from, null for human labels and unlabeled images. An image a person labeled "none of the
    classes" has ``"classes": []`` and ``"source": "human"`` (unlabeled: ``[]`` and ``null``).

``model``
    The trained model of a ``train`` run (option ``run``; default the active run's, else the
    newest finished one) as one ``torch.save`` file: prompts + LayerNorms + head, the base model
    name and the classes (see :mod:`labeler.train.student`; a CDUL run: the head, its encoder and the
    per-class label thresholds, :func:`labeler.train.cdul.export_fields`). Registered here with the others, so
    it is there whatever was imported first; the training code (and torch) is imported only
    when it runs.

*Paths* (:func:`export_paths`): ``path`` is unique over the project's images and says where the file is.
Every image was imported under a root — a folder given to import, the folder of a single file, the folder a
zip was unpacked into, or ``files/uploads`` for copies — recorded in ``import_roots`` with an id. When all the
roots are outside the project folder (or all inside its ``files/``) and share a folder other than the
filesystem root, ``path`` is relative to that common folder: importing ``imgs/cat`` and ``imgs/dog`` gives
``cat/0000.jpg`` and ``dog/0000.jpg`` (with a single root: the path below it, as before); the report's
``extra["path_base"]`` names the folder (``extra["paths"] == "common"``). Otherwise — the user's folders beside
Labeler's own copies, whose common folder is only where the project happens to live, or roots with nothing
but ``/`` in common — ``path`` is ``<root id>/<path below the root>`` (``1/airplane/0000.jpg``,
``2/cat-0100.jpg``; ``extra["paths"] == "root_id"``). Either way ``root`` + the path below it is the file. A
path that is still taken (a file replaced after import and imported again) gets a sha256 prefix before its
file name, as ImageFolder names do. All images' roots count (excluded and missing ones too), so excluding or
including images never changes another image's path; importing from a new root can.

    path,sha256,label,score,source,run_id,root
    cat/0000.jpg,9f2c…,cat,0.93,pseudo,4,/data/imgs/cat

*Audited accuracy*: when the project has a checked audit sample (:mod:`labeler.audit`), a ``csv`` or
``jsonl`` export gets ``<export>.audit.json`` beside it — the :func:`labeler.audit.audit_report` of the final
labels (accuracy, 95 % Wilson interval, per class). A separate file, so CSV and JSONL readers see the
export unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from store import in_chunks, now

from .errors import Hint, InvalidInputError, NotReadyError
from .frontdoor import make_callable
from .labels import FinalLabel, final_labels
from .paths import PathPlan, export_paths
from .project import Project
from .registry import Registry

MANIFEST_NAME = "labeler-export.json"
#: Text cells starting with one of these are prefixed with ``'`` in CSV files.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")
CSV_COLUMNS = ["path", "sha256", "label", "score", "source", "run_id", "root"]
#: Formats that get the audited accuracy (:mod:`labeler.audit`) beside them as ``<export>.audit.json``.
AUDITED_FORMATS = ("csv", "jsonl")


@dataclass
class ExportReport:
    """What an export wrote."""

    format: str
    path: Path
    n_images: int = 0  # ok images considered
    n_labeled: int = 0  # with a label, a person's "none of the classes" included
    n_unlabeled: int = 0
    n_none: int = 0  # multi-label: labeled "none of the classes" by a person (no class; in n_labeled)
    n_files: int = 0  # files written (imagefolder: one per image and class)
    n_missing: int = 0  # imagefolder: source files that could not be read
    extra: dict = field(default_factory=dict)


@dataclass
class Exporter:
    name: str
    func: Callable[..., ExportReport]
    suffix: str  # default file suffix ('' for a folder)
    description: str

    @property
    def options(self) -> list[str]:
        """Keyword options the exporter accepts."""
        params = list(inspect.signature(self.func).parameters.values())[2:]
        return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


#: Exporters by format name (each an :class:`Exporter`). See :class:`labeler.registry.Registry`.
EXPORTERS: Registry[Exporter] = Registry("export format", summary=lambda e: e.description)


def register_exporter(name: str, suffix: str = "", description: str = "", *, replace: bool = False):
    """Decorator: register ``func(project, out: Path, *, option=...) -> ExportReport`` as format ``name``.

    ``suffix`` is the default file suffix (``""`` for a folder); ``description`` defaults to the first
    line of the function's docstring.

    Raises
    ------
    InvalidInputError
        Another exporter already has that name and ``replace`` is False.
    """

    def deco(func: Callable[..., ExportReport]) -> Callable[..., ExportReport]:
        doc = description or ((func.__doc__ or "").strip().splitlines() or [""])[0]
        if name in EXPORTERS and EXPORTERS.get(name).func is func:
            return func  # the same function again (e.g. a module imported twice): nothing changes
        EXPORTERS.register(name, Exporter(name, func, suffix, doc), replace=replace)
        return func

    return deco


def get_exporter(format: str) -> Exporter:
    """The exporter registered as ``format``.

    Raises
    ------
    InvalidInputError
        Unknown format; the message lists the registered ones.
    """
    return EXPORTERS.get(format)


def default_output(project: Project, format: str) -> Path:
    """``<project>/exports/<format>-<timestamp><suffix>``."""
    exporter = get_exporter(format)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return project.exports_dir / f"{format}-{stamp}{exporter.suffix}"


def export_report(project: Project, format: str, out: str | os.PathLike | None = None, **options) -> ExportReport:
    """Export the final labels in ``format`` to ``out`` (default: under the project's ``exports/``).

    A file format given an existing folder as ``out`` writes a timestamped file inside it. When the project
    has a checked audit sample, CSV and JSONL exports get the audited accuracy beside them in
    ``<export>.audit.json`` (:func:`labeler.audit.write_sidecar`; its path in ``report.extra["audit"]``).
    """
    exporter = get_exporter(format)
    unknown = sorted(set(options) - set(exporter.options))
    if unknown:
        allowed = ", ".join(exporter.options) or "none"
        raise InvalidInputError(f"export format {format!r} has no option {', '.join(unknown)} (options: {allowed})")
    if out is None:
        path = default_output(project, format)
    else:
        path = Path(out).expanduser()
        if exporter.suffix and path.is_dir():
            path = path / default_output(project, format).name
    path.parent.mkdir(parents=True, exist_ok=True)
    report = exporter.func(project, path, **options)
    if format in AUDITED_FORMATS:
        from .audit import write_sidecar

        sidecar = write_sidecar(project, report.path)
        if sidecar is not None:
            report.extra["audit"] = sidecar
    return report


def export(project: Project, format: str, out: str | os.PathLike | None = None, **options) -> Path:
    """Export the final labels; returns the file or folder written. See :func:`export_report`."""
    return export_report(project, format, out, **options).path


# --- helpers -----------------------------------------------------------------------------------------
def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux), else by setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as fp:
            for line in fp:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_text_writer(path: Path, encoding: str):
    """A temp file next to ``path`` (renamed over it by :func:`_commit`), with the mode a plain ``open`` would
    give (0666 less the umask; ``mkstemp`` alone makes it 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    except (OSError, AttributeError):  # no fchmod (Windows), or a file system without modes
        pass
    return open(fd, "w", encoding=encoding, newline=""), Path(tmp)


def _commit(handle, tmp: Path, path: Path, ok: bool) -> None:
    handle.close()
    if ok:
        os.replace(tmp, path)
    else:
        tmp.unlink(missing_ok=True)


def _counts(items: list[FinalLabel], fmt: str, path: Path) -> ExportReport:
    labeled = sum(1 for it in items if it.labeled)
    none = sum(1 for it in items if it.labeled and not it.classes)
    return ExportReport(
        fmt, path, n_images=len(items), n_labeled=labeled, n_unlabeled=len(items) - labeled, n_none=none
    )


def _fmt_score(score: float | None) -> str:
    return "" if score is None else f"{score:.6g}"


# --- per-class scores ---------------------------------------------------------------------------------
def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def class_scores(project: Project, items: list[FinalLabel]) -> dict[int, list[float | None]]:
    """Image id → the per-class scores (in project class order) of the run its label came from.

    Pseudo-labels have the active run's scores, accepted labels those of the run they were accepted from
    (while it exists); human labels and unlabeled images have none (absent). A project class the run did not
    have scores None.
    """
    by_run: dict[int, list[int]] = {}
    for it in items:
        if it.source in ("pseudo", "accepted") and it.run_id is not None:
            by_run.setdefault(int(it.run_id), []).append(it.image_id)
    current = project.classes
    out: dict[int, list[float | None]] = {}
    for run_id, ids in by_run.items():
        row = project.db.execute("select params from runs where id = ?", [run_id]).fetchone()
        try:
            run_classes = json.loads(row[0]).get("classes") if row and row[0] else None
        except (ValueError, AttributeError):
            run_classes = None
        if not isinstance(run_classes, list):
            continue
        where = {c: k for k, c in enumerate(run_classes)}
        cols = [where.get(c) for c in current]
        for chunk, marks in in_chunks(ids):
            for image_id, blob in project.db.execute(
                f"select image_id, probs from predictions where run_id = ? and image_id in ({marks})", [run_id, *chunk]
            ):
                vec = np.frombuffer(blob or b"", dtype="<f4")
                if vec.size != len(run_classes):
                    continue  # unreadable scores: none rather than wrong ones
                out[int(image_id)] = [None if k is None else float(vec[k]) for k in cols]
    return out


# --- csv -----------------------------------------------------------------------------------------------
def neutralize(cell: str) -> str:
    """Make a text cell safe to open in a spreadsheet (prefix ``'``; reversed by :func:`restore`)."""
    return "'" + cell if cell.startswith(FORMULA_TRIGGERS) else cell


def restore(cell: str) -> str:
    """Undo :func:`neutralize`."""
    return cell[1:] if cell.startswith("'") else cell


@register_exporter("csv", suffix=".csv")
def export_csv(
    project: Project, out: Path, *, one_hot: bool = False, sep: str = ";", bom: bool = True, scores: bool = False
) -> ExportReport:
    """One row per image: path, sha256, label, score, source, run_id, root (+ a 0/1 column per class, + scores)."""
    if not sep:
        raise InvalidInputError("sep must not be empty")
    items = final_labels(project)
    per_class = class_scores(project, items) if scores else {}
    plan = export_paths(project)
    classes = project.classes
    joined = project.multi_label or any(len(it.classes) > 1 for it in items)
    if joined:
        clash = [c for c in classes if sep in c]
        if clash:
            raise InvalidInputError(
                f"class {clash[0]!r} contains the separator {sep!r}, so joined labels would be ambiguous: "
                "pass another sep (e.g. sep='|') or one_hot=True"
            )
    header = list(CSV_COLUMNS)
    if one_hot:
        prefix = "class:" if any(c in CSV_COLUMNS for c in classes) else ""
        header += [prefix + c for c in classes]
    if scores:
        header += ["score:" + c for c in classes]
    handle, tmp = _atomic_text_writer(out, "utf-8-sig" if bom else "utf-8")
    ok = False
    try:
        writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
        writer.writerow([neutralize(h) for h in header])
        for it in items:
            row = [
                neutralize(plan.paths.get(it.image_id, it.rel_path)),
                it.sha256,
                neutralize(sep.join(it.classes)),
                _fmt_score(it.score),
                it.source or "",
                "" if it.run_id is None else str(it.run_id),
                neutralize(it.root or ""),
            ]
            if one_hot:
                have = set(it.classes)
                row += ["1" if c in have else "0" for c in classes]
            if scores:
                vec = per_class.get(it.image_id)
                row += [_fmt_score(v) for v in vec] if vec is not None else [""] * len(classes)
            writer.writerow(row)
        ok = True
    finally:
        _commit(handle, tmp, out, ok)
    return _with_paths(_counts(items, "csv", out), plan)


def _with_paths(report: ExportReport, plan: PathPlan) -> ExportReport:
    report.extra.update(paths=plan.mode, path_base=plan.base)
    return report


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV written by the ``csv`` exporter back into ``[{column: text}]``, undoing the neutralisation.

    Accepts files with or without a BOM. Values stay text (``score`` "0.93", empty for none).
    """
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = [restore(h) for h in next(reader, [])]
        return [dict(zip(header, (restore(c) for c in row), strict=False)) for row in reader]


# --- jsonl ---------------------------------------------------------------------------------------------
@register_exporter("jsonl", suffix=".jsonl")
def export_jsonl(project: Project, out: Path, *, scores: bool | None = None) -> ExportReport:
    """One JSON object per image: path, sha256, classes, score, source, run_id, width, height, root (+ scores)."""
    items = final_labels(project)
    plan = export_paths(project)
    if scores is None:
        scores = project.multi_label
    per_class = class_scores(project, items) if scores else {}
    classes = project.classes
    handle, tmp = _atomic_text_writer(out, "utf-8")
    ok = False
    try:
        for it in items:
            obj = {
                "path": plan.paths.get(it.image_id, it.rel_path),
                "sha256": it.sha256,
                "classes": it.classes,
                "score": it.score,
                "source": it.source,
                "run_id": it.run_id,
                "width": it.width,
                "height": it.height,
                "root": it.root,
            }
            if scores:
                vec = per_class.get(it.image_id)
                obj["scores"] = None if vec is None else {c: _round(v) for c, v in zip(classes, vec, strict=True)}
            handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
        ok = True
    finally:
        _commit(handle, tmp, out, ok)
    return _with_paths(_counts(items, "jsonl", out), plan)


# --- imagefolder ---------------------------------------------------------------------------------------
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
_MAX_NAME_BYTES = 200


def _truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= max_bytes else data[:max_bytes].decode("utf-8", "ignore")


def safe_name(name: str, max_bytes: int = _MAX_NAME_BYTES) -> str:
    """A file or folder name safe on Linux, macOS and Windows, keeping unicode.

    Path separators, control and Windows-reserved characters become ``_``;
    leading and trailing dots and spaces are stripped (so ``..`` cannot escape);
    reserved device names (``CON``, ``NUL``...) get a ``_`` prefix; the result
    fits in ``max_bytes`` of UTF-8 and is never empty.
    """
    text = _UNSAFE_CHARS.sub("_", name).strip(" .")
    if not text:
        return "_"
    if text.split(".")[0].upper() in _WINDOWS_RESERVED:
        text = "_" + text
    if len(text.encode("utf-8")) > max_bytes:
        stem, dot, ext = text.rpartition(".")
        if dot and 0 < len(ext.encode("utf-8")) <= 16:
            text = _truncate_utf8(stem, max_bytes - len(ext.encode("utf-8")) - 1).rstrip(" .") + "." + ext
        else:
            text = _truncate_utf8(text, max_bytes).rstrip(" .")
    return text or "_"


def _class_folders(classes: list[str]) -> dict[str, str]:
    """Class name → unique safe folder name (ignoring case), in class order."""
    used: set[str] = set()
    folders: dict[str, str] = {}
    for name in classes:
        base = safe_name(name)
        folder, n = base, 2
        while folder.casefold() in used:
            folder, n = f"{base}_{n}", n + 1
        used.add(folder.casefold())
        folders[name] = folder
    return folders


def _unique_file_name(name: str, sha256: str, used: set[str]) -> str:
    """``name``, or with a sha256 prefix (longer if needed) when a file of that name is already there."""
    if name.casefold() not in used:
        return name
    for length in (8, 16, 64):
        candidate = safe_name(f"{sha256[:length]}_{name}")
        if candidate.casefold() not in used:
            return candidate
    n = 2
    while f"{sha256[:8]}_{n}_{name}".casefold() in used:
        n += 1
    return safe_name(f"{sha256[:8]}_{n}_{name}")


def _read_manifest(out: Path) -> dict | None:
    try:
        data = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("labeler_export") == "imagefolder" else None


def _prepare_folder(out: Path) -> None:
    """Make ``out`` an empty folder: refuse foreign content, delete what a previous export listed."""
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{out} is a file; give a folder for the imagefolder export")
    if not out.exists():
        out.mkdir(parents=True)
        return
    if not any(out.iterdir()):
        return
    manifest = _read_manifest(out)
    if manifest is None:
        raise InvalidInputError(
            f"{out} is not empty and is not a previous Labeler export (no {MANIFEST_NAME}): give a new or empty folder"
        )
    root = out.resolve()
    for rel in manifest.get("files", []):
        target = out / rel
        # Only plain entries inside the folder that the manifest names; never follow a link out.
        if ".." in Path(rel).parts or Path(rel).is_absolute() or target.parent.is_symlink():
            continue
        if target.is_symlink() or target.is_file():
            target.unlink()
    for folder in manifest.get("folders", []):
        target = out / folder
        if target.parent.resolve() == root and target.is_dir() and not target.is_symlink():
            try:
                target.rmdir()  # only if now empty: files someone added stay
            except OSError:
                pass
    (out / MANIFEST_NAME).unlink(missing_ok=True)


@register_exporter("imagefolder", suffix="")
def export_imagefolder(project: Project, out: Path, *, link: bool = False) -> ExportReport:
    """out/<class>/<file>: copies (or links with link=True) of each labeled image in its class folders."""
    if project.multi_label and not link:
        raise InvalidInputError(
            "this project is multi-label, and an ImageFolder holds one class per image: export csv with one_hot "
            "(a 0/1 column per class) or jsonl instead, or link the images into one folder per label",
            hint=Hint(option="link"),
        )
    items = final_labels(project)
    _prepare_folder(out)
    folders = _class_folders(project.classes)
    # Plan every target first, so the manifest can list them before any file is written.
    used: dict[str, set[str]] = {}
    for folder in folders.values():
        if (out / folder).is_dir():  # files someone left there stay; don't clash with them
            used[folder] = {p.name.casefold() for p in (out / folder).iterdir()}
    plan: list[tuple[str, str, str]] = []  # (source path, sha256, "folder/name")
    for it in items:
        base = safe_name(Path(it.rel_path or it.path).name)
        for cls in it.classes:
            folder = folders[cls]
            names = used.setdefault(folder, set())
            name = _unique_file_name(base, it.sha256, names)
            names.add(name.casefold())
            plan.append((it.path, it.sha256, f"{folder}/{name}"))
    report = _counts(items, "imagefolder", out)
    used_folders = sorted({rel.split("/", 1)[0] for _, _, rel in plan})
    manifest = {
        "labeler_export": "imagefolder",
        "version": 1,
        "project": project.name,
        "created_at": time.time(),
        "mode": "link" if link else "copy",
        "complete": False,
        "classes": {c: f for c, f in folders.items() if f in set(used_folders)},
        "folders": used_folders,
        "files": [rel for _, _, rel in plan],
    }
    _write_json(out / MANIFEST_NAME, manifest)
    missing: list[str] = []
    root = out.resolve()
    for folder in used_folders:
        target = out / folder
        if target.is_symlink() or (target.exists() and target.resolve().parent != root):
            raise InvalidInputError(f"{target} is a link out of the export folder: give a new or empty folder")
        target.mkdir(exist_ok=True)
    kinds = {"symlink": 0, "hardlink": 0, "copy": 0}
    for src, sha, rel in plan:
        target = out / rel
        real = _readable_image(src)
        if real is None:
            missing.append(src)
            continue
        if link:
            if not _copy_checked(real, None, sha):  # check the bytes only
                missing.append(src)
                continue
            kind = _link(real, target, sha)
            if kind is None:
                missing.append(src)
                continue
            kinds[kind] += 1
        elif not _copy_checked(real, target, sha):
            missing.append(src)
            continue
        else:
            kinds["copy"] += 1
        report.n_files += 1
    report.n_missing = len(missing)
    manifest.update(
        complete=True,
        counts={
            "images": report.n_images,
            "labeled": report.n_labeled,
            "unlabeled": report.n_unlabeled,
            "none": report.n_none,
            "files": report.n_files,
            "missing": report.n_missing,
        },
        missing=missing[:100],
    )
    _write_json(out / MANIFEST_NAME, manifest)
    report.extra = {"classes": manifest["classes"], "missing": missing[:100]}
    if link:
        report.extra["links"] = kinds  # how each file was written: symlink, else hard link, else a copy
    return report


def _link(real: str, target: Path, sha256: str) -> str | None:
    """Link ``target`` (inside the export folder) to the image ``real``: a symlink, else a hard link (a file
    system without symlinks), else a checked copy. Returns how, or None when even the copy failed."""
    try:
        os.symlink(real, target)
        return "symlink"
    except OSError:
        pass
    try:
        os.link(real, target, follow_symlinks=False)
        return "hardlink"
    except (OSError, NotImplementedError):
        pass
    return "copy" if _copy_checked(real, target, sha256) else None


_FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")


def _readable_image(path: str) -> str | None:
    """The real path of an image file an export may read: a regular file, not under /proc, /sys or /dev."""
    if not path or "\x00" in path:
        return None
    real = os.path.realpath(path)
    for root in _FORBIDDEN_ROOTS:
        if real == root or real.startswith(root + os.sep) or os.path.abspath(path).startswith(root + os.sep):
            return None
    try:
        return real if stat.S_ISREG(os.lstat(real).st_mode) else None
    except OSError:
        return None


def _copy_checked(real: str, target: Path | None, sha256: str) -> bool:
    """Copy ``real`` to ``target`` (no link followed) if its bytes still have ``sha256``; else False, nothing left.

    ``target`` None: only check the bytes.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(real, flags)
    except OSError:
        return False
    h = hashlib.sha256()
    tmp = Path(os.devnull) if target is None else target.with_name(f".{target.name}.part")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        with open(tmp, "wb") as dst:
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
                if target is not None:
                    dst.write(chunk)
        if h.hexdigest() != sha256:
            return False
        if target is not None:
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, target)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        if target is not None:
            tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: dict) -> None:
    handle, tmp = _atomic_text_writer(path, "utf-8")
    ok = False
    try:
        json.dump(data, handle, ensure_ascii=False)
        ok = True
    finally:
        _commit(handle, tmp, path, ok)


# --- model ---------------------------------------------------------------------------------------------------------


def _pick_train_run(project: Project, run: int | None) -> dict:
    from .jobs import list_runs
    from .labels import active_run
    from .train.loop import BEST
    from .train.runs import run_dir, train_run

    if run is not None:
        return train_run(project, run)
    active = active_run(project)
    if active and active["params"].get("train_run") is not None:
        return train_run(project, active["params"]["train_run"])
    for candidate in list_runs(project, kind="train"):
        if candidate["status"] == "done" and (run_dir(project, candidate["id"]) / BEST).is_file():
            return candidate
    raise NotReadyError("no trained model in this project", hint=Hint("train"))


@register_exporter("model", suffix=".pt")
def export_trained_model(project: Project, out: Path, *, run: int | None = None) -> ExportReport:
    """The trained model (prompts + LayerNorms + head, base model name, classes) as one torch file."""
    from .train.cdul import MODEL_FORMAT as CDUL_FORMAT
    from .train.cdul import export_fields
    from .train.cdul_net import NET_FORMAT as CDUL_NET_FORMAT
    from .train.loop import BEST, atomic_save  # training code (torch): only when a model is exported
    from .train.runs import run_dir
    from .train.student import read_model_file

    chosen = _pick_train_run(project, run)
    src = run_dir(project, chosen["id"]) / BEST
    if not src.is_file():
        raise NotReadyError(f"run {chosen['id']} has no trained model yet (no epoch finished)")
    data = read_model_file(src)
    if out.exists() and out.is_dir():
        raise InvalidInputError(f"{out} is a folder; give a file name such as model.pt")
    if data.get("format") in (CDUL_FORMAT, CDUL_NET_FORMAT):  # the encoder, the thresholds: apply needs no project
        data.update(export_fields(project, data))
    data.update({"project": project.name, "exported_at": now(), "train_status": chosen["status"]})
    atomic_save(data, out)
    extra = {
        "train_run": chosen["id"],
        "method": data.get("method"),
        "base": data.get("encoder") or data.get("base"),
        "classes": len(data.get("classes", [])),
        "epoch": data.get("epoch"),
    }
    return ExportReport("model", out, n_files=1, extra=extra)


def formats() -> list[str]:
    """The registered format names, sorted."""
    return EXPORTERS.names()


def list_exporters() -> list[dict]:
    """Every export format, ``{"name", "summary", "suffix", "options"}`` by name (what ``--help`` and the UI show)."""
    return [
        {"name": e.name, "summary": e.summary, "suffix": e.obj.suffix, "options": e.obj.options}
        for e in EXPORTERS.list()
    ]


def export_for_download(project: Project, fmt: str, preview_rows: int = 10, **options) -> dict:
    """Export the final labels in any registered format as one downloadable file, with a preview.

    ``options`` are the format's options (:attr:`Exporter.options`); those the format does not have are
    ignored, so one set of choices serves every format.

    A format that writes a folder (``imagefolder``) is zipped next to it. The preview is the first
    ``preview_rows`` rows of a CSV or JSONL file, the first files by class of a folder, or the top-level
    fields of a JSON file (``model``).

    Returns
    -------
    dict
        ``{"path", "format", "n_images", "n_labeled", "n_unlabeled", "n_missing", "n_none", "audit", "headers",
        "rows"}``.

    Raises
    ------
    NotReadyError
        The project has no images.
    InvalidInputError
        ``fmt`` is not a registered format (the message lists them).
    """
    if project.image_count() == 0:
        raise NotReadyError("nothing to export: import images first", hint=Hint("import"))
    fmt = (fmt or "").strip().lower()
    exporter = get_exporter(fmt)
    rep = export_report(project, exporter.name, **{k: v for k, v in options.items() if k in exporter.options})
    out = {
        "format": fmt,
        "n_images": rep.n_images,
        "n_labeled": rep.n_labeled,
        "n_unlabeled": rep.n_unlabeled,
        "n_missing": rep.n_missing,
        "n_none": rep.n_none,
        "audit": rep.extra.get("audit"),  # the audited accuracy beside the export (labeler.audit), if any
    }
    path = Path(rep.path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        archive = shutil.make_archive(str(path), "zip", root_dir=path.parent, base_dir=path.name)
        rows = [[p.parent.name, p.name] for p in files if p.parent != path][:preview_rows]
        out.update(path=archive, headers=["class folder", "file"], rows=rows)
    elif path.suffix == ".csv":
        records = read_csv(path)[:preview_rows]
        headers = list(records[0].keys()) if records else list(CSV_COLUMNS)
        out.update(path=str(path), headers=headers, rows=[[r.get(h, "") for h in headers] for r in records])
    elif path.suffix == ".jsonl":
        items = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if len(items) >= preview_rows:
                    break
                if line.strip():
                    items.append(json.loads(line))
        headers = list(items[0].keys()) if items else []
        out.update(path=str(path), headers=headers, rows=[[_cell(d.get(h)) for h in headers] for d in items])
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.suffix == ".json" else {}
        except (OSError, ValueError):
            data = {}
        fields = list(data.items())[:preview_rows] if isinstance(data, dict) else []
        out.update(path=str(path), headers=["field", "value"], rows=[[k, _cell(v)] for k, v in fields])
    return out


def _cell(value) -> object:
    """A preview cell: lists and dicts as JSON text."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


def recent_exports(project: Project, limit: int = 10) -> list[str]:
    """Downloadable files in the project's ``exports/`` folder, newest first."""
    folder = project.exports_dir
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix in (".csv", ".jsonl", ".zip", ".json")]
    return [str(p) for p in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]]


__all__ = [
    "EXPORTERS",
    "ExportReport",
    "Exporter",
    "export",
    "PathPlan",
    "export_for_download",
    "export_paths",
    "export_report",
    "class_scores",
    "export_trained_model",
    "formats",
    "get_exporter",
    "list_exporters",
    "read_csv",
    "recent_exports",
    "register_exporter",
    "safe_name",
]


make_callable(__name__)  # labeler.export(...) is export(...): the front door's name for it
