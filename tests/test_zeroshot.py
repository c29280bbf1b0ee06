"""Zero-shot on synthetic embeddings with a planted answer, and the method's wiring to a project."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labeler.errors import InvalidInputError, NotReadyError
from labeler.methods import get_method, list_methods
from labeler.methods.zeroshot import ZeroShot, multilabel_sets, text_classifier, zero_shot_probs


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _planted(C=6, D=64, T=5, N=600, noise=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centers = _unit(rng.normal(size=(C, D)))
    texts = [_unit(centers[c] + 0.3 * rng.normal(size=(T, D)) / np.sqrt(D) * 4) for c in range(C)]
    y = rng.integers(0, C, N)
    feats = centers[y] + noise * rng.normal(size=(N, D)) / np.sqrt(D)
    return centers, texts, feats, y


def test_planted_classes_are_recovered():
    _, texts, feats, y = _planted()
    probs = zero_shot_probs(feats, text_classifier(texts), logit_scale=100.0)
    assert probs.shape == (len(y), 6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert (probs.argmax(1) == y).mean() > 0.95


def test_each_text_is_normalised_before_averaging():
    """One long outlier text pointing at another class must not drag the class mean there."""
    centers, texts, feats, y = _planted(C=4, seed=1)
    texts = [t.copy() for t in texts]
    texts[0] = np.vstack([texts[0], 80.0 * centers[1]])  # raw CLIP embeddings are not unit length
    good = zero_shot_probs(feats, text_classifier(texts)).argmax(1)
    assert (good == y).mean() > 0.95
    # The broken variant (mean of raw embeddings) turns class 0's weights into class 1's.
    broken = _unit(np.stack([t.mean(0) for t in texts]))
    bad = zero_shot_probs(feats, broken).argmax(1)
    assert (bad == y).mean() < 0.8
    assert (bad[y == 1] == 0).mean() > 0.2  # class 1's images now split between the two


def test_probs_ignore_feature_scale_and_temperature_sharpens():
    _, texts, feats, _ = _planted(seed=2)
    W = text_classifier(texts)
    np.testing.assert_allclose(zero_shot_probs(feats, W), zero_shot_probs(7.0 * feats, W), rtol=1e-4, atol=1e-6)
    assert zero_shot_probs(feats, W, 100).max(1).mean() > zero_shot_probs(feats, W, 10).max(1).mean()


def test_text_classifier_validates_inputs():
    with pytest.raises(InvalidInputError, match="class 1"):
        text_classifier([np.ones((2, 4)), np.ones((2, 5))])
    with pytest.raises(InvalidInputError, match="NaN"):
        text_classifier([np.full((1, 4), np.nan)])
    with pytest.raises(InvalidInputError, match="T >= 1"):
        text_classifier([np.zeros((0, 4))])
    with pytest.raises(InvalidInputError):
        zero_shot_probs(np.ones((3, 4)), np.ones((2, 5)))


def test_multilabel_sets_keep_top1_and_close_runners_up():
    probs = np.array([[0.5, 0.4, 0.1], [0.9, 0.05, 0.05], [0.34, 0.33, 0.33]])
    assert multilabel_sets(probs, 0.5) == [[0, 1], [0], [0, 1, 2]]
    assert multilabel_sets(probs, 1.0) == [[0], [0], [0]]
    with pytest.raises(InvalidInputError):
        multilabel_sets(probs, 0.0)


class _FakeClip:
    """Stands in for a CLIP model: text → planted embedding of the class named in it."""

    logit_scale = 100.0

    def __init__(self, class_emb: dict[str, np.ndarray]):
        self.class_emb = class_emb

    def encode_texts(self, texts):
        import torch

        out = []
        for t in texts:
            name = next(c for c in sorted(self.class_emb, key=len, reverse=True) if c in t)
            out.append(self.class_emb[name])
        return torch.tensor(np.stack(out), dtype=torch.float32)


def _project_with_features(project, feats):
    with project.db.conn:
        project.db["images"].insert_all(
            {"sha256": f"{i:064x}", "path": f"/x/{i}.png", "rel_path": f"{i}.png", "root": "/x", "status": "ok"}
            for i in range(len(feats))
        )
    sid = project.features.ensure_set("clip:fake:none", "clip", feats.shape[1], model="fake", pretrained="")
    project.features.append(sid, [f"{i:064x}" for i in range(len(feats))], feats)


def test_method_run_writes_predictions_and_becomes_active(project, monkeypatch):
    from labeler import labels
    from labeler.methods import zeroshot

    centers, _, feats, y = _planted(C=3, N=90, seed=3)
    _project_with_features(project, _unit(feats))
    monkeypatch.setattr(
        zeroshot, "_clip_for_set", lambda fset, device: _FakeClip(dict(zip(project.classes, centers, strict=True)))
    )
    result = get_method("zeroshot").run(project, ZeroShot.params_from({"templates": "photo"}))
    assert result.metrics["n"] == 90
    ids, probs, classes = labels.read_predictions(project, result.run_id)
    assert classes == ["cat", "dog", "car"]
    order = np.argsort(ids)
    assert (probs[order].argmax(1) == y).mean() > 0.95
    assert labels.active_run(project)["id"] == result.run_id
    run = project.db["runs"].get(result.run_id)
    assert run["status"] == "done" and json.loads(run["params"])["descriptions"] == "both"


def test_method_needs_features_first(project):
    with pytest.raises(NotReadyError, match="features"):
        get_method("zeroshot").run(project)


def test_registry_lists_every_method_available_and_a_planned_one_as_unavailable():
    from labeler.registry import Registry

    names = {m["name"]: m for m in list_methods()}
    assert all(m["available"] for m in names.values())  # nothing the product names is left unbuilt
    assert {"zeroshot", "nola", "lafter", "latteclip", "cdul", "cdul-init"} <= set(names)
    methods = Registry("method")  # the mechanism a future method on the roadmap would use
    methods.register("zeroshot", ZeroShot)
    methods.plan("next", "the next method is not implemented yet")
    listed = {e.name: e for e in methods.list()}
    assert listed["zeroshot"].available and not listed["next"].available
    with pytest.raises(InvalidInputError, match="not implemented yet; available now: zeroshot"):
        methods.get("next")
    with pytest.raises(InvalidInputError, match="no option"):
        ZeroShot.params_from({"bogus": 1})


def test_class_text_embeddings_are_cached_per_feature_set_and_texts(project, monkeypatch):
    from labeler.methods import zeroshot

    centers, _, feats, y = _planted(C=3, N=60, seed=4)
    _project_with_features(project, _unit(feats))
    loads = []

    def fake(fset, device):
        loads.append(fset["key"])
        return _FakeClip(dict(zip(project.classes, centers, strict=True)))

    monkeypatch.setattr(zeroshot, "_clip_for_set", fake)
    method = get_method("zeroshot")
    first = method.run(project, ZeroShot.params_from({"templates": "photo"}))
    second = method.run(project, ZeroShot.params_from({"templates": "photo"}))
    assert loads == ["clip:fake:none"]  # the second run read the cached embeddings: no model loaded
    assert first.metrics["class_counts"] == second.metrics["class_counts"]
    method.run(project, ZeroShot.params_from({"templates": "simple"}))  # other texts: encoded (and cached) anew
    assert loads == ["clip:fake:none", "clip:fake:none"]
    assert len(list((project.root / zeroshot.TEXT_CACHE_DIR).glob("*.npz"))) == 2


def test_probs_match_the_torch_reference():
    torch = pytest.importorskip("torch")
    _, texts, feats, _ = _planted(N=50)
    w = text_classifier(texts)
    f16 = feats.astype(np.float16)
    ref = torch.softmax(
        37.0 * torch.nn.functional.normalize(torch.as_tensor(f16).float(), dim=1) @ torch.as_tensor(w).T, 1
    )
    np.testing.assert_allclose(zero_shot_probs(f16, w, 37.0), ref.numpy(), atol=1e-5)


def test_template_sets_are_open_clips():
    pytest.importorskip("open_clip")
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    from labeler.prompts import TEMPLATE_SETS

    for name, theirs in (("openai", OPENAI_IMAGENET_TEMPLATES), ("simple", SIMPLE_IMAGENET_TEMPLATES)):
        assert [t("red fox") for t in TEMPLATE_SETS[name]] == [t("red fox") for t in theirs]


def test_zero_shot_from_cached_text_embeddings_imports_no_model_code(tmp_path):
    """``import labeler.methods.zeroshot``, and a ``label`` whose class texts were encoded before, load neither
    open_clip nor torch (seconds of start-up for a command that scores cached features)."""
    import os
    import subprocess
    import sys

    from .conftest import REPO, class_folders, tiny_project

    root = tiny_project(tmp_path / "p", class_folders(tmp_path / "imgs", 2, ["cat", "dog"]), ["cat", "dog"], True)
    code = (
        "import json, sys\n"
        "import labeler.methods.zeroshot\n"
        "seen = [m for m in ('open_clip', 'torch') if m in sys.modules]\n"
        "from labeler.cli import main\n"
        f"assert main(['label', {str(root)!r}, '--quiet']) == 0\n"
        "print('MODULES', json.dumps([seen, [m for m in ('open_clip', 'torch', 'transformers', 'torchvision') "
        "if m in sys.modules]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES"))
    assert json.loads(line.split(" ", 1)[1]) == [[], []]


def _reference_probs(f, w, scale):
    """The formula as first written: normalise the features, then logits, then softmax (float64)."""
    f = np.asarray(f, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    logits = scale * f @ np.asarray(w, dtype=np.float64).T
    logits -= logits.max(1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("torch_loaded", [True, False])
def test_chunked_float16_scores_equal_the_formula(tmp_path, monkeypatch, torch_loaded):
    """Scored in chunks from a float16 memory map (normalisation applied to the logits, the float16 rows
    converted block by block, through torch or numpy): the probabilities of the plain formula, zero rows too."""
    import sys

    import labeler.methods.zeroshot as zs

    if torch_loaded:
        import torch  # noqa: F401

        monkeypatch.setattr(zs, "_score_numpy", lambda *a: pytest.fail("numpy path with torch loaded"))
    else:
        monkeypatch.delitem(sys.modules, "torch", raising=False)
        monkeypatch.setattr(zs, "_score_torch", lambda *a: pytest.fail("torch path without torch"))
    _, texts, feats, _ = _planted(C=10, D=64, N=1003, seed=5)
    feats[7] = 0.0
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=feats.shape)
    mm[:] = 3.0 * feats
    W = text_classifier(texts)
    want = _reference_probs(np.asarray(mm, dtype=np.float32), W, 100.0)
    for chunk in (1, 100, 8192):
        got = zero_shot_probs(mm, W, 100.0, chunk=chunk)
        assert got.dtype == np.float32 and got.shape == (1003, 10)
        np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(zero_shot_probs(feats, W, 30.0, chunk=64), _reference_probs(feats, W, 30.0), atol=2e-5)
    with pytest.raises(InvalidInputError, match="chunk"):
        zero_shot_probs(feats, W, chunk=0)
