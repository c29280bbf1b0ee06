"""Undo for label and exclusion changes: every bulk change keeps the state it replaced, newest first.

>>> set_human_labels(project, [3, 4], "cat")     # doctest: +SKIP  (recorded: "label 2 images as cat")
>>> undo(project)                                 # doctest: +SKIP  ({"action": "label 2 images as cat", "n": 2, ...})

What is recorded: human labels (:func:`labeler.labels.set_human_labels`), accepted pseudo-labels
(:func:`labeler.labels.accept_pseudo_labels`), cleared labels (:func:`labeler.labels.clear_labels`) and
exclusions (:func:`labeler.review.exclude_images` / ``include_images``) — from the CLI, the wizard or the
library alike. Each entry of the ``undo_log`` table holds the ``labels`` rows (and, for exclusions, the
``images.status``) of the images the change touched, as they were before it; :func:`undo` puts them back and
drops the entry. The newest :data:`KEEP` entries are kept. A change of project settings that decide labels
(the multi-label thresholds, :func:`labeler.review.set_thresholds`) records ``{"ids": [], "meta": {key: value
before}}``: undo puts the ``meta`` values back (a value None: the key is removed).

Several changes that make up one action (adding a class to images that had different labels takes one
:func:`~labeler.labels.set_human_labels` per label set) become one entry inside :func:`group`, so one
:func:`undo` takes back all of them.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .project import Project

#: Undo entries kept per project (older ones are dropped).
KEEP = 50

#: (connection id, thread id) → the snapshots recorded inside an open :func:`group` on that connection.
_open_groups: dict[tuple[int, int], list[dict]] = {}


def _group_key(project: Project) -> tuple[int, int]:
    return id(project.db.conn), threading.get_ident()


def counted(n: int, word: str) -> str:
    """``"1 image"``, ``"3 images"``: how an action names what it touched."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def snapshot(project: Project, image_ids: Sequence[int]) -> dict:
    """The labels rows of ``image_ids`` now: what :func:`record` keeps before a label change.

    Returns ``{"ids": [...], "labels": [[image_id, classes, source, score, run_id, time], ...]}`` (an image
    without a label has no row). A status change records ``{"ids": [...], "status": {image_id: status}}``
    instead: its labels do not change.
    """
    from store import in_chunks

    ids = sorted({int(i) for i in image_ids})
    rows: list[list] = []
    for chunk, marks in in_chunks(ids):
        sql = f"select image_id, classes, source, score, run_id, time from labels where image_id in ({marks})"
        rows += [list(r) for r in project.db.execute(sql, chunk)]
    return {"ids": ids, "labels": rows}


def record(project: Project, action: str, before: dict) -> int | None:
    """Add an undo entry: ``before`` (a :func:`snapshot` taken before the change) under the name ``action``.

    Returns the entry's id (None when the change touched no image). Only the newest :data:`KEEP` stay.
    """
    if not before["ids"] and not before.get("meta"):
        return None
    pending = _open_groups.get(_group_key(project))
    if pending is not None:  # inside group(): it writes one entry for all of them
        pending.append(before)
        return None
    return _write(project, action, before)


def _write(project: Project, action: str, before: dict) -> int:
    from store import now, transaction

    with transaction(project.db):  # a savepoint of the caller's transaction, which also made the change
        cur = project.db.execute(
            "insert into undo_log (time, action, n, snapshot) values (?, ?, ?, ?)",
            [now(), action, len(before["ids"]), json.dumps(before)],
        )
        entry = cur.lastrowid
        project.db.execute(
            "delete from undo_log where id not in (select id from undo_log order by id desc limit ?)", [KEEP]
        )
    return int(entry)


