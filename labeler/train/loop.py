"""The training loop every training method shares: epochs, AMP, checkpoints, resume, label-free model selection.

A method describes one run as a :class:`TrainTask` (its trainable module, batches, loss and the
predictions model selection looks at); :func:`run_training` drives it inside a :class:`labeler.jobs.Job`:

* **steps** — ``autocast`` (bf16, or fp16 with a GradScaler) on a GPU, fp32 elsewhere; AdamW with the
  run's ``schedule`` (:func:`make_scheduler`: ``cosine`` per step, ours; ``constant``, the official codes');
  after each step ``job.progress`` reports and raises ``JobCancelled`` when a cancel was asked for (the
  partial epoch is dropped; the last checkpoint stays).
* **every epoch** — metrics appended to the run's ``metrics["epochs"]``: loss, agreement with the
  targets on the training batches, student–teacher agreement on a held-out slice of unlabeled images,
  prediction churn on that slice since the previous epoch, validation accuracy when verified labels
  serve as a validation set; then ``checkpoint.pt`` (trainable state, optimizer, scheduler, scaler,
  epoch, RNG states, history) is written atomically under ``runs/<run id>/``.
* **model selection** (:mod:`labeler.train.selection`) — the untrained model is scored first (epoch 0);
  the score is validation accuracy (human labels) when there is a validation set, else held-out teacher
  agreement. :func:`~labeler.train.selection.choose_epoch` keeps a later epoch only when it beats the kept
  one by more than the binomial noise and is not degenerate (collapsed to few classes) while a healthy one
  exists; when the kept epoch changes to the current one, ``best.pt`` (the exportable model) is written —
  for epoch 0, the untrained model. Training stops early ``patience`` epochs after the kept one once churn
  is at most ``churn_tol`` (the predictions have settled). Without either signal the last epoch is kept.
* **resume** — with a checkpoint, the loop restores everything and continues with the next epoch, with
  the same shuffling and augmentation random numbers an uninterrupted run would have used.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import Hint, InvalidInputError
from .params import SCHEDULES, TrainParams
from .selection import choice_reason, choose_epoch, epoch_scores

if TYPE_CHECKING:
    from ..jobs import Job

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
SETUP = "setup.pt"


class TrainTask:
    """What :func:`run_training` needs from a method. Subclass and fill in the ``NotImplementedError`` parts."""

    device: torch.device
    #: Number of classes (for the class-entropy checks); None: inferred from the predictions.
    num_classes: int | None = None
    #: What the degenerate-teacher warning says after its class entropies: the teacher this method's held-out
    #: agreement compares with, and why it may concentrate on few classes. None: NoLA's and LaFTer's text.
    teacher_note: str | None = None
    #: Set by the loop while it evaluates: call ``tick(message)`` after each batch (heartbeat + cancel check).
    tick = None

    # --- the trainable state ---------------------------------------------------------------------
    def named_trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        """The trainable state only (what checkpoints hold), on the CPU."""
        return {n: p.detach().cpu().clone() for n, p in self.named_trainable()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_trainable())
        if set(params) != set(state):
            missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
            raise InvalidInputError(
                f"checkpoint does not fit this model: missing {missing[:5]}, unexpected {extra[:5]}"
            )
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n].to(p.device, p.dtype))

    def save_model(self, path: Path, info: dict) -> None:
        """Write the exportable model file (``best.pt``); ``info``: run id, epoch, score."""
        raise NotImplementedError

    # --- training ----------------------------------------------------------------------------------
    def optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """AdamW; no weight decay on biases."""
        decay, no_decay = [], []
        for n, p in self.named_trainable():
            (no_decay if n.endswith("bias") else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.999))

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def batches(self, generator: torch.Generator) -> Iterable[Any]:
        """One epoch of training batches; all randomness of the order comes from ``generator``."""
        raise NotImplementedError

    def loss(self, batch: Any) -> tuple[torch.Tensor, int, int]:
        """(loss, images in the batch, images whose student top-1 equals the target). Runs under autocast."""
        raise NotImplementedError

    # --- model selection ---------------------------------------------------------------------------
    def holdout(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Student and teacher top-1 on the held-out unlabeled slice (weak view), or None without one."""
        return None

    def validation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Student top-1 and verified labels on the validation set, or None without one."""
        return None


# --- small helpers -------------------------------------------------------------------------------------
def resolve_amp(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision`` (auto | fp32 | bf16 | fp16) on ``device``: None means plain fp32.

    ``auto`` is bf16 on a GPU that has it, fp16 on an older GPU, fp32 on CPU and MPS.
    """
    p = str(precision or "auto").lower()
    if p not in ("auto", "fp32", "bf16", "fp16"):
        raise InvalidInputError(f"precision {precision!r} is not one of auto, fp32, bf16, fp16")
    if device.type != "cuda":
        if p == "fp16":
            raise InvalidInputError(
                "fp16 training needs a CUDA GPU; use fp32 precision (or auto)",
                hint=Hint(option="precision", value="fp32"),
            )
        return torch.bfloat16 if p == "bf16" else None
    if p == "fp32":
        return None
    if p == "fp16":
        return torch.float16
    if p == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int):
    """The per-step LR scheduler: ``cosine`` (annealed to 0 over ``total_steps``) or ``constant``.

    ``constant`` is what NoLA's and LaFTer's code do (a ``MultiStepLR`` without milestones never changes the lr).
    """
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total_steps)))
    if schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise InvalidInputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG the loop may draw from, in a form ``torch.load(weights_only=True)`` accepts."""
    keys, pos, has_gauss, cached = np.random.get_state()[1:]
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached"])
    )
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp file next to ``path``, then rename over it (a kill never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


# --- the loop ------------------------------------------------------------------------------------------
def _evaluate(task: TrainTask, sel: dict, n_classes: int | None) -> dict:
    """Held-out and validation scores of the model as it is now (updates the previous predictions).

    The first scored model (epoch 0, the untrained one) sets the reference class distribution that later
    epochs' collapse is judged against.
    """
    out: dict[str, Any] = {}
    hold = task.holdout()
    if hold is not None:
        student, teacher = (np.asarray(a, dtype=np.int64).reshape(-1) for a in hold)
        c = n_classes or int(max(student.max(initial=0), teacher.max(initial=0))) + 1
        if sel.get("reference") is None and len(student):
            sel["reference"] = [int(v) for v in student]
        sc = epoch_scores(student, teacher, c, previous=sel.get("prev_holdout"), reference=sel.get("reference"))
        sel["prev_holdout"] = [int(v) for v in student]
        out.update(
            teacher_agreement=sc["agreement"],
            churn=sc["churn"],
            holdout_n=sc["n"],
            class_entropy=sc["class_entropy"],
            teacher_entropy=sc["teacher_entropy"],
            degenerate=sc["degenerate"],
            teacher_degenerate=sc["teacher_degenerate"],
        )
    val = task.validation()
    if val is not None:
        student, truth = (np.asarray(a, dtype=np.int64).reshape(-1) for a in val)
        c = n_classes or int(max(student.max(initial=0), truth.max(initial=0))) + 1
        vs = epoch_scores(student, truth, c, reference=truth)
        out.update(val_accuracy=vs["agreement"], val_n=vs["n"])
        if hold is None:
            out.update(class_entropy=vs["class_entropy"], degenerate=vs["degenerate"])
    return out


def _score_entry(epoch: int, row: dict) -> dict:
    """What :func:`~labeler.train.selection.choose_epoch` reads for one epoch."""
    if row.get("val_accuracy") is not None:
        key, n = "val_accuracy", row.get("val_n")
    elif row.get("teacher_agreement") is not None:
        key, n = "teacher_agreement", row.get("holdout_n")
    else:
        key, n = None, 0
    return {
        "epoch": epoch,
        "metric": key,
        "score": row.get(key) if key else None,
        "n": int(n or 0),
        "degenerate": bool(row.get("degenerate")),
        "teacher_degenerate": bool(row.get("teacher_degenerate")),
        "class_entropy": row.get("class_entropy"),
        "teacher_entropy": row.get("teacher_entropy"),
    }


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


#: The degenerate-teacher warning's explanation for NoLA's and LaFTer's teachers (:attr:`TrainTask.teacher_note`).
PROMPT_TEACHER_NOTE = (
    "NoLA: the DINO features may not separate these classes; LaFTer: the teacher shares "
    "the student's LayerNorms and collapsed with it"
)


def selection_warnings(scores: list[dict], chosen: int, teacher_note: str | None = None) -> list[str]:
    """Warnings for the run summary: a degenerate teacher, collapsed epochs, a collapsed or untrained pick.

    ``teacher_note`` explains a degenerate teacher in the method's terms (default :data:`PROMPT_TEACHER_NOTE`).
    """
    out = []
    ref = next((s.get("class_entropy") for s in scores if s["epoch"] == 0), None)
    teacher_bad = [s for s in scores if s.get("teacher_degenerate")]
    if teacher_bad:
        epochs = ", ".join(str(s["epoch"]) for s in teacher_bad)
        out.append(
            f"the teacher looks degenerate (epochs {epochs}): its labels on the held-out images concentrate on a "
            f"few classes (class entropy {_fmt(teacher_bad[-1].get('teacher_entropy'))} vs {_fmt(ref)} for the "
            f"untrained model); {teacher_note or PROMPT_TEACHER_NOTE}. Review a sample of the labels before "
            "trusting them"
        )
    collapsed = [s for s in scores if s.get("degenerate") and s is not scores[chosen]]
    if collapsed:
        both = [s["epoch"] for s in collapsed if s.get("teacher_degenerate")]
        out.append(
            f"epochs {', '.join(str(s['epoch']) for s in collapsed)} collapsed (the student predicts few classes"
            + (f"; in {', '.join(map(str, both))} the teacher too, so their agreement means nothing" if both else "")
            + ") and were not selected"
        )
    pick = scores[chosen]
    if pick.get("degenerate"):
        out.append(
            f"the chosen model (epoch {pick['epoch']}) looks degenerate: every scored epoch collapsed to few "
            f"classes (class entropy {_fmt(pick.get('class_entropy'))}); do not trust its labels"
        )
    if pick["epoch"] == 0 and len(scores) > 1 and pick.get("score") is not None:
        out.append(
            "no trained epoch beat the untrained model by more than the noise: the model kept (best.pt, and the "
            "labels made with it) is the untrained one (≈ zero-shot)"
        )
    return out


def run_training(job: Job, task: TrainTask, params: dict, run_dir: Path) -> dict:
    """Train ``task`` for ``params["epochs"]`` epochs (or until early stopping), resuming from a checkpoint.

    Parameters
    ----------
    job : Job
        The ``train`` run; gets progress, per-epoch metrics and the cancel checks.
    task : TrainTask
    params : dict
        The run's resolved params; uses ``epochs``, ``lr``, ``schedule`` (default cosine), ``weight_decay``,
        ``seed``, ``precision``, ``patience``, ``min_delta``, ``churn_tol``.
    run_dir : Path
        ``runs/<run id>/``: ``checkpoint.pt`` and ``best.pt`` are written there.

    Returns
    -------
    dict
        The summary also merged into the run's metrics: ``epochs_run``, ``best_epoch`` (0: the untrained
        model), ``best_score``, ``selection`` (the metric that chose the epoch: val_accuracy |
        teacher_agreement | last_epoch), ``selection_reason`` (why, in words), ``warnings`` (list of str: a
        degenerate teacher or chosen model, collapsed epochs, no gain over the untrained model),
        ``untrained`` (epoch 0's scores), ``stopped_early``, ``resumed_from_epoch``, ``amp``, ``device``.
    """
    loop = _Loop(job, task, params, run_dir)
    if loop.resumed_from is None:
        loop.score_untrained()
    for epoch in range(loop.start, loop.epochs):
        if loop.sel["stopped_early"]:
            break
        loop.run_epoch(epoch)
    summary = loop.summary()
    job.update_metrics(**summary)
    return summary


_DEFAULTS = TrainParams()


class _Loop:
    """One training run's state between epochs: optimiser, schedule, scaler, history and the selection."""

    def __init__(self, job: Job, task: TrainTask, params: dict, run_dir: Path):
        self.job, self.task, self.params, self.run_dir = job, task, params, run_dir
        self.epochs = int(params["epochs"])
        self.amp = resolve_amp(params.get("precision", _DEFAULTS.precision), task.device)
        self.optimizer = task.optimizer(float(params["lr"]), float(params.get("weight_decay", _DEFAULTS.weight_decay)))
        self.steps = max(1, task.steps_per_epoch())
        self.total = self.epochs * self.steps
        self.scheduler = make_scheduler(self.optimizer, str(params.get("schedule") or "cosine"), self.total)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.patience = int(params.get("patience", _DEFAULTS.patience))
        self.min_delta = float(params.get("min_delta", _DEFAULTS.min_delta))
        self.churn_tol = float(params.get("churn_tol", _DEFAULTS.churn_tol))
        self.n_classes = getattr(task, "num_classes", None)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = run_dir / CHECKPOINT
        self.history: list[dict] = []
        self.sel: dict[str, Any] = {
            "best_epoch": None,
            "best_score": None,
            "bad_epochs": 0,
            "stopped_early": False,
            "prev_holdout": None,
            "reference": None,
            "scores": [],
            "reason": None,
            "warnings": [],
        }
        self.start, self.resumed_from = 0, None
        if self.ckpt_path.exists():
            self._resume()
        else:
            seed_everything(int(params.get("seed", _DEFAULTS.seed)))
        self.amp_name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp]
        job.update_metrics(
            amp=self.amp_name,
            device=str(task.device),
            resumed_from_epoch=self.resumed_from,
            epochs_planned=self.epochs,
        )

    def _resume(self) -> None:
        ckpt = load(self.ckpt_path)
        self.task.load_state(ckpt["trainable"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.history = list(ckpt["history"])
        self.sel = {**self.sel, **dict(ckpt["selection"])}
        if not self.sel["scores"]:  # a checkpoint from before epoch-0 scoring: its epochs, without epoch 0
            self.sel["scores"] = [_score_entry(int(r["epoch"]), r) for r in self.history]
        self.start = self.resumed_from = int(ckpt["epoch"])

    def choose(self, epoch: int) -> bool:
        """Re-run the selection over every scored epoch; write best.pt when ``epoch`` became the kept one."""
        sel = self.sel
        idx = choose_epoch(sel["scores"], self.min_delta)
        reason = choice_reason(sel["scores"], idx, self.min_delta)
        pick = sel["scores"][idx]
        changed = pick["epoch"] != sel["best_epoch"]
        sel.update(
            best_epoch=pick["epoch"],
            best_score=pick["score"],
            selection=pick["metric"] or "last_epoch",
            reason=reason,
            warnings=selection_warnings(sel["scores"], idx, getattr(self.task, "teacher_note", None)),
        )
        sel["bad_epochs"] = epoch - pick["epoch"]
        if changed and pick["epoch"] == epoch:
            meta = {"train_run": self.job.id, "epoch": epoch, "score": pick["score"]}
            self.task.save_model(
                self.run_dir / BEST, {**meta, "selection": sel["selection"], "selection_reason": reason}
            )
        return pick["epoch"] == epoch

    def score_untrained(self) -> None:
        """Epoch 0: the untrained model is a candidate (and the reference a collapse is judged against)."""
        self.task.tick = lambda msg: self.job.progress(0, self.total, msg)
        untrained = _evaluate(self.task, self.sel, self.n_classes)
        self.task.tick = None
        self.sel["scores"].append(_score_entry(0, untrained))
        self.choose(0)
        self.job.update_metrics(untrained=self.sel["scores"][0])

    def _step(self, batch) -> tuple[float, int, int]:
        """One optimiser step on ``batch``: (loss, images, student–teacher agreements)."""
        with torch.autocast(self.task.device.type, dtype=self.amp, enabled=self.amp is not None):
            loss, n, agree = self.task.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach()), n, agree

    def _train(self, epoch: int) -> dict:
        """The epoch's optimiser steps; returns its history row (loss, agreement, lr, speed)."""
        t0 = time.perf_counter()
        loss_sum, n_sum, agree_sum, step = 0.0, 0, 0, 0
        for batch in self.task.batches(_epoch_generator(self.params.get("seed", _DEFAULTS.seed), epoch)):
            value, n, agree = self._step(batch)
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"the loss became {value} in epoch {epoch + 1}: lower the learning rate ('lr') or train in fp32"
                )
            loss_sum, n_sum, agree_sum, step = loss_sum + value * n, n_sum + n, agree_sum + agree, step + 1
            msg = f"epoch {epoch + 1}/{self.epochs} loss {loss_sum / max(1, n_sum):.4f}"
            self.job.progress(epoch * self.steps + min(step, self.steps), self.total, msg)
        seconds = time.perf_counter() - t0
        return {
            "epoch": epoch + 1,
            "loss": loss_sum / max(1, n_sum),
            "train_agreement": agree_sum / max(1, n_sum),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "seconds": round(seconds, 3),
            "images_per_s": round(n_sum / seconds, 2) if seconds > 0 else None,
        }

    def run_epoch(self, epoch: int) -> None:
        """Train one epoch, score it, select, maybe stop early, checkpoint and report."""
        sel, done = self.sel, (epoch + 1) * self.steps
        row = self._train(epoch)
        self.task.tick = lambda msg: self.job.progress(min(done, self.total - 1), self.total, msg)
        row.update(_evaluate(self.task, sel, self.n_classes))
        self.task.tick = None
        sel["scores"].append(_score_entry(epoch + 1, row))
        row["selected"] = self.choose(epoch + 1)
        churn = row.get("churn")
        if (
            sel["bad_epochs"] >= self.patience
            and (churn is None or churn <= self.churn_tol)
            and epoch + 1 < self.epochs
        ):
            sel["stopped_early"] = True
            row["stopped_early"] = True
        self.history.append(row)
        self._checkpoint(epoch + 1)
        self.job.update_metrics(
            epochs=self.history,
            best_epoch=sel["best_epoch"],
            best_score=sel["best_score"],
            selection=sel.get("selection"),
            selection_reason=sel.get("reason"),
            warnings=sel.get("warnings", []),
            stopped_early=sel["stopped_early"],
        )
        self.job.progress(done, self.total, f"epoch {epoch + 1}/{self.epochs} done, loss {row['loss']:.4f}", force=True)

    def _checkpoint(self, epoch: int) -> None:
        state = {
            "version": 1,
            "epoch": epoch,
            "trainable": self.task.state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_state(),
            "history": self.history,
            "selection": self.sel,
        }
        atomic_save(state, self.ckpt_path)

    def summary(self) -> dict:
        sel = self.sel
        return {
            "epochs_run": len(self.history),
            "best_epoch": sel["best_epoch"],
            "best_score": sel["best_score"],
            "selection": sel.get("selection", "last_epoch"),
            "selection_reason": sel.get("reason"),
            "warnings": list(sel.get("warnings", [])),
            "untrained": next((s for s in sel["scores"] if s["epoch"] == 0), None),
            "stopped_early": bool(sel["stopped_early"]),
            "resumed_from_epoch": self.resumed_from,
            "amp": self.amp_name,
            "device": str(self.task.device),
        }
