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
* training: :func:`method_defaults`, :func:`run_curve`;
* explore: :func:`explore_items` (gallery items, excluded images too), :func:`explore_counts`,
  :func:`duplicate_rows`, :func:`keep_one` / :func:`exclude_duplicates`, :func:`map_frame` /
  :func:`map_box` / :func:`map_ready`;
* wizard: :func:`wait_for_new_run` (Train), :func:`select_range` (shift-click in review),
  :func:`new_visitor_id` / :func:`visitor_root` / :func:`owns` (one folder of projects per Space visitor).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np

from .errors import InvalidInputError, NotReadyError
from .project import Project, data_dir, list_projects, resolve_project_path, validate_project_name

#: Project meta key holding the ids a reviewer marked "unsure" (kept until they get a label).
UNSURE_KEY = "review_unsure"
#: Review views that are not a class name.
VIEW_REVIEW = "needs review"
VIEW_ALL = "all images"
VIEW_UNLABELED = "unlabeled"


# --- projects ----------------------------------------------------------------------------------------------------
def project_rows(root: str | os.PathLike | None = None) -> list[dict]:
    """Projects under ``root`` (default: the data dir) with counts: ``{"name", "path", "images", "classes",
    "labels", "labeled"}``."""
    from .labels import label_counts

    out = []
    for p in list_projects(root):
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


def rename_project(project: Project, new_name: str, root: str | os.PathLike | None = None) -> Project:
    """Rename a project under the data dir (or ``root``): its folder moves and stored paths inside it follow.

    Returns the project opened at its new folder (the old object is closed).

    Raises
    ------
    InvalidInputError
        The new name is not valid, is taken, or the project does not live in the data dir.
    """
    if not (new_name or "").strip():
        raise InvalidInputError("type the new project name first")
    new_name = validate_project_name(new_name)
    home = Path(root) if root is not None else data_dir()
    new_root = home / new_name if root is not None else resolve_project_path(new_name)
    old_root = project.root.resolve()
    if new_root.resolve() == old_root:
        return project
    if old_root.parent != home.resolve():
        raise InvalidInputError(f"only projects in the data dir ({home}) can be renamed here; {old_root} is not")
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
        "audit": rep.extra.get("audit"),  # the audited accuracy beside the export (labeler.audit), if any
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


def train_outcome(project: Project, train_run_id: int) -> dict | None:
    """What a training run changed: the newest label run made with its model, or None if there is none yet.

    Returns ``{"label_run", "active", "n", "failed", "class_counts", "comparison", "old_method"}``:
    ``comparison`` is :func:`labeler.train.apply.compare_runs` against the label run that was active before
    (None if there was none), ``old_method`` that run's method (``"zeroshot"``, ...), ``active`` whether the
    new labels are still the project's active run.
    """
    from .jobs import list_runs
    from .labels import active_run

    label_runs = list_runs(project, kind="label")  # newest first
    made = [r for r in label_runs if r["status"] == "done" and r["params"].get("train_run") == int(train_run_id)]
    if not made:
        return None
    run = made[0]
    metrics = run["metrics"]
    comparison = metrics.get("comparison")
    methods = {r["id"]: r["method"] for r in label_runs}
    old_method = methods.get(int(comparison["old_run"])) if comparison else None  # None: deleted since
    current = active_run(project)
    return {
        "label_run": run["id"],
        "active": bool(current and current["id"] == run["id"]),
        "n": metrics.get("n", 0),
        "failed": metrics.get("failed", 0),
        "class_counts": metrics.get("class_counts") or {},
        "comparison": comparison,
        "old_method": old_method,
    }


# --- explore (cluster browser) -----------------------------------------------------------------------------------
#: Maps of more points than this (or UMAP maps) are computed in the background, not in the request.
MAP_INLINE = 20_000
#: Points drawn on the map at most (an even sample; a box selection still covers every point).
MAP_POINTS = 10_000
#: What the map can be coloured by → the :func:`labeler.projection.feature_map` field.
MAP_COLOURS = {"pseudo-label": "pseudo", "your label": "human", "final label": "final", "cluster": "cluster"}


