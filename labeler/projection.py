"""2-D map of a feature set: PCA by default, UMAP when the ``umap`` package is installed.

:func:`project_2d` is the pure part. :func:`feature_map` gives the UI everything a scatter plot
needs in one call: the points of every ok image with features and, for colouring, each point's
pseudo-label (active run), human label, final label and cluster (newest clustering run of the
set). Maps are cached beside the features (``features/<slug>/map-<method>.npz``) and recomputed
when the set's images change. :func:`points_in_box` turns a box selection into image ids.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .project import Project

METHODS = ("auto", "pca", "umap")


def umap_available() -> bool:
    """True when ``umap`` (umap-learn) can be imported."""
    return importlib.util.find_spec("umap") is not None


def pca_2d(x: np.ndarray) -> np.ndarray:
    """First two principal components of ``x`` (N, D) → (N, 2) float32, signs fixed (deterministic).

    Computed from the D × D covariance (chunked), so 1M × 512 rows cost one pass and no N × N matrix.
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise InvalidInputError(f"expected vectors of shape (N, D), got {arr.shape}")
    n, d = arr.shape
    if n == 0:
        return np.zeros((0, 2), np.float32)
    mean = np.zeros(d, np.float64)
    for s in range(0, n, 65536):
        mean += np.asarray(arr[s : s + 65536], np.float64).sum(0)
    mean /= n
    cov = np.zeros((d, d), np.float64)
    for s in range(0, n, 65536):
        c = np.asarray(arr[s : s + 65536], np.float64) - mean
        cov += c.T @ c
    vals, vecs = np.linalg.eigh(cov)
    comps = vecs[:, np.argsort(vals)[::-1][:2]]
    if comps.shape[1] < 2:
        comps = np.hstack([comps, np.zeros((d, 2 - comps.shape[1]))])
    # Sign convention: the largest-magnitude loading of each component is positive.
    signs = np.sign(comps[np.abs(comps).argmax(0), np.arange(2)])
    comps *= np.where(signs == 0, 1, signs)
    out = np.empty((n, 2), np.float32)
    for s in range(0, n, 65536):
        out[s : s + 65536] = (np.asarray(arr[s : s + 65536], np.float64) - mean) @ comps
    return out


