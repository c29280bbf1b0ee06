"""LatteCLIP end to end on tiny random models and generated images, captions from a fake OpenAI-compatible server:
caption, train (killed in epoch 2, resumed), relabel, export, apply — through the CLI where a person would."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from labeler.cli import main
from labeler.errors import NotReadyError
from labeler.jobs import get_run, list_runs
from labeler.project import Project

from .conftest import class_folders
from .test_describe_openai import server  # noqa: F401  (fixture: a real OpenAI-compatible HTTP server)

CLASSES = ["cat", "dog", "ship"]


def _json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main([*map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def base_project(tmp_path_factory):
    """12 generated images (4 per class), tiny-random CLIP features, a zero-shot run; no captions yet."""
    tmp = tmp_path_factory.mktemp("latteclip")
    src = class_folders(tmp / "imgs", per_class=4, classes=CLASSES)
    root = tmp / "p"
    assert main(["init", str(root), "--classes", ",".join(CLASSES)]) == 0
    assert main(["import", str(root), str(src), "--quiet"]) == 0
    assert main(["features", str(root), "--clip", "tiny-random", "--quiet"]) == 0
    assert main(["label", str(root), "--quiet"]) == 0
    return root


@pytest.fixture
def proj(base_project, tmp_path):
    """A copy of the base project per test (each captions, trains and labels it)."""
    root = tmp_path / "p"
    shutil.copytree(base_project, root, symlinks=True)
    return root


def _final(project_root, run_id) -> dict:
    return torch.load(project_root / "runs" / str(run_id) / "checkpoint.pt", weights_only=True)


def test_latteclip_without_captions_says_to_caption_first(proj, capsys):
    from labeler.train import train

    with pytest.raises(NotReadyError, match="caption the images first") as info:
        train(Project(proj), "latteclip", {"epochs": 1, "device": "cpu"})
    assert info.value.hint.step == "captions"
    assert main(["train", str(proj), "--method", "latteclip", "--device", "cpu", "--quiet"]) != 0
    assert "caption" in capsys.readouterr().err
    assert main(["train", str(proj), "--method", "nola", "--groups", "shared", "--quiet"]) != 0  # latteclip only


def test_caption_train_kill_resume_relabel_export_apply(proj, server, tmp_path, capsys):  # noqa: F811
    from labeler.train import train

    caption = ["caption", proj, "--backend", "openai", "--model", "vlm", "--base-url", server.url, "--groups"]
    assert main([*map(str, caption), "--quiet"]) == 0
    assert server.requests > 0
    project = Project(proj)
    straight_root = tmp_path / "straight"
    shutil.copytree(proj, straight_root, symlinks=True)

    # A human label replaces both pseudo-label streams of its image.
    image = project.images()[0]
    from labeler.labels import set_human_labels

    set_human_labels(project, image["id"], "ship")

    params = {"epochs": 3, "batch_size": 4, "device": "cpu", "holdout": 0.25}

    def die(done, total, message):
        if message.startswith("epoch 2/"):
            raise KeyboardInterrupt  # like a kill between steps

    with pytest.raises(KeyboardInterrupt):
        train(project, "latteclip", params, on_progress=die)
    run_id = list_runs(project, kind="train")[0]["id"]
    with project.db.conn:  # a killed process leaves the row "running" with a stale heartbeat
        project.db.execute("update runs set status = 'running', heartbeat = 0 where id = ?", [run_id])
    assert _final(proj, run_id)["epoch"] == 1

    data = _json(capsys, "train", proj, "--resume", run_id, "--quiet")
    metrics = data["metrics"]
    assert data["train_run_id"] == run_id and data["resumed"] and metrics["resumed_from_epoch"] == 1
    assert metrics["epochs_run"] == 3 and data["method"] == "latteclip"
    setup = metrics["setup"]
    assert setup["preset"] == "head" and setup["trainable_parameters"] > 0
    assert setup["captions"]["with_caption"] == 12 and setup["captions"]["groups"] == "shared"
    assert setup["captions"]["label_text_only"] == 0
    assert data["params"]["recipe"] == "labeler" and data["params"]["lr"] == 1e-4

    setup_file = torch.load(proj / "runs" / str(run_id) / "setup.pt", weights_only=True)
    row = setup_file["image_ids"].tolist().index(image["id"])
    assert int(setup_file["verified"][row]) == CLASSES.index("ship")

    # The resumed run ends where an uninterrupted one ends, prototypes included (they are in the checkpoint).
    straight = Project(straight_root)
    set_human_labels(straight, straight.images()[0]["id"], "ship")
    other = train(straight, "latteclip", params)
    a, b = _final(proj, run_id)["trainable"], _final(straight_root, other.run_id)["trainable"]
    assert "__prototypes__" in a and a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    protos = a["__prototypes__"]
    torch.testing.assert_close(protos.norm(dim=1), torch.ones(len(CLASSES)), rtol=0, atol=1e-5)

    # Relabel with the trained model, export it, apply it to files.
    labeled = _json(capsys, "label", proj, "--run", run_id, "--quiet")
    assert labeled["n"] == 12 and get_run(project, labeled["run_id"])["method"] == "latteclip"
    out = tmp_path / "model.pt"
    assert main(["export", str(proj), "--format", "model", "-o", str(out)]) == 0
    model = torch.load(out, weights_only=True)
    assert model["format"] == "labeler.latteclip" and model["classes"] == CLASSES and model["preset"] == "head"
    capsys.readouterr()
    paths = [im["path"] for im in project.images()[:2]]
    applied = _json(capsys, "apply", out, *paths)
    assert [p["path"] for p in applied["predictions"]] == paths
    from labeler.labels import read_predictions
    from labeler.train import apply_model

    ids, probs, _ = read_predictions(project, labeled["run_id"])
    got = apply_model(out, paths, device="cpu")
    want = probs[[list(ids).index(im["id"]) for im in project.images()[:2]]]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    # A rerun of captioning sends nothing again (cached per backend, model, prompt, image or group).
    before = server.requests
    assert main([*map(str, caption), "--quiet"]) == 0
    assert server.requests == before


def test_tower_preset_trains_the_vision_tower_and_keeps_audit_images_out(proj, server, capsys):  # noqa: F811
    from labeler.audit import draw_sample, sampled_ids

    caption = ["caption", proj, "--backend", "openai", "--model", "vlm", "--base-url", server.url, "--groups"]
    assert main([*map(str, caption), "--quiet"]) == 0
    draw_sample(Project(proj), 3, seed=1)
    audited = sampled_ids(Project(proj))
    assert len(audited) == 3
    data = _json(
        capsys, "train", proj, "--method", "latteclip", "--preset", "ln-last", "--epochs", "1", "--batch-size", "6",
        "--device", "cpu", "--quiet",
    )  # fmt: skip
    setup = data["metrics"]["setup"]
    assert setup["preset"] == "ln-last" and data["label"]["n"] == 12  # relabeling covers every image
    assert setup["audit_excluded"] == 3 and setup["images"] == 9
    ids = torch.load(proj / "runs" / str(data["train_run_id"]) / "setup.pt", weights_only=True)["image_ids"].tolist()
    assert not audited & set(ids)
    state = _final(proj, data["train_run_id"])["trainable"]
    assert any(k.startswith("clip.visual.") for k in state) and not any(k.startswith("clip.transformer") for k in state)
