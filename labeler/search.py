"""Search a project's images: by image (nearest neighbours), by text (CLIP), and for near-duplicates.

All three go through the feature set's :class:`labeler.index.FeatureIndex`, so they see only ok
images (excluded and missing ones never come back). Results are lists of dicts the CLI prints and
the UI shows as a gallery: ``{"image_id", "score", "sha256", "path", "rel_path", "label", "source"}``
with ``score`` the cosine similarity and ``label``/``source`` the image's final label.
"""

from __future__ import annotations

import functools
import os
import string
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import Hint, InvalidInputError, NotReadyError

if TYPE_CHECKING:
    from .project import Project

#: Default cosine similarity above which two images count as near-duplicates.
DUPLICATE_THRESHOLD = 0.95
#: Neighbours looked at per image when grouping near-duplicates.
DUPLICATE_NEIGHBOURS = 16
MAX_K = 10_000


def _check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= int(k) <= MAX_K:
        raise InvalidInputError(f"k must be a whole number between 1 and {MAX_K}, got {k!r}")
    return int(k)


def resolve_image(project: Project, ref: int | str) -> dict:
    """The ``images`` row an id, sha256 (or a unique prefix of at least 6 hex digits) or file path names.

    Paths match the absolute ``path`` (after resolving), the ``rel_path`` below its import root, or the unique
    ``path`` CSV/JSONL exports give it (:func:`labeler.export.export_paths`).

    Raises
    ------
    InvalidInputError
        Nothing matches, or a sha256 prefix matches several images.
    """
    db = project.db
    if isinstance(ref, (int, np.integer)) and not isinstance(ref, bool):
        rows = list(db["images"].rows_where("id = ?", [int(ref)]))
        if not rows:
            raise InvalidInputError(f"there is no image with id {int(ref)}")
        return rows[0]
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInputError("give an image as its id, sha256 (or a prefix) or file path")
    text = ref.strip()
    low = text.lower()
    if len(low) >= 6 and all(ch in string.hexdigits for ch in low):
        rows = list(db["images"].rows_where("sha256 like ?", [low + "%"], limit=3))
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            raise InvalidInputError(f"sha256 prefix {low!r} matches several images: give more digits")
    if text.isdigit():
        rows = list(db["images"].rows_where("id = ?", [int(text)]))
        if rows:
            return rows[0]
    candidates = [text, os.path.abspath(os.path.expanduser(text))]
    try:
        candidates.append(str(Path(text).expanduser().resolve()))
    except OSError:
        pass
    for cand in dict.fromkeys(candidates):
        rows = list(db["images"].rows_where("path = ?", [cand], limit=1))
        if rows:
            return rows[0]
    rows = list(db["images"].rows_where("rel_path = ?", [text], limit=2))
    if len(rows) == 1:
        return rows[0]
    from .export import export_paths  # the path a CSV/JSONL row has names one image even where rel_paths repeat

    exported = next((i for i, p in export_paths(project).paths.items() if p == text.replace(os.sep, "/")), None)
    if exported is not None:
        return db["images"].get(exported)
    if len(rows) > 1:
        raise InvalidInputError(f"{text!r} names several images (imported from different roots): give its sha256")
    raise InvalidInputError(
        f"no image in this project matches {text!r}: give an imported file's path, its sha256 or image id"
    )


def describe(project: Project, image_ids: list[int], scores: list[float] | None = None) -> list[dict]:
    """Gallery items for ``image_ids`` (order kept): id, score, sha256, path, rel_path, label, source."""
    from .labels import final_labels

    ids = [int(i) for i in image_ids]
    items = {it.image_id: it for it in final_labels(project, ids)} if ids else {}
    out = []
    for pos, i in enumerate(ids):
        it = items.get(i)
        if it is None:
            continue
        out.append(
            {
                "image_id": i,
                "score": None if scores is None else round(float(scores[pos]), 6),
                "sha256": it.sha256,
                "path": it.path,
                "rel_path": it.rel_path,
                "label": it.label,
                "source": it.source,
            }
        )
    return out


