"""NoLA's alignment module: a small MLP on frozen DINO features, trained on CLIP's confident pseudo-labels.

Built by :func:`labeler.methods.nola.fit_alignment` (which validates the inputs); lives here because it
needs torch, which ``labeler.methods`` does not import until a method runs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import InvalidInputError


class AlignmentModule(nn.Module):
    """``Linear(D, hidden) → ReLU → Linear(hidden, C)`` over DINO features.

    Attributes
    ----------
    in_dim, hidden, num_classes : int
        Taken from the data it was fitted on (never hard-coded).
    history : list of float
        Mean training loss per epoch (what :func:`fit_alignment` recorded).
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.in_dim, self.hidden, self.num_classes = int(in_dim), int(hidden), int(num_classes)
        self.mlp = nn.Sequential(
            nn.Linear(self.in_dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.num_classes)
        )
        self.history: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)

    @torch.no_grad()
    def predict_proba(self, features: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Class probabilities (N, C), float32, for features (N, D) of the kind it was fitted on."""
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[1] != self.in_dim:
            raise InvalidInputError(
                f"features must have shape (N, {self.in_dim}) like the ones the module was fitted on, got {f.shape}"
            )
        if not np.isfinite(f).all():
            raise InvalidInputError("features contain NaN or inf")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(f), batch_size):
            x = torch.from_numpy(f[start : start + batch_size]).to(device)
            out.append(torch.softmax(self(x).float(), dim=1).cpu().numpy())
        self.train(was_training)
        if not out:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)


def train_alignment(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    hidden: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> AlignmentModule:
    """Fit :class:`AlignmentModule` with cross-entropy and Adam on (x, y); inputs already validated."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = AlignmentModule(x.shape[1], num_classes, hidden)
    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    n = len(xt)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(module(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        module.history.append(total / n)
    module.eval()
    return module
