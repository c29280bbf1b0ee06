"""Audited accuracy: a seeded random sample of images that a person checks, and the accuracy it estimates.

Without ground truth nothing in Labeler says how good its labels are; an audit does, honestly:

1. :func:`draw_sample` draws a seeded random sample of the ok images — *uniform*, or *stratified* by the
   current final label (every class gets images, and so do the unlabeled images and, multi-label, a person's
   "none of the classes"; the estimate re-weights the strata to the population).
   Each image gets a fixed random key (a hash of the seed and its sha256); the sample is the images with
   the smallest keys, so ``draw_sample(project, 100)`` then ``draw_sample(project, 200)`` gives the same
   200 images as ``draw_sample(project, 200)`` at once, and checking them in sample order keeps every prefix
   a random sample too.
2. A person checks each one (:func:`record_verdict`): *confirm* (the final label shown is right), *correct*
   (the true class is another one) or *skip* (cannot tell; left out of the estimate and counted).
3. :func:`audit_report` compares the truth with the current final labels — or with any labeling run's
   predictions (``run_id``), so "did training help?" has an answer with error bars — and gives the accuracy
   with its 95 % Wilson interval, overall and per class (precision: of the images labeled c, how many are
   c; recall: of the images that are c, how many are labeled c).

The truth lives in the ``audit`` table only: a verdict is **not** a label. Audit images are kept out of
training, validation and held-out model selection (:func:`labeler.train.data.verified_labels`,
:func:`labeler.train.data.without_audit`) so the sample stays an unbiased test set; labeling runs still
predict them (that is what is measured).

For a stratified sample, image *i* of stratum *h* weighs ``w_i = N_h / n_h`` (``N_h`` images in the stratum
when drawn, ``n_h`` of them checked); the estimate is the weighted mean and its interval the Wilson interval
at Kish's effective sample size ``(Σw)² / Σw²``. For a uniform sample all weights are equal and this is the
plain Wilson interval of ``k`` correct out of ``n``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence

import numpy as np

from store import in_chunks, now, transaction

from .errors import Hint, InvalidInputError, NotReadyError
from .history import counted
from .labels import canonical_classes, final_labels, get_label_run
from .project import Project

#: Project meta key: how the sample was drawn (mode, seed, strata sizes and digest, population).
DESIGN_KEY = "audit_design"
MODES = ("uniform", "stratified")
VERDICTS = ("confirm", "correct", "skip")
#: The stratum of images without a final label.
UNLABELED = ""
#: The stratum of images a person labeled "none of the classes" (multi-label): a decided label of its own, not
#: unlabeled. The leading space keeps it apart from every class name (those are stripped).
NONE_OF_THE_CLASSES = " (none of the classes)"
#: Fewer checked images than this in a class: its per-class interval is shown but flagged ``few``.
MIN_PER_CLASS = 5
Z95 = 1.959963984540054


# --- pure statistics --------------------------------------------------------------------------------------
def wilson_interval(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: ``k`` successes out of ``n`` (both may be fractional).

    Parameters
    ----------
    k, n : float
        Successes and trials, ``0 <= k <= n``. ``n == 0`` gives ``(0.0, 1.0)`` (nothing is known).
    z : float
        The normal quantile (1.96 for 95 %).

    Returns
    -------
    (float, float)
        The lower and upper bound, within [0, 1].
    """
    if n < 0 or k < 0 or k > n + 1e-9:
        raise InvalidInputError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = min(1.0, k / n)
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if k <= 0 else max(0.0, centre - half)  # exact at the ends (no 0.9999999999999999)
    hi = 1.0 if k >= n else min(1.0, centre + half)
    return lo, hi


