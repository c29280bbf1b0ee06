"""The CLI end to end, in subprocesses, with tiny random models on 200 generated images (CIFAR-10 layout)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from .conftest import CIFAR_CLASSES, REPO, class_folders


def labeler(*args, check=True, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "labeler", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"labeler {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def test_end_to_end_on_ten_class_folders(tmp_path):
    src = class_folders(tmp_path / "imgs", per_class=20)
    (src / "cat" / "broken.jpg").write_text("this is not a jpeg")
    (src / "dog" / "empty.png").write_bytes(b"")
    proj = tmp_path / "proj"

    labeler("init", proj, "--classes", ",".join(CIFAR_CLASSES))
    labeler("import", proj, src, "--quiet")
    out = labeler("features", proj, "--clip", "tiny-random", "--dino", "tiny-random", "--json", "--quiet")
    sets = {s["key"]: s for s in json.loads(out.stdout)["feature_sets"]}
    assert sum(s["computed"] for s in sets.values()) == 400

    # A second run does no model work.
    again = json.loads(labeler("features", proj, "--clip", "tiny-random", "--json", "--quiet").stdout)
    assert again["feature_sets"][0]["computed"] == 0 and again["feature_sets"][0]["cached"] == 200

    run = json.loads(labeler("label", proj, "--method", "zeroshot", "--json", "--quiet").stdout)
    assert run["n"] == 200 and sum(run["class_counts"].values()) == 200

    csv_path = tmp_path / "labels.csv"
    labeler("export", proj, "--format", "csv", "-o", csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200
    assert {"path", "sha256", "label", "score", "source", "run_id"} <= set(rows[0])
    assert {r["source"] for r in rows} == {"pseudo"}
    assert {r["label"] for r in rows} <= set(CIFAR_CLASSES)
    assert all(r["path"].split("/")[0] in CIFAR_CLASSES for r in rows)  # relative to the import root
    assert len({r["sha256"] for r in rows}) == 200

    status = json.loads(labeler("status", proj, "--json").stdout)
    assert status["images_ok"] == 200
    assert {os.path.basename(s["path"]) for s in status["images_skipped"]} == {"broken.jpg", "empty.png"}
    assert all(s["reason"] for s in status["images_skipped"])
    assert status["classes"] == CIFAR_CLASSES
    assert status["labels"]["pseudo"] == 200 and status["labels"]["human"] == 0

    ev = json.loads(labeler("eval", proj, "--json").stdout)
    assert ev["n"] == 200 and 0.0 <= ev["accuracy"] <= 1.0
    assert len(ev["confusion"]) == 10 and sum(map(sum, ev["confusion"])) == 200

    folder = tmp_path / "folder"
    labeler("export", proj, "--format", "imagefolder", "-o", folder, "--link")
    assert sum(1 for p in folder.rglob("*.jpg")) == 200


def test_one_shot_run(tmp_path):
    src = class_folders(tmp_path / "imgs", per_class=3, classes=["cat", "dog"])
    out = tmp_path / "labels.csv"
    labeler(
        "run", src, "--classes", "cat,dog", "--clip", "tiny-random", "-o", out, "--quiet", "--project", tmp_path / "p"
    )
    with open(out, newline="", encoding="utf-8-sig") as f:
        assert len(list(csv.DictReader(f))) == 6


def test_errors_are_clear_and_non_zero(tmp_path):
    missing = labeler("status", tmp_path / "nope", check=False)
    assert missing.returncode == 2 and "no Labeler project" in missing.stderr and "init" in missing.stderr
    assert "Traceback" not in missing.stderr

    no_classes = labeler("init", tmp_path / "p", check=False)
    assert no_classes.returncode == 2 and "--classes" in no_classes.stderr

    dup = labeler("init", tmp_path / "p", "--classes", "cat,Cat", check=False)
    assert dup.returncode == 2 and "twice" in dup.stderr

    labeler("init", tmp_path / "p", "--classes", "cat,dog")
    again = labeler("init", tmp_path / "p", "--classes", "cat,dog", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr

    no_src = labeler("import", tmp_path / "p", tmp_path / "does-not-exist", check=False)
    assert no_src.returncode == 2 and "does-not-exist" in no_src.stderr

    early = labeler("label", tmp_path / "p", check=False)
    assert early.returncode == 2 and "features" in early.stderr


@pytest.mark.timeout(120)
def test_real_weights_offline_fail_with_a_way_out(tmp_path):
    labeler("init", tmp_path / "p", "--classes", "cat,dog")
    proc = labeler(
        "features", tmp_path / "p", "--clip", "ViT-B-32", "--quiet", check=False, env={"HF_HUB_OFFLINE": "1"}
    )
    assert proc.returncode == 2, proc.stderr
    assert "ViT-B-32" in proc.stderr and "`--clip tiny-random`" in proc.stderr  # a flag `features` has
    assert "Traceback" not in proc.stderr


def test_every_command_has_help_with_an_example():
    from labeler.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    assert {"init", "import", "features", "label", "export", "status", "eval", "run", "serve"} <= set(subs)
    for name, sub in subs.items():
        assert "example" in sub.format_help(), name


def test_every_command_help_renders(capsys):
    """argparse %-formats help strings: a bare '%' in one command's help broke `labeler` with no command."""
    from labeler.cli import build_parser

    parser = build_parser()
    parser.format_help()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert "audit" in subs.choices
    for name, sub in subs.choices.items():
        assert name in sub.format_help()


def test_serve_takes_the_readme_flags_and_app_py_the_same(tmp_path, monkeypatch):
    """Issue 12: ``serve --data-dir/--uploads-only`` were rejected though the README lists them."""
    import importlib.util

    import labeler.ui
    from labeler.cli import main

    calls = []
    monkeypatch.setattr(labeler.ui, "launch", lambda **kw: calls.append(kw))
    monkeypatch.setenv("LABELER_DATA_DIR", "/elsewhere")  # restored after the test
    assert main(["serve", "--data-dir", str(tmp_path), "--uploads-only", "--port", "7001"]) == 0
    assert calls[-1] == {"host": None, "port": 7001, "local_mode": False}
    assert os.environ["LABELER_DATA_DIR"] == str(tmp_path.resolve())
    assert main(["serve"]) == 0
    assert calls[-1] == {"host": None, "port": None, "local_mode": None}

    spec = importlib.util.spec_from_file_location("labeler_app_script", REPO / "app.py")
    app_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app_py)
    assert app_py.main(["--host", "0.0.0.0", "--uploads-only"]) == 0
    assert calls[-1] == {"host": "0.0.0.0", "port": None, "local_mode": False}


def test_server_address_precedence_flag_labeler_gradio_default():
    """Issue 12: Gradio's GRADIO_SERVER_NAME/PORT (Docker, Spaces) were ignored."""
    from labeler.errors import InvalidInputError
    from labeler.ui import server_address

    gradio = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7000"}
    ours = {"LABELER_HOST": "10.0.0.1", "LABELER_PORT": "7100"}
    assert server_address(environ={}) == ("127.0.0.1", 7860)
    assert server_address(environ={"SPACE_ID": "u/s"}) == ("0.0.0.0", 7860)
    assert server_address(environ=gradio) == ("0.0.0.0", 7000)
    assert server_address(environ={**gradio, **ours}) == ("10.0.0.1", 7100)
    assert server_address("localhost", 7200, environ={**gradio, **ours}) == ("localhost", 7200)
    with pytest.raises(InvalidInputError, match="GRADIO_SERVER_PORT must be a port number"):
        server_address(environ={"GRADIO_SERVER_PORT": "http"})
