"""The prompt-tuned CLIP student as a :class:`~labeler.train.loop.TrainTask`, its teachers, and its model file.

Teachers give a hard label for the weak view of each training image:

* :class:`FixedTeacher` — labels computed once before training (NoLA: frozen DINO + alignment module;
  the weak view of DINO is its own resize + center crop, i.e. exactly the cached DINO features, so no
  DINO forward runs during training).
* :class:`HeadTeacher` — a frozen linear head on the student's own weak-view features *without* prompts
  (LaFTer: the text-trained classifier; the LayerNorms it shares with the student keep learning, so it is
  computed on the fly).

Verified (human / accepted) labels replace the teacher's label for their images.

The model file (``best.pt`` of a run, and what the ``model`` exporter writes) is one ``torch.save``
dict, loadable with ``weights_only=True``: ``format``, ``version``, ``method``, ``base`` (CLIP model
name, pretrained tag or file, feature key), ``classes``, ``num_tokens``, ``state`` (prompts,
LayerNorms, head), ``train_run``, ``epoch``, ``score``, ``selection``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from .cdul import MODEL_FORMAT as CDUL_FORMAT
from .cdul_net import NET_FORMAT as CDUL_NET_FORMAT
from .latte import MODEL_FORMAT as LATTE_FORMAT
from .loop import TrainTask, atomic_save, resolve_amp
from .prompt import PromptedCLIP, student_from_clip
from .views import Views, image_loader

MODEL_FORMAT = "labeler.prompted-clip"
MODEL_VERSION = 1


class FixedTeacher:
    """Hard labels known in advance, one per row."""

    needs_weak = False

    def __init__(self, labels: torch.Tensor):
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __call__(self, rows: torch.Tensor, weak: torch.Tensor | None) -> torch.Tensor:
        return self.labels[rows.cpu()]


class HeadTeacher:
    """``argmax(head(normalize(student.features(weak, prompts=False))))`` — LaFTer's pseudo-labeler."""

    needs_weak = True

    def __init__(self, student: PromptedCLIP, weight: torch.Tensor, device: torch.device):
        self.student = student
        self.weight = torch.as_tensor(weight, dtype=torch.float32).to(device)

    @torch.no_grad()
    def __call__(self, rows: torch.Tensor, weak: torch.Tensor | None) -> torch.Tensor:
        feats = F.normalize(self.student.features(weak, prompts=False).float(), dim=-1)
        return (feats @ self.weight.T).argmax(1).cpu()


class PromptTuningTask(TrainTask):
    """Train a :class:`PromptedCLIP` on the strong view against a teacher's labels for the weak view.

    Parameters
    ----------
    student : PromptedCLIP (on ``device``)
    paths : list of str
        One image file per row (rows index everything below).
    rows : dict
        ``train``, ``holdout``, ``val`` row arrays (see :func:`labeler.train.data.split_rows`).
    verified : array (N,)
        Verified class per row, -1 where none.
    teacher : FixedTeacher or HeadTeacher
    weak, strong : callables
        PIL image → tensor.
    params : dict
        Resolved run params (``batch_size``, ``workers``, ``precision``, ``label_smoothing``).
    model_info : dict
        What the model file records besides the state (method, base, classes, num_tokens).
    """

    def __init__(
        self,
        student: PromptedCLIP,
        paths: Sequence[str],
        rows: dict,
        verified,
        teacher,
        weak,
        strong,
        params: dict,
        device: torch.device,
        model_info: dict,
    ):
        self.student = student
        self.num_classes = int(student.num_classes)
        self.paths = list(paths)
        self.train_rows = np.asarray(rows["train"], dtype=np.int64)
        self.holdout_rows = np.asarray(rows["holdout"], dtype=np.int64)
        self.val_rows = np.asarray(rows["val"], dtype=np.int64)
        self.verified = torch.as_tensor(np.asarray(verified, dtype=np.int64))
        self.teacher = teacher
        self.weak, self.strong = weak, strong
        self.params = params
        self.device = device
        self.batch_size = int(params["batch_size"])
        self.label_smoothing = float(params.get("label_smoothing", 0.1))
        self.amp = resolve_amp(params.get("precision", "auto"), device)
        self.model_info = model_info
        self.min_side = 2 * int(model_info.get("image_size") or 224)

    # --- state -----------------------------------------------------------------------------------
    def named_trainable(self):
        return self.student.named_trainable()

    def save_model(self, path: Path, info: dict) -> None:
        atomic_save({**model_file(self.student, self.model_info), **info}, path)

    # --- training --------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_rows) / self.batch_size)

    def _loader(self, rows: np.ndarray, transform, generator=None, shuffle=False):
        return image_loader(
            [self.paths[r] for r in rows],
            transform,
            self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.params.get("workers"),
            device=self.device,
            min_side=self.min_side,
        )

    def batches(self, generator: torch.Generator):
        transform = Views(self.weak, self.strong) if self.teacher.needs_weak else Views(self.strong)
        rows = torch.as_tensor(self.train_rows)
        for local, views, _failed in self._loader(self.train_rows, transform, generator, shuffle=True):
            if len(local):
                yield rows[local], views

    def targets(self, rows: torch.Tensor, weak: torch.Tensor | None) -> torch.Tensor:
        """The teacher's labels, replaced by verified labels where there are some (CPU long tensor)."""
        if weak is not None:
            weak = weak.to(self.device, non_blocking=True)
        target = self.teacher(rows, weak).cpu()
        v = self.verified[rows.cpu()]
        return torch.where(v >= 0, v, target)

    def loss(self, batch) -> tuple[torch.Tensor, int, int]:
        rows, views = batch
        weak = views[0] if self.teacher.needs_weak else None
        strong = views[-1].to(self.device, non_blocking=True)
        target = self.targets(rows, weak).to(self.device)
        logits = self.student(strong)
        loss = F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)
        agree = int((logits.detach().argmax(1) == target).sum())
        return loss, len(rows), agree

    # --- selection signals -----------------------------------------------------------------------
    @torch.no_grad()
    def _predict(self, rows: np.ndarray, with_teacher: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        student, teacher, kept = [], [], []
        what = "held-out images" if with_teacher else "validation images"
        base = torch.as_tensor(rows)
        for local, views, _failed in self._loader(rows, self.weak):
            if not len(local):
                continue
            x = views[0].to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                student.append(self.student(x).float().argmax(1).cpu())
                if with_teacher:
                    teacher.append(self.teacher(base[local], x).cpu())
            kept.append(base[local])
            if self.tick is not None:
                self.tick(f"evaluating {sum(len(k) for k in kept)} of {len(rows)} {what}")
        if not kept:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        s = torch.cat(student).numpy()
        t = torch.cat(teacher).numpy() if with_teacher else np.zeros(0, dtype=np.int64)
        return s, t, torch.cat(kept).numpy()

    def holdout(self):
        if not len(self.holdout_rows):
            return None
        s, t, _ = self._predict(self.holdout_rows, with_teacher=True)
        return s, t

    def validation(self):
        if not len(self.val_rows):
            return None
        s, _, kept = self._predict(self.val_rows, with_teacher=False)
        return s, self.verified[torch.as_tensor(kept)].numpy()


# --- the model file ----------------------------------------------------------------------------------
def model_file(student: PromptedCLIP, info: dict) -> dict[str, Any]:
    """The exportable dict for ``student`` (see the module docstring)."""
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        **info,
        "num_tokens": student.num_tokens,
        "state": {n: p.detach().cpu().clone() for n, p in student.named_trainable()},
    }


