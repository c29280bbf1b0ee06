"""CDUL's classifier training (steps 4–5) as a :class:`~labeler.train.loop.TrainTask`, and its model file.

:class:`CDULHeadTask` trains a head (linear, or a small MLP) on frozen cached image features (CLIP or DINO)
against soft multi-label targets: the aggregated pseudo-labels, with human/accepted label sets in their
place for those images. Two losses:

* ``kl`` — the reproduction's: ``softmax`` outputs and the batch mean of ``KL(preds ‖ pseudo)``, both rows
  renormalised to sum 1 (torchmetrics ``KLDivergence(preds, pseudo)``);
* ``bce`` — sigmoid outputs and binary cross-entropy against the soft targets (summed over classes,
  averaged over the batch): the natural multi-label loss.

**Refinement** (gradient alignment, :func:`labeler.methods.cdul.refine`): in every epoch whose 1-based number
is above ``refine_warmup`` and a multiple of ``refine_every``, every batch's pseudo-labels (not the human ones) take
one step toward the predictions of that same forward pass, before the optimiser step. The refined labels
are part of the task's state (``state()``): the loop's checkpoint holds them with the head, so a killed
run resumes with exactly the labels an uninterrupted one would have; they are also written to
``pseudo_labels.npz`` in the run folder after each refinement epoch.

Model selection is the loop's label-free rule (:mod:`labeler.train.selection`): top-1 agreement with the
initial pseudo-labels on held-out images (or human labels as a validation set), never a ground-truth mAP.

The model file (``best.pt``): ``format`` ``labeler.cdul-head``, ``classes``, ``loss``, ``hidden``, ``dim``,
``features`` (the feature-set key the head reads), ``mean`` / ``std`` (1, D) (the standardisation of its input,
from the training run's images), ``state`` (the head's weights), ``train_run``, ``epoch``, and ``encoder``
(:func:`encoder_info`: which base model computes the head's input features). The ``model`` exporter adds
``thresholds`` (C,) (:func:`export_fields`). :class:`CDULModel` reads such a file for ``apply``: the base model
(loaded by name) → its L2-normalised image features (:meth:`labeler.models.Encoder.encode_images`, exactly what
the feature cache holds) → the standardisation → the head.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from .loop import TrainTask, atomic_save

if TYPE_CHECKING:
    from ..project import Project

MODEL_FORMAT = "labeler.cdul-head"
MODEL_VERSION = 1
LOSSES = ("bce", "kl")
_TINY = 1e-12


def standardizer(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (1, D) of features (N, D), float32; a constant dimension gets std 1."""
    f = np.asarray(features, dtype=np.float64)
    mean = f.mean(axis=0, keepdims=True) if len(f) else np.zeros((1, f.shape[1]))
    std = f.std(axis=0, keepdims=True) if len(f) else np.ones((1, f.shape[1]))
    std = np.where(std > 1e-8, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def make_head(dim: int, num_classes: int, hidden: int = 0, seed: int = 0) -> torch.nn.Module:
    """``Linear(dim, C)``, or ``Linear(dim, hidden) → ReLU → Linear(hidden, C)`` for ``hidden > 0``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if hidden and hidden > 0:
            return torch.nn.Sequential(
                torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, num_classes)
            )
        return torch.nn.Sequential(torch.nn.Linear(dim, num_classes))


def scores_from_logits(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """The classifier's per-class scores: softmax for ``kl``, sigmoid for ``bce``."""
    return torch.softmax(logits, dim=-1) if loss == "kl" else torch.sigmoid(logits)


def cdul_loss(logits: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """The training loss of a batch (see the module docstring): (B, C) logits and soft targets in [0, 1]."""
    if loss == "kl":
        p = torch.softmax(logits.float(), dim=-1)
        q = targets.float().clamp_min(_TINY)
        q = q / q.sum(dim=-1, keepdim=True)
        return (p * (p.clamp_min(_TINY).log() - q.log())).sum(dim=-1).mean()
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum") / len(logits)
    raise InvalidInputError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def refines_in(epoch: int, warmup: int, every: int) -> bool:
    """Whether the 0-based ``epoch`` refines: ``(epoch + 1) > warmup`` and ``(epoch + 1) % every == 0``."""
    return every > 0 and (epoch + 1) > warmup and (epoch + 1) % every == 0


@dataclass
class CDULTargets:
    """What a CDUL task trains on and refines, per training-set row (``image_ids`` order).

    Attributes
    ----------
    targets : array (N, C)
        Initial soft targets in [0, 1] (aggregated pseudo-labels; human sets where ``fixed``).
    fixed : bool array (N,)
        Rows whose targets are a person's labels: never refined.
    rows : dict
        ``train`` / ``holdout`` / ``val`` row arrays (:func:`labeler.train.data.split_rows`).
    teacher : int array (N,)
        Top-1 of the initial pseudo-labels (what held-out agreement compares to).
    verified : int array (N,)
        Primary class of human labels (validation), -1 elsewhere.
    """

    targets: np.ndarray
    fixed: np.ndarray
    rows: dict
    teacher: np.ndarray
    verified: np.ndarray

    @classmethod
    def from_setup(cls, setup: dict) -> CDULTargets:
        """From a run's setup (:meth:`labeler.methods.cdul.CDUL.setup`): the teacher is the aggregated top-1."""
        return cls(
            setup["targets"].numpy(),
            setup["fixed"].numpy(),
            {k: v.numpy() for k, v in setup["rows"].items()},
            setup["aggregated"].numpy().argmax(axis=1),
            setup["verified"].numpy(),
        )


class CDULTask(TrainTask):
    """What both CDUL tasks share: the soft multi-label targets, their refinement, the state and the selection.

    A subclass gives the forward pass (:meth:`forward_batch`: a batch → its rows and logits), one epoch's
    batches (:meth:`epoch_batches`), :meth:`top1` of rows in eval mode, the trainable module (``self.module``)
    and :meth:`save_model`.

    Parameters
    ----------
    data : CDULTargets
        The targets, the fixed rows, the split, the teacher and the verified labels.
    params : dict
        ``loss``, ``batch_size``, ``seed``, ``refine_warmup``, ``refine_every``, ``refine_step``, ``sigma``.
    refiner : callable
        ``refiner(pseudo, probs, *, step, sigma, loss) -> pseudo'`` on numpy arrays: the method's refinement
        (:func:`labeler.methods.cdul.refine`), passed in so this module needs nothing of the method's.
    on_refined : callable, optional
        Called after each refinement epoch with (epoch (1-based), targets (N, C) numpy).
    """

    module: torch.nn.Module
    #: The degenerate-teacher warning in CDUL's terms (held-out agreement compares top-1 with the initial
    #: pseudo-labels' top-1, not with a NoLA or LaFTer teacher).
    teacher_note = (
        "the teacher here is CDUL's initial pseudo-labels (the top class of the aggregated global and snippet "
        "scores): the CLIP features may not tell these classes apart, or one class is in most images (then its "
        "top-1 concentration is expected and held-out agreement says little)"
    )

    def __init__(self, data: CDULTargets, params: dict, device: torch.device, info: dict, refiner, on_refined=None):
        self.device = torch.device(device)
        self.targets = torch.as_tensor(np.asarray(data.targets, dtype=np.float32)).clone()
        if self.targets.ndim != 2:
            raise InvalidInputError(f"targets {tuple(self.targets.shape)} must be (N, C)")
        self.fixed = torch.as_tensor(np.asarray(data.fixed, dtype=bool))
        self.rows = {k: np.asarray(v, dtype=np.int64) for k, v in data.rows.items()}
        self.teacher = np.asarray(data.teacher, dtype=np.int64)
        self.verified = np.asarray(data.verified, dtype=np.int64)
        self.params = params
        self.loss_name = str(params["loss"])
        if self.loss_name not in LOSSES:
            raise InvalidInputError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss_name!r}")
        self.num_classes = int(self.targets.shape[1])
        self.info = info
        self.refiner = refiner
        self.on_refined = on_refined
        self.epochs_seen = 0  # epochs started (restored from a checkpoint by load_state)
        self.epoch = -1
        self.refined_batches = 0

    # --- to fill in ----------------------------------------------------------------------------------------------
    def forward_batch(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows (B,) LongTensor on the CPU, logits (B, C)) of one training batch."""
        raise NotImplementedError

    def epoch_batches(self, generator: torch.Generator):
        """One epoch's training batches, shuffled with ``generator``."""
        raise NotImplementedError

    def top1(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted top-1 (K,), the rows they are of (K,)) in eval mode; rows that cannot be read are left out."""
        raise NotImplementedError

    # --- state: the trainable weights plus the refined pseudo-labels ----------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        out = super().state()
        out["cdul.pseudo_labels"] = self.targets.clone()
        out["cdul.epochs_seen"] = torch.tensor(self.epochs_seen, dtype=torch.long)
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        labels = state.pop("cdul.pseudo_labels", None)
        seen = state.pop("cdul.epochs_seen", None)
        super().load_state(state)
        if labels is not None:
            if tuple(labels.shape) != tuple(self.targets.shape):
                raise InvalidInputError(
                    f"the checkpoint's pseudo-labels {tuple(labels.shape)} do not fit this run "
                    f"{tuple(self.targets.shape)}"
                )
            self.targets = labels.clone().float()
        if seen is not None:
            self.epochs_seen = int(seen)

    # --- training --------------------------------------------------------------------------------------------
    def refining(self) -> bool:
        return refines_in(self.epoch, int(self.params.get("refine_warmup", 0)), int(self.params.get("refine_every", 0)))

    def batches(self, generator: torch.Generator):
        self.epoch = self.epochs_seen
        self.epochs_seen += 1
        self.module.train()
        yield from self.epoch_batches(generator)
        # after the last batch (the loop has taken them all): the epoch's refinement is done
        self.module.eval()
        if self.refining() and self.on_refined is not None:
            self.on_refined(self.epoch + 1, self.targets.numpy())

    def loss(self, batch: Any) -> tuple[torch.Tensor, int, int]:
        rows, logits = self.forward_batch(batch)
        y = self.targets[rows]
        value = cdul_loss(logits, y.to(self.device), self.loss_name)
        probs = scores_from_logits(logits.detach().float(), self.loss_name).cpu()
        if self.refining():  # gradient alignment with this forward's predictions, before the optimiser step
            free = ~self.fixed[rows]
            if free.any():
                step = float(self.params.get("refine_step", 1.0))
                sigma = float(self.params.get("sigma", 1.0))
                new = self.refiner(y[free].numpy(), probs[free].numpy(), step=step, sigma=sigma, loss=self.loss_name)
                self.targets[rows[free]] = torch.from_numpy(new)
                self.refined_batches += 1
        agree = int((probs.argmax(1) == y.argmax(1)).sum())
        return value, len(rows), agree

    # --- selection --------------------------------------------------------------------------------------------
    def holdout(self):
        rows = self.rows.get("holdout", np.zeros(0, dtype=np.int64))
        if not len(rows):
            return None
        preds, kept = self.top1(rows)
        return preds, self.teacher[kept]

    def validation(self):
        rows = self.rows.get("val", np.zeros(0, dtype=np.int64))
        if not len(rows):
            return None
        preds, kept = self.top1(rows)
        return preds, self.verified[kept]


class CDULHeadTask(CDULTask):
    """A head on frozen features, trained on (and refining) soft multi-label pseudo-labels.

    Parameters
    ----------
    features : array (N, D)
        The frozen image features, one row per training-set image (``image_ids`` order).
    data, params, device, info, refiner, on_refined
        As in :class:`CDULTask`; ``params`` also gives ``hidden`` (0: linear).
    """

    def __init__(
        self,
        features: np.ndarray,
        data: CDULTargets,
        params: dict,
        device: torch.device,
        info: dict,
        refiner,
        on_refined=None,
    ):
        super().__init__(data, params, device, info, refiner, on_refined)
        raw = np.asarray(features, dtype=np.float32)
        if self.targets.shape[0] != raw.shape[0]:
            raise InvalidInputError(
                f"targets {tuple(self.targets.shape)} must be (N, C) for the {raw.shape[0]} feature rows"
            )
        # standardised per dimension (mean 0, std 1 over the run's images): CLIP features differ between images
        # by a few hundredths in each dimension, which a freshly initialised head at lr 1e-3 barely resolves
        self.mean, self.std = standardizer(raw)
        self.features = torch.as_tensor((raw - self.mean) / self.std).to(self.device)
        self.head = make_head(
            self.features.shape[1], self.num_classes, int(params.get("hidden") or 0), int(params.get("seed", 0))
        ).to(self.device)
        self.module = self.head

    def named_trainable(self):
        return [(f"head.{n}", p) for n, p in self.head.named_parameters()]

    def save_model(self, path: Path, info: dict) -> None:
        atomic_save(
            {
                "format": MODEL_FORMAT,
                "version": MODEL_VERSION,
                **self.info,
                **info,
                "loss": self.loss_name,
                "hidden": int(self.params.get("hidden") or 0),
                "dim": int(self.features.shape[1]),
                "mean": torch.from_numpy(self.mean.copy()),
                "std": torch.from_numpy(self.std.copy()),
                "state": {n: p.detach().cpu().clone() for n, p in self.head.state_dict().items()},
            },
            path,
        )

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.rows["train"]) / int(self.params["batch_size"])))

    def epoch_batches(self, generator: torch.Generator):
        train = self.rows["train"]
        order = train[torch.randperm(len(train), generator=generator).numpy()]
        bs = int(self.params["batch_size"])
        for start in range(0, len(order), bs):
            yield torch.from_numpy(order[start : start + bs])

    def forward_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = batch.long()
        return rows, self.head(self.features[rows.to(self.device)])

    @torch.no_grad()
    def top1(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        was = self.head.training
        self.head.eval()
        out = self.head(self.features[torch.from_numpy(rows).to(self.device)]).argmax(1).cpu().numpy()
        self.head.train(was)
        return out, np.asarray(rows)


class CDULHead:
    """A trained CDUL head read back from its model file: ``predict(features) -> (N, C)`` scores."""

    def __init__(self, data: dict, device: str | torch.device = "cpu"):
        if data.get("format") != MODEL_FORMAT:
            raise InvalidInputError(f"not a CDUL model file (format {data.get('format')!r})")
        self.data = data
        self.classes = list(data["classes"])
        self.loss = str(data["loss"])
        self.features_key = data.get("features")
        self.device = torch.device(device)
        self.head = make_head(int(data["dim"]), len(self.classes), int(data.get("hidden") or 0)).to(self.device)
        self.head.load_state_dict({k: v.to(self.device) for k, v in data["state"].items()})
        self.head.eval()
        dim = int(data["dim"])
        self.mean = np.asarray(data["mean"], dtype=np.float32) if "mean" in data else np.zeros((1, dim), np.float32)
        self.std = np.asarray(data["std"], dtype=np.float32) if "std" in data else np.ones((1, dim), np.float32)
        self.info: dict[str, Any] = {k: data.get(k) for k in ("train_run", "epoch", "score", "selection", "base")}

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> CDULHead:
        from .loop import load

        return cls(load(Path(path)), device)

    @torch.no_grad()
    def predict(self, features: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """Per-class scores (N, C) float32 of features (N, D): softmax (``kl``) or sigmoid (``bce``)."""
        f = np.asarray(features, dtype=np.float32)
        out = np.empty((len(f), len(self.classes)), dtype=np.float32)
        for s in range(0, len(f), chunk):
            x = torch.from_numpy((f[s : s + chunk] - self.mean) / self.std).to(self.device)
            out[s : s + len(x)] = scores_from_logits(self.head(x), self.loss).cpu().numpy()
        return out


def encoder_info(fset: dict) -> dict:
    """What a model file records of the base model behind a feature set (a ``feature_sets`` row).

    Returns ``{"key", "kind" (clip | dino), "model", "pretrained" (tag or file; None for DINO / random),
    "dim", "image_size"}``: enough for :class:`CDULModel` to load the encoder and compute the same features.
    """
    params = fset.get("params") or {}
    if isinstance(params, str):
        params = json.loads(params or "{}")
    kind = str(fset.get("kind") or "")
    if kind not in ("clip", "dino"):
        raise InvalidInputError(f"feature set {fset.get('key')!r} is of kind {kind!r}: a CDUL head reads clip or dino")
    return {
        "key": str(fset["key"]),
        "kind": kind,
        "model": str(fset.get("model") or ""),
        "pretrained": (fset.get("pretrained") or None) if kind == "clip" else None,
        "dim": int(fset["dim"]),
        "image_size": int(params["image_size"]) if params.get("image_size") else None,
    }


def export_fields(project: Project, data: dict) -> dict:
    """What the ``model`` exporter adds to a CDUL model file so that ``apply`` needs nothing of the project.

    ``encoder`` (:func:`encoder_info` of the head's feature set, where the file lacks it) and ``thresholds``:
    per class (C,) the threshold a person set (``Project.thresholds``), else the run's ``label_threshold``.
    """
    out: dict[str, Any] = {}
    if not data.get("encoder") and data.get("format") == MODEL_FORMAT:  # a fine-tuned network reads the images
        fset = project.features.get_set(str(data.get("features")))
        if fset is None:
            raise InvalidInputError(
                f"the head reads feature set {data.get('features')!r}, which this project no longer has: the "
                "exported file could not say which model computes its input"
            )
        out["encoder"] = encoder_info(fset)
    saved = project.thresholds()
    default = float(data.get("label_threshold", 0.5))
    out["thresholds"] = [float(saved.get(c, default)) for c in data["classes"]]
    return out


class CDULModel:
    """A CDUL classifier for new images, rebuilt from its model file: the base encoder (loaded by name) + the head.

    The same interface as :class:`labeler.train.student.TrainedModel`: ``classes``, ``transform`` (the encoder's
    preprocess), ``device``, ``image_size``, ``info`` (the file's metadata without the weights) and
    :meth:`predict_proba`; besides, ``multi_label`` (True), ``thresholds`` (C,) for label sets, ``loss`` and
    ``min_side`` (the JPEG decode floor the feature cache uses, so new images get the same pixels).

    Raises
    ------
    InvalidInputError
        Not a CDUL file, one without ``encoder`` (a run's ``best.pt`` from before: export it), or an encoder whose
        feature dimension differs from the head's.
    ModelUnavailableError
        The base weights are not here (offline: fails fast, saying where to put them).
    """

    multi_label = True

    def __init__(self, data: dict, device: str | torch.device = "auto"):
        from ..models import load_encoder

        enc = data.get("encoder")
        if not enc:
            raise InvalidInputError(
                "this CDUL model file does not say which model computes its features (written before that was "
                "recorded): export the run's model from its project again"
            )
        pretrained = enc.get("pretrained") if enc["kind"] == "clip" else None
        self.encoder = load_encoder(enc["kind"], enc["model"], pretrained=pretrained, device=device, precision="fp32")
        if int(self.encoder.dim) != int(data["dim"]):
            raise InvalidInputError(
                f"{enc['kind']} model {enc['model']!r} gives {self.encoder.dim}-d features, the head reads "
                f"{data['dim']}-d ones: not the model it was trained on"
            )
        self.device = self.encoder.device
        self.head = CDULHead(data, self.device)
        self.classes = self.head.classes
        self.loss = self.head.loss
        self.transform = self.encoder.preprocess
        self.image_size = self.encoder.image_size
        self.min_side = 2 * int(self.encoder.image_size)
        default = float(data.get("label_threshold", 0.5))
        self.thresholds = np.asarray(data.get("thresholds") or [default] * len(self.classes), dtype=np.float64)
        if self.thresholds.shape != (len(self.classes),):
            raise InvalidInputError(
                f"thresholds must be one per class ({len(self.classes)}), got shape {self.thresholds.shape}"
            )
        self.info = {k: v for k, v in data.items() if k not in ("state", "mean", "std")}

    def features(self, x: torch.Tensor) -> np.ndarray:
        """The head's input (B, D) float32 of a preprocessed batch (B, 3, H, W): the encoder's L2-normalised
        image features, as the feature cache computes them."""
        return self.encoder.encode_images(x).cpu().numpy()

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        """Per-class scores (B, C) for a preprocessed batch: sigmoid (``bce``) or softmax (``kl``) of the head."""
        return self.head.predict(self.features(x))
