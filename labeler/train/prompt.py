"""VPT-shallow prompt tuning of open_clip's ``VisionTransformer`` with a linear head.

:class:`PromptedCLIP` runs the vision tower's own modules in the order its ``forward`` does in
open_clip 3.x (``conv1`` → flatten → class token → positional embedding → ``patch_dropout`` →
``ln_pre`` → ``transformer`` → ``_pool`` → ``proj``), inserting ``num_tokens`` learnable prompt
tokens right after the class token once the positional embeddings were added. As in the NoLA and
LaFTer code (whose ``embeddings_patch`` ends with ``ln_pre``), the prompts join after ``ln_pre``; they
are dropped again before pooling, so ``avg`` pooling never averages them. With ``num_tokens=0`` the
features equal ``visual(x)`` exactly (a test checks it).

Trainable: the prompt tokens (VPT's uniform init, ``val = sqrt(6 / (3·patch_h·patch_w + width))``, with the
tower's true patch size, or 16×16 whatever the model as the official codes hard-code: ``prompt_init``),
every LayerNorm of the vision tower, and the head ``Linear(D, C, bias=False)`` initialised from the
text classifier T. Everything else has ``requires_grad=False``. The head reads the projected image
features as they are (not L2-normalised), like the official code; run without prompts, the untrained
student's top-1 therefore equals CLIP zero-shot's with classifier T (the norm only sets the temperature).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InvalidInputError

_VIT_PARTS = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "proj", "patch_size")


def check_vit(visual: nn.Module) -> None:
    """Raise InvalidInputError unless ``visual`` is an open_clip ``VisionTransformer`` prompt tuning can patch."""
    missing = [a for a in _VIT_PARTS if not hasattr(visual, a)]
    if missing or not callable(getattr(visual, "_pool", None)):
        raise InvalidInputError(
            f"prompt tuning needs an open_clip ViT vision tower (ViT-B-32, ViT-B-16, ...); "
            f"{type(visual).__name__} has no {', '.join(missing) or '_pool'}: pick a ViT CLIP model"
        )


def vpt_init_value(patch_size: tuple[int, int], width: int) -> float:
    """VPT's uniform init bound ``sqrt(6 / (3·patch_h·patch_w + width))``."""
    return math.sqrt(6.0 / float(3 * int(patch_size[0]) * int(patch_size[1]) + int(width)))


#: How the prompt init bound picks its patch size: the tower's own, or 16×16 as the official codes hard-code.
PROMPT_INITS = ("patch", "patch16")


def prompt_init_bound(rule: str, patch_size: tuple[int, int], width: int) -> float:
    """The uniform init bound of the prompts under ``rule`` (:data:`PROMPT_INITS`).

    ``patch``: VPT's formula with the model's true patch size (0.0395 on ViT-B/32); ``patch16``: with 16×16
    whatever the model, as NoLA's and LaFTer's code (0.0625 on ViT-B/32, the same as ``patch`` on a B/16).
    """
    if rule not in PROMPT_INITS:
        raise InvalidInputError(f"prompt_init must be one of {', '.join(PROMPT_INITS)}, got {rule!r}")
    return vpt_init_value((16, 16) if rule == "patch16" else patch_size, width)


class PromptedCLIP(nn.Module):
    """CLIP's vision tower with VPT-shallow prompts and a linear head (the NoLA / LaFTer student).

    Parameters
    ----------
    visual : nn.Module
        ``open_clip`` ``VisionTransformer`` (``clip.model.visual``); adopted, frozen except its LayerNorms.
    num_classes : int
    num_tokens : int
        Prompt tokens (0 for LayerNorm + head tuning only).
    head_init : Tensor (C, D), optional
        Initial head weights (the text classifier T).
    seed : int
        Seed of the prompt init.
    prompt_init : str
        ``patch`` (the true patch size) or ``patch16`` (the official codes' bound): :func:`prompt_init_bound`.
    """

    def __init__(
        self,
        visual: nn.Module,
        num_classes: int,
        num_tokens: int = 16,
        head_init: torch.Tensor | None = None,
        seed: int = 0,
        prompt_init: str = "patch",
    ):
        super().__init__()
        check_vit(visual)
        if num_tokens < 0:
            raise InvalidInputError(f"prompt tokens must be >= 0, got {num_tokens}")
        self.visual = visual
        width = int(visual.class_embedding.shape[-1])
        out_dim = int(visual.proj.shape[1]) if visual.proj is not None else width
        patch = visual.patch_size if isinstance(visual.patch_size, (tuple, list)) else (visual.patch_size,) * 2
        self.num_tokens = int(num_tokens)
        self.width, self.out_dim, self.num_classes = width, out_dim, int(num_classes)
        dtype = visual.class_embedding.dtype
        device = visual.class_embedding.device
        self.prompts = nn.Parameter(torch.zeros(1, self.num_tokens, width, dtype=dtype, device=device))
        val = prompt_init_bound(prompt_init, patch, width)
        self.init_bound = val
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            init = torch.rand(1, self.num_tokens, width, generator=gen) * 2 * val - val
            self.prompts.copy_(init.to(device, dtype))
        self.head = nn.Linear(out_dim, self.num_classes, bias=False, device=device, dtype=dtype)
        if head_init is not None:
            w = torch.as_tensor(head_init)
            if tuple(w.shape) != (self.num_classes, out_dim):
                raise InvalidInputError(
                    f"head init has shape {tuple(w.shape)}, expected ({self.num_classes}, {out_dim})"
                )
            with torch.no_grad():
                self.head.weight.copy_(w.to(device, dtype))
        self.freeze()

    def freeze(self) -> None:
        """Trainable = prompts + every LayerNorm of the vision tower + the head; the rest frozen."""
        for p in self.visual.parameters():
            p.requires_grad_(False)
        for m in self.visual.modules():
            if isinstance(m, nn.LayerNorm):
                for p in m.parameters(recurse=False):
                    p.requires_grad_(True)
        self.prompts.requires_grad_(self.num_tokens > 0)
        self.head.weight.requires_grad_(True)

    def named_trainable(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def features(self, x: torch.Tensor, prompts: bool = True) -> torch.Tensor:
        """Projected image features (B, D), not normalised; ``prompts=False`` runs the tower without them."""
        v = self.visual
        x = v.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + v.positional_embedding.to(x.dtype)
        x = v.patch_dropout(x)
        x = v.ln_pre(x)
        t = self.num_tokens if prompts else 0
        if t:
            x = torch.cat([x[:, :1], self.prompts.to(x.dtype).expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
        x = v.transformer(x)
        if t:
            x = torch.cat([x[:, :1], x[:, 1 + t :]], dim=1)
        pooled, _ = v._pool(x)
        if v.proj is not None:
            pooled = pooled @ v.proj
        return pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, C)."""
        return self.head(self.features(x))


def student_from_clip(
    clip_model, num_classes: int, num_tokens: int, head_init=None, seed: int = 0, prompt_init: str = "patch"
) -> PromptedCLIP:
    """A :class:`PromptedCLIP` on a loaded :class:`labeler.models.ClipModel` (fp32 weights), in eval mode."""
    visual = clip_model.model.visual
    if next(visual.parameters()).dtype != torch.float32:
        raise InvalidInputError("prompt tuning needs the CLIP model in fp32 (autocast handles bf16/fp16 on a GPU)")
    student = PromptedCLIP(visual, num_classes, num_tokens, head_init=head_init, seed=seed, prompt_init=prompt_init)
    return student.eval()