def similar_images(project: Project, image: int | str, k: int = 12, features: str = "clip") -> list[dict]:
    """The ``k`` ok images most similar to one image (itself left out), most similar first.

    Parameters
    ----------
    image : int or str
        Image id, sha256 (prefix) or path (see :func:`resolve_image`).
    features : str
        ``clip``, ``dino`` or a feature-set key.

    Returns
    -------
    list of dict
        See the module docstring; ``score`` is the cosine similarity to the query image.
    """
    from .index import get_index

    k = _check_k(k)
    row = resolve_image(project, image)
    if row["status"] != "ok":
        raise InvalidInputError(f"image {row['rel_path']} is {row['status']}: include it again to search from it")
    index = get_index(project, features)
    if not index.has_image(row["id"]):
        raise NotReadyError(f"image {row['rel_path']} has no {index.kind} features yet", hint=Hint("features"))
    scores, ids = index.search_images([row["id"]], k)
    keep = ids[0] >= 0
    return describe(project, ids[0][keep].tolist(), scores[0][keep].tolist())


@functools.lru_cache(maxsize=2)
def _cached_clip(model: str, pretrained: str | None, device: str):
    from .models import TRY_TINY_FEATURES, check_clip_available, load_clip

    # offline and not cached: at once, suggesting features of a model whose text tower runs here
    check_clip_available(model, pretrained, hint=TRY_TINY_FEATURES)
    return load_clip(model, pretrained, device=device)


def _text_encoder(fset: dict, device: str = "auto"):
    """The CLIP model of a feature set (cached per process); tests replace this function."""
    return _cached_clip(fset["model"], fset["pretrained"] or None, device)


def encode_text(project: Project, text: str, features: str = "clip", device: str = "auto") -> np.ndarray:
    """The CLIP text embedding (D,) float32, unit norm, of ``text`` with the feature set's own model."""
    from .index import resolve_set

    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError('give a text to search for, e.g. "a red car at night"')
    fset = resolve_set(project, features)
    if fset["kind"] != "clip":
        raise InvalidInputError(
            f"text search needs CLIP features, and {fset['key']} is {fset['kind']}: search the CLIP features",
            hint=Hint(option="features", value="clip"),
        )
    model = _text_encoder(fset, device)
    emb = model.encode_texts([text.strip()])
    emb = emb.detach().float().cpu().numpy() if hasattr(emb, "detach") else np.asarray(emb, dtype=np.float32)
    emb = emb.reshape(-1)
    if emb.shape[0] != int(fset["dim"]):
        raise InvalidInputError(
            f"the text encoder gives {emb.shape[0]}-d vectors but {fset['key']} has {fset['dim']}-d features"
        )
    return (emb / max(float(np.linalg.norm(emb)), 1e-12)).astype(np.float32)


def text_search(project: Project, text: str, k: int = 12, features: str = "clip", device: str = "auto") -> list[dict]:
    """The ``k`` ok images whose CLIP features best match ``text`` ("a red car at night").

    The text is embedded by the CLIP model the feature set was computed with
    (``load_clip(fset['model'], fset['pretrained'])``), without a prompt template.

    Returns
    -------
    list of dict
        See the module docstring; ``score`` is the cosine similarity between text and image.
    """
    from .index import get_index

    k = _check_k(k)
    query = encode_text(project, text, features, device)
    index = get_index(project, features)
    scores, ids = index.search(query[None, :], k)
    keep = ids[0] >= 0
    return describe(project, ids[0][keep].tolist(), scores[0][keep].tolist())


class _UnionFind:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        self.parent.setdefault(a, a)
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


#: Components up to this size get exact pairwise similarities (from the feature vectors) when grouping.
_EXACT_GROUP_MAX = 2048
#: A "group" holding more than this share of the images (and at least :data:`_UNIFORM_MIN` of them) means
#: the features are too alike to tell duplicates apart.
_UNIFORM_SHARE = 0.5
_UNIFORM_MIN = 10