def merge(snapshots: Sequence[dict]) -> dict:
    """One snapshot of the state before several changes (each a :func:`snapshot` or a status snapshot, oldest
    first): for each image, what the first change touching it saw. Label ids are kept apart from status ids
    (``label_ids``), so undoing it restores only the labels that were changed."""
    label_ids: dict[int, None] = {}
    label_rows: list[list] = []
    status: dict[str, str] = {}
    meta: dict[str, object] = {}
    has_labels = False
    for snap in snapshots:
        for k, v in snap.get("meta", {}).items():
            meta.setdefault(k, v)
        if "labels" in snap:
            has_labels = True
            rows = {int(r[0]): r for r in snap["labels"]}
            for i in snap.get("label_ids", snap["ids"]):
                if int(i) not in label_ids:
                    label_ids[int(i)] = None
                    if int(i) in rows:
                        label_rows.append(rows[int(i)])
        for i, st in snap.get("status", {}).items():
            status.setdefault(str(i), st)
    ids = sorted(set(label_ids) | {int(i) for i in status})
    out: dict = {"ids": ids}
    if has_labels:
        out.update(label_ids=sorted(label_ids), labels=label_rows)
    if status:
        out["status"] = status
    if meta:
        out["meta"] = meta
    return out


@contextlib.contextmanager
def group(project: Project, action: str) -> Iterator[None]:
    """Make the label and status changes inside one transaction and one undo entry named ``action``.

    >>> with group(project, "add dog to 5 images"):        # doctest: +SKIP
    ...     set_human_labels(project, [1, 2], ["cat", "dog"])
    ...     set_human_labels(project, [3, 4, 5], ["dog"])

    Nested inside another group it adds to that one (whose name is kept). Nothing changed: no entry.
    """
    from store import transaction

    key = _group_key(project)
    if key in _open_groups:
        yield
        return
    _open_groups[key] = []
    try:
        with transaction(project.db):
            yield
            snapshots = _open_groups.pop(key)
            if snapshots:
                merged = merge(snapshots)
                if merged["ids"] or merged.get("meta"):
                    _write(project, action, merged)
    finally:
        _open_groups.pop(key, None)


def history(project: Project, limit: int = 10) -> list[dict]:
    """The newest undo entries first: ``[{"id", "time", "action", "n"}]``."""
    rows = project.db.execute("select id, time, action, n from undo_log order by id desc limit ?", [int(limit)])
    return [{"id": r[0], "time": r[1], "action": r[2], "n": r[3]} for r in rows]


def undo(project: Project) -> dict | None:
    """Undo the newest recorded change: its images get back their labels and statuses from before it.

    Returns ``{"id", "action", "n", "time"}`` of the entry undone, or None when there is nothing to undo.
    Changes made since to the same images by hand are undone too only by undoing those first (newest first).
    The newest entry is read and applied inside one write transaction: a label change or another undo in
    another process or thread lands wholly before or wholly after it.
    """
    from store import in_chunks, transaction

    with transaction(project.db):
        row = project.db.execute(
            "select id, time, action, n, snapshot from undo_log order by id desc limit 1"
        ).fetchone()
        if row is None:
            return None
        entry_id, t, action, n, raw = row
        snap = json.loads(raw)
        if "labels" in snap:  # a label change (a group's entry names the ids whose labels changed)
            for chunk, marks in in_chunks(int(i) for i in snap.get("label_ids", snap["ids"])):
                project.db.execute(f"delete from labels where image_id in ({marks})", chunk)
            project.db.conn.executemany(
                "insert into labels (image_id, classes, source, score, run_id, time) values (?, ?, ?, ?, ?, ?)",
                [tuple(r) for r in snap["labels"]],
            )
        by_status: dict[str, list[int]] = {}
        for image_id, status in snap.get("status", {}).items():  # a status change
            by_status.setdefault(status, []).append(int(image_id))
        for status, ids in by_status.items():
            for chunk, marks in in_chunks(ids):
                project.db.execute(f"update images set status = ? where id in ({marks})", [status, *chunk])
        if by_status:
            project.bump_images_version()
        for meta_key, value in snap.get("meta", {}).items():  # settings that decide labels
            if value is None:
                project.db.execute("delete from meta where key = ?", [meta_key])
            else:
                project.db.execute(
                    "insert or replace into meta (key, value) values (?, ?)", [meta_key, json.dumps(value)]
                )
        project.db.execute("delete from undo_log where id = ?", [entry_id])
    return {"id": int(entry_id), "action": action, "n": int(n), "time": t}
