"""Library calls the browser app needs that are not one call elsewhere (no gradio here).

The app (``labeler/ui/``) keeps only ids in its state and asks this module and the other core
modules for everything it shows. Nothing here imports gradio, so these functions are tested and
reusable like the rest of the library.

* projects: :func:`project_rows`, :func:`rename_project`, :func:`set_multi_label`;
* images: :func:`folder_class_names`, :func:`image_page`, :func:`thumbnail_for`;
* review: :func:`review_items` (per-class views sorted by confidence, lowest first; the
  "needs review" queue), :func:`mark_unsure` / :func:`unsure_ids`, :func:`confidence_histogram`,
  :func:`class_count_rows`;
* export: :func:`export_for_download` (CSV, ImageFolder zipped, JSONL) with a preview;
* training: :func:`method_defaults`, :func:`run_curve`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np

from .errors import InvalidInputError, NotReadyError
from .project import Project, data_dir, list_projects, resolve_project_path

#: Project meta key holding the ids a reviewer marked "unsure" (kept until they get a label).
UNSURE_KEY = "review_unsure"
#: Review views that are not a class name.
VIEW_REVIEW = "needs review"
VIEW_ALL = "all images"
VIEW_UNLABELED = "unlabeled"


# --- projects ----------------------------------------------------------------------------------------------------
def project_rows() -> list[dict]:
    """Projects under the data dir with counts: ``{"name", "path", "images", "classes", "labels", "labeled"}``."""
    from .labels import label_counts

    out = []
    for p in list_projects():
        row = {
            "name": p["name"],
            "path": p["path"],
            "images": p.get("images", 0),
            "classes": p.get("classes", 0),
            "labels": "multi" if p.get("multi_label") else "single",
            "labeled": "",
            "error": p.get("error"),
        }
        if not p.get("error"):
            try:
                project = Project(p["path"])
                c = label_counts(project)
                row["labeled"] = f"{c['human'] + c['accepted']} reviewed, {c['pseudo']} pseudo"
                project.close()
            except Exception as exc:  # a broken project must not hide the others
                row["error"] = str(exc)
        out.append(row)
    return out


def rename_project(project: Project, new_name: str) -> Project:
    """Rename a project under the data dir: its folder moves and stored paths inside it follow.

    Returns the project opened at its new folder (the old object is closed).

    Raises
    ------
    InvalidInputError
        The new name is not valid, is taken, or the project does not live in the data dir.
    """
    new_name = (new_name or "").strip()
    if not new_name:
        raise InvalidInputError("type the new project name first")
    if any(sep in new_name for sep in ("/", os.sep)) or new_name.startswith((".", "~")):
        raise InvalidInputError(f"{new_name!r} is not a project name: use letters, digits, '.', '_', '-' or spaces")
    new_root = resolve_project_path(new_name)
    old_root = project.root.resolve()
    if new_root.resolve() == old_root:
        return project
    if old_root.parent != data_dir().resolve():
        raise InvalidInputError(f"only projects in the data dir ({data_dir()}) can be renamed here; {old_root} is not")
    if new_root.exists():
        raise InvalidInputError(f"a project or folder named {new_name!r} already exists: pick another name")
    from .jobs import list_runs

    if any(r["status"] == "running" for r in list_runs(project, status="running")):
        raise InvalidInputError("a job is running in this project: wait for it (or cancel it) before renaming")
    project.close()
    os.rename(old_root, new_root)
    renamed = Project(new_root)
    old_prefix, new_prefix = str(old_root) + os.sep, str(new_root) + os.sep
    rows = renamed.db.execute("select id, path, root from images").fetchall()
    updates = []
    for image_id, path, root in rows:
        new_path = new_prefix + path[len(old_prefix) :] if path and path.startswith(old_prefix) else path
        if root and (root == str(old_root) or root.startswith(old_prefix)):
            new_img_root = str(new_root) + root[len(str(old_root)) :]
        else:
            new_img_root = root
        if (new_path, new_img_root) != (path, root):
            updates.append((new_path, new_img_root, image_id))
    with renamed.db.conn:
        renamed.db.conn.executemany("update images set path = ?, root = ? where id = ?", updates)
    renamed.set_meta("name", new_root.name)
    return renamed


def set_multi_label(project: Project, multi_label: bool) -> None:
    """Switch the project between single- and multi-label (runs keep the mode they ran with)."""
    project.set_meta("multi_label", bool(multi_label))


# --- images ------------------------------------------------------------------------------------------------------
def folder_class_names(project: Project) -> list[str]:
    """Distinct parent-folder names of the ok images (candidates for the class list), sorted."""
    rows = project.db.execute(
        "select distinct folder_label from images where status = 'ok' and folder_label is not null "
        "and folder_label != '' order by folder_label"
    ).fetchall()
    return [r[0] for r in rows]


def image_page(project: Project, offset: int = 0, limit: int = 60) -> list[dict]:
    """One page of ok image rows in id order (``id``, ``sha256``, ``rel_path``, ``folder_label``)."""
    rows = project.db.execute(
        "select id, sha256, rel_path, folder_label from images where status = 'ok' order by id limit ? offset ?",
        [int(limit), max(0, int(offset))],
    ).fetchall()
    return [{"id": r[0], "sha256": r[1], "rel_path": r[2], "folder_label": r[3]} for r in rows]


def thumbnail_for(project: Project, image_id: int, sha256: str, path: str | None = None) -> str | None:
    """The cached thumbnail file of an image (made again from the image if it went missing), or None."""
    from .ingest import BadImageError, ensure_thumbnail, thumbnail_path

    dest = thumbnail_path(project, sha256)
    if dest.exists():
        return str(dest)
    if path is None:
        row = project.db.execute("select path from images where id = ?", [int(image_id)]).fetchone()
        path = row[0] if row else None
    if path is None:
        return None
    try:
        return str(ensure_thumbnail(project, {"sha256": sha256, "path": path}))
    except (BadImageError, OSError):
        return None


# --- review ------------------------------------------------------------------------------------------------------
def unsure_ids(project: Project) -> set[int]:
    """Images marked unsure that have no human or accepted label since."""
    marked = {int(i) for i in (project.get_meta(UNSURE_KEY) or [])}
    if not marked:
        return set()
    decided = {r[0] for r in project.db.execute("select image_id from labels")}
    return marked - decided


def mark_unsure(project: Project, image_ids) -> int:
    """Mark images unsure: their human/accepted labels are cleared and they join the "needs review" queue.

    Returns how many images were marked.
    """
    from .labels import clear_labels

    ids = list(dict.fromkeys(int(i) for i in image_ids))
    if not ids:
        raise InvalidInputError("no images selected: click thumbnails to select them first")
    clear_labels(project, ids)
    marked = {int(i) for i in (project.get_meta(UNSURE_KEY) or [])} | set(ids)
    project.set_meta(UNSURE_KEY, sorted(marked))
    return len(ids)


def _pseudo_table(project: Project) -> tuple[dict[int, tuple[str, float]], list[str]]:
    """Active run: image id → (top-1 class, top-1 probability), and the run's classes."""
    from .labels import active_run, read_predictions

    run = active_run(project)
    if run is None:
        return {}, []
    ids, probs, classes = read_predictions(project, run["id"])
    if len(ids) == 0:
        return {}, classes
    top = probs.argmax(1)
    conf = probs[np.arange(len(ids)), top]
    return {int(i): (classes[int(t)], float(c)) for i, t, c in zip(ids, top, conf, strict=True)}, classes


