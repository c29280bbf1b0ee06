"""Predictions, pseudo-labels and human decisions: the review API the UI and CLI call.

Three layers of labels, highest precedence first:

``human``
    A person set the label (``labels`` row with source ``human``). Never
    overwritten by :func:`accept_pseudo_labels`.
``accepted``
    A person accepted a run's pseudo-label as it was (``labels`` row with source
    ``accepted``, keeping the run's score and id).
``pseudo``
    The prediction of the *active run* (:func:`active_run`) for the image, read
    live from ``predictions``; it changes when the active run changes.

A run stores class *indices* into the class list it ran with (``params["classes"]``);
they are mapped to names through that list, so a run stays readable after the
project's classes change. Class names that are no longer project classes are
dropped from every layer (a ``labels`` row whose classes were all removed falls
through to the next layer).

In a multi-label project a person may say an image holds *none* of the classes: a ``human`` row whose class
list is empty (``[]``, :func:`set_human_labels` with no class). It is a decision like any other (it wins over
accepted and pseudo-labels, undoes, clears): :func:`final_labels` gives it ``classes == []`` with
``source == "human"``, while an unlabeled image has ``source None`` (:func:`stored_classes`).

Multi-label class lists are ordered with the *primary* class first: the run's
top-1 class for pseudo and accepted labels, the first class given for human ones.

Multi-label pseudo-labels follow the project's per-class thresholds once a person set one
(:meth:`labeler.project.Project.thresholds`): class c is in an image's set iff its score in the run's
probability vector is at least c's threshold; a class without a threshold keeps the run's own decision
(:func:`pseudo_label_sets`). Accepting copies the set as it is then.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import sqlite_utils

from store import in_chunks, now, transaction

from .errors import Hint, InvalidInputError, NotReadyError
from .history import counted, record, snapshot
from .jobs import get_run
from .project import Project

#: Sources a ``labels`` row may have.
LABEL_SOURCES = ("human", "accepted")
#: ``final_labels`` sources, highest precedence first (None: unlabeled).
SOURCES = ("human", "accepted", "pseudo")
#: Project meta key holding the id of the run whose predictions are the pseudo-labels.
ACTIVE_RUN_KEY = "active_run"


@dataclass(slots=True)
class FinalLabel:
    """The label an image ends up with after precedence (what exports write)."""

    image_id: int
    sha256: str
    path: str
    rel_path: str
    root: str | None
    classes: list[str] = field(default_factory=list)  # empty: unlabeled, or "none of these" (source human)
    score: float | None = None  # the run's top-1 probability (None for human labels)
    source: str | None = None  # human | accepted | pseudo | None
    run_id: int | None = None  # the run the label came from (None for human labels)
    folder_label: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def label(self) -> str | None:
        """The primary class, or None if unlabeled (or labeled "none of these")."""
        return self.classes[0] if self.classes else None

    @property
    def labeled(self) -> bool:
        """Whether the image has a label: some classes, or a person's "none of these" (multi-label)."""
        return self.source is not None

    def to_dict(self) -> dict:
        return asdict(self)


# --- runs ------------------------------------------------------------------------------------------------
def get_label_run(project: Project, run_id: int, require_done: bool = True) -> dict:
    """The decoded ``runs`` row of a label run (``require_done``: a finished one).

    Raises
    ------
    InvalidInputError
        There is no such run, it is not a labeling run, it is not done (with ``require_done``), or it
        has no class list.
    """
    try:
        run = get_run(project, int(run_id))
    except (sqlite_utils.db.NotFoundError, TypeError, ValueError):
        raise InvalidInputError(f"there is no run {run_id!r}", hint=Hint("runs")) from None
    if run["kind"] != "label":
        raise InvalidInputError(f"run {run['id']} is a {run['kind']!r} run, not a labeling run")
    if require_done and run["status"] != "done":
        raise InvalidInputError(
            f"run {run['id']} is {run['status']}, not done: only a finished labeling run can be used"
        )
    if not isinstance(run["params"].get("classes"), list):
        raise InvalidInputError(f"run {run['id']} has no class list in its params; it cannot be read")
    return run


