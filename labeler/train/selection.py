"""Label-free model selection: which epoch's model a training run keeps (pure numpy).

The loop (:func:`labeler.train.loop.run_training`) scores the untrained model (epoch 0, ≈ CLIP
zero-shot) and every trained epoch with :func:`epoch_scores` on the held-out images, then asks
:func:`choose_epoch` which one to keep. The rule, and why:

* **Collapse is never chosen while something else is.** A student that agrees with its teacher on
  everything is only good if the two did not both collapse to a few classes (LaFTer's teacher shares
  the student's LayerNorms and can collapse with it; NoLA's fixed teacher can itself be collapsed
  when the DINO features carry no class information). An epoch is *degenerate* when the entropy of
  its predicted class distribution fell below half that of the reference (the untrained model's
  top-1 distribution on the same images): an imbalance the reference shares is not a collapse.
* **The untrained model is a candidate.** ``history[0]`` is epoch 0; when training only hurts the
  score, the run keeps (and exports, and labels with) the untrained model.
* **An improvement must exceed the noise.** Scores are fractions of ``n`` images, so they carry a
  binomial standard error ``sqrt(p(1-p)/n)`` (≈ 2 % at 60 % on 500 images); a later epoch replaces
  the kept one only when its score is higher by more than that (and more than ``min_delta``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: An epoch is degenerate when its class entropy is below this fraction of the reference's.
COLLAPSE_RATIO = 0.5


def _top1(values, name: str) -> np.ndarray:
    arr = np.asarray(values if values is not None else [], dtype=np.int64).reshape(-1)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds negative class indices")
    return arr


def class_entropy(predictions, n_classes: int) -> float | None:
    """Entropy of the predicted class distribution, normalised to [0, 1] (1: uniform over ``n_classes``).

    None when there are no predictions; 0 for fewer than 2 classes.
    """
    p = _top1(predictions, "predictions")
    if not p.size:
        return None
    n_classes = max(int(n_classes), int(p.max()) + 1)
    if n_classes < 2:
        return 0.0
    freq = np.bincount(p, minlength=n_classes) / p.size
    freq = freq[freq > 0]
    return float(-(freq * np.log(freq)).sum() / math.log(n_classes))


def is_degenerate(predictions, n_classes: int, reference=None) -> bool:
    """Whether ``predictions`` collapsed relative to ``reference`` (see the module docstring).

    Without a reference the uniform distribution is the reference. Never degenerate when the reference
    itself has zero entropy (it cannot collapse further) or there are no predictions.
    """
    h = class_entropy(predictions, n_classes)
    if h is None:
        return False
    ref = class_entropy(reference, n_classes) if reference is not None else 1.0
    if ref is None:
        ref = 1.0
    return bool(ref > 0 and h < COLLAPSE_RATIO * ref)


def epoch_scores(student, teacher, n_classes: int, previous=None, reference=None) -> dict:
    """Label-free scores of one epoch's top-1 predictions on the held-out images.

    Parameters
    ----------
    student, teacher : int arrays (n,)
        Top-1 class indices of the student and the teacher (or the ground truth, for a validation set).
    n_classes : int
    previous : int array (n,), optional
        The student's top-1 of the previous scored epoch (churn).
    reference : int array, optional
        What a healthy class distribution looks like, e.g. the untrained (zero-shot) model's top-1 on
        the same images; without it, uniform.

    Returns
    -------
    dict
        ``n``; ``agreement`` (student == teacher, None without images); ``churn`` (fraction changed since
        ``previous``, None without it); ``class_entropy`` (normalised, of the student); ``degenerate``
        (the student's distribution collapsed relative to ``reference``); ``teacher_entropy`` and
        ``teacher_degenerate`` (the same for the teacher).
    """
    s = _top1(student, "student")
    t = _top1(teacher, "teacher")
    if len(t) != len(s):
        raise ValueError(f"student ({len(s)}) and teacher ({len(t)}) predictions differ in length")
    n = int(len(s))
    churn = None
    if previous is not None and n:
        prev = _top1(previous, "previous")
        if len(prev) == n:
            churn = float((prev != s).mean())
    return {
        "n": n,
        "agreement": float((s == t).mean()) if n else None,
        "churn": churn,
        "class_entropy": class_entropy(s, n_classes),
        "degenerate": is_degenerate(s, n_classes, reference),
        "teacher_entropy": class_entropy(t, n_classes),
        "teacher_degenerate": is_degenerate(t, n_classes, reference),
    }


def noise_margin(score: float, n: int, min_delta: float = 0.0) -> float:
    """How much a score measured on ``n`` images must rise to count: ``max(min_delta, sqrt(p(1-p)/n))``.

    ``p`` is clipped to ``[1/n, 1 - 1/n]`` so a score of 0 or 1 still has a margin of about one image.
    """
    if not n:
        return float(min_delta)
    p = min(max(float(score), 1.0 / n), 1.0 - 1.0 / n) if n > 1 else 0.5
    return max(float(min_delta), math.sqrt(p * (1.0 - p) / n))


def _score(entry: dict) -> float | None:
    value = entry.get("score", entry.get("agreement"))
    return None if value is None else float(value)


def choice_reason(history: Sequence[dict], chosen: int, min_delta: float = 0.0) -> str:
    """Why :func:`choose_epoch` kept ``history[chosen]``, in words (for the run summary)."""
    scored = [i for i, h in enumerate(history) if _score(h) is not None]
    if not scored:
        return "no held-out or validation images to score: the last epoch (fixed schedule)"
    healthy = [i for i in scored if not history[i].get("degenerate")]
    pool = healthy or scored
    best = chosen
    what = "the untrained model (epoch 0)" if best == 0 else f"epoch {best}"
    parts = [f"{what} scored {_score(history[best]):.3f}"]
    later = [i for i in pool if i > best]
    if later:
        top = max(later, key=lambda i: _score(history[i]))
        parts.append(
            f"no later epoch beat it by more than the noise "
            f"(±{noise_margin(_score(history[best]), int(history[best].get('n') or 0), min_delta):.3f}; "
            f"best later: epoch {top}, {_score(history[top]):.3f})"
        )
    skipped = [i for i in scored if history[i].get("degenerate")]
    if skipped and healthy:
        parts.append(f"collapsed epochs left out: {', '.join(str(i) for i in skipped)}")
    elif not healthy:
        parts.append("every epoch's predictions collapsed to few classes; kept the best of them anyway")
    return "; ".join(parts)


def explain_choice(history: Sequence[dict], min_delta: float = 0.0) -> tuple[int, str]:
    """(:func:`choose_epoch`, :func:`choice_reason`)."""
    chosen = choose_epoch(history, min_delta)
    return chosen, choice_reason(history, chosen, min_delta)


def choose_epoch(history: Sequence[dict], min_delta: float = 0.0) -> int:
    """The epoch to keep: an index into ``history``, where ``history[0]`` scores the untrained model.

    Parameters
    ----------
    history : sequence of dict
        One :func:`epoch_scores` dict per epoch (epoch 0 first). The score is ``entry["score"]`` when
        present (e.g. validation accuracy), else ``entry["agreement"]``; ``n`` (images scored) sets the
        noise; ``degenerate`` marks a collapsed epoch.
    min_delta : float
        A floor under the noise margin.

    Returns
    -------
    int
        Walking the epochs in order, the kept one changes to a later epoch only when that epoch's score
        beats it by more than :func:`noise_margin`; degenerate epochs are skipped while any epoch is not
        degenerate. Without any score, the last epoch.
    """
    if not history:
        raise ValueError("there is no epoch to choose from")
    scored = [i for i, h in enumerate(history) if _score(h) is not None]
    if not scored:
        return len(history) - 1
    pool = [i for i in scored if not history[i].get("degenerate")] or scored
    best = pool[0]
    for i in pool[1:]:
        need = noise_margin(_score(history[best]), int(history[best].get("n") or 0), min_delta)
        if _score(history[i]) > _score(history[best]) + need:
            best = i
    return best
