"""Errors carry a structured hint (a step, an option), never CLI text; the CLI words it as a command line,
the app as its step and button. And the library's front door (``import labeler``) with the README's example."""

from __future__ import annotations

import ast
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labeler.errors import STEPS, Hint, LabelerError, NotReadyError

from .conftest import REPO, class_folders, parse_source, wait_until

#: CLI syntax a core message must not hold: a backticked labeler command, ``python -m``, a ``--flag``.
CLI_SYNTAX = re.compile(r"`(?:python -m )?labeler\b|python -m\b|(?<![\w-])--[a-z]")


def _error_classes(trees: dict[Path, ast.Module]) -> set[str]:
    """Names of LabelerError and every class defined in labeler/ that derives from it (to a fixpoint)."""
    names = {"LabelerError"}
    while True:
        more = {
            node.name
            for tree in trees.values()
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
            and any(getattr(b, "id", getattr(b, "attr", None)) in names for b in node.bases)
        }
        if more <= names:
            return names
        names |= more


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def core_error_messages() -> list[tuple[str, int, str]]:
    """``(file, line, text)`` of every string literal in a message given to a LabelerError (or subclass) in
    the core (labeler/ outside cli/ and ui/), and in the ``*_message`` functions that build such messages."""
    root = REPO / "labeler"
    trees = {
        p: parse_source(p) for p in sorted(root.rglob("*.py")) if p.relative_to(root).parts[0] not in ("cli", "ui")
    }
    errors = _error_classes(trees)
    found = []
    for path, tree in trees.items():
        where = str(path.relative_to(REPO))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name in errors:
                    parts = [*node.args, *(k.value for k in node.keywords if k.arg != "hint")]
                    found += [(where, node.lineno, s) for arg in parts for s in _strings(arg)]
            elif isinstance(node, ast.FunctionDef) and node.name.endswith("_message"):
                for ret in (n for n in ast.walk(node) if isinstance(n, ast.Return) and n.value is not None):
                    found += [(where, ret.lineno, s) for s in _strings(ret.value)]
    return found


def test_no_core_error_message_holds_cli_syntax():
    messages = core_error_messages()
    assert len(messages) > 100  # the scan sees the messages (a broken scan would pass vacuously)
    bad = [f"{f}:{line}: {text!r}" for f, line, text in messages if CLI_SYNTAX.search(text)]
    assert not bad, "core messages name CLI commands or flags; give a Hint instead:\n" + "\n".join(bad)


def test_the_scan_sees_cli_syntax():
    for text in ("run `labeler features` first", "see `python -m labeler runs`", "pass --model X", "(--lr)"):
        assert CLI_SYNTAX.search(text), text
    for text in ("a--b stays", "gpt-4o-mini", "a — b", "`ollama serve`"):
        assert not CLI_SYNTAX.search(text), text


def test_every_step_has_a_command_and_a_place_in_the_wizard():
    pytest.importorskip("gradio")
    from labeler.cli._common import STEP_COMMANDS
    from labeler.ui.common import STEP_IN_UI

    assert set(STEP_COMMANDS) == set(STEPS) == set(STEP_IN_UI)
    with pytest.raises(ValueError, match="unknown hint step"):
        Hint("featurs")
    with pytest.raises(ValueError, match="a step or an option"):
        Hint()


