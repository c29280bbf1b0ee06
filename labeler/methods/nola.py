"""NoLA: description classifier → DINO alignment module → DINO-assisted prompt tuning of CLIP.

The paper's steps, as pure functions on arrays (what the tests plant answers in):

1. :func:`description_classifier` — per class, CLIP text embeddings of its descriptions and prompt
   templates, each L2-normalised, averaged and re-normalised → T (C, D).
2. Zero-shot scoring of every image's weak view: ``softmax(logit_scale · f · Tᵀ)``
   (:func:`labeler.methods.zeroshot.zero_shot_probs`).
3. :func:`select_top_k` — per class, the k most confident images whose top-1 is that class (2nd,
   then 3rd choice for a class no image has as top-1), no image twice.
4. :func:`fit_alignment` — an MLP ``Linear(D_dino, 256) → ReLU → Linear(256, C)`` on the frozen DINO
   features of the selected images (cross-entropy, Adam 1e-3, batch 32, 50 epochs).
5. Prompt tuning (:mod:`labeler.train.prompt`): CLIP's vision tower with learnable prompt tokens, its
   LayerNorms and a linear head initialised from T learn, on a strong view, the hard labels the DINO +
   alignment teacher gives the weak view.
6. Inference: prompted CLIP → head → softmax; DINO is not needed.

:class:`NoLA` wires them to a project as a training job (:mod:`labeler.train`) that ends with a new
label run over every image.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import Hint, InvalidInputError
from ..train.recipes import FEATURE_SET
from .prompt_tuning import PromptTuningMethod, PromptTuningParams
from .zeroshot import text_classifier

if TYPE_CHECKING:
    import torch

    from ..train.alignment import AlignmentModule


def description_classifier(embeddings_per_class: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
    """Class weights T (C, D) from each class's text embeddings (descriptions + templates).

    Per class: every embedding L2-normalised, averaged, re-normalised (the same rule as the zero-shot
    text classifier, :func:`labeler.methods.zeroshot.text_classifier`, which this calls).

    Parameters
    ----------
    embeddings_per_class : sequence of C arrays (T_c, D)
        CLIP text embeddings of each class's T_c >= 1 texts.

    Returns
    -------
    np.ndarray (C, D), float32, unit rows.
    """
    return text_classifier(embeddings_per_class)


def default_k(num_images: int, num_classes: int) -> int:
    """NoLA's default pseudo-labels per class: ``max(16, ⌊0.2·N/C⌋)``, capped at N."""
    return int(min(max(16, num_images // (5 * num_classes)), num_images))


def _check_probs(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise InvalidInputError(f"probs must be a 2-D array (images × classes), got shape {p.shape}")
    if p.shape[0] == 0:
        raise InvalidInputError("probs has no rows: there are no images to select from")
    if p.shape[1] < 2:
        raise InvalidInputError(f"probs has {p.shape[1]} class column(s); selection needs at least 2 classes")
    if not np.isfinite(p).all():
        bad = int((~np.isfinite(p).all(axis=1)).sum())
        raise InvalidInputError(f"probs contains NaN or inf in {bad} of {p.shape[0]} rows")
    return p


def select_top_k(
    probs: np.ndarray, k: int | None = None, *, allow_empty: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """NoLA's pseudo-label selection (step 3): the k most confident images per class.

    For each class c, among the images whose top-1 (argmax) class is c, keep the k with the highest
    probability of c. A class that is no image's top-1 falls back to the images whose 2nd choice is c
    (then, if none, 3rd choice), ranked by their probability of c, among the images not already
    selected: top-1 selections always win, so no image is selected twice (the official code drops
    duplicates after the fact, which can take a top-1 image away from its class).

    Parameters
    ----------
    probs : array (N, C)
        Zero-shot class probabilities (any finite scores work; only their order matters).
    k : int, optional
        Images per class; default ``max(16, ⌊0.2·N/C⌋)`` capped at N (:func:`default_k`).
    allow_empty : bool
        Keyword only. False (default): a class with no candidate at all (no image has it as 1st, 2nd
        or 3rd choice among those still free) is an error. True: such a class just gets no images.

    Returns
    -------
    (indices, labels)
        int64 arrays of equal length: row indices into ``probs`` (distinct) and their class, grouped by
        class in class order, most confident first within a class.

    Raises
    ------
    InvalidInputError
        probs not 2-D, no rows, fewer than 2 classes, NaN/inf; k not a positive integer or larger than N;
        a class with no candidate (unless ``allow_empty``).
    """
    p = _check_probs(probs)
    n, c_count = p.shape
    if k is None:
        k = default_k(n, c_count)
    else:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        if k < 1:
            raise InvalidInputError(f"k must be at least 1, got {k}")
        if k > n:
            raise InvalidInputError(f"k = {k} is larger than the data: there are only {n} images")
    order = np.argsort(-p, axis=1, kind="stable")
    taken = np.zeros(n, dtype=bool)
    chosen: list[np.ndarray | None] = [None] * c_count

    def _best(cand: np.ndarray, c: int) -> np.ndarray:
        return cand[np.argsort(-p[cand, c], kind="stable")[:k]]

    for c in range(c_count):
        cand = np.flatnonzero(order[:, 0] == c)
        if cand.size:
            chosen[c] = _best(cand, c)
            taken[chosen[c]] = True
    for c in range(c_count):
        if chosen[c] is not None:
            continue
        for rank in (1, 2):
            if rank >= c_count:
                break
            cand = np.flatnonzero((order[:, rank] == c) & ~taken)
            if cand.size:
                chosen[c] = _best(cand, c)
                taken[chosen[c]] = True
                break
        if chosen[c] is None:
            if not allow_empty:
                raise InvalidInputError(
                    f"class {c} has no candidate image: no free image has it as 1st, 2nd or 3rd choice "
                    f"(of {n} images); add images of that class, label a few by hand, or remove the class"
                )
            chosen[c] = np.zeros(0, dtype=np.int64)
    indices = np.concatenate([np.asarray(s, dtype=np.int64) for s in chosen])
    labels = np.concatenate([np.full(len(s), c, dtype=np.int64) for c, s in enumerate(chosen)])
    return indices, labels


def teacher_warning(teacher: np.ndarray, zero_shot: np.ndarray, num_classes: int) -> str | None:
    """A warning when the teacher's labels collapsed relative to zero-shot's top-1 (else None)."""
    from ..train.selection import class_entropy, is_degenerate

    if not is_degenerate(teacher, num_classes, reference=zero_shot):
        return None
    used = int((np.bincount(np.asarray(teacher, dtype=np.int64), minlength=num_classes) > 0).sum())
    return (
        f"the teacher looks degenerate: its labels use {used} of {num_classes} classes (class entropy "
        f"{class_entropy(teacher, num_classes):.2f} vs {class_entropy(zero_shot, num_classes):.2f} for zero-shot); "
        "the trained model will learn that collapse. Check the class texts (and, for NoLA, that the DINO features "
        "separate the classes), or label a few images per class by hand"
    )


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def fit_alignment(
    features: np.ndarray,
    indices: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    hidden: int = 256,
    epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
) -> AlignmentModule:
    """Fit NoLA's alignment module on the DINO features of the selected images (step 4).

    Parameters
    ----------
    features : array (N, D)
        Frozen DINO features of all images (D from the model, never assumed).
    indices, labels : int arrays (M,)
        The selection (:func:`select_top_k`): rows of ``features`` and their pseudo-labels.
    num_classes : int
        C (>= 2); labels must lie in 0..C-1.
    hidden, epochs, lr, batch_size, seed
        MLP width (256), epochs (50), Adam learning rate (1e-3), batch size (32), seed (init and order).

    Returns
    -------
    AlignmentModule
        An ``nn.Module`` in eval mode with ``predict_proba(features) -> (N, C)`` float32.
    """
    f = np.asarray(features)
    if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
        raise InvalidInputError(f"features must be a non-empty 2-D array (images × dims), got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.number):
        raise InvalidInputError(f"features must be numeric, got dtype {f.dtype}")
    f = f.astype(np.float32, copy=False)
    if not np.isfinite(f).all():
        bad = int((~np.isfinite(f).all(axis=1)).sum())
        raise InvalidInputError(f"features contain NaN or inf in {bad} of {f.shape[0]} rows")
    num_classes = _check_int("num_classes", num_classes, 2)
    hidden = _check_int("hidden", hidden)
    epochs = _check_int("epochs", epochs)
    batch_size = _check_int("batch_size", batch_size)
    if not (isinstance(lr, numbers.Real) and np.isfinite(lr) and lr > 0):
        raise InvalidInputError(f"lr must be a positive number, got {lr!r}")
    idx = np.asarray(indices)
    lab = np.asarray(labels)
    if idx.ndim != 1 or lab.ndim != 1 or idx.shape != lab.shape:
        raise InvalidInputError(f"indices {idx.shape} and labels {lab.shape} must be 1-D arrays of the same length")
    if idx.size == 0:
        raise InvalidInputError("no images were selected (indices is empty): nothing to fit the alignment module on")
    for name, arr in (("indices", idx), ("labels", lab)):
        if not np.issubdtype(arr.dtype, np.integer):
            if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                continue
            raise InvalidInputError(f"{name} must be integers, got dtype {arr.dtype}")
    idx = idx.astype(np.int64)
    lab = lab.astype(np.int64)
    if idx.min() < 0 or idx.max() >= f.shape[0]:
        raise InvalidInputError(
            f"indices must lie in 0..{f.shape[0] - 1} (rows of features), got {idx.min()}..{idx.max()}"
        )
    if len(np.unique(idx)) != len(idx):
        raise InvalidInputError("indices contains duplicates: each selected image must appear once")
    if lab.min() < 0 or lab.max() >= num_classes:
        raise InvalidInputError(f"labels must lie in 0..{num_classes - 1}, got {lab.min()}..{lab.max()}")
    from ..train.alignment import train_alignment

    return train_alignment(
        f[idx], lab, num_classes, hidden=hidden, epochs=epochs, lr=float(lr), batch_size=batch_size, seed=int(seed)
    )


#: What the teacher's backbone sees: ``dino`` (its own preprocessing) or ``clip`` (CLIP's weak view).
TEACHER_VIEWS = ("dino", "clip")


@dataclass
class NoLAParams(PromptTuningParams):
    """Options of the ``nola`` method (training options: :class:`labeler.methods.prompt_tuning.PromptTuningParams`)."""

    dino_features: str | None = None  # DINO feature-set key; the newest DINO set when None
    # The teacher's backbone: "features" (the cached DINO feature set above) or a DINO model run on every training
    # image at setup (paper: facebook/dino-vitb16); None: the recipe's. Given dino_features, "features".
    teacher_backbone: str | None = None
    teacher_view: str | None = None  # dino (its own preprocessing) | clip (CLIP's weak view); None: the recipe's
    k: int | None = None  # pseudo-labels per class for the alignment module; max(16, N/(5C)) when None
    align_hidden: int = 256
    align_epochs: int = 50
    align_lr: float = 1e-3
    align_batch_size: int = 32


class NoLA(PromptTuningMethod):
    """NoLA: DINO-assisted prompt tuning of CLIP (teacher: frozen DINO + alignment module)."""

    name = "nola"
    summary = "NoLA: CLIP descriptions → DINO alignment module → DINO-assisted prompt tuning of CLIP (trains)"
    Params = NoLAParams
    default_tokens = 16
    default_lr = 0.004

    def resolve(self, project, params):
        import dataclasses

        if isinstance(params, NoLAParams) and params.dino_features and params.teacher_backbone is None:
            # An explicit DINO feature set wins over the recipe's teacher (whose input it then has to be).
            view = params.teacher_view or "dino"
            params = dataclasses.replace(params, teacher_backbone=FEATURE_SET, teacher_view=view)
        return super().resolve(project, params)

    def resolve_extra(self, project, values: dict) -> dict:
        from ..errors import NotReadyError
        from ..features import latest_set

        for name in ("align_hidden", "align_epochs", "align_batch_size"):
            _check_int(name, values[name])
        if values.get("k") is not None:
            _check_int("k", values["k"])
        values["teacher_backbone"] = values.get("teacher_backbone") or FEATURE_SET
        values["teacher_view"] = values.get("teacher_view") or "dino"
        if values["teacher_view"] not in TEACHER_VIEWS:
            raise InvalidInputError(
                f"teacher_view must be one of {', '.join(TEACHER_VIEWS)}, got {values['teacher_view']!r}"
            )
        if values["teacher_backbone"] != FEATURE_SET:
            from ..models.dino import check_dino_available

            # offline and not cached: fails here, not in the job; our recipe needs no second backbone (it uses the
            # project's DINO features)
            check_dino_available(values["teacher_backbone"], hint=Hint(option="recipe", value="labeler"))
            values["dino_features"] = None
            return values
        if values["teacher_view"] != "dino":
            raise InvalidInputError(
                "teacher_view 'clip' needs a DINO model to run (teacher_backbone, e.g. facebook/dino-vitb16): "
                "the cached DINO features were computed with DINO's own preprocessing"
            )
        if values.get("dino_features"):
            fset = project.features.get_set(values["dino_features"])
            if fset is None or fset["kind"] != "dino":
                raise NotReadyError(f"no DINO feature set {values['dino_features']!r} in this project")
        else:
            fset = latest_set(project, "dino")
            if fset is None:
                raise NotReadyError(
                    "NoLA needs DINO features (facebook/dinov2-small, or tiny-random for a test)",
                    hint=Hint("features", option="dino", value="facebook/dinov2-small"),
                )
        values["dino_features"] = fset["key"]
        return values

    def select_images(self, project, params: dict, image_ids: list[int]) -> list[int]:
        """Images with both CLIP and DINO features (the teacher needs DINO's); all when DINO runs at setup."""
        from ..features import feature_matrix

        if params.get("teacher_backbone", FEATURE_SET) != FEATURE_SET:
            return image_ids
        dino_ids, _ = feature_matrix(project, params["dino_features"])
        have = set(dino_ids)
        return [i for i in image_ids if i in have]

    def prepare_teacher(self, project, params: dict, ctx) -> dict:
        """Steps 2–4: zero-shot scores, top-k selection (+ verified labels), alignment module → teacher labels.

        The teacher's weak view is fixed (no augmentation), so its hard labels are computed once here instead
        of running DINO in every training step: from the cached DINO features (``teacher_backbone`` =
        ``features``: DINO's own resize + center crop), or by running ``teacher_backbone`` on every image's
        ``teacher_view`` (``clip``: CLIP's weak view and normalisation, as the official code feeds DINO).
        """
        from ..features import feature_matrix
        from .zeroshot import zero_shot_probs

        if params.get("teacher_backbone", FEATURE_SET) == FEATURE_SET:
            dino_ids, dino_feats = feature_matrix(project, params["dino_features"])
            pos = {i: r for r, i in enumerate(dino_ids)}
            dino = dino_feats[[pos[i] for i in ctx.image_ids]]
        else:
            dino = self._teacher_features(project, params, ctx)
        probs = zero_shot_probs(ctx.clip_features, ctx.text_classifier, ctx.logit_scale)
        # The alignment set never sees the held-out images (they score the student against this teacher) nor,
        # unless optimistic, the validation images: pseudo-labels are picked among the other rows.
        allowed = np.ones(len(probs), dtype=bool)
        allowed[np.asarray(ctx.rows["holdout"], dtype=np.int64)] = False
        if not ctx.rows["optimistic"]:
            allowed[np.asarray(ctx.rows["val"], dtype=np.int64)] = False
        pool = np.flatnonzero(allowed)
        k = params["k"] if params["k"] is None else min(int(params["k"]), len(pool))
        idx, lab = select_top_k(probs[pool], k, allow_empty=True)
        idx = pool[idx]
        # Verified labels override pseudo-labels and are always in the selection (except validation rows).
        sel = {int(i): int(c) for i, c in zip(idx, lab, strict=True)}
        for j in np.flatnonzero((ctx.verified >= 0) & allowed):
            sel[int(j)] = int(ctx.verified[j])
        sel_idx = np.fromiter(sel.keys(), dtype=np.int64, count=len(sel))
        sel_lab = np.fromiter(sel.values(), dtype=np.int64, count=len(sel))
        counts = np.bincount(sel_lab, minlength=len(ctx.classes))
        empty = [ctx.classes[c] for c in np.flatnonzero(counts == 0)]
        if empty:
            ctx.note(
                f"no pseudo-label for {len(empty)} classes ({', '.join(empty[:10])}): the teacher cannot "
                "predict them; label a few of their images by hand"
            )
        ctx.progress(f"fitting the alignment module on the DINO features of {len(sel_idx)} images")
        align = fit_alignment(
            dino,
            sel_idx,
            sel_lab,
            len(ctx.classes),
            hidden=params["align_hidden"],
            epochs=params["align_epochs"],
            lr=params["align_lr"],
            batch_size=params["align_batch_size"],
            seed=params["seed"],
        )
        teacher = align.predict_proba(dino).argmax(1).astype(np.int64)
        zs = probs.argmax(1)
        warning = teacher_warning(teacher, zs, len(ctx.classes))
        if warning:
            ctx.warn(warning)
        return {
            "labels": teacher,
            "report": {
                "teacher": {
                    "backbone": params.get("teacher_backbone", FEATURE_SET),
                    "view": params.get("teacher_view", "dino"),
                    "features": params.get("dino_features"),
                },
                "k": int(k or default_k(len(pool), len(ctx.classes))),
                "alignment_excludes": {"holdout": int(len(ctx.rows["holdout"])), "val": int((~allowed).sum())},
                "teacher_degenerate": warning is not None,
                "selected": int(len(sel_idx)),
                "selected_per_class": dict(zip(ctx.classes, counts.tolist(), strict=True)),
                "classes_without_pseudo_labels": empty,
                "alignment_final_loss": align.history[-1] if align.history else None,
                "teacher_vs_zeroshot_agreement": float((teacher == zs).mean()),
                "teacher_counts": dict(
                    zip(ctx.classes, np.bincount(teacher, minlength=len(ctx.classes)).tolist(), strict=True)
                ),
            },
        }

    def _teacher_features(self, project, params: dict, ctx) -> np.ndarray:
        """CLS features (after the final LayerNorm, not normalised, as the official code's ``Taal``) of the DINO
        model ``teacher_backbone`` on every image's ``teacher_view``; unreadable images get zeros."""
        import torch

        from ..device import resolve_device
        from ..models import load_dino
        from ..train.views import image_loader

        device = resolve_device(params["device"])
        ctx.progress(f"loading the teacher backbone {params['teacher_backbone']}")
        dino = load_dino(params["teacher_backbone"], device=device, precision="fp32")
        view = self._clip(params, device).preprocess if params["teacher_view"] == "clip" else dino.preprocess
        path_of = dict(project.db.execute("select id, path from images").fetchall())
        paths = [path_of.get(i, "") for i in ctx.image_ids]
        out = np.zeros((len(paths), dino.dim), dtype=np.float32)
        loader = image_loader(paths, view, 64, num_workers=params.get("workers"), device=device)
        done = 0
        with torch.inference_mode():
            for rows, views, failed in loader:
                if len(rows):
                    hidden = dino.model(pixel_values=views[0].to(device)).last_hidden_state[:, 0]
                    out[rows.numpy()] = hidden.float().cpu().numpy()
                done += len(rows) + len(failed)
                ctx.progress(f"teacher features: {done} of {len(paths)} images ({params['teacher_backbone']})")
        return out