def estimate(correct: Sequence[bool] | np.ndarray, weights: Sequence[float] | np.ndarray | None = None, z: float = Z95):
    """Accuracy of a sample with its Wilson interval: ``{"n", "correct", "accuracy", "low", "high", "n_eff"}``.

    ``weights`` (design weights, e.g. stratum size over checked images in the stratum): the accuracy is the
    weighted mean, the interval the Wilson interval at Kish's effective sample size. None: all equal (the
    plain Wilson interval of ``correct.sum()`` out of ``n``). An empty sample gives accuracy None, (0, 1).
    """
    y = np.asarray(correct, dtype=bool).ravel()
    n = int(y.size)
    if n == 0:
        return {"n": 0, "correct": 0, "accuracy": None, "low": 0.0, "high": 1.0, "n_eff": 0.0}
    if weights is None:
        k = int(y.sum())
        lo, hi = wilson_interval(k, n, z)
        return {"n": n, "correct": k, "accuracy": k / n, "low": lo, "high": hi, "n_eff": float(n)}
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != y.shape or not np.isfinite(w).all() or (w <= 0).any():
        raise InvalidInputError("weights must be one positive finite number per item")
    p = float((w * y).sum() / w.sum())
    n_eff = float(w.sum() ** 2 / (w * w).sum())
    lo, hi = wilson_interval(p * n_eff, n_eff, z)
    return {"n": n, "correct": int(y.sum()), "accuracy": p, "low": lo, "high": hi, "n_eff": n_eff}


