"""2-D map of a feature set: PCA by default, UMAP (``umap-learn``, imported only when asked for) where installed.

PCA is one pass over the vectors and the same everywhere, so it is the default (``auto``); UMAP keeps clusters apart
better but costs seconds to minutes (numba compiles it on first use) and is used only when asked for.
:func:`project_2d` is the pure part. :func:`feature_map` gives the UI everything a scatter plot
needs in one call: the points of every ok image with features and, for colouring, each point's
pseudo-label (active run), human label, final label and cluster (newest clustering run of the
set). Maps are cached beside the features (``features/<slug>/map-<method>.npz``) and recomputed
when the set's images change, with how long they took (:func:`map_timing`: "UMAP of 2,000 points took 4.1 s").
:func:`points_in_box` turns a box selection into image ids.
"""

from __future__ import annotations

import importlib.util
import time
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .project import Project

METHODS = ("auto", "pca", "umap")

#: What to do when UMAP is asked for and umap-learn is missing.
UMAP_MISSING = (
    "UMAP needs the umap-learn package, which is not installed: pip install umap-learn (it brings numba and "
    "llvmlite), then restart; or use the PCA map"
)


def umap_available() -> bool:
    """True when ``umap`` (umap-learn) is installed (found, not imported: importing it compiles numba code)."""
    spec = importlib.util.find_spec("umap")
    return spec is not None and spec.origin is not None  # (a leftover folder without umap-learn: a namespace)


