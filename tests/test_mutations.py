"""Tests that break when NoLA's, LaFTer's or CDUL's algorithm is broken (each guards a mutation that once passed).

Mutations guarded (see docs/methods.md): NoLA's teacher replaced by zero-shot argmax; the student's forward
ignoring its prompts; the strong view replaced by the weak view; LaFTer's teacher head = the untrained text
classifier T; LaFTer's teacher using prompts; no label smoothing; prompts inserted before ``ln_pre``; frozen
prompts; CDUL's KL in the wrong direction; CDUL's refinement with other predictions than the batch's own forward.
LatteCLIP: text weights replaced by ones (w ≡ 1); targets without the α smoothing (the fused texts themselves).
(Least-confident top-k and zero alignment epochs: tests/test_nola.py; LatteCLIP's α = 0: tests/test_latteclip.py;
CDUL's aggregation, refinement, snippets and checkpointed labels: tests/test_cdul*.py.)
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labeler.methods import get_method
from labeler.methods.prompt_tuning import SetupContext
from labeler.project import Project

from .conftest import tiny_project

CLASSES = ["cat", "dog", "ship", "truck"]


class _Job:
    id = 0

    def progress(self, *args, **kwargs):
        pass


@pytest.fixture(scope="module")
def base_project(tmp_path_factory):
    """24 random PNGs in 4 class folders with tiny CLIP + DINO features (no downloads, no CIFAR)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("mut")
    src = root / "imgs"
    rng = np.random.default_rng(0)
    for i in range(24):
        folder = src / CLASSES[i % 4]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return tiny_project(root / "proj", src, CLASSES)


@pytest.fixture
def proj(base_project, tmp_path):
    dst = tmp_path / "proj"
    shutil.copytree(base_project, dst, symlinks=True)
    return Project(dst)


def _task(project, method: str, **options):
    """(method, params, setup, task) for a run that was set up but not trained."""
    m = get_method(method)
    params = m.resolve(project, m.params_from({"epochs": 1, "batch_size": 8, "tokens": 4, "device": "cpu", **options}))
    setup = m.setup(project, params, _Job())
    return m, params, setup, m.build_task(project, params, setup, _Job())


def _tiny_student(num_classes=4, tokens=8, head_init=None):
    from labeler.models import load_clip
    from labeler.train.prompt import student_from_clip

    clip = load_clip("tiny-random", device="cpu")
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(6, 3, clip.image_size, clip.image_size)).astype(np.float32))
    return student_from_clip(clip, num_classes, tokens, head_init=head_init), x


def _spy_forward(student):
    """Record the inputs and outputs of ``student(x)`` (what the loss sees)."""
    seen = []
    original = student.forward

    def forward(x):
        out = original(x)
        seen.append((x.detach().clone(), out))
        return out

    student.forward = forward
    return seen


