"""CDUL on the synthetic multi-label set: pseudo-label quality (global-only, aggregated, refined) and the trained
classifier, for both losses (sigmoid + BCE, softmax + KL), with and without refinement.

The set is ``tests/test_cdul.py:synthetic_multilabel``: images of 1–3 objects, each visible in 1–3 of 9 snippets;
the whole-image feature is the mean of the snippets plus noise. The head trains on the whole-image features (which
carry every object, diluted), exactly as ``train --method cdul`` does on a project — the same task class
(:class:`labeler.train.cdul.CDULHeadTask`) driven by the same loop (:func:`labeler.train.loop.run_training`) with
the label-free selection; only the project is replaced by arrays. mAP is measured on the training images (the
pseudo-labels' quality) and on a fresh test set of the same distribution (the classifier's).

Usage::

    python bench/cdul.py --seeds 3 --epochs 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from labeler.methods.cdul import aggregate, global_scores, refine, snippet_scores  # noqa: E402
from labeler.metrics import mean_average_precision  # noqa: E402
from labeler.train.cdul import CDULHead, CDULHeadTask, CDULTargets  # noqa: E402
from labeler.train.data import split_rows  # noqa: E402
from labeler.train.loop import BEST, run_training  # noqa: E402
from tests.test_cdul import synthetic_multilabel  # noqa: E402


class _Job:
    id = 0

    def __init__(self):
        self.metrics = {}

    def progress(self, *args, **kwargs):
        pass

    def update_metrics(self, **kw):
        self.metrics.update(kw)


def one_run(seed: int, loss: str, refine_every: int, epochs: int, n: int = 600, lr: float = 1e-2) -> dict:
    whole, snippets, truth, texts = synthetic_multilabel(n=n, seed=seed)
    g = global_scores(whole, texts)
    agg = aggregate(g, snippet_scores(snippets, texts))
    c = truth.shape[1]
    split = split_rows(np.full(n, -1), c, holdout=0.1, seed=seed)
    rows = {k: split[k] for k in ("train", "holdout", "val")}
    params = {
        "loss": loss,
        "batch_size": 64,
        "hidden": 0,
        "seed": seed,
        "refine_warmup": 5,
        "refine_every": refine_every,
        "refine_step": 1.0,
        "sigma": 1.0,
        "epochs": epochs,
        "lr": lr,
        "schedule": "cosine",
        "weight_decay": 0.01,
        "precision": "fp32",
        "patience": epochs,
    }
    task = CDULHeadTask(
        whole, CDULTargets(agg, np.zeros(n, bool), rows, agg.argmax(1), np.full(n, -1)), params, torch.device("cpu"),
        {"classes": [str(i) for i in range(c)], "features": "synthetic"}, refiner=refine,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_training(_Job(), task, params, Path(tmp))
        head = CDULHead.load(Path(tmp) / BEST)
    train_rows = rows["train"]
    refined = task.targets.numpy()
    return {
        "seed": seed,
        "loss": loss,
        "refine_every": refine_every,
        "best_epoch": summary["best_epoch"],
        "pseudo_global": mean_average_precision(g[train_rows], truth[train_rows])[0],
        "pseudo_aggregated": mean_average_precision(agg[train_rows], truth[train_rows])[0],
        "pseudo_refined": mean_average_precision(refined[train_rows], truth[train_rows])[0],
        "classifier_train": mean_average_precision(head.predict(whole), truth)[0],
        "classifier_test": _test_map(head, n, texts, seed),
    }


def _test_map(head, n: int, texts, seed) -> float:
    """mAP on 300 fresh images: the same generator (same class directions and background) drawn further."""
    whole, _, truth, t2 = synthetic_multilabel(n=n + 300, seed=seed)
    assert np.allclose(t2, texts)
    return mean_average_precision(head.predict(whole[n:]), truth[n:])[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = [
        one_run(seed, loss, every, args.epochs)
        for seed in range(args.seeds)
        for loss in ("bce", "kl")
        for every in (5, 0)
    ]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    keys = ["pseudo_global", "pseudo_aggregated", "pseudo_refined", "classifier_train", "classifier_test"]
    print(f"{'loss':<5}{'refine':>7}  " + "  ".join(f"{k:>17}" for k in keys))
    for loss in ("bce", "kl"):
        for every in (5, 0):
            rs = [r for r in results if r["loss"] == loss and r["refine_every"] == every]
            cells = "  ".join(f"{np.mean([r[k] for r in rs]):>17.4f}" for k in keys)
            print(f"{loss:<5}{('F=' + str(every)) if every else 'off':>7}  {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
