"""One image in detail: what the app's preview panel shows (and a library user can ask for).

:func:`image_details` gathers, for one image of a project, the path its row has in CSV/JSONL exports (the unique
``path`` of :func:`labeler.export.export_paths`), the import root it came from, its pixel and file size, its final
label and where that label came from (a person, an accepted pseudo-label, the active run's pseudo-label), the
active run's three best class scores, and its nearest neighbours in the similarity index (when the project has
features). :func:`preview_image` decodes the image for a larger view (the thumbnail when the file is gone).

Images are named by id or sha256 (full, or a prefix of at least 6 hex digits): both are checked before any query,
so the functions can take what a browser sent.
"""

from __future__ import annotations

import os
import string
import threading
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidInputError, LabelerError, NotReadyError

if TYPE_CHECKING:
    from PIL import Image

    from .project import Project

#: Neighbours :func:`image_details` returns by default; at most :data:`MAX_NEIGHBOURS`.
NEIGHBOURS = 6
MAX_NEIGHBOURS = 48
#: Class scores :func:`image_details` returns (best first).
TOP_SCORES = 3
#: Class scores shown in multi-label projects (every class up to this many, best first).
MULTI_SCORES = 40
#: The longest side of :func:`preview_image`'s picture, in pixels, by default.
PREVIEW_SIDE = 768

_PATHS_LOCK = threading.Lock()
#: project folder → (signature of its images and roots, image id → export path); see :func:`export_path_of`.
_PATHS: dict[str, tuple[tuple, dict[int, str]]] = {}


def image_ref(image: int | str) -> int | str:
    """``image`` checked: an image id (int ≥ 1, or its digits) or a sha256 (6–64 hex digits, lower-cased).

    Raises
    ------
    InvalidInputError
        Anything else (a path, an empty or overlong string, a bool, a negative number).
    """
    if isinstance(image, (int, np.integer)) and not isinstance(image, bool):
        if int(image) < 1:
            raise InvalidInputError(f"image must be an image id (1 or more) or a sha256, got {int(image)}")
        return int(image)
    if not isinstance(image, str):
        raise InvalidInputError(f"image must be an image id or a sha256, got {type(image).__name__}")
    text = image.strip().lower()
    if text.isdigit() and len(text) < 6:
        return image_ref(int(text))
    if 6 <= len(text) <= 64 and all(ch in string.hexdigits for ch in text):
        return text
    shown = image if len(image) <= 80 else image[:77] + "..."
    raise InvalidInputError(f"image must be an image id or a sha256 (6 to 64 hex digits), got {shown!r}")


def _row(project: Project, image: int | str) -> dict:
    """The ``images`` row ``image`` (checked by :func:`image_ref`) names."""
    ref = image_ref(image)
    db = project.db
    if isinstance(ref, int):
        rows = list(db["images"].rows_where("id = ?", [ref], limit=1))
        if not rows:
            raise InvalidInputError(f"there is no image with id {ref} in this project")
        return rows[0]
    rows = list(db["images"].rows_where("sha256 like ?", [ref + "%"], limit=2))
    if len(rows) > 1:
        raise InvalidInputError(f"sha256 prefix {ref!r} matches several images: give more digits")
    if not rows and ref.isdigit():  # 6+ digits: an id in a large project, unless it was a sha256 prefix
        rows = list(db["images"].rows_where("id = ?", [int(ref)], limit=1))
    if not rows:
        raise InvalidInputError(f"no image of this project has sha256 {ref!r}")
    return rows[0]


def _paths_signature(project: Project) -> tuple:
    """What the export paths depend on, read with two aggregate queries (milliseconds at 100k images)."""
    images = project.db.execute(
        "select count(*), coalesce(max(id), 0), total(root_id), total(length(root)), total(length(rel_path)), "
        "total(length(path)) from images"
    ).fetchone()
    roots = project.db.execute("select count(*), coalesce(max(id), 0), group_concat(path, '|') from import_roots")
    return (*images, *roots.fetchone(), project.get_meta("images_version", 0))


def export_path_of(project: Project, image_ids: list[int]) -> dict[int, str]:
    """The ``path`` each of ``image_ids`` has in CSV and JSONL exports (:func:`labeler.export.export_paths`).

    The whole plan is computed once per state of the project's images and import roots and kept (a preview
    that steps through a gallery asks for one image at a time).
    """
    from .export import export_paths

    key = str(project.root)
    sig = _paths_signature(project)
    with _PATHS_LOCK:
        cached = _PATHS.get(key)
    if cached is None or cached[0] != sig:
        cached = (sig, export_paths(project).paths)
        with _PATHS_LOCK:
            _PATHS[key] = cached
    return {int(i): cached[1][int(i)] for i in image_ids if int(i) in cached[1]}


