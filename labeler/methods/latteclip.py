"""LatteCLIP: fine-tune CLIP from LMM captions with per-class prototypes and two pseudo-label streams.

The paper's steps (astra-vision/LatteCLIP, ``src/training/train.py:train_one_epoch_v2``), per training step:

1. Texts per image: the *label text* ``templates[0](class)`` of each stream's class, the image's own caption
   (its first line) and a *group text*: the group description of a random image of the same zero-shot class,
   drawn anew each time the image is loaded.
2. Prototypes P (C, D): initialised with the label texts' CLIP embeddings; the classifier is P̂.
3. Two pseudo-labels: the frozen zero-shot top-1, and ``preds`` = argmax(100 · f̂ · P̂ᵀ) now.
4. :func:`text_weights` against the epoch's snapshot of P; :func:`fuse_texts` per stream.
5. :func:`smoothed_targets` — P[pseudo] + α · (fused − P[pseudo]).
6. open_clip's ``ClipLoss`` between the batch's image features and each stream's targets; summed.
7. :func:`update_prototypes` with both streams' targets.

Inference: image features against P̂. The four functions below are pure, on numpy arrays, validated; they wrap
the torch implementation training uses (:mod:`labeler.train.latte`). :class:`LatteCLIP` wires them to a project
as a training job (presets ``head``, ``vision``, ``ln-last``, ``full``; recipes ``labeler`` and ``paper``).
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import Hint, InvalidInputError, NotReadyError
from ..train.params import TrainParams, resolve_training
from .trainable import TrainableMethod

if TYPE_CHECKING:
    from ..jobs import Job
    from ..project import Project

#: The presets (what trains), cheapest first; the costs in words: ``labeler.train.latte.PRESETS``.
PRESET_NAMES = ("head", "vision", "ln-last", "full")

#: Which stored group description each ``groups`` choice uses (``captions_by_image`` keys).
GROUP_KEYS = {"shared": "group", "per-image": "group-own"}

#: LMM calls per image of each choice (captions + group descriptions of 4 images).
GROUP_CALLS = {"shared": 1.25, "per-image": 2.0}

#: ``--recipe labeler``: defaults that depend on the preset (explicit options win; the rest from the recipe).
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "head": {"lr": 1e-4, "batch_size": 256, "epochs": 30},
    "vision": {"lr": 1e-6},
    "ln-last": {"lr": 1e-5},
    "full": {"lr": 1e-7},
}

DEFAULT_TEMPLATE = "a photo of a {c}."


# --- the functional API (numpy in, numpy out) ------------------------------------------------------------------
def _matrix(name: str, value, rows: int | None = None, dim: int | None = None) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != 2:
        raise InvalidInputError(f"{name} must be a 2-D array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise InvalidInputError(f"{name} must be real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise InvalidInputError(f"{name} contains NaN or inf")
    if rows is not None and a.shape[0] != rows:
        raise InvalidInputError(f"{name} must have {rows} rows, got {a.shape[0]}")
    if dim is not None and a.shape[1] != dim:
        raise InvalidInputError(f"{name} must have {dim} columns (the feature dimension), got {a.shape[1]}")
    return a


def _indices(name: str, value, length: int, upper: int, what: str) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != 1 or len(a) != length:
        raise InvalidInputError(f"{name} must be a 1-D array of length {length}, got shape {a.shape}")
    if length and not np.issubdtype(a.dtype, np.integer):
        if not (np.issubdtype(a.dtype, np.floating) and np.isfinite(a).all() and (a == np.round(a)).all()):
            raise InvalidInputError(f"{name} must be integers, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if length and (a.min() < 0 or a.max() >= upper):
        raise InvalidInputError(f"{name} must lie in 0..{upper - 1} ({what}), got {a.min()}..{a.max()}")
    return a


def _torch(a: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


def text_weights(texts: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """LatteCLIP's text weights (step 4): top-1 − top-2 cosine similarity to the prototypes, + 1e-6.

    Parameters
    ----------
    texts : array (M, D)
        Text embeddings (need not be normalised; a zero row gets the floor 1e-6).
    prototypes : array (C, D), C >= 2
        Class prototypes (need not be normalised).

    Returns
    -------
    np.ndarray (M,), float64, every value >= 1e-6.
    """
    t = _matrix("texts", texts)
    p = _matrix("prototypes", prototypes, dim=t.shape[1])
    if p.shape[0] < 2:
        raise InvalidInputError(f"prototypes needs at least 2 classes (rows), got {p.shape[0]}")
    if (np.linalg.norm(p, axis=1) == 0).any():
        raise InvalidInputError("prototypes has a zero row: a class prototype must have a direction")
    from ..train.latte import text_weights as impl

    return impl(_torch(t), _torch(p)).numpy()


def fuse_texts(texts: np.ndarray, weights: np.ndarray, owners: np.ndarray, n: int) -> np.ndarray:
    """Each image's fused text feature: Σ w·t / Σ w over its texts (not renormalised).

    Parameters
    ----------
    texts : array (M, D)
    weights : array (M,), >= 0
        Typically :func:`text_weights`; every image's weights must sum to more than 0.
    owners : int array (M,)
        ``owners[m]`` is the image (0..n-1) text m belongs to; every image must own at least one text.
    n : int
        Number of images.

    Returns
    -------
    np.ndarray (n, D), float64.
    """
    t = _matrix("texts", texts)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise InvalidInputError(f"n must be a positive integer (the number of images), got {n!r}")
    w = np.asarray(weights)
    if w.ndim != 1 or len(w) != len(t):
        raise InvalidInputError(f"weights must be a 1-D array of length {len(t)} (one per text), got shape {w.shape}")
    w = w.astype(np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        raise InvalidInputError("weights must be finite and >= 0")
    own = _indices("owners", owners, len(t), int(n), "image indices")
    totals = np.bincount(own, weights=w, minlength=int(n))
    empty = np.flatnonzero(totals <= 0)
    if len(empty):
        raise InvalidInputError(
            f"{len(empty)} of {n} images have no text (or only zero weights), e.g. image {int(empty[0])}: "
            "every image needs at least its label text"
        )
    from ..train.latte import fuse_texts as impl

    return impl(_torch(t), _torch(w), _torch(own), int(n)).numpy()


def smoothed_targets(prototypes: np.ndarray, fused: np.ndarray, labels: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    """The prototype-smoothed targets (step 5): P[label] + α · (fused − P[label]).

    Parameters
    ----------
    prototypes : array (C, D)
    fused : array (B, D)
        :func:`fuse_texts` of the batch's images for one pseudo-label stream.
    labels : int array (B,)
        That stream's class per image.
    alpha : float in [0, 1]
        0 keeps the targets at the prototypes; 1 makes them the fused texts.

    Returns
    -------
    np.ndarray (B, D), float64 (not renormalised).
    """
    p = _matrix("prototypes", prototypes)
    f = _matrix("fused", fused, dim=p.shape[1])
    lab = _indices("labels", labels, len(f), p.shape[0], "class indices")
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not 0 <= float(alpha) <= 1:
        raise InvalidInputError(f"alpha must be a number in [0, 1], got {alpha!r}")
    from ..train.latte import smoothed_targets as impl

    return impl(_torch(p), _torch(f), _torch(lab), float(alpha)).numpy()


def update_prototypes(prototypes: np.ndarray, targets: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The prototype update (step 7): for each class in ``labels``, the L2-normalised mean of its targets.

    Parameters
    ----------
    prototypes : array (C, D)
    targets : array (M, D)
        Both streams' targets, stacked.
    labels : int array (M,)
        The class each target is assigned to (its stream's pseudo-label).

    Returns
    -------
    np.ndarray (C, D), float64: updated rows unit-norm; classes absent from ``labels`` unchanged.
    """
    p = _matrix("prototypes", prototypes)
    t = _matrix("targets", targets, dim=p.shape[1])
    lab = _indices("labels", labels, len(t), p.shape[0], "class indices")
    for c in np.unique(lab):
        if np.linalg.norm(t[lab == c].mean(axis=0)) == 0:
            raise InvalidInputError(f"the targets of class {int(c)} average to zero: no direction to normalise")
    from ..train.latte import update_prototypes as impl

    return impl(_torch(p), _torch(t), _torch(lab)).numpy()


