"""Jobs: long work recorded as a row in ``runs`` with progress, cancel and outcome.

A job writes its progress to its row (throttled), checks a cancel flag between
batches (set from any thread or process with :func:`request_cancel`), and ends
as ``done``, ``failed`` or ``cancelled``. Work is committed batch by batch by
the job body, so a killed job loses at most one batch and a rerun resumes.

One writer at a time
--------------------
A job of a :data:`WRITING_KINDS` kind holds the project's writer lock (:mod:`store.lock`,
``<project>/labeler.lock``) from :meth:`Job.start` to its end. A second such job on the same project —
from another process, or another thread of this one (the app runs jobs in threads) — is refused at
once with :class:`ProjectBusyError` ("features is already running on P (pid N, started …); wait for
it or cancel it"). A job started inside another one in the same thread (``train`` labeling at its
end) re-enters the lock. Refusing, not waiting: a CLI never hangs silently behind the app, and the
app shows the message in its jobs panel.

Liveness
--------
Each row records the ``pid`` and ``host`` of its process. A ``running`` row whose process is gone
(same host, pid no longer alive) reads as ``interrupted`` at once, so rerunning ``train`` right after
a kill resumes it. Rows from other hosts (or older rows without a pid) keep the heartbeat rule: no
heartbeat for :data:`STALE_AFTER_S` seconds means interrupted.

Example
-------
>>> with Job.start(project, "features", params={"model": key}) as job:   # doctest: +SKIP
...     for i, batch in enumerate(batches):
...         work(batch)
...         job.progress(i + 1, len(batches))   # raises JobCancelled if asked to stop
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store import now
from store.lock import LockBusy, hostname, pid_alive, project_lock

from .errors import Hint, JobCancelled, LabelerError

if TYPE_CHECKING:
    from .project import Project

#: ``callback(done, total, message)`` — how the CLI (tqdm) and UI follow a job.
ProgressCallback = Callable[[int, int, str], None]

#: A running job whose heartbeat is older than this (seconds) was killed.
STALE_AFTER_S = 120.0

#: Job kinds that write the project and so hold its writer lock (``cluster`` only adds its own rows).
WRITING_KINDS = frozenset({"import", "features", "label", "train", "describe", "caption", "archive"})

_local_cancel: dict[tuple[str, int], threading.Event] = {}
#: (real path of the project, run id) of every Job of this process that has not finished yet.
_live: set[tuple[str, int]] = set()
#: Held while a row of this process turns ``running`` and its Job registers in ``_live``, and while a Job records
#: its end and leaves: another thread never reads a row of this process as interrupted while it starts or ends.
_live_lock = threading.RLock()


@dataclass
class RunResult:
    """Outcome of a method run: the ``runs`` row id and its metrics."""

    run_id: int
    metrics: dict[str, Any] = field(default_factory=dict)


class ProjectBusyError(LabelerError):
    """Another job writes the project right now (see :func:`lock_project`)."""


def _busy_message(root: str | os.PathLike, kind: str, holder: dict) -> str:
    root = os.fspath(root)
    name = os.path.basename(os.path.normpath(root))
    what = holder.get("kind") or "another job"
    where = []
    if holder.get("pid"):
        host = holder.get("host")
        where.append(f"pid {holder['pid']}" + (f" on {host}" if host and host != hostname() else ""))
    if holder.get("started_at"):
        started = datetime.datetime.fromtimestamp(float(holder["started_at"])).strftime("%Y-%m-%d %H:%M:%S")
        where.append(f"started {started}")
    run = holder.get("run_id")
    return (
        f"{what} is already running on {name}"
        + (f" ({', '.join(where)})" if where else "")
        + "; wait for it or cancel it"
        + (f" (run {run})" if run else "")
        + f", then start {kind} again"
    )


def _cancel_hint(holder: dict) -> Hint:
    """Cancel the lock holder's run (the runs list when the holder has none)."""
    return Hint("cancel", value=str(holder["run_id"])) if holder.get("run_id") else Hint("runs")


def lock_project(project: Project, kind: str) -> bool:
    """Take the project's writer lock for a ``kind`` job (re-entrant in one thread).

    Returns True when this call took it (release it with :func:`unlock_project`), False when this thread
    held it already (then do not release it: its outermost holder does).

    Raises
    ------
    ProjectBusyError
        Another job (another process, or another thread of this one) holds it.
    """
    try:
        return project_lock(project.root).acquire(kind)
    except LockBusy as exc:
        raise ProjectBusyError(_busy_message(project.root, kind, exc.holder), hint=_cancel_hint(exc.holder)) from None


def unlock_project(project: Project) -> None:
    """Release the writer lock that :func:`lock_project` took (returned True) in this thread."""
    project_lock(project.root).release()