def _root(project: Project, row: dict) -> dict:
    """The image's import root: ``{"id", "path", "kind", "source"}`` (kind/source None when not recorded)."""
    rec = None
    if row.get("root_id") is not None:
        rec = project.db.execute(
            "select id, path, kind, source from import_roots where id = ?", [row["root_id"]]
        ).fetchone()
    if rec is None:
        return {"id": row.get("root_id"), "path": row.get("root"), "kind": None, "source": None}
    return {"id": rec[0], "path": row.get("root") or rec[1], "kind": rec[2], "source": rec[3]}


def _run_summary(project: Project, run_id: int | None) -> dict | None:
    if run_id is None:
        return None
    rec = project.db.execute("select id, method, kind from runs where id = ?", [int(run_id)]).fetchone()
    return None if rec is None else {"id": rec[0], "method": rec[1], "kind": rec[2]}


def _top_scores(project: Project, run: dict | None, image_id: int, n: int) -> list[dict]:
    """The run's ``n`` best class probabilities for the image, best first (empty without a prediction)."""
    if run is None:
        return []
    rec = project.db.execute(
        "select probs from predictions where run_id = ? and image_id = ?", [run["id"], image_id]
    ).fetchone()
    names = run["params"]["classes"]
    if rec is None or not rec[0]:
        return []
    probs = np.frombuffer(rec[0], dtype="<f4")
    if probs.size != len(names):
        return []
    current = set(project.classes)
    order = np.argsort(-probs, kind="stable")[:n]
    return [{"class": names[i], "score": float(probs[i]), "current": names[i] in current} for i in order]


def _label(project: Project, row: dict, run: dict | None) -> dict:
    from .labels import final_labels
    from .review import unsure_ids

    item = final_labels(project, [row["id"]])[0] if row["status"] == "ok" else None
    classes = list(item.classes) if item is not None else []
    source = item.source if item is not None else None
    run_id = item.run_id if item is not None else None
    return {
        "classes": classes,
        "label": classes[0] if classes else None,
        "source": source,  # human | accepted | pseudo | None (unlabeled, or the image is not ok)
        "score": item.score if item is not None else None,
        "run": _run_summary(project, run_id) if run_id is not None else None,
        "active_run": _run_summary(project, run["id"]) if run is not None else None,
        "unsure": row["id"] in unsure_ids(project),
    }


def _neighbours(project: Project, row: dict, k: int, features: str) -> tuple[list[dict], str]:
    """The ``k`` nearest ok images (cosine, best first) and a note ("" when they are there)."""
    from .search import similar_images

    if k == 0:
        return [], ""
    if row["status"] != "ok":
        return [], f"This image is {row['status']}: it has no neighbours until it is included again."
    try:
        found = similar_images(project, int(row["id"]), k=k, features=features)
    except NotReadyError as exc:
        return [], f"No nearest neighbours yet: {exc}. Compute features to see them."
    except LabelerError as exc:
        return [], f"No nearest neighbours: {exc}."
    paths = export_path_of(project, [r["image_id"] for r in found])
    out = [
        {
            "id": r["image_id"],
            "sha256": r["sha256"],
            "path": paths.get(r["image_id"], r["rel_path"]),
            "score": r["score"],
            "label": r["label"],
            "source": r["source"],
        }
        for r in found
    ]
    return out, "" if out else "No other image has features to compare with yet."


