"""CDUL with a fine-tuned backbone (``--backbone clip | resnet101``, the paper recipe's): a network trained end to
end on the images, refining the pseudo-labels, relabeling the project and exported for ``apply`` — with tiny
models on 2×2 mosaics of generated images. The ResNet-101 starts from a state dict file written here (random
weights: the ImageNet file cannot be downloaded), which is the same loading path as the real file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from labeler.errors import InvalidInputError, ModelUnavailableError
from labeler.project import Project

from .test_cdul_train import CLASSES, _set_truth, mosaics


@pytest.fixture(scope="module")
def small_project(tmp_path_factory):
    """10 mosaics of 64×64 px with CLIP, DINO and 3×3 snippet features of the tiny models, and truth sets."""
    from labeler.cli import main

    root = tmp_path_factory.mktemp("cdulnet")
    mosaics(root / "imgs", 10, seed=5)
    proj = root / "proj"
    assert main(["init", str(proj), "--classes", ",".join(CLASSES), "--multi-label"]) == 0
    assert main(["import", str(proj), str(root / "imgs"), "--quiet"]) == 0
    assert main(["features", str(proj), "--clip", "tiny-random", "--dino", "tiny-random", "--snippets", "--quiet"]) == 0
    _set_truth(Project(proj))
    return proj


@pytest.fixture
def proj(small_project, tmp_path):
    dst = tmp_path / "proj"
    shutil.copytree(small_project, dst, symlinks=True)
    return Project(dst)


def _params(**kw):
    base = {
        "backbone": "clip",
        "epochs": 2,
        "refine_warmup": 0,
        "refine_every": 1,
        "batch_size": 4,
        "lr": 1e-3,
        "device": "cpu",
        "holdout": 0.2,
        "workers": 0,
    }
    return {**base, **kw}


def _vision_state(project: Project) -> dict[str, torch.Tensor]:
    from labeler.models import load_clip

    fset = project.features.latest("clip")
    clip = load_clip(fset["model"], fset["pretrained"] or None, device="cpu", precision="fp32")
    return {k: v.clone() for k, v in clip.model.visual.state_dict().items()}


def test_clip_backbone_fine_tunes_the_tower_refines_relabels_and_applies(proj, tmp_path):
    from labeler.export import export
    from labeler.jobs import get_run
    from labeler.labels import read_predictions
    from labeler.train.apply import apply_to_files, relabel
    from labeler.train.cdul_net import NET_FORMAT
    from labeler.train.loop import BEST, CHECKPOINT, SETUP, load
    from labeler.train.runner import train
    from labeler.train.runs import run_dir

    train_id = train(proj, "cdul", _params()).run_id
    run = get_run(proj, train_id)
    assert run["status"] == "done" and run["params"]["backbone"] == "clip"
    setup = run["metrics"]["setup"]
    assert any("fine-tunes the CLIP image tower" in n for n in setup["notes"])
    assert any("slow" in w for w in setup["warnings"])  # a CPU run says it is slow

    folder = run_dir(proj, train_id)
    best = load(folder / BEST)
    assert best["format"] == NET_FORMAT and best["backbone"] == "clip" and best["classes"] == CLASSES
    assert {k for k in best["state"] if not k.startswith("backbone.visual.")} == {"head.weight", "head.bias"}
    # the image tower itself was trained (not only the linear layer on top): the last epoch's weights moved
    before = _vision_state(proj)
    last = load(folder / CHECKPOINT)["trainable"]
    after = {k[len("backbone.visual.") :]: v for k, v in last.items() if k.startswith("backbone.visual.")}
    assert after and set(after) <= set(before)
    moved = [k for k in after if not torch.equal(before[k], after[k])]
    assert len(moved) > len(after) // 2, f"only {len(moved)} of {len(after)} tower tensors changed"

    # refinement ran every epoch and its labels moved away from the initial aggregated ones
    refined = np.load(folder / "pseudo_labels.npz")
    initial = load(folder / SETUP)["targets"].numpy()
    ids = load(folder / SETUP)["image_ids"].tolist()
    assert refined["image_ids"].tolist() == ids and int(refined["epoch"]) == 2
    assert np.abs(refined["labels"] - initial).max() > 1e-4
    assert ((refined["labels"] > 0) & (refined["labels"] < 1)).all()

    # the project is relabeled from the images by the network: one multi-label score row per image
    res = relabel(proj, train_id, workers=0)
    label_run = get_run(proj, res.run_id)
    assert label_run["params"]["multi_label"] and label_run["params"]["backbone"] == "clip"
    pred_ids, probs, _ = read_predictions(proj, res.run_id)
    assert len(pred_ids) == len(proj.images()) and probs.shape == (len(pred_ids), len(CLASSES))

    # exported, it labels the same files alone, with the same scores the relabel wrote
    out = tmp_path / "model.pt"
    export(proj, "model", out, run=train_id)
    paths = {im["id"]: im["path"] for im in proj.images()}
    got = apply_to_files(out, [paths[int(i)] for i in pred_ids])
    assert got.multi_label and got.classes == CLASSES and not got.skipped
    np.testing.assert_allclose(got.probs, probs, atol=1e-5)
    assert len(got.labels) == len(pred_ids) and all(got.labels)


def test_net_task_state_holds_the_buffers_so_a_resumed_batchnorm_continues(tmp_path):
    """BatchNorm running statistics are buffers, not parameters: the checkpoint keeps them (a ResNet resumes)."""
    from labeler.methods.cdul import refine
    from labeler.train.cdul import CDULTargets
    from labeler.train.cdul_net import CDULNet, CDULNetTask

    def make():
        backbone = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
        )
        return CDULNet(backbone, 4, 3)

    def task(net):
        return CDULNetTask(
            net,
            ["a.png", "b.png"],
            lambda img: img,
            64,
            CDULTargets(
                np.full((2, 3), 0.5, np.float32),
                np.zeros(2, bool),
                {"train": np.arange(2), "holdout": np.zeros(0, np.int64), "val": np.zeros(0, np.int64)},
                np.zeros(2, np.int64),
                np.full(2, -1),
            ),
            {"loss": "bce", "batch_size": 2},
            torch.device("cpu"),
            {},
            refiner=refine,
        )

    trained = make()
    trained.train()
    trained(torch.randn(8, 3, 8, 8) * 3 + 1)  # moves the running statistics
    state = task(trained).state()
    assert "buffer.backbone.1.running_mean" in state and "cdul.pseudo_labels" in state
    fresh = make()
    assert not torch.equal(fresh.backbone[1].running_mean, trained.backbone[1].running_mean)
    task(fresh).load_state(state)
    assert torch.equal(fresh.backbone[1].running_mean, trained.backbone[1].running_mean)
    assert torch.equal(fresh.backbone[1].running_var, trained.backbone[1].running_var)


def test_paper_recipe_fine_tunes_a_resnet101_from_a_local_state_dict(proj, tmp_path):
    from torchvision.models import resnet101

    from labeler.jobs import get_run
    from labeler.methods import get_method
    from labeler.train.cdul_net import NET_FORMAT, CDULNetModel
    from labeler.train.loop import BEST, load
    from labeler.train.runner import train
    from labeler.train.runs import run_dir

    weights = tmp_path / "resnet101.pth"
    torch.save(resnet101(weights=None).state_dict(), weights)
    method = get_method("cdul")
    p = method.resolve(proj, method.params_from({"recipe": "paper", "backbone_weights": str(weights), "device": "cpu"}))
    # the reproduction's settings
    assert (p["backbone"], p["loss"], p["lr"], p["batch_size"], p["epochs"], p["schedule"], p["weight_decay"]) == (
        "resnet101",
        "kl",
        1e-5,
        8,
        100,
        "constant",
        0.0,
    )
    assert (p["refine_warmup"], p["refine_every"], p["backbone_weights"]) == (10, 10, str(weights))
    # one short epoch of it, for real (half the images held out: a ResNet-101 step is seconds on a CPU)
    options = {"recipe": "paper", "backbone_weights": str(weights), "epochs": 1, "device": "cpu", "holdout": 0.5}
    run = get_run(proj, train(proj, "cdul", {**options, "workers": 0}).run_id)
    assert run["status"] == "done" and run["params"]["backbone"] == "resnet101"
    data = load(run_dir(proj, run["id"]) / BEST)
    assert data["format"] == NET_FORMAT and data["resize"] == 232
    model = CDULNetModel(data, "cpu")
    assert model.image_size == 224 and model.min_side == 464 and model.loss == "kl"
    x = torch.stack([model.transform(proj_image(proj))])
    assert x.shape == (1, 3, 224, 224)
    probs = model.predict_proba(x)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)  # softmax (the reproduction's KL)


def proj_image(project: Project):
    from PIL import Image

    return Image.open(project.images()[0]["path"])


def test_backbone_refusals_say_what_to_do(proj, tmp_path, monkeypatch):
    from labeler.train.runner import train

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    with pytest.raises(ModelUnavailableError, match="give its path as the backbone weights") as err:
        train(proj, "cdul", {"backbone": "resnet101", "device": "cpu"})
    assert "resnet101-63fe2227.pth" in str(err.value) and err.value.hint.option == "recipe"
    with pytest.raises(InvalidInputError, match="not a file"):
        train(proj, "cdul", {"backbone": "resnet101", "backbone_weights": str(tmp_path / "nope.pth")})
    with pytest.raises(InvalidInputError, match="only|is for the resnet101"):
        train(proj, "cdul", {"backbone": "clip", "backbone_weights": str(tmp_path / "x.pth")})
    with pytest.raises(InvalidInputError, match="backbone must be one of"):
        train(proj, "cdul", {"backbone": "vgg"})
    # our recipe's lr and batch are a fresh head's; a pretrained backbone gets the reproduction's unless given
    from labeler.methods import get_method

    cdul = get_method("cdul")
    clip = cdul.resolve(proj, cdul.params_from({"backbone": "clip", "device": "cpu"}))
    assert (clip["recipe"], clip["lr"], clip["batch_size"], clip["loss"]) == ("labeler", 1e-5, 8, "bce")
    given = cdul.resolve(proj, cdul.params_from({"backbone": "clip", "device": "cpu", "lr": 3e-4}))
    assert given["lr"] == 3e-4
    head = cdul.resolve(proj, cdul.params_from({"device": "cpu"}))
    assert (head["backbone"], head["lr"], head["batch_size"]) == ("head", 1e-2, 64)
    # a file that is not a ResNet-101 state dict is named when the run builds its network
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    from labeler.train.cdul_net import resnet101_backbone

    with pytest.raises(InvalidInputError, match="bad.pth"):
        resnet101_backbone(str(bad))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(InvalidInputError, match="junk.pth is not a readable"):
        resnet101_backbone(str(junk))
    # the hub cache's file is found by name
    hub = tmp_path / "hub-home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "resnet101-cd907fc2.pth").write_bytes(b"")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub-home"))
    from labeler.train.cdul_net import hub_resnet101, resnet101_weights

    assert hub_resnet101().endswith("resnet101-cd907fc2.pth")
    with pytest.raises(InvalidInputError, match="resnet101-cd907fc2.pth is not a readable"):
        resnet101_weights(None)  # found, and checked before the run: an empty file is refused
    # a file of the right names but a wrong shape is named with the tensor
    from torchvision.models import resnet101

    with torch.device("meta"):
        names = resnet101(weights=None).state_dict()
    shapes = {k: torch.zeros(v.shape) if k != "conv1.weight" else torch.zeros(1, 3, 7, 7) for k, v in names.items()}
    wrong = tmp_path / "wrong.pth"
    torch.save(shapes, wrong)
    with pytest.raises(InvalidInputError, match=r"wrong.pth does not fit .*conv1.weight \(1, 3, 7, 7\)"):
        train(proj, "cdul", {"backbone": "resnet101", "backbone_weights": str(wrong)})


def test_the_train_step_offers_the_backbones_and_a_space_reads_no_weights_path(small_project, tmp_path):
    import json

    from labeler.ui.steps import train as train_step
    from labeler.ui.steps.train_options import CHOICES, method_fields

    from .conftest import make_ctx

    assert CHOICES["backbone"] == ("head", "resnet101", "clip")
    names = {f.name for f in method_fields("cdul")}
    assert {"backbone", "backbone_weights"} <= names
    dst = tmp_path / "data" / "ml"
    shutil.copytree(small_project, dst, symlinks=True)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    options = json.dumps({"backbone": "resnet101", "backbone_weights": str(weights), "device": "cpu"})
    space = make_ctx(tmp_path / "data", local_mode=False)
    view = train_step.start(space, str(dst), "cdul", options)
    assert "reads no file outside the project" in view.status
    assert not [r for r in Project(dst).db.execute("select id from runs where kind = 'train'")]
    # locally the path is read: an empty file is not a ResNet-101 and the refusal names it, before any run starts
    local = make_ctx(tmp_path / "data", local_mode=True)
    view = train_step.start(local, str(dst), "cdul", options)
    assert "w.pth" in view.status and "not a readable ResNet-101" in view.status
    assert not [r for r in Project(dst).db.execute("select id from runs where kind = 'train'")]
