"""Cross-process locks of one project: one writer job at a time, one feature-file writer at a time.

Both are :class:`filelock.FileLock` files (an OS lock on an open file: released by the kernel when the
holding process dies, so a killed job never leaves a stale lock behind).

``<project>/labeler.lock`` — :class:`ProjectLock`
    Held by every job that writes the project (import, features, label, train, describe, caption) from
    its start to its end. One :class:`filelock.FileLock` object per lock file and process
    (``is_singleton``) with per-thread state (``thread_local``): a job that starts another job in the same
    thread (``train`` labeling at its end, ``run`` chaining import → features → label) re-enters it,
    while a job in another thread of the same process, or in another process, is refused at once with
    :class:`LockBusy`. Who holds it is written beside it in ``labeler.lock.json`` (kind, pid, host, start
    time, run id), for the refusal's message.
``features/<set>/vectors.lock`` — :func:`vectors_lock`
    Held while a feature set's rows are allocated, its vector file grown or written, and while it is
    repaired: the row numbers and the file always change together.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_FILENAME = "labeler.lock"
HOLDER_FILENAME = "labeler.lock.json"
#: How long acquiring waits before giving up (covers another process probing the lock, not a running job).
ACQUIRE_TIMEOUT_S = 2.0


def hostname() -> str:
    """This machine's name, as recorded on ``runs`` rows and in the holder file."""
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this machine and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:  # a killed child nobody has waited for yet is a zombie: gone for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class LockBusy(RuntimeError):
    """The lock is held by another job; ``holder`` is what that job wrote (may be empty)."""

    def __init__(self, path: Path, holder: dict):
        self.path = path
        self.holder = holder
        super().__init__(f"{path} is held by {holder or 'another process'}")


class ProjectLock:
    """The writer lock of one project folder (see the module docstring).

    Parameters
    ----------
    root : Path
        The project folder.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.path = self.root / LOCK_FILENAME
        self.holder_path = self.root / HOLDER_FILENAME
        self._lock = FileLock(self.path, is_singleton=True, thread_local=True)
        self._mutex = threading.Lock()

    def acquire(self, kind: str, timeout: float = ACQUIRE_TIMEOUT_S) -> bool:
        """Take the lock for a ``kind`` job; re-entrant within one thread.

        Returns True when this call took it (the outermost holder: it calls :meth:`release`), False when this
        thread held it already (nothing to release: the outermost holder's release frees it).

        Raises
        ------
        LockBusy
            Another thread or process holds it.
        """
        if self._lock.is_locked:  # per thread: this thread holds it already
            return False
        try:
            self._lock.acquire(timeout=timeout)
        except Timeout:
            raise LockBusy(self.path, self.holder()) from None
        self._write_holder({"kind": kind, "pid": os.getpid(), "host": hostname(), "started_at": time.time()})
        return True

    def set_run(self, run_id: int) -> None:
        """Record the run id of the job holding the lock (for the refusal message)."""
        info = self.holder()
        if info.get("pid") == os.getpid():
            self._write_holder({**info, "run_id": int(run_id)})

    def release(self) -> None:
        """Free the lock taken by :meth:`acquire` (returned True) in this thread, and clear the holder file."""
        if not self._lock.is_locked:
            return
        try:
            self.holder_path.unlink(missing_ok=True)
        except OSError:
            pass
        self._lock.release(force=True)

    def is_free(self) -> bool:
        """True when no thread or process holds the lock (probed by taking and releasing it at once)."""
        if self._lock.is_locked:
            return False
        probe = FileLock(self.path, thread_local=True)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return False
        probe.release()
        return True

    @property
    def held_here(self) -> bool:
        """True when the calling thread holds the lock."""
        return bool(self._lock.is_locked)

    def holder(self) -> dict:
        """What the holding job wrote (``kind``, ``pid``, ``host``, ``started_at``, ``run_id``), or {}."""
        try:
            data = json.loads(self.holder_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_holder(self, info: dict) -> None:
        with self._mutex:
            tmp = self.holder_path.with_name(f".{HOLDER_FILENAME}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                tmp.write_text(json.dumps(info), encoding="utf-8")
                os.replace(tmp, self.holder_path)
            except OSError:
                pass  # the message loses its details; the lock itself holds


_locks: dict[str, ProjectLock] = {}
_locks_mutex = threading.Lock()


def project_lock(root: str | os.PathLike) -> ProjectLock:
    """The one :class:`ProjectLock` of this process for the project folder ``root``."""
    key = os.path.realpath(root)
    with _locks_mutex:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = ProjectLock(key)
        return lock


def vectors_lock(vectors_file: str | os.PathLike, timeout: float = 60.0) -> FileLock:
    """The lock of one feature set's vector file (a new object: not re-entrant, exclusive across threads)."""
    path = Path(vectors_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path.with_name("vectors.lock"), timeout=timeout, thread_local=True)
