"""LatteCLIP's training step in torch: the prototype math, the model per preset, the TrainTask and the model file.

The math (one implementation; :mod:`labeler.methods.latteclip` wraps it for numpy arrays):

* :func:`text_weights` — w(t) = top-1 − top-2 cosine of a text to the prototypes, + 1e-6, detached.
* :func:`fuse_texts` — per image Σ w·t / Σ w over its texts (keeps the texts' gradients).
* :func:`smoothed_targets` — P[label] + α · (fused − P[label]).
* :func:`update_prototypes` — per class seen: normalize(mean of its targets); the other rows unchanged.
* :func:`clip_loss` — open_clip's ``ClipLoss``: ½ [CE(s·I·Tᵀ, arange) + CE(s·T·Iᵀ, arange)].
* :func:`prototype_preds` — argmax(100 · f̂ · P̂ᵀ).

What trains (``preset``, :data:`PRESETS`): ``head`` — a linear adapter (identity at the start) on the
cached, frozen image features, text embeddings frozen; ``vision`` — the CLIP vision tower, text frozen;
``ln-last`` — the vision tower's LayerNorms, its last quarter of blocks and its projection; ``full`` — both
towers (the official code; the text tower learns through the α term only). The prototypes are no
parameters: they change by hand after every step and are saved in checkpoints and the model file.

The model file (``best.pt``, and what the ``model`` exporter writes): ``format`` :data:`MODEL_FORMAT`,
``version``, ``method``, ``base`` (CLIP model name, pretrained tag, feature key), ``classes``, ``preset``,
``prototypes`` (C, D), ``state`` (the trained image-side weights only: the adapter, or the vision tower's
trained parameters), ``train_run``, ``epoch``, ``score``, ``selection``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from .loop import TrainTask, atomic_save, resolve_amp

MODEL_FORMAT = "labeler.latteclip"
MODEL_VERSION = 1

#: The official weight floor added to every text weight.
WEIGHT_EPS = 1e-6

#: The fixed scale of the ``preds`` pseudo-label (the learnable one is only for the loss).
PREDS_SCALE = 100.0

#: What each preset trains, and what one training step costs besides the loss (in words, for the CLI and the app).
PRESETS: dict[str, dict[str, str]] = {
    "head": {
        "trains": "a linear adapter on the cached image features (identity at the start); text embeddings frozen",
        "forwards": "no CLIP forward per step (image features cached, texts embedded once at setup)",
        "memory": "a D×D matrix (0.26 M parameters for D = 512): runs on a CPU in minutes",
    },
    "vision": {
        "trains": "the CLIP vision tower; text embeddings frozen",
        "forwards": "one vision-tower forward and backward per image per step",
        "memory": "≈ 88 M parameters for ViT-B/32 (+ AdamW state ≈ 1.4 GB); a GPU with 8 GB at batch 128",
    },
    "ln-last": {
        "trains": "the vision tower's LayerNorms, its last quarter of blocks and its projection; text frozen",
        "forwards": "one vision-tower forward per image per step, backward through the last blocks only",
        "memory": "≈ 22 M parameters for ViT-B/32: a small GPU (4–6 GB at batch 128)",
    },
    "full": {
        "trains": "both CLIP towers (the official code, --recipe paper); the text tower learns through the α term",
        "forwards": "per step one vision forward per image and C + 2·B text forwards (label texts, captions, "
        "group texts)",
        "memory": "≈ 151 M parameters for ViT-B/32 (+ AdamW ≈ 2.4 GB) and activations of batch 512 with "
        "gradient checkpointing: a 24 GB+ GPU",
    },
}


# --- the math ------------------------------------------------------------------------------------------------
def text_weights(texts: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """(M,) detached weights: top-1 − top-2 cosine similarity of each text to the prototypes, + 1e-6.

    ``texts`` (M, D) and ``prototypes`` (C, D), C >= 2, need not be normalised.
    """
    with torch.no_grad():
        sims = F.normalize(texts.detach().float(), dim=-1) @ F.normalize(prototypes.detach().float(), dim=-1).T
        top = torch.topk(sims, 2, dim=1).values
        return (top[:, 0] - top[:, 1]).clamp_min(0.0) + WEIGHT_EPS


def fuse_texts(texts: torch.Tensor, weights: torch.Tensor, owners: torch.Tensor, n: int) -> torch.Tensor:
    """(n, D): Σ w·t / Σ w over the texts of each image (``owners[m]`` the image of text m); not renormalised.

    Gradients flow to ``texts`` (the weights are constants). Every image must own at least one text.
    """
    w = weights.to(texts.dtype)
    num = torch.zeros((n, texts.shape[1]), dtype=texts.dtype, device=texts.device)
    num = num.index_add(0, owners, texts * w[:, None])
    den = torch.zeros(n, dtype=texts.dtype, device=texts.device).index_add(0, owners, w)
    return num / den[:, None]


def smoothed_targets(
    prototypes: torch.Tensor, fused: torch.Tensor, labels: torch.Tensor, alpha: float = 0.01
) -> torch.Tensor:
    """(B, D): P[label] + α · (fused − P[label]) (not renormalised; gradients flow to ``fused``)."""
    base = prototypes[labels].to(fused.dtype)
    return base + float(alpha) * (fused - base)


def update_prototypes(prototypes: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A new (C, D): for each class in ``labels``, normalize(mean of its targets); other rows unchanged."""
    with torch.no_grad():
        c = prototypes.shape[0]
        t = targets.detach().to(prototypes.dtype)
        sums = torch.zeros_like(prototypes).index_add(0, labels, t)
        counts = torch.bincount(labels, minlength=c)
        seen = counts > 0
        out = prototypes.clone()
        out[seen] = F.normalize(sums[seen] / counts[seen, None].to(t.dtype), dim=-1)
        return out


