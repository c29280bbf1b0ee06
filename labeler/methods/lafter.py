"""LaFTer baseline: a text-trained classifier pseudo-labels the weak view to teach a prompt-tuned CLIP.

1. :func:`train_text_classifier` — a linear head (no bias) trained on the CLIP text embeddings of the
   class texts (templates + descriptions) with Gaussian noise (std 0.1) added to them, cross-entropy
   with label smoothing 0.1, AdamW, a few hundred full-batch steps. Text and image embeddings share
   CLIP's space, so the head transfers to images.
2. Prompt tuning as in NoLA (same student, same strong view), with this head as the teacher: applied on
   the fly to the student's own weak-view features without prompts (L2-normalised), its argmax is the
   target. The student's head starts from the text-trained head (as in the official code); 50 prompt
   tokens, lr 5e-4.

The text head's lr and steps, the batch size, schedule and strong view come from the run's recipe
(:mod:`labeler.train.recipes`: ``labeler`` ours, ``paper`` the official code's).

No DINO anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from .prompt_tuning import PromptTuningMethod, PromptTuningParams


def train_text_classifier(
    embeddings_per_class: Sequence[np.ndarray],
    *,
    steps: int = 300,
    lr: float = 1e-3,
    noise_std: float = 0.1,
    label_smoothing: float = 0.1,
    weight_decay: float = 0.01,
    seed: int = 0,
) -> np.ndarray:
    """LaFTer's text classifier: weights (C, D) of a bias-free linear head trained on noisy text embeddings.

    Parameters
    ----------
    embeddings_per_class : sequence of C arrays (T_c, D)
        CLIP text embeddings of each class's texts (each L2-normalised here).
    steps, lr, noise_std, label_smoothing, weight_decay, seed
        Full-batch AdamW steps (300), learning rate (1e-3), std of the Gaussian noise added to the
        embeddings at every step (0.1), label smoothing (0.1), AdamW weight decay, seed.

    Returns
    -------
    np.ndarray (C, D), float32.
    """
    import torch
    import torch.nn.functional as F

    if len(embeddings_per_class) < 2:
        raise InvalidInputError("the text classifier needs at least two classes")
    xs, ys, dim = [], [], None
    for c, emb in enumerate(embeddings_per_class):
        arr = np.asarray(emb, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] == 0 or (dim is not None and arr.shape[1] != dim):
            raise InvalidInputError(
                f"class {c}: expected text embeddings (T, {dim or 'D'}) with T >= 1, got {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise InvalidInputError(f"class {c}: text embeddings contain NaN or inf")
        dim = arr.shape[1]
        xs.append(arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12))
        ys.append(np.full(len(arr), c, dtype=np.int64))
    if steps < 1 or lr <= 0 or noise_std < 0:
        raise InvalidInputError(f"steps must be >= 1, lr > 0 and noise_std >= 0 (got {steps}, {lr}, {noise_std})")
    x = torch.from_numpy(np.concatenate(xs))
    y = torch.from_numpy(np.concatenate(ys))
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        head = torch.nn.Linear(dim, len(embeddings_per_class), bias=False)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(int(steps)):
        noisy = x + noise_std * torch.randn(x.shape, generator=gen)
        loss = F.cross_entropy(head(noisy), y, label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.weight.detach().numpy().astype(np.float32)


@dataclass
class LaFTerParams(PromptTuningParams):
    """Options of the ``lafter`` method (training options: :class:`~PromptTuningParams`)."""

    text_steps: int | None = None  # full-batch AdamW steps of the text classifier; None: the recipe's (300 / 400)
    text_lr: float | None = None  # None: the recipe's (labeler 1e-3, paper 5e-4)
    text_noise: float = 0.1  # std of the Gaussian noise added to the text embeddings


class LaFTer(PromptTuningMethod):
    """LaFTer: prompt tuning supervised by a classifier trained on text alone (no DINO)."""

    name = "lafter"
    summary = "LaFTer: text-trained classifier pseudo-labels the weak view to prompt-tune CLIP (trains; baseline)"
    Params = LaFTerParams
    default_tokens = 50
    default_lr = 5e-4

    def resolve_extra(self, project, values: dict) -> dict:
        if int(values["text_steps"]) < 1 or float(values["text_lr"]) <= 0 or float(values["text_noise"]) < 0:
            raise InvalidInputError("text_steps must be >= 1, text_lr > 0 and text_noise >= 0")
        return values

    def prepare_teacher(self, project, params: dict, ctx) -> dict:
        from .nola import teacher_warning
        from .zeroshot import zero_shot_probs

        ctx.progress("training the text classifier")
        weight = train_text_classifier(
            ctx.text_embeddings,
            steps=int(params["text_steps"]),
            lr=float(params["text_lr"]),
            noise_std=float(params["text_noise"]),
            label_smoothing=float(params["label_smoothing"]),
            seed=int(params["seed"]),
        )
        f = ctx.clip_features / np.maximum(np.linalg.norm(ctx.clip_features, axis=1, keepdims=True), 1e-12)
        initial = (f @ weight.T).argmax(1)
        zs = zero_shot_probs(ctx.clip_features, ctx.text_classifier, ctx.logit_scale).argmax(1)
        texts = np.concatenate([e / np.linalg.norm(e, axis=1, keepdims=True) for e in ctx.text_embeddings])
        text_y = np.concatenate([np.full(len(e), c) for c, e in enumerate(ctx.text_embeddings)])
        warning = teacher_warning(initial, zs, len(ctx.classes))
        if warning:
            ctx.warn(warning)
        return {
            "head": weight,
            "head_init": weight,
            "report": {
                "teacher_degenerate": warning is not None,
                "text_classifier_train_accuracy": float(((texts @ weight.T).argmax(1) == text_y).mean()),
                "teacher_vs_zeroshot_agreement": float((initial == zs).mean()),
                "teacher_counts": dict(
                    zip(ctx.classes, np.bincount(initial, minlength=len(ctx.classes)).tolist(), strict=True)
                ),
            },
        }
