"""CDUL end to end with tiny models on 2×2 mosaics of generated images (labels = the set of their classes):
snippet features, ``cdul-init``, ``train --method cdul`` with refinement, relabel, kill and resume."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labeler.errors import InvalidInputError, JobCancelled, ModelUnavailableError, NotReadyError
from labeler.jobs import get_run, list_runs, request_cancel
from labeler.project import Project

from .synth import make_image

CLASSES = ["cat", "dog", "ship", "truck"]


def mosaics(dst: Path, n: int, classes=CLASSES, seed: int = 0, cell: int = 32) -> dict[str, list[str]]:
    """``n`` 2×2 mosaics of generated class images (1–3 classes each) as ``dst/<a+b>/NNNN.png``; rel path → set."""
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n):
        k = int(rng.integers(1, 4))
        chosen = list(rng.choice(len(classes), k, replace=False))
        cells = [chosen[j % k] for j in range(4)]
        rng.shuffle(cells)
        img = Image.new("RGB", (2 * cell, 2 * cell))
        for q, c in enumerate(cells):
            tile = make_image(classes[c], 4 * i + q, seed=seed, size=(cell, cell), classes=list(classes))
            img.paste(tile, ((q % 2) * cell, (q // 2) * cell))
        names = sorted({classes[c] for c in cells})
        folder = dst / "+".join(names)
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{i:04d}.png")
        truth[f"{'+'.join(names)}/{i:04d}.png"] = names
    return truth


def _set_truth(project: Project) -> None:
    """The mosaics' label sets into ``ground_truth`` (what the multi-label import will do)."""
    with project.db.conn:
        for image_id, folder in project.db.execute("select id, folder_label from images").fetchall():
            project.db.execute(
                "insert or replace into ground_truth (image_id, labels, source, created_at) values (?, ?, ?, ?)",
                [image_id, json.dumps(folder.split("+")), "folder", time.time()],
            )


@pytest.fixture(scope="module")
def base_project(tmp_path_factory):
    from labeler.cli import main

    root = tmp_path_factory.mktemp("cdul")
    mosaics(root / "imgs", 40)
    proj = root / "proj"
    assert main(["init", str(proj), "--classes", ",".join(CLASSES), "--multi-label"]) == 0
    assert main(["import", str(proj), str(root / "imgs"), "--quiet"]) == 0
    args = ["features", str(proj), "--clip", "tiny-random", "--dino", "tiny-random", "--snippets", "--quiet"]
    assert main(args) == 0
    _set_truth(Project(proj))
    return proj


@pytest.fixture
def proj(base_project, tmp_path):
    dst = tmp_path / "proj"
    shutil.copytree(base_project, dst, symlinks=True)
    return Project(dst)


def _params(**kw):
    base = {"epochs": 4, "refine_warmup": 1, "refine_every": 2, "batch_size": 8, "device": "cpu", "holdout": 0.2}
    return {**base, **kw}


def test_cdul_init_writes_the_aggregated_pseudo_labels_as_a_multi_label_run(proj, capsys):
    from labeler.cli import main
    from labeler.features import feature_matrix, snippet_features, snippet_key
    from labeler.labels import active_run, read_predictions
    from labeler.methods.cdul import aggregate, global_scores, snippet_scores
    from labeler.methods.zeroshot import _read_text_cache, text_cache_path, text_classifier

    assert main(["label", str(proj.root), "--method", "cdul-init", "--label-threshold", "0.3", "--quiet"]) == 0
    assert "pseudo-labels: global: mAP" in capsys.readouterr().out
    run = active_run(proj)
    assert run["method"] == "cdul-init" and run["params"]["multi_label"] is True
    m = run["metrics"]
    assert set(m["pseudo_labels"]) == {"global", "aggregated"}
    assert m["pseudo_labels"]["aggregated"]["map_n"] == 40 and m["pseudo_labels"]["global"]["map"] is not None
    assert "10 forwards per image" in m["cost"]
    # the stored scores are exactly the aggregation of the cached features' scores
    ids, probs, classes = read_predictions(proj, run["id"])
    key = proj.features.latest("clip")["key"]
    g_ids, g = feature_matrix(proj, key)
    s_ids, s = snippet_features(proj, snippet_key(key))
    assert list(ids) == g_ids == s_ids
    fset = proj.features.get_set(key)
    flat = [t for c in classes for t in _class_texts(proj, c)]
    emb, scale = _read_text_cache(text_cache_path(proj, fset, flat), len(flat))
    per = np.split(emb, np.cumsum([len(_class_texts(proj, c)) for c in classes])[:-1])
    w = text_classifier(per)
    want = aggregate(global_scores(g, w, scale), snippet_scores(s, w, scale))
    np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-6)
    rows = proj.db.execute("select labels from predictions where run_id = ? order by image_id", [run["id"]])
    sets = [json.loads(r[0]) for r in rows]
    for row, got in zip(want, sets, strict=True):
        expect = np.flatnonzero(row >= 0.3).tolist() or [int(row.argmax())]
        assert got == expect