def clip_loss(image_features: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """open_clip's ``ClipLoss``: ½ [CE(s·I·Tᵀ, arange) + CE(s·T·Iᵀ, arange)] (same-class images are negatives)."""
    logits = scale * image_features.float() @ targets.float().T
    labels = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def prototype_preds(image_features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """(B,) argmax(100 · f̂ · P̂ᵀ) — the ``preds`` pseudo-label and the inference rule."""
    with torch.no_grad():
        f = F.normalize(image_features.detach().float(), dim=-1)
        return (PREDS_SCALE * f @ F.normalize(prototypes.float(), dim=-1).T).argmax(1)


# --- warmup ----------------------------------------------------------------------------------------------------
class WarmupAdamW(torch.optim.AdamW):
    """AdamW whose first ``warmup`` steps scale the lr linearly from 1/warmup to 1 (open_clip's warmup).

    The scale is applied inside :meth:`step` only, so the loop's per-step scheduler (cosine) sees and anneals the
    plain lr; the step count lives in each param group (``warmup_done``) and so in the optimiser's state dict.
    """

    def __init__(self, groups, *, warmup: int = 0, **kwargs):
        super().__init__(groups, **kwargs)
        for g in self.param_groups:
            g.setdefault("warmup", int(warmup))
            g.setdefault("warmup_done", 0)

    def step(self, closure=None):
        saved = [g["lr"] for g in self.param_groups]
        for g in self.param_groups:
            g["warmup_done"] += 1
            if g["warmup"] > 0 and g["warmup_done"] <= g["warmup"]:
                g["lr"] = g["lr"] * g["warmup_done"] / g["warmup"]
        try:
            return super().step(closure)
        finally:
            for g, lr in zip(self.param_groups, saved, strict=True):
                g["lr"] = lr


# --- the model ---------------------------------------------------------------------------------------------------


def train_transform(preprocess_cfg: dict):
    """open_clip's training transform: RandomResizedCrop(scale 0.9–1, bicubic) → tensor → the model's normalisation."""
    import torchvision.transforms as T

    from .views import RGB

    size = preprocess_cfg.get("size", 224)
    side = int(size if isinstance(size, int) else size[0])
    return T.Compose(
        [
            RGB(),
            T.RandomResizedCrop(side, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            T.ToTensor(),
            T.Normalize(
                tuple(preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
                tuple(preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
            ),
        ]
    )


def _is_layernorm(name: str) -> bool:
    return any(part.startswith("ln_") or part == "ln" for part in name.split("."))


def set_trainable(clip_model: nn.Module, preset: str) -> None:
    """Set ``requires_grad`` on an open_clip model for ``preset`` (``head``: nothing of CLIP trains)."""
    if preset not in PRESETS:
        raise InvalidInputError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    clip_model.requires_grad_(False)
    visual = clip_model.visual
    if preset == "vision":
        visual.requires_grad_(True)
    elif preset == "ln-last":
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if blocks is None:
            raise InvalidInputError("preset ln-last needs a ViT vision tower (ViT-B-32, ...); use vision or head")
        for name, p in visual.named_parameters():
            if _is_layernorm(name) or name == "proj":
                p.requires_grad_(True)
        for block in list(blocks)[-max(1, len(blocks) // 4) :]:
            block.requires_grad_(True)
    elif preset == "full":
        clip_model.requires_grad_(True)
        for name in ("logit_scale", "logit_bias"):  # LatteCLIP's own scale replaces the model's
            p = getattr(clip_model, name, None)
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)


class LatteNet(nn.Module):
    """The image side being trained (adapter, or CLIP itself) plus the learnable loss scale.

    ``image_features(x)`` is L2-normalised: ``x`` is a batch of cached features (``head``) or of images.
    """

    def __init__(self, preset: str, dim: int, clip_model: nn.Module | None, logit_scale: float):
        super().__init__()
        self.preset = preset
        self.adapter = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.adapter.weight.copy_(torch.eye(dim))
        self.logit_scale = nn.Parameter(torch.tensor(float(math.log(logit_scale))))
        self.clip = clip_model
        if preset == "head":
            if clip_model is not None:
                clip_model.requires_grad_(False)
        else:
            set_trainable(clip_model, preset)

    def named_trainable(self) -> list[tuple[str, nn.Parameter]]:
        out = [("logit_scale", self.logit_scale)]
        if self.preset == "head":
            return [*out, ("adapter.weight", self.adapter.weight)]
        return out + [(f"clip.{n}", p) for n, p in self.clip.named_parameters() if p.requires_grad]

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.preset == "head":
            return F.normalize(self.adapter(F.normalize(x.float(), dim=-1)), dim=-1)
        return F.normalize(self.clip.encode_image(x), dim=-1)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(tokens), dim=-1)


class LatteTask(TrainTask):
    """LatteCLIP steps 3–7 on a :class:`LatteNet` (see the module docstring).

    Parameters
    ----------
    net : LatteNet (on ``device``)
    data : dict
        From the run's setup: ``rows`` (train / holdout / val arrays), ``verified`` (N,), ``zero_shot`` (N,),
        ``caption`` (N,) index into the caption texts or -1, ``group`` (N,) index into the group texts or -1,
        ``label_emb`` (C, D), ``caption_emb`` (K, D), ``group_emb`` (G, D), ``holdout_teacher`` (N,),
        ``features`` (N, D) for ``head``; texts (``label_texts``, ``caption_texts``, ``group_texts``) for ``full``.
    params : dict
        Resolved params (``batch_size``, ``alpha``, ``warmup``, ``workers``, ``precision``).
    paths : list of str
        The image file of each row (tower presets).
    weak, train_view : callables (PIL image → tensor), tower presets only
    tokenizer : callable, ``full`` only
    """

    teacher_note = (
        "the teacher here is the class nearest to the mean of each held-out image's caption and group description "
        "(zero-shot where it has neither): "
        "the captions may not tell these classes apart (check a few in step 6), or the CLIP text features do not"
    )

    def __init__(
        self,
        net: LatteNet,
        data: dict,
        params: dict,
        device: torch.device,
        model_info: dict,
        *,
        paths: list[str] | None = None,
        weak=None,
        train_view=None,
        tokenizer=None,
    ):
        self.net = net
        self.preset = net.preset
        self.device = device
        self.params = params
        self.model_info = model_info
        self.alpha = float(params.get("alpha", 0.01))
        self.batch_size = int(params["batch_size"])
        self.amp = resolve_amp(params.get("precision", "auto"), device)
        self.rows = {k: np.asarray(v, dtype=np.int64) for k, v in data["rows"].items()}
        self.verified = torch.as_tensor(np.asarray(data["verified"], dtype=np.int64))
        zs = torch.as_tensor(np.asarray(data["zero_shot"], dtype=np.int64))
        self.zero_shot = torch.where(self.verified >= 0, self.verified, zs)  # human labels replace both streams
        self.caption = torch.as_tensor(np.asarray(data["caption"], dtype=np.int64))
        self.group = torch.as_tensor(np.asarray(data["group"], dtype=np.int64))
        self.holdout_teacher = np.asarray(data["holdout_teacher"], dtype=np.int64)
        self.label_emb = torch.as_tensor(data["label_emb"], dtype=torch.float32).to(device)
        self.caption_emb = torch.as_tensor(data["caption_emb"], dtype=torch.float32).to(device)
        self.group_emb = torch.as_tensor(data["group_emb"], dtype=torch.float32).to(device)
        self.num_classes = int(self.label_emb.shape[0])
        self.prototypes = F.normalize(self.label_emb.clone(), dim=-1)
        self.snapshot = self.prototypes.clone()
        feats = data.get("features")
        self.features = None if feats is None else torch.as_tensor(np.asarray(feats, dtype=np.float32))
        self.texts = {k: list(data.get(k) or []) for k in ("label_texts", "caption_texts", "group_texts")}
        self.paths, self.weak, self.train_view, self.tokenizer = paths, weak, train_view, tokenizer
        self.min_side = 2 * int(model_info.get("image_size") or 224)
        # Group pools: per class, the group text of every image of that (stream) class that has one (padded).
        pools: list[list[int]] = [[] for _ in range(self.num_classes)]
        for r in np.flatnonzero(self.group.numpy() >= 0):
            pools[int(self.zero_shot[r])].append(int(self.group[r]))
        self.pool_size = torch.tensor([len(p) for p in pools], dtype=torch.long)
        self.pools = torch.full((self.num_classes, max(1, int(self.pool_size.max()))), -1, dtype=torch.long)
        for c, p in enumerate(pools):
            self.pools[c, : len(p)] = torch.tensor(p, dtype=torch.long)

    # --- state: the trainable parameters plus the prototypes ---------------------------------------------
    def named_trainable(self):
        return self.net.named_trainable()

    def state(self) -> dict[str, torch.Tensor]:
        out = super().state()
        out["__prototypes__"] = self.prototypes.detach().cpu().clone()
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        protos = state.pop("__prototypes__", None)
        if protos is None:
            raise InvalidInputError("checkpoint has no LatteCLIP prototypes: it was not written by this method")
        super().load_state(state)
        self.prototypes = protos.to(self.device, torch.float32)
        self.snapshot = self.prototypes.clone()

    def optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """AdamW (0.9, 0.98), eps 1e-6, weight decay on ≥ 2-D weights only, linear warmup (``warmup`` steps)."""
        decay, no_decay = [], []
        for n, p in self.named_trainable():
            (decay if p.ndim >= 2 and n != "logit_scale" else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return WarmupAdamW(
            [g for g in groups if g["params"]],
            lr=lr,
            betas=(0.9, 0.98),
            eps=1e-6,
            warmup=int(self.params.get("warmup") or 0),
        )

    def save_model(self, path: Path, info: dict) -> None:
        atomic_save({**self.model_file(), **info}, path)

    def model_file(self) -> dict[str, Any]:
        if self.preset == "head":
            state = {"adapter.weight": self.net.adapter.weight.detach().cpu().clone()}
        else:
            state = {
                n[len("clip.") :]: p.detach().cpu().clone()
                for n, p in self.net.named_trainable()
                if n.startswith("clip.visual.")
            }
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            **self.model_info,
            "preset": self.preset,
            "prototypes": F.normalize(self.prototypes.detach().float(), dim=-1).cpu().clone(),
            "state": state,
        }

    # --- batches -------------------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.rows["train"]) / self.batch_size)

    def _draw_groups(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A group text per row: that of a random image of the row's (zero-shot or human) class; -1 if none."""
        cls = self.zero_shot[rows]
        size = self.pool_size[cls]
        pick = (torch.rand(len(rows), generator=generator) * size).long().clamp_max((size - 1).clamp_min(0))
        out = self.pools[cls, pick]
        return torch.where(size > 0, out, torch.full_like(out, -1))

    def batches(self, generator: torch.Generator):
        self.snapshot = self.prototypes.clone()  # the text weights' reference for this epoch
        draw = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        train = torch.as_tensor(self.rows["train"])
        if self.preset == "head":
            order = train[torch.randperm(len(train), generator=generator)]
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                if len(rows) >= 2:
                    yield rows, self.features[rows], self._draw_groups(rows, draw)
            return
        from .views import image_loader

        loader = image_loader(
            [self.paths[r] for r in self.rows["train"]],
            self.train_view,
            self.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=self.params.get("workers"),
            device=self.device,
            min_side=self.min_side,
        )
        for local, views, _failed in loader:
            if len(local) >= 2:
                rows = train[local]
                yield rows, views[0], self._draw_groups(rows, draw)

    # --- the step ------------------------------------------------------------------------------------------
    def _texts(self, rows: torch.Tensor, groups: torch.Tensor):
        """Label-text features (C, D), and the captions' and group texts' features with their owners."""
        cap = self.caption[rows]
        has_cap = torch.nonzero(cap >= 0).flatten()
        has_grp = torch.nonzero(groups >= 0).flatten()
        if self.preset == "full":
            tok = self.tokenizer
            label = self.net.text_features(tok(self.texts["label_texts"]).to(self.device))
            cap_texts = [self.texts["caption_texts"][int(cap[i])] for i in has_cap]
            grp_texts = [self.texts["group_texts"][int(groups[i])] for i in has_grp]
            both = cap_texts + grp_texts
            feats = self.net.text_features(tok(both).to(self.device)) if both else label[:0]
            caps, grps = feats[: len(cap_texts)], feats[len(cap_texts) :]
        else:
            label = self.label_emb
            caps = self.caption_emb[cap[has_cap].to(self.device)]
            grps = self.group_emb[groups[has_grp].to(self.device)]
        return label, caps, has_cap.to(self.device), grps, has_grp.to(self.device)

    def targets(self, rows: torch.Tensor, groups: torch.Tensor, preds: torch.Tensor, zs: torch.Tensor):
        """Both streams' smoothed targets (B, D) each (steps 4–5)."""
        label, caps, cap_own, grps, grp_own = self._texts(rows, groups)
        b = len(rows)
        extra = torch.cat([caps, grps]).float()
        extra_own = torch.cat([cap_own, grp_own])
        w_extra = text_weights(extra, self.snapshot) if len(extra) else extra[:, 0]
        own = torch.cat([torch.arange(b, device=self.device), extra_own])
        out = []
        for stream in (preds, zs):
            lab = label[stream].float()
            texts = torch.cat([lab, extra])
            weights = torch.cat([text_weights(lab, self.snapshot), w_extra])
            fused = fuse_texts(texts, weights, own, b)
            out.append(smoothed_targets(self.prototypes, fused, stream, self.alpha))
        return out

    def loss(self, batch) -> tuple[torch.Tensor, int, int]:
        rows, x, groups = batch
        with torch.no_grad():
            self.net.logit_scale.clamp_(0, math.log(100))  # official: after every step; here before each use
        f = self.net.image_features(x.to(self.device, non_blocking=True))
        model_preds = prototype_preds(f, self.prototypes)
        v = self.verified[rows].to(self.device)
        preds = torch.where(v >= 0, v, model_preds)
        zs = self.zero_shot[rows].to(self.device)
        t_pred, t_zs = self.targets(rows, groups, preds, zs)
        scale = self.net.logit_scale.exp()
        loss = clip_loss(f, t_pred, scale) + clip_loss(f, t_zs, scale)
        # Step 7 with this step's targets (constants: the prototypes are in no graph, so this cannot disturb the
        # backward pass that follows).
        self.prototypes = update_prototypes(
            self.prototypes, torch.cat([t_pred, t_zs]).detach().float(), torch.cat([preds, zs])
        )
        return loss, len(rows), int((model_preds == zs).sum())

    # --- selection signals -------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(student top-1, the rows kept) on the weak view (cached features for ``head``)."""
        if not len(rows):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if self.preset == "head":
            preds = []
            for start in range(0, len(rows), 4096):
                x = self.features[torch.as_tensor(rows[start : start + 4096])].to(self.device)
                preds.append(prototype_preds(self.net.image_features(x), self.prototypes).cpu())
            return torch.cat(preds).numpy(), np.asarray(rows)
        from .views import image_loader

        preds, kept = [], []
        loader = image_loader(
            [self.paths[r] for r in rows],
            self.weak,
            max(self.batch_size, 64),
            num_workers=self.params.get("workers"),
            device=self.device,
            min_side=self.min_side,
        )
        base = torch.as_tensor(rows)
        for local, views, _failed in loader:
            if not len(local):
                continue
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                f = self.net.image_features(views[0].to(self.device))
            preds.append(prototype_preds(f, self.prototypes).cpu())
            kept.append(base[local])
            if self.tick is not None:
                self.tick(f"evaluating {sum(len(k) for k in kept)} of {len(rows)} images")
        if not kept:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return torch.cat(preds).numpy(), torch.cat(kept).numpy()

    def holdout(self):
        rows = self.rows["holdout"]
        if not len(rows):
            return None
        s, kept = self.predict_rows(rows)
        return s, self.holdout_teacher[kept]

    def validation(self):
        rows = self.rows["val"]
        if not len(rows):
            return None
        s, kept = self.predict_rows(rows)
        return s, self.verified[torch.as_tensor(kept)].numpy()


# --- the trained model -------------------------------------------------------------------------------------------
class LatteModel:
    """A LatteCLIP model rebuilt from its file: the base CLIP (loaded by name) + the saved image side + prototypes.

    Attributes: ``classes``, ``transform`` (the weak view), ``device``, ``image_size``, ``info`` (the file's
    metadata without the weights); :meth:`predict_proba` gives softmax(100 · f̂ · P̂ᵀ).
    """

    def __init__(self, data: dict, device: str | torch.device = "auto"):
        from ..models import load_clip

        if data.get("format") != MODEL_FORMAT:
            raise InvalidInputError(f"not a LatteCLIP model file (format {data.get('format')!r})")
        base = data["base"]
        clip = load_clip(base["model"], base.get("pretrained") or None, device=device, precision="fp32")
        self.clip = clip
        self.classes = list(data["classes"])
        self.preset = str(data["preset"])
        state = data["state"]
        self.adapter = None
        if self.preset == "head":
            self.adapter = state["adapter.weight"].to(clip.device, torch.float32)
        else:
            params = dict(clip.model.named_parameters())
            unknown = sorted(set(state) - set(params))
            if unknown:
                raise InvalidInputError(
                    f"the model file does not fit {base['model']}: unknown weights {unknown[:3]} (was it trained on "
                    "another architecture?)"
                )
            with torch.no_grad():
                for n, w in state.items():
                    params[n].copy_(w.to(params[n].device, params[n].dtype))
        clip.model.requires_grad_(False)
        self.prototypes = F.normalize(data["prototypes"].to(clip.device, torch.float32), dim=-1)
        self.device = clip.device
        self.transform = clip.preprocess
        self.image_size = clip.image_size
        self.amp = resolve_amp("auto", self.device)
        self.info = {k: v for k, v in data.items() if k not in ("state", "prototypes")}

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features (B, D) of a preprocessed batch, as the prototypes expect them."""
        x = x.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            f = self.clip.model.encode_image(x).float()
        f = F.normalize(f, dim=-1)
        if self.adapter is not None:
            f = F.normalize(f @ self.adapter.T, dim=-1)
        return f

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        """Probabilities (B, C): softmax(100 · f̂ · P̂ᵀ)."""
        logits = PREDS_SCALE * self.features(x) @ self.prototypes.T
        return torch.softmax(logits, dim=1).cpu().numpy()
