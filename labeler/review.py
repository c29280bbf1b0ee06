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
reviewer works. The same queue serves the app's Review step through its *views* (:data:`VIEW_REVIEW`,
:data:`VIEW_ALL`, :data:`VIEW_UNLABELED` or a class name): the images of a view are chosen and, for the
confidence order, paged from a cached review order of the ok images plus the live labels (or in SQL), so a page
reads only its own rows; :func:`review_counts` counts the classes, the views and the confidence histogram from
:func:`label_groups`, which counts the final labels once per commit and after a label edit reads only the decided
images. Pages and counts are kept until the next commit of any connection (SQLite's ``data_version``).

Multi-label review: pseudo-label sets follow the project's per-class thresholds once set
(:func:`set_thresholds`, undoable; :func:`labeler.labels.pseudo_label_sets`), in every view and count here as in
the final labels; :func:`threshold_counts` says how many images a class would carry at candidate thresholds (for
sliders), :func:`near_threshold_queue` lists images with a class score near its threshold, and
:func:`edit_label` / :func:`toggle_label` / :func:`set_image_labels` add or remove one class (one undo entry).

Bulk actions (:func:`label_images`, :func:`accept_images`, :func:`exclude_images`,
:func:`include_images`) take any selection: gallery picks, a cluster
(:func:`labeler.clusters.cluster_members`), search results or a box on the map. Human labels win
everywhere and exports read the labels live, so they reflect every action at once. Excluded images
get ``images.status = 'excluded'``: every ``status = 'ok'`` query (final labels, exports, counts,
features, search) skips them until :func:`include_images` brings them back.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

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


# --- views: which images, decided in SQL ----------------------------------------------------------------
#: database path → ((path, run, its index → current name map), (class_idx, labels JSON) → class names).
_DECODED: dict[str, tuple] = {}
#: Project meta key holding the ids a reviewer marked "unsure" (kept until they get a label).
UNSURE_KEY = "review_unsure"
#: Review views that are not a class name (a class name is a view too: the images whose final label includes it).
VIEW_REVIEW = "needs review"
VIEW_ALL = "all images"
VIEW_UNLABELED = "unlabeled"
VIEWS = (VIEW_REVIEW, VIEW_ALL, VIEW_UNLABELED)
#: Bins of the confidence histogram (:func:`review_counts`).
HIST_BINS = 10
#: Sources of a label a person decided.
DECIDED = ("human", "accepted")

#: ``x in {_IN}`` with a JSON list bound as one parameter: any number of values, no bound-variable limit.
_IN = "(select value from json_each(?))"
#: Every ok image with its stored label (``l``) and its prediction (``p``) under the run bound first.
_FROM = (
    " from images i left join labels l on l.image_id = i.id"
    " left join predictions p on p.image_id = i.id and p.run_id = ? where i.status = 'ok'"
)


def _json(values: Iterable) -> str:
    return json.dumps(list(values), ensure_ascii=False)


def unsure_ids(project: Project) -> set[int]:
    """Images marked unsure that have no human or accepted label since."""
    from store import in_chunks

    marked = sorted({int(i) for i in (project.get_meta(UNSURE_KEY) or [])})
    decided: set[int] = set()
    for chunk, marks in in_chunks(marked):  # only the marked ones: cheap in a project of any size
        decided.update(
            r[0] for r in project.db.execute(f"select image_id from labels where image_id in ({marks})", chunk)
        )
    return set(marked) - decided


def mark_unsure(project: Project, image_ids) -> int:
    """Mark images unsure: their human/accepted labels are cleared and they join the "needs review" queue.

    Returns how many images were marked.
    """
    from .labels import clear_labels

    ids = list(dict.fromkeys(int(i) for i in image_ids))
    if not ids:
        raise InvalidInputError("no images selected: click thumbnails to select them first")
    from store import transaction

    # One write transaction: two reviewers marking images at once never drop each other's marks.
    with transaction(project.db):
        clear_labels(project, ids)
        marked = {int(i) for i in (project.get_meta(UNSURE_KEY) or [])} | set(ids)
        project.db.execute(
            "insert or replace into meta (key, value) values (?, ?)", [UNSURE_KEY, json.dumps(sorted(marked))]
        )
    return len(ids)


def _pseudo_names(names: list[str | None], class_idx: int, labels_json: str | None) -> list[str]:
    """A prediction's current class names, top-1 first (as :func:`labeler.labels.final_labels` reads them)."""
    idx = [class_idx] if labels_json is None else json.loads(labels_json)
    if labels_json is not None and class_idx in idx:
        idx = [class_idx] + [i for i in idx if i != class_idx]
    return [names[i] for i in idx if 0 <= i < len(names) and names[i] is not None]


class _Layers:
    """The label layers (human > accepted > pseudo) of one project under one run, each distinct stored value
    decoded once: the final label of a row, and the SQL conditions of the views built from the same decoding.

    A project holds few distinct stored values (a class list per label, a class index per prediction), so the
    views filter in SQL by membership in small JSON lists instead of building a final label per image.
    """

    def __init__(self, project: Project, run: dict | None):
        from .labels import pseudo_label_sets, stored_classes

        self.db = project.db
        self.classes = project.classes
        self.keep = set(self.classes)
        self.rid = int(run["id"]) if run is not None else -1
        self.run_classes = list(run["params"]["classes"]) if run is not None else []
        self.names = [c if c in self.keep else None for c in self.run_classes]
        self.multi = bool(run is not None and run["params"].get("multi_label"))
        rows = self.db.execute("select distinct classes from labels where classes is not null")
        # stored value → its current classes; None: it falls through (all its classes removed); []: "none of these"
        self.stored = {s: stored_classes(s, self.keep) for (s,) in rows}
        # a prediction's decoded class names depend only on the run's index → current name map: shared between
        # calls (under thresholds nearly every image has its own label set, so decoding them is the cost)
        names_key = (os.path.realpath(project.root / "labeler.db"), self.rid, tuple(self.names))
        with _GROUPS_LOCK:
            got = _DECODED.get(names_key[0])
            if got is None or got[0] != names_key:
                got = _DECODED[names_key[0]] = (names_key, {})
        self._pseudo: dict[tuple, list[str]] = got[1]
        # multi-label runs under the project's thresholds: image id → its label set (JSON), None: stored sets
        self.sets = pseudo_label_sets(project, run)
        self.tkey = tuple(sorted(project.thresholds().items())) if self.sets is not None else None

    def plabels(self, image_id: int, p_labels: str | None) -> str | None:
        """The prediction's label set (JSON) as the final labels read it: under the thresholds when they apply."""
        return p_labels if self.sets is None else self.sets.get(int(image_id), p_labels)

    def final(self, l_classes, l_source, p_idx, p_labels) -> tuple[list[str], str | None]:
        """(classes, source) of a row: the stored label if it keeps a current class (or is a person's "none of
        these", ``[]``), else the pseudo-label."""
        if l_classes is not None:
            kept = self.kept(l_classes)
            if kept is not None:
                return list(kept), l_source
        if p_idx is None:
            return [], None
        key = (p_idx, p_labels)
        if key not in self._pseudo:
            self._pseudo[key] = _pseudo_names(self.names, p_idx, p_labels)
        got = self._pseudo[key]
        return (list(got), "pseudo") if got else ([], None)

    def kept(self, l_classes: str | None) -> list[str] | None:
        """A stored value's current classes (:func:`labeler.labels.stored_classes`), decoded once."""
        from .labels import stored_classes

        if l_classes is None:
            return None
        if l_classes not in self.stored:  # written since the layers were read
            self.stored[l_classes] = stored_classes(l_classes, self.keep)
        return self.stored[l_classes]

    def decided(self) -> tuple[str, list]:
        """SQL: the row's stored label wins (its source, human or accepted, is the final one)."""
        return f"coalesce(l.classes in {_IN}, 0)", [_json(s for s, kept in self.stored.items() if kept is not None)]

    def pseudo_has(self, wanted: set[str]) -> tuple[str, list]:
        """SQL: the row's prediction gives at least one of ``wanted`` (current class names)."""
        if self.sets is not None:  # label sets under the thresholds: the images, by id
            hits = {}
            ids = [
                i for i, v in self.sets.items()
                if hits.setdefault(v, bool(wanted & {self.names[k] for k in json.loads(v) if 0 <= k < len(self.names)}))
            ]  # fmt: skip
            return f"coalesce(p.image_id in {_IN}, 0)", [_json(ids)]
        single = [i for i, n in enumerate(self.names) if n in wanted]
        multi: list[str] = []
        if self.multi:
            rows = self.db.execute(
                "select distinct labels from predictions where run_id = ? and labels is not null", [self.rid]
            )
            multi = [s for (s,) in rows if wanted & {self.names[i] for i in json.loads(s) if 0 <= i < len(self.names)}]
        sql = f"(coalesce(p.labels is null and p.class_idx in {_IN}, 0) or coalesce(p.labels in {_IN}, 0))"
        return sql, [_json(single), _json(multi)]

    def where(self, view: str | None, threshold: float, unsure: set[int], include_labeled: bool) -> tuple[str, list]:
        """SQL condition (on ``_FROM``'s rows) and its parameters for the images of ``view``.

        ``view`` None: images with a prediction (the queue's orderings). ``include_labeled`` False leaves out
        images whose final label a person set (``human``).
        """
        dec, dec_args = self.decided()
        if view is None:
            sql, args = "p.image_id is not null", []
        elif view == VIEW_ALL:
            sql, args = "1", []
        elif view == VIEW_REVIEW:
            sql = f"not {dec} and (coalesce(i.id in {_IN}, 0) or p.score is null or p.score < ?)"
            args = [*dec_args, _json(sorted(unsure)), float(threshold)]
        elif view == VIEW_UNLABELED:
            has, has_args = self.pseudo_has(self.keep)
            sql, args = f"not {dec} and not {has}", [*dec_args, *has_args]
        else:
            has, has_args = self.pseudo_has({view})
            sql = f"(coalesce(l.classes in {_IN}, 0) or (not {dec} and {has}))"
            args = [_json(s for s, kept in self.stored.items() if kept and view in kept), *dec_args, *has_args]
        if not include_labeled:
            sql = f"({sql}) and not ({dec} and coalesce(l.source = 'human', 0))"
            args = [*args, *dec_args]
        return sql, args


# --- the queue ------------------------------------------------------------------------------------------
@dataclass
class ReviewQueue:
    """What :func:`review_queue` returns: one page of the queue (``items``) and the size of the whole."""

    by: str
    run_id: int | None
    items: list[dict] = field(default_factory=list)
    total: int = 0  # images that were candidates (before offset and limit)
    features: str | None = None  # disagreement: the feature set the k-NN vote used
    note: str = ""  # e.g. "no DINO features: the k-NN vote used CLIP features"
    view: str | None = None
    threshold: float = 0.5
    offset: int = 0

    def to_dict(self) -> dict:
        return {
            "by": self.by,
            "run_id": self.run_id,
            "total": self.total,
            "features": self.features,
            "note": self.note,
            "view": self.view,
            "threshold": self.threshold,
            "offset": self.offset,
            "items": self.items,
        }


def _ok_predictions(project: Project, run: dict) -> tuple[np.ndarray, np.ndarray]:
    from .labels import read_predictions

    ids, probs, _ = read_predictions(project, run["id"])
    ok = {r[0] for r in project.db.execute("select id from images where status = 'ok'")}
    keep = np.array([int(i) in ok for i in ids], dtype=bool)
    return ids[keep], probs[keep]


def _check_queue_args(project: Project, by, limit, offset, threshold, view) -> None:
    if by not in ORDERINGS:
        raise InvalidInputError(f"'by' must be one of {', '.join(ORDERINGS)}, got {by!r}")
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or not 1 <= int(limit) <= 100_000:
        raise InvalidInputError(f"limit must be between 1 and 100000, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or int(offset) < 0:
        raise InvalidInputError(f"offset must be a whole number ≥ 0 (images to skip), got {offset!r}")
    if not isinstance(threshold, (int, float, np.number)) or not 0.0 <= float(threshold) <= 1.0:
        raise InvalidInputError(f"threshold must be a confidence between 0 and 1, got {threshold!r}")
    if view is not None and view not in VIEWS and view not in project.classes:
        raise InvalidInputError(f"{view!r} is not a class or a review view; pick one from the list")


def review_queue(
    project: Project,
    by: str = "margin",
    limit: int = 50,
    include_labeled: bool = False,
    features: str | None = None,
    neighbours: int = DEFAULT_NEIGHBOURS,
    run_id: int | None = None,
    *,
    view: str | None = None,
    threshold: float = 0.5,
    offset: int = 0,
) -> ReviewQueue:
    """The images most in need of a person's look, most first: one page of the queue and its size.

    The one queue of the Review step (a view, lowest confidence first, a page at a time), Explore and the CLI
    (an ordering over every image with a prediction). ``by="confidence"`` is read in SQL a page at a time; the
    other orderings score every candidate and then take the page.

    Parameters
    ----------
    by : str
        ``margin``, ``entropy``, ``confidence`` or ``disagreement`` (see the module docstring). Images without a
        prediction (only in a ``view``) come first, unscored.
    limit : int
        Items returned (1..100000).
    include_labeled : bool
        Keep images a person already labeled (``human``); left out by default.
    features : str, optional
        ``disagreement`` only: the feature set of the k-NN vote (default ``dino``, else ``clip``).
    neighbours : int
        ``disagreement`` only: k of the k-NN vote.
    run_id : int, optional
        The labeling run (default: the active run) whose predictions are scored and are the pseudo-labels.
    view : str, optional
        Which images: None (default) every ok image with a prediction; :data:`VIEW_REVIEW` those with no human
        or accepted label that are marked unsure, have no prediction or a top-1 confidence below
        ``threshold``; :data:`VIEW_ALL` every ok image; :data:`VIEW_UNLABELED` those without a final label; a
        class name those whose final label (human > accepted > pseudo) includes it. With a view and
        ``by="confidence"`` no run is needed.
    threshold : float
        :data:`VIEW_REVIEW`: the confidence (0..1) under which a pseudo-label needs review.
    offset : int
        Items of the ordering skipped before the page (past the end: no items; ``total`` still says how many).

    Returns
    -------
    ReviewQueue
        ``items``: ``{"image_id", "score", "label", "labels", "source", "pseudo", "confidence", "margin",
        "entropy", "unsure", "sha256", "path", "rel_path", "folder_label"}`` plus ``knn_label`` and ``knn_share``
        for ``disagreement``; ``score`` is what the queue is sorted by; ``confidence``/``margin``/``entropy`` are
        None without a prediction.
    """
    from .labels import active_run, get_label_run

    _check_queue_args(project, by, limit, offset, threshold, view)
    limit, offset = int(limit), int(offset)
    # a page of the confidence order is kept until the next commit (a selection change reads nothing again)
    db_key, version = _data_version(project)  # before the data: a commit meanwhile invalidates the page
    run = get_label_run(project, run_id) if run_id is not None else active_run(project)
    if run is None and (view is None or by != "confidence"):
        raise NotReadyError("there is no finished labeling run", hint=Hint("label"))
    page_key = (version, by, view, float(threshold), limit, offset, bool(include_labeled), run_id, FAST_PAGES)
    if by == "confidence":
        hit = _PAGES.get(db_key, {}).get(page_key)
        if hit is not None:
            return copy.deepcopy(hit)
    layers = _Layers(project, run)
    unsure = unsure_ids(project)
    where, args = layers.where(view, float(threshold), unsure, include_labeled)
    queue = ReviewQueue(
        by, layers.rid if run is not None else None, view=view, threshold=float(threshold), offset=offset
    )
    fast = None
    if by == "confidence" and FAST_PAGES and run is not None and include_labeled:
        fast = _fast_page(project, layers, db_key, version, view, float(threshold), unsure, limit, offset)
    if fast is not None:
        page, queue.total = fast
        extra = {}
    elif by == "confidence":
        # one scan for the page and the size of the whole (a page past the end counts apart)
        rows = project.db.execute(
            f"select i.id, p.score, count(*) over () {_FROM} and ({where}) "
            "order by coalesce(p.score, -1.0), i.id limit ? offset ?",
            [layers.rid, *args, limit, offset],
        ).fetchall()
        page = [(r[0], r[1]) for r in rows]
        if rows:
            queue.total = int(rows[0][2])
        else:
            count = project.db.execute(f"select count(*) {_FROM} and ({where})", [layers.rid, *args])
            queue.total = int(count.fetchone()[0])
        extra: dict[int, dict] = {}
    else:
        page, extra = _ranked(project, run, layers, queue, where, args, include_labeled, features, neighbours)
        page = page[offset : offset + limit]
    queue.items = _items(project, layers, unsure, page, extra)
    if by == "confidence":
        with _GROUPS_LOCK:
            pages = _PAGES.setdefault(db_key, {})
            for k in [k for k in pages if k[0] != version]:  # older versions: never asked for again
                del pages[k]
            pages[page_key] = copy.deepcopy(queue)
            while len(pages) > PAGES:
                del pages[next(iter(pages))]
    return queue


def _ranked(project, run, layers, queue, where, args, include_labeled, features, neighbours):
    """The whole ordering for margin, entropy or disagreement: ([(image id, score)], {image id: extras})."""
    ids, probs = _ok_predictions(project, run)
    if len(ids) == 0:
        return [], {}
    extra_cols: dict[str, np.ndarray] = {}
    if queue.by == "disagreement":
        from .labels import final_labels

        final = {it.image_id: it for it in final_labels(project, run_id=run["id"])}
        scores, extra_cols, queue.features, queue.note = _disagreement(
            project, ids, probs, run["params"]["classes"], final, features, neighbours
        )
        order = np.lexsort((np.arange(len(scores)), margin_scores(probs), -scores))
    else:
        order, scores = order_by(probs, queue.by)
    first: list[int] = []
    if queue.view is not None or not include_labeled:
        wanted = {r[0] for r in project.db.execute(f"select i.id {_FROM} and ({where})", [layers.rid, *args])}
        order = order[np.fromiter((int(i) in wanted for i in ids[order]), dtype=bool, count=len(order))]
        first = sorted(wanted - set(ids.tolist()))  # in the view without a prediction: unscored, first
    queue.total = len(first) + len(order)
    page = [(i, None) for i in first] + [(int(ids[o]), float(scores[o])) for o in order.tolist()]
    extra = {int(ids[o]): {k: v[o] for k, v in extra_cols.items()} for o in order.tolist()} if extra_cols else {}
    for i in first if extra_cols else ():
        extra[i] = dict.fromkeys(extra_cols)
    return page, extra


def _items(project: Project, layers: _Layers, unsure: set[int], page: list[tuple], extra: dict) -> list[dict]:
    """The queue's items for a page of ``(image id, score)``: one query for the page's rows only."""
    from store import in_chunks

    rows: dict[int, tuple] = {}
    for chunk, marks in in_chunks([i for i, _ in page]):
        rows.update(
            (r[0], r)
            for r in project.db.execute(
                "select i.id, i.sha256, i.path, i.rel_path, i.folder_label, l.classes, l.source, p.class_idx, "
                "p.labels, p.probs from images i left join labels l on l.image_id = i.id left join predictions p "
                f"on p.image_id = i.id and p.run_id = ? where i.id in ({marks})",
                [layers.rid, *chunk],
            )
        )
    n_classes = len(layers.run_classes)
    with_probs = [i for i, _ in page if i in rows and rows[i][9] is not None]
    stats: dict[int, tuple[float, float, float]] = {}
    if with_probs:
        probs = np.stack([_probs_row(rows[i][9], n_classes, i) for i in with_probs])
        conf, marg, ent = confidence_scores(probs), margin_scores(probs), entropy_scores(probs)
        stats = {i: (conf[k], marg[k], ent[k]) for k, i in enumerate(with_probs)}
    out = []
    for image_id, score in page:
        r = rows.get(image_id)
        if r is None:  # removed meanwhile
            continue
        _, sha, path, rel_path, folder, l_classes, l_source, p_idx, p_labels, _ = r
        classes, source = layers.final(l_classes, l_source, p_idx, layers.plabels(image_id, p_labels))
        conf, marg, ent = (None if v is None else round(float(v), 6) for v in stats.get(image_id, (None,) * 3))
        item = {
            "image_id": image_id,
            "score": None if score is None else round(float(score), 6),
            "label": classes[0] if classes else None,
            "labels": classes,
            "source": source,
            "pseudo": layers.run_classes[p_idx] if p_idx is not None and 0 <= p_idx < n_classes else None,
            "confidence": conf,
            "margin": marg,
            "entropy": ent,
            "unsure": image_id in unsure,
            "sha256": sha,
            "path": path,
            "rel_path": rel_path,
            "folder_label": folder,
        }
        item.update(extra.get(image_id, {}))
        out.append(item)
    return out


def _probs_row(blob: bytes, n_classes: int, image_id: int) -> np.ndarray:
    vec = np.frombuffer(blob or b"", dtype="<f4")
    if vec.size != n_classes:
        raise InvalidInputError(
            f"the stored probabilities of image {image_id} have {vec.size} values, not {n_classes}; rerun the labeling"
        )
    return vec.astype(np.float64)


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


# --- what the Review step shows beside its gallery ------------------------------------------------------
@dataclass
class ReviewCounts:
    """What :func:`review_counts` returns."""

    total: int = 0  # ok images
    needs_review: int = 0  # images in the VIEW_REVIEW view at the threshold
    unlabeled: int = 0  # images without a final label
    classes: list[dict] = field(default_factory=list)  # {"class", "images", "reviewed", "low confidence"} per class
    histogram: list[dict] = field(default_factory=list)  # {"bin", "low", "images"}; empty without predictions

    def view_size(self, view: str) -> int:
        """Images in a review view or class (0 for an unknown one)."""
        if view == VIEW_ALL:
            return self.total
        if view == VIEW_REVIEW:
            return self.needs_review
        if view == VIEW_UNLABELED:
            return self.unlabeled
        return next((r["images"] for r in self.classes if r["class"] == view), 0)


def _check_counts_args(threshold, bins) -> tuple[float, int]:
    """``(threshold, bins)`` of the counts checked: a confidence in [0, 1] and 1–1000 histogram bins."""
    if not isinstance(threshold, (int, float, np.number)) or not 0.0 <= float(threshold) <= 1.0:
        raise InvalidInputError(f"threshold must be a confidence between 0 and 1, got {threshold!r}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 1 <= int(bins) <= 1000:
        raise InvalidInputError(f"bins must be between 1 and 1000, got {bins!r}")
    return float(threshold), int(bins)


def review_counts(
    project: Project, threshold: float = 0.5, bins: int = HIST_BINS, run_id: int | None = None
) -> ReviewCounts:
    """Counts per class and per view and the confidence histogram of the ok images (from :func:`label_groups`).

    Parameters
    ----------
    threshold : float
        Confidence (0..1) under which a pseudo-label is "low confidence" and needs review.
    bins : int
        Histogram bins over [0, 1] (as ``numpy.histogram(conf, bins, range=(0, 1))``).
    run_id : int, optional
        The labeling run (default: the active run; none: no pseudo-labels, an empty histogram).

    Returns
    -------
    ReviewCounts
        ``classes``: per project class, its final-label count (an image counts once per class it has), how many
        of those a person decided (human or accepted), and its pseudo-labels under ``threshold``;
        ``histogram``: the run's top-1 confidences of the ok images.
    """
    from .labels import active_run, get_label_run

    threshold, bins = _check_counts_args(threshold, bins)
    run = get_label_run(project, run_id) if run_id is not None else active_run(project)
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    out = ReviewCounts(classes=[{"class": c, "images": 0, "reviewed": 0, "low confidence": 0} for c in project.classes])
    rows = {r["class"]: r for r in out.classes}
    hist = np.zeros(int(bins), dtype=np.int64)
    for g in label_groups(project, threshold, bins, run["id"] if run is not None else None):
        n = g.images
        decided = g.source in DECIDED
        out.total += n
        out.unlabeled += n if not g.classes and g.source is None else 0
        out.needs_review += n if not decided and (g.unsure or g.no_prediction or g.low) else 0
        for c in g.classes:
            rows[c]["images"] += n
            rows[c]["reviewed"] += n if decided else 0
            rows[c]["low confidence"] += n if not decided and g.low else 0
        if g.bin is not None:
            hist[g.bin] += n
    rid = int(run["id"]) if run is not None else -1
    any_prediction = (
        run is not None and project.db.execute("select 1 from predictions where run_id = ? limit 1", [rid]).fetchone()
    )
    if any_prediction:
        out.histogram = [
            {"bin": f"{edges[k]:.1f}–{edges[k + 1]:.1f}", "low": float(edges[k]), "images": int(hist[k])}
            for k in range(int(bins))
        ]
    return out


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


class LabelGroup(NamedTuple):
    """Images that share a folder, a final label and a place in the review counts (see :func:`label_groups`)."""

    folder_label: str | None
    classes: tuple[str, ...]  # the final label (human > accepted > pseudo); () unlabeled
    source: str | None  # human | accepted | pseudo | None
    no_prediction: bool  # the run has no prediction for these images
    low: bool  # their top-1 confidence is under the threshold
    unsure: bool  # marked unsure (and not decided since)
    bin: int | None  # their confidence's histogram bin (None: no prediction, or outside [0, 1])
    images: int


#: What :func:`label_groups` keeps between calls (per project folder): see its notes.
_GROUPS_LOCK = threading.Lock()
_WATCH: OrderedDict[str, sqlite3.Connection] = OrderedDict()  # a read-only connection per project, newest last
#: Projects watched at once (the least recently used one's connection is closed).
WATCHED = 8
_LAST: dict[str, tuple] = {}  # (data_version, args) → the groups of the last call
_BASE: dict[str, dict] = {}  # (fingerprint, run, threshold, bins) → label-free counts, the newest BASES
_PAGES: dict[str, dict] = {}  # (data_version, queue arguments) → a page of the confidence order
#: Pages kept per project (the pages of the current data version only).
PAGES = 64
#: Label-free counts kept per project (one per threshold the slider was at, newest last).
BASES = 4


def _data_version(project: Project) -> tuple[str, int]:
    """``PRAGMA data_version`` of this module's own connection to the project: it changes whenever any other
    connection, in any process, commits (this connection never writes, so every write is another's)."""
    key = os.path.realpath(project.root / "labeler.db")
    with _GROUPS_LOCK:
        conn = _WATCH.get(key)
        if conn is None:
            conn = _WATCH[key] = sqlite3.connect(key, check_same_thread=False, timeout=30.0)
            while len(_WATCH) > WATCHED:
                old, dropped = _WATCH.popitem(last=False)
                dropped.close()
                _LAST.pop(old, None)
                _BASE.pop(old, None)
                _PAGES.pop(old, None)
                _ORDER.pop(old, None)
                _FP.pop(old, None)
                _TCOUNTS.pop(old, None)
                _SCORES.pop(old, None)
                _DECODED.pop(old, None)
        _WATCH.move_to_end(key)
        return key, int(conn.execute("PRAGMA data_version").fetchone()[0])


def _fingerprint(project: Project, rid: int) -> str:
    """What the label-free counts depend on: the ok images with their folders, and the run's predictions."""
    n, ids = project.db.execute(
        "select count(*), group_concat(id || ':' || coalesce(folder_label, ''), ',') "
        "from (select id, folder_label from images where status = 'ok' order by id)"
    ).fetchone()
    preds = project.db.execute("select count(*), max(rowid) from predictions where run_id = ?", [rid]).fetchone()
    return hashlib.blake2b(f"{n}|{ids}|{preds}".encode(), digest_size=16).hexdigest()


#: Pages of the confidence order from the cached review order (:func:`_fast_page`); False: always in SQL.
FAST_PAGES = True
_ORDER: dict[str, tuple] = {}  # (fingerprint, run, classes) → the review order of the ok images
_FP: dict[str, tuple] = {}  # data_version → its fingerprint


def _fingerprint_at(project: Project, db_key: str, version: int, rid: int) -> str:
    """:func:`_fingerprint`, computed once per commit (data_version) and run."""
    got = _FP.get(db_key)
    if got is not None and got[0] == (version, rid):
        return got[1]
    fp = _fingerprint(project, rid)
    with _GROUPS_LOCK:
        _FP[db_key] = ((version, rid), fp)
    return fp


def _review_order(project: Project, layers: _Layers, db_key: str, version: int) -> dict:
    """The ok images in review order (``coalesce(score, -1), id``) with what the views test of each, kept while
    the fingerprint (ok images, the run's predictions) and the class lists are the same."""
    fp = _fingerprint_at(project, db_key, version, layers.rid)
    key = (fp, layers.rid, tuple(layers.run_classes), layers.multi, tuple(layers.classes), layers.tkey)
    got = _ORDER.get(db_key)
    if got is not None and got[0] == key:
        return got[1]
    rows = project.db.execute(
        "select i.id, p.score, p.class_idx, p.labels from images i left join predictions p "
        "on p.image_id = i.id and p.run_id = ? where i.status = 'ok'",
        [layers.rid],
    ).fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    null = np.fromiter((r[1] is None for r in rows), dtype=bool, count=len(rows))
    score = np.fromiter((-1.0 if r[1] is None else r[1] for r in rows), dtype=np.float64, count=len(rows))
    values: dict[tuple, int] = {}
    value = np.fromiter(
        (values.setdefault((r[2], layers.plabels(r[0], r[3])), len(values)) for r in rows),
        dtype=np.int64,
        count=len(rows),
    )
    names: list[set[str]] = [set()] * len(values)  # the current class names each prediction value gives
    for (p_idx, p_labels), k in values.items():
        if p_idx is None:
            got_names: set[str] = set()
        elif p_labels is None:
            got_names = {layers.names[p_idx]} if 0 <= p_idx < len(layers.names) and layers.names[p_idx] else set()
        elif layers.multi:
            got_names = {layers.names[i] for i in json.loads(p_labels) if 0 <= i < len(layers.names)} - {None}
        else:
            got_names = set()
        names[k] = got_names
    order = np.lexsort((ids, score))
    by_id = np.argsort(ids[order], kind="stable")
    out = {
        "ids": ids[order],  # review order
        "null": null[order],
        "score": score[order],
        "value": value[order],
        "names": names,
        "sorted_ids": ids[order][by_id],  # ascending ids …
        "rank": by_id,  # … and each one's place in the review order
    }
    with _GROUPS_LOCK:
        _ORDER[db_key] = (key, out)
    return out


def _fast_page(project, layers, db_key, version, view, threshold, unsure, limit, offset):
    """A page of the confidence order of a view, from :func:`_review_order` and the live labels: the same
    ``([(image id, score)], total)`` as the SQL query, or None for what it does not cover."""
    if view is None or (view not in VIEWS and view not in layers.keep):
        return None
    base = _review_order(project, layers, db_key, version)
    n = len(base["ids"])

    def ranks(image_ids) -> np.ndarray:
        a = np.asarray(sorted(image_ids), dtype=np.int64)
        pos = np.searchsorted(base["sorted_ids"], a)
        ok = (pos < n) & (base["sorted_ids"][np.minimum(pos, n - 1)] == a) if n else np.zeros(len(a), bool)
        return base["rank"][pos[ok]]

    decided: list[int] = []
    stored_has: list[int] = []
    for image_id, l_classes in project.db.execute("select image_id, classes from labels where classes is not null"):
        kept = layers.kept(l_classes)
        if kept is not None:
            decided.append(image_id)
            if view in kept:
                stored_has.append(image_id)
    open_ = np.ones(n, dtype=bool)  # no decided label: the prediction speaks
    open_[ranks(decided)] = False

    def pseudo(wanted: set[str]) -> np.ndarray:
        hit = np.fromiter((bool(w & wanted) for w in base["names"]), dtype=bool, count=len(base["names"]))
        return hit[base["value"]] if n else np.zeros(0, bool)

    if view == VIEW_ALL:
        sel = np.ones(n, dtype=bool)
    elif view == VIEW_REVIEW:
        marked = np.zeros(n, dtype=bool)
        marked[ranks(unsure)] = True
        sel = open_ & (marked | base["null"] | (base["score"] < threshold))
    elif view == VIEW_UNLABELED:
        sel = open_ & ~pseudo(layers.keep)
    else:
        sel = open_ & pseudo({view})
        sel[ranks(stored_has)] = True
    chosen = np.flatnonzero(sel)
    page = chosen[offset : offset + limit]
    items = [
        (int(i), None if null else float(sc))
        for i, null, sc in zip(base["ids"][page], base["null"][page], base["score"][page], strict=True)
    ]
    return items, int(len(chosen))


def label_groups(
    project: Project, threshold: float = 0.5, bins: int = HIST_BINS, run_id: int | None = None
) -> list[LabelGroup]:
    """The ok images counted by folder, final label, source and confidence, for every count the app shows
    (:func:`review_counts`, :func:`explore_counts`, :func:`labeler.evaluate.evaluate`).

    The same precedence as :func:`labeler.labels.final_labels` (human > accepted > pseudo from the run, removed
    classes dropped), decided once per distinct stored value, never per image. Costs, at most, one grouped
    query over the images; then only what changed:

    * nothing committed since the last call (SQLite's ``data_version``, which every commit of any connection or
      process changes): the last result again, no query;
    * labels changed (an accept, a relabel, an undo): the label-free counts of images × predictions are kept
      while the ok images, their folders and the run's predictions are the same (a fingerprint query), and only
      the images with a stored label or an unsure mark are read and moved to their final group.

    Parameters
    ----------
    threshold : float
        Confidence (0..1) under which a prediction is ``low``.
    bins : int
        Histogram bins over [0, 1] (``numpy.histogram(conf, bins, range=(0, 1))``).
    run_id : int, optional
        The labeling run (default: the active run; none: no pseudo-labels).

    Returns
    -------
    list of LabelGroup
        One per distinct (folder, classes, source, no_prediction, low, unsure, bin), with its image count.
    """
    from .labels import active_run, get_label_run

    threshold, bins = _check_counts_args(threshold, bins)
    db_key, version = _data_version(project)  # read before the data: a commit meanwhile invalidates the result
    run = get_label_run(project, run_id) if run_id is not None else active_run(project)
    layers = _Layers(project, run)
    args = (layers.rid, tuple(layers.run_classes), layers.multi, tuple(layers.classes), threshold, bins, layers.tkey)
    last = _LAST.get(db_key)
    if last is not None and last[0] == (version, args):
        return list(last[1])
    edges = np.linspace(0.0, 1.0, bins + 1)
    # numpy's bins: edges[k] <= x < edges[k + 1], the last one closed; outside [0, 1] not counted
    case = " ".join(f"when p.score < ? then {k}" for k in range(bins - 1))
    cols = (
        "i.folder_label, p.class_idx, p.labels, p.score is null, coalesce(p.score < ?, 0), "
        f"case when p.score is null or p.score < 0 or p.score > 1 then null {case} else {bins - 1} end"
    )
    col_args = [threshold, *edges[1:-1].tolist()]
    fingerprint = _fingerprint_at(project, db_key, version, layers.rid)
    base_key = (fingerprint, layers.rid, threshold, bins, layers.tkey)
    # label sets under the thresholds differ image by image: those groups are counted here, not in SQL
    per_image = layers.sets is not None
    cached = _BASE.get(db_key, {}).get(base_key)
    if cached is not None:
        base = dict(cached)
    elif per_image:
        base = {}
        for r in project.db.execute(f"select i.id, {cols} {_FROM}", [*col_args, layers.rid]):
            k = (r[1], r[2], layers.plabels(r[0], r[3]), *r[4:7])
            base[k] = base.get(k, 0) + 1
    else:
        sql = f"select {cols}, count(*) {_FROM} group by 1, 2, 3, 4, 5, 6"
        base = {tuple(r[:6]): r[6] for r in project.db.execute(sql, [*col_args, layers.rid])}
        with _GROUPS_LOCK:
            kept = {k: v for k, v in _BASE.get(db_key, {}).items() if k[0] == fingerprint}  # others are stale
            kept[base_key] = dict(base)
            _BASE[db_key] = dict(list(kept.items())[-BASES:])
    # the images a person decided or marked: out of their label-free group, into their final one
    unsure = sorted(unsure_ids(project))
    sql = (
        f"select {cols}, l.classes, l.source, coalesce(i.id in {_IN}, 0), count(*) {_FROM} and "
        f"(l.image_id is not null or i.id in {_IN}) group by 1, 2, 3, 4, 5, 6, 7, 8, 9"
    )
    marked = _json(unsure)
    if per_image:
        sql = (
            f"select {cols}, l.classes, l.source, coalesce(i.id in {_IN}, 0), 1, i.id {_FROM} and "
            f"(l.image_id is not null or i.id in {_IN})"
        )
        overlay = [
            (*r[:2], layers.plabels(r[10], r[2]), *r[3:10])
            for r in project.db.execute(sql, [*col_args, marked, layers.rid, marked])
        ]
    else:
        overlay = project.db.execute(sql, [*col_args, marked, layers.rid, marked]).fetchall()
    out: dict[tuple, int] = {}

    def add(folder, classes, source, no_pred, low, mark, b, n):
        key = (folder, tuple(classes), source, bool(no_pred), bool(low), bool(mark), b)
        out[key] = out.get(key, 0) + n

    for row in overlay:
        k, n = tuple(row[:6]), row[9]
        base[k] = base.get(k, 0) - n
        classes, source = layers.final(row[6], row[7], row[1], row[2])
        add(row[0], classes, source, row[3], row[4], row[8] and source not in DECIDED, row[5], n)
    for (folder, p_idx, p_labels, no_pred, low, b), n in base.items():
        if n > 0:
            classes, source = layers.final(None, None, p_idx, p_labels)
            add(folder, classes, source, no_pred, low, False, b, n)
    groups = [LabelGroup(*key, n) for key, n in out.items()]
    with _GROUPS_LOCK:
        _LAST[db_key] = ((version, args), tuple(groups))
    return groups


def explore_counts(project: Project) -> dict:
    """What the Explore step shows above its views: ``{"total", "reviewed", "human", "excluded", "classes"}``;
    ``classes``: ``[{"class", "images", "reviewed"}]`` per project class (final labels; reviewed = decided by a
    person, human or accepted). From :func:`label_groups`: no pass over the images."""
    rows = {c: {"class": c, "images": 0, "reviewed": 0} for c in project.classes}
    total = reviewed = human = 0
    for g in label_groups(project):
        total += g.images
        decided = g.source in DECIDED
        reviewed += g.images if decided else 0
        human += g.images if g.source == "human" else 0
        for c in g.classes:
            if c in rows:
                rows[c]["images"] += g.images
                rows[c]["reviewed"] += g.images if decided else 0
    excluded = project.db.execute("select count(*) from images where status = 'excluded'").fetchone()[0]
    return {
        "total": total,
        "reviewed": reviewed,
        "human": human,
        "excluded": int(excluded),
        "classes": list(rows.values()),
    }


def label_counts(project: Project) -> dict:
    """How the ok images are labeled.

    Returns ``{"human": n, "accepted": n, "pseudo": n, "unlabeled": n, "total": n,
    "per_class": {class: n}}``, where ``per_class`` counts final labels of each
    project class (an image counts once for each of its classes in multi-label projects).
    """
    counts = {"human": 0, "accepted": 0, "pseudo": 0, "unlabeled": 0, "total": 0}
    per_class = dict.fromkeys(project.classes, 0)
    for group in label_groups(project):  # one grouped query (then cached per commit), not a pass per image
        counts["total"] += group.images
        counts[group.source or "unlabeled"] += group.images
        for c in group.classes:
            per_class[c] += group.images
    return {**counts, "per_class": per_class}


# --- multi-label review ---------------------------------------------------------------------------------
#: The threshold a class without a saved one is shown at (sliders) and measured against (the near-threshold queue).
DEFAULT_THRESHOLD = 0.5
#: The multi-label view of images with a class score near its threshold (:func:`near_threshold_queue`).
VIEW_NEAR = "near a threshold"
#: How close (in score) to a threshold an image joins :data:`VIEW_NEAR`, by default.
DEFAULT_MARGIN = 0.1
_TCOUNTS: dict[str, tuple] = {}  # (data_version, run, classes) → the matrices threshold_counts reads
_SCORES: dict[str, tuple] = {}  # (fingerprint, run) → the ok images' ids and scores under the run


def _run_scores(project: Project, run: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (N,), probs (N, C))`` of the ok images with a prediction of ``run``, kept while the fingerprint
    (ok images, the run's predictions) holds: a label edit reads no scores again."""
    db_key, version = _data_version(project)
    key = (_fingerprint_at(project, db_key, version, int(run["id"])), int(run["id"]))
    got = _SCORES.get(db_key)
    if got is not None and got[0] == key:
        return got[1]
    out = _ok_predictions(project, run)
    with _GROUPS_LOCK:
        _SCORES[db_key] = (key, out)
    return out


def class_thresholds(project: Project) -> dict[str, float]:
    """Every project class's threshold: the saved one (:meth:`labeler.project.Project.thresholds`), else
    :data:`DEFAULT_THRESHOLD`."""
    saved = project.thresholds()
    return {c: float(saved.get(c, DEFAULT_THRESHOLD)) for c in project.classes}


def set_thresholds(project: Project, values, *, replace: bool = False) -> dict[str, float]:
    """Save per-class thresholds (class → value in [0, 1]) as one undoable change; returns all saved.

    Multi-label pseudo-labels follow them at once (:func:`labeler.labels.pseudo_label_sets`);
    :func:`labeler.history.undo` puts the earlier thresholds back.
    """
    from .history import record

    if not project.multi_label:
        raise InvalidInputError("thresholds decide multi-label pseudo-labels; this project is single-label")
    before = {"ids": [], "meta": {"thresholds": project.get_meta("thresholds")}}
    old = project.thresholds()
    saved = project.set_thresholds(values, replace=replace)
    changed = {c: v for c, v in saved.items() if old.get(c) != v}
    if changed or set(old) - set(saved):
        shown = ", ".join(f"{c} {v:.2f}" for c, v in list(changed.items())[:4]) + (", ..." if len(changed) > 4 else "")
        record(project, f"set threshold{'s' if len(changed) != 1 else ''} {shown or '(cleared)'}", before)
    return saved


def _threshold_matrices(project: Project, run: dict | None) -> dict:
    """What :func:`threshold_counts` reads, once per commit: the open images' scores per class, sorted, and
    how many decided images carry each class."""
    db_key, version = _data_version(project)
    key = (version, None if run is None else int(run["id"]), tuple(project.classes))
    got = _TCOUNTS.get(db_key)
    if got is not None and got[0] == key:
        return got[1]
    classes = project.classes
    layers = _Layers(project, run)
    decided = dict.fromkeys(classes, 0)
    closed: set[int] = set()
    for image_id, l_classes in project.db.execute(
        "select l.image_id, l.classes from labels l join images i on i.id = l.image_id where i.status = 'ok'"
    ):
        kept = layers.kept(l_classes)
        if kept is not None:
            closed.add(int(image_id))
            for c in kept:
                decided[c] += 1
    columns: dict[str, np.ndarray] = {}
    if run is not None:
        ids, probs = _run_scores(project, run)
        open_ = np.fromiter((int(i) not in closed for i in ids), dtype=bool, count=len(ids))
        for k, name in enumerate(run["params"]["classes"]):
            if name in decided:
                columns[name] = np.sort(probs[open_, k].astype(np.float64))
    out = {"decided": decided, "columns": columns}
    with _GROUPS_LOCK:
        _TCOUNTS[db_key] = (key, out)
    return out


def threshold_counts(project: Project, thresholds=None, run_id: int | None = None) -> dict[str, dict]:
    """How many ok images would carry each class at candidate thresholds (for sliders; nothing is saved).

    Parameters
    ----------
    thresholds : mapping class → float in [0, 1], optional
        Candidate thresholds; classes left out use :func:`class_thresholds`.
    run_id : int, optional
        The labeling run (default: the active run).

    Returns
    -------
    dict
        class → ``{"threshold", "images", "pseudo", "decided"}``: ``images`` = ``decided`` (images whose stored
        label, human or accepted, has the class) + ``pseudo`` (images without one whose score is ≥ the
        threshold). At the saved thresholds ``images`` is the class's count in :func:`review_counts`. One binary
        search per class over scores sorted once per commit: cheap at any size.
    """
    from .labels import active_run, get_label_run

    run = get_label_run(project, run_id) if run_id is not None else active_run(project)
    want = class_thresholds(project)
    for name, value in dict(thresholds or {}).items():
        if name not in want:
            raise InvalidInputError(f"threshold for unknown class {name!r}; the classes are {sorted(want)}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= float(value) <= 1:
            raise InvalidInputError(f"threshold of {name!r} must be a number in [0, 1], got {value!r}")
        want[name] = float(value)
    mats = _threshold_matrices(project, run)
    out = {}
    for name, t in want.items():
        col = mats["columns"].get(name)
        pseudo = 0 if col is None else int(len(col) - np.searchsorted(col, t, side="left"))
        out[name] = {
            "threshold": t,
            "images": mats["decided"][name] + pseudo,
            "pseudo": pseudo,
            "decided": mats["decided"][name],
        }
    return out


def near_scores(probs: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's smallest distance of a class score to that class's threshold: (N, C), (C,) → ((N,), (N,) int).

    Returns the distances and the class index where each is reached (NaN thresholds are skipped; a row with no
    threshold at all gets distance inf and class -1).
    """
    p = _probs(probs)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.shape != (p.shape[1],):
        raise InvalidInputError(f"thresholds must be ({p.shape[1]},) for {p.shape[1]} classes, got {t.shape}")
    d = np.abs(p - np.where(np.isnan(t), np.inf, t))
    if d.size == 0:
        return np.zeros(len(p)), np.full(len(p), -1)
    k = d.argmin(axis=1)
    dist = d[np.arange(len(p)), k]
    return dist, np.where(np.isfinite(dist), k, -1)


def near_threshold_queue(
    project: Project,
    margin: float = DEFAULT_MARGIN,
    limit: int = 50,
    offset: int = 0,
    include_labeled: bool = False,
    run_id: int | None = None,
) -> ReviewQueue:
    """Multi-label "needs review": images with a class score within ``margin`` of that class's threshold,
    closest first (ties by id).

    Thresholds are :func:`class_thresholds` (saved, else :data:`DEFAULT_THRESHOLD`). Images with a human or
    accepted label are left out unless ``include_labeled``.

    Returns
    -------
    ReviewQueue
        ``view`` = :data:`VIEW_NEAR`, ``threshold`` = ``margin``; items as :func:`review_queue`'s plus ``near``
        (the class closest to its threshold) and ``distance`` (``score`` too).
    """
    from .labels import active_run, get_label_run

    if not isinstance(margin, (int, float, np.number)) or isinstance(margin, bool) or not 0 <= float(margin) <= 1:
        raise InvalidInputError(f"margin must be a score distance between 0 and 1, got {margin!r}")
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or not 1 <= int(limit) <= 100_000:
        raise InvalidInputError(f"limit must be between 1 and 100000, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or int(offset) < 0:
        raise InvalidInputError(f"offset must be a whole number ≥ 0 (images to skip), got {offset!r}")
    run = get_label_run(project, run_id) if run_id is not None else active_run(project)
    if run is None:
        raise NotReadyError("there is no finished labeling run", hint=Hint("label"))
    layers = _Layers(project, run)
    queue = ReviewQueue("near", layers.rid, view=VIEW_NEAR, threshold=float(margin), offset=int(offset))
    ids, probs = _run_scores(project, run)
    if not include_labeled and len(ids):
        closed = {int(r[0]) for r in project.db.execute("select image_id from labels where classes is not null")}
        keep = np.fromiter((int(i) not in closed for i in ids), dtype=bool, count=len(ids))
        ids, probs = ids[keep], probs[keep]
    saved = class_thresholds(project)
    t = np.array([saved.get(n, np.nan) if n is not None else np.nan for n in layers.names], dtype=np.float64)
    dist, cls = near_scores(probs, t) if len(ids) else (np.zeros(0), np.zeros(0, dtype=np.int64))
    inside = np.flatnonzero(dist <= float(margin) + 1e-12)
    order = inside[np.lexsort((ids[inside], dist[inside]))]
    queue.total = int(len(order))
    page = order[int(offset) : int(offset) + int(limit)]
    items = [(int(ids[o]), float(dist[o])) for o in page]
    extra = {int(ids[o]): {"near": layers.run_classes[int(cls[o])], "distance": round(float(dist[o]), 6)} for o in page}
    queue.items = _items(project, layers, unsure_ids(project), items, extra)
    return queue


def class_scores(project: Project, image_ids, run_id: int | None = None) -> dict[int, dict[str, float]]:
    """image id → {project class: the run's score} for these images (empty dict: no prediction)."""
    from store import in_chunks

    from .labels import active_run, get_label_run

    run = get_label_run(project, run_id) if run_id is not None else active_run(project)
    ids = list(dict.fromkeys(int(i) for i in image_ids or []))
    out: dict[int, dict[str, float]] = {i: {} for i in ids}
    if run is None or not ids:
        return out
    names = list(run["params"]["classes"])
    keep = set(project.classes)
    for chunk, marks in in_chunks(ids):
        for image_id, blob in project.db.execute(
            f"select image_id, probs from predictions where run_id = ? and image_id in ({marks})", [run["id"], *chunk]
        ):
            vec = _probs_row(blob, len(names), image_id)
            out[int(image_id)] = {n: float(v) for n, v in zip(names, vec, strict=True) if n in keep}
    return out


def edit_label(project: Project, image_ids: int | Iterable[int], cls: str, mode: str) -> dict:
    """Add a class to, or remove it from, each image's current label set (multi-label), as one undoable action.

    Each image's human label becomes its current final label (human > accepted > pseudo) with ``cls`` added
    (``mode="add"``: every selected image, so one that had it as a pseudo-label now has it by a person) or removed
    (``mode="remove"``: images without it are left as they are). Removing an image's only class leaves it a
    person's "none of these" (an empty human label set: a negative for every class).

    Returns
    -------
    dict
        ``{"class", "mode", "selected", "changed", "image_ids"}`` (``image_ids``: the images changed).
    """
    from .history import counted, group
    from .labels import canonical_classes, final_labels, set_human_labels

    if mode not in ("add", "remove"):
        raise InvalidInputError(f"mode must be 'add' or 'remove', got {mode!r}")
    if not project.multi_label:
        raise InvalidInputError(
            f"adding or removing one class is for multi-label projects; {project.name!r} is single-label: "
            "relabel the images instead"
        )
    (name,) = canonical_classes(project, cls)
    ids = _ids(image_ids)
    current = {it.image_id: list(it.classes) for it in final_labels(project, ids)}
    missing = [i for i in ids if i not in current]
    if missing:
        raise InvalidInputError(f"{counted(len(missing), 'image')} are excluded or missing, e.g. id {missing[0]}")
    sets: dict[tuple[str, ...], list[int]] = {}
    for i in ids:
        have = current[i]
        if mode == "add":  # every selected image: one that had the class as a pseudo-label now has it by a person
            new = have if name in have else [*have, name]
        else:
            if name not in have:
                continue
            new = [c for c in have if c != name]  # may be empty: "none of these"
        sets.setdefault(tuple(new), []).append(i)
    changed = [i for members in sets.values() for i in members]
    verb = f"add {name} to" if mode == "add" else f"remove {name} from"
    with group(project, f"{verb} {counted(len(changed), 'image')}"):
        for new, members in sets.items():
            set_human_labels(project, members, list(new))
    return {"class": name, "mode": mode, "selected": len(ids), "changed": len(changed), "image_ids": changed}


def toggle_label(project: Project, image_id: int, cls: str) -> dict:
    """Flip one class of one image (multi-label): its human label becomes its current final set with ``cls``
    added or removed. Undoable. Returns :func:`edit_label`'s dict."""
    from .labels import canonical_classes, final_labels

    (name,) = canonical_classes(project, cls)
    got = final_labels(project, [int(image_id)])
    if not got:
        raise InvalidInputError(f"image {image_id} is excluded or missing")
    return edit_label(project, [int(image_id)], name, "remove" if name in got[0].classes else "add")


def set_image_labels(project: Project, image_id: int, classes: Sequence[str]) -> dict:
    """Give one image exactly ``classes`` (multi-label toggles: the checked boxes) as a human label; nothing is
    written when they equal its current final set (an empty set: when a
    person already said "none"). No class (multi-label projects only) stores
    "none of these". Returns ``{"changed", "added", "removed"}``."""
    from .labels import canonical_classes, final_labels, set_human_labels

    got = final_labels(project, [int(image_id)])
    if not got:
        raise InvalidInputError(f"image {image_id} is excluded or missing")
    have = list(got[0].classes)
    want = canonical_classes(project, list(classes), allow_none=True)
    added = [c for c in want if c not in have]
    removed = [c for c in have if c not in want]
    if not added and not removed and (want or got[0].source == "human"):
        return {"changed": 0, "added": [], "removed": []}
    ordered = [c for c in have if c in want] + added  # the primary class stays first
    set_human_labels(project, [int(image_id)], ordered)
    return {"changed": 1, "added": added, "removed": removed}