def review_items(project: Project, view: str = VIEW_REVIEW, threshold: float = 0.5) -> list[dict]:
    """Images to review in one view, lowest confidence first.

    Parameters
    ----------
    view : str
        A class name (images whose final label includes it), :data:`VIEW_REVIEW` (no human or
        accepted label, and top-1 confidence below ``threshold`` or marked unsure),
        :data:`VIEW_UNLABELED` or :data:`VIEW_ALL`.
    threshold : float
        Confidence under which a pseudo-label needs review.

    Returns
    -------
    list of dict
        ``{"id", "sha256", "path", "rel_path", "label", "labels", "source", "pseudo", "confidence", "unsure",
        "folder_label"}``; ``confidence`` is the active run's top-1 probability (None without a prediction).
    """
    from .labels import final_labels

    pseudo, _ = _pseudo_table(project)
    unsure = unsure_ids(project)
    classes = project.classes
    if view not in (VIEW_REVIEW, VIEW_ALL, VIEW_UNLABELED) and view not in classes:
        raise InvalidInputError(f"{view!r} is not a class or a review view; pick one from the list")
    out = []
    for it in final_labels(project):
        p = pseudo.get(it.image_id)
        conf = p[1] if p else None
        item = {
            "id": it.image_id,
            "sha256": it.sha256,
            "path": it.path,
            "rel_path": it.rel_path,
            "label": it.label,
            "labels": list(it.classes),
            "source": it.source,
            "pseudo": p[0] if p else None,
            "confidence": conf,
            "unsure": it.image_id in unsure,
            "folder_label": it.folder_label,
        }
        if view == VIEW_REVIEW:
            if it.source in ("human", "accepted"):
                continue
            if not (item["unsure"] or conf is None or conf < threshold):
                continue
        elif view == VIEW_UNLABELED:
            if it.classes:
                continue
        elif view != VIEW_ALL and view not in it.classes:
            continue
        out.append(item)
    out.sort(key=lambda d: (d["confidence"] if d["confidence"] is not None else -1.0, d["id"]))
    return out


