"""A CDUL run as a model file for ``apply``: export --format model, then label new image files with it.

The exported file names its encoder and thresholds; the loader computes the same features the cache holds
(tiny random models; 2×2 mosaics of generated images, as in tests/test_cdul_train.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from labeler.errors import InvalidInputError, ModelUnavailableError
from labeler.project import Project

from .test_cdul_train import CLASSES, mosaics


@pytest.fixture(scope="module")
def base_project(tmp_path_factory):
    from labeler.cli import main

    root = tmp_path_factory.mktemp("cdulapply")
    mosaics(root / "imgs", 24, seed=3)
    proj = root / "proj"
    assert main(["init", str(proj), "--classes", ",".join(CLASSES), "--multi-label"]) == 0
    assert main(["import", str(proj), str(root / "imgs"), "--quiet"]) == 0
    # fp32 features: auto may pick bf16 by a timing probe, off by more than the float16 tolerance the tests use
    args = ["features", str(proj), "--clip", "tiny-random", "--dino", "tiny-random", "--snippets", "--quiet"]
    args += ["--precision", "fp32"]
    assert main(args) == 0
    return proj


@pytest.fixture
def proj(base_project, tmp_path):
    dst = tmp_path / "proj"
    shutil.copytree(base_project, dst, symlinks=True)
    return Project(dst)


def _train(project: Project, **kw) -> dict:
    """Train CDUL (which relabels the project: the active run) and return that label run."""
    from labeler.labels import active_run
    from labeler.methods import get_method

    params = {"epochs": 3, "refine_warmup": 1, "refine_every": 2, "batch_size": 8, "device": "cpu", **kw}
    method = get_method("cdul")
    method.run(project, method.params_from(params))
    return active_run(project)


def _relabel(project: Project, run_id: int) -> dict[str, tuple[np.ndarray, list[str]]]:
    """path → (scores (C,), label set) of a label run."""
    from labeler.labels import read_predictions

    ids, probs, classes = read_predictions(project, run_id)
    rows = dict(project.db.execute("select image_id, labels from predictions where run_id = ?", [run_id]).fetchall())
    paths = {im["id"]: im["path"] for im in project.images()}
    return {paths[int(i)]: (p, [classes[c] for c in json.loads(rows[int(i)])]) for i, p in zip(ids, probs, strict=True)}


def test_exported_cdul_model_labels_new_files_as_the_project_run_did(proj, tmp_path, capsys):
    from labeler.cli import main
    from labeler.train.apply import apply_to_files

    proj.set_thresholds({"dog": 0.2})  # a person's threshold: the relabel run and the exported file use it
    labeled = _train(proj)
    out = tmp_path / "cdul.pt"
    assert main(["export", str(proj.root), "--format", "model", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote the cdul model" in text and "on CLIP tiny-random" in text
    data = torch.load(out, weights_only=True)
    assert data["format"] == "labeler.cdul-head" and data["classes"] == CLASSES
    enc = data["encoder"]
    assert enc["kind"] == "clip" and enc["model"] == "tiny-random" and enc["key"] == data["features"]
    assert data["thresholds"] == [0.5, 0.2, 0.5, 0.5]  # the person's threshold for dog, the run's for the others

    want = _relabel(proj, labeled["id"])
    paths = sorted(want)[:5]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    res = apply_to_files(out, [paths[0], str(bad), *paths[1:]], device="cpu", batch_size=2)
    assert res.paths == paths and res.multi_label and res.thresholds == [0.5, 0.2, 0.5, 0.5]
    assert [s["path"] for s in res.skipped] == [str(bad)] and res.skipped[0]["reason"]
    # the scores of the run that labeled the project (cached float16 features) within float16 tolerance
    np.testing.assert_allclose(res.probs, np.stack([want[p][0] for p in paths]), atol=2e-3)
    assert res.labels == [want[p][1] for p in paths]

    # the CLI: ;-joined sets by threshold plus their scores; --json gives every class's score
    assert main(["apply", str(out), paths[0], str(bad), paths[1], "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    lines = [ln.split("\t") for ln in captured.out.strip().splitlines()]
    assert [ln[0] for ln in lines] == paths[:2]
    for (_, labels, scores), p in zip(lines, paths, strict=False):
        assert labels.split(";") == want[p][1]
        got = [float(s) for s in scores.split(";")]
        np.testing.assert_allclose(got, [want[p][0][CLASSES.index(c)] for c in want[p][1]], atol=2e-3)
    assert f"skipped {bad}" in captured.err
    assert main(["apply", str(out), paths[0], str(bad), "--device", "cpu", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["multi_label"] is True and js["thresholds"]["dog"] == 0.2
    (row,) = js["predictions"]
    assert row["path"] == paths[0] and row["labels"] == want[paths[0]][1] and set(row["scores"]) == set(CLASSES)
    assert [s["path"] for s in js["skipped"]] == [str(bad)]


def test_apply_features_equal_the_cache_and_the_head_standardises(proj, tmp_path):
    """The loader's features are the feature cache's (same encoder, L2-normalised); the head reads them
    standardised with the file's mean/std: checked against a hand computation from the file's weights."""
    from labeler.export import export
    from labeler.features import feature_matrix
    from labeler.ingest import load_rgb
    from labeler.train.student import TrainedModel

    _train(proj, epochs=2)
    out = export(proj, "model", tmp_path / "m.pt")
    model = TrainedModel.load(out, "cpu")
    assert model.classes == CLASSES and model.multi_label and model.image_size > 0
    assert "state" not in model.info and model.info["encoder"]["kind"] == "clip"
    data = torch.load(out, weights_only=True)
    ids, cached = feature_matrix(proj, data["features"])
    paths = {im["id"]: im["path"] for im in proj.images()}
    x = torch.stack([model.transform(load_rgb(paths[i], model.min_side)) for i in ids[:6]])
    feats = model.features(x)
    np.testing.assert_allclose(feats, cached[:6], atol=2e-3)
    assert np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    # by hand: bce → sigmoid(W · (f − mean) / std + b)
    assert data["loss"] == "bce" and data["hidden"] == 0
    z = (feats - data["mean"].numpy()) / data["std"].numpy()
    logits = z @ data["state"]["0.weight"].numpy().T + data["state"]["0.bias"].numpy()
    np.testing.assert_allclose(model.predict_proba(x), 1 / (1 + np.exp(-logits)), rtol=1e-4, atol=1e-6)


def test_a_head_on_dino_features_with_the_kl_loss_applies_too(proj, tmp_path, capsys):
    from labeler.cli import main
    from labeler.train.apply import apply_model

    labeled = _train(proj, head_features="dino", loss="kl", epochs=2)
    out = tmp_path / "dino.pt"
    assert main(["export", str(proj.root), "--format", "model", "-o", str(out)]) == 0
    assert "on DINO tiny-random" in capsys.readouterr().out
    data = torch.load(out, weights_only=True)
    assert data["encoder"]["kind"] == "dino" and data["encoder"]["pretrained"] is None
    want = _relabel(proj, labeled["id"])
    paths = sorted(want)[:4]
    probs = apply_model(out, paths, device="cpu")
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)  # kl: softmax scores
    np.testing.assert_allclose(probs, np.stack([want[p][0] for p in paths]), atol=2e-3)


def test_run_file_applies_and_refusals(proj, tmp_path):
    from labeler.train.cdul import CDULModel
    from labeler.train.loop import BEST
    from labeler.train.runs import run_dir
    from labeler.train.student import TrainedModel

    labeled = _train(proj, epochs=1)
    best = run_dir(proj, labeled["params"]["train_run"]) / BEST
    model = TrainedModel.load(best, "cpu")  # the run's own file names its encoder: no export needed
    assert isinstance(model, CDULModel) and model.thresholds.tolist() == [0.5] * 4
    data = torch.load(best, weights_only=True)
    with pytest.raises(InvalidInputError, match="export the run's model"):
        CDULModel({k: v for k, v in data.items() if k != "encoder"}, "cpu")
    with pytest.raises(InvalidInputError, match="not the model it was trained on"):
        CDULModel({**data, "encoder": {**data["encoder"], "kind": "dino"}}, "cpu")  # tiny DINO: another dim
    # offline, weights that are not here fail fast, saying so
    real = {**data["encoder"], "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}
    with pytest.raises(ModelUnavailableError):
        CDULModel({**data, "encoder": real}, "cpu")


def test_the_train_step_offers_cdul_first_in_a_multi_label_project(proj, tmp_path):
    from labeler.ui.steps.train import method_choice, ready_methods

    assert "cdul" in ready_methods()
    multi = method_choice(proj, "nola")
    assert multi.choices[0][0] == "cdul" and multi.value == "cdul"
    assert "nola" in multi.info and "single-label" in multi.info
    single = Project.create(tmp_path / "single", ["a", "b"])
    kept = method_choice(single, "lafter")
    assert kept.value == "lafter" and [c[0] for c in kept.choices] == ready_methods()
    assert "cdul is for multi-label" in kept.info
    assert method_choice(single, "cdul").value == "nola"


def test_large_jpegs_decode_reduced_as_the_feature_cache_did(tmp_path):
    """A JPEG much larger than the encoder input is decoded at reduced size (PIL draft, ``min_side`` = 2 × the
    encoder's image size) by the feature cache; ``apply`` must decode it the same way, or the head sees other
    features than the ones it was trained and thresholded on."""
    from labeler.cli import main
    from labeler.export import export
    from labeler.features import feature_matrix
    from labeler.ingest import load_rgb
    from labeler.train.apply import apply_model, apply_to_files
    from labeler.train.student import TrainedModel

    from .synth import make_image

    mosaics(tmp_path / "imgs", 12, seed=5)
    big = tmp_path / "imgs" / "cat+ship"
    rng = np.random.default_rng(0)
    for i in range(6):  # 1000×800 photos: fine stripes + noise, so how they are downscaled shows in the pixels
        img = np.asarray(make_image(CLASSES[i % 4], i, seed=9, size=(1000, 800), classes=CLASSES), np.float32)
        stripes = 60 * np.sin(np.arange(1000) * (0.9 + 0.1 * i))[None, :, None]
        pixels = np.clip(img + stripes + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(big / f"big{i}.jpg", "JPEG", quality=92)
    root = tmp_path / "proj"
    assert main(["init", str(root), "--classes", ",".join(CLASSES), "--multi-label"]) == 0
    assert main(["import", str(root), str(tmp_path / "imgs"), "--quiet"]) == 0
    args = ["features", str(root), "--clip", "tiny-random", "--dino", "tiny-random", "--snippets", "--quiet"]
    args += ["--precision", "fp32"]  # as apply computes them (auto may pick bf16)
    assert main(args) == 0
    project = Project(root)
    _train(project, epochs=2)
    out = export(project, "model", tmp_path / "m.pt")
    model = TrainedModel.load(out, "cpu")
    paths = sorted(str(p) for p in big.glob("big*.jpg"))
    assert 1000 > load_rgb(paths[0], model.min_side).size[0] >= model.min_side  # draft mode engages

    res = apply_to_files(out, paths, device="cpu", batch_size=4)
    assert res.paths == paths and not res.skipped
    ids, cached = feature_matrix(project, torch.load(out, weights_only=True)["features"])
    by_path = {im["path"]: im["id"] for im in project.images()}
    row = {int(i): k for k, i in enumerate(ids)}
    want = model.head.predict(cached[[row[by_path[p]] for p in paths]].astype(np.float32))
    # same pixels: only the cache's float16 rounding differs (~3e-4); a full-size decode is off by ~5e-3
    np.testing.assert_allclose(res.probs, want, atol=1e-3)
    np.testing.assert_allclose(apply_model(out, paths, device="cpu", batch_size=4), want, atol=1e-3)
