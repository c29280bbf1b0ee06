"""Training infrastructure and the prompt-tuned student on tiny random models and 20 generated images."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from labeler.errors import InvalidInputError, JobCancelled, NotReadyError
from labeler.jobs import get_run, list_runs, request_cancel
from labeler.project import Project

from .conftest import REPO, class_folders, tiny_project

CLASSES = ["cat", "dog", "ship", "truck"]
LN_NAMES = ["ln_pre", "ln_post"] + [f"transformer.resblocks.{i}.ln_{j}" for i in (0, 1) for j in (1, 2)]


@pytest.fixture(scope="module")
def base_project(tmp_path_factory):
    """20 generated images (5 per class), tiny CLIP + DINO features, a zero-shot run. Copied per test."""
    from labeler.cli import main

    root = tmp_path_factory.mktemp("train")
    src = class_folders(root / "imgs", per_class=5, classes=CLASSES)
    proj = root / "proj"
    assert main(["init", str(proj), "--classes", ",".join(CLASSES)]) == 0
    assert main(["import", str(proj), str(src), "--quiet"]) == 0
    assert main(["features", str(proj), "--clip", "tiny-random", "--dino", "tiny-random", "--quiet"]) == 0
    assert main(["label", str(proj), "--quiet"]) == 0
    return proj


@pytest.fixture
def proj(base_project, tmp_path):
    dst = tmp_path / "proj"
    shutil.copytree(base_project, dst, symlinks=True)
    return Project(dst)


def _tiny_clip():
    from labeler.models import load_clip

    return load_clip("tiny-random", device="cpu")


def _batch(tmp, n=8):
    from labeler.ingest import load_rgb

    clip = _tiny_clip()
    per_class = -(-n // len(CLASSES))
    src = class_folders(tmp / "imgs", per_class=per_class, classes=CLASSES)
    paths = [src / c / f"{i:04d}.jpg" for i in range(per_class) for c in CLASSES]  # cat, dog, ship, truck, cat…
    return clip, torch.stack([clip.preprocess(load_rgb(p)) for p in paths[:n]])


def _params(**kw):
    from labeler.methods import get_method

    return get_method(kw.pop("method", "nola")).params_from({"epochs": 2, "batch_size": 8, "tokens": 4, **kw})


# --- the student ----------------------------------------------------------------------------------------
def test_trainable_set_is_exactly_prompts_layernorms_and_head():
    from labeler.train.prompt import student_from_clip, vpt_init_value

    clip = _tiny_clip()
    T = torch.nn.functional.normalize(torch.randn(4, clip.dim), dim=-1)
    student = student_from_clip(clip, 4, 16, head_init=T)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    expected = {"prompts", "head.weight"} | {f"visual.{ln}.{w}" for ln in LN_NAMES for w in ("weight", "bias")}
    assert trainable == expected
    frozen = [n for n, p in student.named_parameters() if not p.requires_grad]
    assert "visual.conv1.weight" in frozen and "visual.proj" in frozen and "visual.positional_embedding" in frozen
    assert any("attn" in n for n in frozen) and any("mlp" in n for n in frozen)
    assert student.prompts.shape == (1, 16, 64)
    bound = vpt_init_value((8, 8), 64)
    assert math.isclose(bound, math.sqrt(6 / (3 * 64 + 64)))
    assert student.prompts.abs().max() <= bound and student.prompts.abs().max() > 0.5 * bound
    torch.testing.assert_close(student.head.weight, T)
    assert student.head.bias is None


def test_without_prompts_the_student_is_clip_and_prompts_change_it(tmp_path):
    from labeler.train.prompt import student_from_clip

    clip, x = _batch(tmp_path, 4)
    reference = clip.model.visual(x).detach()
    T = torch.nn.functional.normalize(torch.randn(3, clip.dim), dim=-1)
    plain = student_from_clip(_tiny_clip(), 3, 0, head_init=T)
    with torch.no_grad():
        torch.testing.assert_close(plain.features(x), reference, rtol=1e-5, atol=1e-5)
        zero_shot = (torch.nn.functional.normalize(reference, dim=-1) @ T.T).argmax(1)
        assert torch.equal(plain(x).argmax(1), zero_shot)
        prompted = student_from_clip(_tiny_clip(), 3, 8, head_init=T)
        assert not torch.allclose(prompted.features(x), reference, atol=1e-4)
        torch.testing.assert_close(prompted.features(x, prompts=False), reference, rtol=1e-5, atol=1e-5)


def test_loss_decreases_on_a_fixed_tiny_batch(tmp_path):
    from labeler.train.prompt import student_from_clip

    clip, x = _batch(tmp_path, 8)
    student = student_from_clip(clip, 4, 4)
    target = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    opt = torch.optim.AdamW([p for _, p in student.named_trainable()], lr=0.004, weight_decay=0.01)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(student(x), target, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    assert np.mean(losses[10:]) < np.mean(losses[:10])
    frozen_grads = [n for n, p in student.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_grads == []


# --- training jobs -----------------------------------------------------------------------------------------
def _final_state(project, run_id):
    from labeler.train.loop import CHECKPOINT, load
    from labeler.train.runner import run_dir

    return load(run_dir(project, run_id) / CHECKPOINT)


def test_cancel_then_resume_continues_from_the_checkpoint(proj, base_project, tmp_path):
    from labeler.train import train

    def cancel_after_first_epoch(done, total, message):
        if message.startswith("epoch 1/3 done"):
            running = list_runs(proj, kind="train", status="running")
            request_cancel(proj, running[0]["id"])

    with pytest.raises(JobCancelled):
        train(proj, "nola", _params(epochs=3), on_progress=cancel_after_first_epoch)
    run = list_runs(proj, kind="train")[0]
    assert run["status"] == "cancelled"
    assert _final_state(proj, run["id"])["epoch"] == 1
    assert [e["epoch"] for e in run["metrics"]["epochs"]] == [1]

    # The same command again continues that run (not a new one), from epoch 2.
    seen = []
    res = train(proj, "nola", _params(epochs=3), on_progress=lambda d, t, m: seen.append(m))
    assert res.run_id == run["id"] and res.resumed
    assert res.metrics["resumed_from_epoch"] == 1
    assert [e["epoch"] for e in res.metrics["epochs"]] == [1, 2, 3]
    assert not any(m.startswith("epoch 1/") for m in seen)
    assert get_run(proj, run["id"])["status"] == "done"
    assert len(list_runs(proj, kind="train")) == 1

    # ... and ends where an uninterrupted run ends (same shuffles, augmentations and steps).
    other = tmp_path / "other"
    shutil.copytree(base_project, other, symlinks=True)
    other_proj = Project(other)
    straight = train(other_proj, "nola", _params(epochs=3))
    a = _final_state(proj, run["id"])["trainable"]
    b = _final_state(other_proj, straight.run_id)["trainable"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_explicit_resume_of_a_killed_run_and_refusals(proj):
    from labeler.train import train

    def die(done, total, message):
        if message.startswith("epoch 2/"):
            raise KeyboardInterrupt  # like Ctrl-C / a kill between steps

    with pytest.raises(KeyboardInterrupt):
        train(proj, "nola", _params(epochs=2), on_progress=die)
    run_id = list_runs(proj, kind="train")[0]["id"]
    # A killed process leaves the row "running"; simulate the stale heartbeat.
    with proj.db.conn:
        proj.db.execute("update runs set status = 'running', heartbeat = 0 where id = ?", [run_id])
    assert get_run(proj, run_id)["status"] == "interrupted"
    res = train(proj, None, resume=run_id)
    assert res.run_id == run_id and res.metrics["resumed_from_epoch"] == 1 and res.metrics["epochs_run"] == 2
    with pytest.raises(InvalidInputError, match="already finished"):
        train(proj, None, resume=run_id)
    with pytest.raises(InvalidInputError, match="not a training run"):
        train(proj, None, resume=1)
    with pytest.raises(InvalidInputError, match="does not train"):
        train(proj, "zeroshot")


def test_label_run_writes_a_new_run_and_export_applies_to_new_images(proj, tmp_path):
    from labeler.cli import main
    from labeler.export import export
    from labeler.labels import active_run, read_predictions
    from labeler.train import apply_model, train
    from labeler.train.student import TrainedModel

    before = active_run(proj)["id"]
    res = train(proj, "nola", _params(epochs=1))
    n_runs = len(list_runs(proj))
    assert main(["label", str(proj.root), "--run", str(res.run_id), "--json", "--quiet"]) == 0
    runs = list_runs(proj)
    assert len(runs) == n_runs + 1
    new = runs[0]
    assert new["kind"] == "label" and new["method"] == "nola" and new["status"] == "done"
    assert new["params"]["train_run"] == res.run_id and new["params"]["classes"] == CLASSES
    assert active_run(proj)["id"] == new["id"]
    comparison = new["metrics"]["comparison"]
    assert comparison["old_run"] == before and comparison["n_common"] == 20
    assert 0 <= comparison["agreement"] <= 1 and comparison["accuracy"]["new"] is not None
    ids, probs, classes = read_predictions(proj, new["id"])
    assert len(ids) == 20 and classes == CLASSES

    out = export(proj, "model", tmp_path / "model.pt")
    data = torch.load(out, weights_only=True)
    assert data["base"]["model"] == "tiny-random" and data["classes"] == CLASSES and data["method"] == "nola"
    assert set(data["state"]) == {"prompts", "head.weight"} | {
        f"visual.{ln}.{w}" for ln in LN_NAMES for w in ("weight", "bias")
    }
    images = proj.images()[:3]
    applied = apply_model(out, [im["path"] for im in images], device="cpu")
    assert applied.shape == (3, 4)
    np.testing.assert_allclose(applied, probs[[list(ids).index(im["id"]) for im in images]], rtol=1e-4, atol=1e-5)
    assert TrainedModel.load(out, "cpu").classes == CLASSES


def test_apply_skips_a_bad_file_and_takes_a_folder(proj, tmp_path, capsys):
    """Issue 12: one unreadable file made ``apply`` fail for all (rc 2); a folder said "Is a directory"."""
    from labeler.cli import main
    from labeler.train import train

    run = train(proj, "nola", _params(epochs=1)).run_id
    model = tmp_path / "model.pt"
    # issue 12: `export --format model` printed the base model as a Python dict
    assert main(["export", str(proj.root), "--format", "model", "-o", str(model)]) == 0
    text = capsys.readouterr().out
    assert "{" not in text and f"train run {run} to {model}" in text and "on CLIP tiny-random" in text
    assert main(["export", str(proj.root), "--format", "model", "-o", str(model), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["train_run"] == run and data["base"]["model"] == "tiny-random" and data["path"] == str(model)
    good = [im["path"] for im in proj.images()[:2]]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    folder = tmp_path / "new"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(good[0], folder / "a.jpg")
    shutil.copy(good[1], folder / "sub" / "b.png")
    (folder / "notes.txt").write_text("not an image")
    empty = tmp_path / "empty"
    empty.mkdir()

    assert main(["apply", str(model), good[0], str(bad), good[1], "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in out["predictions"]] == good
    assert [s["path"] for s in out["skipped"]] == [str(bad)] and out["skipped"][0]["reason"]

    assert main(["apply", str(model), str(folder), str(empty), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [str(folder / "a.jpg"), str(folder / "sub" / "b.png")]
    assert f"skipped {empty}: a folder with no image files" in captured.err
    assert "Is a directory" not in captured.err

    assert main(["apply", str(model), str(bad), "--device", "cpu"]) == 2  # nothing could be labeled
    assert "skipped" in capsys.readouterr().err


class _Bars:
    """Stands in for the CLI's tqdm bar: records (desc, unit, message); raises ``stop_at`` on a matching message."""

    def __init__(self, stop_at: str | None = None):
        self.seen, self.stop_at = [], stop_at

    def __call__(self, desc, unit="img"):
        bars = self

        class Bar:
            def __call__(self, done, total, message=""):
                bars.seen.append((desc, unit, message))
                if bars.stop_at and message.startswith(bars.stop_at):
                    raise KeyboardInterrupt

            def close(self):
                pass

        return Bar()


