"""Jobs: long work recorded as a row in ``runs`` with progress, cancel and outcome.

A job writes its progress to its row (throttled), checks a cancel flag between
batches (set from any thread or process with :func:`request_cancel`), and ends
as ``done``, ``failed`` or ``cancelled``. Work is committed batch by batch by
the job body, so a killed job loses at most one batch and a rerun resumes.

Example
-------
>>> with Job.start(project, "features", params={"model": key}) as job:   # doctest: +SKIP
...     for i, batch in enumerate(batches):
...         work(batch)
...         job.progress(i + 1, len(batches))   # raises JobCancelled if asked to stop
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from store import now

from .errors import JobCancelled

if TYPE_CHECKING:
    from .project import Project

#: ``callback(done, total, message)`` — how the CLI (tqdm) and UI follow a job.
ProgressCallback = Callable[[int, int, str], None]

#: A running job whose heartbeat is older than this (seconds) was killed.
STALE_AFTER_S = 120.0

_local_cancel: dict[tuple[str, int], threading.Event] = {}


class Job:
    """Handle on one ``runs`` row while its work runs."""

    def __init__(self, project: Project, run_id: int, on_progress: ProgressCallback | None = None):
        self.project = project
        self.id = int(run_id)
        self.on_progress = on_progress
        self._last_write = 0.0
        self._event = _local_cancel.setdefault((str(project.root), self.id), threading.Event())

    @classmethod
    def start(
        cls,
        project: Project,
        kind: str,
        method: str | None = None,
        params: dict | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Job:
        """Insert a new ``running`` row and return its handle."""
        t = now()
        with project.db.conn:
            run_id = (
                project.db["runs"]
                .insert(
                    {
                        "kind": kind,
                        "method": method,
                        "params": json.dumps(params or {}, default=str),
                        "status": "running",
                        "progress": 0.0,
                        "message": "",
                        "metrics": "{}",
                        "cancel_requested": 0,
                        "created_at": t,
                        "started_at": t,
                        "heartbeat": t,
                    }
                )
                .last_pk
            )
        return cls(project, run_id, on_progress)

    # --- during the work ----------------------------------------------------------
    def cancelled(self) -> bool:
        """True once a cancel was requested (in this process or through the database)."""
        if self._event.is_set():
            return True
        row = self.project.db.execute("select cancel_requested from runs where id = ?", [self.id]).fetchone()
        if row and row[0]:
            self._event.set()
        return self._event.is_set()

    def check_cancel(self) -> None:
        """Raise :class:`JobCancelled` if a cancel was requested."""
        if self.cancelled():
            raise JobCancelled(f"run {self.id} was cancelled; rerun the same command to resume")

    def progress(self, done: int, total: int, message: str = "", force: bool = False) -> None:
        """Report ``done`` of ``total`` units; written at most twice a second. Checks cancel."""
        if self.on_progress is not None:
            self.on_progress(done, total, message)
        t = time.monotonic()
        if force or done >= total or t - self._last_write > 0.5:
            self._last_write = t
            frac = 1.0 if total <= 0 else min(1.0, done / total)
            with self.project.db.conn:
                self.project.db.execute(
                    "update runs set progress = ?, message = ?, heartbeat = ? where id = ?",
                    [frac, message, now(), self.id],
                )
        self.check_cancel()

    def update_metrics(self, **metrics: Any) -> None:
        """Merge values into the row's metrics JSON."""
        row = self.project.db["runs"].get(self.id)
        merged = {**json.loads(row["metrics"] or "{}"), **metrics}
        with self.project.db.conn:
            self.project.db["runs"].update(self.id, {"metrics": json.dumps(merged, default=float)})

    # --- ending ---------------------------------------------------------------------
    def finish(self, status: str, error: str | None = None) -> None:
        with self.project.db.conn:
            fields = {"status": status, "finished_at": now(), "heartbeat": now(), "error": error}
            if status == "done":
                fields["progress"] = 1.0
            self.project.db["runs"].update(self.id, fields)
        _local_cancel.pop((str(self.project.root), self.id), None)

    def __enter__(self) -> Job:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.finish("done")
        elif issubclass(exc_type, (JobCancelled, KeyboardInterrupt)):
            self.finish("cancelled", str(exc) or "cancelled")
        else:
            self.finish("failed", f"{exc_type.__name__}: {exc}")
        return False


def request_cancel(project: Project, run_id: int) -> None:
    """Ask a running job to stop at its next check (works across threads and processes)."""
    ev = _local_cancel.get((str(project.root), int(run_id)))
    if ev is not None:
        ev.set()
    with project.db.conn:
        project.db.execute("update runs set cancel_requested = 1 where id = ?", [int(run_id)])


def get_run(project: Project, run_id: int) -> dict:
    """A ``runs`` row with ``params`` and ``metrics`` decoded and ``status`` = ``interrupted``
    for a running row whose heartbeat stopped (its process was killed)."""
    row = dict(project.db["runs"].get(int(run_id)))
    return _decode(row)


def list_runs(project: Project, kind: str | None = None, status: str | None = None) -> list[dict]:
    """Runs newest first, decoded like :func:`get_run`."""
    where, args = [], []
    if kind:
        where.append("kind = ?")
        args.append(kind)
    if status:
        where.append("status = ?")
        args.append(status)
    rows = project.db["runs"].rows_where(" and ".join(where) or None, args or None, order_by="id desc")
    return [_decode(dict(r)) for r in rows]


def _decode(row: dict) -> dict:
    row["params"] = json.loads(row.get("params") or "{}")
    row["metrics"] = json.loads(row.get("metrics") or "{}")
    if row["status"] == "running" and (row.get("heartbeat") or 0) < now() - STALE_AFTER_S:
        row["status"] = "interrupted"
    return row