class Job:
    """Handle on one ``runs`` row while its work runs."""

    def __init__(
        self, project: Project, run_id: int, on_progress: ProgressCallback | None = None, locked: bool = False
    ):
        self.project = project
        self.id = int(run_id)
        self.on_progress = on_progress
        self._last_write = 0.0
        self._locked = locked  # this handle releases one level of the writer lock when it finishes
        self._event = _local_cancel.setdefault((str(project.root), self.id), threading.Event())
        _live.add((os.path.realpath(project.root), self.id))

    @classmethod
    def start(
        cls,
        project: Project,
        kind: str,
        method: str | None = None,
        params: dict | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Job:
        """Insert a new ``running`` row and return its handle.

        A :data:`WRITING_KINDS` job first takes the project's writer lock (held until the job ends).

        Raises
        ------
        ProjectBusyError
            Another writing job runs on this project.
        """
        locked = lock_project(project, kind) if kind in WRITING_KINDS else False
        with _live_lock:  # the row is not read as interrupted before its Job registers
            return cls._insert(project, kind, method, params, on_progress, locked)

    @classmethod
    def _insert(cls, project, kind, method, params, on_progress, locked: bool) -> Job:
        try:
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
                            "pid": os.getpid(),
                            "host": hostname(),
                        }
                    )
                    .last_pk
                )
        except BaseException:
            if locked:
                unlock_project(project)
            raise
        if kind in WRITING_KINDS:  # also when re-entered (compute_features takes the lock before its job)
            project_lock(project.root).set_run(run_id)
        return cls(project, run_id, on_progress, locked=locked)

    @classmethod
    def reopen(
        cls, project: Project, run_id: int, fields: dict | None = None, on_progress: ProgressCallback | None = None
    ) -> Job:
        """Set an interrupted or cancelled row ``running`` again (for resuming it) and return its handle.

        Takes the writer lock first when the row's kind writes; refuses (:class:`ProjectBusyError`) like
        :meth:`start`, and also when the row is running in a live process after all.
        """
        row = get_run(project, run_id)
        locked = lock_project(project, row["kind"]) if row["kind"] in WRITING_KINDS else False
        with _live_lock:  # the row is not read as interrupted before its Job registers
            return cls._rerun(project, run_id, row, fields, on_progress, locked)

    @classmethod
    def _rerun(cls, project, run_id: int, row: dict, fields, on_progress, locked: bool) -> Job:
        try:
            if get_run(project, run_id)["status"] == "running":
                raise ProjectBusyError(
                    f"run {run_id} ({row['kind']}) is still running in another process; wait for it or cancel it",
                    hint=Hint("cancel", value=str(run_id)),
                )
            update = {
                "status": "running",
                "cancel_requested": 0,
                "error": None,
                "finished_at": None,
                "heartbeat": now(),
                "pid": os.getpid(),
                "host": hostname(),
                **(fields or {}),
            }
            with project.db.conn:
                project.db["runs"].update(int(run_id), update)
        except BaseException:
            if locked:
                unlock_project(project)
            raise
        if row["kind"] in WRITING_KINDS:
            project_lock(project.root).set_run(run_id)
        return cls(project, run_id, on_progress, locked=locked)

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
        """Record the outcome and release the writer lock (if this job took it)."""
        try:
            with _live_lock, self.project.db.conn:
                fields = {"status": status, "finished_at": now(), "heartbeat": now(), "error": error}
                if status == "done":
                    fields["progress"] = 1.0
                self.project.db["runs"].update(self.id, fields)
        finally:
            _local_cancel.pop((str(self.project.root), self.id), None)
            with _live_lock:
                _live.discard((os.path.realpath(self.project.root), self.id))
            if self._locked:
                self._locked = False
                unlock_project(self.project)

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
    for a running row whose process is gone (see :func:`is_interrupted`)."""
    row = dict(project.db["runs"].get(int(run_id)))
    return _decode(project, row)


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
    return [_decode(project, dict(r)) for r in rows]


def is_interrupted(project: Project, row: dict) -> bool:
    """True when a ``running`` row's process is gone.

    On this host, with a recorded pid: this process has no live :class:`Job` for it (when the pid is ours),
    or the pid is not alive, or — the pid reused by an unrelated process — its heartbeat is stale and the
    writer lock is free. Else (another host, or a row older than the ``pid`` column): no heartbeat for
    :data:`STALE_AFTER_S` seconds.
    """
    if row.get("status") != "running":
        return False
    pid, host = row.get("pid"), row.get("host")
    stale = (row.get("heartbeat") or 0) < now() - STALE_AFTER_S
    if not pid or host != hostname():
        return stale
    if int(pid) == os.getpid():
        with _live_lock:
            if (os.path.realpath(project.root), int(row["id"])) in _live:
                return False
            # not live: it ended without finishing (interrupted), or it finished after ``row`` was read
            fresh = project.db.execute("select status from runs where id = ?", [int(row["id"])]).fetchone()
            return bool(fresh) and fresh[0] == "running"
    if not pid_alive(int(pid)):
        return True
    return stale and row.get("kind") in WRITING_KINDS and project_lock(project.root).is_free()


def _decode(project: Project, row: dict) -> dict:
    row["params"] = json.loads(row.get("params") or "{}")
    row["metrics"] = json.loads(row.get("metrics") or "{}")
    if is_interrupted(project, row):
        row["status"] = "interrupted"
    return row


# --- background threads (the app's long work) -------------------------------------------------------------------


class BackgroundTask:
    """One piece of long work running in a thread of this process (see :func:`run_in_background`).

    The work itself records a ``runs`` row through :class:`Job` (that row is what survives a closed
    browser tab or a restart); the task only remembers, in memory, how the call ended — including
    errors raised before the work could start its row (a missing model, a bad option).
    """

    def __init__(self, task_id: int, project_root: str, kind: str, label: str):
        self.id = task_id
        self.project_root = project_root
        self.kind = kind
        self.label = label
        self.status = "running"  # running | done | failed | cancelled
        self.result: Any = None
        self.error: str | None = None
        self.hint = None  # the error's Hint, when it has one (each front end words it)
        self.started_at = now()
        self.finished_at: float | None = None
        self.thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has finished."""
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.running

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "status": self.status,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