def explore_items(project: Project, image_ids) -> list[dict]:
    """Gallery items for any images, excluded ones included, in the order given (unknown ids are dropped).

    Returns
    -------
    list of dict
        ``{"id", "sha256", "path", "label", "labels", "source", "confidence", "status"}``; ``label``/``source``
        are the final label (human > accepted > pseudo) of ok images, None for excluded ones;
        ``confidence`` the active run's top-1 probability.
    """
    from store import in_chunks

    from .labels import active_run, final_labels

    ids = list(dict.fromkeys(int(i) for i in image_ids or []))
    if not ids:
        return []
    run = active_run(project)
    rows: dict[int, tuple] = {}
    conf: dict[int, float] = {}
    for chunk, marks in in_chunks(sorted(ids)):  # only these images: a gallery page costs the same in any project
        for r in project.db.execute(f"select id, sha256, path, status from images where id in ({marks})", chunk):
            rows[int(r[0])] = r
        if run is not None:
            conf.update(
                project.db.execute(
                    f"select image_id, score from predictions where run_id = ? and image_id in ({marks})",
                    [run["id"], *chunk],
                ).fetchall()
            )
    final = {it.image_id: it for it in final_labels(project, [i for i in ids if i in rows and rows[i][3] == "ok"])}
    out = []
    for i in ids:
        if i not in rows:
            continue
        it = final.get(i)
        out.append(
            {
                "id": i,
                "sha256": rows[i][1],
                "path": rows[i][2],
                "label": it.label if it else None,
                "labels": list(it.classes) if it else [],
                "source": it.source if it else None,
                "confidence": None if conf.get(i) is None else float(conf[i]),
                "status": rows[i][3],
            }
        )
    return out


def excluded_ids(project: Project) -> list[int]:
    """Ids of the excluded images, ascending (see :func:`labeler.review.exclude_images`)."""
    from .review import excluded_images

    return excluded_images(project)


def duplicate_rows(project: Project, threshold: float = 0.95, features: str = "clip") -> list[dict]:
    """Near-duplicate groups (:func:`labeler.search.near_duplicates`) as table rows, largest first.

    Returns
    -------
    list of dict
        ``{"group", "size", "max_similarity", "min_similarity", "labels", "images"}``: ``group`` numbers
        the groups from 1, ``labels`` says which final labels the group holds ("cat ×2, dog"),
        ``images`` are the image ids, ascending.
    """
    from collections import Counter

    from .search import near_duplicates

    out = []
    for k, g in enumerate(near_duplicates(project, float(threshold), features), start=1):
        counts = Counter(it["label"] or "unlabeled" for it in g["images"])
        out.append(
            {
                "group": k,
                "size": len(g["images"]),
                "max_similarity": g["max_similarity"],
                "min_similarity": g["min_similarity"],
                "labels": ", ".join(f"{c} ×{n}" if n > 1 else c for c, n in counts.most_common()),
                "images": [it["image_id"] for it in g["images"]],
            }
        )
    return out


def keep_one(project: Project, image_ids, keep: int | None = None) -> dict:
    """Exclude every image of a group but one: ``keep`` if given, else the first one a person labeled, else
    the lowest id. Returns ``{"kept": id, "excluded": n}``."""
    from .labels import final_labels
    from .review import exclude_images

    ids = list(dict.fromkeys(int(i) for i in image_ids or []))
    if len(ids) < 2:
        raise InvalidInputError("a group needs at least two images to keep one of them")
    if keep is not None:
        keep = int(keep)
        if keep not in ids:
            raise InvalidInputError(f"image {keep} is not in this group")
    else:
        human = [it.image_id for it in final_labels(project, ids) if it.source == "human"]
        keep = min(human) if human else min(ids)
    return {"kept": keep, "excluded": exclude_images(project, [i for i in ids if i != keep])}


def exclude_duplicates(project: Project, groups: list[list[int]]) -> dict:
    """:func:`keep_one` for each group (a group's images, as ids). Returns ``{"groups", "excluded"}``."""
    groups = [g for g in groups or [] if len(g) >= 2]
    if not groups:
        raise InvalidInputError("no near-duplicate groups: find them first (or lower the threshold)")
    excluded = sum(keep_one(project, g)["excluded"] for g in groups)
    return {"groups": len(groups), "excluded": excluded}


