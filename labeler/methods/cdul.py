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
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidInputError
from ..snippets import DEFAULT_GRID, snippet_boxes

if TYPE_CHECKING:
    pass

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
