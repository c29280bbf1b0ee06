"""A first run offline (``HF_HUB_OFFLINE=1``, nothing cached): a model whose weights are absent fails at once,
before any download is tried, with one message that names what would work (the ``tiny-random`` model, the files
to place for real weights and where), and a hint the CLI renders with flags the command really has."""

from __future__ import annotations

import argparse
import re

import pytest

from labeler.cli import build_parser, main
from labeler.errors import Hint, ModelUnavailableError

from .conftest import class_folders

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
COMMAND = re.compile(r"`python -m labeler (\w+)([^`]*)`")


def _parser(command: str) -> argparse.ArgumentParser:
    subs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subs.choices[command]


def _unknown_flags(text: str, command: str) -> list[str]:
    """Flags in ``text`` that the command they are given to lacks: a flag inside a backticked command line
    belongs to that command, any other to ``command`` (the one that printed it)."""
    bad = []
    for cmd, rest in COMMAND.findall(text):
        options = _parser(cmd)._option_string_actions
        bad += [f"{cmd} {f}" for f in FLAG.findall(rest) if f not in options]
    options = _parser(command)._option_string_actions
    bad += [f"{command} {f}" for f in FLAG.findall(COMMAND.sub("", text)) if f not in options]
    return bad


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty Hugging Face cache, and every way to fetch or build a hub model made to fail the test."""
    import huggingface_hub
    import huggingface_hub.constants as hc
    import huggingface_hub.file_download as fd

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    calls = []

    def refuse(*args, **kwargs):
        calls.append((args, kwargs))
        raise AssertionError(f"network or model build attempted: {args} {kwargs}")

    for owner in (huggingface_hub, fd):
        monkeypatch.setattr(owner, "hf_hub_download", refuse)
    from labeler.models import clip

    monkeypatch.setattr(clip, "_build", refuse)  # open_clip would be asked: too late for a fast, quiet failure
    transformers = pytest.importorskip("transformers")
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)
    return calls


@pytest.fixture
def imported(tmp_path):
    root = tmp_path / "p"
    assert main(["init", str(root), "--classes", "cat,dog"]) == 0
    assert main(["import", str(root), str(class_folders(tmp_path / "imgs", 2, ["cat", "dog"])), "--quiet"]) == 0
    return root


def _said_once(err: str, what: str) -> None:
    assert err.count(what) == 1, err
    assert "ERROR:" not in err and "Cause:" not in err and "Traceback" not in err, err


def test_features_with_the_default_model_fails_at_once_saying_what_would_work(imported, no_network, capsys):
    capsys.readouterr()
    assert main(["features", str(imported)]) == 2
    err = capsys.readouterr().err
    _said_once(err, "are not on this machine")
    for text in (
        "ViT-B-32 / laion2b_s34b_b79k",
        "open_clip_pytorch_model.bin",
        "open_clip_model.safetensors",
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K",
        "`--clip tiny-random`",
    ):
        assert text in err, text
    assert not _unknown_flags(err, "features"), err
    assert no_network == []


def test_a_missing_dino_is_found_before_any_clip_features_are_computed(imported, no_network, capsys):
    from labeler.project import Project

    capsys.readouterr()
    assert main(["features", str(imported), "--clip", "tiny-random", "--dino", "facebook/dinov2-small"]) == 2
    err = capsys.readouterr().err
    _said_once(err, "is not on this machine")
    assert "facebook/dinov2-small" in err and "model.safetensors" in err and "`--dino tiny-random`" in err
    assert not _unknown_flags(err, "features"), err
    assert Project.open(str(imported)).features.sets() == []  # nothing computed before the check failed
    assert no_network == []


def test_run_names_only_its_own_flags(tmp_path, no_network, capsys):
    images = class_folders(tmp_path / "imgs", 2, ["cat", "dog"])
    code = main(["run", str(images), "--classes", "cat,dog", "--project", str(tmp_path / "p"), "-o", "x.csv"])
    err = capsys.readouterr().err
    assert code == 2
    _said_once(err, "are not on this machine")
    assert "`--clip tiny-random`" in err and not _unknown_flags(err, "run"), err


def _features_of_a_missing_model(project) -> None:
    """4 images with CLIP features from a model whose weights are not here (computed elsewhere, or the cache was
    cleared)."""
    import numpy as np

    with project.db.conn:
        project.db["images"].insert_all(
            {"sha256": f"{i:064x}", "path": f"/x/{i}.png", "rel_path": f"{i}.png", "root": "/x", "status": "ok"}
            for i in range(4)
        )
    sid = project.features.ensure_set(
        "clip:ViT-B-32:laion2b_s34b_b79k", "clip", 8, model="ViT-B-32", pretrained="laion2b_s34b_b79k"
    )
    project.features.append(sid, [f"{i:064x}" for i in range(4)], np.eye(4, 8, dtype=np.float32))


def test_zero_shot_without_its_text_encoder_fails_before_a_run_with_a_features_hint(project, no_network, capsys):

    _features_of_a_missing_model(project)
    with pytest.raises(ModelUnavailableError) as info:
        from labeler.methods import get_method

        get_method("zeroshot").run(project)
    assert info.value.hint == Hint("features", option="clip", value="tiny-random")
    assert project.db["runs"].count == 0  # failed before a run was recorded
    capsys.readouterr()
    assert main(["label", str(project.root)]) == 2
    err = capsys.readouterr().err
    _said_once(err, "are not on this machine")
    assert "features" in err and "--clip tiny-random" in err and not _unknown_flags(err, "label"), err
    assert no_network == []


def test_search_text_encoder_offline_fails_at_once(project, no_network):
    from labeler.models import check_clip_available

    with pytest.raises(ModelUnavailableError, match="open_clip_pytorch_model.bin") as info:
        check_clip_available("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None)
    assert info.value.hint == Hint(option="clip", value="tiny-random")
    check_clip_available("tiny-random")  # registered models, random init and local files pass
    check_clip_available("ViT-B-32", "none")
    check_clip_available("ViT-B-32", None)  # None is random init, as load_clip documents
    assert no_network == []


def test_open_clips_own_error_line_is_not_logged(tmp_path, monkeypatch, caplog):
    """Past the check (here: skipped), open_clip's failed download logs an ERROR line of its own; Labeler's one
    error says it, so that line is dropped."""
    import huggingface_hub.constants as hc

    from labeler.models import clip

    pytest.importorskip("open_clip")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(clip, "check_clip_available", lambda *a, **k: None)
    with caplog.at_level("WARNING"), pytest.raises(ModelUnavailableError) as info:
        clip.load_clip("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    assert info.value.hint == Hint(option="clip", value="tiny-random")


def test_text_search_without_its_text_encoder_suggests_features_it_can_search(project, no_network, capsys):

    from labeler import search

    search._cached_clip.cache_clear()
    _features_of_a_missing_model(project)
    capsys.readouterr()
    assert main(["search", str(project.root), "a cat"]) == 2
    err = capsys.readouterr().err
    _said_once(err, "are not on this machine")
    assert "--clip tiny-random" in err and not _unknown_flags(err, "search"), err
    assert no_network == []