def project_2d(x: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of the rows of ``x``.

    Parameters
    ----------
    x : np.ndarray (N, D)
    method : str
        ``pca``, ``umap`` (needs umap-learn) or ``auto`` (UMAP when installed and N >= 10, else PCA).

    Returns
    -------
    (xy, method)
        Coordinates (N, 2) float32 and the method actually used.
    """
    if method not in METHODS:
        raise InvalidInputError(f"map method must be one of {', '.join(METHODS)}, got {method!r}")
    arr = np.asarray(x, dtype=np.float32)
    if method == "umap" and not umap_available():
        raise InvalidInputError("UMAP is not installed: pip install umap-learn, or use method='pca'")
    use_umap = method == "umap" or (method == "auto" and umap_available() and len(arr) >= 10)
    if use_umap:
        import umap

        n_neighbors = max(2, min(15, len(arr) - 1))
        reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, metric="cosine", random_state=seed)
        return np.asarray(reducer.fit_transform(arr), dtype=np.float32), "umap"
    return pca_2d(arr), "pca"


def points_in_box(
    xy: np.ndarray, image_ids: list[int] | np.ndarray, x0: float, x1: float, y0: float, y1: float
) -> list[int]:
    """Image ids whose point (N, 2) lies in the box [x0, x1] × [y0, y1] (ends in any order)."""
    pts = np.asarray(xy)
    ids = np.asarray(image_ids)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) != len(ids):
        raise InvalidInputError(f"xy must be (N, 2) for N = {len(ids)} image ids, got {pts.shape}")
    lo_x, hi_x = sorted((x0, x1))
    lo_y, hi_y = sorted((y0, y1))
    inside = (pts[:, 0] >= lo_x) & (pts[:, 0] <= hi_x) & (pts[:, 1] >= lo_y) & (pts[:, 1] <= hi_y)
    return ids[inside].astype(int).tolist()


def points_in_polygon(xy: np.ndarray, image_ids: list[int] | np.ndarray, polygon) -> list[int]:
    """Image ids whose point (N, 2) lies inside ``polygon`` (P, 2), P ≥ 3 vertices, closed implicitly.

    Even-odd rule (a ray to the right crosses the boundary an odd number of times), so a lasso that crosses
    itself leaves out the part it wraps twice; points exactly on an edge may go either way.
    """
    pts = np.asarray(xy, dtype=np.float64)
    ids = np.asarray(image_ids)
    poly = np.asarray(polygon, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) != len(ids):
        raise InvalidInputError(f"xy must be (N, 2) for N = {len(ids)} image ids, got {pts.shape}")
    if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3 or not np.isfinite(poly).all():
        raise InvalidInputError(f"a lasso needs at least 3 finite (x, y) vertices, got shape {poly.shape}")
    x, y = pts[:, 0:1], pts[:, 1:2]  # (N, 1) against the P edges
    ax, ay = poly[:, 0], poly[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    straddles = (ay > y) != (by > y)  # (N, P): the edge spans the point's height
    with np.errstate(divide="ignore", invalid="ignore"):
        cross_x = ax + (y - ay) * (bx - ax) / (by - ay)
    inside = (straddles & (x < cross_x)).sum(axis=1) % 2 == 1
    return ids[inside].astype(int).tolist()


def _map_file(project: Project, key: str, method: str):
    from .index import index_dir

    return index_dir(project, key) / f"map-{method}.npz"


def cached_map(project: Project, key: str, method: str, image_ids, seed: int = 0) -> np.ndarray | None:
    """The cached ``method`` map (N, 2) of feature set ``key`` if it was made for exactly these ``image_ids``
    (in order) and ``seed``, else None."""
    try:
        with np.load(_map_file(project, key, method)) as data:
            if np.array_equal(data["image_ids"], np.asarray(image_ids, dtype=np.int64)) and int(data["seed"]) == seed:
                return data["xy"]
    except (OSError, KeyError, ValueError):
        pass
    return None


def feature_map(project: Project, features: str = "clip", method: str = "auto", seed: int = 0) -> dict:
    """Points and colourings for the map view.

    Returns
    -------
    dict
        ``{"image_ids": [N], "xy": ndarray (N, 2), "method": "pca"|"umap", "features": key,
        "pseudo": [N], "human": [N], "final": [N], "cluster": [N], "cluster_run": id or None}``;
        label lists hold the primary class name or None, ``cluster`` ints or None.
    """
    from .clusters import latest_cluster_run
    from .index import resolve_set
    from .labels import final_labels, pseudo_top1

    if method not in METHODS:
        raise InvalidInputError(f"map method must be one of {', '.join(METHODS)}, got {method!r}")
    fset = resolve_set(project, features)
    image_ids, _ = project.features.ok_rows(int(fset["id"]))
    wanted = "umap" if method == "umap" or (method == "auto" and umap_available() and len(image_ids) >= 10) else "pca"
    xy, used = cached_map(project, fset["key"], wanted, image_ids, seed), wanted
    if xy is None:  # only now read the vectors: a cached map of many images costs one small file
        image_ids, x = project.features.ok_vectors(int(fset["id"]))
        xy, used = project_2d(x, wanted, seed)
        cache = _map_file(project, fset["key"], wanted)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, image_ids=np.asarray(image_ids, dtype=np.int64), xy=xy, seed=seed)
        tmp.replace(cache)
    final = {it.image_id: it for it in final_labels(project, image_ids)}
    pseudo = pseudo_top1(project)
    crun = latest_cluster_run(project, fset["key"])
    clusters: dict[int, int] = {}
    if crun is not None:
        clusters = dict(project.db.execute("select image_id, cluster from clusters where run_id = ?", [crun["id"]]))
    return {
        "image_ids": list(image_ids),
        "xy": xy,
        "method": used,
        "features": fset["key"],
        "pseudo": [pseudo.get(i, (None, 0))[0] for i in image_ids],
        "human": [final[i].label if i in final and final[i].source == "human" else None for i in image_ids],
        "final": [final[i].label if i in final else None for i in image_ids],
        "cluster": [clusters.get(i) for i in image_ids],
        "cluster_run": crun["id"] if crun else None,
    }
