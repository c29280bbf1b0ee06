"""Feature matrices on disk: float16 ``.npy`` files, memory-mapped, keyed by (model key, sha256).

Each feature set (one model key, e.g. ``clip:ViT-B-32:laion2b_s34b_b79k``) owns
one growable matrix ``features/<slug>/vectors.npy`` of shape (capacity, D) and a
row map in the ``feature_rows`` table. Vectors are written and flushed first and
their rows committed after, so a job killed between the two loses only the
uncommitted batch: the next run overwrites those rows. Writers (:meth:`FeatureStore.append`)
hold the set's vector-file lock (:func:`store.lock.vectors_lock`) and allocate rows inside
their write transaction, so concurrent writers in any process never share or drop rows;
:meth:`FeatureStore.repair` drops rows the file cannot back (past its end, or zeroed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sqlite_utils

from .db import now
from .sql import in_chunks

_MIN_CAPACITY = 1024


def slug(key: str) -> str:
    """File-system-safe folder name for a model key (readable part + short hash)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:80]
    return f"{readable}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


class FeatureStore:
    """All feature sets of one project.

    Parameters
    ----------
    db : sqlite_utils.Database
        The project database (tables ``feature_sets`` and ``feature_rows``).
    root : Path
        The project's ``features/`` folder.
    """

    def __init__(self, db: sqlite_utils.Database, root: str | Path):
        self.db = db
        self.root = Path(root)

    # --- sets -----------------------------------------------------------------
    def get_set(self, key: str) -> dict | None:
        """The ``feature_sets`` row for ``key``, or None."""
        rows = list(self.db["feature_sets"].rows_where("key = ?", [key]))
        return rows[0] if rows else None

    def sets(self, kind: str | None = None) -> list[dict]:
        """All feature sets (newest first), optionally of one kind (``clip`` or ``dino``)."""
        where, args = ("kind = ?", [kind]) if kind else (None, None)
        return list(self.db["feature_sets"].rows_where(where, args, order_by="id desc"))

    def latest(self, kind: str) -> dict | None:
        """The newest feature set of ``kind`` (``clip`` or ``dino``) with its vector ``count``, or None."""
        sets = self.sets(kind)
        if not sets:
            return None
        row = dict(sets[0])
        row["count"] = self.count(int(row["id"]))
        return row

    def ensure_set(
        self, key: str, kind: str, dim: int, model: str = "", pretrained: str = "", params: dict | None = None
    ) -> int:
        """Create the feature set for ``key`` if needed and return its id.

        Raises ValueError when a set with this key exists with another dimension.
        """
        from .db import transaction

        row = self.get_set(key)
        if row is None:
            with transaction(self.db):  # two processes creating the same set: the second finds the first's
                self.db["feature_sets"].insert(
                    {
                        "key": key,
                        "kind": kind,
                        "model": model,
                        "pretrained": pretrained,
                        "dim": int(dim),
                        "params": json.dumps(params or {}),
                        "created_at": now(),
                    },
                    ignore=True,
                )
            row = self.get_set(key)
        if int(row["dim"]) != int(dim):
            raise ValueError(f"feature set {key!r} has dimension {row['dim']}, the model gives {dim}")
        return int(row["id"])

    def set_params(self, set_id: int, params: dict) -> None:
        """Replace the set's ``params`` (a JSON object: image size, the precisions its vectors were computed in)."""
        from .db import transaction

        with transaction(self.db):
            self.db.execute("update feature_sets set params = ? where id = ?", [json.dumps(params), int(set_id)])

    def _file(self, key: str) -> Path:
        return self.root / slug(key) / "vectors.npy"

    # --- rows -----------------------------------------------------------------
    def count(self, set_id: int) -> int:
        """Number of committed vectors in the set."""
        return int(
            self.db.execute("select count(*) from feature_rows where feature_set_id = ?", [set_id]).fetchone()[0]
        )

    def rows_for(self, set_id: int, shas: Sequence[str]) -> np.ndarray:
        """Row index of each sha256 in the set's matrix, -1 where it has none. Shape (len(shas),)."""
        out = np.full(len(shas), -1, dtype=np.int64)
        pos = {s: i for i, s in enumerate(shas)}
        for chunk, marks in in_chunks(shas):
            for sha, row in self.db.execute(
                f"select sha256, row from feature_rows where feature_set_id = ? and sha256 in ({marks})",
                [set_id, *chunk],
            ):
                out[pos[sha]] = row
        return out

    def missing(self, set_id: int, shas: Sequence[str]) -> list[str]:
        """The sha256s in ``shas`` that have no vector yet, in order."""
        rows = self.rows_for(set_id, shas)
        return [s for s, r in zip(shas, rows, strict=True) if r < 0]

    def extent(self, set_id: int) -> int:
        """One past the highest committed row (0 when empty): the rows of the matrix in use, gaps included.

        Rows dropped by :meth:`repair` leave gaps (rows are never renumbered: a crash half-way through a
        renumbering would silently pair images with other images' vectors), so this may exceed :meth:`count`.
        """
        row = self.db.execute("select max(row) from feature_rows where feature_set_id = ?", [set_id]).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def append(self, set_id: int, shas: Sequence[str], vectors: np.ndarray) -> int:
        """Store vectors (N, D) for ``shas`` (N,), flushed to disk, then commit their rows.

        Safe against other writers, in this process or others: under the set's vector-file lock and one
        write transaction, sha256s the set already has (or that repeat in ``shas``) are skipped, new rows are
        allocated after the highest committed one, the vectors are written and flushed, then the rows are
        inserted and committed. Returns the number of vectors added.
        """
        from .db import transaction
        from .lock import vectors_lock

        row = self.db["feature_sets"].get(set_id)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(shas) or vectors.shape[1] != row["dim"]:
            raise ValueError(f"expected vectors of shape ({len(shas)}, {row['dim']}), got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("feature vectors contain NaN or inf")
        if len(shas) == 0:
            return 0
        path = self._file(row["key"])
        with vectors_lock(path), transaction(self.db):
            present = self.rows_for(set_id, shas) >= 0
            keep, seen = [], set()
            for i, sha in enumerate(shas):
                if not present[i] and sha not in seen:
                    seen.add(sha)
                    keep.append(i)
            if not keep:
                return 0
            start = self.extent(set_id)
            mm = self._open_for_write(path, start + len(keep), row["dim"], start)
            mm[start : start + len(keep)] = vectors[keep].astype(np.float16)
            mm.flush()
            del mm
            self.db.conn.executemany(
                "insert into feature_rows (feature_set_id, sha256, row) values (?, ?, ?)",
                [(set_id, shas[i], start + k) for k, i in enumerate(keep)],
            )
        return len(keep)

    @staticmethod
    def _open_for_write(path: Path, needed: int, dim: int, used: int) -> np.memmap:
        """The vector file opened for writing, grown (copied into a bigger file, then renamed over it) when it
        has fewer than ``needed`` rows. Call with the set's vector-file lock held."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            mm = np.load(path, mmap_mode="r+")
            if mm.shape[0] >= needed:
                return mm
            capacity = max(2 * mm.shape[0], needed)
        else:
            mm, capacity = None, max(_MIN_CAPACITY, needed)
        tmp = path.with_suffix(".tmp.npy")
        grown = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(capacity, dim))
        if mm is not None and used:
            keep = min(used, mm.shape[0])
            grown[:keep] = mm[:keep]
        grown.flush()
        del grown, mm
        os.replace(tmp, path)
        return np.load(path, mmap_mode="r+")

    def matrix(self, set_id: int) -> np.ndarray:
        """Memory-mapped read-only view of the rows in use, shape (:meth:`extent`, D), float16.

        Rows of no image (gaps left by :meth:`repair`) hold zeros.
        """
        row = self.db["feature_sets"].get(set_id)
        n = self.extent(set_id)
        path = self._file(row["key"])
        if n == 0 or not path.exists():
            return np.zeros((0, row["dim"]), dtype=np.float16)
        mat = np.load(path, mmap_mode="r")
        if mat.shape[0] < n:  # grown (renamed over) between the two reads: the new file has them
            mat = np.load(path, mmap_mode="r")
        return mat[:n]

    # --- consistency --------------------------------------------------------------------------------
    def check(self, set_id: int, chunk: int = 65536, from_row: int = 0) -> dict:
        """Rows of the set that the vector file cannot back.

        ``from_row``: read the vectors of rows at or past it only (rows below it were checked before and a
        committed vector never changes); every row is still compared with the file's length.

        Returns
        -------
        dict
            ``{"past_end": [sha256...], "zeroed": [sha256...]}``: rows at or past the end of the file (or
            every row, if the file is missing or unreadable) and rows whose vector is all zeros (never a real
            feature: its batch was lost).
        """
        row = self.db["feature_sets"].get(set_id)
        pairs = self.db.execute(
            "select row, sha256 from feature_rows where feature_set_id = ? order by row", [set_id]
        ).fetchall()
        out: dict[str, list[str]] = {"past_end": [], "zeroed": []}
        if not pairs:
            return out
        try:
            mat = np.load(self._file(row["key"]), mmap_mode="r")
            if mat.ndim != 2 or mat.shape[1] != int(row["dim"]):
                raise ValueError(f"shape {mat.shape}")
        except (OSError, ValueError):
            out["past_end"] = [p[1] for p in pairs]
            return out
        rows = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
        inside = rows < mat.shape[0]
        out["past_end"] = [pairs[i][1] for i in np.flatnonzero(~inside)]
        idx = np.flatnonzero(inside & (rows >= from_row))
        for s in range(0, len(idx), chunk):
            part = idx[s : s + chunk]
            block = np.asarray(mat[rows[part]])
            zero = ~block.any(axis=1)
            out["zeroed"] += [pairs[i][1] for i in part[zero]]
        return out

    def repair(self, set_id: int) -> dict | None:
        """Drop the rows :meth:`check` finds, so the next ``features`` run recomputes exactly those images.

        Checks without locks first (the common case: nothing wrong); only then takes the set's vector-file
        lock (skipping the repair if a writer holds it) and checks again inside a write transaction.

        Returns
        -------
        dict or None
            ``{"key", "past_end", "zeroed"}`` (counts of rows dropped), or None when nothing was wrong.
        """
        from filelock import Timeout

        from .db import transaction
        from .lock import vectors_lock

        key = self.db["feature_sets"].get(set_id)["key"]
        checked = self._checked_upto(set_id)
        found = self.check(set_id, from_row=checked)
        if not found["past_end"] and not found["zeroed"]:
            self._set_checked_upto(set_id, self.extent(set_id))
            return None
        try:
            with vectors_lock(self._file(key), timeout=0), transaction(self.db):
                found = self.check(set_id, from_row=checked)
                bad = found["past_end"] + found["zeroed"]
                for part, marks in in_chunks(bad):
                    self.db.execute(
                        f"delete from feature_rows where feature_set_id = ? and sha256 in ({marks})", [set_id, *part]
                    )
        except Timeout:
            return None  # a writer is at work; the next open checks again
        self._set_checked_upto(set_id, self.extent(set_id))
        if not found["past_end"] and not found["zeroed"]:
            return None
        return {"key": key, "past_end": len(found["past_end"]), "zeroed": len(found["zeroed"])}

    # Rows below this mark had their vectors read by a check and found good: an open reads only newer ones
    # (at a million images the whole file is a gigabyte). A file shorter than the mark is checked in full.
    def _checked_upto(self, set_id: int) -> int:
        got = self.db.execute("select value from meta where key = ?", [f"features_checked:{set_id}"]).fetchone()
        try:
            mark = int(json.loads(got[0])) if got else 0
        except (TypeError, ValueError):
            return 0
        path = self._file(self.db["feature_sets"].get(set_id)["key"])
        try:
            rows_in_file = int(np.load(path, mmap_mode="r").shape[0])
        except (OSError, ValueError):
            return 0
        return mark if 0 <= mark <= rows_in_file else 0

    def _set_checked_upto(self, set_id: int, mark: int) -> None:
        from .db import transaction

        if mark == self._checked_upto(set_id):
            return
        with transaction(self.db):
            self.db.execute(
                "insert or replace into meta (key, value) values (?, ?)", [f"features_checked:{set_id}", str(mark)]
            )

    def repair_all(self) -> list[dict]:
        """:meth:`repair` every set; the reports of those that needed it."""
        return [r for s in self.sets() if (r := self.repair(int(s["id"]))) is not None]

    def ok_rows(self, set_id: int) -> tuple[list[int], np.ndarray]:
        """Every ``ok`` image that has a vector in this set: image ids in id order and their rows (N,) int64."""
        pairs = self.db.execute(
            "select i.id, r.row from images i join feature_rows r on r.sha256 = i.sha256 and r.feature_set_id = ? "
            "where i.status = 'ok' order by i.id",
            [set_id],
        ).fetchall()
        ids = [int(p[0]) for p in pairs]
        return ids, np.fromiter((p[1] for p in pairs), dtype=np.int64, count=len(pairs))

    def ok_vectors(self, set_id: int) -> tuple[list[int], np.ndarray]:
        """Vectors of every ``ok`` image that has one in this set.

        Returns
        -------
        (image_ids, X)
            Image ids in id order and their vectors, shape (N, D), float32.
        """
        ids, rows = self.ok_rows(set_id)
        if not ids:
            dim = int(self.db["feature_sets"].get(set_id)["dim"])
            return [], np.zeros((0, dim), dtype=np.float32)
        return ids, np.asarray(self.matrix(set_id)[rows], dtype=np.float32)

    def load(self, set_id: int, shas: Sequence[str]) -> np.ndarray:
        """Vectors for ``shas`` in order, shape (len(shas), D), float32.

        Raises KeyError naming the first sha256 with no vector.
        """
        rows = self.rows_for(set_id, shas)
        if (rows < 0).any():
            first = shas[int(np.argmax(rows < 0))]
            raise KeyError(f"no features for image {first} in feature set {set_id}; run `labeler features` first")
        mat = self.matrix(set_id)
        return np.asarray(mat[rows], dtype=np.float32)