def class_count_rows(project: Project, threshold: float = 0.5) -> list[dict]:
    """Per class: final-label count, how many of those a person decided, and pseudo-labels under ``threshold``."""
    from .labels import final_labels

    pseudo, _ = _pseudo_table(project)
    rows = {c: {"class": c, "images": 0, "reviewed": 0, "low confidence": 0} for c in project.classes}
    for it in final_labels(project):
        for c in it.classes:
            r = rows[c]
            r["images"] += 1
            if it.source in ("human", "accepted"):
                r["reviewed"] += 1
            elif it.source == "pseudo":
                p = pseudo.get(it.image_id)
                if p and p[1] < threshold:
                    r["low confidence"] += 1
    return list(rows.values())


def confidence_histogram(project: Project, bins: int = 10) -> list[dict]:
    """Histogram of the active run's top-1 confidences: ``[{"bin": "0.0-0.1", "low", "images"}]`` (empty: no run)."""
    pseudo, _ = _pseudo_table(project)
    if not pseudo:
        return []
    ok = {r[0] for r in project.db.execute("select id from images where status = 'ok'")}
    conf = np.array([c for i, (_, c) in pseudo.items() if i in ok], dtype=np.float64)
    counts, edges = np.histogram(conf, bins=int(bins), range=(0.0, 1.0))
    return [
        {"bin": f"{edges[k]:.1f}–{edges[k + 1]:.1f}", "low": float(edges[k]), "images": int(counts[k])}
        for k in range(len(counts))
    ]


