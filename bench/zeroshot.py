"""Benchmark zero-shot scoring over cached float16 features: Labeler's path vs a bare torch pass, same data.

N (default 1M) random D-dim (default 512) features are written as a float16 ``.npy`` and memory-mapped, like a
project's feature matrix; C (default 10) unit class vectors are the classifier. Per round, alternately:

* **ours**: what ``labeler label --method zeroshot`` does per chunk of ``--batch-size`` rows (default 8192, the
  method's default): the rows read from the memory map by index (``matrix[rows]``, as for a project's ok images)
  and :func:`labeler.methods.zeroshot.zero_shot_probs`;
* **bare torch**: ``softmax(scale · normalize(X.float()) @ Wᵀ)`` on the whole matrix in one torch call (the
  float16 file read into memory first, not timed separately: both sides read the same page-cached file).

Printed: each round's seconds, the best of each, ``ours/bare`` (goal ≤ 1) and the max abs difference of the
probabilities. Torch is imported (as in the app), so ours converts float16 through torch.

Usage::

    python bench/zeroshot.py --n 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from labeler.methods.zeroshot import zero_shot_probs  # noqa: E402


def ours(mm: np.ndarray, rows: np.ndarray, w: np.ndarray, scale: float, batch: int) -> np.ndarray:
    out = np.empty((len(rows), len(w)), np.float32)
    for s in range(0, len(rows), batch):
        out[s : s + batch] = zero_shot_probs(mm[rows[s : s + batch]], w, scale)
    return out


def bare(mm: np.ndarray, w: np.ndarray, scale: float) -> np.ndarray:
    x = torch.from_numpy(np.asarray(mm)).float()
    x = torch.nn.functional.normalize(x, dim=1)
    return torch.softmax(scale * (x @ torch.from_numpy(w).T), dim=1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((args.classes, args.dim)).astype(np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        mm = np.lib.format.open_memmap(Path(tmp) / "v.npy", mode="w+", dtype=np.float16, shape=(args.n, args.dim))
        for s in range(0, args.n, 100_000):
            m = min(args.n, s + 100_000) - s
            mm[s : s + m] = rng.standard_normal((m, args.dim), dtype=np.float32) / 4
        mm.flush()
        mm = np.load(Path(tmp) / "v.npy", mmap_mode="c")  # copy-on-write: torch.from_numpy wants writable
        rows = np.arange(args.n)
        print(
            f"ran: {args.n:,} x {args.dim} float16 features (memory-mapped), {args.classes} classes, chunks of "
            f"{args.batch_size}; torch {torch.__version__}, threads {torch.get_num_threads()}, numpy "
            f"{np.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        t_ours, t_bare = [], []
        for r in range(args.rounds):
            t = time.perf_counter()
            a = ours(mm, rows, w, 100.0, args.batch_size)
            t_ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = bare(mm, w, 100.0)
            t_bare.append(time.perf_counter() - t)
            print(f"  round {r + 1}: ours {t_ours[-1]:.2f} s, bare torch {t_bare[-1]:.2f} s", flush=True)
        diff = float(np.abs(a - b).max())
    print(
        f"zero-shot over {args.n:,} float16 features: ours {min(t_ours):.2f} s, bare torch {min(t_bare):.2f} s, "
        f"ours/bare {min(t_ours) / min(t_bare):.2f} (best of {args.rounds}); max |p_ours - p_bare| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