def active_run(project: Project) -> dict | None:
    """The run whose predictions are the pseudo-labels, decoded like :func:`labeler.jobs.get_run`.

    The run named by the project meta key ``active_run`` if it is still a done
    labeling run, else the newest done labeling run; None if there is none.
    """
    chosen = project.get_meta(ACTIVE_RUN_KEY)
    if chosen is not None:
        try:
            return get_label_run(project, chosen)
        except InvalidInputError:
            pass  # deleted, failed or rerun since: fall back to the newest
    row = project.db.execute(
        "select id from runs where kind = 'label' and status = 'done' order by id desc limit 1"
    ).fetchone()
    if row is None:
        return None
    run = get_run(project, row[0])
    return run if isinstance(run["params"].get("classes"), list) else None


def set_active_run(project: Project, run_id: int | None) -> dict | None:
    """Make ``run_id`` (a done labeling run) the source of pseudo-labels; None goes back to the newest.

    Returns the now active run (or None when there is no labeling run at all).
    """
    if run_id is None:
        project.set_meta(ACTIVE_RUN_KEY, None)
        return active_run(project)
    run = get_label_run(project, run_id)
    project.set_meta(ACTIVE_RUN_KEY, run["id"])
    return run


# --- predictions ---------------------------------------------------------------------------------------
def write_predictions(
    project: Project,
    run_id: int,
    image_ids: Sequence[int],
    probs: np.ndarray,
    labels: list[list[int]] | None = None,
) -> None:
    """Store one batch of a run's predictions (replacing earlier rows for the same images).

    Parameters
    ----------
    run_id : int
        A ``runs`` row whose ``params["classes"]`` is the class list the run uses (C names).
    image_ids : sequence of int
        N distinct ids of ``images`` rows.
    probs : ndarray (N, C)
        Finite class probabilities; the top-1 index and score are derived from them,
        and the row is stored as float32.
    labels : list of list of int, optional
        For multi-label runs (``params["multi_label"]`` true), required: the classes
        predicted for each image (may be empty). Must be None for single-label runs.
    """
    try:
        run = get_run(project, int(run_id))
    except (sqlite_utils.db.NotFoundError, TypeError, ValueError):
        raise InvalidInputError(f"there is no run {run_id!r} to write predictions to") from None
    run_classes = run["params"].get("classes")
    if not isinstance(run_classes, list) or not run_classes:
        raise InvalidInputError(f"run {run['id']} has no 'classes' list in its params; start it with one")
    num_classes = len(run_classes)
    multi = bool(run["params"].get("multi_label", False))

    ids = [int(i) for i in image_ids]
    n = len(ids)
    if len(set(ids)) != n:
        raise InvalidInputError("image_ids contains duplicates")
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape != (n, num_classes):
        raise InvalidInputError(
            f"probs has shape {arr.shape}; expected ({n}, {num_classes}) for {n} images and "
            f"run {run['id']}'s {num_classes} classes"
        )
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr).all(axis=1)).sum())
        raise InvalidInputError(f"probs has NaN or infinite values in {bad} of {n} rows")
    if multi and labels is None:
        raise InvalidInputError(f"run {run['id']} is multi-label: pass labels (the class indices per image)")
    if not multi and labels is not None:
        raise InvalidInputError(f"run {run['id']} is single-label: labels must be None")
    label_json: list[str | None] = [None] * n
    if labels is not None:
        if len(labels) != n:
            raise InvalidInputError(f"labels has {len(labels)} entries for {n} images")
        for k, row in enumerate(labels):
            idx = sorted({int(c) for c in row})
            if idx and (idx[0] < 0 or idx[-1] >= num_classes):
                raise InvalidInputError(f"labels[{k}] = {list(row)} has a class index outside 0..{num_classes - 1}")
            label_json[k] = json.dumps(idx)
    if n == 0:
        return

    missing = set(ids) - _existing_ids(project, ids)
    if missing:
        raise InvalidInputError(f"{len(missing)} image ids do not exist, e.g. {sorted(missing)[:5]}")
    top = arr.argmax(axis=1)
    f32 = arr.astype("<f4")
    rows = [(run["id"], ids[k], int(top[k]), float(f32[k, top[k]]), label_json[k], f32[k].tobytes()) for k in range(n)]
    with project.db.conn:
        project.db.conn.executemany(
            "insert or replace into predictions (run_id, image_id, class_idx, score, labels, probs) "
            "values (?, ?, ?, ?, ?, ?)",
            rows,
        )