def _split_component(members: list[int], sim: dict[tuple[int, int], float], threshold: float) -> list[list[int]]:
    """Split one chained component into groups whose members are ALL pairwise ≥ ``threshold``.

    Greedy: the member with the most links left leads; its linked members join, most similar first, when
    they are linked to everyone already in the group. ``sim``: ``(a, b)`` with ``a < b`` → similarity.
    """
    adj: dict[int, set[int]] = {m: set() for m in members}
    for (a, b), v in sim.items():
        if v >= threshold and a in adj and b in adj:
            adj[a].add(b)
            adj[b].add(a)
    left = set(members)
    out = []
    while left:
        leader = min(left, key=lambda m: (-len(adj[m] & left), m))
        group = [leader]
        cands = sorted(adj[leader] & left, key=lambda c: (-sim[(min(c, leader), max(c, leader))], c))
        for c in cands:
            if all(g in adj[c] for g in group):
                group.append(c)
        left.difference_update(group)
        if len(group) > 1:
            out.append(sorted(group))
    return out


def duplicate_groups(
    ids: np.ndarray,
    neighbour_ids: np.ndarray,
    neighbour_scores: np.ndarray,
    threshold: float,
    similarity: Callable[[list[int]], np.ndarray] | None = None,
) -> list[dict]:
    """Groups of items that are all pairwise similar by ≥ ``threshold``.

    Items linked (chained) by neighbour pairs ≥ ``threshold`` are candidates (union-find); a chain
    ``a ~ b ~ c`` with ``a`` not similar to ``c`` is split, so that every pair within a group is ≥ the
    threshold (greedy, around the best-linked member; see :func:`_split_component`).

    Parameters
    ----------
    ids : np.ndarray (N,)
        The query items.
    neighbour_ids, neighbour_scores : np.ndarray (N, K)
        Each query's neighbours (-1 for none) and their similarities.
    similarity : callable, optional
        ``similarity(members)`` → (M, M) exact similarities among candidate members (used for
        components up to 2048 items); without it a pair missing from the neighbour lists counts as not
        similar.

    Returns
    -------
    list of dict
        ``{"images": [ids ascending], "max_similarity", "min_similarity", "pairs"}`` per group of
        2 or more, largest groups first; ``min_similarity`` is the group's least similar pair,
        ``pairs`` its number of pairs.
    """
    uf = _UnionFind()
    sim: dict[tuple[int, int], float] = {}
    for q, nbrs, sims in zip(
        np.asarray(ids).tolist(), np.asarray(neighbour_ids), np.asarray(neighbour_scores), strict=True
    ):
        for j, v in zip(nbrs.tolist(), sims.tolist(), strict=True):
            if j < 0 or j == q or v < threshold:
                continue
            key = (min(q, j), max(q, j))
            if key not in sim:
                uf.union(q, j)
                sim[key] = float(v)
    components: dict[int, set[int]] = {}
    for a, b in sim:
        components.setdefault(uf.find(a), set()).update((a, b))
    out = []
    by_root: dict[int, dict[tuple[int, int], float]] = {}
    for key, v in sim.items():
        by_root.setdefault(uf.find(key[0]), {})[key] = v
    for root, member_set in components.items():
        members = sorted(member_set)
        local = by_root[root]
        if len(members) == 2:
            groups = [members]
        else:
            if similarity is not None and len(members) <= _EXACT_GROUP_MAX:
                mat = np.asarray(similarity(members), dtype=np.float64)
                local = {
                    (a, b): float(mat[i, k])
                    for i, a in enumerate(members)
                    for k in np.flatnonzero(mat[i, i + 1 :] >= threshold) + i + 1
                    for b in (members[int(k)],)
                }
            groups = _split_component(members, local, threshold)
        for g in groups:
            vals = [local[(a, b)] for i, a in enumerate(g) for b in g[i + 1 :]]
            out.append(
                {
                    "images": g,
                    "max_similarity": round(max(vals), 6),
                    "min_similarity": round(min(vals), 6),
                    "pairs": len(vals),
                }
            )
    return sorted(out, key=lambda g: (-len(g["images"]), -g["max_similarity"], g["images"][0]))


