"""Review queue (likely mistakes first) and bulk actions on a selection of images.

Queue orderings over the active labeling run's predictions (:data:`ORDERINGS`):

``confidence``
    Lowest top-1 probability first.
``margin``
    Smallest gap between the top-1 and top-2 probabilities first.
``entropy``
    Highest entropy of the class distribution first.
``disagreement``
    A cheap label-noise detector: each image's current label (the active run's CLIP pseudo-label
    until someone changes it) against a k-NN vote of its neighbours' labels on **DINO** features
    (CLIP features when the project has no DINO set — the result says so). Score = share of the
    similarity-weighted vote *against* the image's label; highest first.

Images a person already labeled are left out of the queue by default, so it shrinks as the
reviewer works. Bulk actions (:func:`label_images`, :func:`accept_images`, :func:`exclude_images`,
:func:`include_images`) take any selection: gallery picks, a cluster
(:func:`labeler.clusters.cluster_members`), search results or a box on the map. Human labels win
everywhere and exports read the labels live, so they reflect every action at once. Excluded images
get ``images.status = 'excluded'``: every ``status = 'ok'`` query (final labels, exports, counts,
features, search) skips them until :func:`include_images` brings them back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import Hint, InvalidInputError, NotReadyError

if TYPE_CHECKING:
    from .project import Project

ORDERINGS = ("margin", "entropy", "confidence", "disagreement")
#: Neighbours in the k-NN vote.
DEFAULT_NEIGHBOURS = 10


# --- pure scores ----------------------------------------------------------------------------------------
def _probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise InvalidInputError(f"probabilities must have shape (N, C), got {p.shape}")
    if not np.isfinite(p).all():
        raise InvalidInputError("probabilities contain NaN or inf")
    return p


def confidence_scores(probs: np.ndarray) -> np.ndarray:
    """Top-1 probability per row: (N, C) → (N,). Low = uncertain."""
    return _probs(probs).max(axis=1)


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row: (N, C) → (N,) in [0, 1]. Small = torn between two classes."""
    p = _probs(probs)
    if p.shape[1] == 1:
        return p[:, 0].copy()
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return top2[:, 0] - top2[:, 1]


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row, renormalised to sum 1: (N, C) → (N,). High = uncertain."""
    p = np.clip(_probs(probs), 0, None)
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=1)


def knn_vote(neighbour_labels: np.ndarray, neighbour_scores: np.ndarray, n_classes: int) -> np.ndarray:
    """Similarity-weighted class votes of each item's neighbours.

    Parameters
    ----------
    neighbour_labels : np.ndarray (N, K) int
        Label of each neighbour (-1: none/unlabeled, not counted).
    neighbour_scores : np.ndarray (N, K)
        Cosine similarity of each neighbour (negative similarities count as 0).
    n_classes : int

    Returns
    -------
    np.ndarray (N, C) float64
        Rows sum to 1 (all zeros where no neighbour voted).
    """
    lab = np.asarray(neighbour_labels, dtype=np.int64)
    w = np.clip(np.nan_to_num(np.asarray(neighbour_scores, dtype=np.float64), neginf=0.0), 0, None)
    if lab.shape != w.shape or lab.ndim != 2:
        raise InvalidInputError(f"neighbour labels {lab.shape} and scores {w.shape} must both be (N, K)")
    n = lab.shape[0]
    votes = np.zeros((n, int(n_classes)), dtype=np.float64)
    valid = (lab >= 0) & (lab < n_classes)
    rows = np.repeat(np.arange(n), lab.shape[1]).reshape(lab.shape)
    np.add.at(votes, (rows[valid], lab[valid]), w[valid] + 1e-6)
    total = votes.sum(axis=1, keepdims=True)
    return np.divide(votes, total, out=np.zeros_like(votes), where=total > 0)


def disagreement_scores(labels: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """Share of the neighbour vote against each item's own label: (N,), (N, C) → (N,) in [0, 1].

    Items with no label or no votes score 0.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    v = np.asarray(votes, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != len(y):
        raise InvalidInputError(f"votes must be (N, C) for N = {len(y)} labels, got {v.shape}")
    has = (y >= 0) & (y < v.shape[1]) & (v.sum(axis=1) > 0)
    out = np.zeros(len(y))
    out[has] = 1.0 - v[has, y[has]]
    return out


def order_by(probs: np.ndarray, by: str) -> tuple[np.ndarray, np.ndarray]:
    """Review order of the rows of ``probs`` (N, C) for ``by`` in confidence|margin|entropy.

    Returns
    -------
    (order, scores)
        Row indices, most in need of review first (ties broken by row), and each row's score (N,).
    """
    if by == "confidence":
        s = confidence_scores(probs)
        return np.lexsort((np.arange(len(s)), s)), s
    if by == "margin":
        s = margin_scores(probs)
        return np.lexsort((np.arange(len(s)), s)), s
    if by == "entropy":
        s = entropy_scores(probs)
        return np.lexsort((np.arange(len(s)), -s)), s
    raise InvalidInputError(f"order must be one of confidence, margin, entropy; got {by!r}")


# --- the queue ------------------------------------------------------------------------------------------
@dataclass
class ReviewQueue:
    """What :func:`review_queue` returns."""

    by: str
    run_id: int
    items: list[dict] = field(default_factory=list)
    total: int = 0  # images that were candidates (before the limit)
    features: str | None = None  # disagreement: the feature set the k-NN vote used
    note: str = ""  # e.g. "no DINO features: the k-NN vote used CLIP features"

    def to_dict(self) -> dict:
        return {
            "by": self.by,
            "run_id": self.run_id,
            "total": self.total,
            "features": self.features,
            "note": self.note,
            "items": self.items,
        }


def _ok_predictions(project: Project, run: dict) -> tuple[np.ndarray, np.ndarray]:
    from .labels import read_predictions

    ids, probs, _ = read_predictions(project, run["id"])
    ok = {r[0] for r in project.db.execute("select id from images where status = 'ok'")}
    keep = np.array([int(i) in ok for i in ids], dtype=bool)
    return ids[keep], probs[keep]


def review_queue(
    project: Project,
    by: str = "margin",
    limit: int = 50,
    include_labeled: bool = False,
    features: str | None = None,
    neighbours: int = DEFAULT_NEIGHBOURS,
    run_id: int | None = None,
) -> ReviewQueue:
    """The images most likely mislabeled, for a reviewer to fix first.

    Parameters
    ----------
    by : str
        ``margin``, ``entropy``, ``confidence`` or ``disagreement`` (see the module docstring).
    limit : int
        Items returned (1..100000).
    include_labeled : bool
        Keep images a person already labeled (``human``); left out by default.
    features : str, optional
        ``disagreement`` only: the feature set of the k-NN vote (default ``dino``, else ``clip``).
    neighbours : int
        ``disagreement`` only: k of the k-NN vote.
    run_id : int, optional
        The labeling run (default: the active run).

    Returns
    -------
    ReviewQueue
        ``items``: ``{"image_id", "score", "label", "source", "pseudo", "confidence", "margin",
        "entropy", "sha256", "path", "rel_path"}`` plus ``knn_label`` and ``knn_share`` for
        ``disagreement``; ``score`` is what the queue is sorted by.
    """
    from .labels import active_run, final_labels, get_label_run

    if by not in ORDERINGS:
        raise InvalidInputError(f"'by' must be one of {', '.join(ORDERINGS)}, got {by!r}")
    if not isinstance(limit, (int, np.integer)) or not 1 <= int(limit) <= 100_000:
        raise InvalidInputError(f"limit must be between 1 and 100000, got {limit!r}")
    run = get_label_run(project, run_id) if run_id is not None else active_run(project)
    if run is None:
        raise NotReadyError("there is no finished labeling run", hint=Hint("label"))
    classes = list(run["params"]["classes"])
    ids, probs = _ok_predictions(project, run)
    if len(ids) == 0:
        return ReviewQueue(by, int(run["id"]))
    final = {it.image_id: it for it in final_labels(project, run_id=run["id"])}
    queue = ReviewQueue(by, int(run["id"]))
    extra: dict[str, np.ndarray] = {}
    if by == "disagreement":
        scores, extra, queue.features, queue.note = _disagreement(
            project, ids, probs, classes, final, features, neighbours
        )
        order = np.lexsort((np.arange(len(scores)), margin_scores(probs), -scores))
    else:
        order, scores = order_by(probs, by)
    if not include_labeled:
        order = np.array(
            [o for o in order if getattr(final.get(int(ids[o])), "source", None) != "human"], dtype=np.int64
        )
    queue.total = len(order)
    order = order[: int(limit)]
    conf, marg, ent = confidence_scores(probs[order]), margin_scores(probs[order]), entropy_scores(probs[order])
    from .search import describe

    described = {d["image_id"]: d for d in describe(project, ids[order].tolist())}
    for pos, o in enumerate(order.tolist()):
        image_id = int(ids[o])
        item = {
            "image_id": image_id,
            "score": round(float(scores[o]), 6),
            "pseudo": classes[int(probs[o].argmax())],
            "confidence": round(float(conf[pos]), 6),
            "margin": round(float(marg[pos]), 6),
            "entropy": round(float(ent[pos]), 6),
        }
        for key, arr in extra.items():
            item[key] = arr[o]
        d = described.get(image_id, {})
        item.update({k: d.get(k) for k in ("label", "source", "sha256", "path", "rel_path")})
        queue.items.append(item)
    return queue


def _disagreement(project, ids, probs, classes, final, features, neighbours):
    """Disagreement scores (N,), per-item extras, the feature-set key used and a note."""
    from .index import get_index

    note = ""
    if features is None:
        if project.features.latest("dino") is not None:
            features = "dino"
        else:
            features = "clip"
            note = "no DINO features: the k-NN vote used CLIP features (compute DINO ones for a sharper check)"
    if not isinstance(neighbours, (int, np.integer)) or not 1 <= int(neighbours) <= 1000:
        raise InvalidInputError(f"neighbours must be between 1 and 1000, got {neighbours!r}")
    index = get_index(project, features)
    cls_idx = {c: i for i, c in enumerate(classes)}

    def label_of(image_id: int) -> int:
        it = final.get(int(image_id))
        if it is not None and it.label is not None:
            return cls_idx.get(it.label, -1)
        return -1

    own = np.array([label_of(i) for i in ids], dtype=np.int64)
    # Images without a final label fall back to their top-1 under this run.
    own = np.where(own >= 0, own, probs.argmax(axis=1))
    label_by_id = np.full(int(ids.max()) + 1, -1, dtype=np.int64)  # image id → label index (-1: none)
    label_by_id[ids] = own
    has = index.rows_of(ids) >= 0
    scores = np.zeros(len(ids))
    knn_label = np.full(len(ids), None, dtype=object)
    knn_share = np.full(len(ids), None, dtype=object)
    if has.any():
        s, nbr = index.search_images(ids[has], int(neighbours))
        inside = (nbr >= 0) & (nbr < len(label_by_id))
        nbr_lab = np.where(inside, label_by_id[np.where(inside, nbr, 0)], -1)
        votes = knn_vote(nbr_lab, s, len(classes))
        scores[has] = disagreement_scores(own[has], votes)
        top = votes.argmax(axis=1)
        voted = votes.sum(axis=1) > 0
        knn_label[has] = [classes[t] if v else None for t, v in zip(top, voted, strict=True)]
        knn_share[has] = [round(float(r[t]), 6) if v else None for r, t, v in zip(votes, top, voted, strict=True)]
    if not has.all():
        missing = int((~has).sum())
        note = (note + "; " if note else "") + f"{missing} images have no {index.kind} features and score 0"
    return scores, {"knn_label": knn_label, "knn_share": knn_share}, index.key, note


# --- bulk actions ---------------------------------------------------------------------------------------
def _ids(image_ids: int | Iterable[int]) -> list[int]:
    if isinstance(image_ids, (int, np.integer)):
        return [int(image_ids)]
    ids = list(dict.fromkeys(int(i) for i in image_ids))
    if not ids:
        raise InvalidInputError("no images selected: pick some images, a cluster or search results first")
    return ids


def label_images(project: Project, image_ids: int | Iterable[int], classes: str | Sequence[str]) -> int:
    """Label a selection (gallery picks, a cluster, search results) as ``classes`` by hand.

    Human labels replace any earlier label of these images and win over pseudo-labels everywhere.
    Returns the number of images labeled.
    """
    from .labels import set_human_labels

    return set_human_labels(project, _ids(image_ids), classes)


def accept_images(
    project: Project, image_ids: int | Iterable[int], run_id: int | None = None, min_score: float | None = None
) -> int:
    """Accept the pseudo-labels of a selection (images with a human label keep it). Returns labels written."""
    from .labels import accept_pseudo_labels

    return accept_pseudo_labels(project, _ids(image_ids), run_id=run_id, min_score=min_score)


def _set_status(project: Project, image_ids: list[int], old: str, new: str, action: str) -> int:
    from store import in_chunks, transaction

    from .history import counted, record

    changed = 0
    with transaction(project.db):  # read, change and undo entry together
        found: dict[int, str] = {}
        for chunk, marks in in_chunks(image_ids):
            found.update(project.db.execute(f"select id, status from images where id in ({marks})", chunk))
        missing = set(image_ids) - set(found)
        if missing:
            raise InvalidInputError(f"{len(missing)} image ids do not exist, e.g. {sorted(missing)[:5]}")
        touched = sorted(i for i, status in found.items() if status == old)
        before = {"ids": touched, "status": {str(i): old for i in touched}}  # labels do not change
        for chunk, marks in in_chunks(touched):
            changed += project.db.execute(
                f"update images set status = ? where status = ? and id in ({marks})", [new, old, *chunk]
            ).rowcount
        project.bump_images_version()
        record(project, f"{action} {counted(changed, 'image')}", before)
    return changed


def exclude_images(project: Project, image_ids: int | Iterable[int]) -> int:
    """Mark ok images ``excluded``: they leave the final labels, exports, counts, queue and search results.

    Their labels and predictions are kept, so :func:`include_images` restores them as they were.
    Returns the number of images excluded.
    """
    return _set_status(project, _ids(image_ids), "ok", "excluded", "exclude")


def include_images(project: Project, image_ids: int | Iterable[int]) -> int:
    """Undo :func:`exclude_images` for these images. Returns the number brought back."""
    return _set_status(project, _ids(image_ids), "excluded", "ok", "include")


def excluded_images(project: Project) -> list[int]:
    """Ids of the excluded images, ascending."""
    return [r[0] for r in project.db.execute("select id from images where status = 'excluded' order by id")]


#: Project meta key holding the ids a reviewer marked "unsure" (kept until they get a label).
UNSURE_KEY = "review_unsure"


#: Review views that are not a class name.
VIEW_REVIEW = "needs review"


VIEW_ALL = "all images"


VIEW_UNLABELED = "unlabeled"


def unsure_ids(project: Project) -> set[int]:
    """Images marked unsure that have no human or accepted label since."""
    marked = {int(i) for i in (project.get_meta(UNSURE_KEY) or [])}
    if not marked:
        return set()
    decided = {r[0] for r in project.db.execute("select image_id from labels")}
    return marked - decided


def mark_unsure(project: Project, image_ids) -> int:
    """Mark images unsure: their human/accepted labels are cleared and they join the "needs review" queue.

    Returns how many images were marked.
    """
    from .labels import clear_labels

    ids = list(dict.fromkeys(int(i) for i in image_ids))
    if not ids:
        raise InvalidInputError("no images selected: click thumbnails to select them first")
    clear_labels(project, ids)
    marked = {int(i) for i in (project.get_meta(UNSURE_KEY) or [])} | set(ids)
    project.set_meta(UNSURE_KEY, sorted(marked))
    return len(ids)


def _pseudo_table(project: Project) -> tuple[dict[int, tuple[str, float]], list[str]]:
    """Active run: image id → (top-1 class, top-1 probability), and the run's classes."""
    from .labels import active_run, read_predictions

    run = active_run(project)
    if run is None:
        return {}, []
    ids, probs, classes = read_predictions(project, run["id"])
    if len(ids) == 0:
        return {}, classes
    top = probs.argmax(1)
    conf = probs[np.arange(len(ids)), top]
    return {int(i): (classes[int(t)], float(c)) for i, t, c in zip(ids, top, conf, strict=True)}, classes


def review_items(project: Project, view: str = VIEW_REVIEW, threshold: float = 0.5) -> list[dict]:
    """Images to review in one view, lowest confidence first.

    Parameters
    ----------
    view : str
        A class name (images whose final label includes it), :data:`VIEW_REVIEW` (no human or
        accepted label, and top-1 confidence below ``threshold`` or marked unsure),
        :data:`VIEW_UNLABELED` or :data:`VIEW_ALL`.
    threshold : float
        Confidence under which a pseudo-label needs review.

    Returns
    -------
    list of dict
        ``{"id", "sha256", "path", "rel_path", "label", "labels", "source", "pseudo", "confidence", "unsure",
        "folder_label"}``; ``confidence`` is the active run's top-1 probability (None without a prediction).
    """
    from .labels import final_labels

    pseudo, _ = _pseudo_table(project)
    unsure = unsure_ids(project)
    classes = project.classes
    if view not in (VIEW_REVIEW, VIEW_ALL, VIEW_UNLABELED) and view not in classes:
        raise InvalidInputError(f"{view!r} is not a class or a review view; pick one from the list")
    out = []
    for it in final_labels(project):
        p = pseudo.get(it.image_id)
        conf = p[1] if p else None
        item = {
            "id": it.image_id,
            "sha256": it.sha256,
            "path": it.path,
            "rel_path": it.rel_path,
            "label": it.label,
            "labels": list(it.classes),
            "source": it.source,
            "pseudo": p[0] if p else None,
            "confidence": conf,
            "unsure": it.image_id in unsure,
            "folder_label": it.folder_label,
        }
        if view == VIEW_REVIEW:
            if it.source in ("human", "accepted"):
                continue
            if not (item["unsure"] or conf is None or conf < threshold):
                continue
        elif view == VIEW_UNLABELED:
            if it.classes:
                continue
        elif view != VIEW_ALL and view not in it.classes:
            continue
        out.append(item)
    out.sort(key=lambda d: (d["confidence"] if d["confidence"] is not None else -1.0, d["id"]))
    return out


def class_count_rows(project: Project, threshold: float = 0.5) -> list[dict]:
    """Per class: final-label count, how many of those a person decided, and pseudo-labels under ``threshold``."""
    from .labels import final_labels

    pseudo, _ = _pseudo_table(project)
    rows = {c: {"class": c, "images": 0, "reviewed": 0, "low confidence": 0} for c in project.classes}
    for it in final_labels(project):
        for c in it.classes:
            r = rows[c]
            r["images"] += 1
            if it.source in ("human", "accepted"):
                r["reviewed"] += 1
            elif it.source == "pseudo":
                p = pseudo.get(it.image_id)
                if p and p[1] < threshold:
                    r["low confidence"] += 1
    return list(rows.values())


def confidence_histogram(project: Project, bins: int = 10) -> list[dict]:
    """Histogram of the active run's top-1 confidences: ``[{"bin": "0.0-0.1", "low", "images"}]`` (empty: no run)."""
    pseudo, _ = _pseudo_table(project)
    if not pseudo:
        return []
    ok = {r[0] for r in project.db.execute("select id from images where status = 'ok'")}
    conf = np.array([c for i, (_, c) in pseudo.items() if i in ok], dtype=np.float64)
    counts, edges = np.histogram(conf, bins=int(bins), range=(0.0, 1.0))
    return [
        {"bin": f"{edges[k]:.1f}–{edges[k + 1]:.1f}", "low": float(edges[k]), "images": int(counts[k])}
        for k in range(len(counts))
    ]


def explore_items(project: Project, image_ids) -> list[dict]:
    """Gallery items for any images, excluded ones included, in the order given (unknown ids are dropped).

    Returns
    -------
    list of dict
        ``{"id", "sha256", "path", "label", "labels", "source", "confidence", "status"}``; ``label``/``source``
        are the final label (human > accepted > pseudo) of ok images, None for excluded ones;
        ``confidence`` the active run's top-1 probability.
    """
    from store import in_chunks

    from .labels import active_run, final_labels

    ids = list(dict.fromkeys(int(i) for i in image_ids or []))
    if not ids:
        return []
    run = active_run(project)
    rows: dict[int, tuple] = {}
    conf: dict[int, float] = {}
    for chunk, marks in in_chunks(sorted(ids)):  # only these images: a gallery page costs the same in any project
        for r in project.db.execute(f"select id, sha256, path, status from images where id in ({marks})", chunk):
            rows[int(r[0])] = r
        if run is not None:
            conf.update(
                project.db.execute(
                    f"select image_id, score from predictions where run_id = ? and image_id in ({marks})",
                    [run["id"], *chunk],
                ).fetchall()
            )
    final = {it.image_id: it for it in final_labels(project, [i for i in ids if i in rows and rows[i][3] == "ok"])}
    out = []
    for i in ids:
        if i not in rows:
            continue
        it = final.get(i)
        out.append(
            {
                "id": i,
                "sha256": rows[i][1],
                "path": rows[i][2],
                "label": it.label if it else None,
                "labels": list(it.classes) if it else [],
                "source": it.source if it else None,
                "confidence": None if conf.get(i) is None else float(conf[i]),
                "status": rows[i][3],
            }
        )
    return out


def keep_one(project: Project, image_ids, keep: int | None = None) -> dict:
    """Exclude every image of a group but one: ``keep`` if given, else the first one a person labeled, else
    the lowest id. Returns ``{"kept": id, "excluded": n}``."""
    from .labels import final_labels

    ids = list(dict.fromkeys(int(i) for i in image_ids or []))
    if len(ids) < 2:
        raise InvalidInputError("a group needs at least two images to keep one of them")
    if keep is not None:
        keep = int(keep)
        if keep not in ids:
            raise InvalidInputError(f"image {keep} is not in this group")
    else:
        human = [it.image_id for it in final_labels(project, ids) if it.source == "human"]
        keep = min(human) if human else min(ids)
    return {"kept": keep, "excluded": exclude_images(project, [i for i in ids if i != keep])}


def exclude_duplicates(project: Project, groups: list[list[int]]) -> dict:
    """:func:`keep_one` for each group (a group's images, as ids). Returns ``{"groups", "excluded"}``."""
    groups = [g for g in groups or [] if len(g) >= 2]
    if not groups:
        raise InvalidInputError("no near-duplicate groups: find them first (or lower the threshold)")
    excluded = sum(keep_one(project, g)["excluded"] for g in groups)
    return {"groups": len(groups), "excluded": excluded}


def explore_counts(project: Project) -> dict:
    """What the Explore step shows above its views: ``{"total", "reviewed", "human", "excluded", "classes"}``;
    ``classes``: ``[{"class", "images", "reviewed"}]`` per project class (final labels; reviewed = decided by a
    person, human or accepted). One pass over the final labels."""
    from .labels import final_labels

    rows = {c: {"class": c, "images": 0, "reviewed": 0} for c in project.classes}
    total = reviewed = human = 0
    for it in final_labels(project):
        total += 1
        decided = it.source in ("human", "accepted")
        reviewed += decided
        human += it.source == "human"
        for c in it.classes:
            if c in rows:
                rows[c]["images"] += 1
                rows[c]["reviewed"] += decided
    excluded = project.db.execute("select count(*) from images where status = 'excluded'").fetchone()[0]
    return {
        "total": total,
        "reviewed": reviewed,
        "human": human,
        "excluded": int(excluded),
        "classes": list(rows.values()),
    }