def _umap_module():
    """umap-learn's ``umap`` module; InvalidInputError saying how to install it when it cannot be imported."""
    try:
        import umap
    except ImportError:
        raise InvalidInputError(UMAP_MISSING) from None
    if not hasattr(umap, "UMAP"):  # another package's (or an uninstall's leftover) folder named umap
        raise InvalidInputError(UMAP_MISSING)
    return umap


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
        ``pca``, ``umap`` (needs umap-learn; N >= 3) or ``auto`` (PCA).

    Returns
    -------
    (xy, method)
        Coordinates (N, 2) float32 and the method actually used.
    """
    if method not in METHODS:
        raise InvalidInputError(f"map method must be one of {', '.join(METHODS)}, got {method!r}")
    arr = np.asarray(x, dtype=np.float32)
    if method == "umap":
        if arr.ndim != 2 or len(arr) < 3:
            raise InvalidInputError(f"a UMAP map needs at least 3 vectors of shape (N, D), got {arr.shape}")
        umap = _umap_module()
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


def map_timing(project: Project, key: str, method: str) -> tuple[int, float] | None:
    """``(points, seconds)`` of the cached ``method`` map of feature set ``key``: how many points it has and how
    long computing it took (None when there is none, or it predates timing)."""
    try:
        with np.load(_map_file(project, key, method)) as data:
            return int(len(data["image_ids"])), float(data["seconds"])
    except (OSError, KeyError, ValueError):
        return None


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
        "seconds": how long computing the map took (now or when it was cached; None if unknown),
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
    wanted = map_method(method)
    xy, used = cached_map(project, fset["key"], wanted, image_ids, seed), wanted
    if xy is not None:
        timing = map_timing(project, fset["key"], wanted)
        seconds = timing[1] if timing else None
    else:  # only now read the vectors: a cached map of many images costs one small file
        image_ids, x = project.features.ok_vectors(int(fset["id"]))
        if wanted == "umap" and len(image_ids) < 3:
            raise InvalidInputError(f"a UMAP map needs at least 3 images with features, this set has {len(image_ids)}")
        t0 = time.perf_counter()
        xy, used = project_2d(x, wanted, seed)
        seconds = time.perf_counter() - t0
        cache = _map_file(project, fset["key"], wanted)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, image_ids=np.asarray(image_ids, dtype=np.int64), xy=xy, seed=seed, seconds=seconds)
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
        "seconds": seconds,
        "pseudo": [pseudo.get(i, (None, 0))[0] for i in image_ids],
        "human": [final[i].label if i in final and final[i].source == "human" else None for i in image_ids],
        "final": [final[i].label if i in final else None for i in image_ids],
        "cluster": [clusters.get(i) for i in image_ids],
        "cluster_run": crun["id"] if crun else None,
    }


#: Maps of more points than this (or UMAP maps) are computed in the background, not in the request.
MAP_INLINE = 20_000


#: Points drawn on the map at most (an even sample; a box selection still covers every point).
MAP_POINTS = 10_000


#: What the map can be coloured by → the :func:`labeler.projection.feature_map` field.
MAP_COLOURS = {"pseudo-label": "pseudo", "your label": "human", "final label": "final", "cluster": "cluster"}


def map_method(method: str | None = None) -> str:
    """``pca`` or ``umap``: the method asked for; by default (None, "", ``auto``) PCA, fast and the same everywhere
    (UMAP only when asked for: it takes seconds to minutes, and it is not installed everywhere)."""

    if method in (None, "", "auto"):
        return "pca"
    if method not in ("pca", "umap"):
        raise InvalidInputError(f"map method must be pca or umap, got {method!r}")
    return method


def last_map_timing(project: Project, features: str = "clip", method: str | None = None) -> tuple[int, float] | None:
    """``(points, seconds)`` of the last ``method`` map computed for feature set ``features`` of ``project``
    (:func:`map_timing`; None when none was, or it predates timing): what an estimate can be scaled from."""
    from .index import resolve_set

    return map_timing(project, resolve_set(project, features)["key"], map_method(method))


def map_ready(project: Project, features: str = "clip", method: str | None = None) -> bool:
    """True when the map can be drawn at once: it is cached for the current images, or it is a PCA map of at
    most :data:`MAP_INLINE` points. Otherwise compute it in the background (:func:`labeler.projection.feature_map`)."""
    from .index import resolve_set

    fset = resolve_set(project, features)
    ids, _ = project.features.ok_rows(int(fset["id"]))
    method = map_method(method)
    if cached_map(project, fset["key"], method, ids) is not None:
        return True
    return method == "pca" and len(ids) <= MAP_INLINE


def map_frame(
    project: Project,
    features: str = "clip",
    method: str | None = None,
    colour_by: str = "pseudo-label",
    max_points: int = MAP_POINTS,
) -> dict:
    """The map as columns for a scatter plot, an even sample of at most ``max_points`` points.

    Returns
    -------
    dict
        ``{"x", "y", "colour", "image_id", "sha256", "label"}`` (lists, one entry per drawn point; ``colour`` the
        ``colour_by`` value as text: a class, "not labeled" or "cluster 03"), and ``method``, ``features``,
        ``n`` (points in the map), ``shown`` (points drawn), ``seconds`` (how long the map took; None if unknown),
        ``cluster_run``.
    """

    if colour_by not in MAP_COLOURS:
        raise InvalidInputError(f"colour the map by one of {', '.join(MAP_COLOURS)}, not {colour_by!r}")
    m = feature_map(project, features, map_method(method))
    n = len(m["image_ids"])
    pick = np.arange(n) if n <= max_points else np.linspace(0, n - 1, int(max_points)).round().astype(np.int64)
    field_name = MAP_COLOURS[colour_by]
    values = m[field_name]
    width = len(str(max((c for c in values if c is not None), default=0))) if field_name == "cluster" else 0
    none_text = {"pseudo": "no pseudo-label", "human": "not labeled by you", "final": "unlabeled"}.get(
        field_name, "no cluster"
    )

    def text(v) -> str:
        if v is None:
            return none_text
        return f"cluster {int(v):0{width}d}" if field_name == "cluster" else str(v)

    xy = np.asarray(m["xy"], dtype=np.float64)
    from store import in_chunks

    drawn_ids = [int(m["image_ids"][i]) for i in pick]
    sha: dict[int, str] = {}
    for chunk, marks in in_chunks(drawn_ids):
        sha.update(project.db.execute(f"select id, sha256 from images where id in ({marks})", chunk))
    return {
        "x": [round(float(v), 5) for v in xy[pick, 0]],
        "y": [round(float(v), 5) for v in xy[pick, 1]],
        "colour": [text(values[i]) for i in pick],
        "image_id": drawn_ids,
        "sha256": [sha.get(i, "") for i in drawn_ids],
        "label": [m["final"][i] or "unlabeled" for i in pick],
        "method": m["method"],
        "features": m["features"],
        "seconds": m["seconds"],
        "n": n,
        "shown": len(pick),
        "cluster_run": m["cluster_run"],
    }


def map_box(
    project: Project,
    features: str = "clip",
    method: str | None = None,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float | None, float | None] | None = None,
) -> list[int]:
    """Ids of the images whose map point lies in the box (every point, not only the drawn sample).

    ``x_range``/``y_range`` are ``(low, high)`` in any order; None (or a None end) leaves that side open.
    """

    m = feature_map(project, features, map_method(method))
    inf = float("inf")

    def ends(r) -> tuple[float, float]:
        lo = -inf if r is None or r[0] is None else float(r[0])
        hi = inf if r is None or r[1] is None else float(r[1])
        return lo, hi

    (x0, x1), (y0, y1) = ends(x_range), ends(y_range)
    return points_in_box(np.asarray(m["xy"]), m["image_ids"], x0, x1, y0, y1)


def map_lasso(project: Project, features: str = "clip", method: str | None = None, polygon=()) -> list[int]:
    """Ids of the images whose map point lies inside ``polygon`` ((P, 2) map coordinates, P ≥ 3): every point,
    not only the drawn sample (:func:`labeler.projection.points_in_polygon`)."""

    m = feature_map(project, features, map_method(method))
    return points_in_polygon(np.asarray(m["xy"]), m["image_ids"], polygon)
