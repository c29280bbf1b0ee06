"""What every image encoder offers: a cache key, preprocessing and L2-normalised image features."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
#: Seed of the ``tiny-random`` test models: every process builds the same weights.
TINY_SEED = 1234


def check_precision(precision: str, device: torch.device) -> str:
    """Canonical precision name (fp32 | bf16 | fp16); fp16 needs a GPU."""
    p = _ALIASES.get(str(precision).lower(), str(precision).lower())
    if p not in PRECISIONS:
        raise InvalidInputError(f"precision {precision!r} is not supported: use fp32, bf16 or fp16")
    if p == "fp16" and device.type == "cpu":
        raise InvalidInputError("precision fp16 needs a GPU; on CPU use fp32 (or bf16 on CPUs with AVX512-BF16/AMX)")
    if p == "bf16" and device.type == "cpu":
        from ..precision import cpu_flags, native_bf16

        if not native_bf16(cpu_flags()):
            capability = str(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")())
            warnings.warn(
                f"bf16 on this CPU ({capability or 'unknown'}, no avx512_bf16/amx_bf16 flag) has no native "
                "bfloat16 support and is usually much slower than fp32; use --precision fp32 (or auto)",
                stacklevel=3,
            )
    return p


@contextlib.contextmanager
def seeded(seed: int = TINY_SEED) -> Iterator[None]:
    """Run a block under a fixed torch seed without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass(eq=False)
class Encoder:
    """An image encoder ready for inference.

    Attributes
    ----------
    key : str
        Stable cache key of the weights, e.g. ``clip:ViT-B-32:laion2b_s34b_b79k`` (features
        computed with one key are reused by every later run with the same key).
    kind : str
        ``clip`` or ``dino``.
    name, pretrained : str, str or None
        What was asked for (pretrained: the tag or file; None for random init / DINO).
    dim : int
        Feature dimension.
    device : torch.device
    precision : str
        ``fp32``, ``bf16`` or ``fp16`` (the weights; features are always float32).
    image_size : int
        Side of the square input ``preprocess`` produces.
    preprocess : callable
        PIL image -> float tensor (3, image_size, image_size): the "weak view" (resize shortest
        side, center crop, normalize). Picklable, so it runs in DataLoader workers.
    model : torch.nn.Module
        The raw module, in eval mode.
    """

    key: str
    kind: str
    name: str
    pretrained: str | None
    dim: int
    device: torch.device
    precision: str
    image_size: int
    preprocess: Callable[[Any], torch.Tensor]
    model: torch.nn.Module

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def converted(self, precision: str) -> Encoder:
        """A copy of this encoder with its weights in ``precision`` (this one is left as it is).

        Converting a copy keeps the fp32 weights exact: a bf16 round trip would not give them back.
        """
        p = check_precision(precision, self.device)
        if p == self.precision:
            return self
        model = self._convert(copy.deepcopy(self.model), p)
        return dataclasses.replace(self, model=model.eval(), precision=p)

    def _convert(self, module: torch.nn.Module, precision: str) -> torch.nn.Module:
        return module.to(dtype=PRECISIONS[precision])

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.inference_mode()
    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a preprocessed batch (B, 3, H, W): (B, dim), float32, L2-normalised, on ``device``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InvalidInputError(f"expected a batch of shape (B, 3, H, W), got {tuple(x.shape)}")
        x = x.to(self.device, dtype=self.dtype, non_blocking=True)
        return F.normalize(self._image_features(x).float(), dim=-1)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(key={self.key!r}, dim={self.dim}, device={self.device}, precision={self.precision})"
        )