def test_interrupted_fresh_run_says_how_to_resume_it(proj, monkeypatch, capsys):
    """Issue 12: after ``train --fresh`` a Ctrl-C said "rerun the same command to resume" (that starts anew)."""
    from labeler.cli import _common, main

    monkeypatch.setattr(_common, "TqdmProgress", _Bars(stop_at="epoch 1/2 done"))
    argv = ["train", str(proj.root), "--fresh", "--epochs", "2", "--batch-size", "8", "--tokens", "4"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    run = list_runs(proj, kind="train")[0]
    assert run["status"] == "cancelled"
    assert "rerun the same command" not in err
    assert f"--resume {run['id']}" in err
    assert main(["train", str(proj.root), "--resume", str(run["id"]), "--no-label", "--quiet"]) == 0
    assert get_run(proj, run["id"])["status"] == "done"


def test_progress_bars_count_batches_then_images(proj, monkeypatch):
    """Issue 12: the bar of the relabel after training counted "step/s" (the training bar's unit)."""
    from labeler.cli import _common, main

    bars = _Bars()
    monkeypatch.setattr(_common, "TqdmProgress", bars)
    assert main(["train", str(proj.root), "--epochs", "1", "--batch-size", "8", "--tokens", "4"]) == 0
    units = {unit for desc, unit, msg in bars.seen if msg.startswith("labeled ")}
    assert units == {"img"}
    assert {unit for desc, unit, msg in bars.seen if msg.startswith("epoch 1/1 done")} == {"batch"}


def test_verified_labels_become_the_validation_set_and_override_the_teacher(proj):
    from labeler.labels import set_human_labels
    from labeler.methods import get_method
    from labeler.train import train
    from labeler.train.loop import SETUP, load
    from labeler.train.runner import run_dir

    for im in proj.images():
        set_human_labels(proj, im["id"], im["folder_label"])
    res = train(proj, "nola", _params(epochs=2))
    m = res.metrics
    assert m["selection"] == "val_accuracy"
    assert m["setup"]["val"] == 12 and m["setup"]["train"] == 8  # ceil(5 / 2) per class kept out
    assert all(e["val_n"] == 12 and e["val_accuracy"] is not None for e in m["epochs"])
    assert m["setup"]["selected"] == 8  # every verified training image is in the alignment selection
    setup = load(run_dir(proj, res.run_id) / SETUP)
    params = get_run(proj, res.run_id)["params"]
    task = get_method("nola").build_task(proj, params, setup, None)
    rows = torch.as_tensor(task.train_rows)
    assert torch.equal(task.targets(rows, None), setup["verified"][rows])


def test_lafter_trains_with_a_text_classifier_teacher_and_labels(proj):
    from labeler.methods import get_method

    result = get_method("lafter").run(proj, _params(method="lafter", epochs=1))
    run = get_run(proj, result.run_id)
    assert run["kind"] == "label" and run["method"] == "lafter" and result.metrics["n"] == 20
    train_run = get_run(proj, result.metrics["train_run_id"])
    assert train_run["params"]["tokens"] == 4 and train_run["params"]["lr"] == 5e-4
    assert 0 <= train_run["metrics"]["setup"]["text_classifier_train_accuracy"] <= 1


def test_missing_features_and_multi_label_are_refused(project, tmp_path):
    from labeler.train import train

    with pytest.raises(NotReadyError, match="CLIP features"):
        train(project, "nola")
    project.features.ensure_set("clip:fake:none", "clip", 4, model="fake", pretrained="")
    with pytest.raises(NotReadyError, match="DINO features"):
        train(project, "nola")
    multi = Project.create(tmp_path / "multi", ["a", "b"], multi_label=True)
    with pytest.raises(InvalidInputError, match="multi-label"):
        train(multi, "lafter")
    with pytest.raises(InvalidInputError, match="epochs"):
        train(project, "lafter", {"epochs": 0})


def test_early_stopping_on_label_free_signals(project):
    """A fake task whose held-out predictions never change: no improvement, zero churn → stops after patience."""
    from labeler.jobs import Job
    from labeler.train.loop import BEST, CHECKPOINT, TrainTask, load, resolve_amp, run_training

    class Fake(TrainTask):
        device = torch.device("cpu")

        def __init__(self):
            self.w = torch.nn.Parameter(torch.ones(3))
            self.saved = []

        def named_trainable(self):
            return [("w", self.w)]

        def save_model(self, path, info):
            self.saved.append(info["epoch"])
            path.write_bytes(b"x")

        def steps_per_epoch(self):
            return 2

        def batches(self, generator):
            yield from range(2)

        def loss(self, batch):
            return (self.w**2).sum(), 4, 2

        def holdout(self):
            return np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])

    task = Fake()
    folder = project.runs_dir / "x"
    params = {"epochs": 20, "lr": 0.1, "patience": 2, "seed": 0}
    with Job.start(project, "train", method="fake", params=params) as job:
        summary = run_training(job, task, params, folder)
    # Epoch 0 (the untrained model) scores 0.75 too and no trained epoch beats it: kept, stop after patience.
    assert summary["epochs_run"] == 2 and summary["stopped_early"] and summary["best_epoch"] == 0
    assert summary["selection"] == "teacher_agreement" and summary["best_score"] == 0.75
    assert task.saved == [0] and (folder / BEST).exists()
    epochs = get_run(project, job.id)["metrics"]["epochs"]
    assert [e["churn"] for e in epochs] == [0.0, 0.0]
    assert epochs[0]["train_agreement"] == 0.5 and epochs[1]["loss"] < epochs[0]["loss"]
    ckpt = load(folder / CHECKPOINT)
    assert ckpt["epoch"] == 2 and set(ckpt) >= {"trainable", "optimizer", "scheduler", "rng", "history"}
    assert resolve_amp("auto", torch.device("cpu")) is None
    with pytest.raises(InvalidInputError, match="GPU"):
        resolve_amp("fp16", torch.device("cpu"))


