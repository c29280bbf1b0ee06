"""Weak and strong views of an image, and the DataLoader that decodes them.

Weak view: the CLIP model's own ``preprocess`` (resize shortest side, center crop, normalise) — what
features are cached with. Strong views (:data:`STRONG_VIEWS`, picked by the run's recipe,
:mod:`labeler.train.recipes`), all after SimCLR:

* ``labeler`` (ours, both methods): RandomResizedCrop(scale 0.2–1), horizontal flip,
  ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8, RandomPerspective(0.2, p = 0.5), Gaussian blur (radius
  uniform in 0.1–2 px), then the model's normalisation.
* ``nola`` (the official NoLA code): the same, plus a second, always-on ColorJitter(0.4, 0.4, 0.4, 0.1)
  after the perspective; the crop interpolates bilinearly (torchvision's default), the perspective bicubically.
* ``lafter`` (the official LaFTer code): crop (bilinear), flip, ColorJitter p = 0.8, RandomGrayscale(p = 0.2),
  blur — no perspective.

Every random draw comes from torch's RNG (the blur too), so a seeded run repeats exactly. All
transforms are picklable (DataLoader workers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import ImageFilter
from torch.utils.data import DataLoader
from torchvision import transforms as T

from ..errors import InvalidInputError
from ..features import ImageFiles, default_num_workers, worker_init

_INTERP = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


class RandomGaussianBlur:
    """PIL Gaussian blur with a radius drawn uniformly from ``sigma`` (torch RNG)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)):
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, img):
        lo, hi = self.sigma
        radius = lo + (hi - lo) * float(torch.rand(()))
        return img.filter(ImageFilter.GaussianBlur(radius=radius))

    def __repr__(self) -> str:
        return f"RandomGaussianBlur(sigma={self.sigma})"


class RGB:
    """A transform step: the PIL image in RGB (a picklable class, for DataLoader workers)."""

    def __call__(self, img):
        return img.convert("RGB") if img.mode != "RGB" else img


#: The strong views by name: what each applies, in order (rendered into docs/methods.md).
STRONG_VIEWS = {
    "labeler": "RandomResizedCrop(0.2–1) · flip · ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8 · "
    "RandomPerspective(0.2, p=0.5) · blur(0.1–2)",
    "nola": "RandomResizedCrop(0.2–1, bilinear) · flip · ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8 · "
    "RandomPerspective(0.2, p=0.5, bicubic) · ColorJitter(0.4, 0.4, 0.4, 0.1) always · blur(0.1–2)",
    "lafter": "RandomResizedCrop(0.2–1, bilinear) · flip · ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8 · "
    "RandomGrayscale(p=0.2) · blur(0.1–2)",
}


def strong_transform(preprocess_cfg: dict, view: str = "labeler") -> T.Compose:
    """A strong view for a CLIP model, from its ``visual.preprocess_cfg`` (size, mean, std, interpolation).

    Parameters
    ----------
    preprocess_cfg : dict
        The CLIP model's preprocessing (``clip.model.visual.preprocess_cfg``).
    view : str
        A name in :data:`STRONG_VIEWS`: ``labeler`` (ours), ``nola`` or ``lafter`` (the official codes').
    """
    if view not in STRONG_VIEWS:
        raise InvalidInputError(f"strong view {view!r} is not one of {', '.join(STRONG_VIEWS)}")
    size = preprocess_cfg.get("size", 224)
    side = int(size if isinstance(size, int) else size[0])
    interp = _INTERP.get(str(preprocess_cfg.get("interpolation", "bicubic")), T.InterpolationMode.BICUBIC)
    # The official codes crop with torchvision's default (bilinear) interpolation and nothing else set.
    crop_interp = interp if view == "labeler" else T.InterpolationMode.BILINEAR
    steps: list = [
        RGB(),
        T.RandomResizedCrop(side, scale=(0.2, 1.0), interpolation=crop_interp, antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
    ]
    if view == "labeler":
        steps.append(T.RandomPerspective(distortion_scale=0.2, p=0.5, interpolation=interp))
    elif view == "nola":
        steps.append(T.RandomPerspective(distortion_scale=0.2, p=0.5, interpolation=T.InterpolationMode.BICUBIC))
        steps.append(T.ColorJitter(0.4, 0.4, 0.4, 0.1))
    else:  # lafter
        steps.append(T.RandomGrayscale(p=0.2))
    steps += [
        RandomGaussianBlur((0.1, 2.0)),
        T.ToTensor(),
        T.Normalize(
            tuple(preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            tuple(preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
        ),
    ]
    return T.Compose(steps)


class Views:
    """Apply several transforms to one image: returns a tuple of tensors (e.g. weak, strong)."""

    def __init__(self, *transforms: Callable):
        self.transforms = transforms

    def __call__(self, img):
        return tuple(t(img) for t in self.transforms)


def collate_views(items):
    """``(rows LongTensor, [view tensors (B, 3, H, W)], failed rows)``; unreadable images are left out."""
    good = [it for it in items if it[2]]
    failed = [it[0] for it in items if not it[2]]
    rows = torch.tensor([it[0] for it in good], dtype=torch.long)
    if not good:
        return rows, [], failed
    first = good[0][1]
    if isinstance(first, tuple):
        views = [torch.stack([it[1][v] for it in good]) for v in range(len(first))]
    else:
        views = [torch.stack([it[1] for it in good])]
    return rows, views, failed


def image_loader(
    paths: Sequence[str],
    transform: Callable,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    num_workers: int | None = None,
    device: torch.device | str = "cpu",
    min_side: int | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over image files; item = ``(row, transform(image))`` batched by :func:`collate_views`.

    ``row`` is the position in ``paths``; shuffling and worker seeds come from ``generator``.
    """
    workers = default_num_workers(len(paths), device) if num_workers is None else max(0, int(num_workers))
    return DataLoader(
        ImageFiles(list(paths), transform, min_side=min_side),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=workers,
        collate_fn=collate_views,
        worker_init_fn=worker_init if workers else None,
        pin_memory=torch.device(device).type == "cuda",
        drop_last=drop_last,
    )