def _class_texts(project, name):
    from labeler.describe import class_texts_report
    from labeler.prompts import DEFAULT_TEMPLATES

    texts, _ = class_texts_report(project, "both", DEFAULT_TEMPLATES, [name])
    return texts[0]


def test_per_class_thresholds_a_person_set_decide_the_sets(proj):
    from labeler.methods import get_method

    proj.set_thresholds({"cat": 0.0})
    res = get_method("cdul-init").run(proj)
    assert res.metrics["class_counts"]["cat"] == 40  # threshold 0: every image has it
    assert res.metrics["thresholds"]["cat"] == 0.0 and res.metrics["thresholds"]["dog"] == 0.5


def test_cdul_init_refusals(proj, tmp_path):
    from labeler.methods import get_method

    single = Project.create(tmp_path / "single", ["a", "b"])
    with pytest.raises(InvalidInputError, match="multi-label"):
        get_method("cdul-init").run(single)
    with pytest.raises(NotReadyError, match="2×2 snippet features") as err:
        get_method("cdul-init").run(proj, get_method("cdul-init").params_from({"grid": 2}))
    assert err.value.hint.option == "snippets"
    with pytest.raises(InvalidInputError, match="lam"):
        get_method("cdul-init").run(proj, get_method("cdul-init").params_from({"lam": 2.0}))


def _state(project, run_id):
    from labeler.train.loop import CHECKPOINT, load
    from labeler.train.runner import run_dir

    return load(run_dir(project, run_id) / CHECKPOINT)


def test_train_refines_pseudo_labels_persists_them_and_labels_multi_label(proj):
    from labeler.labels import active_run, set_human_labels
    from labeler.methods import get_method
    from labeler.train.loop import SETUP, load
    from labeler.train.runner import run_dir

    human = proj.db.execute("select id from images order by id limit 3").fetchall()
    set_human_labels(proj, [human[0][0]], ["ship", "truck"])
    set_human_labels(proj, [human[1][0]], [])  # "none of the classes": an all-zero fixed target under bce
    method = get_method("cdul")
    result = method.run(proj, method.params_from(_params()))
    res = get_run(proj, result.metrics["train_run_id"])
    res = type("R", (), {"run_id": res["id"]})
    run = get_run(proj, res.run_id)
    folder = run_dir(proj, res.run_id)
    setup = load(folder / SETUP)
    ckpt = _state(proj, res.run_id)
    start, end = setup["targets"], ckpt["trainable"]["cdul.pseudo_labels"]
    train_rows = setup["rows"]["train"]
    others = np.setdiff1d(np.arange(len(start)), train_rows.numpy())
    fixed = setup["fixed"].numpy()
    assert fixed.sum() == 2 and setup["report"]["human_none_skipped"] == 0
    r, z = (int(k) for k in np.flatnonzero(fixed))
    np.testing.assert_array_equal(start[r].numpy(), [0, 0, 1, 1])  # the person's set replaced the pseudo-label
    np.testing.assert_array_equal(start[z].numpy(), [0, 0, 0, 0])  # "none": a negative for every class
    moved = (end - start).abs().sum(1).numpy()
    assert moved[r] == 0 and moved[z] == 0  # ... and are never refined
    assert (moved[np.setdiff1d(train_rows.numpy(), [r, z])] > 0).all()  # every other training image was refined
    assert (moved[others] == 0).all()  # held-out images are never trained on, so never refined
    assert int(ckpt["trainable"]["cdul.epochs_seen"]) == 4
    saved = np.load(folder / "pseudo_labels.npz")
    assert int(saved["epoch"]) == 4 and np.allclose(saved["labels"], end.numpy())
    q = run["metrics"]["pseudo_labels"]
    assert set(q) == {"global", "aggregated", "refined"} and q["refined"]["map"] is not None
    assert run["metrics"]["refined_epoch"] == 4
    # the relabel run: multi-label sets from the trained head
    labeled = active_run(proj)
    assert labeled["method"] == "cdul" and labeled["params"]["multi_label"] is True
    assert labeled["params"]["train_run"] == res.run_id
    assert labeled["id"] == result.run_id and labeled["metrics"]["classifier"]["map"] is not None
    sets = proj.db.execute("select labels from predictions where run_id = ?", [labeled["id"]]).fetchall()
    assert len(sets) == 40 and all(json.loads(s[0]) for s in sets)


def test_refinement_only_in_the_epochs_of_the_schedule(proj, monkeypatch):
    import labeler.methods.cdul as cdul
    from labeler.train.runner import train

    seen = []
    real = cdul.refine

    def spy(*a, **k):
        seen.append(k.get("loss"))
        return real(*a, **k)

    monkeypatch.setattr(cdul, "refine", spy)
    calls = {}
    from labeler.train import cdul as task_mod

    original = task_mod.CDULHeadTask.batches

    def batches(self, generator):
        before = len(seen)
        yield from original(self, generator)
        calls[self.epoch + 1] = len(seen) - before

    monkeypatch.setattr(task_mod.CDULHeadTask, "batches", batches)
    from labeler.labels import set_human_labels

    none = proj.db.execute("select min(id) from images").fetchone()[0]
    set_human_labels(proj, [none], [])  # kl cannot express an all-zero row: it keeps its pseudo-label
    res = train(proj, "cdul", _params(epochs=6, refine_warmup=2, refine_every=2, loss="kl"))
    assert get_run(proj, res.run_id)["metrics"]["setup"]["human_none_skipped"] == 1
    steps = max(calls.values())
    assert steps > 0 and set(seen) == {"kl"}
    assert calls == {1: 0, 2: 0, 3: 0, 4: steps, 5: 0, 6: steps}  # (e+1) > 2 and (e+1) % 2 == 0