def test_cli_train_end_to_end_in_a_subprocess(proj, capsys):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "labeler",
        "train",
        str(proj.root),
        "--method",
        "nola",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--tokens",
        "4",
        "--json",
        "--quiet",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["method"] == "nola" and data["metrics"]["epochs_run"] == 2 and data["label"]["n"] == 20
    assert len(data["metrics"]["epochs"]) == 2 and data["metrics"]["device"] == "cpu"
    from labeler.labels import active_run

    assert active_run(proj)["id"] == data["label_run_id"]
    # The refusal through the same main() in this process (a second interpreter costs seconds, tests no more).
    from labeler.cli import main

    assert main(["train", str(proj.root), "--resume", str(data["train_run_id"])]) == 2
    assert "already finished" in capsys.readouterr().err


# --- liveness: a killed train is resumed at once ------------------------------------------------------------
@pytest.fixture
def synthetic_project(tmp_path):
    """16 random PNGs in 4 class folders, tiny CLIP + DINO features, a zero-shot run (no CIFAR needed)."""
    from PIL import Image

    src = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for i in range(16):
        folder = src / CLASSES[i % 4]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return Project(tiny_project(tmp_path / "proj", src, CLASSES, label=True))


def test_train_killed_after_an_epoch_is_resumed_by_an_immediate_rerun(synthetic_project):
    import signal

    from labeler.methods import get_method
    from labeler.train import train

    from .conftest import wait_until

    proj = synthetic_project
    options = {"epochs": 500, "batch_size": 8, "tokens": 4, "patience": 1000}
    cmd = [sys.executable, "-m", "labeler", "train", str(proj.root), "--method", "nola", "--no-label", "--quiet"]
    cmd += [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def checkpointed():
            runs = list_runs(proj, kind="train")
            if child.poll() is not None:
                raise AssertionError(f"train ended before it was killed: {child.communicate()}")
            return runs and (proj.runs_dir / str(runs[0]["id"]) / "checkpoint.pt").exists() and runs[0]

        run = wait_until(checkpointed, "the first checkpoint", timeout=300)
        assert run["status"] == "running"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    killed = get_run(proj, run["id"])
    assert killed["status"] == "interrupted"  # at once: its pid is gone (no 120 s wait)
    assert killed["pid"] == child.pid
    done_epochs = len(killed["metrics"].get("epochs", []))
    assert done_epochs >= 1

    def stop_after_one_more_epoch(done, total, message):
        if message.startswith("epoch ") and " done" in message:
            request_cancel(proj, run["id"])

    with pytest.raises(JobCancelled):
        train(proj, "nola", get_method("nola").params_from(options), on_progress=stop_after_one_more_epoch)
    runs = list_runs(proj, kind="train")
    assert [r["id"] for r in runs] == [run["id"]]  # the same run, not a new one from epoch 0
    resumed = runs[0]
    assert resumed["metrics"]["resumed_from_epoch"] >= done_epochs >= 1
    assert resumed["status"] == "cancelled" and resumed["pid"] == os.getpid()


def test_running_rows_read_interrupted_when_their_process_is_gone(project):
    from labeler.jobs import Job
    from store.lock import hostname

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    job = Job.start(project, "cluster")

    def row(**fields):
        with project.db.conn:
            project.db["runs"].update(job.id, {"status": "running", **fields})
        return get_run(project, job.id)["status"]

    assert row() == "running"  # a live Job of this process
    assert row(pid=gone.pid) == "interrupted"  # same host, pid gone: at once, whatever the heartbeat
    assert row(pid=gone.pid, host="elsewhere") == "running"  # another host: the heartbeat rule
    assert row(heartbeat=0) == "interrupted"
    assert row(pid=None, host=None, heartbeat=0) == "interrupted"  # rows older than the pid column
    job.finish("done")
    assert row(pid=os.getpid(), host=hostname(), heartbeat=1e12) == "interrupted"  # ours, but no live Job


def test_a_run_of_this_process_never_reads_interrupted_while_it_starts_or_ends(project, monkeypatch):
    """Another thread (the app's poll, a test's wait) read a starting run as interrupted (the row was written
    before its Job registered) and an ending one too (the row read before the Job finished, checked after)."""
    import threading

    from labeler import jobs

    seen: list[str] = []
    readers: list[threading.Thread] = []
    real = jobs.Job.__init__

    def init(self, *args, **kwargs):  # the row is written; a reader comes before the Job registers
        reader = threading.Thread(target=lambda: seen.append(list_runs(Project(project.root))[0]["status"]))
        reader.start()
        reader.join(timeout=0.5)  # with the fix the reader waits for the start to end (a bound, not a timing)
        readers.append(reader)
        real(self, *args, **kwargs)

    monkeypatch.setattr(jobs.Job, "__init__", init)
    job = jobs.Job.start(project, "cluster")
    readers[0].join()
    assert seen == ["running"]
    monkeypatch.undo()
    row = dict(project.db["runs"].get(job.id))  # read while it runs ...
    job.finish("done")  # ... checked after it ended: not interrupted
    assert row["status"] == "running" and not jobs.is_interrupted(project, row)