def near_duplicates(
    project: Project,
    threshold: float = DUPLICATE_THRESHOLD,
    features: str = "clip",
    neighbours: int = DUPLICATE_NEIGHBOURS,
    batch_size: int = 4096,
) -> list[dict]:
    """Groups of ok images whose features are at least ``threshold`` cosine-similar.

    Each image's ``neighbours`` nearest neighbours are searched in the index; pairs above the
    threshold are chained into candidates, which are then split so that every pair of images within a
    group is at least ``threshold`` similar (exact similarities; :func:`duplicate_groups`).

    Raises
    ------
    InvalidInputError
        When one group would hold half the images or more (at least 10): the features are too uniform
        for near-duplicates to mean anything (e.g. a tiny or untrained model).

    Returns
    -------
    list of dict
        ``{"images": [gallery items], "max_similarity", "min_similarity", "pairs"}``, largest first.
    """
    from .index import get_index

    if not isinstance(threshold, (int, float)) or not 0 < float(threshold) <= 1:
        raise InvalidInputError(f"threshold must be a cosine similarity in (0, 1], got {threshold!r}")
    neighbours = _check_k(neighbours)
    index = get_index(project, features)
    ok = np.flatnonzero(index.row_image >= 0)
    all_ids = index.row_image[ok]
    nbr_ids, nbr_scores = [], []
    mat = project.features.matrix(index.set_id)
    for start in range(0, len(ok), batch_size):
        rows = ok[start : start + batch_size]
        q = np.asarray(mat[rows], dtype=np.float32)
        s, i = index.search(q, neighbours, exclude=all_ids[start : start + batch_size])
        nbr_ids.append(i)
        nbr_scores.append(s)
    if not len(ok):
        return []
    row_of = {int(image_id): int(row) for row, image_id in zip(ok.tolist(), all_ids.tolist(), strict=True)}

    def similarity(members: list[int]) -> np.ndarray:
        v = np.asarray(mat[[row_of[m] for m in members]], dtype=np.float32)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return v @ v.T

    groups = duplicate_groups(all_ids, np.vstack(nbr_ids), np.vstack(nbr_scores), float(threshold), similarity)
    n = len(ok)
    if groups and len(groups[0]["images"]) >= max(_UNIFORM_MIN, _UNIFORM_SHARE * n):
        raise InvalidInputError(
            f"the features look uniform: {len(groups[0]['images'])} of the {n} images are all at least "
            f"{float(threshold):g} similar to each other, so they cannot be told apart as near-duplicates. "
            "Features of a tiny or untrained model do this: compute features with a real model, or use a "
            "higher threshold",
            hint=Hint(step="features"),
        )
    for g in groups:
        g["images"] = describe(project, g["images"])
    return groups


def duplicate_rows(project: Project, threshold: float = 0.95, features: str = "clip") -> list[dict]:
    """Near-duplicate groups (:func:`labeler.search.near_duplicates`) as table rows, largest first.

    Returns
    -------
    list of dict
        ``{"group", "size", "max_similarity", "min_similarity", "labels", "images"}``: ``group`` numbers
        the groups from 1, ``labels`` says which final labels the group holds ("cat ×2, dog"),
        ``images`` are the image ids, ascending.
    """
    from collections import Counter

    out = []
    for k, g in enumerate(near_duplicates(project, float(threshold), features), start=1):
        counts = Counter(it["label"] or "unlabeled" for it in g["images"])
        out.append(
            {
                "group": k,
                "size": len(g["images"]),
                "max_similarity": g["max_similarity"],
                "min_similarity": g["min_similarity"],
                "labels": ", ".join(f"{c} ×{n}" if n > 1 else c for c, n in counts.most_common()),
                "images": [it["image_id"] for it in g["images"]],
            }
        )
    return out