def _planted_ctx(rows, seed=0, C=4, n_per=30, D=16):
    """A SetupContext whose CLIP zero-shot is ~55 % right and whose DINO features cluster by true class."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n_per)
    n = len(y)
    logits = rng.normal(size=(n, C))
    logits[np.arange(n), y] += 1.3
    centers = rng.normal(size=(C, D))
    dino = (centers[y] + 0.2 * rng.normal(size=(n, D))).astype(np.float32)
    texts = [(np.eye(C)[c] + 0.05 * rng.normal(size=(5, C))).astype(np.float32) for c in range(C)]
    texts = [t / np.linalg.norm(t, axis=1, keepdims=True) for t in texts]
    ctx = SetupContext(
        classes=CLASSES[:C],
        image_ids=list(range(n)),
        clip_features=logits.astype(np.float32),
        text_embeddings=texts,
        text_classifier=np.eye(C, dtype=np.float32),
        logit_scale=3.0,
        verified=np.full(n, -1),
        rows=rows(n),
        params={},
        progress=lambda msg: None,
    )
    return ctx, dino, y


# --- NoLA: the teacher is DINO + the alignment module ------------------------------------------------------
def test_nola_teacher_labels_are_the_alignment_modules_prediction(monkeypatch):
    import labeler.features
    import labeler.methods.nola as nola

    def rows(n):
        return {
            "train": np.arange(12, n),
            "holdout": np.arange(0, 8),
            "val": np.arange(8, 12),
            "optimistic": False,
        }

    ctx, dino, y = _planted_ctx(rows)
    monkeypatch.setattr(labeler.features, "feature_matrix", lambda project, key: (ctx.image_ids, dino))
    fitted = []
    real_fit = nola.fit_alignment

    def spy(features, indices, labels, num_classes, **kw):
        module = real_fit(features, indices, labels, num_classes, **kw)
        fitted.append((np.asarray(indices), module))
        return module

    monkeypatch.setattr(nola, "fit_alignment", spy)
    params = {"k": 5, "align_hidden": 32, "align_epochs": 30, "align_lr": 1e-2, "align_batch_size": 16, "seed": 0}
    params["dino_features"] = "dino"
    out = nola.NoLA().prepare_teacher(None, params, ctx)
    ((indices, module),) = fitted
    expected = module.predict_proba(dino).argmax(1)
    np.testing.assert_array_equal(out["labels"], expected)
    zero_shot = ctx.clip_features.argmax(1)
    assert (expected != zero_shot).mean() > 0.2  # so a zero-shot teacher would be caught
    assert (expected == y).mean() > (zero_shot == y).mean() + 0.2  # and the alignment is what helps
    assert not set(indices.tolist()) & set(range(12))  # held-out and validation rows stay out of the alignment set


# --- the student ---------------------------------------------------------------------------------------------
def test_student_forward_is_head_of_prompted_features():
    student, x = _tiny_student()
    with torch.no_grad():
        logits = student(x)
        torch.testing.assert_close(logits, student.head(student.features(x)))
        assert not torch.allclose(logits, student.head(student.features(x, prompts=False)), atol=1e-4)


def test_prompt_insertion_point_matches_a_reference_forward():
    """Written out from open_clip's ViT: prompts join right after the class token, *after* ln_pre."""
    student, x = _tiny_student(tokens=5)
    v = student.visual
    with torch.no_grad():
        h = v.conv1(x).flatten(2).transpose(1, 2)  # (B, patches, width)
        cls = v.class_embedding.reshape(1, 1, -1).expand(len(x), 1, -1)
        h = torch.cat([cls, h], dim=1) + v.positional_embedding
        h = v.ln_pre(h)
        h = torch.cat([h[:, :1], student.prompts.expand(len(x), -1, -1), h[:, 1:]], dim=1)
        h = v.transformer(h)
        reference = v.ln_post(h[:, 0]) @ v.proj  # class-token pooling (tiny-random's ViT)
        torch.testing.assert_close(student.features(x), reference, rtol=1e-5, atol=1e-5)
        # The other order (prompts through ln_pre) gives other features: this test can tell them apart.
        g = v.conv1(x).flatten(2).transpose(1, 2)
        g = torch.cat([cls, g], dim=1) + v.positional_embedding
        g = v.ln_pre(torch.cat([g[:, :1], student.prompts.expand(len(x), -1, -1), g[:, 1:]], dim=1))
        other = v.ln_post(v.transformer(g)[:, 0]) @ v.proj
        assert not torch.allclose(other, reference, atol=1e-4)


# --- the training step: views, loss, what learns --------------------------------------------------------------
def _first_batch(task):
    return next(iter(task.batches(torch.Generator().manual_seed(0))))


def _weak_views(task, rows):
    from labeler.ingest import load_rgb

    return torch.stack([task.weak(load_rgb(task.paths[int(r)])) for r in rows])


@pytest.mark.parametrize("method", ["nola", "lafter"])
def test_the_student_learns_from_the_strong_view_with_label_smoothing(proj, method):
    _, params, _, task = _task(proj, method)
    seen = _spy_forward(task.student)
    torch.manual_seed(0)
    rows, views = _first_batch(task)
    loss, n, _ = task.loss((rows, views))
    x, logits = seen[-1]
    weak = _weak_views(task, rows)
    assert x.shape == weak.shape and not torch.allclose(x, weak, atol=1e-3)  # not the weak view
    torch.manual_seed(1)
    again = _first_batch(task)[1][-1]
    assert not torch.allclose(again, views[-1], atol=1e-3)  # random: another draw, another view
    assert torch.allclose(_weak_views(task, rows), weak)  # while the weak view is fixed
    target = task.targets(rows, views[0] if task.teacher.needs_weak else None)
    smoothing = float(params["label_smoothing"])
    assert smoothing == 0.1
    expected = F.cross_entropy(logits.float(), target, label_smoothing=smoothing)
    torch.testing.assert_close(loss.detach(), expected.detach())
    plain = F.cross_entropy(logits.float(), target)
    assert abs(float(expected.detach()) - float(plain.detach())) > 1e-4


def test_prompts_layernorms_and_head_change_after_one_step(proj):
    _, params, _, task = _task(proj, "nola")
    before = {n: p.detach().clone() for n, p in task.named_trainable()}
    opt = task.optimizer(float(params["lr"]), 0.01)
    loss, _, _ = task.loss(_first_batch(task))
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = dict(task.named_trainable())
    assert "prompts" in after and not torch.allclose(after["prompts"], before["prompts"])
    assert not torch.allclose(after["head.weight"], before["head.weight"])
    assert not torch.allclose(after["visual.ln_pre.weight"], before["visual.ln_pre.weight"])


