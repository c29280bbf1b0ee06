"""labeler.pipeline.run_pipeline (what `labeler run` does) as a library call, and `labeler run` going through it."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .conftest import REPO

CLASSES = ["cat", "dog"]


@pytest.fixture
def images(tmp_path):
    """6 random PNGs in two class folders (no CIFAR needed)."""
    src = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for i in range(6):
        folder = src / CLASSES[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return src


def test_run_pipeline_imports_features_labels_and_exports(images, tmp_path):
    from labeler.pipeline import STEPS, run_pipeline

    steps, progressed = [], set()

    def progress(step):
        return lambda done, total, message="": progressed.add(step)

    out = tmp_path / "labels.csv"
    res = run_pipeline(
        images,
        CLASSES,
        out,
        project=tmp_path / "p",
        clip="tiny-random",
        pretrained=None,
        device="cpu",
        progress=progress,
        on_step=lambda step, r: steps.append((step, r)),
    )
    assert [s for s, _ in steps] == list(STEPS) and all(r is res for _, r in steps)
    assert progressed == {"import", "features", "label"}
    assert res.project.classes == CLASSES and not res.classes_updated
    assert res.imported.added == 6
    assert [f["computed"] for f in res.features] == [6]
    assert res.label.metrics["n"] == 6 and res.export.path == out
    with open(out, newline="", encoding="utf-8-sig") as f:
        assert len(list(csv.DictReader(f))) == 6

    again = run_pipeline(images, [*CLASSES, "bird"], out, project=tmp_path / "p", clip="tiny-random", pretrained=None)
    assert again.classes_updated and again.project.classes == [*CLASSES, "bird"]
    assert again.imported.added == 0 and again.imported.duplicates == 6
    assert again.features[0]["cached"] == 6 and again.label.run_id != res.label.run_id


def test_run_pipeline_refuses_a_missing_folder_and_no_classes(tmp_path, images):
    from labeler.errors import InvalidInputError
    from labeler.pipeline import run_pipeline

    with pytest.raises(InvalidInputError, match="does not exist"):
        run_pipeline(tmp_path / "nope", CLASSES, tmp_path / "x.csv")
    with pytest.raises(InvalidInputError, match="class names"):
        run_pipeline(images, [], tmp_path / "x.csv")


def test_cli_run_goes_through_the_pipeline_and_prints_each_step(images, tmp_path, capsys, monkeypatch):
    import labeler.pipeline
    from labeler.cli import main

    calls = []
    real = labeler.pipeline.run_pipeline
    monkeypatch.setattr(labeler.pipeline, "run_pipeline", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    out = tmp_path / "labels.csv"
    argv = ["run", str(images), "--classes", "cat,dog", "--clip", "tiny-random", "-o", str(out), "--quiet"]
    assert main([*argv, "--project", str(tmp_path / "p")]) == 0
    assert len(calls) == 1 and calls[0]["clip"] == "tiny-random" and calls[0]["pretrained"] is None
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "added 6 images, 0 already in the project, 0 skipped"
    assert lines[1] == "clip:tiny-random:none: computed 6, cached 0, failed 0"
    assert lines[2].startswith("run ") and lines[2].endswith(": labeled 6 images")
    assert lines[-1] == f"wrote csv export of 6 images (6 labeled, 0 unlabeled) to {out}"

    # a step that fails: the steps before it printed, one error line, exit 2
    model = ["-o", str(tmp_path / "m.pt"), "--format", "model", "--quiet"]
    assert main([*argv[:-3], *model, "--project", str(tmp_path / "p")]) == 2
    captured = capsys.readouterr()
    assert "computed 0, cached 6" in captured.out and "wrote" not in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("error: no trained model")


def test_the_app_does_not_import_the_cli():
    """The UI used to import labeler.cli_describe (and so the whole CLI) for one constant."""
    code = "import sys, labeler.ui; print(sorted(m for m in sys.modules if m.startswith('labeler.cli')))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