def map_method(method: str | None = None) -> str:
    """``pca`` or ``umap``: the method asked for, or by default UMAP when it is installed, else PCA."""
    from .projection import umap_available

    if method in (None, "", "auto"):
        return "umap" if umap_available() else "pca"
    if method not in ("pca", "umap"):
        raise InvalidInputError(f"map method must be pca or umap, got {method!r}")
    return method


def map_ready(project: Project, features: str = "clip", method: str | None = None) -> bool:
    """True when the map can be drawn at once: it is cached for the current images, or it is a PCA map of at
    most :data:`MAP_INLINE` points. Otherwise compute it in the background (:func:`labeler.projection.feature_map`)."""
    from .index import resolve_set
    from .projection import cached_map

    fset = resolve_set(project, features)
    ids, _ = project.features.ok_rows(int(fset["id"]))
    method = map_method(method)
    if cached_map(project, fset["key"], method, ids) is not None:
        return True
    return method == "pca" and len(ids) <= MAP_INLINE


def map_frame(
    project: Project,
    features: str = "clip",
    method: str | None = None,
    colour_by: str = "pseudo-label",
    max_points: int = MAP_POINTS,
) -> dict:
    """The map as columns for a scatter plot, an even sample of at most ``max_points`` points.

    Returns
    -------
    dict
        ``{"x", "y", "colour", "image_id", "sha256", "label"}`` (lists, one entry per drawn point; ``colour`` the
        ``colour_by`` value as text: a class, "not labeled" or "cluster 03"), and ``method``, ``features``,
        ``n`` (points in the map), ``shown`` (points drawn), ``cluster_run``.
    """
    from .projection import feature_map

    if colour_by not in MAP_COLOURS:
        raise InvalidInputError(f"colour the map by one of {', '.join(MAP_COLOURS)}, not {colour_by!r}")
    m = feature_map(project, features, map_method(method))
    n = len(m["image_ids"])
    pick = np.arange(n) if n <= max_points else np.linspace(0, n - 1, int(max_points)).round().astype(np.int64)
    field_name = MAP_COLOURS[colour_by]
    values = m[field_name]
    width = len(str(max((c for c in values if c is not None), default=0))) if field_name == "cluster" else 0
    none_text = {"pseudo": "no pseudo-label", "human": "not labeled by you", "final": "unlabeled"}.get(
        field_name, "no cluster"
    )

    def text(v) -> str:
        if v is None:
            return none_text
        return f"cluster {int(v):0{width}d}" if field_name == "cluster" else str(v)

    xy = np.asarray(m["xy"], dtype=np.float64)
    from store import in_chunks

    drawn_ids = [int(m["image_ids"][i]) for i in pick]
    sha: dict[int, str] = {}
    for chunk, marks in in_chunks(drawn_ids):
        sha.update(project.db.execute(f"select id, sha256 from images where id in ({marks})", chunk))
    return {
        "x": [round(float(v), 5) for v in xy[pick, 0]],
        "y": [round(float(v), 5) for v in xy[pick, 1]],
        "colour": [text(values[i]) for i in pick],
        "image_id": drawn_ids,
        "sha256": [sha.get(i, "") for i in drawn_ids],
        "label": [m["final"][i] or "unlabeled" for i in pick],
        "method": m["method"],
        "features": m["features"],
        "n": n,
        "shown": len(pick),
        "cluster_run": m["cluster_run"],
    }


def map_box(
    project: Project,
    features: str = "clip",
    method: str | None = None,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float | None, float | None] | None = None,
) -> list[int]:
    """Ids of the images whose map point lies in the box (every point, not only the drawn sample).

    ``x_range``/``y_range`` are ``(low, high)`` in any order; None (or a None end) leaves that side open.
    """
    from .projection import feature_map, points_in_box

    m = feature_map(project, features, map_method(method))
    inf = float("inf")

    def ends(r) -> tuple[float, float]:
        lo = -inf if r is None or r[0] is None else float(r[0])
        hi = inf if r is None or r[1] is None else float(r[1])
        return lo, hi

    (x0, x1), (y0, y1) = ends(x_range), ends(y_range)
    return points_in_box(np.asarray(m["xy"]), m["image_ids"], x0, x1, y0, y1)