def test_cancel_then_resume_ends_where_an_uninterrupted_run_ends(proj, base_project, tmp_path):
    from labeler.train.runner import train

    def cancel_after_second_epoch(done, total, message):
        if message.startswith("epoch 2/4 done"):
            request_cancel(proj, list_runs(proj, kind="train", status="running")[0]["id"])

    with pytest.raises(JobCancelled):
        train(proj, "cdul", _params(), on_progress=cancel_after_second_epoch)
    run = list_runs(proj, kind="train")[0]
    assert run["status"] == "cancelled" and _state(proj, run["id"])["epoch"] == 2
    res = train(proj, "cdul", _params())
    assert res.run_id == run["id"] and res.resumed and res.metrics["resumed_from_epoch"] == 2

    other = tmp_path / "other"
    shutil.copytree(base_project, other, symlinks=True)
    straight = train(Project(other), "cdul", _params())
    a, b = _state(proj, res.run_id)["trainable"], _state(Project(other), straight.run_id)["trainable"]
    assert a.keys() == b.keys() and "cdul.pseudo_labels" in a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_audit_images_stay_out_and_refusals(proj, tmp_path):
    from labeler.audit import draw_sample, sampled_ids
    from labeler.train.loop import SETUP, load
    from labeler.train.runner import run_dir, train

    draw_sample(proj, 5)
    audited = sampled_ids(proj)
    res = train(proj, "cdul", _params(epochs=1))
    ids = set(load(run_dir(proj, res.run_id) / SETUP)["image_ids"].tolist())
    assert len(ids) == 35 and not ids & audited

    with pytest.raises(ModelUnavailableError, match="ResNet-101") as err:
        train(proj, "cdul", {"recipe": "paper", "device": "cpu"})
    assert err.value.hint.option == "recipe" and err.value.hint.value == "labeler"
    with pytest.raises(InvalidInputError, match="multi-label"):
        train(Project.create(tmp_path / "single", ["a", "b"]), "cdul")
    with pytest.raises(InvalidInputError, match="loss"):
        train(proj, "cdul", {"loss": "mse"})
    with pytest.raises(InvalidInputError, match="training methods: .*cdul") as err:
        train(proj, "cdul-init")
    assert "nola" in str(err.value) and "cdul-init" not in str(err.value).split("training methods")[1]


def test_cli_train_cdul_and_relabel_with_the_run(proj, capsys):
    from labeler.cli import main
    from labeler.labels import active_run

    args = ["train", str(proj.root), "--method", "cdul", "--epochs", "2", "--loss", "kl", "--device", "cpu"]
    assert main([*args, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train run" in out and "(cdul, recipe labeler)" in out
    assert "pseudo-labels: global: mAP" in out and "aggregated: mAP" in out
    train_run = list_runs(proj, kind="train")[0]
    assert train_run["params"]["loss"] == "kl" and train_run["params"]["recipe"] == "labeler"
    assert main(["label", str(proj.root), "--run", str(train_run["id"]), "--quiet"]) == 0
    run = active_run(proj)
    assert run["method"] == "cdul" and run["params"]["multi_label"] is True


def test_the_app_runs_cdul_in_the_pseudo_labels_step_and_offers_cdul_in_the_train_step(base_project, app_ctx):
    import gradio as gr

    from labeler.ui.steps import pseudolabels
    from labeler.ui.steps import train as train_step

    from .conftest import wait_until

    dst = app_ctx.data_dir / "cdul"
    shutil.copytree(base_project, dst, symlinks=True)
    key = str(dst)
    note = pseudolabels.start_cdul(app_ctx, key, 3, "raw", 0.2, "cpu")
    assert "Running CDUL" in note and "10 forwards per image" in note and "cached for 40 of 40" in note

    def done():
        runs = [r for r in list_runs(Project(dst), kind="label") if r["method"] == "cdul-init"]
        return runs and runs[0]["status"] in ("done", "failed") and runs[0]

    run = wait_until(done, "the CDUL label run", timeout=120)
    assert run["status"] == "done" and run["params"]["temperature"] == "raw" and run["params"]["threshold"] == 0.2
    single = Project.create(app_ctx.data_dir / "single", ["a", "b"])
    with pytest.raises(gr.Error, match="multi-label"):
        pseudolabels.start_cdul(app_ctx, str(single.root), 3, "clip", 0.0, "cpu")
    names = [m["name"] for m in train_step._trainable()]
    assert "cdul" in names and "cdul-init" not in names