def read_model_file(path: str | Path) -> dict:
    """Load and check a model file written by :func:`model_file`."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"model file {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise InvalidInputError(f"{path} is not a Labeler model file: {type(e).__name__}: {e}") from e
    if not isinstance(data, dict) or data.get("format") not in (
        MODEL_FORMAT,
        LATTE_FORMAT,
        CDUL_FORMAT,
        CDUL_NET_FORMAT,
    ):
        raise InvalidInputError(
            f"{path} is not a Labeler model (format {MODEL_FORMAT!r}, {LATTE_FORMAT!r} for LatteCLIP, "
            f"{CDUL_FORMAT!r} or {CDUL_NET_FORMAT!r} for CDUL)"
        )
    if int(data.get("version", 0)) > MODEL_VERSION:
        raise InvalidInputError(f"{path} was written by a newer Labeler (model version {data['version']}); upgrade")
    return data


class TrainedModel:
    """A prompt-tuned CLIP rebuilt from a model file: base CLIP (loaded by name) + saved prompts, LNs, head.

    Attributes
    ----------
    classes : list of str
    transform : callable
        The weak view (the base model's preprocess): PIL image → tensor.
    info : dict
        The model file's metadata (method, base, train_run, epoch, ...), without the state.
    """

    def __init__(self, data: dict, device: str | torch.device = "auto"):
        from ..models import load_clip

        base = data["base"]
        clip = load_clip(base["model"], base.get("pretrained") or None, device=device, precision="fp32")
        self.classes = list(data["classes"])
        self.student = student_from_clip(clip, len(self.classes), int(data["num_tokens"]))
        state = data["state"]
        params = dict(self.student.named_trainable())
        if set(params) != set(state):
            raise InvalidInputError(
                f"the model file does not fit {base['model']}: its state names differ from the model's trainable "
                "parameters (was it trained on another architecture?)"
            )
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n].to(p.device, p.dtype))
        self.student.requires_grad_(False)
        self.device = clip.device
        self.transform = clip.preprocess
        self.image_size = clip.image_size
        self.amp = resolve_amp("auto", self.device)
        self.info = {k: v for k, v in data.items() if k != "state"}

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto"):
        """The model in a model file: a :class:`TrainedModel`, or a LatteCLIP or CDUL model (the same interface)."""
        data = read_model_file(path)
        if data["format"] == LATTE_FORMAT:
            from .latte import LatteModel

            return LatteModel(data, device)
        if data["format"] == CDUL_FORMAT:
            from .cdul import CDULModel

            return CDULModel(data, device)
        if data["format"] == CDUL_NET_FORMAT:
            from .cdul_net import CDULNetModel

            return CDULNetModel(data, device)
        return cls(data, device)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        """Probabilities (B, C) for a preprocessed batch (B, 3, H, W)."""
        x = x.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            logits = self.student(x)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()
