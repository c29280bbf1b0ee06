"""Errors a user can act on reach the command line as one ``error: ...`` line (exit 2), never a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from labeler.cli import main
from labeler.errors import InvalidInputError
from labeler.project import Project, parse_class_list, validate_project_name

from .conftest import REPO


def run_cli(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def proj(tmp_path):
    root = tmp_path / "P"
    Project.create(root, ["cat", "dog"]).close()
    return root


def test_cancel_of_an_unknown_run_says_so(proj, capsys):
    code, err = run_cli(capsys, "cancel", proj, 999)
    assert code == 2
    line = one_error_line(err)
    assert "no run 999" in line and "runs" in line


def test_a_database_from_a_newer_labeler_is_a_clear_error(proj, capsys):
    conn = sqlite3.connect(proj / "labeler.db")
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    code, err = run_cli(capsys, "status", proj)
    assert code == 2
    line = one_error_line(err)
    assert "schema version 999 is newer" in line and "upgrade Labeler" in line


def test_a_non_finite_loss_in_training_is_a_clear_error(proj, capsys, monkeypatch):
    import labeler.train.runner as runner

    def nan_training(*args, **kwargs):  # what labeler.train.loop raises when the loss becomes NaN
        raise FloatingPointError(
            "the loss became nan in epoch 1: lower the learning rate (--lr) or use --precision fp32"
        )

    monkeypatch.setattr(runner, "train", nan_training)
    code, err = run_cli(capsys, "train", proj, "--method", "nola", "--quiet")
    assert code == 2
    line = one_error_line(err)
    assert "loss became nan" in line and "--lr" in line


@pytest.mark.parametrize(
    "name, says",
    [
        ("x" * 300, "300 characters long"),
        ("a\x00b", "NUL"),
        ("con", "reserved"),
        ("NUL.txt", "reserved"),
        (".", "existing folder"),
        ("..", "existing folder"),
        ("pets!", "not valid"),
    ],
)
def test_bad_project_names_are_refused_clearly(name, says, capsys, tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # '.' and '..' must not turn a real folder into a project if this regresses
    code, err = run_cli(capsys, "init", name, "--classes", "cat,dog")
    assert code == 2
    assert says in one_error_line(err)


def test_a_long_folder_name_in_a_path_is_refused_clearly(tmp_path, capsys):
    code, err = run_cli(capsys, "init", tmp_path / ("y" * 300), "--classes", "cat,dog")
    assert code == 2
    assert "at most 255 bytes" in one_error_line(err)
    code, err = run_cli(capsys, "status", tmp_path / ("y" * 300))
    assert code == 2 and "at most 255 bytes" in one_error_line(err)


def test_project_names_where_a_name_is_expected():
    assert validate_project_name(" pets 2 ") == "pets 2"
    for bad, says in [("a/b", "path separator"), ("a\\b", "path separator"), ("", "empty"), ("aux", "reserved")]:
        with pytest.raises(InvalidInputError, match=says):
            validate_project_name(bad)


@pytest.mark.parametrize("text, pos", [("a,,b", "2 of 3"), ("a,b,", "3 of 3"), (",a,b", "1 of 3")])
def test_an_empty_class_name_is_refused_naming_its_position(text, pos, tmp_path, capsys):
    with pytest.raises(InvalidInputError, match=f"class name {pos} .* is empty"):
        parse_class_list(text)
    code, err = run_cli(capsys, "init", tmp_path / "Q", "--classes", text)
    assert code == 2 and f"class name {pos}" in one_error_line(err)
    assert not (tmp_path / "Q").exists()
    assert parse_class_list("cat\n\ndog\n") == ["cat", "dog"]  # blank lines of a one-per-line list are fine


def test_output_piped_into_head_stops_quietly(proj):
    """``runs P --json | head -c 10``: the reader closes the pipe early; exit 0, nothing on stderr."""
    conn = sqlite3.connect(proj / "labeler.db")
    rows = [("label", "zeroshot", json.dumps({"note": "x" * 200}), "done", 1.0, "", "{}", 0, 0.0) for _ in range(3000)]
    conn.executemany(
        "insert into runs (kind, method, params, status, progress, message, metrics, cancel_requested, created_at) "
        "values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.commit()
    conn.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "labeler", "runs", str(proj), "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    head = proc.stdout.read(10)  # like `head -c 10`
    proc.stdout.close()  # ... then it exits; the output (about 1.5 MB) is far from written
    _, err = proc.communicate(timeout=120)
    assert head.startswith(b"{")
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()


def test_model_exporter_is_registered_by_the_export_module_alone(tmp_path):
    """A fresh interpreter that imported only labeler.export (not labeler.methods) can export a model."""
    script = (
        "import sys\n"
        "from labeler.export import EXPORTERS, export\n"
        "from labeler.errors import NotReadyError\n"
        "from labeler.project import Project\n"
        "assert 'labeler.methods' not in sys.modules and 'labeler.train' not in sys.modules\n"
        "assert 'model' in EXPORTERS, sorted(EXPORTERS)\n"
        "project = Project.create(sys.argv[1], ['cat', 'dog'])\n"
        "try:\n"
        "    export(project, 'model', sys.argv[2])\n"
        "except NotReadyError as exc:\n"
        "    print('exporter ran:', exc, exc.hint)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "P"), str(tmp_path / "m.pt")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "exporter ran: no trained model in this project Hint(step='train'" in proc.stdout