# --- export ------------------------------------------------------------------------------------------------------
def export_for_download(project: Project, fmt: str, preview_rows: int = 10) -> dict:
    """Export the final labels as one downloadable file and a preview of its first rows.

    ``fmt``: ``csv``, ``jsonl`` or ``imagefolder`` (written as a folder, then zipped next to it).

    Returns
    -------
    dict
        ``{"path", "format", "n_images", "n_labeled", "n_unlabeled", "headers", "rows"}`` — ``rows``
        are the first ``preview_rows`` rows of the file (for ImageFolder: its first files by class).
    """
    from .export import CSV_COLUMNS, export_report, read_csv

    if project.image_count() == 0:
        raise NotReadyError("nothing to export: import images first (step 2)")
    fmt = (fmt or "").strip().lower()
    if fmt not in ("csv", "jsonl", "imagefolder"):
        raise InvalidInputError(f"export format {fmt!r} is not one of csv, imagefolder, jsonl")
    rep = export_report(project, fmt)
    out = {
        "format": fmt,
        "n_images": rep.n_images,
        "n_labeled": rep.n_labeled,
        "n_unlabeled": rep.n_unlabeled,
        "n_missing": rep.n_missing,
    }
    if fmt == "csv":
        rows = read_csv(rep.path)[:preview_rows]
        headers = list(rows[0].keys()) if rows else list(CSV_COLUMNS)
        out.update(path=str(rep.path), headers=headers, rows=[[r.get(h, "") for h in headers] for r in rows])
    elif fmt == "jsonl":
        items = []
        with open(rep.path, encoding="utf-8") as fh:
            for line in fh:
                if len(items) >= preview_rows:
                    break
                if line.strip():
                    items.append(json.loads(line))
        headers = list(items[0].keys()) if items else []
        out.update(
            path=str(rep.path),
            headers=headers,
            rows=[
                [
                    json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                    for v in (d.get(h) for h in headers)
                ]
                for d in items
            ],
        )
    else:
        folder = Path(rep.path)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        archive = shutil.make_archive(str(folder), "zip", root_dir=folder.parent, base_dir=folder.name)
        headers = ["class folder", "file"]
        rows = [[p.parent.name, p.name] for p in files if p.parent != folder][:preview_rows]
        out.update(path=archive, headers=headers, rows=rows)
    return out


def recent_exports(project: Project, limit: int = 10) -> list[str]:
    """Downloadable files in the project's ``exports/`` folder, newest first."""
    folder = project.exports_dir
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix in (".csv", ".jsonl", ".zip", ".json")]
    return [str(p) for p in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]]


# --- training ----------------------------------------------------------------------------------------------------
def method_defaults(name: str) -> dict:
    """The default options of a method (its params dataclass) as a JSON-ready dict."""
    from .methods import get_method

    method = get_method(name)
    params = method.Params()
    out = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        out[f.name] = value if isinstance(value, (str, int, float, bool, list, dict, type(None))) else str(value)
    return out


#: Training-curve series worth plotting (others in a history row — lr, seconds, counts — are left out).
CURVE_KEYS = ("loss", "agreement", "accuracy")


def run_curve(project: Project, run_id: int) -> list[dict]:
    """A training run's curves: ``[{"step", "metric", "value"}]`` (long format, for a line plot).

    Read from the run's metrics — ``epochs`` (what :mod:`labeler.train.loop` writes after every epoch) or
    ``history`` — else from ``runs/<run_id>/metrics.jsonl``: a list of ``{"epoch"|"step", "loss",
    "train_agreement", "teacher_agreement", "val_accuracy", ...}``. Series: numeric keys whose name
    contains ``loss``, ``agreement`` or ``accuracy``.
    """
    from .jobs import get_run

    run = get_run(project, int(run_id))
    history = run["metrics"].get("epochs")
    if not isinstance(history, list):
        history = run["metrics"].get("history")
    if not isinstance(history, list):
        history = []
        path = project.runs_dir / str(run["id"]) / "metrics.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    history.append(json.loads(line))
                except ValueError:
                    continue
    out = []
    for k, point in enumerate(history):
        if not isinstance(point, dict):
            continue
        step = point.get("epoch", point.get("step", k + 1))
        for key, value in point.items():
            if key in ("step", "epoch") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if any(word in key for word in CURVE_KEYS) and np.isfinite(value):
                out.append({"step": float(step), "metric": key, "value": float(value)})
    return out
