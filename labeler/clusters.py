"""k-means clusters over a feature set, stored per run, summarised against the pseudo-labels.

:func:`kmeans` is the pure part (faiss k-means, spherical: centroids re-normalised, assignment by
cosine similarity). :func:`cluster_images_run` runs it on a project's CLIP or DINO features and stores
every ok image's cluster in the ``clusters`` table under a ``runs`` row of kind ``cluster``.
:func:`cluster_summaries` then reads, per cluster: its size, the majority pseudo-label (active
labeling run) and its share (the cluster's *purity*), the mean top-1 confidence, and the majority
*final* label (human > accepted > pseudo) with its share and how many images a person labeled.
Sorting by purity (lowest first) puts the confused clusters on top.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from .errors import Hint, InvalidInputError, NotReadyError

if TYPE_CHECKING:
    from .jobs import ProgressCallback
    from .project import Project

#: Default k = this × the number of classes, capped by :data:`MAX_DEFAULT_K` and by images / 5.
K_PER_CLASS = 2
MAX_DEFAULT_K = 200
SORTS = ("purity", "size", "confidence", "cluster")
#: Random starts of k-means (see :func:`kmeans`).
NREDO = 5


def default_k(n_classes: int, n_images: int) -> int:
    """``2 × n_classes``, at most 200 and at most ``n_images // 5`` (and at least 1 when there are images)."""
    if n_images <= 0:
        return 0
    k = min(K_PER_CLASS * max(int(n_classes), 1), MAX_DEFAULT_K, max(1, n_images // 5))
    return max(1, min(k, n_images))


def kmeans(
    x: np.ndarray, k: int, niter: int = 20, seed: int = 0, spherical: bool = True, nredo: int = NREDO
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """faiss k-means on the rows of ``x``.

    Parameters
    ----------
    x : np.ndarray (N, D)
        Feature vectors (a normalised copy is used when ``spherical`` and the rows are not unit already;
        unit float32 rows in C order are used as they are, with no copy).
    k : int
        Clusters, 1 <= k <= N.
    niter : int
        Lloyd iterations.
    nredo : int
        Independent random starts; the one with the best objective is kept. One start lands in a
        local minimum (two planted clusters merged, another split) in 10-25% of our synthetic tests,
        five in 0-5%; faiss trains on at most 256 points per centroid, so extra starts are cheap.
    spherical : bool
        Unit-norm centroids, assignment by inner product (cosine) — right for CLIP/DINO features.

    Returns
    -------
    (centroids, assign, similarity)
        Centroids (k, D) float32, each row's cluster (N,) int64 and its similarity to that centroid
        (N,) float32 (inner product if spherical, else minus the squared L2 distance).
    """
    import faiss

    from .index import as_unit_float32, is_unit

    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InvalidInputError(f"k-means needs vectors of shape (N, D) with N >= 1, got {arr.shape}")
    n, d = arr.shape
    k = int(k)
    if not 1 <= k <= n:
        raise InvalidInputError(f"k must be between 1 and the number of images ({n}), got {k}")
    if niter < 1 or nredo < 1:
        raise InvalidInputError(f"niter and nredo must be at least 1, got {niter} and {nredo}")
    data = np.ascontiguousarray(arr, dtype=np.float32)  # no copy when x already is float32, C order
    # One pass when the rows are unit already (NaN/inf rows are never unit); else a checked, normalised copy.
    if not (spherical and is_unit(data)):
        if not np.isfinite(data).all():
            raise InvalidInputError("the feature vectors contain NaN or inf")
        if spherical:
            data = as_unit_float32(data)
    # faiss prints "please provide at least 39·k training points" to stderr below 39 points per centroid; our
    # default k (:func:`default_k`) asks for ~5 per cluster on purpose (small projects), so that is no problem.
    km = faiss.Kmeans(
        d,
        k,
        niter=int(niter),
        nredo=int(nredo),
        seed=int(seed),
        spherical=spherical,
        verbose=False,
        min_points_per_centroid=1,
    )
    km.train(data)
    # After training, km.index holds the final centroids (IP for spherical, L2 otherwise).
    score, assign = km.index.search(data, 1)
    sim = score if spherical else -score
    return km.centroids, assign[:, 0].astype(np.int64), sim[:, 0].astype(np.float32)


def cluster_purity(assign: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of items whose label is their cluster's majority label (1.0 = every cluster pure).

    Parameters
    ----------
    assign, labels : np.ndarray (N,) int
        Cluster of each item and its (true or pseudo) label; labels < 0 (unlabeled) are ignored.
    """
    a, y = np.asarray(assign).reshape(-1), np.asarray(labels).reshape(-1)
    if a.shape != y.shape:
        raise InvalidInputError(f"assign {a.shape} and labels {y.shape} differ in length")
    keep = y >= 0
    if not keep.any():
        return 0.0
    a, y = a[keep], y[keep]
    hits = 0
    for c in np.unique(a):
        hits += np.bincount(y[a == c]).max()
    return hits / len(y)


# --- the project side ----------------------------------------------------------------------------------
def cluster_run(
    project: Project,
    k: int | None = None,
    features: str = "clip",
    niter: int = 20,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
) -> dict:
    """Cluster every ok image with features into ``k`` groups and store the assignments as a new run.

    Parameters
    ----------
    k : int, optional
        Clusters; None: :func:`default_k` (2 × classes, capped).
    features : str
        ``clip``, ``dino`` or a feature-set key.

    Returns
    -------
    dict
        ``{"run_id", "k", "features", "n", "seconds", "clusters": cluster_summaries(...)}``.
    """
    import time

    from .index import ok_features
    from .jobs import Job

    fset, image_ids, x = ok_features(project, features)
    if not image_ids:
        raise NotReadyError(f"no ok image has {fset['kind']} features yet", hint=Hint("features"))
    n = len(image_ids)
    if k is None:
        k = default_k(len(project.classes), n)
    elif not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= n:
        raise InvalidInputError(f"'k' must be between 1 and the number of images with features ({n}), got {k}")
    params = {"k": int(k), "features": fset["key"], "kind": fset["kind"], "niter": niter, "seed": seed, "n": n}
    t0 = time.perf_counter()
    with Job.start(project, "cluster", method="kmeans", params=params, on_progress=on_progress) as job:
        job.progress(0, n, f"k-means with k={k} on {n} images", force=True)
        _, assign, sim = kmeans(x, int(k), niter=niter, seed=seed)
        with project.db.conn:
            project.db.conn.executemany(
                "insert or replace into clusters (run_id, image_id, cluster, similarity) values (?, ?, ?, ?)",
                zip([job.id] * n, image_ids, assign.tolist(), sim.astype(float).tolist(), strict=True),
            )
        seconds = time.perf_counter() - t0
        job.update_metrics(k=int(k), n=n, seconds=round(seconds, 3))
        job.progress(n, n, "done", force=True)
    return {
        "run_id": job.id,
        "k": int(k),
        "features": fset["key"],
        "n": n,
        "seconds": round(seconds, 3),
        "clusters": cluster_summaries(project, job.id),
    }


def latest_cluster_run(project: Project, features: str | None = None) -> dict | None:
    """The newest finished clustering run (of a feature set key or kind, if given), decoded; None if none."""
    from .jobs import get_run

    for (rid,) in project.db.execute(
        "select id from runs where kind = 'cluster' and status = 'done' order by id desc"
    ).fetchall():
        run = get_run(project, rid)
        if features is None or features in (run["params"].get("features"), run["params"].get("kind")):
            return run
    return None


def _cluster_run_id(project: Project, run_id: int | None) -> int:
    from .jobs import get_run

    if run_id is None:
        run = latest_cluster_run(project)
        if run is None:
            raise NotReadyError("no clusters yet", hint=Hint("cluster"))
        return int(run["id"])
    try:
        run = get_run(project, int(run_id))
    except Exception:
        raise InvalidInputError(f"there is no run {run_id!r}", hint=Hint("runs")) from None
    if run["kind"] != "cluster":
        raise InvalidInputError(f"run {run['id']} is a {run['kind']!r} run, not a clustering run")
    return int(run["id"])


def assignments(project: Project, run_id: int | None = None) -> dict[int, int]:
    """Image id → cluster for the ok images of a clustering run (default: the newest)."""
    rid = _cluster_run_id(project, run_id)
    return dict(
        project.db.execute(
            "select c.image_id, c.cluster from clusters c join images i on i.id = c.image_id "
            "where c.run_id = ? and i.status = 'ok' order by c.image_id",
            [rid],
        ).fetchall()
    )


def cluster_members(project: Project, cluster: int, run_id: int | None = None) -> list[int]:
    """Ok image ids of one cluster, most central (highest similarity to the centroid) first."""
    rid = _cluster_run_id(project, run_id)
    rows = project.db.execute(
        "select c.image_id from clusters c join images i on i.id = c.image_id "
        "where c.run_id = ? and c.cluster = ? and i.status = 'ok' order by c.similarity desc, c.image_id",
        [rid, int(cluster)],
    ).fetchall()
    if not rows:
        k = project.db.execute("select max(cluster) from clusters where run_id = ?", [rid]).fetchone()[0]
        if k is None or not 0 <= int(cluster) <= k:
            raise InvalidInputError(f"clustering run {rid} has no cluster {cluster} (clusters 0..{k})")
    return [r[0] for r in rows]


def cluster_summaries(
    project: Project, run_id: int | None = None, sort: str = "purity", label_run_id: int | None = None
) -> list[dict]:
    """One summary per cluster of a clustering run (default: the newest).

    Parameters
    ----------
    sort : str
        ``purity`` (lowest pseudo-label share first: the confused clusters), ``size`` (largest first),
        ``confidence`` (lowest mean confidence first) or ``cluster`` (by number).
    label_run_id : int, optional
        The labeling run whose pseudo-labels are summarised (default: the active run).

    Returns
    -------
    list of dict
        ``{"cluster", "size", "majority", "majority_share", "mean_confidence", "final_majority",
        "final_share", "n_human", "n_accepted"}``; ``majority`` is the most frequent pseudo-label and
        ``majority_share`` its fraction of the cluster (its purity), None when there is no labeling run.
    """
    from .labels import final_labels, pseudo_top1

    if sort not in SORTS:
        raise InvalidInputError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    rid = _cluster_run_id(project, run_id)
    members = project.db.execute(
        "select c.image_id, c.cluster from clusters c join images i on i.id = c.image_id "
        "where c.run_id = ? and i.status = 'ok'",
        [rid],
    ).fetchall()
    by_cluster: dict[int, list[int]] = {}
    for image_id, cl in members:
        by_cluster.setdefault(int(cl), []).append(int(image_id))
    final = {it.image_id: it for it in final_labels(project, run_id=label_run_id)}
    pseudo = pseudo_top1(project, label_run_id)
    out = []
    for cl, ids in by_cluster.items():
        p = Counter(pseudo[i][0] for i in ids if i in pseudo)
        conf = [pseudo[i][1] for i in ids if i in pseudo]
        f = Counter(final[i].label for i in ids if i in final and final[i].label is not None)
        maj, maj_n = p.most_common(1)[0] if p else (None, 0)
        fmaj, fmaj_n = f.most_common(1)[0] if f else (None, 0)
        out.append(
            {
                "cluster": cl,
                "size": len(ids),
                "majority": maj,
                "majority_share": maj_n / len(ids) if p else None,
                "mean_confidence": float(np.mean(conf)) if conf else None,
                "final_majority": fmaj,
                "final_share": fmaj_n / len(ids) if f else None,
                "n_human": sum(1 for i in ids if i in final and final[i].source == "human"),
                "n_accepted": sum(1 for i in ids if i in final and final[i].source == "accepted"),
            }
        )
    keys = {
        "purity": lambda s: (s["majority_share"] if s["majority_share"] is not None else 2.0, -s["size"]),
        "size": lambda s: (-s["size"], s["cluster"]),
        "confidence": lambda s: (s["mean_confidence"] if s["mean_confidence"] is not None else 2.0, -s["size"]),
        "cluster": lambda s: s["cluster"],
    }
    return sorted(out, key=keys[sort])