def _names(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


def accuracy_estimate(
    pairs: Iterable[tuple],
    weights: Sequence[float] | None = None,
    classes: Sequence[str] | None = None,
    z: float = Z95,
    multi_label: bool | None = None,
) -> dict:
    """Accuracy of predicted labels against audited truth, overall and per class.

    Parameters
    ----------
    pairs : iterable of (truth, predicted)
        Each a class name or a list of them (multi-label); an empty or None prediction is wrong (multi-label:
        right when the truth is empty too). A prediction is right when its set of classes equals the truth's.
    weights : sequence of float, optional
        One design weight per pair (see :func:`estimate`).
    classes : sequence of str, optional
        The classes to report per class (default: every class named in the pairs, sorted).
    multi_label : bool, optional
        Label sets (default: when some truth or prediction has other than one class). Adds ``micro``.

    Returns
    -------
    dict
        ``overall`` (see :func:`estimate`; for sets the exact-set accuracy) and ``per_class``: ``{class:
        {"precision": ..., "recall": ..., "few": bool}}`` for classes that occur in the sample — precision over
        the images predicted as the class, recall over the images truly of it; ``few`` when either has under 5
        images. Multi-label also ``micro``: ``{"precision", "recall"}`` pooled over every (image, class) pair
        predicted / true, each pair weighing its image's weight (its ``n`` counts pairs).
    """
    pairs = [(_names(t), _names(p)) for t, p in pairs]
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if w is not None and len(w) != len(pairs):
        raise InvalidInputError(f"{len(w)} weights for {len(pairs)} pairs")
    if multi_label is None:
        multi_label = any(len(t) != 1 or len(p) > 1 for t, p in pairs)
    right = np.array([(bool(p) or multi_label) and set(p) == set(t) for t, p in pairs], dtype=bool)
    out = {"overall": estimate(right, w, z), "per_class": {}}
    if classes is None:
        classes = sorted({c for t, p in pairs for c in (*t, *p)})
    for c in classes:
        predicted = np.array([c in p for _, p in pairs], dtype=bool)
        truly = np.array([c in t for t, _ in pairs], dtype=bool)
        if not predicted.any() and not truly.any():
            continue
        hit = np.array([c in p and c in t for t, p in pairs], dtype=bool)
        prec = estimate(hit[predicted], None if w is None else w[predicted], z)
        rec = estimate(hit[truly], None if w is None else w[truly], z)
        out["per_class"][c] = {"precision": prec, "recall": rec, "few": min(prec["n"], rec["n"]) < MIN_PER_CLASS}
    if multi_label:
        # every predicted (image, class) pair: right when the class is true; every true pair: found when predicted
        p_hit, p_w, t_hit, t_w = [], [], [], []
        for k, (t, p) in enumerate(pairs):
            wk = 1.0 if w is None else float(w[k])
            truth_set, pred_set = set(t), set(p)
            for c in pred_set:
                p_hit.append(c in truth_set)
                p_w.append(wk)
            for c in truth_set:
                t_hit.append(c in pred_set)
                t_w.append(wk)
        out["micro"] = {
            "precision": estimate(p_hit, None if w is None else p_w, z),
            "recall": estimate(t_hit, None if w is None else t_w, z),
        }
    return out


def sample_keys(seed: int, sha256s: Sequence[str]) -> np.ndarray:
    """Each image's random key for a seed (uint64; a hash of the seed and the image's sha256).

    The keys depend on the image content only, so the same seed draws the same images after a re-import.
    """
    prefix = f"labeler-audit:{int(seed)}:".encode()
    return np.array(
        [int.from_bytes(hashlib.sha256(prefix + s.encode()).digest()[:8], "big") for s in sha256s], dtype=np.uint64
    )


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """How many of ``n`` sample images each stratum gets: proportional to its size (largest remainder), but
    at least one per non-empty stratum while ``n`` allows, and never more than the stratum has."""
    total = sum(sizes.values())
    n = max(0, min(int(n), total))
    names = sorted(sizes)
    take = dict.fromkeys(names, 0)
    if n == 0:
        return take
    nonempty = [s for s in names if sizes[s] > 0]
    if n >= len(nonempty):
        for s in nonempty:
            take[s] = 1
    left = n - sum(take.values())
    while left > 0:
        room = {s: sizes[s] - take[s] for s in names if sizes[s] > take[s]}
        quota = {s: left * room[s] / sum(room.values()) for s in room}
        whole = {s: min(room[s], int(math.floor(q))) for s, q in quota.items()}
        for s, k in whole.items():
            take[s] += k
        left -= sum(whole.values())
        if left <= 0:
            break
        # the largest remainders get one more (ties: the larger stratum, then the name)
        order = sorted(room, key=lambda s: (-(quota[s] - whole[s]), -sizes[s], s))
        for s in order:
            if left == 0:
                break
            if take[s] < sizes[s]:
                take[s] += 1
                left -= 1
    return take


# --- the sample in a project ------------------------------------------------------------------------------
def design(project: Project) -> dict | None:
    """How the project's audit sample was drawn (None: there is none)."""
    value = project.get_meta(DESIGN_KEY)
    return value if isinstance(value, dict) else None


def sampled_ids(project: Project) -> set[int]:
    """Ids of every image in the audit sample, checked or not (kept out of training and model selection)."""
    return {int(r[0]) for r in project.db.execute("select image_id from audit")}


def _strata(project: Project) -> dict[int, str]:
    """Image id → its stratum now: the primary final label; :data:`NONE_OF_THE_CLASSES` for a person's "none of
    the classes" (multi-label), :data:`UNLABELED` when unlabeled."""
    return {it.image_id: it.label or (NONE_OF_THE_CLASSES if it.labeled else UNLABELED) for it in final_labels(project)}


def _stratum_name(stratum: str) -> str:
    """A stratum as a warning names it."""
    return stratum.strip() if stratum else "(unlabeled)"


def _digest(strata: dict[int, str]) -> str:
    h = hashlib.sha256()
    for image_id in sorted(strata):
        h.update(f"{image_id}\t{strata[image_id]}\n".encode())
    return h.hexdigest()


def draw_sample(project: Project, n: int, *, stratify: bool = False, seed: int | None = None) -> dict:
    """Make the audit sample ``n`` images large (drawing the missing ones; never removing any).

    The first draw fixes the design: ``stratify`` (by the current final label) and ``seed`` (default 0).
    Later draws extend it with the same design; asking for another seed or mode is refused (start over with
    :func:`reset_audit`). A stratified sample can be extended only while the final labels are those it
    was drawn with (training or labeling changes them): the strata would no longer match.

    Returns
    -------
    dict
        ``{"added", "sampled", "checked", "design"}``.

    Raises
    ------
    InvalidInputError
        ``n`` below 1, or a seed or mode other than the sample's.
    NotReadyError
        No ok images, or a stratified sample whose labels changed since it was drawn.
    """
    n = int(n)
    if n < 1:
        raise InvalidInputError(
            f"the audit sample size must be at least 1, got {n}", hint=Hint(option="sample", value="100")
        )
    mode = "stratified" if stratify else "uniform"
    current = design(project)
    if current is not None:
        if seed is not None and int(seed) != int(current["seed"]):
            raise InvalidInputError(
                f"the audit sample was drawn with seed {current['seed']}, not {seed}: leave the seed out to extend it",
                hint=Hint(step="audit_reset"),
            )
        if mode != current["mode"]:
            raise InvalidInputError(
                f"the audit sample is {current['mode']}, not {mode}: "
                + ("ask for a stratified one" if current["mode"] == "stratified" else "leave stratify off")
                + " to extend it",
                hint=Hint(step="audit_reset"),
            )
        seed = int(current["seed"])
    seed = 0 if seed is None else int(seed)
    rows = project.db.execute("select id, sha256 from images where status = 'ok' order by id").fetchall()
    if not rows:
        raise NotReadyError("there are no images to audit", hint=Hint(step="import"))
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    keys = sample_keys(seed, [r[1] for r in rows])
    with transaction(project.db):
        have = sampled_ids(project)
        fresh = np.array([i not in have for i in ids.tolist()], dtype=bool)
        strata: dict[int, str] = {}
        if mode == "stratified":
            strata = _strata(project)
            digest = _digest(strata)
            if current is not None and current.get("digest") != digest:
                raise NotReadyError(
                    "the final labels (or the images) changed since the stratified audit sample was drawn, so its "
                    "strata no longer match: check the images drawn already",
                    hint=Hint(step="audit_reset"),
                )
            sizes: dict[str, int] = {}
            fresh_rows: dict[str, list[int]] = {}
            for r, (image_id, is_fresh) in enumerate(zip(ids.tolist(), fresh.tolist(), strict=True)):
                s = strata.get(image_id, UNLABELED)
                sizes[s] = sizes.get(s, 0) + 1
                if is_fresh:
                    fresh_rows.setdefault(s, []).append(r)
            got: dict[str, int] = {}
            for image_id in have:
                s = strata.get(image_id, UNLABELED)
                got[s] = got.get(s, 0) + 1
            pick: list[int] = []
            for s, want in allocate(sizes, n).items():
                rows_s = np.array(fresh_rows.get(s, []), dtype=np.int64)
                extra = max(0, want - got.get(s, 0))
                pick += rows_s[np.argsort(keys[rows_s], kind="stable")][:extra].tolist()
            pick_rows = np.array(sorted(pick, key=lambda r: int(keys[r])), dtype=np.int64)
            new_design = {"mode": mode, "seed": seed, "strata": sizes, "digest": digest, "population": len(ids)}
        else:
            extra = max(0, n - len(have))
            cand = np.flatnonzero(fresh)
            pick_rows = cand[np.argsort(keys[cand], kind="stable")][:extra]
            new_design = {"mode": mode, "seed": seed, "population": len(ids)}
        if current is not None:
            new_design["created_at"] = current.get("created_at")
            if mode == "uniform":
                new_design["population"] = current.get("population", len(ids))
                if len(ids) != new_design["population"]:
                    new_design["population_now"] = len(ids)
        else:
            new_design["created_at"] = now()
        start = int(project.db.execute("select coalesce(max(position), -1) from audit").fetchone()[0]) + 1
        t = now()
        project.db.conn.executemany(
            "insert into audit (image_id, position, seed, stratum, drawn_at) values (?, ?, ?, ?, ?)",
            [
                (int(ids[r]), start + k, seed, strata.get(int(ids[r])) if strata else None, t)
                for k, r in enumerate(pick_rows.tolist())
            ],
        )
        project.db["meta"].insert({"key": DESIGN_KEY, "value": json.dumps(new_design)}, replace=True)
    counts = _counts(project)
    return {"added": len(pick_rows), "sampled": counts["sampled"], "checked": counts["checked"], "design": new_design}


def reset_audit(project: Project) -> int:
    """Delete the audit sample and its checks (the images become trainable again). Returns rows deleted."""
    with transaction(project.db):
        n = project.db.execute("delete from audit").rowcount
        project.db.execute("delete from meta where key = ?", [DESIGN_KEY])
    return int(n)


def _counts(project: Project) -> dict:
    row = project.db.execute("select count(*), sum(verdict is not null), sum(verdict = 'skip') from audit").fetchone()
    return {"sampled": int(row[0] or 0), "checked": int(row[1] or 0), "skipped": int(row[2] or 0)}


def _item(row: tuple, label) -> dict:
    image_id, position, verdict, truth, seen, checked_at, stratum = row
    return {
        "image_id": int(image_id),
        "position": int(position),
        "stratum": stratum,
        "verdict": verdict,
        "truth": json.loads(truth) if truth is not None else None,
        "label_at_check": json.loads(seen) if seen else None,
        "checked_at": checked_at,
        "rel_path": label.rel_path if label else None,
        "path": label.path if label else None,
        "sha256": label.sha256 if label else None,
        "classes": list(label.classes) if label else [],
        "source": label.source if label else None,
        "score": label.score if label else None,
    }


_ITEM_SQL = "select image_id, position, verdict, truth, label_at_check, checked_at, stratum from audit"


def audit_items(project: Project, *, unchecked: bool = False, limit: int | None = None) -> list[dict]:
    """The sample in order, with each image's current final label: ``[{"image_id", "position", "verdict",
    "truth", "label_at_check", "rel_path", "path", "sha256", "classes", "source", "score", ...}]``.

    ``unchecked``: only images not checked yet (the next ones to check first). Images no longer ok
    (excluded, missing) are left out.
    """
    sql = _ITEM_SQL + (" where verdict is null" if unchecked else "") + " order by position"
    rows = project.db.execute(sql).fetchall()
    out: list[dict] = []
    for chunk_start in range(0, len(rows), 2000):
        chunk = rows[chunk_start : chunk_start + 2000]
        labels = {it.image_id: it for it in final_labels(project, [r[0] for r in chunk])}
        for r in chunk:
            if r[0] in labels:
                out.append(_item(r, labels[r[0]]))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def audit_progress(project: Project) -> dict:
    """``{"sampled", "checked", "skipped", "unchecked"}`` counts of the sample."""
    c = _counts(project)
    return {**c, "unchecked": c["sampled"] - c["checked"]}


def record_verdict(project: Project, image_id: int, verdict: str, classes: str | Sequence[str] | None = None) -> dict:
    """Record a person's check of an audit image (again: replaces the earlier one).

    Parameters
    ----------
    verdict : str
        ``confirm`` — the current final label is right (the truth is that label); ``correct`` — the truth is
        ``classes`` (a project class, or for multi-label projects a list of them: the true label set, ``[]``
        when the image has none of the classes); ``skip`` — cannot tell (the image is left out of the
        estimate, and counted).

    Returns
    -------
    dict
        The audit item as :func:`audit_items` gives it, after the check.

    Raises
    ------
    InvalidInputError
        The image is not in the sample, an unknown verdict or class, classes given to confirm/skip, or
        confirm on an image without a label.
    """
    if verdict not in VERDICTS:
        raise InvalidInputError(f"an audit verdict is one of {', '.join(VERDICTS)}, not {verdict!r}")
    image_id = int(image_id)
    row = project.db.execute(_ITEM_SQL + " where image_id = ?", [image_id]).fetchone()
    if row is None:
        raise InvalidInputError(f"image {image_id} is not in the audit sample", hint=Hint(step="audit"))
    labels = final_labels(project, [image_id])
    if not labels:
        raise InvalidInputError(f"image {image_id} is not an ok image any more (excluded or missing): skip it")
    seen = list(labels[0].classes)
    if verdict == "correct":
        empty = classes is not None and not isinstance(classes, str) and not list(classes)
        if empty and project.multi_label:
            truth = []  # the image has none of the classes
        elif classes is None or empty:
            raise InvalidInputError(
                "give the true class to correct an audit image", hint=Hint(option="check", value="IMAGE CLASS")
            )
        else:
            truth = canonical_classes(project, classes)
    else:
        if classes is not None:
            raise InvalidInputError(f"{verdict} takes no class: use correct to give the true class")
        # a person's "none of the classes" (multi-label) is a label that can be confirmed: the truth is no class
        if verdict == "confirm" and not seen and not (project.multi_label and labels[0].labeled):
            raise InvalidInputError(
                f"image {image_id} has no label to confirm: give its true class instead",
                hint=Hint(option="check", value=f"{image_id} CLASS"),
            )
        truth = seen if verdict == "confirm" else None
    with transaction(project.db):
        project.db.execute(
            "update audit set verdict = ?, truth = ?, label_at_check = ?, checked_at = ? where image_id = ?",
            [
                verdict,
                json.dumps(truth, ensure_ascii=False) if truth is not None else None,
                json.dumps(seen, ensure_ascii=False),
                now(),
                image_id,
            ],
        )
    return audit_items_for(project, [image_id])[0]


def audit_items_for(project: Project, image_ids: Iterable[int]) -> list[dict]:
    """The audit items of ``image_ids`` (those in the sample and ok), in sample order."""
    ids = sorted({int(i) for i in image_ids})
    rows = []
    for chunk, marks in in_chunks(ids):
        rows += project.db.execute(_ITEM_SQL + f" where image_id in ({marks})", chunk).fetchall()
    rows.sort(key=lambda r: r[1])
    labels = {it.image_id: it for it in final_labels(project, [r[0] for r in rows])}
    return [_item(r, labels[r[0]]) for r in rows if r[0] in labels]


def _run_predictions(project: Project, run: dict, image_ids: list[int]) -> dict[int, list[str]]:
    """Image id → a run's predicted class names (top-1 first), for ``image_ids``."""
    names = list(run["params"]["classes"])
    out: dict[int, list[str]] = {}
    for chunk, marks in in_chunks(image_ids):
        for image_id, idx, labels in project.db.execute(
            f"select image_id, class_idx, labels from predictions where run_id = ? and image_id in ({marks})",
            [run["id"], *chunk],
        ):
            order = [idx]
            if labels is not None:
                listed = json.loads(labels)
                order = [idx] + [i for i in listed if i != idx] if idx in listed else listed
            out[int(image_id)] = [names[i] for i in order if 0 <= i < len(names)]
    return out


def audit_report(project: Project, run_id: int | None = None, z: float = Z95) -> dict:
    """The estimated accuracy of the current final labels (or of labeling run ``run_id``'s predictions) on the
    checked audit images, with its Wilson interval, overall and per class.

    Returns
    -------
    dict
        ``labels`` ("final labels" or "run N (method)"), ``run_id``, ``design``, ``sampled``, ``checked``,
        ``skipped``, ``unchecked``, ``used`` (checked images in the estimate), ``overall`` and ``per_class``
        (see :func:`accuracy_estimate`), ``confidence`` (0.95), ``multi_label`` (then ``overall`` is the
        exact-set accuracy, ``per_class`` the per-label precision and recall, and ``micro`` pools the labels),
        ``warnings`` (list of str).

    Raises
    ------
    NotReadyError
        There is no audit sample yet.
    InvalidInputError
        ``run_id`` is not a finished labeling run.
    """
    plan = design(project)
    if plan is None:
        raise NotReadyError("there is no audit sample yet", hint=Hint(step="audit", option="sample", value="100"))
    run = get_label_run(project, run_id) if run_id is not None else None
    items = audit_items(project)
    progress = audit_progress(project)
    checked = [it for it in items if it["verdict"] in ("confirm", "correct")]
    warnings: list[str] = []
    dropped = progress["sampled"] - len(items)
    if dropped:
        warnings.append(f"{counted(dropped, 'audit image')} no longer ok (excluded or missing), left out")
    if progress["skipped"]:
        warnings.append(
            f"{counted(progress['skipped'], 'audit image')} skipped: if they are harder than most, the estimate is "
            "optimistic"
        )
    if run is not None:
        preds = _run_predictions(project, run, [it["image_id"] for it in checked])
        predicted = [preds.get(it["image_id"], []) for it in checked]
        missing = sum(1 for it in checked if it["image_id"] not in preds)
        if missing:
            warnings.append(
                f"run {run['id']} has no prediction for {counted(missing, 'checked audit image')} (counted as wrong)"
            )
        what = f"run {run['id']} ({run.get('method') or run['kind']})"
    else:
        predicted = [it["classes"] for it in checked]
        what = "final labels"
        late = _labeled_after_draw(project, [it["image_id"] for it in checked])
        if late:
            warnings.append(
                f"{counted(late, 'checked audit image')} labeled by hand after being drawn: there the estimate "
                "measures your own labels"
            )
    weights = None
    if plan["mode"] == "stratified":
        sizes = plan.get("strata", {})
        per: dict[str, int] = {}
        for it in checked:
            per[it["stratum"] or UNLABELED] = per.get(it["stratum"] or UNLABELED, 0) + 1
        weights = [sizes.get(it["stratum"] or UNLABELED, 1) / per[it["stratum"] or UNLABELED] for it in checked]
        unseen = [_stratum_name(s) for s, size in sizes.items() if size and s not in per]
        if checked and unseen:
            warnings.append(
                f"strata not checked yet ({', '.join(sorted(unseen)[:5])}): the estimate covers the others only"
            )
    if plan.get("population_now"):
        warnings.append(
            f"the sample was drawn from {plan['population']} images; the project has {plan['population_now']} "
            "now (images added later were only drawn from when it was extended)"
        )
    multi = bool(project.multi_label or (run is not None and run["params"].get("multi_label")))
    est = accuracy_estimate(
        [(it["truth"], p) for it, p in zip(checked, predicted, strict=True)],
        weights,
        classes=list(project.classes),
        z=z,
        multi_label=multi,
    )
    return {
        "labels": what,
        "run_id": run["id"] if run is not None else None,
        "design": plan,
        **progress,
        "used": len(checked),
        "confidence": 0.95 if abs(z - Z95) < 1e-6 else None,
        "z": z,
        "multi_label": multi,
        **est,
        "warnings": warnings,
    }


def _labeled_after_draw(project: Project, image_ids: list[int]) -> int:
    n = 0
    for chunk, marks in in_chunks(image_ids):
        n += int(
            project.db.execute(
                f"select count(*) from audit a join labels l on l.image_id = a.image_id "
                f"where l.source = 'human' and l.time > a.drawn_at and a.image_id in ({marks})",
                chunk,
            ).fetchone()[0]
        )
    return n


def compare_runs(project: Project, z: float = Z95) -> list[dict]:
    """The audited accuracy of the final labels and of every finished labeling run, newest run first:
    ``[{"labels", "run_id", "method", "used", "accuracy", "low", "high"}]`` (for "did training help?")."""
    rows = [("final labels", None, None)]
    for run_id, method in project.db.execute(
        "select id, method from runs where kind = 'label' and status = 'done' order by id desc"
    ):
        rows.append((f"run {run_id} ({method})", int(run_id), method))
    out = []
    for what, run_id, method in rows:
        try:
            rep = audit_report(project, run_id, z)
        except InvalidInputError:
            continue  # a run without a class list cannot be read
        o = rep["overall"]
        out.append(
            {
                "labels": what,
                "run_id": run_id,
                "method": method,
                "used": o["n"],
                "accuracy": o["accuracy"],
                "low": o["low"],
                "high": o["high"],
            }
        )
    return out


def interval_text(est: dict) -> str:
    """``"0.800 (95 % CI 0.490–0.943, n=10)"``, or ``"– (n=0)"``."""
    if est.get("accuracy") is None:
        return "– (nothing checked yet)"
    return f"{est['accuracy']:.3f} (95 % CI {est['low']:.3f}–{est['high']:.3f}, n={est['n']})"


def write_sidecar(project: Project, export_path) -> str | None:
    """Write the audit estimate next to an export as ``<export>.audit.json``; None when nothing is checked.

    A sidecar file, not a header line, so CSV and JSONL readers read the export as before.
    """
    from pathlib import Path

    if design(project) is None or not audit_progress(project)["checked"]:
        return None
    report = audit_report(project)
    report["export"] = Path(export_path).name
    dest = Path(f"{export_path}.audit.json")
    dest.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return str(dest)