def clip_loss(image_features: np.ndarray, targets: np.ndarray, scale: float) -> float:
    """open_clip's ``ClipLoss`` (step 6): ½ [CE(s·I·Tᵀ, arange) + CE(s·T·Iᵀ, arange)], (B, D) each."""
    f = _matrix("image_features", image_features)
    t = _matrix("targets", targets, rows=len(f), dim=f.shape[1])
    if not isinstance(scale, numbers.Real) or not np.isfinite(scale) or scale <= 0:
        raise InvalidInputError(f"scale must be a positive number, got {scale!r}")
    from ..train.latte import clip_loss as impl

    return float(impl(_torch(f), _torch(t), float(scale)))


def prototype_preds(image_features: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """The ``preds`` pseudo-label and the inference rule (steps 3, 9): argmax(100 · f̂ · P̂ᵀ), (B,) int64."""
    f = _matrix("image_features", image_features)
    p = _matrix("prototypes", prototypes, dim=f.shape[1])
    from ..train.latte import prototype_preds as impl

    return impl(_torch(f), _torch(p)).numpy().astype(np.int64)


def first_line(text: str | None) -> str | None:
    """A caption's first non-empty line (LatteCLIP uses only that), None when there is none."""
    for line in str(text or "").splitlines():
        if line.strip():
            return line.strip()
    return None


# --- the method ------------------------------------------------------------------------------------------------
@dataclass
class LatteCLIPParams(TrainParams):
    """Options of the ``latteclip`` method (training options: :class:`labeler.train.params.TrainParams`)."""

    recipe: str = "labeler"  # labeler (ours) | paper (the official code's settings): fills every option left None
    preset: str | None = None  # head | vision | ln-last | full; None: the recipe's (paper full; ours head on CPU)
    groups: str = "shared"  # shared (one description per group of ~4 images) | per-image (the official)
    alpha: float = 0.01  # prototype smoothing of the targets
    warmup: int | None = None  # linear warmup steps; None: the recipe's (10)
    weight_decay: float | None = None  # AdamW, on >= 2-D weights only; None: the recipe's (0.2)
    templates: str | list[str] = field(default_factory=lambda: [DEFAULT_TEMPLATE])  # the first is the label text
    descriptions: str = "none"  # none | llm | both: class texts of the zero-shot stream when it is computed
    zero_shot: str = "auto"  # auto: the active zero-shot run's top-1 if it covers every image, else computed
    features: str | None = None  # CLIP feature-set key (its model is the base); the newest CLIP set when None
    grad_checkpointing: str = "auto"  # auto (on for the tower presets on a GPU) | on | off


class LatteCLIP(TrainableMethod):
    """LatteCLIP: LMM captions + per-class prototypes + dual pseudo-labels (see the module docstring)."""

    name = "latteclip"
    summary = "LatteCLIP: fine-tune CLIP from LMM captions with class prototypes and two pseudo-labels (trains)"
    Params = LatteCLIPParams
    default_lr = 1e-4

    # --- params --------------------------------------------------------------------------------------------
    def preset_defaults(self, values: dict, device_type: str) -> dict:
        """``values`` (the options as a dict) with ``preset`` decided and, under recipe ``labeler``, the preset's
        lr / batch size / epochs filled where unset (a new dict; the recipe fills the rest)."""
        from ..train.recipes import get_recipe

        out = dict(values)
        recipe = get_recipe(self.name, out.get("recipe"))
        preset = out.get("preset") or recipe.preset or ("vision" if device_type == "cuda" else "head")
        if preset not in PRESET_NAMES:
            raise InvalidInputError(
                f"preset must be one of {', '.join(PRESET_NAMES)}, got {preset!r}", hint=Hint(option="preset")
            )
        out["preset"] = preset
        if recipe.name == "labeler":
            for k, v in PRESET_DEFAULTS[preset].items():
                if out.get(k) is None:
                    out[k] = v
        return out

    def resolve(self, project: Project, params: Any) -> dict:
        from ..device import resolve_device
        from ..prompts import class_prompts
        from ..train.recipes import apply_recipe

        if not isinstance(params, LatteCLIPParams):
            raise InvalidInputError(f"{self.name} takes LatteCLIPParams, got {type(params).__name__}")
        classes = project.classes
        if len(classes) < 2:
            raise NotReadyError("the project needs at least two classes", hint=Hint("classes"))
        if project.multi_label:
            raise InvalidInputError("latteclip trains a single-label classifier; this project is multi-label")
        device = resolve_device(params.device)
        values = apply_recipe(self.preset_defaults(asdict(params), device.type), self.name, device.type)
        values = resolve_training(values, device.type, self.default_lr)
        if values["groups"] not in GROUP_KEYS:
            raise InvalidInputError(
                f"groups must be one of {', '.join(GROUP_KEYS)}, got {values['groups']!r}", hint=Hint(option="groups")
            )
        alpha = values["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= float(alpha) <= 1:
            raise InvalidInputError(f"alpha must be a number in [0, 1], got {alpha!r}")
        values["alpha"] = float(alpha)
        values["warmup"] = int(values.get("warmup") or 0)
        if values["warmup"] < 0:
            raise InvalidInputError(f"warmup must be 0 or more steps, got {values['warmup']}")
        if values["zero_shot"] not in ("auto", "compute"):
            raise InvalidInputError(f"zero_shot must be auto or compute, got {values['zero_shot']!r}")
        if values["descriptions"] not in ("none", "llm", "both"):
            raise InvalidInputError(f"descriptions must be none, llm or both, got {values['descriptions']!r}")
        class_prompts(classes[0], values["templates"])  # a bad template set or template fails here
        checkpointing = {"on": True, "off": False, "auto": device.type == "cuda" and values["preset"] != "head"}
        if str(values.get("grad_checkpointing")) not in checkpointing:
            raise InvalidInputError(f"grad_checkpointing must be auto, on or off, got {values['grad_checkpointing']!r}")
        values["grad_checkpointing"] = checkpointing[str(values["grad_checkpointing"])]
        return self.pin_clip_base(project, values)

    # --- setup ------------------------------------------------------------------------------------------------
    def _zero_shot(self, project: Project, params: dict, ids: list[int], feats: np.ndarray, clip) -> tuple:
        """The frozen zero-shot top-1 per row, and where it came from."""
        from ..describe import class_texts_report
        from ..labels import active_run, read_predictions
        from .zeroshot import encode_class_texts, text_classifier, zero_shot_probs

        classes = params["classes"]
        active = active_run(project)
        if params["zero_shot"] == "auto" and active and active["method"] == "zeroshot":
            rids, probs, rcls = read_predictions(project, active["id"])
            pos = {int(i): r for r, i in enumerate(rids)}
            if list(rcls) == list(classes) and all(int(i) in pos for i in ids):
                top = probs.argmax(1)
                return np.asarray([top[pos[int(i)]] for i in ids], dtype=np.int64), f"zero-shot run {active['id']}"
        texts, _ = class_texts_report(project, params["descriptions"], params["templates"], classes)
        classifier = text_classifier(encode_class_texts(clip, texts))
        probs = zero_shot_probs(feats, classifier, float(clip.logit_scale))
        return probs.argmax(1).astype(np.int64), "computed from the cached features and the class texts"

    def setup(self, project: Project, params: dict, job: Job) -> dict:
        import torch

        from ..describe import captions_by_image
        from ..device import resolve_device
        from ..features import feature_matrix
        from ..prompts import class_prompts
        from ..train.data import training_split, without_audit
        from ..train.latte import PRESETS, LatteNet

        classes = params["classes"]
        job.progress(0, 1, "reading captions", force=True)
        caps = captions_by_image(project)
        group_key = GROUP_KEYS[params["groups"]]
        if not any(first_line(c.get("image")) or first_line(c.get(group_key)) for c in caps.values()):
            what = "captions" if params["groups"] == "shared" else "per-image group descriptions"
            raise NotReadyError(
                f"LatteCLIP learns from LMM captions and group descriptions, and this project has no {what}: "
                f"caption the images first (with {'shared' if params['groups'] == 'shared' else 'per-image'} "
                "group descriptions)",
                hint=Hint("captions"),
            )
        device = resolve_device(params["device"])
        clip = self._clip(params, device)
        ids, feats = feature_matrix(project, params["features"])
        keep = set(without_audit(project, ids))  # the audit sample is a test set: never trained on
        rows_kept = [r for r, i in enumerate(ids) if i in keep]
        if len(rows_kept) < 2:
            raise NotReadyError(
                f"latteclip needs at least 2 images with features to train on, found {len(rows_kept)}",
                hint=Hint("features"),
            )
        audit_excluded = len(ids) - len(rows_kept)
        ids = [ids[r] for r in rows_kept]
        feats = np.asarray(feats[rows_kept], dtype=np.float32)
        verified, rows = training_split(project, ids, classes, params)

        # Texts: label texts, captions (first line), group descriptions (distinct texts, embedded once).
        job.progress(0, 1, "encoding label texts, captions and group descriptions", force=True)
        label_texts = [class_prompts(c, params["templates"])[0] for c in classes]
        caption_texts: list[str] = []
        group_texts: list[str] = []
        cap_idx = np.full(len(ids), -1, dtype=np.int64)
        grp_idx = np.full(len(ids), -1, dtype=np.int64)
        seen_cap: dict[str, int] = {}
        seen_grp: dict[str, int] = {}
        for r, image_id in enumerate(ids):
            entry = caps.get(int(image_id), {})
            text = first_line(entry.get("image"))
            if text:
                cap_idx[r] = seen_cap.setdefault(text, len(seen_cap))
            text = first_line(entry.get(group_key))
            if text:
                grp_idx[r] = seen_grp.setdefault(text, len(seen_grp))
        caption_texts = list(seen_cap)
        group_texts = list(seen_grp)

        def embed(texts: list[str]) -> np.ndarray:
            if not texts:
                return np.zeros((0, clip.dim), dtype=np.float32)
            return clip.encode_texts(texts).float().cpu().numpy()

        label_emb, caption_emb, group_emb = embed(label_texts), embed(caption_texts), embed(group_texts)
        zero_shot, zs_source = self._zero_shot(project, params, ids, feats, clip)
        # The held-out teacher (label-free selection): the class the image's own texts point to, or zero-shot.
        teacher = zero_shot.copy()
        for r in range(len(ids)):
            parts = [caption_emb[cap_idx[r]]] if cap_idx[r] >= 0 else []
            parts += [group_emb[grp_idx[r]]] if grp_idx[r] >= 0 else []
            if parts:
                teacher[r] = int(np.argmax(label_emb @ np.mean(parts, axis=0)))
        with_caption = int((cap_idx >= 0).sum())
        with_group = int((grp_idx >= 0).sum())
        label_only = int(((cap_idx < 0) & (grp_idx < 0)).sum())

        # What the preset costs.
        probe = LatteNet(params["preset"], clip.dim, clip.model, float(clip.logit_scale))
        trainable = int(sum(p.numel() for _, p in probe.named_trainable()))
        clip.model.requires_grad_(False)
        cost = PRESETS[params["preset"]]
        notes = []
        if label_only:
            notes.append(
                f"{label_only} of {len(ids)} images have neither a caption nor a group description: they learn "
                "from their label text only"
            )
        report = {
            "images": len(ids),
            "train": int(len(rows["train"])),
            "holdout": int(len(rows["holdout"])),
            "val": int(len(rows["val"])),
            "val_optimistic": bool(rows["optimistic"]),
            "verified": rows["verified"],
            "audit_excluded": audit_excluded,
            "val_reason": rows["val_reason"],
            "preset": params["preset"],
            "trains": cost["trains"],
            "trainable_parameters": trainable,
            "forwards_per_step": cost["forwards"],
            "memory": cost["memory"],
            "captions": {
                "groups": params["groups"],
                "lmm_calls_per_image": GROUP_CALLS[params["groups"]],
                "with_caption": with_caption,
                "with_group_text": with_group,
                "label_text_only": label_only,
                "distinct_captions": len(caption_texts),
                "distinct_group_texts": len(group_texts),
            },
            "label_texts": label_texts,
            "zero_shot": zs_source,
            "zero_shot_counts": dict(
                zip(classes, np.bincount(zero_shot, minlength=len(classes)).tolist(), strict=True)
            ),
            "holdout_teacher": "the class nearest to the mean of the image's caption and group description "
            "(zero-shot where it has neither)",
            "notes": notes,
            "warnings": [],
        }
        return {
            "image_ids": torch.tensor(ids, dtype=torch.long),
            "rows": {k: torch.from_numpy(np.asarray(rows[k], dtype=np.int64)) for k in ("train", "holdout", "val")},
            "verified": torch.from_numpy(verified),
            "zero_shot": torch.from_numpy(zero_shot),
            "caption": torch.from_numpy(cap_idx),
            "group": torch.from_numpy(grp_idx),
            "holdout_teacher": torch.from_numpy(teacher.astype(np.int64)),
            "label_emb": torch.from_numpy(label_emb),
            "caption_emb": torch.from_numpy(caption_emb),
            "group_emb": torch.from_numpy(group_emb),
            "label_texts": label_texts,
            "caption_texts": caption_texts,
            "group_texts": group_texts,
            "report": report,
        }

    def build_task(self, project: Project, params: dict, setup: dict, job: Job):
        from ..device import resolve_device
        from ..features import feature_matrix
        from ..train.latte import LatteNet, LatteTask, train_transform

        device = resolve_device(params["device"])
        clip = self._clip(params, device)
        self._clip_cache = None  # the task trains (changes) this model
        ids = setup["image_ids"].tolist()
        preset = params["preset"]
        net = LatteNet(preset, clip.dim, clip.model if preset != "head" else None, float(clip.logit_scale)).to(device)
        if params.get("grad_checkpointing") and preset != "head":
            clip.model.set_grad_checkpointing(True)
        data = {k: setup[k] for k in ("rows", "verified", "zero_shot", "caption", "group", "holdout_teacher")}
        data.update({k: setup[k] for k in ("label_emb", "caption_emb", "group_emb")})
        data.update({k: setup[k] for k in ("label_texts", "caption_texts", "group_texts")})
        paths = None
        if preset == "head":
            fids, feats = feature_matrix(project, params["features"])
            pos = {int(i): r for r, i in enumerate(fids)}
            missing = [i for i in ids if int(i) not in pos]
            if missing:
                raise NotReadyError(
                    f"{len(missing)} training images lost their cached features since the run started: start anew",
                    hint=Hint("features"),
                )
            data["features"] = np.asarray(feats[[pos[int(i)] for i in ids]], dtype=np.float32)
        else:
            path_of = dict(project.db.execute("select id, path from images").fetchall())
            paths = [path_of.get(i, "") for i in ids]
        info = {
            "method": self.name,
            "base": params["base"],
            "classes": list(params["classes"]),
            "image_size": clip.image_size,
            "recipe": params.get("recipe", "labeler"),
            "groups": params.get("groups", "shared"),
        }
        return LatteTask(
            net,
            data,
            params,
            device,
            info,
            paths=paths,
            weak=clip.preprocess,
            train_view=train_transform(clip.model.visual.preprocess_cfg) if preset != "head" else None,
            tokenizer=clip.tokenizer,
        )

    def load_predictor(self, project: Project, run: dict, device: str = "auto"):
        from ..train.latte import LatteModel
        from ..train.loop import BEST, load
        from ..train.runs import run_dir

        path = run_dir(project, run["id"]) / BEST
        if not path.is_file():
            raise NotReadyError(f"run {run['id']} has no trained model yet (no epoch finished): resume or rerun it")
        return LatteModel(load(path), device)
