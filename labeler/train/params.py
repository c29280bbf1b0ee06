"""Options every training method shares (a params dataclass base) and how their defaults resolve."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInputError

#: Params that only say where/how fast to run: left out when matching a rerun to an interrupted run,
#: and overridable when resuming.
RUNTIME_FIELDS = ("device", "precision", "workers")

#: Learning-rate schedules (``schedule``): cosine per step (ours) or constant (the official codes').
SCHEDULES = ("cosine", "constant")

#: Defaults that depend on the device: (GPU, CPU).
GPU_EPOCHS, CPU_EPOCHS = 50, 3
GPU_BATCH, CPU_BATCH = 512, 16


@dataclass
class TrainParams:
    """Training options shared by every training method (NoLA, LaFTer, later LatteCLIP and CDUL)."""

    epochs: int | None = None  # None: 50 on a GPU (the papers' schedule), 3 on CPU
    batch_size: int | None = None  # None: 512 on a GPU, 16 on CPU
    lr: float | None = None  # None: the method's default
    schedule: str | None = None  # cosine | constant; None: the recipe's (else cosine)
    weight_decay: float = 0.01  # AdamW; never on biases
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on a GPU (fp16 + GradScaler where no bf16), fp32 on CPU
    workers: int | None = None  # image decoding workers; None: by image count and device
    patience: int = 5  # epochs without improvement (and with settled predictions) before stopping early
    min_delta: float = 0.001  # floor under the noise margin an improvement must exceed (labeler.train.selection)
    churn_tol: float = 0.02  # "settled": at most this fraction of held-out predictions changed in the epoch
    holdout: float = 0.1  # fraction of unlabeled images held out to watch student–teacher agreement
    val_split: float = 0.5  # with >= 5 verified labels per class: fraction per class kept out for validation


def resolve_training(values: dict, device_type: str, default_lr: float) -> dict:
    """Fill device-dependent defaults and check ranges; ``values`` is ``asdict(params)``. Returns a new dict."""
    out = dict(values)
    gpu = device_type == "cuda"
    out["epochs"] = int(out["epochs"]) if out.get("epochs") is not None else (GPU_EPOCHS if gpu else CPU_EPOCHS)
    batch = out.get("batch_size")
    out["batch_size"] = int(batch) if batch is not None else (GPU_BATCH if gpu else CPU_BATCH)
    out["lr"] = float(out["lr"]) if out.get("lr") is not None else float(default_lr)
    out["schedule"] = str(out.get("schedule") or "cosine")
    if out["schedule"] not in SCHEDULES:
        raise InvalidInputError(
            f"training option schedule must be one of {', '.join(SCHEDULES)}, got {out['schedule']!r}"
        )
    checks = [
        ("epochs", out["epochs"] >= 1, "at least 1"),
        ("batch_size", out["batch_size"] >= 1, "at least 1"),
        ("lr", out["lr"] > 0, "positive"),
        ("weight_decay", out["weight_decay"] >= 0, "0 or more"),
        ("patience", out["patience"] >= 1, "at least 1"),
        ("holdout", 0 <= out["holdout"] < 1, "in [0, 1)"),
        ("val_split", 0 <= out["val_split"] <= 1, "in [0, 1]"),
        ("churn_tol", 0 <= out["churn_tol"] <= 1, "in [0, 1]"),
    ]
    for name, ok, what in checks:
        if not ok:
            raise InvalidInputError(f"training option {name} must be {what}, got {out[name]!r}")
    if out.get("workers") is not None and int(out["workers"]) < 0:
        raise InvalidInputError(f"workers must be 0 or more, got {out['workers']}")
    return out