def map_lasso(project: Project, features: str = "clip", method: str | None = None, polygon=()) -> list[int]:
    """Ids of the images whose map point lies inside ``polygon`` ((P, 2) map coordinates, P ≥ 3): every point,
    not only the drawn sample (:func:`labeler.projection.points_in_polygon`)."""
    from .projection import feature_map, points_in_polygon

    m = feature_map(project, features, map_method(method))
    return points_in_polygon(np.asarray(m["xy"]), m["image_ids"], polygon)


def explore_counts(project: Project) -> dict:
    """What the Explore step shows above its views: ``{"total", "reviewed", "human", "excluded", "classes"}``;
    ``classes``: ``[{"class", "images", "reviewed"}]`` per project class (final labels; reviewed = decided by a
    person, human or accepted). One pass over the final labels."""
    from .labels import final_labels

    rows = {c: {"class": c, "images": 0, "reviewed": 0} for c in project.classes}
    total = reviewed = human = 0
    for it in final_labels(project):
        total += 1
        decided = it.source in ("human", "accepted")
        reviewed += decided
        human += it.source == "human"
        for c in it.classes:
            if c in rows:
                rows[c]["images"] += 1
                rows[c]["reviewed"] += decided
    excluded = project.db.execute("select count(*) from images where status = 'excluded'").fetchone()[0]
    return {
        "total": total,
        "reviewed": reviewed,
        "human": human,
        "excluded": int(excluded),
        "classes": list(rows.values()),
    }


# --- wizard: train, review, space ----------------------------------------------------------------------------------
def wait_for_new_run(project: Project, kind: str, after_id: int, still_starting=None, timeout: float = 10.0):
    """The id of the newest ``kind`` run with id > ``after_id``, waiting up to ``timeout`` s for it to appear.

    ``still_starting``: a callable; the wait stops early once it returns False (the work ended before creating
    its row). Returns None when no such run appeared.
    """
    import time

    from .jobs import list_runs

    deadline = time.monotonic() + float(timeout)
    while True:
        newer = [r["id"] for r in list_runs(project, kind=kind) if r["id"] > int(after_id)]
        if newer:
            return max(newer)
        if time.monotonic() >= deadline or (still_starting is not None and not still_starting()):
            return None
        time.sleep(0.1)


def select_range(page_ids, selected, anchor_id, clicked_id) -> list[int]:
    """Shift-click selection: add every image shown between ``anchor_id`` (the last click) and ``clicked_id``.

    Both ends included, in page order. Without an anchor on the page (first click, or the page changed) only
    ``clicked_id`` is added. Returns the new selection (earlier selections kept, no duplicates).
    """
    ids = [int(i) for i in page_ids or []]
    chosen = [int(i) for i in selected or []]
    clicked = int(clicked_id)
    if clicked not in ids:
        return chosen
    if anchor_id is None or int(anchor_id) not in ids:
        span = [clicked]
    else:
        a, b = ids.index(int(anchor_id)), ids.index(clicked)
        span = ids[min(a, b) : max(a, b) + 1]
    return list(dict.fromkeys([*chosen, *span]))


#: Sub-folder of the data dir that holds one folder of projects per visitor when the app runs as a Space.
VISITORS_DIRNAME = "visitors"


def new_visitor_id() -> str:
    """A fresh random visitor id (32 hex digits): the name of that visitor's project folder on a Space."""
    import secrets

    return secrets.token_hex(16)


def visitor_root(visitor_id: str | None) -> Path:
    """The folder a visitor's projects live in: ``<data dir>/visitors/<id>/`` (made if missing).

    Raises InvalidInputError unless the id is 32 hex digits (it comes from the browser: never a path).
    """
    vid = str(visitor_id or "")
    if len(vid) != 32 or any(c not in "0123456789abcdef" for c in vid):
        raise InvalidInputError("this browser session has no valid visitor id: reload the page")
    root = data_dir() / VISITORS_DIRNAME / vid
    root.mkdir(parents=True, exist_ok=True)
    return root


def owns(root: str | os.PathLike, project_path: str | os.PathLike) -> bool:
    """True when ``project_path`` is a folder directly inside ``root`` (the visitor's own project)."""
    try:
        return Path(project_path).resolve().parent == Path(root).resolve()
    except (OSError, ValueError):
        return False