# --- LaFTer: the teacher is the text-trained head on prompt-free features --------------------------------------
def test_lafter_teacher_head_is_the_text_trained_classifier(proj):
    from labeler.methods.lafter import train_text_classifier

    def rows(n):
        return {"train": np.arange(n), "holdout": np.zeros(0, int), "val": np.zeros(0, int), "optimistic": False}

    ctx, _, _ = _planted_ctx(rows)
    params = {"text_steps": 50, "text_lr": 1e-2, "text_noise": 0.1, "label_smoothing": 0.1, "seed": 0}
    out = get_method("lafter").prepare_teacher(None, params, ctx)
    expected = train_text_classifier(ctx.text_embeddings, steps=50, lr=1e-2, noise_std=0.1, label_smoothing=0.1)
    np.testing.assert_allclose(out["head"], expected, rtol=1e-6)
    np.testing.assert_allclose(out["head_init"], expected, rtol=1e-6)
    assert not np.allclose(out["head"], ctx.text_classifier, atol=1e-2)

    # In a run: the teacher and the student's initial head are that head, not T.
    _, _, setup, task = _task(proj, "lafter")
    head = setup["teacher"]["head"].float()
    T = setup["text_classifier"].float()
    assert not torch.allclose(head, T, atol=1e-3)
    torch.testing.assert_close(task.teacher.weight.cpu(), head)
    torch.testing.assert_close(task.student.head.weight.detach().cpu(), head)


def test_lafter_teacher_reads_prompt_free_features():
    from labeler.train.student import HeadTeacher

    student, x = _tiny_student(num_classes=2, tokens=8)
    with torch.no_grad():
        plain = F.normalize(student.features(x, prompts=False), dim=-1)
        prompted = F.normalize(student.features(x), dim=-1)
        assert not torch.allclose(plain[0], prompted[0], atol=1e-5)
        # Class 0 is image 0's prompt-free direction, class 1 its prompted one: the two paths disagree on it.
        weight = torch.stack([plain[0], prompted[0]])
        labels = HeadTeacher(student, weight, torch.device("cpu"))(torch.arange(len(x)), x)
        np.testing.assert_array_equal(labels.numpy(), (plain @ weight.T).argmax(1).numpy())
        assert int(labels[0]) == 0 and int((prompted @ weight.T).argmax(1)[0]) == 1


def test_an_untrained_pick_is_what_best_pt_and_relabeling_use(proj, monkeypatch):
    """When selection keeps epoch 0, best.pt holds the untrained student (and labels come from it)."""
    import labeler.train.loop as loop
    from labeler.train import relabel, train
    from labeler.train.student import TrainedModel

    monkeypatch.setattr(loop, "choose_epoch", lambda history, min_delta=0.0: 0)
    res = train(proj, "nola", {"epochs": 2, "batch_size": 8, "tokens": 4, "device": "cpu"})
    assert res.metrics["best_epoch"] == 0
    m, params, setup, task = _task(proj, "nola")  # the same seed: the untrained student of that run
    model = TrainedModel.load(loop_run_dir(proj, res.run_id) / loop.BEST, "cpu")
    assert model.info["epoch"] == 0
    for name, p in task.student.named_trainable():
        torch.testing.assert_close(dict(model.student.named_parameters())[name], p)
    labeled = relabel(proj, res.run_id, device="cpu")
    assert labeled.metrics["n"] == 24


def loop_run_dir(project, run_id):
    from labeler.train.runner import run_dir

    return run_dir(project, run_id)


