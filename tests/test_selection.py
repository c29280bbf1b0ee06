"""Label-free model selection: the pure rule (labeler.train.selection) and the loop that uses it, on fake tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labeler.jobs import Job, get_run
from labeler.train.data import split_rows
from labeler.train.loop import BEST, TrainTask, load, run_training
from labeler.train.selection import choose_epoch, epoch_scores, explain_choice, noise_margin

N, C = 200, 4


def _diverse(agree: float, seed: int):
    """Student and teacher over N images, uniform over C classes, agreeing on about ``agree`` of them."""
    rng = np.random.default_rng(seed)
    teacher = rng.integers(0, C, N)
    other = (teacher + rng.integers(1, C, N)) % C
    student = np.where(rng.random(N) < agree, teacher, other)
    return student, teacher


class ScriptedTask(TrainTask):
    """A task whose held-out predictions follow a script: ``script[k]`` is what the k-th evaluation sees
    (k = 0: the untrained model)."""

    device = torch.device("cpu")
    num_classes = C

    def __init__(self, script):
        self.script = script
        self.w = torch.nn.Parameter(torch.ones(3))
        self.calls = 0
        self.saved: list[tuple[int, torch.Tensor]] = []

    def named_trainable(self):
        return [("w", self.w)]

    def save_model(self, path, info):
        self.saved.append((info["epoch"], self.w.detach().clone()))
        torch.save({"epoch": info["epoch"], "w": self.w.detach().clone()}, path)

    def steps_per_epoch(self):
        return 1

    def batches(self, generator):
        yield 0

    def loss(self, batch):
        return (self.w**2).sum(), 4, 2

    def holdout(self):
        out = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return out


def _run(project, task, epochs, **params):
    params = {"epochs": epochs, "lr": 0.1, "seed": 0, "patience": 100, **params}
    with Job.start(project, "train", method="fake", params=params) as job:
        summary = run_training(job, task, params, project.runs_dir / "x")
    return summary, get_run(project, job.id)["metrics"]


def test_collapsed_epoch_with_full_agreement_is_not_selected_and_warned(project):
    collapsed = (np.zeros(N, dtype=int), np.zeros(N, dtype=int))  # student and teacher both say class 0
    task = ScriptedTask([_diverse(0.4, 0), _diverse(0.6, 1), collapsed])
    summary, metrics = _run(project, task, 2)
    epochs = metrics["epochs"]
    assert epochs[1]["teacher_agreement"] == 1.0 and epochs[1]["degenerate"] and epochs[1]["teacher_degenerate"]
    assert summary["best_epoch"] == 1 and summary["best_score"] == pytest.approx(epochs[0]["teacher_agreement"])
    assert [e for e, _ in task.saved] == [0, 1]  # best.pt never became the collapsed epoch
    assert load(project.runs_dir / "x" / BEST)["epoch"] == 1
    warnings = " ".join(summary["warnings"])
    assert "teacher looks degenerate" in warnings and "epochs 2 collapsed" in warnings
    assert metrics["warnings"] == summary["warnings"] and "collapsed epochs left out: 2" in summary["selection_reason"]


def test_a_run_where_training_only_hurts_keeps_the_untrained_model(project):
    task = ScriptedTask([_diverse(0.7, 0), _diverse(0.5, 1), _diverse(0.45, 2), _diverse(0.55, 3)])
    initial = task.w.detach().clone()
    summary, metrics = _run(project, task, 3)
    assert summary["best_epoch"] == 0 and summary["untrained"]["epoch"] == 0
    assert summary["best_score"] == summary["untrained"]["score"]
    assert [e for e, _ in task.saved] == [0]
    saved = load(project.runs_dir / "x" / BEST)
    assert saved["epoch"] == 0 and torch.equal(saved["w"], initial)  # the exported model is the untrained one
    assert not torch.equal(task.w.detach(), initial)  # (training did change the weights)
    assert any("untrained" in w for w in summary["warnings"])
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]  # the per-epoch rows are the trained epochs
    assert metrics["epochs"][0]["churn"] is not None  # epoch 1's churn is against the untrained model


def test_patience_counts_from_the_kept_epoch(project):
    same = _diverse(0.6, 0)
    summary, metrics = _run(project, ScriptedTask([same]), 20, patience=2)
    assert summary["best_epoch"] == 0 and summary["stopped_early"] and summary["epochs_run"] == 2
    assert [e["churn"] for e in metrics["epochs"]] == [0.0, 0.0]


def test_noise_level_gains_do_not_count():
    def h(*scores, n=500):
        return [{"score": s, "n": n, "degenerate": False} for s in scores]

    assert choose_epoch(h(0.60, 0.605, 0.61, 0.615)) == 0  # each < 1 binomial standard error (≈ 0.022)
    assert choose_epoch(h(0.60, 0.605, 0.63)) == 2  # the gain over the kept epoch adds up
    assert choose_epoch(h(0.60, 0.70, 0.71)) == 1
    assert choose_epoch(h(0.60, 0.61, n=5000)) == 1  # 0.007 is the noise on 5000 images
    assert noise_margin(0.6, 500) == pytest.approx(np.sqrt(0.24 / 500))
    assert noise_margin(1.0, 100) > 0 and noise_margin(0.5, 10_000, min_delta=0.05) == 0.05


def test_degenerate_epochs_lose_to_any_healthy_one():
    history = [
        {"score": 0.30, "n": 200, "degenerate": False},
        {"score": 1.00, "n": 200, "degenerate": True},
        {"score": 0.32, "n": 200, "degenerate": False},  # within the noise of epoch 0
    ]
    assert choose_epoch(history) == 0
    assert choose_epoch([{**e, "degenerate": True} for e in history]) == 1  # all collapsed: the best of them
    idx, reason = explain_choice([{**e, "degenerate": True} for e in history])
    assert idx == 1 and "collapsed" in reason
    assert choose_epoch([{"score": None}, {"score": None}]) == 1  # nothing to score: the last epoch
    with pytest.raises(ValueError):
        choose_epoch([])


def test_epoch_scores_and_what_counts_as_a_collapse():
    student, teacher = _diverse(0.6, 0)
    s = epoch_scores(student, teacher, C, previous=teacher)
    assert s["n"] == N and s["agreement"] == pytest.approx((student == teacher).mean())
    assert s["churn"] == pytest.approx((student != teacher).mean())
    assert 0.95 < s["class_entropy"] <= 1.0 and not s["degenerate"] and not s["teacher_degenerate"]
    assert epoch_scores(student, teacher, C)["churn"] is None
    zeros = np.zeros(N, dtype=int)
    collapsed = epoch_scores(zeros, zeros, C, reference=teacher)
    assert collapsed["agreement"] == 1.0 and collapsed["class_entropy"] == 0.0
    assert collapsed["degenerate"] and collapsed["teacher_degenerate"]
    # A class imbalance the reference shares is not a collapse ...
    rng = np.random.default_rng(0)
    imbalanced = np.where(rng.random(N) < 0.92, 0, rng.integers(1, C, N))
    like_it = np.where(rng.random(N) < 0.9, 0, rng.integers(1, C, N))
    assert epoch_scores(like_it, imbalanced, C)["degenerate"]  # (judged against uniform, it would be)
    s = epoch_scores(like_it, imbalanced, C, reference=imbalanced)
    assert not s["degenerate"] and not s["teacher_degenerate"] and s["class_entropy"] < 0.5
    # ... but collapsing a balanced reference onto two of its four classes is.
    assert epoch_scores(student % 2 * 0 + (student == 1), teacher, C, reference=teacher)["degenerate"]
    assert epoch_scores([], [], C)["agreement"] is None


def test_validation_uses_human_labels_only():
    verified = np.full(60, -1)
    verified[:24] = np.repeat([0, 1], 12)  # 12 verified per class ...
    human = np.zeros(60, dtype=bool)
    human[:4] = True
    human[12:16] = True  # ... of which 4 per class are human, the rest accepted pseudo-labels
    s = split_rows(verified, 2, human=human, val_split=0.5)
    assert len(s["val"]) == 0 and "fewer than 5 human labels" in s["val_reason"]
    assert set(range(24)) <= set(s["train"])  # accepted labels still train
    human[4:6] = True
    human[16:18] = True  # 6 human per class
    s = split_rows(verified, 2, human=human, val_split=0.5)
    assert len(s["val"]) == 6 and human[s["val"]].all()
    s = split_rows(verified, 2, human=human, val_split=0.0)
    assert s["optimistic"] and human[s["val"]].all() and len(s["val"]) == 12


def test_selection_state_survives_a_resume(project):
    script = [_diverse(0.4, 0), _diverse(0.6, 1), _diverse(0.6, 1), _diverse(0.9, 2)]
    first = ScriptedTask(script)
    summary, _ = _run(project, first, 2)  # checkpoint after epoch 2 (read back with weights_only=True)
    assert summary["best_epoch"] == 1
    again = ScriptedTask(script)
    again.calls = first.calls  # the resumed run sees what the next epoch would
    summary, metrics = _run(project, again, 3)
    assert summary["resumed_from_epoch"] == 2 and summary["best_epoch"] == 3 and summary["untrained"]["epoch"] == 0
    assert [e for e, _ in again.saved] == [3] and [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
