"""CDUL with a fine-tuned backbone (``--backbone resnet101 | clip``; the paper recipe's): a network trained end to
end on the images against the soft multi-label pseudo-labels, refining them as the head does.

The reproduction (``cs-mshah/CDUL`` ``src/train.py``) fine-tunes torchvision's ImageNet ResNet-101 with a new
``fc`` (2048 → C), Adam 1e-5, batch 8, 100 epochs, resize 232 / center crop 224 and no augmentation. Two backbones:

* ``resnet101`` — that network: torchvision's architecture, the ImageNet weights read from a local file (the
  torch hub cache's ``resnet101-63fe2227.pth`` / ``resnet101-cd907fc2.pth``, or ``--backbone-weights PATH``);
  input: Resize(232, bilinear) → CenterCrop(224) → ImageNet normalisation (:func:`resnet_transform`).
* ``clip`` — the project's CLIP image tower (the run's CLIP feature set's model) with a linear layer on its image
  embedding; input: CLIP's own preprocess (the weak view the feature cache uses).

:class:`CDULNetTask` is a :class:`~labeler.train.cdul.CDULTask` over image files (decoded each epoch by
:func:`labeler.train.views.image_loader`; an unreadable image is left out of its batch). Its trainable state is
the whole network — parameters and buffers (BatchNorm running statistics), so a resumed run continues exactly —
plus the refined pseudo-labels.

The model file (``best.pt``): ``format`` ``labeler.cdul-net``, ``backbone``, ``classes``, ``loss``, ``dim`` (the
backbone's feature width), ``image_size``, ``resize`` (ResNet), ``base`` (CLIP: the model name and pretrained tag
that give the architecture and preprocessing), ``state`` (the network's ``state_dict``: ``backbone.*``,
``head.*``), ``train_run``, ``epoch``; the ``model`` exporter adds ``thresholds`` (C,). :class:`CDULNetModel`
reads it for ``relabel`` and ``apply``: a ResNet-101 needs no other file (the state holds every weight).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import Hint, InvalidInputError, ModelUnavailableError
from .cdul import CDULTargets, CDULTask, scores_from_logits
from .loop import atomic_save

NET_FORMAT = "labeler.cdul-net"
NET_VERSION = 1
#: The fine-tuned backbones.
NET_BACKBONES = ("resnet101", "clip")
#: File names torchvision gives the ImageNet ResNet-101 weights in the torch hub cache (V1, V2).
RESNET101_FILES = ("resnet101-63fe2227.pth", "resnet101-cd907fc2.pth")
#: The reproduction's input size: resize the shorter side to 232, center-crop 224.
RESNET_RESIZE, RESNET_CROP = 232, 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_DIM = 2048


def hub_resnet101() -> str | None:
    """The torch hub cache's ImageNet ResNet-101 weights file (``$TORCH_HOME/hub/checkpoints``), or None."""
    hub = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    for name in RESNET101_FILES:
        path = os.path.join(hub, "hub", "checkpoints", name)
        if os.path.isfile(path):
            return path
    return None


def resnet101_weights(path: str | None) -> str:
    """The local ImageNet ResNet-101 weights to start from: ``path`` if given, else the torch hub cache's file.

    Raises
    ------
    ModelUnavailableError
        Neither is here (nothing is downloaded): says where the file goes and how to name another.
    InvalidInputError
        ``path`` is given but is not a file, or not a ResNet-101 state dict (:func:`read_resnet101_state`).
    """
    if path:
        if not os.path.isfile(path):
            raise InvalidInputError(
                f"backbone_weights {path!r} is not a file: give the path of a ResNet-101 state dict (.pth)",
                hint=Hint(option="backbone_weights"),
            )
        read_resnet101_state(str(path), mmap=True)  # a wrong file fails now, not in the background run
        return str(path)
    found = hub_resnet101()
    if found is None:
        raise ModelUnavailableError(
            "fine-tuning a ResNet-101 (the paper recipe's backbone) starts from torchvision's ImageNet weights, "
            f"which are not on this machine (looked for {' or '.join(RESNET101_FILES)} in the torch hub cache, "
            "$TORCH_HOME/hub/checkpoints) and are not downloaded here: put the file there or give its path as the "
            "backbone weights; or fine-tune the project's CLIP image tower (backbone clip), or train a head on the "
            "cached features (the labeler recipe)",
            hint=Hint(option="recipe", value="labeler"),
        )
    read_resnet101_state(found, mmap=True)
    return found


