"""Feature matrices on disk: float16 ``.npy`` files, memory-mapped, keyed by (model key, sha256).

Each feature set (one model key, e.g. ``clip:ViT-B-32:laion2b_s34b_b79k``) owns
one growable matrix ``features/<slug>/vectors.npy`` of shape (capacity, D) and a
row map in the ``feature_rows`` table. Vectors are written and flushed first and
their rows committed after, so a job killed between the two loses only the
uncommitted batch: the next run overwrites those rows.
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
        row = self.get_set(key)
        if row is not None:
            if int(row["dim"]) != int(dim):
                raise ValueError(f"feature set {key!r} has dimension {row['dim']}, the model gives {dim}")
            return int(row["id"])
        with self.db.conn:
            self.db["feature_sets"].insert(
                {
                    "key": key,
                    "kind": kind,
                    "model": model,
                    "pretrained": pretrained,
                    "dim": int(dim),
                    "params": json.dumps(params or {}),
                    "created_at": now(),
                }
            )
        return int(self.get_set(key)["id"])

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
        for chunk_start in range(0, len(shas), 900):
            chunk = list(shas[chunk_start : chunk_start + 900])
            q = ",".join("?" * len(chunk))
            for sha, row in self.db.execute(
                f"select sha256, row from feature_rows where feature_set_id = ? and sha256 in ({q})", [set_id, *chunk]
            ):
                out[pos[sha]] = row
        return out

    def missing(self, set_id: int, shas: Sequence[str]) -> list[str]:
        """The sha256s in ``shas`` that have no vector yet, in order."""
        rows = self.rows_for(set_id, shas)
        return [s for s, r in zip(shas, rows, strict=True) if r < 0]

    def append(self, set_id: int, shas: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors (N, D) for ``shas`` (N,), flushed to disk, then commit their rows."""
        row = self.db["feature_sets"].get(set_id)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(shas) or vectors.shape[1] != row["dim"]:
            raise ValueError(f"expected vectors of shape ({len(shas)}, {row['dim']}), got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("feature vectors contain NaN or inf")
        if len(shas) == 0:
            return
        start = self.count(set_id)
        path = self._file(row["key"])
        mm = self._open_for_write(path, start + len(shas), row["dim"], start)
        mm[start : start + len(shas)] = vectors.astype(np.float16)
        mm.flush()
        del mm
        with self.db.conn:
            self.db["feature_rows"].insert_all(
                ({"feature_set_id": set_id, "sha256": s, "row": start + i} for i, s in enumerate(shas)),
                replace=True,
            )

    @staticmethod
    def _open_for_write(path: Path, needed: int, dim: int, used: int) -> np.memmap:
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
            grown[:used] = mm[:used]
        grown.flush()
        del grown, mm
        os.replace(tmp, path)
        return np.load(path, mmap_mode="r+")

    def matrix(self, set_id: int) -> np.ndarray:
        """Memory-mapped read-only view of all committed vectors, shape (count, D), float16."""
        row = self.db["feature_sets"].get(set_id)
        n = self.count(set_id)
        path = self._file(row["key"])
        if n == 0 or not path.exists():
            return np.zeros((0, row["dim"]), dtype=np.float16)
        return np.load(path, mmap_mode="r")[:n]

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