def image_details(project: Project, image: int | str, *, neighbours: int = NEIGHBOURS, features: str = "clip") -> dict:
    """Everything the preview shows about one image.

    Parameters
    ----------
    image : int or str
        The image's id, or its sha256 (or a prefix of at least 6 hex digits). Anything else is refused.
    neighbours : int
        How many nearest neighbours to return (0 to :data:`MAX_NEIGHBOURS`).
    features : str
        The feature set the neighbours are found with: ``clip``, ``dino`` or a set's key.

    Returns
    -------
    dict
        ``id``, ``sha256``, ``status`` (ok | excluded | missing); ``path`` (the unique path its row has in CSV/JSONL
        exports), ``rel_path`` (below its import root), ``file`` (the file on disk), ``folder`` (the folder
        holding it), ``root`` (``{"id", "path", "kind", "source"}``: the import root); ``width``, ``height``
        (pixels), ``bytes`` (file size), ``format``; ``folder_label``; ``label`` — ``{"classes", "label",
        "source" (human | accepted | pseudo | None), "score", "run" ({"id", "method", "kind"} of the run the label
        came from), "active_run", "unsure"}``; ``top`` — up to three ``{"class", "score", "current"}`` of the
        active run, best first (multi-label projects: every class of the run, up to :data:`MULTI_SCORES`, each
        also with ``in_label``, whether the image's label has it, and ``threshold``, the class's threshold);
        ``neighbours`` — ``{"id", "sha256", "path", "score" (cosine), "label", "source"}`` most similar first;
        ``neighbours_note`` — why there are none ("" when there are).

    Raises
    ------
    InvalidInputError
        ``image`` is not an id or sha256 of this project, or ``neighbours`` is out of range.
    """
    from .labels import active_run

    if not isinstance(neighbours, (int, np.integer)) or isinstance(neighbours, bool):
        raise InvalidInputError(f"neighbours must be a whole number from 0 to {MAX_NEIGHBOURS}, got {neighbours!r}")
    if not 0 <= int(neighbours) <= MAX_NEIGHBOURS:
        raise InvalidInputError(f"neighbours must be from 0 to {MAX_NEIGHBOURS}, got {int(neighbours)}")
    row = _row(project, image)
    run = active_run(project)
    near, note = _neighbours(project, row, int(neighbours), features)
    image_id = int(row["id"])
    label = _label(project, row, run)
    multi = project.multi_label
    top = _top_scores(
        project, run, image_id, min(len(run["params"]["classes"]), MULTI_SCORES) if multi and run else TOP_SCORES
    )
    if multi:  # every class, each with whether the image carries it and its threshold
        from .review import class_thresholds

        limits = class_thresholds(project)
        for t in top:
            t["in_label"] = t["class"] in label["classes"]
            t["threshold"] = limits.get(t["class"])
    return {
        "id": image_id,
        "sha256": row["sha256"],
        "status": row["status"],
        "path": export_path_of(project, [image_id]).get(image_id, row["rel_path"]),
        "rel_path": row["rel_path"],
        "file": row["path"],
        "folder": os.path.dirname(row["path"] or ""),
        "root": _root(project, row),
        "width": row["width"],
        "height": row["height"],
        "bytes": row["bytes"],
        "format": row["format"],
        "folder_label": row["folder_label"],
        "label": label,
        "top": top,
        "neighbours": near,
        "neighbours_note": note,
    }


def preview_image(project: Project, image: int | str, max_side: int = PREVIEW_SIDE) -> tuple[Image.Image, str]:
    """The image for a larger view, at most ``max_side`` px on its longer side, and a note.

    Decoded like the features see it (:func:`labeler.ingest.load_rgb`: EXIF orientation, RGB); when the file is
    gone, unreadable or no longer the size it was imported with, the cached thumbnail instead, and the note says
    why ("" otherwise).

    Raises
    ------
    InvalidInputError
        ``image`` names no image; ``max_side`` is not 16–4096.
    NotReadyError
        Neither the file nor a thumbnail can be read.
    """
    from PIL import Image as PILImage

    from .ingest import BadImageError, load_rgb, thumbnail_path

    if not isinstance(max_side, (int, np.integer)) or isinstance(max_side, bool) or not 16 <= int(max_side) <= 4096:
        raise InvalidInputError(f"max_side must be a whole number from 16 to 4096, got {max_side!r}")
    row = _row(project, image)
    note = ""
    try:
        size = os.path.getsize(row["path"])
        if row["bytes"] is not None and size != int(row["bytes"]):
            raise BadImageError(row["path"], f"the file changed since import ({size} bytes, not {row['bytes']})")
        img = load_rgb(row["path"], min_side=int(max_side))
    except (OSError, BadImageError) as exc:
        thumb = thumbnail_path(project, row["sha256"])
        reason = exc.reason if isinstance(exc, BadImageError) else "file not found"
        try:
            with PILImage.open(thumb) as t:
                img = t.convert("RGB")
        except OSError:
            raise NotReadyError(f"image {row['rel_path']} cannot be shown: {reason}, and it has no thumbnail") from None
        note = f"The file cannot be read ({reason}): this is its thumbnail."
    img.thumbnail((int(max_side), int(max_side)), PILImage.Resampling.LANCZOS)
    return img, note