def test_cli_says_when_the_untrained_model_was_kept(proj, monkeypatch, capsys):
    import labeler.train.loop as loop
    from labeler.cli import main

    monkeypatch.setattr(loop, "choose_epoch", lambda history, min_delta=0.0: 0)
    args = ["train", str(proj.root), "--epochs", "1", "--batch-size", "8", "--tokens", "4", "--no-label", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "best epoch 0 (the untrained model)" in out and "selection: the untrained model (epoch 0) scored" in out
    assert "warning: no trained epoch beat the untrained model" in out


def test_ui_outcome_shows_warnings():
    from labeler.ui.steps import train as ui_train

    run = {
        "id": 3,
        "status": "done",
        "metrics": {"best_epoch": 0, "warnings": ["the teacher looks degenerate"], "setup": {"warnings": []}},
    }
    out = {"label_run": 4, "n": 10, "failed": 0, "active": True, "comparison": None, "old_method": None}
    original = ui_train.train_outcome
    try:
        ui_train.train_outcome = lambda project, run_id: out
        md = ui_train.outcome_md(None, run)
    finally:
        ui_train.train_outcome = original
    assert "Warning" in md and "the teacher looks degenerate" in md and "untrained model" in md


# --- LatteCLIP: the text weights and the α smoothing shape where the prototypes go --------------------------------
@pytest.fixture(scope="module")
def latte_world():
    from .test_latteclip import synthetic_world, train_synthetic

    data, mu, y, zs = synthetic_world(0, informative=True)
    protos, _ = train_synthetic(data)
    return data, mu, protos


def test_latteclip_without_text_weights_ends_elsewhere(latte_world, monkeypatch):
    import labeler.train.latte as latte

    from .test_latteclip import alignment, train_synthetic

    data, mu, protos = latte_world
    monkeypatch.setattr(latte, "text_weights", lambda texts, prototypes: torch.ones(len(texts)))
    mutated, _ = train_synthetic(data)
    # w ≡ 1 gives captions and group texts as much say as the label text: the prototypes end measurably elsewhere
    assert abs(alignment(mutated, mu) - alignment(protos, mu)) > 0.02


def test_latteclip_without_alpha_smoothing_ends_elsewhere(latte_world, monkeypatch):
    import labeler.train.latte as latte

    from .test_latteclip import train_synthetic

    data, _, protos = latte_world
    monkeypatch.setattr(latte, "smoothed_targets", lambda prototypes, fused, labels, alpha=0.01: fused)
    mutated, _ = train_synthetic(data)
    cos = (protos * mutated).sum(1) / np.linalg.norm(protos, axis=1) / np.linalg.norm(mutated, axis=1)
    assert float(1 - cos.min()) > 0.02  # a rerun of the real method differs by < 1e-4 (test_latteclip.py)


# --- CDUL: the training loss and the refinement step ---------------------------------------------------------
def test_cdul_training_loss_is_kl_of_predictions_to_pseudo_labels_or_bce():
    """The reproduction's loss is torchmetrics KLDivergence(preds, pseudo) = KL(preds ‖ pseudo), rows renormalised."""
    from labeler.train.cdul import cdul_loss

    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(5, 4)).astype(np.float32))
    y = torch.from_numpy(rng.uniform(0.05, 0.9, size=(5, 4)).astype(np.float32))
    p = torch.softmax(logits, -1)
    q = y / y.sum(-1, keepdim=True)
    want = (p * (p.log() - q.log())).sum(-1).mean()
    swapped = (q * (q.log() - p.log())).sum(-1).mean()
    torch.testing.assert_close(cdul_loss(logits, y, "kl"), want)
    assert abs(float(want - swapped)) > 1e-3  # so the other direction would be caught
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(logits)
    torch.testing.assert_close(cdul_loss(logits, y, "bce"), bce)


@pytest.mark.parametrize("loss", ["kl", "bce"])
def test_cdul_refinement_uses_the_predictions_of_the_same_forward(loss):
    """In a refinement epoch, a batch's pseudo-labels become refine(old labels, this forward's scores) — not the
    scores after the optimiser step, not a later forward's — and fixed (human) rows stay as they were."""
    from labeler.methods.cdul import refine
    from labeler.train.cdul import CDULHeadTask, CDULTargets, scores_from_logits

    rng = np.random.default_rng(1)
    n, c = 12, 3
    targets = rng.uniform(0.1, 0.9, size=(n, c)).astype(np.float32)
    fixed = np.zeros(n, bool)
    rows = {"train": np.arange(n), "holdout": np.zeros(0, np.int64), "val": np.zeros(0, np.int64)}
    params = {"loss": loss, "batch_size": 6, "hidden": 0, "seed": 0, "refine_warmup": 0, "refine_every": 1}
    data = CDULTargets(targets, fixed, rows, targets.argmax(1), np.full(n, -1))
    task = CDULHeadTask(
        rng.normal(size=(n, 5)).astype(np.float32), data, params, torch.device("cpu"), {"classes": ["a", "b", "c"]},
        refiner=refine,
    )  # fmt: skip
    seen = []
    forward = task.head.forward
    task.head.forward = lambda x: (lambda out: (seen.append(out.detach().clone()), out)[1])(forward(x))
    batch = next(iter(task.batches(torch.Generator().manual_seed(0))))
    assert task.refining()
    r = batch.numpy()
    task.fixed[int(r[0])] = True  # a person's labels: never refined
    before = task.targets.clone()
    value, _, _ = task.loss(batch)
    (logits,) = seen
    probs = scores_from_logits(logits, loss).numpy()
    free = r != r[0]
    want = refine(before[r][free].numpy(), probs[free], loss=loss)
    np.testing.assert_allclose(task.targets[r][free].numpy(), want, rtol=1e-6)
    np.testing.assert_array_equal(task.targets[r][~free].numpy(), before[r][~free].numpy())
    assert not np.allclose(want, before[r][free].numpy())  # it did move
    untouched = np.setdiff1d(np.arange(n), r)
    np.testing.assert_array_equal(task.targets[untouched].numpy(), before[untouched].numpy())
