"""CDUL: multi-label pseudo-labels from CLIP's global and snippet (crop) similarities, refined while training.

The steps, as pure functions on arrays (what the tests plant answers in); the public reproduction
(github.com/cs-mshah/CDUL, arXiv 2405.11574) is the reference, the paper (ICCV 2023) has no code:

1. :func:`global_scores` — the whole image against one text per class (or the description classifier):
   ``softmax(temperature · cos(f, T))`` over the classes.
2. :func:`snippet_boxes` — the image cut into ``grid × grid`` crops covering it exactly (the last row and
   column take the remainder); :func:`snippet_scores` — each crop's softmax over the classes.
3. :func:`aggregate` — per class, the snippets' max α or min β (``α ≥ threshold`` picks the max), then
   ``½·(global + local + λ·|global − local|)``.
4. Training a classifier on the pseudo-labels (:mod:`labeler.train.cdul`).
5. :func:`refine` — gradient alignment: the pseudo-labels move along −∂L/∂y in logit space, weighted by a
   Gaussian of how undecided they are.

:class:`CDULInit` (``cdul-init``) labels a project with the aggregated pseudo-labels (step 3);
:class:`CDUL` (``cdul``) trains the classifier with refinement (steps 4–5) and labels with it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import Hint, InvalidInputError, NotReadyError
from ..prompts import DEFAULT_TEMPLATES
from ..snippets import DEFAULT_GRID, snippet_boxes
from ..train.params import TrainParams
from .base import Method, RunResult
from .trainable import TrainableMethod

if TYPE_CHECKING:
    from ..jobs import ProgressCallback
    from ..project import Project

#: ``temperature`` values by name: CLIP's own learnt scale (``logit_scale.exp()``, 100 for released models) or
#: the reproduction's raw ``logit_scale`` (its log, ≈ 4.605), which makes the softmax nearly uniform (≈ 1/C).
TEMPERATURES = ("clip", "raw")
#: Refinement losses: the reproduction's softmax + KL, or sigmoid + BCE.
LOSSES = ("kl", "bce")
#: Pseudo-labels and predictions are clipped to [_LOW, _HIGH] before logits are taken: the low end far below
#: anything a softmax gives in float32 (a clip at 1e-6 tied the many tiny scores of a temperature-100 softmax and
#: lost their order), the high end the largest float32 below 1.
_LOW = 1e-30
_HIGH = float(np.nextafter(np.float32(1), np.float32(0)))

__all__ = [
    "DEFAULT_GRID",
    "aggregate",
    "gaussian_weight",
    "global_scores",
    "loss_gradient",
    "refine",
    "resolve_temperature",
    "snippet_boxes",
    "snippet_scores",
]


# --- steps 1-2: similarity scores ---------------------------------------------------------------------------
def resolve_temperature(temperature: float | str | None, logit_scale: float) -> float:
    """The softmax temperature (multiplier of the cosines) for a ``temperature`` option.

    ``None`` or ``"clip"``: ``logit_scale`` (CLIP's ``logit_scale.exp()``); ``"raw"``: ``ln(logit_scale)``, the
    reproduction's value; a positive number: itself.
    """
    if temperature is None or temperature == "clip":
        value = float(logit_scale)
    elif temperature == "raw":
        value = math.log(float(logit_scale))
    elif isinstance(temperature, numbers.Real) and not isinstance(temperature, bool):
        value = float(temperature)
    else:
        try:
            value = float(temperature)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"temperature must be a positive number, 'clip' or 'raw', got {temperature!r}"
            ) from None
    if not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"temperature must be a positive number, 'clip' or 'raw', got {temperature!r}")
    return value


def _softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _check_classifier(classifier, dim: int) -> np.ndarray:
    w = np.asarray(classifier, dtype=np.float32)
    if w.ndim != 2 or w.shape[1] != dim or w.shape[0] < 1:
        raise InvalidInputError(f"classifier must be (C, {dim}) to match the features, got {w.shape}")
    if not np.isfinite(w).all():
        raise InvalidInputError("classifier contains NaN or inf")
    return _unit(w)


def global_scores(image_features: np.ndarray, classifier: np.ndarray, temperature: float = 100.0) -> np.ndarray:
    """Step 1: ``softmax(temperature · cos(f, T_c))`` over the classes, per image.

    Parameters
    ----------
    image_features : array (N, D)
        Whole-image CLIP features (any norm; normalised here).
    classifier : array (C, D)
        Class text embeddings (normalised here).
    temperature : float
        Multiplier of the cosines: CLIP's ``logit_scale.exp()`` (100) by default; the reproduction used the
        raw ``logit_scale`` (≈ 4.6: a nearly uniform softmax). See :func:`resolve_temperature`.

    Returns
    -------
    np.ndarray (N, C), float32, rows sum to 1.
    """
    f = np.asarray(image_features, dtype=np.float32)
    if f.ndim != 2:
        raise InvalidInputError(f"image features must be (N, D), got shape {f.shape}")
    if not np.isfinite(f).all():
        raise InvalidInputError("image features contain NaN or inf")
    w = _check_classifier(classifier, f.shape[1])
    t = resolve_temperature(temperature, 100.0)
    return _softmax(t * (_unit(f) @ w.T)).astype(np.float32)


def snippet_scores(snippet_features: np.ndarray, classifier: np.ndarray, temperature: float = 100.0) -> np.ndarray:
    """Step 2: each snippet's softmax over the classes.

    Parameters
    ----------
    snippet_features : array (N, S, D)
        CLIP features of each image's S snippets.
    classifier : array (C, D)
    temperature : float
        As in :func:`global_scores`.

    Returns
    -------
    np.ndarray (N, S, C), float32, each snippet's row sums to 1.
    """
    f = np.asarray(snippet_features, dtype=np.float32)
    if f.ndim != 3 or f.shape[1] < 1:
        raise InvalidInputError(f"snippet features must be (N, S, D) with S >= 1, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise InvalidInputError("snippet features contain NaN or inf")
    w = _check_classifier(classifier, f.shape[2])
    t = resolve_temperature(temperature, 100.0)
    return _softmax(t * (_unit(f) @ w.T)).astype(np.float32)


# --- step 3: aggregation ---------------------------------------------------------------------------------------
def _check_scores(name: str, value, ndim: int) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.ndim != ndim:
        shape = "(N, C)" if ndim == 2 else "(N, S, C)"
        raise InvalidInputError(f"{name} must be a {shape} array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InvalidInputError(f"{name} contains NaN or inf")
    if a.size and (a.min() < 0 or a.max() > 1):
        raise InvalidInputError(f"{name} must lie in [0, 1] (similarity probabilities), got {a.min()}..{a.max()}")
    return a


def aggregate(global_scores, local_scores, threshold: float = 0.0, lam: float = 0.0) -> np.ndarray:
    """Step 3: the initial pseudo-labels from the global and the snippets' scores.

    Per image and class c: ``α_c = max_s local[s, c]``, ``β_c = min_s local[s, c]``,
    ``γ_c = 1[α_c ≥ threshold]``, ``l_c = γ_c·α_c + (1 − γ_c)·β_c`` and the pseudo-label
    ``½·(g_c + l_c + λ·|g_c − l_c|)``.

    At ``threshold`` 0, γ ≡ 1 (the local score is the max); a threshold above every snippet score gives γ ≡ 0
    (the min). With a nearly flat softmax (the reproduction's raw temperature) every score is ≈ 1/C, so any
    threshold ≳ 0.1 means the min: the threshold only means something where scores cross it.

    Parameters
    ----------
    global_scores : array (N, C), values in [0, 1]
    local_scores : array (N, S, C), values in [0, 1]
    threshold : float in [0, 1]
    lam : float in [0, 1]
        λ (0 by default); at most 1 keeps the result in [0, 1].

    Returns
    -------
    np.ndarray (N, C), float32, values in [0, 1].
    """
    g = _check_scores("global_scores", global_scores, 2)
    loc = _check_scores("local_scores", local_scores, 3)
    if loc.shape[0] != g.shape[0] or loc.shape[2] != g.shape[1] or loc.shape[1] < 1:
        raise InvalidInputError(
            f"local_scores {loc.shape} must be (N, S, C) with N, C of global_scores {g.shape} and S >= 1"
        )
    for name, value in (("threshold", threshold), ("lam", lam)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
            raise InvalidInputError(f"{name} must be a number in [0, 1], got {value!r}")
    alpha = loc.max(axis=1)
    beta = loc.min(axis=1)
    gamma = alpha >= float(threshold)
    local = np.where(gamma, alpha, beta)
    return (0.5 * (g + local + float(lam) * np.abs(g - local))).astype(np.float32)


# --- step 5: refinement (gradient alignment) --------------------------------------------------------------------
def loss_gradient(pseudo, probs, loss: str = "kl") -> np.ndarray:
    """∂L/∂y of the batch loss between pseudo-labels y and predictions, with the predictions fixed.

    ``kl`` (the reproduction): ``L = (1/B) Σ_i KL(ŷ_i ‖ p̂_i)``, both rows renormalised to sum 1
    (ŷ = y/Σy, p̂ = p/Σp); ``∂L/∂y_ic = (log(ŷ_ic/p̂_ic) − KL_i) / (B·Σ_c y_ic)``.
    ``bce``: ``L = (1/B) Σ_i Σ_c −[y log p + (1 − y) log(1 − p)]`` (p: sigmoid outputs);
    ``∂L/∂y_ic = −logit(p_ic) / B``.

    Parameters
    ----------
    pseudo : array (B, C), values in (0, 1)
    probs : array (B, C), values in (0, 1): the predictions of the same forward pass
    loss : "kl" or "bce"

    Returns
    -------
    np.ndarray (B, C) float64.
    """
    y, p = _check_refine_inputs(pseudo, probs, loss)
    b = y.shape[0]
    if loss == "kl":
        s = y.sum(axis=1, keepdims=True)
        yh = y / s
        ph = p / p.sum(axis=1, keepdims=True)
        log_ratio = np.log(yh) - np.log(ph)
        kl = (yh * log_ratio).sum(axis=1, keepdims=True)
        return (log_ratio - kl) / (b * s)
    return -(np.log(p) - np.log1p(-p)) / b


def _check_refine_inputs(pseudo, probs, loss: str) -> tuple[np.ndarray, np.ndarray]:
    if loss not in LOSSES:
        raise InvalidInputError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    y = np.asarray(pseudo, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 2 or p.shape != y.shape or y.shape[0] == 0:
        raise InvalidInputError(
            f"pseudo and probs must be non-empty (B, C) arrays of one shape, got {y.shape} and {p.shape}"
        )
    for name, a in (("pseudo", y), ("probs", p)):
        if not np.isfinite(a).all():
            raise InvalidInputError(f"{name} contains NaN or inf")
        if a.min() < 0 or a.max() > 1:
            raise InvalidInputError(f"{name} must lie in [0, 1], got {a.min()}..{a.max()}")
    return np.clip(y, _LOW, _HIGH), np.clip(p, _LOW, _HIGH)


def gaussian_weight(pseudo, sigma: float = 1.0) -> np.ndarray:
    """ψ(y): the normal pdf at y with mean 0.5 and std ``sigma`` (at most ≈ 0.399 for σ = 1)."""
    y = np.asarray(pseudo, dtype=np.float64)
    return np.exp(-0.5 * ((y - 0.5) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def refine(pseudo, probs, *, step: float = 1.0, sigma: float = 1.0, loss: str = "kl") -> np.ndarray:
    """Step 5: one gradient-alignment update of the pseudo-labels toward the current predictions.

    ``g = ∂L/∂y`` (:func:`loss_gradient`: for ``kl`` the batch-mean KL(ŷ ‖ p̂) of the reproduction, for
    ``bce`` the batch-mean sigmoid BCE with y as the target); ``latent = logit(y)``;
    ``latent ← latent − step·ψ(y)·g`` (ψ: :func:`gaussian_weight`); ``y ← sigmoid(latent)``.

    Direction: a descent step on L in y, so each pseudo-label moves toward what the classifier predicts
    confidently — with ``kl``, up where the prediction's share of the row exceeds the pseudo-label's share
    and down where it is below; with ``bce``, up where p > 0.5 and down where p < 0.5. Labels near 0.5
    (undecided) move most; confident ones (near 0 or 1) barely. ``B`` is the number of rows (the batch):
    the update shrinks with it, as in the reproduction.

    Parameters
    ----------
    pseudo : array (B, C), values in [0, 1] (clipped to [1e-30, 1 − 2⁻²⁴])
    probs : array (B, C), values in [0, 1]: the predictions of the same forward pass (softmax for ``kl``,
        sigmoid for ``bce``)
    step : float > 0
    sigma : float > 0
    loss : "kl" or "bce"

    Returns
    -------
    np.ndarray (B, C), float32, values in (0, 1).
    """
    for name, value in (("step", step), ("sigma", sigma)):
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not (math.isfinite(float(value)) and float(value) > 0)
        ):
            raise InvalidInputError(f"{name} must be a positive number, got {value!r}")
    y, _ = _check_refine_inputs(pseudo, probs, loss)
    g = loss_gradient(y, probs, loss)
    latent = np.log(y) - np.log1p(-y)
    latent -= float(step) * gaussian_weight(y, float(sigma)) * g
    out = np.exp(-np.logaddexp(0.0, -latent))  # sigmoid, without overflow
    return np.clip(out, _LOW, _HIGH).astype(np.float32)


# --- label sets and pseudo-label quality ------------------------------------------------------------------------
def label_sets(scores: np.ndarray, thresholds) -> list[list[int]]:
    """Multi-label sets: per image the classes whose score reaches their threshold; the top class when none does.

    Parameters
    ----------
    scores : array (N, C)
    thresholds : float or array (C,)
        One threshold, or one per class.

    Returns
    -------
    list of N sorted lists of class indices (each non-empty).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise InvalidInputError(f"scores must be (N, C), got shape {s.shape}")
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (s.shape[1],))
    keep = s >= t
    empty = ~keep.any(axis=1)
    if empty.any():
        keep[np.flatnonzero(empty), s[empty].argmax(axis=1)] = True
    return [np.flatnonzero(row).tolist() for row in keep]


def class_thresholds(project: Project, classes: Sequence[str], default: float) -> np.ndarray:
    """Per-class thresholds (C,): the ones a person set (``Project.thresholds``), ``default`` for the others."""
    saved = project.thresholds()
    return np.array([float(saved.get(c, default)) for c in classes], dtype=np.float64)


def truth_matrix(project: Project, image_ids: Sequence[int], classes: Sequence[str]) -> np.ndarray | None:
    """Ground truth as sets, (N, C) bool, or None where there is none.

    From the ``ground_truth`` table (an image's true classes as a list of names) when it has rows — then only
    its images count (rows of other images are all False and ``known`` tells them apart: see
    :func:`truth_rows`); else from ``images.folder_label`` as a one-element set where it names a class.
    """
    rows = truth_rows(project, image_ids, classes)
    return None if rows is None else rows[0]


def truth_rows(
    project: Project, image_ids: Sequence[int], classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """(truth (N, C) bool, known (N,) bool) as :func:`truth_matrix` reads it, or None without any truth."""
    import json

    index = {c: k for k, c in enumerate(classes)}
    pos = {int(i): r for r, i in enumerate(image_ids)}
    truth = np.zeros((len(pos), len(index)), dtype=bool)
    known = np.zeros(len(pos), dtype=bool)
    table = project.db.execute(
        "select name from sqlite_master where type = 'table' and name = 'ground_truth'"
    ).fetchone()
    gt = project.db.execute("select image_id, labels from ground_truth").fetchall() if table else []
    if gt:
        for image_id, names in gt:
            r = pos.get(int(image_id))
            if r is None:
                continue
            try:
                listed = json.loads(names) or []
            except (TypeError, ValueError):
                continue
            known[r] = True
            for name in listed:
                if name in index:
                    truth[r, index[name]] = True
    else:
        for image_id, folder in project.db.execute("select id, folder_label from images"):
            r = pos.get(int(image_id))
            if r is not None and folder in index:
                truth[r, index[folder]] = True
                known[r] = True
    return (truth, known) if known.any() else None


def pseudo_label_quality(
    scores: dict[str, np.ndarray], thresholds, truth: np.ndarray | None = None, known: np.ndarray | None = None
) -> dict:
    """How good pseudo-labels are: mAP against ground truth where there is some; label cardinality and
    agreement with the first entry of ``scores`` (e.g. global-only) always.

    Parameters
    ----------
    scores : dict name → array (N, C)
        E.g. ``{"global": ..., "aggregated": ..., "refined": ...}`` (the first is the reference).
    thresholds : float or array (C,)
        What turns scores into sets (:func:`label_sets`).
    truth : array (N, C) bool, optional
    known : array (N,) bool, optional
        Rows of ``truth`` that are ground truth (default: all).

    Returns
    -------
    dict name → ``{"map", "ap" (per class, None where a class has no positive), "map_n" (images scored),
    "cardinality" (mean set size), "agreement" (mean Jaccard of the sets with the reference's), "top1_agreement"}``.
    """
    from ..metrics import mean_average_precision

    out: dict[str, dict] = {}
    ref_name = next(iter(scores), None)
    ref_sets = label_sets(scores[ref_name], thresholds) if ref_name is not None else None
    ref_top = np.asarray(scores[ref_name]).argmax(axis=1) if ref_name is not None else None
    for name, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        sets = label_sets(s, thresholds)
        jac = [len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in zip(sets, ref_sets, strict=True)]
        row: dict[str, Any] = {
            "cardinality": float(np.mean([len(x) for x in sets])) if sets else None,
            "agreement": float(np.mean(jac)) if jac else None,
            "top1_agreement": float((s.argmax(axis=1) == ref_top).mean()) if len(s) else None,
            "map": None,
            "ap": None,
            "map_n": 0,
        }
        if truth is not None and len(s):
            rows = np.ones(len(s), dtype=bool) if known is None else np.asarray(known, dtype=bool)
            if rows.any():
                m, ap = mean_average_precision(s[rows], np.asarray(truth)[rows])
                row["map"] = None if not np.isfinite(m) else float(m)
                row["ap"] = [None if not np.isfinite(a) else float(a) for a in ap]
                row["map_n"] = int(rows.sum())
        out[name] = row
    return out


def quality_text(quality: dict) -> str:
    """One line per kind of pseudo-label: mAP (where there is ground truth), cardinality, agreement."""
    parts = []
    for name, q in quality.items():
        m = f"mAP {q['map']:.3f}" if q.get("map") is not None else "mAP -"
        parts.append(f"{name}: {m}, {q['cardinality']:.2f} labels/image, agreement {q['agreement']:.2f}")
    return "; ".join(parts)


# --- the project side: initial pseudo-labels ---------------------------------------------------------------------
@dataclass
class InitialPseudoLabels:
    """Step 1–3 on a project: rows follow ``image_ids``; ``report`` is JSON-able."""

    image_ids: list[int]
    classes: list[str]
    global_scores: np.ndarray  # (N, C)
    local_scores: np.ndarray  # (N, S, C)
    aggregated: np.ndarray  # (N, C)
    temperature: float
    report: dict


def _clip_set(project: Project, key: str | None) -> dict:
    fset = project.features.get_set(key) if key else project.features.latest("clip")
    if fset is None or fset["kind"] != "clip":
        what = f"CLIP feature set {key!r}" if key else "CLIP features"
        raise NotReadyError(f"no {what} in this project", hint=Hint("features", option="clip"))
    return fset


def _snippet_set(project: Project, fset: dict, grid: int) -> dict:
    from ..features import snippet_key

    key = snippet_key(fset["key"], grid)
    sset = project.features.get_set(key)
    if sset is None or not project.features.count(int(sset["id"])):
        raise NotReadyError(
            f"CDUL needs the {grid}×{grid} snippet features of {fset['key']} ({grid * grid + 1} forwards per image)",
            hint=Hint("features", option="snippets"),
        )
    return sset


def initial_pseudo_labels(
    project: Project,
    *,
    features: str | None = None,
    grid: int = DEFAULT_GRID,
    temperature: float | str = "clip",
    threshold: float = 0.0,
    lam: float = 0.0,
    templates: str | list[str] = DEFAULT_TEMPLATES,
    descriptions: str = "both",
    device: str = "auto",
    image_ids: Sequence[int] | None = None,
) -> InitialPseudoLabels:
    """CDUL's initial pseudo-labels of a project's images (steps 1–3) from cached CLIP and snippet features.

    Images with both the whole-image and the snippet features are used (restricted to ``image_ids`` if given).

    Raises
    ------
    NotReadyError
        No CLIP features, no snippet features for that model and grid, fewer than two classes.
    """
    from ..describe import class_texts_report
    from ..features import feature_matrix, snippet_features
    from .zeroshot import class_text_embeddings, text_classifier

    classes = project.classes
    if len(classes) < 2:
        raise NotReadyError("the project needs at least two classes", hint=Hint("classes"))
    from ..snippets import check_grid

    grid = check_grid(grid)
    fset = _clip_set(project, features)
    sset = _snippet_set(project, fset, grid)
    g_ids, g_feats = feature_matrix(project, fset["key"])
    s_ids, s_feats = snippet_features(project, sset["key"])
    s_pos = {i: r for r, i in enumerate(s_ids)}
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    keep = [(r, s_pos[i]) for r, i in enumerate(g_ids) if i in s_pos and (wanted is None or i in wanted)]
    if not keep:
        raise NotReadyError("no image has both CLIP and snippet features yet", hint=Hint("features", option="snippets"))
    ids = [g_ids[r] for r, _ in keep]
    texts, text_report = class_texts_report(project, descriptions, templates, classes)
    embeddings, logit_scale = class_text_embeddings(project, fset, texts, device)
    classifier = text_classifier(embeddings)
    t = resolve_temperature(temperature, logit_scale)
    g = global_scores(g_feats[[r for r, _ in keep]], classifier, t)
    local = snippet_scores(s_feats[[s for _, s in keep]], classifier, t)
    agg = aggregate(g, local, threshold, lam)
    crosses = float((local.max(axis=1) >= threshold).mean())
    report = {
        "features": fset["key"],
        "snippets": sset["key"],
        "grid": grid,
        "temperature": t,
        "temperature_option": temperature,
        "logit_scale": float(logit_scale),
        "threshold": float(threshold),
        "lam": float(lam),
        "texts": text_report["message"],
        "texts_per_class": text_report["texts_per_class"],
        "images": len(ids),
        "without_snippets": len(g_ids) - len([1 for i in g_ids if i in s_pos]),
        # the share of (image, class) pairs whose snippet max reaches the threshold (γ = 1: the max is used)
        "threshold_uses_max": crosses,
    }
    return InitialPseudoLabels(ids, list(classes), g, local, agg, t, report)


@dataclass
class CDULInitParams:
    """Options of the ``cdul-init`` method (CDUL's aggregated pseudo-labels, no training)."""

    grid: int = DEFAULT_GRID  # snippets per side (grid² crops)
    temperature: float | str = (
        "clip"  # clip: CLIP's logit_scale.exp() (100) | raw: its log (the reproduction's) | a number
    )
    threshold: float = 0.0  # aggregation: per class the snippets' max where it reaches this, else their min
    lam: float = 0.0  # λ: weight of |global − local| in the pseudo-label
    label_threshold: float = 0.5  # multi-label sets: classes whose pseudo-label reaches this (per class: set ones win)
    templates: str | list[str] = DEFAULT_TEMPLATES  # as zero-shot; the reproduction: "a photo of a {c}" (photo)
    descriptions: str = "both"  # none | llm | both, as zero-shot
    features: str | None = None  # CLIP feature-set key; the newest CLIP set when None
    device: str = "auto"


def _check_unit(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise InvalidInputError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def cost_line(project: Project, grid: int = DEFAULT_GRID, features: str | None = None) -> str:
    """What CDUL's features cost on this project, and how many images have them already (for a preview)."""
    from ..features import snippet_key
    from ..snippets import snippet_cost

    n = project.image_count()
    line = snippet_cost(n, grid)
    fset = project.features.get_set(features) if features else project.features.latest("clip")
    if fset is not None:
        sset = project.features.get_set(snippet_key(fset["key"], grid))
        have = project.features.count(int(sset["id"])) if sset else 0
        line += f"; snippet features cached for {have} of {n} images"
    return line


class CDULInit(Method):
    """CDUL's initial pseudo-labels: global + snippet CLIP similarity, aggregated (no training)."""

    name = "cdul-init"
    summary = "CDUL pseudo-labels: CLIP global + 3×3 snippet similarity aggregation (multi-label, no training)"
    Params = CDULInitParams

    def run(
        self, project: Project, params: CDULInitParams | None = None, on_progress: ProgressCallback | None = None
    ) -> RunResult:
        from ..jobs import Job
        from ..labels import set_active_run, write_predictions

        params = params or CDULInitParams()
        if not project.multi_label:
            raise InvalidInputError(
                "CDUL labels multi-label projects; this project is single-label (use zeroshot there, or create a "
                "multi-label project)"
            )
        _check_unit("threshold", params.threshold)
        _check_unit("lam", params.lam)
        _check_unit("label_threshold", params.label_threshold)
        fset = _clip_set(project, params.features)
        _snippet_set(project, fset, params.grid)
        run_params = {**asdict(params), "features": fset["key"], "classes": project.classes, "multi_label": True}
        with Job.start(project, "label", method=self.name, params=run_params, on_progress=on_progress) as job:
            job.progress(0, 1, "scoring the whole images and their snippets", force=True)
            init = initial_pseudo_labels(
                project,
                features=fset["key"],
                grid=params.grid,
                temperature=params.temperature,
                threshold=params.threshold,
                lam=params.lam,
                templates=params.templates,
                descriptions=params.descriptions,
                device=params.device,
            )
            thresholds = class_thresholds(project, init.classes, params.label_threshold)
            sets = label_sets(init.aggregated, thresholds)
            chunk = 4096
            for start in range(0, len(init.image_ids), chunk):
                end = start + chunk
                write_predictions(
                    project, job.id, init.image_ids[start:end], init.aggregated[start:end], sets[start:end]
                )
                job.progress(min(end, len(init.image_ids)), len(init.image_ids), "writing pseudo-labels")
            truth = truth_rows(project, init.image_ids, init.classes)
            quality = pseudo_label_quality(
                {"global": init.global_scores, "aggregated": init.aggregated},
                thresholds,
                *(truth if truth is not None else (None, None)),
            )
            counts = np.zeros(len(init.classes), dtype=np.int64)
            for s in sets:
                counts[s] += 1
            metrics = {
                "n": len(init.image_ids),
                "mean_confidence": float(init.aggregated.max(axis=1).mean()),
                "class_counts": dict(zip(init.classes, counts.tolist(), strict=True)),
                "texts": init.report["texts"],
                "cdul": init.report,
                "thresholds": dict(zip(init.classes, thresholds.tolist(), strict=True)),
                "pseudo_labels": quality,
                "quality": quality_text(quality),
                "cost": cost_line(project, params.grid, fset["key"]),
            }
            job.update_metrics(**metrics)
        set_active_run(project, job.id)
        return RunResult(job.id, metrics)


# --- cdul: the trained classifier with refinement ------------------------------------------------------------------
#: ``backbone`` values: a head on the frozen cached features (ours), or a network fine-tuned end to end on the images:
#: the reproduction's ImageNet ResNet-101, or the project's CLIP image tower (:mod:`labeler.train.cdul_net`).
BACKBONES = ("head", "resnet101", "clip")
FINE_TUNED = ("resnet101", "clip")
#: What a fine-tuned backbone takes under our recipe where not given (the reproduction's Adam 1e-5, batch 8).
FINE_TUNE_DEFAULTS = {"lr": 1e-5, "batch_size": 8}


@dataclass
class CDULParams(TrainParams):
    """Options of the ``cdul`` method (training options: :class:`labeler.train.params.TrainParams`)."""

    recipe: str = "labeler"  # labeler (a head on cached features) | paper (the reproduction's settings)
    features: str | None = None  # CLIP feature-set key (global scores, snippets, class texts); newest CLIP set if None
    head_features: str = "clip"  # what the head reads: clip (the set above) | dino (the newest DINO set) | a set key
    backbone: str | None = None  # head | resnet101 | clip; None: the recipe's
    backbone_weights: str | None = None  # resnet101: a local ImageNet state dict; None: the torch hub cache's file
    weight_decay: float | None = None  # AdamW, never on biases; None: the recipe's (ours 0.01, the paper's Adam 0)
    hidden: int = 0  # 0: a linear head; > 0: an MLP with this hidden width
    loss: str | None = None  # bce | kl; None: the recipe's
    refine_warmup: int | None = None  # epochs before the first refinement; None: the recipe's
    refine_every: int | None = None  # refine in every F-th epoch after the warm-up (0: never); None: the recipe's
    refine_step: float = 1.0
    sigma: float = 1.0
    grid: int = DEFAULT_GRID
    temperature: float | str = "clip"
    threshold: float = 0.0
    lam: float = 0.0
    label_threshold: float = 0.5
    templates: str | list[str] = DEFAULT_TEMPLATES
    descriptions: str = "both"


def human_label_sets(
    project: Project, image_ids: Sequence[int], classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(targets (N, C) float32 multi-hot, has (N,) bool): a person's label sets (``human`` and ``accepted``).

    A person's "none of the classes" (a stored empty set) is a valid target: an all-zero row with ``has`` True
    (a negative for every class). A label whose classes are all outside ``classes`` gives none (``has`` False).
    Audit images are left out (their labels are a test set, never training data). How the rows become training
    targets under each loss: :func:`human_targets`.
    """
    import json

    from ..audit import sampled_ids

    index = {c: k for k, c in enumerate(classes)}
    pos = {int(i): r for r, i in enumerate(image_ids)}
    out = np.zeros((len(pos), len(index)), dtype=np.float32)
    has = np.zeros(len(pos), dtype=bool)
    audited = sampled_ids(project)
    for image_id, names in project.db.execute(
        "select image_id, classes from labels where source in ('human', 'accepted')"
    ):
        r = pos.get(int(image_id))
        if r is None or int(image_id) in audited:
            continue
        try:
            stored = json.loads(names)
            listed = [index[n] for n in stored or [] if n in index]
        except (TypeError, ValueError):
            continue
        if listed or stored == []:
            out[r, listed] = 1.0
            has[r] = True
    return out, has


def net_cost(params: dict, train: int, scored: int) -> str:
    """What fine-tuning a backbone costs, in words: the forwards and backwards per epoch and in all."""
    epochs = int(params["epochs"])
    what = (
        "torchvision's ResNet-101 (44.5 M parameters)"
        if params["backbone"] == "resnet101"
        else (f"the CLIP image tower of {params['base']['model']}")
    )
    return (
        f"fine-tunes {what} end to end on the images: each epoch decodes {train} training images (one forward and "
        f"backward each) and {scored} held-out ones (a forward); {epochs} epochs ≈ {epochs * (train + scored):,} "
        "image forwards, decoding the images every epoch"
    )


def human_targets(
    aggregated: np.ndarray, human_sets: np.ndarray, has_human: np.ndarray, loss: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """The training targets: the aggregated pseudo-labels with a person's label sets in their rows.

    Parameters
    ----------
    aggregated : array (N, C)
        Soft pseudo-labels in [0, 1].
    human_sets, has_human : array (N, C), bool array (N,)
        :func:`human_label_sets`.
    loss : "kl" or "bce"

    Returns
    -------
    (targets (N, C) float32, fixed (N,) bool, skipped int)
        ``fixed``: the rows holding a person's set (never refined). With ``bce`` a "none of the classes" row
        is an all-zero target like any other set. With ``kl`` (softmax outputs, target rows renormalised to
        sum 1) an all-zero row cannot be expressed — it would become the uniform distribution, "every class a
        little" — so those rows keep their pseudo-label and are refined as usual; ``skipped`` counts them (the
        run report's ``human_none_skipped``).
    """
    if loss not in LOSSES:
        raise InvalidInputError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    sets = np.asarray(human_sets, dtype=np.float32)
    fixed = np.asarray(has_human, dtype=bool).copy()
    skipped = 0
    if loss == "kl":
        none = fixed & (sets.sum(axis=1) == 0)
        skipped = int(none.sum())
        fixed &= ~none
    targets = np.asarray(aggregated, dtype=np.float32).copy()
    targets[fixed] = sets[fixed]
    return targets, fixed, skipped


class CDUL(TrainableMethod):
    """CDUL: a classifier trained on the aggregated pseudo-labels, refining them by gradient alignment."""

    name = "cdul"
    summary = "CDUL: classifier on aggregated global + snippet pseudo-labels, refined while training (multi-label)"
    Params = CDULParams
    default_lr = 1e-2

    # --- params ------------------------------------------------------------------------------------------------
    def resolve(self, project: Project, params: Any) -> dict:
        from ..device import resolve_device
        from ..snippets import check_grid
        from ..train.params import resolve_training
        from ..train.recipes import apply_recipe

        if not isinstance(params, CDULParams):
            raise InvalidInputError(f"cdul takes CDULParams, got {type(params).__name__}")
        if len(project.classes) < 2:
            raise NotReadyError("the project needs at least two classes", hint=Hint("classes"))
        if not project.multi_label:
            raise InvalidInputError(
                "cdul trains a multi-label classifier; this project is single-label (use nola or lafter there)"
            )
        device = resolve_device(params.device)
        values = asdict(params)
        if values.get("backbone") in FINE_TUNED and (values.get("recipe") or "labeler") == "labeler":
            # our recipe's lr and batch are a fresh head's: a pretrained backbone takes the reproduction's
            for name, value in FINE_TUNE_DEFAULTS.items():
                if values.get(name) is None:
                    values[name] = value
        values = apply_recipe(values, self.name, device.type)
        values = resolve_training(values, device.type, self.default_lr)
        values["grid"] = check_grid(values["grid"])
        for name in ("threshold", "lam", "label_threshold"):
            values[name] = _check_unit(name, values[name])
        if values["loss"] not in LOSSES:
            raise InvalidInputError(f"loss must be one of {', '.join(LOSSES)}, got {values['loss']!r}")
        if values["backbone"] not in BACKBONES:
            raise InvalidInputError(f"backbone must be one of {', '.join(BACKBONES)}, got {values['backbone']!r}")
        for name in ("refine_warmup", "refine_every", "hidden"):
            v = values[name]
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < 0:
                raise InvalidInputError(f"{name} must be an integer >= 0, got {v!r}")
            values[name] = int(v)
        for name in ("refine_step", "sigma"):
            v = values[name]
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not float(v) > 0:
                raise InvalidInputError(f"{name} must be a positive number, got {v!r}")
        resolve_temperature(values["temperature"], 100.0)  # checks the option; the model's scale is applied later
        if values["refine_every"]:
            # label-free early stopping never ends a run before its first refinement epoch has had its say
            values["patience"] = max(int(values["patience"]), values["refine_warmup"] + values["refine_every"])
        if values["backbone"] == "resnet101":
            from ..train.cdul_net import resnet101_weights

            values["backbone_weights"] = resnet101_weights(values.get("backbone_weights"))
        elif values.get("backbone_weights"):
            raise InvalidInputError(
                f"backbone_weights is for the resnet101 backbone, not {values['backbone']!r}",
                hint=Hint(option="backbone_weights"),
            )
        fset = _clip_set(project, values.get("features"))
        _snippet_set(project, fset, values["grid"])
        values["features"] = fset["key"]
        values["head_features"] = self._head_set(project, values.get("head_features") or "clip", fset)["key"]
        values["base"] = {"model": fset["model"], "pretrained": fset["pretrained"] or None, "key": fset["key"]}
        values["classes"] = list(project.classes)
        values["multi_label"] = True
        return values

    @staticmethod
    def _head_set(project: Project, choice: str, fset: dict) -> dict:
        if choice == "clip":
            return fset
        if choice == "dino":
            dset = project.features.latest("dino")
            if dset is None:
                raise NotReadyError("a head on DINO features needs DINO features", hint=Hint("features", option="dino"))
            return dset
        other = project.features.get_set(choice)
        if other is None or other["kind"] not in ("clip", "dino"):
            raise NotReadyError(f"no CLIP or DINO feature set {choice!r} in this project", hint=Hint("features"))
        return other

    # --- setup ----------------------------------------------------------------------------------------------
    def setup(self, project: Project, params: dict, job) -> dict:
        import torch

        from ..features import feature_matrix
        from ..train.data import training_split, without_audit

        classes = params["classes"]
        job.progress(0, 1, "CDUL: scoring the whole images and their snippets", force=True)
        head_ids, _ = feature_matrix(project, params["head_features"])
        usable = set(without_audit(project, head_ids))  # the audit sample is a test set: never trained on
        init = initial_pseudo_labels(
            project,
            features=params["features"],
            grid=params["grid"],
            temperature=params["temperature"],
            threshold=params["threshold"],
            lam=params["lam"],
            templates=params["templates"],
            descriptions=params["descriptions"],
            device=params["device"],
            image_ids=sorted(usable),
        )
        ids = init.image_ids
        if len(ids) < 2:
            raise NotReadyError(f"cdul needs at least 2 images to train on, found {len(ids)}", hint=Hint("features"))
        human_sets, has_human = human_label_sets(project, ids, classes)
        targets, has_human, none_skipped = human_targets(init.aggregated, human_sets, has_human, params["loss"])
        verified, rows = training_split(project, ids, classes, params)
        thresholds = class_thresholds(project, classes, params["label_threshold"])
        truth = truth_rows(project, ids, classes)
        quality = pseudo_label_quality(
            {"global": init.global_scores, "aggregated": init.aggregated},
            thresholds,
            *(truth if truth is not None else (None, None)),
        )
        report = {
            **init.report,
            "train": int(len(rows["train"])),
            "holdout": int(len(rows["holdout"])),
            "val": int(len(rows["val"])),
            "val_reason": rows["val_reason"],
            "human_label_sets": int(has_human.sum()),
            "human_none_skipped": none_skipped,  # kl: "none of the classes" rows keep their pseudo-label
            "audit_excluded": len(head_ids) - len(usable),
            "head_features": params["head_features"],
            "pseudo_labels": quality,
            "quality": quality_text(quality),
            "notes": [],
            "warnings": [],
        }
        if params["backbone"] != "head":
            report["notes"].append(net_cost(params, len(rows["train"]), len(rows["holdout"]) + len(rows["val"])))
            if params["device"] == "cpu" or not torch.cuda.is_available():
                report["warnings"].append(
                    f"fine-tuning a {params['backbone']} backbone on a CPU is slow (hours for the paper's 100 epochs "
                    "on a few thousand images); a GPU, or a head on the cached features (--recipe labeler), is faster"
                )
        return {
            "image_ids": torch.tensor(ids, dtype=torch.long),
            "rows": {k: torch.from_numpy(np.asarray(rows[k], dtype=np.int64)) for k in ("train", "holdout", "val")},
            "verified": torch.from_numpy(verified),
            "global": torch.from_numpy(init.global_scores.astype(np.float32)),
            "aggregated": torch.from_numpy(init.aggregated.astype(np.float32)),
            "targets": torch.from_numpy(targets),
            "fixed": torch.from_numpy(has_human),
            "report": report,
        }

    def build_task(self, project: Project, params: dict, setup: dict, job):
        from ..device import resolve_device
        from ..features import feature_matrix
        from ..train.cdul import CDULHeadTask, CDULTargets, encoder_info
        from ..train.runs import run_dir

        device = resolve_device(params["device"])
        ids = setup["image_ids"].tolist()
        f_ids, feats = feature_matrix(project, params["head_features"])
        pos = {i: r for r, i in enumerate(f_ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise NotReadyError(
                f"{len(missing)} training images lost their {params['head_features']} features since the run "
                "started; compute them again",
                hint=Hint("features"),
            )
        classes = list(params["classes"])
        thresholds = class_thresholds(project, classes, params["label_threshold"])
        truth = truth_rows(project, ids, classes)
        folder = run_dir(project, job.id)
        base = {"global": setup["global"].numpy(), "aggregated": setup["aggregated"].numpy()}

        def on_refined(epoch: int, targets: np.ndarray) -> None:
            np.savez(folder / "pseudo_labels.npz", image_ids=np.asarray(ids), labels=targets, epoch=epoch)
            quality = pseudo_label_quality(
                {**base, "refined": targets}, thresholds, *(truth if truth is not None else (None, None))
            )
            job.update_metrics(pseudo_labels=quality, quality=quality_text(quality), refined_epoch=epoch)

        info = {
            "method": self.name,
            "classes": classes,
            "features": params["head_features"],
            # which model computes the head's input, so the model file labels new images by itself (apply)
            "encoder": encoder_info(project.features.get_set(params["head_features"])),
            "base": {"features": params["features"], "grid": params["grid"]},
            "recipe": params.get("recipe", "labeler"),
            "label_threshold": params["label_threshold"],
        }
        if params["backbone"] != "head":
            return self._net_task(project, params, setup, info, device, on_refined)
        return CDULHeadTask(
            feats[[pos[i] for i in ids]],
            CDULTargets.from_setup(setup),
            params,
            device,
            info,
            refiner=refine,
            on_refined=on_refined,
        )

    def _net_task(self, project: Project, params: dict, setup: dict, info: dict, device, on_refined):
        """The fine-tuned network's task (``backbone`` resnet101 or clip): images decoded every epoch."""
        from ..train.cdul import CDULTargets
        from ..train.cdul_net import CDULNetTask, build_net

        clip = None
        if params["backbone"] == "clip":
            clip = self._clip(params, device)
            self._clip_cache = None  # the task trains (changes) this model
        net, transform, net_info = build_net(
            params["backbone"],
            len(params["classes"]),
            clip=clip,
            weights=params.get("backbone_weights"),
            seed=int(params.get("seed", 0)),
        )
        info = {k: v for k, v in info.items() if k not in ("features", "encoder")}
        info.update(net_info, base=params["base"] if params["backbone"] == "clip" else None)
        ids = setup["image_ids"].tolist()
        path_of = dict(project.db.execute("select id, path from images").fetchall())
        return CDULNetTask(
            net,
            [path_of.get(i, "") for i in ids],
            transform,
            2 * int(net_info.get("resize") or net_info["image_size"]),
            CDULTargets.from_setup(setup),
            params,
            device,
            info,
            refiner=refine,
            on_refined=on_refined,
        )

    # --- inference --------------------------------------------------------------------------------------------
    def load_predictor(self, project: Project, run: dict, device: str = "auto"):
        """The trained model: a head (:class:`labeler.train.cdul.CDULHead`: ``predict(features) -> (N, C)``) or a
        fine-tuned network (:class:`labeler.train.cdul_net.CDULNetModel`: ``predict_proba(batch) -> (B, C)``)."""
        from ..device import resolve_device
        from ..train.cdul import CDULHead
        from ..train.cdul_net import NET_FORMAT, CDULNetModel
        from ..train.loop import BEST, load
        from ..train.runs import run_dir

        path = run_dir(project, run["id"]) / BEST
        if not path.is_file():
            raise NotReadyError(f"run {run['id']} has no trained model yet (no epoch finished): resume or rerun it")
        data = load(path)
        if data.get("format") == NET_FORMAT:
            return CDULNetModel(data, device)
        return CDULHead(data, resolve_device(device))

    @staticmethod
    def _net_scores(project: Project, model, job, batch_size: int, workers: int | None):
        """(image ids, scores (N, C), failed) of every ok image through a fine-tuned network, with progress."""
        import torch

        from ..train.views import image_loader

        images = project.images()
        loader = image_loader(
            [im["path"] for im in images],
            model.transform,
            batch_size,
            num_workers=workers,
            device=model.device,
            min_side=model.min_side,
        )
        ids: list[int] = []
        out: list[np.ndarray] = []
        failed = done = 0
        job.progress(0, len(images), "labeling with the fine-tuned CDUL network", force=True)
        with torch.no_grad():
            for rows, views, bad in loader:
                failed += len(bad)
                if len(rows):
                    out.append(model.predict_proba(views[0]))
                    ids += [int(images[r]["id"]) for r in rows.tolist()]
                done += len(rows) + len(bad)
                job.progress(done, len(images), f"scored {done - failed} of {len(images)} images")
        scores = np.concatenate(out) if out else np.zeros((0, len(model.classes)), dtype=np.float32)
        return ids, scores.astype(np.float32), failed

    def relabel(
        self,
        project: Project,
        run: dict,
        *,
        device: str = "auto",
        batch_size: int = 64,
        workers: int | None = None,
        on_progress: ProgressCallback | None = None,
        activate: bool = True,
        **_: Any,
    ) -> RunResult:
        """Label the images with the trained model: a new multi-label run.

        A head labels every image with cached features; a fine-tuned network (``backbone`` resnet101 or clip)
        decodes every ok image (``batch_size``, ``workers``; an unreadable one is counted in ``failed``). Scores
        are sigmoid or softmax; an image's set is the classes reaching their threshold (the per-class ones a
        person set, else the run's ``label_threshold``), its top class when none does.
        """
        from ..features import feature_matrix
        from ..jobs import Job
        from ..labels import active_run, set_active_run, write_predictions
        from ..train.runs import compare_runs

        head = self.load_predictor(project, run, device)
        previous = active_run(project)
        net = not hasattr(head, "features_key")  # a fine-tuned network reads the images, a head the cached features
        if net:
            if not project.images():
                raise NotReadyError("the project has no images to label: import some first")
            ids, feats = [], None
        else:
            ids, feats = feature_matrix(project, head.features_key)
            if not ids:
                raise NotReadyError(f"no image has {head.features_key} features to label", hint=Hint("features"))
        classes = head.classes
        threshold = float(run["params"].get("label_threshold", 0.5))
        thresholds = class_thresholds(project, classes, threshold)
        params = {
            "classes": classes,
            "multi_label": True,
            "train_run": run["id"],
            "train_method": run["method"],
            "train_status": run["status"],
            "epoch": head.info.get("epoch"),
            "selection": head.info.get("selection"),
            "features": None if net else head.features_key,
            "backbone": head.info.get("backbone") or "head",
            "label_threshold": threshold,
            "device": str(head.device),
        }
        with Job.start(project, "label", method=self.name, params=params, on_progress=on_progress) as job:
            failed = 0
            if net:
                ids, scores, failed = self._net_scores(project, head, job, batch_size, workers)
                if not ids:
                    raise NotReadyError("no image of the project could be read to label")
            else:
                job.progress(0, len(ids), "labeling with the trained CDUL head", force=True)
                scores = head.predict(feats)
            sets = label_sets(scores, thresholds)
            chunk = 4096
            for start in range(0, len(ids), chunk):
                end = start + chunk
                write_predictions(project, job.id, ids[start:end], scores[start:end], sets[start:end])
                job.progress(min(end, len(ids)), len(ids), "writing labels")
            counts = np.zeros(len(classes), dtype=np.int64)
            for s in sets:
                counts[s] += 1
            truth = truth_rows(project, ids, classes)
            quality = pseudo_label_quality(
                {"classifier": scores}, thresholds, *(truth if truth is not None else (None, None))
            )
            metrics = {
                "n": len(ids),
                "failed": failed,
                "mean_confidence": float(scores.max(axis=1).mean()),
                "class_counts": dict(zip(classes, counts.tolist(), strict=True)),
                "train_run": run["id"],
                "epoch": head.info.get("epoch"),
                "thresholds": dict(zip(classes, thresholds.tolist(), strict=True)),
                "classifier": quality["classifier"],
                "pseudo_labels": run["metrics"].get("pseudo_labels")
                or run["metrics"].get("setup", {}).get("pseudo_labels"),
            }
            metrics["comparison"] = compare_runs(project, previous["id"], job.id) if previous else None
            job.update_metrics(**metrics)
        if activate:
            set_active_run(project, job.id)
        return RunResult(job.id, metrics)
