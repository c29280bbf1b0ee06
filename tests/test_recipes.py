"""Recipes: ``--recipe paper`` (the official NoLA / LaFTer settings) vs ``--recipe labeler`` (ours).

The recipe objects are the single source: docs/methods.md must carry the tables rendered from them, and
the recipe must change what a run does (strong view, schedule, text head, prompt init, DINO v1 teacher).
Tiny random models and 20 generated images throughout; the DINO v1 teacher is a tiny ``ViTModel``.
"""

from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from labeler.errors import InvalidInputError, ModelUnavailableError
from labeler.project import Project

from .conftest import REPO, class_folders, tiny_project

CLASSES = ["cat", "dog", "ship", "truck"]
TINY_VIT = "tiny-random-vit-test"


@pytest.fixture(scope="module")
def base_project(tmp_path_factory):

    root = tmp_path_factory.mktemp("recipes")
    src = class_folders(root / "imgs", per_class=5, classes=CLASSES)
    return tiny_project(root / "proj", src, CLASSES)


@pytest.fixture
def proj(base_project, tmp_path):
    dst = tmp_path / "proj"
    shutil.copytree(base_project, dst, symlinks=True)
    p = Project(dst)
    yield p
    p.close()


def _tiny_vit_model():
    """A DINO v1-shaped ``ViTModel`` (with the pooler DINO never trained) on 32×32 inputs, seeded."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        image_size=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ViTModel(config).eval()


@pytest.fixture
def tiny_vit():
    """Register a tiny DINO v1 (ViTModel) as a DINO model for the test."""
    from labeler.models.dino import DinoModel, build_preprocess
    from labeler.models.registry import models_of

    def build(_pretrained, device, precision):
        model = _tiny_vit_model().to(device)
        cfg = {"size": {"height": 32, "width": 32}, "do_center_crop": False, "resample": 2}
        preprocess, side = build_preprocess(cfg, 32)
        return DinoModel(
            key=f"dino:{TINY_VIT}",
            kind="dino",
            name=TINY_VIT,
            pretrained=None,
            dim=32,
            device=device,
            precision=precision,
            image_size=side,
            preprocess=preprocess,
            model=model,
            processor_config=cfg,
        )

    models_of("dino").register(TINY_VIT, build)
    yield TINY_VIT
    models_of("dino").unregister(TINY_VIT)


# --- the recipe objects ------------------------------------------------------------------------------------
def test_recipes_are_frozen_and_every_difference_says_where_and_why():
    from labeler.train.recipes import FIELDS, RECIPES, get_recipe

    assert set(RECIPES) == {(m, n) for m in ("nola", "lafter", "latteclip", "cdul") for n in ("paper", "labeler")}
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECIPES[("nola", "paper")].lr = 1.0
    for method in ("nola", "lafter", "latteclip", "cdul"):
        paper, ours = get_recipe(method, "paper"), get_recipe(method, "labeler")
        for name in FIELDS:
            a, b = getattr(paper, name), getattr(ours, name)
            if a is None and b is None:
                continue
            assert paper.sources.get(name), f"{method}: no official source for {name}"
            if a != b:
                assert ours.why.get(name), f"{method}: ours differs in {name} without a reason"
    assert get_recipe("nola", None).name == "labeler"
    with pytest.raises(InvalidInputError, match="recipe 'fast' is not one of"):
        get_recipe("nola", "fast")


def test_paper_recipes_hold_the_official_settings():
    from labeler.train.recipes import get_recipe

    nola, lafter = get_recipe("nola", "paper"), get_recipe("lafter", "paper")
    assert (nola.schedule, nola.batch_size, nola.epochs, nola.tokens, nola.lr) == ("constant", 512, 50, 16, 0.004)
    assert (nola.teacher_backbone, nola.teacher_view, nola.prompt_init) == ("facebook/dino-vitb16", "clip", "patch16")
    assert (lafter.schedule, lafter.batch_size, lafter.epochs, lafter.tokens) == ("constant", 50, 50, 50)
    assert (lafter.lr, lafter.text_lr, lafter.text_steps, lafter.prompt_init) == (5e-4, 5e-4, 400, "patch16")
    assert (nola.strong_view, lafter.strong_view) == ("nola", "lafter")


def test_docs_methods_md_carries_the_tables_rendered_from_the_recipes():
    from labeler.train.recipes import recipe_table

    doc = (REPO / "docs" / "methods.md").read_text(encoding="utf-8")
    for method in ("nola", "lafter", "latteclip", "cdul"):
        table = recipe_table(method)
        assert table in doc, f"docs/methods.md is out of date for {method}; paste:\n{table}"


# --- what the recipe changes ---------------------------------------------------------------------------------
CFG = {"size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "interpolation": "bicubic"}


def _types(transform) -> list[type]:
    out = []
    for t in transform.transforms:
        out.append(type(t))
        if isinstance(t, T.RandomApply):
            out += [type(x) for x in t.transforms]
    return out


def test_strong_views_follow_each_official_code():
    from labeler.train.views import strong_transform

    lafter = strong_transform(CFG, "lafter")
    grayscale = [t for t in lafter.transforms if isinstance(t, T.RandomGrayscale)]
    assert len(grayscale) == 1 and grayscale[0].p == pytest.approx(0.2)
    assert T.RandomPerspective not in _types(lafter)

    nola = strong_transform(CFG, "nola")
    always_on = [t for t in nola.transforms if isinstance(t, T.ColorJitter)]  # outside any RandomApply
    assert len(always_on) == 1
    assert always_on[0].brightness == (0.6, 1.4) and always_on[0].hue == (-0.1, 0.1)
    assert _types(nola).count(T.ColorJitter) == 2 and T.RandomPerspective in _types(nola)
    assert T.RandomGrayscale not in _types(nola)

    ours = strong_transform(CFG, "labeler")
    assert _types(ours).count(T.ColorJitter) == 1 and T.RandomPerspective in _types(ours)
    assert T.RandomGrayscale not in _types(ours)
    with pytest.raises(InvalidInputError, match="strong view 'weak' is not one of"):
        strong_transform(CFG, "weak")


def test_the_paper_schedule_keeps_the_lr_constant_and_ours_anneals_it():
    from labeler.train.loop import make_scheduler

    def lrs(schedule):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.004)
        sched = make_scheduler(opt, schedule, 10)
        out = []
        for _ in range(10):
            opt.step()
            sched.step()
            out.append(opt.param_groups[0]["lr"])
        return out

    assert lrs("constant") == [0.004] * 10
    cosine = lrs("cosine")
    assert cosine[0] < 0.004 and cosine[-1] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InvalidInputError, match="schedule must be one of"):
        lrs("linear")


def test_prompt_init_bound_official_16_vs_true_patch_on_a_b32_sized_tower():
    import open_clip

    from labeler.train.prompt import PromptedCLIP, prompt_init_bound

    assert prompt_init_bound("patch16", (32, 32), 768) == pytest.approx(0.0625)
    assert prompt_init_bound("patch", (32, 32), 768) == pytest.approx(0.0395, abs=1e-4)
    assert prompt_init_bound("patch", (16, 16), 768) == prompt_init_bound("patch16", (16, 16), 768)
    # A ViT-B/32-shaped tower (patch 32, width 768) cut to one narrow block on 64×64 inputs.
    visual = open_clip.transformer.VisionTransformer(
        image_size=64, patch_size=32, width=768, layers=1, heads=12, mlp_ratio=0.25, output_dim=16
    )
    for rule, bound in (("patch16", 0.0625), ("patch", 0.0395)):
        student = PromptedCLIP(visual, 3, 64, seed=0, prompt_init=rule)
        top = float(student.prompts.detach().abs().max())
        assert student.init_bound == pytest.approx(bound, abs=1e-4)
        assert 0.99 * bound < top <= student.init_bound, (rule, top)
    with pytest.raises(InvalidInputError, match="prompt_init must be one of"):
        prompt_init_bound("patch8", (32, 32), 768)


def test_explicit_options_override_the_recipe_and_labeler_is_the_default(proj):
    from labeler.methods import get_method

    lafter = get_method("lafter")
    ours = lafter.resolve(proj, lafter.params_from({"device": "cpu"}))
    assert ours["recipe"] == "labeler"
    assert (ours["schedule"], ours["batch_size"], ours["epochs"], ours["strong_view"]) == ("cosine", 16, 3, "labeler")
    assert (ours["text_lr"], ours["text_steps"], ours["prompt_init"], ours["tokens"]) == (1e-3, 300, "patch", 50)
    paper = lafter.resolve(proj, lafter.params_from({"device": "cpu", "recipe": "paper", "batch_size": 8}))
    assert (paper["recipe"], paper["batch_size"], paper["epochs"], paper["schedule"]) == ("paper", 8, 50, "constant")
    assert (paper["text_lr"], paper["text_steps"], paper["strong_view"], paper["prompt_init"]) == (
        5e-4,
        400,
        "lafter",
        "patch16",
    )
    mixed = lafter.resolve(proj, lafter.params_from({"device": "cpu", "recipe": "paper", "schedule": "cosine"}))
    assert mixed["schedule"] == "cosine" and mixed["strong_view"] == "lafter"
    with pytest.raises(InvalidInputError, match="recipe 'official' is not one of"):
        lafter.resolve(proj, lafter.params_from({"device": "cpu", "recipe": "official"}))


def test_nola_paper_teacher_is_dino_v1_and_fails_fast_offline(proj):
    from huggingface_hub import try_to_load_from_cache

    from labeler.methods import get_method

    if isinstance(try_to_load_from_cache("facebook/dino-vitb16", "config.json"), str):
        pytest.skip("facebook/dino-vitb16 is in this machine's Hugging Face cache")
    nola = get_method("nola")
    # fails before any hub call (HF_HUB_OFFLINE=1 in tests; tests/test_offline.py checks no download is tried)
    with pytest.raises(ModelUnavailableError, match="facebook/dino-vitb16 is not on this machine") as info:
        nola.resolve(proj, nola.params_from({"device": "cpu", "recipe": "paper"}))
    assert (info.value.hint.option, info.value.hint.value) == ("recipe", "labeler")  # train has no --dino
    ours = nola.resolve(proj, nola.params_from({"device": "cpu"}))
    assert (ours["teacher_backbone"], ours["teacher_view"]) == ("features", "dino")
    assert ours["dino_features"] == "dino:tiny-random"
    # an explicit DINO feature set makes the paper recipe use it (the explicit option wins)
    options = {"device": "cpu", "recipe": "paper", "dino_features": "dino:tiny-random"}
    explicit = nola.resolve(proj, nola.params_from(options))
    assert (explicit["teacher_backbone"], explicit["schedule"], explicit["strong_view"]) == (
        "features",
        "constant",
        "nola",
    )


def test_dino_v1_features_are_the_cls_token_not_the_untrained_pooler(tiny_vit):
    from labeler.models import load_dino

    dino = load_dino(tiny_vit, device="cpu")
    x = torch.randn(2, 3, 32, 32)
    out = dino.model(pixel_values=x)
    expected = torch.nn.functional.normalize(out.last_hidden_state[:, 0], dim=-1)
    torch.testing.assert_close(dino.encode_images(x), expected)
    assert not torch.allclose(expected, torch.nn.functional.normalize(out.pooler_output, dim=-1), atol=1e-3)


# --- end to end: a run follows its recipe ----------------------------------------------------------------------
@pytest.fixture
def spies(monkeypatch):
    """Record the strong view and prompt init the training actually builds."""
    import labeler.train.prompt as prompt
    import labeler.train.views as views

    seen: dict = {}
    real_view, real_student = views.strong_transform, prompt.student_from_clip

    def strong_transform(cfg, view="labeler"):
        seen["strong_view"] = view
        return real_view(cfg, view)

    def student_from_clip(*args, **kw):
        student = real_student(*args, **kw)
        seen["init_bound"] = student.init_bound
        return student

    monkeypatch.setattr(views, "strong_transform", strong_transform)
    monkeypatch.setattr(prompt, "student_from_clip", student_from_clip)
    return seen


def test_lafter_paper_run_from_the_cli_uses_the_official_settings(proj, spies, capsys):
    from labeler.cli import main
    from labeler.jobs import list_runs

    args = ["train", str(proj.root), "--method", "lafter", "--recipe", "paper", "--epochs", "2", "--tokens", "4"]
    assert main([*args, "--device", "cpu", "--no-label", "--quiet"]) == 0
    assert "(lafter, recipe paper)" in capsys.readouterr().out
    run = list_runs(proj, kind="train")[0]
    p = run["params"]
    assert (p["recipe"], p["batch_size"], p["schedule"], p["text_lr"], p["text_steps"]) == (
        "paper",
        50,
        "constant",
        5e-4,
        400,
    )
    assert spies["strong_view"] == "lafter"
    assert spies["init_bound"] == pytest.approx(math.sqrt(6 / (3 * 16 * 16 + 64)))  # 16×16, not the true 8×8
    assert [e["lr"] for e in run["metrics"]["epochs"]] == [5e-4, 5e-4]  # constant, as the official code


def test_lafter_labeler_run_anneals_the_lr(proj, spies):
    from labeler.jobs import get_run
    from labeler.methods import get_method

    lafter = get_method("lafter")
    params = lafter.params_from({"device": "cpu", "epochs": 2, "batch_size": 8, "tokens": 4})
    run = get_run(proj, lafter.run(proj, params, relabel=False).run_id)
    lrs = [e["lr"] for e in run["metrics"]["epochs"]]
    assert run["params"]["recipe"] == "labeler"
    assert lrs[0] < 5e-4 and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert spies["strong_view"] == "labeler"
    assert spies["init_bound"] == pytest.approx(math.sqrt(6 / (3 * 8 * 8 + 64)))  # the tiny tower's 8×8 patch


def test_the_train_step_shows_the_recipe_in_use():
    from labeler.ui import build_demo

    demo = build_demo()
    found = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "train-recipe"]
    assert len(found) == 1
    assert [c[0] if isinstance(c, tuple) else c for c in found[0].choices] == ["labeler", "paper"]
    assert found[0].value == "labeler"


def test_nola_paper_run_teaches_with_dino_v1_on_clips_view(proj, spies, tiny_vit, monkeypatch):
    from labeler.jobs import get_run
    from labeler.methods import get_method
    from labeler.methods.nola import NoLA
    from labeler.models import load_clip, load_dino

    real, used = NoLA._teacher_features, []

    def teacher_features(self, project, params, ctx):
        used.append(real(self, project, params, ctx))
        return used[-1]

    monkeypatch.setattr(NoLA, "_teacher_features", teacher_features)
    nola = get_method("nola")
    options = {"device": "cpu", "recipe": "paper", "teacher_backbone": tiny_vit, "epochs": 1, "tokens": 4}
    result = nola.run(proj, nola.params_from({**options, "align_epochs": 5}), relabel=False)
    run = get_run(proj, result.run_id)
    assert run["metrics"]["setup"]["teacher"] == {"backbone": tiny_vit, "view": "clip", "features": None}
    assert (run["params"]["schedule"], run["params"]["batch_size"], spies["strong_view"]) == ("constant", 512, "nola")
    assert len(used) == 1 and used[0].shape == (20, 32)  # the alignment module learnt on DINO v1's features
    # The teacher features: DINO v1's CLS token on CLIP's weak view (CLIP's normalisation), as the official Taal.
    from labeler.ingest import load_rgb

    clip, dino = load_clip("tiny-random", device="cpu"), load_dino(tiny_vit, device="cpu")
    path = proj.db.execute("select path from images order by id limit 1").fetchone()[0]

    class Ctx:
        image_ids = [proj.db.execute("select min(id) from images").fetchone()[0]]

        @staticmethod
        def progress(_msg):
            pass

    params = {**run["params"], "device": "cpu"}
    feats = real(nola, proj, params, Ctx)
    with torch.no_grad():
        x = clip.preprocess(load_rgb(path))[None]
        expected = dino.model(pixel_values=x).last_hidden_state[:, 0].numpy()
        other = dino.model(pixel_values=dino.preprocess(load_rgb(path))[None]).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(feats, other, atol=1e-3)
    assert math.isfinite(float(run["metrics"]["epochs"][0]["loss"]))
