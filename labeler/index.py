"""Similarity index: one FAISS index per feature set, persisted beside the features, rebuilt only when stale.

Vectors are the set's L2-normalised features (re-normalised in float32), searched by inner product
(= cosine similarity). The index id of a vector is its row in the set's feature matrix
(``features/<slug>/vectors.npy``), so new images are *added* to the index as their features
arrive, without touching what is already there.

Index type by size (``n`` vectors):

* ``n <= switch_at`` (default :data:`DEFAULT_SWITCH`, measured with ``bench/index.py``): exact,
  ``IndexFlatIP``.
* larger: ``IndexIVFFlat`` with ``nlist`` ≈ ``2·sqrt(n)`` lists (a power of two), trained on a
  sample, and ``nprobe`` tuned to the smallest value whose recall@20 against exact search on
  sampled database vectors (their own row left out) reaches :data:`TARGET_RECALL` (+ :data:`TUNE_MARGIN`).

On disk, beside ``vectors.npy``: ``index.faiss`` and ``index.json`` (type, vector count, a hash of
the row map the index was built from, nprobe and the measured recall). :func:`get_index` loads them
when the hash of the first ``n`` rows still matches, adds the rows that arrived since (an IVF index
is retrained once the set has doubled since training, and re-tuned once it grew by a quarter), and
rebuilds from scratch otherwise. Search results skip images that are not ``ok`` (excluded or
missing) with a FAISS ID selector, so excluding an image never needs a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from store.features import slug

from .errors import Hint, InvalidInputError, NotReadyError

if TYPE_CHECKING:
    import faiss

    from .project import Project

#: Vectors up to which the index is exact (IndexFlatIP). Measured with bench/index.py (docs/architecture.md).
DEFAULT_SWITCH = 50_000
#: Recall@:data:`RECALL_K` against exact search that the IVF nprobe is tuned to reach.
TARGET_RECALL = 0.95
RECALL_K = 20
#: Database vectors used as queries to tune nprobe.
TUNE_QUERIES = 500
#: nprobe is tuned to reach TARGET_RECALL + this on the tuning queries, so that the recall of other
#: queries (sampling noise ~0.005 at 500 queries) stays at or above the target.
TUNE_MARGIN = 0.01
#: Above this many vectors, nprobe is tuned against a random sample of this many database rows (exact search
#: over the sample, the IVF searched within it): the exact search over all rows was most of a 1M build. The
#: sample's nearest neighbours lie farther out than the whole set's, and farther neighbours are missed more
#: often, so the recall measured in the sample tends to be below the full one: the nprobe chosen errs on the
#: large side (tests/test_index.py checks the full recall it gives; bench/index.py prints it at 1M).
TUNE_SAMPLE = 200_000
#: Training sample per IVF list (faiss warns below 39).
TRAIN_PER_LIST = 64
INDEX_FILE = "index.faiss"
META_FILE = "index.json"
#: The row → image id map last computed (int64 .npy) and what it was computed from (rows hash, images signature).
ROWMAP_FILE = "rowmap.npy"
ROWMAP_META = "rowmap.json"
_FORMAT = 1
_CACHE_SIZE = 4
_NPROBE_STEPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def _faiss():
    import faiss

    return faiss


# --- pure layer: arrays in, faiss indexes out ----------------------------------------------------------
def as_unit_float32(x: np.ndarray, copy: bool = True) -> np.ndarray:
    """``x`` (N, D) as C-contiguous float32 with unit rows (zero rows stay zero).

    With ``copy=False`` a C-contiguous float32 ``x`` is normalised in place and returned.
    """
    if not copy and isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous:
        arr = x
    else:
        arr = np.array(x, dtype=np.float32, order="C", copy=True)
    if arr.ndim != 2:
        raise InvalidInputError(f"expected vectors of shape (N, D), got {arr.shape}")
    for s in range(0, len(arr), 65536):
        block = arr[s : s + 65536]
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))[:, None]
        np.divide(block, np.maximum(norms, 1e-12), out=block)
    return arr


def is_unit(x: np.ndarray, tol: float = 1e-4) -> bool:
    """True when every row of ``x`` (N, D) has L2 norm within ``tol`` of 1 (False if any value is NaN/inf)."""
    for s in range(0, len(x), 65536):
        block = np.asarray(x[s : s + 65536], dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        if not (np.abs(norms - 1) <= tol).all():  # NaN compares False: not unit
            return False
    return True


def default_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: the power of two nearest ``2·sqrt(n)``, between 16 and 65536."""
    if n <= 0:
        return 16
    return int(min(65536, max(16, 2 ** round(math.log2(2 * math.sqrt(n))))))


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` (Q, k) found in the same row of ``found`` (Q, k') (ids, -1 ignored)."""
    found, truth = np.asarray(found), np.asarray(truth)
    if found.shape[0] != truth.shape[0]:
        raise InvalidInputError(f"found has {found.shape[0]} rows, truth {truth.shape[0]}")
    t = truth[:, None, :]
    hits = ((found[:, :, None] == t) & (t >= 0)).any(axis=1).sum()
    total = int((truth >= 0).sum())
    return float(hits) / total if total else 1.0


#: Rows converted (float16 -> unit float32) at a time when an index streams a set's feature matrix.
CHUNK = 65536


def _unit_chunks(x: np.ndarray, chunk: int = CHUNK):
    """``(start, unit float32 block)`` over the rows of ``x`` (N, D), any float dtype (a float16 memmap is read
    block by block: never a full float32 copy)."""
    for s in range(0, len(x), chunk):
        yield s, as_unit_float32(x[s : s + chunk])


def exact_knn(q: np.ndarray, x: np.ndarray, k: int, chunk: int = CHUNK) -> np.ndarray:
    """Ids (Q, k) of the ``k`` largest inner products of each query ``q`` (Q, D) with the unit rows of ``x`` (N, D).

    ``x`` is read in blocks (normalised to unit float32 each), so a float16 memory map never becomes one
    float32 copy; ties and order as faiss's exact search.
    """
    faiss = _faiss()
    k = min(int(k), len(x))
    best_d = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for s, block in _unit_chunks(x, chunk):
        d, i = faiss.knn(q, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        best_d = np.concatenate([best_d, d], axis=1)
        best_i = np.concatenate([best_i, i + s], axis=1)
        if best_d.shape[1] > k:
            order = np.argsort(-best_d, axis=1, kind="stable")[:, :k]
            best_d = np.take_along_axis(best_d, order, axis=1)
            best_i = np.take_along_axis(best_i, order, axis=1)
    return best_i


class _Rows:
    """The rows ``rows`` of ``x`` (N, D) as a matrix of ``len(rows)`` rows, read a block at a time (for
    :func:`_unit_chunks`: a float16 memory map is never copied whole)."""

    def __init__(self, x: np.ndarray, rows: np.ndarray):
        self.x, self.rows = x, np.asarray(rows, dtype=np.int64)
        self.shape, self.dtype = (len(self.rows), x.shape[1]), x.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: slice) -> np.ndarray:
        return np.asarray(self.x[self.rows[key]])


def _drop_self(ids: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    """Rows of ``ids`` (Q, k+1) without each query's own id, cut to k columns (Q, k)."""
    ids = np.asarray(ids)
    is_self = ids == np.asarray(self_ids).reshape(-1, 1)
    order = np.argsort(is_self, axis=1, kind="stable")  # the own id (at most one) moves to the end
    return np.take_along_axis(ids, order, axis=1)[:, :k].astype(np.int64)


def tune_nprobe(
    index: faiss.IndexIVF,
    x: np.ndarray,
    target: float = TARGET_RECALL,
    k: int = RECALL_K,
    n_queries: int = TUNE_QUERIES,
    seed: int = 0,
    sample: int | None = TUNE_SAMPLE,
) -> tuple[int, float]:
    """Smallest nprobe whose recall@k against exact search reaches ``target``.

    Parameters
    ----------
    index : faiss.IndexIVF
        Trained, holding exactly the vectors ``x`` (ids 0..N-1).
    x : np.ndarray (N, D)
        The indexed vectors (unit float32 rows, or the float16 feature matrix as stored: normalised here block
        by block); ``n_queries`` of them (sampled) are the queries, each one's own id left out.
    sample : int or None
        With more than this many rows, recall is measured within a seeded random sample of ``sample`` rows
        (the queries among them): exact search over the sample only, the IVF searched with the sample as its
        id selector. A lower bound of the full recall (see :data:`TUNE_SAMPLE`). None: all rows.

    Returns
    -------
    (nprobe, recall)
        The chosen nprobe (``nlist`` if no smaller one reaches the target: exhaustive) and its measured
        recall. Candidates: 1, 2, 3, 4, 6, 8, 12, ... (about ×1.5 apart), tried in increasing order.
    """
    faiss = _faiss()
    n = x.shape[0]
    if index.ntotal != n:
        raise InvalidInputError(f"the index holds {index.ntotal} vectors but x has {n}")
    kk = min(k, n - 1)
    if kk < 1:
        return 1, 1.0
    rng = np.random.default_rng(seed)
    if sample is not None and n > max(int(sample), n_queries, kk + 1):
        rows = np.sort(rng.choice(n, size=int(sample), replace=False))  # the sampled database rows
        qi = np.sort(rng.choice(rows, size=min(n_queries, len(rows)), replace=False))
        q = as_unit_float32(np.asarray(x[qi]))
        truth = rows[exact_knn(q, _Rows(x, rows), kk + 1)]  # sample positions -> row ids
        selector = faiss.IDSelectorBatch(rows)
    else:
        qi = np.sort(rng.choice(n, size=min(n_queries, n), replace=False))
        q = as_unit_float32(np.asarray(x[qi]))
        truth = exact_knn(q, x, kk + 1)
        selector = None
    truth = _drop_self(truth, qi, kk)
    nlist = int(index.nlist)
    recall = 0.0
    # Increasing nprobe until the target is met: each step costs ~1.5x the previous one, so the whole scan
    # costs ~3x the answer's search (a bisection would start at nlist/2, far costlier than typical answers).
    for nprobe in [p for p in _NPROBE_STEPS if p < nlist] + [nlist]:
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        if selector is not None:
            params.sel = selector
        _, found = index.search(q, kk + 1, params=params)
        recall = recall_at_k(_drop_self(found, qi, kk), truth)
        if recall >= target:
            return nprobe, recall
    return nlist, recall


def build_faiss_index(
    x: np.ndarray,
    switch_at: int = DEFAULT_SWITCH,
    nlist: int | None = None,
    target_recall: float = TARGET_RECALL,
    seed: int = 0,
) -> tuple[faiss.Index, dict]:
    """Build an inner-product index over ``x``: exact up to ``switch_at`` vectors, tuned IVF beyond.

    Parameters
    ----------
    x : np.ndarray (N, D)
        Unit float32 rows (see :func:`as_unit_float32`), or the set's float16 matrix as stored (a memory map:
        read and normalised block by block, never copied whole); ids are 0..N-1.
    switch_at : int
        Largest N that gets an exact ``IndexFlatIP``.
    nlist : int or None
        IVF lists; None: :func:`default_nlist`.
    target_recall : float
        Recall@20 the IVF nprobe is tuned to reach.

    Returns
    -------
    (index, info)
        ``info``: ``{"type": "flat"|"ivf", "n", "nlist", "nprobe", "recall", "trained_n", "tuned_n",
        "train_s", "add_s", "tune_s"}``.
    """
    faiss = _faiss()
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] < 1:
        raise InvalidInputError(f"expected vectors of shape (N, D), got {x.shape}")
    if not 0 < target_recall <= 1:
        raise InvalidInputError(f"target recall must be in (0, 1], got {target_recall}")
    n, d = x.shape
    info: dict = {
        "n": n,
        "nlist": None,
        "nprobe": None,
        "recall": 1.0,
        "trained_n": n,
        "tuned_n": n,
        "train_s": 0.0,
        "add_s": 0.0,
        "tune_s": 0.0,
    }
    if n <= max(int(switch_at), 0) or n < 2 * 39 * 16:
        index = faiss.IndexFlatIP(d)
        t0 = time.perf_counter()
        for _, block in _unit_chunks(x):
            index.add(block)
        info.update(type="flat", add_s=time.perf_counter() - t0)
        return index, info
    nlist = int(nlist or default_nlist(n))
    nlist = max(1, min(nlist, n // 39))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True
    quantizer.this.disown()
    index.cp.seed = seed
    index.cp.max_points_per_centroid = TRAIN_PER_LIST
    n_train = min(n, TRAIN_PER_LIST * nlist)
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if n_train == n else np.sort(rng.choice(n, size=n_train, replace=False))
    t0 = time.perf_counter()
    index.train(as_unit_float32(np.asarray(x[rows])))
    t1 = time.perf_counter()
    for _, block in _unit_chunks(x):
        index.add(block)
    t2 = time.perf_counter()
    nprobe, recall = tune_nprobe(index, x, min(1.0, target_recall + TUNE_MARGIN), seed=seed)
    index.nprobe = nprobe
    info.update(
        type="ivf",
        nlist=nlist,
        nprobe=nprobe,
        recall=recall,
        train_s=t1 - t0,
        add_s=t2 - t1,
        tune_s=time.perf_counter() - t2,
    )
    return index, info


# --- the project's index -------------------------------------------------------------------------------
def resolve_set(project: Project, features: str) -> dict:
    """The ``feature_sets`` row for ``clip``/``dino`` (newest of the kind) or a key.

    Same answers as :func:`labeler.features.latest_set`, without importing torch (which that module
    does at import time, ~2.5 s): searching, clustering and the CLI's explore commands stay light.
    """
    if not isinstance(features, str) or not features.strip():
        raise InvalidInputError("features must be 'clip', 'dino' or a feature-set key")
    if features in ("clip", "dino"):
        row = project.features.latest(features)
        if row is None:
            raise NotReadyError(f"no {features} features in this project", hint=Hint("features", option=features))
        return row
    row = project.features.get_set(features)
    if row is None:
        keys = ", ".join(s["key"] for s in project.features.sets()) or "none yet"
        raise NotReadyError(f"no feature set {features!r} in this project (sets: {keys}); use 'clip' or 'dino'")
    return dict(row)


def ok_features(project: Project, features: str = "clip") -> tuple[dict, list[int], np.ndarray]:
    """Features of every ok image that has some in a set (like :func:`labeler.features.feature_matrix`).

    Returns
    -------
    (fset, image_ids, X)
        The set's row, image ids in id order and their vectors (N, D) float32 as stored (unit norm
        up to float16 rounding).
    """
    fset = resolve_set(project, features)
    ids, x = project.features.ok_vectors(int(fset["id"]))
    return fset, ids, x


def index_dir(project: Project, key: str) -> Path:
    """``<project>/features/<slug(key)>/``: where the set's vectors, index and map live."""
    return project.root / "features" / slug(key)


def _images_signature(project: Project) -> tuple:
    row = project.db.execute(
        "select (select count(*) from images), (select coalesce(max(id), 0) from images), "
        "(select count(*) from images where status = 'ok')"
    ).fetchone()
    return (*row, project.get_meta("images_version", 0))


class FeatureIndex:
    """A feature set's FAISS index and its row → image map. Get one with :func:`get_index`.

    Attributes
    ----------
    key, kind, set_id, dim : the feature set.
    index : faiss.Index
        ``IndexFlatIP`` or ``IndexIVFFlat``; faiss id = row of the set's feature matrix.
    meta : dict
        What ``index.json`` holds (type, n, nprobe, recall, ...).
    row_image : np.ndarray (n,) int64
        Image id of each row; -1 where the image is not ``ok`` (excluded, missing or deleted).
    """

    def __init__(self, project: Project, fset: dict, index: faiss.Index, meta: dict):
        self.project = project
        self.key, self.kind = fset["key"], fset["kind"]
        self.set_id, self.dim = int(fset["id"]), int(fset["dim"])
        self.fset = dict(fset)
        self.index = index
        self.meta = meta
        #: True when the index was opened memory-mapped (read-only; :func:`get_index` reads it fully to add).
        self.mapped = False
        self.row_image = np.zeros(0, dtype=np.int64)
        self._ok_ids = np.zeros(0, dtype=np.int64)
        self._ok_rows = np.zeros(0, dtype=np.int64)
        self._selector = None
        self._bitmap = None
        self._images_sig: tuple = ()
        self.lock = threading.RLock()

    # --- facts ---------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Vectors in the index (rows of the feature set it covers)."""
        return int(self.index.ntotal)

    @property
    def type(self) -> str:
        """``flat`` (exact) or ``ivf``."""
        return self.meta["type"]

    @property
    def nprobe(self) -> int | None:
        return self.meta.get("nprobe")

    @property
    def n_searchable(self) -> int:
        """Indexed vectors whose image is ``ok``."""
        return len(self._ok_ids)

    def info(self) -> dict:
        """Summary for the CLI/UI: key, kind, type, n, searchable, nlist, nprobe, recall."""
        return {
            "key": self.key,
            "kind": self.kind,
            "type": self.type,
            "n": self.n,
            "searchable": self.n_searchable,
            "nlist": self.meta.get("nlist"),
            "nprobe": self.nprobe,
            "recall_at_20": self.meta.get("recall"),
        }

    def has_image(self, image_id: int) -> bool:
        return bool(self.rows_of([image_id])[0] >= 0)

    # --- mapping -------------------------------------------------------------------------------------
    def _set_mapping(self, row_image: np.ndarray, images_sig: tuple) -> None:
        """Install the row → image id map (N,) (-1: not ok) and the selector that hides the -1 rows."""
        n = self.n
        row_image = np.asarray(row_image[:n], dtype=np.int64)
        self.row_image = row_image
        ok = row_image >= 0
        ok_rows = np.flatnonzero(ok)
        order = np.argsort(row_image[ok_rows], kind="stable")
        self._ok_ids = row_image[ok_rows][order]  # sorted image ids, for id → row lookups
        self._ok_rows = ok_rows[order]
        self._images_sig = images_sig
        if ok.all():
            self._selector = self._bitmap = None
        else:
            faiss = _faiss()
            self._bitmap = np.packbits(ok, bitorder="little")
            self._selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(self._bitmap))

    def rows_of(self, image_ids: list[int] | np.ndarray) -> np.ndarray:
        """Matrix row of each image id (M,), -1 where the image is not indexed or not ok."""
        ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        if not len(self._ok_ids):
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._ok_ids, ids), 0, len(self._ok_ids) - 1)
        return np.where(self._ok_ids[pos] == ids, self._ok_rows[pos], -1)

    def _params(self, nprobe: int | None = None):
        faiss = _faiss()
        if self.type == "ivf":
            p = nprobe or self.nprobe or 1
            return (
                faiss.SearchParametersIVF(sel=self._selector, nprobe=int(p))
                if self._selector
                else faiss.SearchParametersIVF(nprobe=int(p))
            )
        return faiss.SearchParameters(sel=self._selector) if self._selector else None

    # --- search --------------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int = 12, exclude: np.ndarray | None = None, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar ok images for each query vector.

        Parameters
        ----------
        queries : np.ndarray (Q, D)
            Normalised here; any scale.
        k : int
            Neighbours per query (at most the searchable images).
        exclude : np.ndarray (Q,) of image ids, optional
            One image per query to leave out (e.g. the query image itself); -1 for none.
        nprobe : int, optional
            IVF only: override the tuned nprobe.

        Returns
        -------
        (scores, image_ids)
            Both (Q, k'): cosine similarities (float32, descending) and image ids (int64), with
            ``k' = min(k, searchable)``; image id -1 (score -inf) pads rows with fewer hits.
        """
        k = int(k)
        if k < 1:
            raise InvalidInputError(f"k must be at least 1, got {k}")
        q = as_unit_float32(np.atleast_2d(queries))
        if q.shape[1] != self.dim:
            raise InvalidInputError(
                f"query vectors have dimension {q.shape[1]} but feature set {self.key} has {self.dim}"
            )
        with self.lock:
            searchable = self.n_searchable
            kq = min(k, searchable)
            if kq == 0:
                return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
            extra = 1 if exclude is not None else 0
            fetch = min(kq + extra, searchable)
            params = self._params(nprobe)
            scores, rows = self.index.search(q, fetch, params=params) if params else self.index.search(q, fetch)
            ids = np.where(rows >= 0, self.row_image[np.maximum(rows, 0)], -1)
        ids[ids < 0] = -1
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        if exclude is None:
            return scores[:, :kq], ids[:, :kq]
        exclude = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if len(exclude) != len(q):
            raise InvalidInputError(f"exclude has {len(exclude)} ids for {len(q)} queries")
        out_s = np.full((len(q), kq), -np.inf, dtype=np.float32)
        out_i = np.full((len(q), kq), -1, dtype=np.int64)
        for r in range(len(q)):
            keep = (ids[r] != exclude[r]) & (ids[r] >= 0)
            m = min(kq, int(keep.sum()))
            out_s[r, :m], out_i[r, :m] = scores[r][keep][:m], ids[r][keep][:m]
        return out_s, out_i

    def vectors(self, image_ids: list[int] | np.ndarray) -> np.ndarray:
        """Unit float32 vectors (M, D) of indexed ok images, read from the feature matrix."""
        ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        rows = self.rows_of(ids)
        if (rows < 0).any():
            bad = int(ids[int(np.argmax(rows < 0))])
            raise InvalidInputError(
                f"image {bad} has no {self.kind} features in {self.key} (or is not ok)",
                hint=Hint("features"),
            )
        if not len(rows):
            return np.zeros((0, self.dim), np.float32)
        order = np.argsort(rows)  # sorted reads from the memory map, then back to the caller's order
        mat = self.project.features.matrix(self.set_id)
        out = np.empty((len(rows), self.dim), np.float32)
        out[order] = np.asarray(mat[rows[order]], dtype=np.float32)
        return as_unit_float32(out)

    def search_images(self, image_ids: list[int] | np.ndarray, k: int = 12) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours of indexed images (each one left out of its own list): scores, ids (M, k')."""
        ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        return self.search(self.vectors(ids), k, exclude=ids)

    # --- persistence ---------------------------------------------------------------------------------
    def save(self) -> None:
        """Write ``index.faiss`` then ``index.json`` atomically beside the set's vectors."""
        faiss = _faiss()
        folder = index_dir(self.project, self.key)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{INDEX_FILE}.{os.getpid()}.tmp"
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, folder / INDEX_FILE)
        tmp_meta = folder / f".{META_FILE}.{os.getpid()}.tmp"
        tmp_meta.write_text(json.dumps(self.meta, indent=1), encoding="utf-8")
        os.replace(tmp_meta, folder / META_FILE)


# In-process cache: (project root, set id) → FeatureIndex, so a UI session does not reload per click.
_CACHE: OrderedDict[tuple[str, int], FeatureIndex] = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: How often each path of :func:`get_index` ran in this process (tests and the bench read it).
STATS = {"built": 0, "loaded": 0, "added": 0, "cached": 0, "remapped": 0}


def clear_cache() -> None:
    """Forget the in-process indexes (the next :func:`get_index` loads from disk)."""
    with _CACHE_LOCK:
        _CACHE.clear()


class RowShas:
    """The sha256 of each row of a feature set, in row order ("" for gaps), hashed by prefix.

    The hash of rows ``0..m`` (:meth:`hash`) is the SHA-1 of their concatenated sha256s, read from SQLite as one
    string per call (``group_concat``), never as a Python list of a million strings: reopening a large index
    spent seconds there. Prefixes are hashed incrementally, so ``hash(n_saved)`` then ``hash(count)`` read each
    row once.
    """

    def __init__(self, project: Project, set_id: int, n: int):
        self.db, self.set_id, self.n = project.db, int(set_id), int(n)
        self._sha1, self._upto = hashlib.sha1(), 0

    def __len__(self) -> int:
        return self.n

    def hash(self, m: int) -> str:
        """Hex SHA-1 of the sha256s of rows ``0 .. min(m, n)`` (gaps contribute nothing)."""
        m = min(int(m), self.n)
        if m < self._upto:
            self._sha1, self._upto = hashlib.sha1(), 0
        if m > self._upto:
            (text,) = self.db.execute(
                "select group_concat(sha256, '') from (select sha256 from feature_rows "
                "where feature_set_id = ? and row >= ? and row < ? order by row)",
                [self.set_id, self._upto, m],
            ).fetchone()
            self._sha1.update((text or "").encode())
            self._upto = m
        return self._sha1.copy().hexdigest()


def _rows_hash(shas: list[str]) -> str:
    """What :meth:`RowShas.hash` gives for a list of row sha256s (tests compare the two)."""
    return hashlib.sha1("".join(shas).encode()).hexdigest()


def _row_map(project: Project, set_id: int) -> tuple[RowShas, np.ndarray]:
    """The set's row sha256s (:class:`RowShas`) and each row's image id (-1 where the image is not ok).

    Rows no image uses (gaps left where a repair dropped rows, see ``FeatureStore.repair``) have sha256 ""
    and image -1: they stay in the index as zero vectors that no search returns. Only integers come back from
    SQLite here (the hash reads the sha256s as one string).
    """
    n = project.features.extent(set_id)
    return RowShas(project, set_id, n), _query_row_image(project, set_id, n)


def _query_row_image(project: Project, set_id: int, n: int) -> np.ndarray:
    pairs = project.db.execute(
        "select r.row, i.id from feature_rows r join images i on i.sha256 = r.sha256 "
        "where r.feature_set_id = ? and i.status = 'ok'",
        [set_id],
    ).fetchall()
    row_image = np.full(n, -1, dtype=np.int64)
    if pairs:
        arr = np.array(pairs, dtype=np.int64)
        row_image[arr[:, 0]] = arr[:, 1]
    return row_image


def _row_image(project: Project, fset: dict, shas: RowShas, images_sig: tuple) -> np.ndarray:
    """Each row's image id (-1: not ok), from ``rowmap.npy`` when it was saved for these rows and this images
    signature (the join of a million rows with ``images`` took seconds), else from SQL (and saved)."""
    folder = index_dir(project, fset["key"])
    want = {"rows_hash": shas.hash(len(shas)), "n": len(shas), "images_sig": list(images_sig)}
    try:
        if json.loads((folder / ROWMAP_META).read_text(encoding="utf-8")) == want:
            row_image = np.load(folder / ROWMAP_FILE, allow_pickle=False)
            if row_image.shape == (len(shas),) and row_image.dtype == np.int64:
                return row_image
    except (OSError, ValueError, TypeError):
        pass
    row_image = _query_row_image(project, int(fset["id"]), len(shas))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{ROWMAP_FILE}.{os.getpid()}.tmp.npy"
        np.save(tmp, row_image)
        os.replace(tmp, folder / ROWMAP_FILE)
        tmp_meta = folder / f".{ROWMAP_META}.{os.getpid()}.tmp"
        tmp_meta.write_text(json.dumps(want), encoding="utf-8")
        os.replace(tmp_meta, folder / ROWMAP_META)
    except OSError:
        pass  # a read-only project: computed again next time
    return row_image


def _load_matrix(project: Project, set_id: int, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of the set's float16 matrix as unit float32 (one copy, normalised in place)."""
    mat = project.features.matrix(set_id)
    out = np.empty((stop - start, mat.shape[1]), dtype=np.float32)
    step = 65536
    for s in range(start, stop, step):
        e = min(stop, s + step)
        out[s - start : e - start] = mat[s:e]
    return as_unit_float32(out, copy=False)


def _try_load(project: Project, fset: dict, shas: RowShas) -> FeatureIndex | None:
    faiss = _faiss()
    folder = index_dir(project, fset["key"])
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != _FORMAT or meta.get("key") != fset["key"] or int(meta["dim"]) != int(fset["dim"]):
            return None
        n = int(meta["n"])
        if n > len(shas) or meta.get("rows_hash") != shas.hash(n):
            return None
        # IVF: the inverted lists are memory-mapped, not read (a 1M x 512 index is 2 GB): reopening takes
        # milliseconds and pages come in as searches touch them. _extend reads it fully before adding.
        flags = faiss.IO_FLAG_MMAP if meta.get("type") == "ivf" else 0
        index = faiss.read_index(str(folder / INDEX_FILE), flags)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None
    if index.ntotal != n or index.d != int(fset["dim"]):
        return None
    if meta["type"] == "ivf":
        faiss.extract_index_ivf(index).nprobe = int(meta["nprobe"])
    fi = FeatureIndex(project, fset, index, meta)
    fi.mapped = bool(flags)
    return fi


def _new_meta(fset: dict, info: dict, shas: RowShas, switch_at: int, target: float, seconds: float) -> dict:
    return {
        "format": _FORMAT,
        "key": fset["key"],
        "dim": int(fset["dim"]),
        "type": info["type"],
        "n": info["n"],
        "rows_hash": shas.hash(info["n"]),
        "nlist": info["nlist"],
        "nprobe": info["nprobe"],
        "recall": info["recall"],
        "target_recall": target,
        "switch_at": switch_at,
        "trained_n": info["trained_n"],
        "tuned_n": info["tuned_n"],
        "build_seconds": round(seconds, 3),
        "built_at": time.time(),
        "faiss": _faiss().__version__,
    }


def get_index(
    project: Project,
    features: str = "clip",
    *,
    switch_at: int | None = None,
    target_recall: float = TARGET_RECALL,
    rebuild: bool = False,
) -> FeatureIndex:
    """The up-to-date similarity index of a feature set: cached, loaded, extended or built as needed.

    Parameters
    ----------
    project : Project
    features : str
        ``clip`` or ``dino`` (the newest set of that kind) or a feature-set key.
    switch_at : int, optional
        Exact index up to this many vectors, IVF beyond (default :data:`DEFAULT_SWITCH`, or what the
        saved index was built with).
    target_recall : float
        Recall@20 against exact search the IVF nprobe is tuned to.
    rebuild : bool
        Build from scratch even if the saved index is current.

    Returns
    -------
    FeatureIndex
        Covering every committed vector of the set; searches return ok images only.

    Raises
    ------
    NotReadyError
        The project has no such feature set, or it has no vectors yet.
    """
    fset = resolve_set(project, features)
    set_id = int(fset["id"])
    cache_key = (str(project.root.resolve()), set_id)
    count = project.features.extent(set_id)
    if count == 0:
        raise NotReadyError(f"feature set {fset['key']} has no vectors yet", hint=Hint("features"))
    images_sig = _images_signature(project)
    with _CACHE_LOCK:
        cached = None if rebuild else _CACHE.get(cache_key)
    if (
        cached is not None
        and cached.n == count
        and cached._images_sig == images_sig
        and (switch_at is None or cached.meta["switch_at"] == switch_at)
    ):
        STATS["cached"] += 1
        return cached
    t_map = time.perf_counter()
    shas = RowShas(project, set_id, count)
    row_image = _row_image(project, fset, shas, images_sig)
    t_map = time.perf_counter() - t_map
    if cached is not None and cached.n == count and (switch_at is None or cached.meta["switch_at"] == switch_at):
        with cached.lock:
            cached._set_mapping(row_image, images_sig)
        STATS["remapped"] += 1
        return cached
    fi = None if rebuild else (cached if cached is not None and cached.n <= count else _try_load(project, fset, shas))
    if fi is not None and fi.meta.get("rows_hash") != shas.hash(fi.n):
        fi = None
    if fi is not None and cached is not fi:
        STATS["loaded"] += 1
    switch = int(switch_at if switch_at is not None else (fi.meta["switch_at"] if fi else DEFAULT_SWITCH))
    if fi is not None and switch != fi.meta["switch_at"]:
        fi = None  # asked for another switch point: rebuild under it
    if fi is not None and fi.n < count:
        fi = _extend(project, fset, fi, shas, switch, target_recall)
    if fi is None:
        t0 = time.perf_counter()
        # The float16 matrix as stored: build_faiss_index streams it in blocks (no 4-bytes-per-value copy).
        x = project.features.matrix(set_id)[:count]
        t_load = time.perf_counter() - t0
        index, info = build_faiss_index(x, switch_at=switch, target_recall=target_recall)
        del x
        fi = FeatureIndex(
            project, fset, index, _new_meta(fset, info, shas, switch, target_recall, time.perf_counter() - t0)
        )
        t_save = time.perf_counter()
        fi.save()
        fi.meta["timings"] = {
            "row_map_s": round(t_map, 3),
            "load_s": round(t_load, 3),
            "train_s": round(info["train_s"], 3),
            "add_s": round(info["add_s"], 3),
            "tune_s": round(info["tune_s"], 3),
            "save_s": round(time.perf_counter() - t_save, 3),
        }
        STATS["built"] += 1
    with fi.lock:
        fi._set_mapping(row_image, images_sig)
    with _CACHE_LOCK:
        _CACHE[cache_key] = fi
        _CACHE.move_to_end(cache_key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return fi


def _extend(
    project: Project, fset: dict, fi: FeatureIndex, shas: RowShas, switch: int, target: float
) -> FeatureIndex | None:
    """Add rows ``fi.n .. len(shas)`` to ``fi``; None when a rebuild is due instead (flat → IVF, IVF doubled)."""
    count = len(shas)
    meta = fi.meta
    if meta["type"] == "flat" and count > switch:
        return None
    if meta["type"] == "ivf" and count > 2 * int(meta["trained_n"]):
        return None
    with fi.lock:
        if fi.mapped:  # a memory-mapped index is read-only: read it fully, then add
            fi.index = _faiss().read_index(str(index_dir(project, fi.key) / INDEX_FILE))
            fi.mapped = False
            if meta["type"] == "ivf":
                _faiss().extract_index_ivf(fi.index).nprobe = int(meta["nprobe"])
        new = _load_matrix(project, fi.set_id, fi.n, count)
        fi.index.add(new)
        meta.update(n=count, rows_hash=shas.hash(count))
        if meta["type"] == "ivf" and count > 1.25 * int(meta["tuned_n"]):
            x = project.features.matrix(fi.set_id)[:count]
            nprobe, recall = tune_nprobe(_faiss().extract_index_ivf(fi.index), x, min(1.0, target + TUNE_MARGIN))
            fi.index.nprobe = nprobe
            meta.update(nprobe=nprobe, recall=recall, tuned_n=count)
        fi.save()
    STATS["added"] += 1
    return fi