def read_predictions(project: Project, run_id: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All predictions of a run: ``(image_ids (N,) int64, probs (N, C) float32, classes)`` in image id order.

    ``classes`` is the run's class list (``params["classes"]``), which the columns of ``probs`` follow.
    """
    try:
        run = get_run(project, int(run_id))
    except (sqlite_utils.db.NotFoundError, TypeError, ValueError):
        raise InvalidInputError(f"there is no run {run_id!r}") from None
    classes = run["params"].get("classes")
    if not isinstance(classes, list):
        raise InvalidInputError(f"run {run['id']} has no class list in its params; it has no readable predictions")
    num_classes = len(classes)
    rows = project.db.execute(
        "select image_id, probs from predictions where run_id = ? order by image_id", [run["id"]]
    ).fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    probs = np.empty((len(rows), num_classes), dtype=np.float32)
    for k, (image_id, blob) in enumerate(rows):
        vec = np.frombuffer(blob or b"", dtype="<f4")
        if vec.size != num_classes:
            raise InvalidInputError(
                f"run {run['id']}: the stored probabilities of image {image_id} have {vec.size} values, "
                f"not {num_classes}; rerun the labeling"
            )
        probs[k] = vec
    return ids, probs, list(classes)


def pseudo_top1(project: Project, run_id: int | None = None) -> dict[int, tuple[str | None, float]]:
    """Image id → (top-1 class name of a labeling run, its score); empty when there is no run.

    ``run_id`` defaults to the active run. A class index outside the run's class list gives None.
    """
    run = get_label_run(project, run_id) if run_id is not None else active_run(project)
    if run is None:
        return {}
    names = run["params"]["classes"]
    return {
        int(i): (names[c] if 0 <= c < len(names) else None, float(s))
        for i, c, s in project.db.execute(
            "select image_id, class_idx, score from predictions where run_id = ?", [run["id"]]
        )
    }


# --- multi-label pseudo-label sets under the project's thresholds ----------------------------------------
def apply_thresholds(probs: np.ndarray, run_sets: Sequence[Sequence[int]], thresholds: np.ndarray) -> list[list[int]]:
    """Multi-label sets under per-class thresholds: pure, on arrays.

    Parameters
    ----------
    probs : ndarray (N, C)
        Class scores in the run's class order.
    run_sets : sequence of N index lists
        The run's own label set per image (used for the classes without a threshold).
    thresholds : ndarray (C,)
        Per-class threshold in [0, 1]; NaN: no threshold, keep the run's decision for that class.

    Returns
    -------
    list of N index lists
        Class c is in row n's set iff ``probs[n, c] >= thresholds[c]`` (or, for a NaN threshold, c is in
        ``run_sets[n]``). Each list has its best-scoring class first, the others ascending.
    """
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if p.ndim != 2 or t.shape != (p.shape[1],):
        raise InvalidInputError(f"probs must be (N, C) and thresholds (C,); got {p.shape} and {t.shape}")
    if len(run_sets) != p.shape[0]:
        raise InvalidInputError(f"run_sets has {len(run_sets)} rows for {p.shape[0]} score rows")
    if np.any((t < 0) | (t > 1)):
        raise InvalidInputError("thresholds must lie in [0, 1] (NaN: none)")
    free = np.isnan(t)
    mask = p >= np.where(free, np.inf, t)
    if free.any():
        own = np.zeros(p.shape, dtype=bool)
        for n, row in enumerate(run_sets):
            idx = [int(c) for c in row if 0 <= int(c) < p.shape[1]]
            own[n, idx] = True
        mask[:, free] = own[:, free]
    out: list[list[int]] = []
    for n in range(p.shape[0]):
        idx = np.flatnonzero(mask[n])
        if idx.size == 0:
            out.append([])
            continue
        best = int(idx[np.argmax(p[n, idx])])
        out.append([best, *(int(i) for i in idx if i != best)])
    return out


def run_thresholds(run_classes: Sequence[str], saved: Mapping[str, float]) -> np.ndarray:
    """The project's saved thresholds (class name → value) in a run's class order: (C,), NaN where none is set."""
    return np.array([float(saved[c]) if c in saved else np.nan for c in run_classes], dtype=np.float64)


_SETS_LOCK = threading.Lock()
#: (database path, run id) → (key, image id → JSON label set): see :func:`pseudo_label_sets`.
_SETS: dict[tuple[str, int], tuple[tuple, dict[int, str]]] = {}
#: Runs whose sets are kept at once (least recently computed dropped).
SETS_KEPT = 8


def pseudo_label_sets(project: Project, run: dict | None) -> dict[int, str] | None:
    """Image id → the JSON class-index list of its multi-label pseudo-label under the project's thresholds.

    None where thresholds do not apply: a single-label run, or no threshold set for any class of the run (each
    image's stored set stands). Each list has the best-scoring class first. Computed over the run's whole
    probability matrix at once and kept until the run's predictions or the thresholds change.
    """
    if run is None or not run["params"].get("multi_label"):
        return None
    run_classes = list(run["params"]["classes"])
    t = run_thresholds(run_classes, project.thresholds())
    if np.isnan(t).all():
        return None
    rid = int(run["id"])
    count, top = project.db.execute("select count(*), max(rowid) from predictions where run_id = ?", [rid]).fetchone()
    db_key = (os.path.realpath(project.root / "labeler.db"), rid)
    key = (run.get("created_at"), count, top, tuple(run_classes), tuple(np.nan_to_num(t, nan=-1.0).tolist()))
    got = _SETS.get(db_key)
    if got is not None and got[0] == key:
        return got[1]
    rows = project.db.execute(
        "select image_id, labels, probs from predictions where run_id = ? order by image_id", [rid]
    ).fetchall()
    num = len(run_classes)
    probs = np.zeros((len(rows), num), dtype=np.float64)
    own: list[list[int]] = []
    for k, (image_id, labels_json, blob) in enumerate(rows):
        vec = np.frombuffer(blob or b"", dtype="<f4")
        if vec.size != num:
            raise InvalidInputError(
                f"run {rid}: the stored probabilities of image {image_id} have {vec.size} values, not {num}; "
                "rerun the labeling"
            )
        probs[k] = vec
        own.append(json.loads(labels_json) if labels_json else [])
    sets = apply_thresholds(probs, own, t)
    out = {int(r[0]): json.dumps(s) for r, s in zip(rows, sets, strict=True)}
    with _SETS_LOCK:
        _SETS[db_key] = (key, out)
        while len(_SETS) > SETS_KEPT:
            del _SETS[next(iter(_SETS))]
    return out


# --- human decisions -----------------------------------------------------------------------------------
def _existing_ids(project: Project, ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for chunk, marks in in_chunks(ids):
        found.update(r[0] for r in project.db.execute(f"select id from images where id in ({marks})", chunk))
    return found


def _id_list(image_ids: int | Iterable[int]) -> list[int]:
    if isinstance(image_ids, (int, np.integer)):
        return [int(image_ids)]
    return list(dict.fromkeys(int(i) for i in image_ids))


def _canonical_classes(project: Project, classes: str | Sequence[str], allow_none: bool = False) -> list[str]:
    """Validate user class names against the project's classes (exact, then ignoring case).

    ``allow_none``: an empty list is accepted in a multi-label project ("none of these"); else refused.
    """
    names = [classes] if isinstance(classes, str) else list(classes)
    current = project.classes
    if not current:
        raise NotReadyError("the project has no classes yet: set them first")
    by_key = {c.casefold(): c for c in current}
    out: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise InvalidInputError(f"class name {name!r} is not text")
        canon = name if name in current else by_key.get(" ".join(name.split()).casefold())
        if canon is None:
            shown = ", ".join(current[:20]) + (", ..." if len(current) > 20 else "")
            raise InvalidInputError(f"{name!r} is not a class of this project (classes: {shown})")
        if canon not in out:
            out.append(canon)
    if not out:
        if allow_none and project.multi_label:
            return out
        if allow_none:
            raise InvalidInputError(
                "no class given: this project is single-label, so an image's label is exactly one class and "
                "cannot be set to none; to remove a label use clear_labels"
            )
        raise InvalidInputError("no class given: to remove a label use clear_labels")
    if len(out) > 1 and not project.multi_label:
        raise InvalidInputError(f"this project is single-label: give exactly one class, not {len(out)}")
    return out


def canonical_classes(project: Project, classes: str | Sequence[str], allow_none: bool = False) -> list[str]:
    """Check user class names against the project's classes (exact, then ignoring case); returns the project's
    spelling. One name, or for multi-label projects a list (the first is the primary class); ``allow_none``: an
    empty list is fine in a multi-label project ("none of these")."""
    return _canonical_classes(project, classes, allow_none)


def stored_classes(raw: str | None, keep: Iterable[str]) -> list[str] | None:
    """The classes of a stored ``labels`` value (JSON list) that are still project classes (``keep``).

    Returns None when the row does not decide the image (no row, or every class it named was removed since: it
    falls through to the next layer) and ``[]`` for a person's "none of these" (a stored empty list).
    """
    if raw is None:
        return None
    names = json.loads(raw)
    keep = keep if isinstance(keep, (set, frozenset, dict)) else set(keep)
    kept = [c for c in names if c in keep]
    return kept if kept or not names else None


def set_human_labels(project: Project, image_ids: int | Iterable[int], classes: str | Sequence[str]) -> int:
    """Label images by hand (replacing any earlier label of theirs). Returns the number of images labeled.

    ``classes`` is one class name, or for multi-label projects a list of them
    (the first is the primary class). Names must be project classes (matched
    exactly, else ignoring case). In a multi-label project an empty list stores
    "none of these" (the image is a negative for every class); a single-label
    project refuses it.
    """
    names = _canonical_classes(project, classes, allow_none=True)
    ids = _id_list(image_ids)
    missing = set(ids) - _existing_ids(project, ids)
    if missing:
        raise InvalidInputError(f"{len(missing)} image ids do not exist, e.g. {sorted(missing)[:5]}")
    value = json.dumps(names, ensure_ascii=False)
    t = now()
    with transaction(project.db):  # snapshot, write and undo entry together: undo never sees half of it
        before = snapshot(project, ids)
        project.db.conn.executemany(
            "insert or replace into labels (image_id, classes, source, score, run_id, time) "
            "values (?, ?, 'human', null, null, ?)",
            [(i, value, t) for i in ids],
        )
        record(project, f"label {counted(len(ids), 'image')} as {', '.join(names) or 'none of the classes'}", before)
    return len(ids)


def _run_name_map(run: dict, current: Sequence[str]) -> list[str | None]:
    """Run class index → current class name (None where the class was removed since)."""
    keep = set(current)
    return [c if c in keep else None for c in run["params"]["classes"]]


def _pseudo_classes(names: list[str | None], class_idx: int | None, labels_json: str | None) -> list[str]:
    """A prediction's class names, primary (top-1) first, dropping removed classes."""
    if class_idx is None:
        return []
    if labels_json is None:
        idx = [class_idx]
    else:
        idx = json.loads(labels_json)
        if class_idx in idx:
            idx = [class_idx] + [i for i in idx if i != class_idx]
    out = []
    for i in idx:
        name = names[i] if 0 <= i < len(names) else None
        if name is not None:
            out.append(name)
    return out


def accept_pseudo_labels(
    project: Project,
    image_ids: Iterable[int] | None = None,
    run_id: int | None = None,
    min_score: float | None = None,
) -> int:
    """Copy a run's pseudo-labels into ``labels`` as ``accepted``; returns how many were written.

    Images with a human label are skipped (human labels are never overwritten);
    earlier accepted labels are replaced. ``run_id`` defaults to the active run;
    ``image_ids`` to every ok image with a prediction; ``min_score`` keeps only
    predictions whose top-1 score is at least that.
    """
    run = get_label_run(project, run_id) if run_id is not None else active_run(project)
    if run is None:
        raise NotReadyError("there is no finished labeling run to accept labels from: run labeling first")
    names = _run_name_map(run, project.classes)
    sql = (
        "select p.image_id, p.class_idx, p.score, p.labels from predictions p "
        "join images i on i.id = p.image_id left join labels l on l.image_id = p.image_id "
        "where p.run_id = ? and i.status = 'ok' and (l.source is null or l.source != 'human')"
    )
    args: list = [run["id"]]
    if min_score is not None:
        sql += " and p.score >= ?"
        args.append(float(min_score))
    t = now()
    # One transaction from the read of the human labels to the undo entry: a human label written meanwhile
    # by another process is never overwritten, and undo sees all of it or none.
    with transaction(project.db):
        if image_ids is None:
            batches = [project.db.execute(sql, args).fetchall()]
        else:
            ids = _id_list(image_ids)
            batches = []
            for chunk, marks in in_chunks(ids):
                batches.append(project.db.execute(f"{sql} and p.image_id in ({marks})", args + chunk).fetchall())
        rows = []
        sets = pseudo_label_sets(project, run)
        for batch in batches:
            for image_id, class_idx, score, labels_json in batch:
                if sets is not None:
                    labels_json = sets.get(image_id, labels_json)
                classes = _pseudo_classes(names, class_idx, labels_json)
                if classes:
                    rows.append((image_id, json.dumps(classes, ensure_ascii=False), score, run["id"], t))
        before = snapshot(project, [r[0] for r in rows])
        project.db.conn.executemany(
            "insert or replace into labels (image_id, classes, source, score, run_id, time) "
            "values (?, ?, 'accepted', ?, ?, ?)",
            rows,
        )
        record(project, f"accept {counted(len(rows), 'pseudo-label')}", before)
    return len(rows)


def clear_labels(
    project: Project, image_ids: int | Iterable[int] | None, sources: Sequence[str] = LABEL_SOURCES
) -> int:
    """Delete ``labels`` rows of the given sources (``image_ids`` None: of every image). Returns rows deleted.

    The images fall back to their pseudo-label from the active run.
    """
    sources = [sources] if isinstance(sources, str) else list(sources)
    bad = [s for s in sources if s not in LABEL_SOURCES]
    if bad or not sources:
        raise InvalidInputError(f"sources must be among {list(LABEL_SOURCES)}, not {sources}")
    sql = f"select image_id from labels where source in ({','.join('?' * len(sources))})"
    deleted = 0
    with transaction(project.db):  # read, snapshot, delete and undo entry together
        if image_ids is None:
            touched = [r[0] for r in project.db.execute(sql, sources)]
        else:
            touched = []
            for chunk, marks in in_chunks(_id_list(image_ids)):
                touched += [r[0] for r in project.db.execute(f"{sql} and image_id in ({marks})", [*sources, *chunk])]
        before = snapshot(project, touched)
        for chunk, marks in in_chunks(touched):
            deleted += project.db.execute(f"delete from labels where image_id in ({marks})", chunk).rowcount
        record(project, f"clear {counted(deleted, 'label')} ({', '.join(sources)})", before)
    return deleted


# --- the result ------------------------------------------------------------------------------------------
_FINAL_SQL = """
select i.id, i.sha256, i.path, i.rel_path, i.root, i.folder_label, i.width, i.height,
       l.classes, l.source, l.score, l.run_id,
       p.class_idx, p.labels, p.score
from images i
left join labels l on l.image_id = i.id
left join predictions p on p.image_id = i.id and p.run_id = ?
where i.status = 'ok'
"""


def final_labels(
    project: Project, image_ids: Iterable[int] | None = None, run_id: int | None = None
) -> list[FinalLabel]:
    """The label of every ok image (or of ``image_ids``), in image id order: human > accepted > pseudo.

    Pseudo-labels come from the active run, or from ``run_id`` if given. One
    query over all images (joins, no per-image queries).
    """
    run = get_label_run(project, run_id) if run_id is not None else active_run(project)
    current = project.classes
    keep = set(current)
    names = _run_name_map(run, current) if run is not None else []
    rid = run["id"] if run is not None else -1
    sets = pseudo_label_sets(project, run)  # multi-label runs under the project's thresholds
    if image_ids is None:
        rows: Iterable = project.db.execute(_FINAL_SQL + " order by i.id", [rid])
    else:
        ids = sorted(set(_id_list(image_ids)))
        rows = []
        for chunk, marks in in_chunks(ids):
            rows.extend(project.db.execute(_FINAL_SQL + f" and i.id in ({marks}) order by i.id", [rid, *chunk]))
    # Few distinct label values repeat over many images: decode each once (copies keep items independent).
    stored: dict[str, list[str] | None] = {}
    pseudo: dict[tuple, list[str]] = {}
    out: list[FinalLabel] = []
    for (image_id, sha, path, rel_path, root, folder, width, height,
         l_classes, l_source, l_score, l_run, p_idx, p_labels, p_score) in rows:  # fmt: skip
        item = FinalLabel(image_id, sha, path, rel_path, root, folder_label=folder, width=width, height=height)
        if l_classes is not None:
            if l_classes not in stored:
                stored[l_classes] = stored_classes(l_classes, keep)
            classes = stored[l_classes]
            if classes is not None:  # [] is a person's "none of these": it decides the image too
                item.classes, item.source = list(classes), l_source
                if l_source != "human":
                    item.score, item.run_id = l_score, l_run
                out.append(item)
                continue
        if p_idx is not None:
            if sets is not None:
                p_labels = sets.get(image_id, p_labels)
            key = (p_idx, p_labels)
            classes = pseudo.get(key)
            if classes is None:
                classes = pseudo[key] = _pseudo_classes(names, p_idx, p_labels)
            if classes:
                item.classes, item.source, item.score, item.run_id = list(classes), "pseudo", p_score, rid
        out.append(item)
    return out