def resnet_transform():
    """The reproduction's input: RGB → Resize(232, bilinear) → CenterCrop(224) → tensor → ImageNet normalisation."""
    from torchvision import transforms as T

    from .views import RGB

    return T.Compose(
        [
            RGB(),
            T.Resize(RESNET_RESIZE, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(RESNET_CROP),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def read_resnet101_state(weights: str, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The backbone weights (no ``fc.*``) of a ResNet-101 state dict file, checked against torchvision's
    architecture (names and shapes; the check builds the network on the meta device, so it costs no memory).

    ``mmap``: map the file instead of reading it (what the early check of a run's options uses: a 170 MB file
    costs milliseconds).

    Raises
    ------
    InvalidInputError
        Not a readable torch file, not a state dict, or one that does not fit (names the file and the first keys).
    """
    from torchvision.models import resnet101

    def refuse(why: str) -> InvalidInputError:
        return InvalidInputError(f"{weights} {why}", hint=Hint(option="backbone_weights"))

    try:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            state = torch.load(weights, map_location="cpu", weights_only=True)  # a legacy (non-zip) file
    except Exception as exc:  # a truncated or foreign file: say which one
        raise refuse(f"is not a readable ResNet-101 state dict ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise refuse(f"holds a {type(state).__name__} that is not a ResNet-101 state dict (name → tensor)")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # a DataParallel checkpoint
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # ImageNet's classifier: replaced
    with torch.device("meta"):
        want = {k: v.shape for k, v in resnet101(weights=None).state_dict().items() if not k.startswith("fc.")}
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    wrong = [
        f"{k} {tuple(state[k].shape)} (not {tuple(want[k])})" for k in want if k in state and state[k].shape != want[k]
    ]
    if missing or unexpected or wrong:
        raise refuse(
            "does not fit torchvision's ResNet-101: "
            + "; ".join(
                part
                for part in (
                    f"missing {missing[:3]}" if missing else "",
                    f"unexpected {unexpected[:3]}" if unexpected else "",
                    f"shapes {wrong[:2]}" if wrong else "",
                )
                if part
            )
        )
    return state


def resnet101_backbone(weights: str | None) -> nn.Module:
    """torchvision's ResNet-101 without its ``fc`` (B, 3, 224, 224) → (B, 2048); ``weights``: a state dict file
    (:func:`read_resnet101_state`), or None for the bare architecture (a model file fills it)."""
    from torchvision.models import resnet101

    net = resnet101(weights=None)
    if weights is not None:
        net.load_state_dict(read_resnet101_state(weights), strict=False)  # fc: replaced below
    net.fc = nn.Identity()
    return net


class ClipTower(nn.Module):
    """A CLIP image tower as a backbone: (B, 3, H, W) → its image embedding (B, D), not normalised."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


class CDULNet(nn.Module):
    """A backbone and a linear classifier on its features: (B, 3, H, W) → logits (B, C)."""

    def __init__(self, backbone: nn.Module, dim: int, num_classes: int, seed: int = 0):
        super().__init__()
        self.backbone = backbone
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.head = nn.Linear(int(dim), int(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).float())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class CDULNetTask(CDULTask):
    """A backbone fine-tuned end to end on the images against (and refining) soft multi-label pseudo-labels.

    Parameters
    ----------
    net : CDULNet (on ``device``)
    paths : list of str (N,)
        The image file of each row.
    transform : callable
        PIL image → (3, H, W) tensor: the backbone's input (no augmentation, as the reproduction).
    min_side : int
        The JPEG decode floor (:func:`labeler.ingest.load_rgb`).
    data, params, device, info, refiner, on_refined
        As in :class:`~labeler.train.cdul.CDULTask`; ``params`` also gives ``workers``.
    """

    def __init__(
        self,
        net: CDULNet,
        paths: list[str],
        transform,
        min_side: int,
        data: CDULTargets,
        params: dict,
        device: torch.device,
        info: dict,
        refiner,
        on_refined=None,
    ):
        super().__init__(data, params, device, info, refiner, on_refined)
        if len(paths) != self.targets.shape[0]:
            raise InvalidInputError(f"{len(paths)} image paths for {self.targets.shape[0]} target rows")
        self.net = net.to(self.device)
        self.module = self.net
        self.paths = list(paths)
        self.transform = transform
        self.min_side = int(min_side)
        self.batch_size = int(params["batch_size"])

    # --- state: every parameter and buffer of the network ---------------------------------------------------------
    def named_trainable(self):
        return [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]

    def state(self) -> dict[str, torch.Tensor]:
        out = super().state()
        for n, b in self.net.named_buffers():
            out[f"buffer.{n}"] = b.detach().cpu().clone()
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        buffers = {k[len("buffer.") :]: state.pop(k) for k in [k for k in state if k.startswith("buffer.")]}
        super().load_state(state)
        own = dict(self.net.named_buffers())
        with torch.no_grad():
            for n, b in buffers.items():
                if n in own:
                    own[n].copy_(b.to(own[n].device, own[n].dtype))

    def save_model(self, path: Path, info: dict) -> None:
        atomic_save(
            {
                "format": NET_FORMAT,
                "version": NET_VERSION,
                **self.info,
                **info,
                "loss": self.loss_name,
                "state": {n: t.detach().cpu().clone() for n, t in self.net.state_dict().items()},
            },
            path,
        )

    # --- training --------------------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.rows["train"]) / self.batch_size))

    def _loader(self, rows: np.ndarray, *, shuffle: bool, generator: torch.Generator | None = None):
        from .views import image_loader

        return image_loader(
            [self.paths[r] for r in rows],
            self.transform,
            self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.params.get("workers"),
            device=self.device,
            min_side=self.min_side,
        )

    def epoch_batches(self, generator: torch.Generator):
        train = torch.as_tensor(self.rows["train"])
        for local, views, _failed in self._loader(self.rows["train"], shuffle=True, generator=generator):
            if len(local):
                yield train[local], views[0]

    def forward_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        rows, x = batch
        return rows.long(), self.net(x.to(self.device, non_blocking=True))

    @torch.no_grad()
    def top1(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(rows):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        was = self.net.training
        self.net.eval()
        preds, kept = [], []
        base = torch.as_tensor(rows)
        for local, views, _failed in self._loader(rows, shuffle=False):
            if not len(local):
                continue
            preds.append(self.net(views[0].to(self.device)).argmax(1).cpu())
            kept.append(base[local])
            if self.tick is not None:
                self.tick(f"evaluating {sum(len(k) for k in kept)} of {len(rows)} images")
        self.net.train(was)
        if not kept:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return torch.cat(preds).numpy(), torch.cat(kept).numpy()


def build_net(
    backbone: str, num_classes: int, *, clip=None, weights: str | None = None, seed: int = 0
) -> tuple[CDULNet, Any, dict]:
    """The network for ``backbone``, its input transform and what its model file records.

    Parameters
    ----------
    backbone : str
        ``resnet101`` or ``clip`` (:data:`NET_BACKBONES`).
    num_classes : int
    clip : labeler.models.ClipModel, ``clip`` only
        The loaded base CLIP; its image tower becomes the backbone (trained in place).
    weights : str, ``resnet101`` only
        The ImageNet state dict to start from; None: the bare architecture (a model file fills it).

    Returns
    -------
    (net, transform, info)
        ``info``: ``backbone``, ``dim``, ``image_size``, ``resize`` (ResNet) or ``base`` (CLIP).
    """
    if backbone == "resnet101":
        net = CDULNet(resnet101_backbone(weights), RESNET_DIM, num_classes, seed)
        info = {"backbone": backbone, "dim": RESNET_DIM, "image_size": RESNET_CROP, "resize": RESNET_RESIZE}
        return net, resnet_transform(), info
    if backbone == "clip":
        if clip is None:
            raise InvalidInputError("the clip backbone needs the run's CLIP model")
        net = CDULNet(ClipTower(clip.model.visual), int(clip.dim), num_classes, seed)
        net.backbone.requires_grad_(True)
        info = {"backbone": backbone, "dim": int(clip.dim), "image_size": int(clip.image_size)}
        return net, clip.preprocess, info
    raise InvalidInputError(f"backbone must be one of {', '.join(NET_BACKBONES)}, got {backbone!r}")


class CDULNetModel:
    """A fine-tuned CDUL network read back from its model file, for ``relabel`` and ``apply``.

    The interface of :class:`labeler.train.cdul.CDULModel`: ``classes``, ``transform``, ``device``, ``image_size``,
    ``min_side``, ``info``, ``multi_label`` (True), ``thresholds`` (C,), ``loss`` and :meth:`predict_proba`.

    Raises
    ------
    InvalidInputError
        Not a CDUL network file, or weights that do not fit its backbone.
    ModelUnavailableError
        A CLIP backbone whose base model cannot be loaded here.
    """

    multi_label = True

    def __init__(self, data: dict, device: str | torch.device = "auto"):
        from ..device import resolve_device

        if data.get("format") != NET_FORMAT:
            raise InvalidInputError(f"not a CDUL network file (format {data.get('format')!r})")
        self.classes = list(data["classes"])
        self.loss = str(data["loss"])
        backbone = str(data.get("backbone"))
        clip = None
        if backbone == "clip":
            from ..models import load_clip

            base = data.get("base") or {}
            if not base.get("model"):
                raise InvalidInputError("this CDUL network file does not say which CLIP model it fine-tuned")
            clip = load_clip(base["model"], base.get("pretrained") or None, device=device, precision="fp32")
            self.device = clip.device
        else:
            self.device = resolve_device(device)
        net, transform, info = build_net(backbone, len(self.classes), clip=clip)
        try:
            net.load_state_dict(data["state"])
        except RuntimeError as exc:
            raise InvalidInputError(
                f"the model file's weights do not fit a {backbone} backbone ({str(exc).splitlines()[0]})"
            ) from None
        self.net = net.to(self.device).eval()
        self.net.requires_grad_(False)
        self.transform = transform
        self.image_size = int(info["image_size"])
        self.min_side = 2 * int(info.get("resize") or info["image_size"])
        default = float(data.get("label_threshold", 0.5))
        self.thresholds = np.asarray(data.get("thresholds") or [default] * len(self.classes), dtype=np.float64)
        if self.thresholds.shape != (len(self.classes),):
            raise InvalidInputError(
                f"thresholds must be one per class ({len(self.classes)}), got shape {self.thresholds.shape}"
            )
        self.info = {k: v for k, v in data.items() if k != "state"}

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> CDULNetModel:
        from .loop import load

        return cls(load(Path(path)), device)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        """Per-class scores (B, C) of a preprocessed batch (B, 3, H, W): sigmoid (``bce``) or softmax (``kl``)."""
        logits = self.net(x.to(self.device, non_blocking=True))
        return scores_from_logits(logits.float(), self.loss).cpu().numpy()