_tasks: dict[int, BackgroundTask] = {}
_tasks_lock = threading.Lock()
_MAX_FINISHED_TASKS = 200


def run_in_background(
    project_root: str, kind: str, target: Callable[[], Any], label: str = "", exclusive: bool = True
) -> BackgroundTask:
    """Run ``target()`` in a daemon thread and return its :class:`BackgroundTask` at once.

    ``target`` opens its own :class:`~labeler.project.Project` (connections are per thread) and
    does its work through the library, which records progress in a ``runs`` row. With
    ``exclusive``, a second task of the same ``kind`` for the same project is refused while the
    first runs (:class:`~labeler.errors.InvalidInputError` saying so).
    """
    from .errors import InvalidInputError, LabelerError

    root = str(project_root)
    with _tasks_lock:
        if exclusive:
            for t in _tasks.values():
                if t.running and t.project_root == root and t.kind == kind:
                    raise InvalidInputError(
                        f"a {kind} job is already running in this project ({t.label or kind}): "
                        "wait for it to finish or cancel it in the jobs panel"
                    )
        # Another writer (a CLI in another shell, or another task here) holds the project: say so now,
        # rather than start a task that fails at once.
        lock = project_lock(root)
        if kind in WRITING_KINDS and (Path(root) / "labeler.db").exists() and not lock.is_free():
            raise ProjectBusyError(_busy_message(root, kind, holder := lock.holder()), hint=_cancel_hint(holder))
        task = BackgroundTask(max(_tasks, default=0) + 1, root, kind, label or kind)
        _tasks[task.id] = task
        finished = [t.id for t in _tasks.values() if not t.running]
        for old in finished[: max(0, len(finished) - _MAX_FINISHED_TASKS)]:
            _tasks.pop(old, None)

    def body() -> None:
        try:
            task.result = target()
            task.status = "done"
        except (JobCancelled, KeyboardInterrupt) as exc:
            task.status, task.error = "cancelled", str(exc) or "cancelled"
            task.hint = getattr(exc, "hint", None)
        except LabelerError as exc:
            task.status, task.error, task.hint = "failed", str(exc), exc.hint
        except Exception as exc:  # the app must outlive any failure of the work
            import logging

            logging.getLogger(__name__).exception("background %s task failed", kind)
            task.status, task.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            task.finished_at = now()

    task.thread = threading.Thread(target=body, name=f"labeler-{kind}-{task.id}", daemon=True)
    task.thread.start()
    return task


def background_tasks(project_root: str | None = None) -> list[BackgroundTask]:
    """Tasks started by :func:`run_in_background` in this process (newest first), optionally for one project."""
    with _tasks_lock:
        tasks = list(_tasks.values())
    if project_root is not None:
        tasks = [t for t in tasks if t.project_root == str(project_root)]
    return sorted(tasks, key=lambda t: -t.id)


def get_background_task(task_id: int) -> BackgroundTask | None:
    """The task with this id, or None (unknown or forgotten)."""
    with _tasks_lock:
        return _tasks.get(int(task_id))


def wait_for_new_run(project: Project, kind: str, after_id: int, still_starting=None, timeout: float = 10.0):
    """The id of the newest ``kind`` run with id > ``after_id``, waiting up to ``timeout`` s for it to appear.

    ``still_starting``: a callable; the wait stops early once it returns False (the work ended before creating
    its row). Returns None when no such run appeared.
    """
    import time

    deadline = time.monotonic() + float(timeout)
    while True:
        newer = [r["id"] for r in list_runs(project, kind=kind) if r["id"] > int(after_id)]
        if newer:
            return max(newer)
        if time.monotonic() >= deadline or (still_starting is not None and not still_starting()):
            return None
        time.sleep(0.1)