def test_one_error_renders_as_a_command_in_the_cli_and_as_a_step_in_the_app():
    pytest.importorskip("gradio")
    from labeler.cli._common import error_text as cli_text
    from labeler.ui.common import ui_error

    err = NotReadyError("no clip features yet", hint=Hint("features", option="clip"))
    assert str(err) == "no clip features yet"  # the message alone: each front end adds the hint
    assert cli_text(str(err), err.hint, "pets") == (
        "no clip features yet: run `python -m labeler features pets --clip MODEL` first"
    )
    assert (
        cli_text(str(err), err.hint)
        == "no clip features yet: run `python -m labeler features PROJECT --clip MODEL` first"
    )
    assert ui_error(str(err), err.hint) == "no clip features yet: run “Compute features” (step 5, ①) first"

    dino = Hint("features", option="dino", value="facebook/dinov2-small")
    assert cli_text("NoLA needs DINO features", dino, "p") == (
        "NoLA needs DINO features: run `python -m labeler features p --dino facebook/dinov2-small` first"
    )
    assert ui_error("NoLA needs DINO features", dino) == (
        "NoLA needs DINO features: run “Compute features” (step 5, ①) with “DINO (optional)” set to "
        "facebook/dinov2-small first"
    )
    # an option alone follows in parentheses: a flag in the CLI, the field (or the option's name) in the app
    oom = Hint(option="batch_size")
    assert (
        cli_text("out of memory: lower the batch size", oom) == "out of memory: lower the batch size (`--batch-size`)"
    )
    assert ui_error("out of memory: lower the batch size", oom) == "out of memory: lower the batch size ('batch_size')"
    cpu = Hint(option="device", value="cpu")
    assert cli_text("no GPU: use the CPU", cpu) == "no GPU: use the CPU (`--device cpu`)"
    assert ui_error("no GPU: use the CPU", cpu) == "no GPU: use the CPU (“Device” set to cpu)"
    busy = Hint("cancel", value="7")
    assert cli_text("a job is running", busy, "p") == "a job is running: cancel it with `python -m labeler cancel p 7`"
    assert ui_error("a job is running", busy) == "a job is running: cancel it in the jobs panel"
    assert cli_text("plain", None) == ui_error("plain") == "plain"


def test_an_error_keeps_its_hint_through_pickling():
    err = NotReadyError("no clusters yet", hint=Hint("cluster"))
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is NotReadyError and str(back) == "no clusters yet" and back.hint == Hint("cluster")
    assert LabelerError("x").hint is None


def test_the_cli_prints_the_hint_as_a_command(tmp_path):
    """A real `python -m labeler` process: one ``error: ...`` line, the hint a command with the project in it."""
    from labeler.project import Project

    root = tmp_path / "P"
    Project.create(root, ["cat", "dog"]).close()
    proc = subprocess.run(
        [sys.executable, "-m", "labeler", "queue", str(root)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"error: there is no finished labeling run: run `python -m labeler label {root}` first"
    ), proc.stderr


def test_the_app_shows_the_hint_as_its_step_and_button(project):
    """A guarded handler's toast and a background task's error name the wizard's step, not a command."""
    gr = pytest.importorskip("gradio")
    from labeler.jobs import run_in_background
    from labeler.review import review_queue
    from labeler.ui.common import error_text, guard

    with pytest.raises(gr.Error) as shown:
        guard(review_queue)(project)
    assert shown.value.message == "there is no finished labeling run: run “Run zero-shot” (step 5, ②) first"

    def no_features():
        from labeler.features import feature_matrix

        feature_matrix(project, "clip")

    task = run_in_background(str(project.root), "cluster", no_features)
    wait_until(lambda: not task.running, "the task to fail")
    assert task.status == "failed" and task.hint == Hint("features", option="clip")
    assert error_text(task.error, task.hint) == "no clip features yet: run “Compute features” (step 5, ①) first"


def test_import_labeler_is_cheap_and_its_front_door_resolves():
    code = (
        "import sys, labeler\n"
        "heavy = [m for m in ('torch', 'open_clip', 'transformers', 'gradio', 'faiss') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "for name in labeler.__all__:\n"
        "    assert getattr(labeler, name) is not None, name\n"
        "from labeler import export, train\n"
        "import labeler.export, labeler.train.runner\n"
        "assert export is sys.modules['labeler.export'] and train is sys.modules['labeler.train']\n"
        "assert callable(export) and callable(train) and labeler.train.train is labeler.train.runner.train\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_readme_library_example_runs(tmp_path):
    """The README's example, as written except the model (tiny-random, offline) and the images folder."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it as a library", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
    assert imports and all(line.startswith("from labeler import ") for line in imports), imports
    images = class_folders(tmp_path / "photos", 2, ["cat", "dog"])
    code = code.replace('load_clip("ViT-B-32", "laion2b_s34b_b79k")', 'load_clip("tiny-random")')
    code = code.replace('"~/Pictures/pets"', repr(str(images)))
    assert 'load_clip("tiny-random")' in code and str(images) in code
    env = {**os.environ, "LABELER_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "labels.csv").read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("path") and len(lines) == 1 + 4
