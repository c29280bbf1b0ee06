"""CDUL's snippet features: a cached feature set keyed by (model, image sha256, grid), resumable like image features."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labeler.errors import InvalidInputError, JobCancelled, NotReadyError
from labeler.features import (
    SNIPPET_KIND,
    compute_features,
    compute_snippet_features,
    snippet_features,
    snippet_key,
)
from labeler.ingest import load_rgb
from labeler.jobs import list_runs, request_cancel
from labeler.models import load_clip
from labeler.project import Project
from labeler.snippets import SnippetView, forwards_per_image, snippet_boxes, snippet_cost


@pytest.fixture(scope="module")
def clip():
    return load_clip("tiny-random", device="cpu")


def _project(tmp_path: Path, n: int, sizes=None) -> tuple[Project, list[Path]]:
    project = Project.create(tmp_path / "proj", ["a", "b"], multi_label=True)
    folder = tmp_path / "files"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths, rows = [], []
    for i in range(n):
        w, h = sizes[i] if sizes else (40 + i, 30 + 2 * i)
        p = folder / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(p)
        data = p.read_bytes()
        rows.append(
            {
                "sha256": hashlib.sha256(data).hexdigest(),
                "path": str(p.resolve()),
                "rel_path": p.name,
                "root": str(folder),
                "folder_label": None,
                "bytes": len(data),
                "status": "ok",
                "added_at": 0.0,
            }
        )
        paths.append(p)
    with project.db.conn:
        project.db["images"].insert_all(rows)
    return project, paths


def _direct(model, path: Path, grid: int) -> np.ndarray:
    img = load_rgb(str(path))
    crops = [model.preprocess(img.crop(b)) for b in snippet_boxes(*img.size, grid)]
    return model.encode_images(torch.stack(crops)).numpy()


@pytest.mark.parametrize("grid", [3, 2])
def test_snippet_features_are_the_crops_encoded_and_are_cached(tmp_path, clip, monkeypatch, grid):
    project, paths = _project(tmp_path, 5)
    res = compute_snippet_features(project, clip, grid=grid, batch_size=2, num_workers=0)
    s = grid * grid
    assert (res["computed"], res["cached"], res["snippets"], res["forwards"]) == (5, 0, s, 5 * s)
    assert res["key"] == snippet_key(clip.key, grid) and res["key"] != clip.key
    fset = project.features.get_set(res["key"])
    assert fset["kind"] == SNIPPET_KIND and fset["dim"] == s * clip.dim
    assert project.features.latest("clip") is None  # never taken for image features
    ids, x = snippet_features(project, res["key"])
    assert x.shape == (5, s, clip.dim)
    for r, p in enumerate(paths):
        np.testing.assert_allclose(x[r], _direct(clip, p, grid), atol=2e-3)  # float16 storage
    monkeypatch.setattr(clip, "encode_images", lambda x: (_ for _ in ()).throw(AssertionError("ran")))
    again = compute_snippet_features(project, clip, grid=grid, num_workers=0)
    assert (again["computed"], again["cached"]) == (0, 5)


def test_other_grids_and_the_image_features_are_separate_sets(tmp_path, clip):
    project, _ = _project(tmp_path, 3)
    compute_features(project, clip, num_workers=0)
    a = compute_snippet_features(project, clip, grid=3, num_workers=0)
    b = compute_snippet_features(project, clip, grid=2, num_workers=0)
    assert len({clip.key, a["key"], b["key"]}) == 3
    assert b["computed"] == 3  # a different grid is computed, not read from the 3×3 set
    assert project.features.latest("clip")["key"] == clip.key


def test_cancelled_snippet_run_resumes_without_recomputing(tmp_path, clip, monkeypatch):
    project, paths = _project(tmp_path, 6)

    def stop(done, total, msg):
        if done >= 2:
            request_cancel(project, list_runs(project, kind="features", status="running")[0]["id"])

    with pytest.raises(JobCancelled):
        compute_snippet_features(project, clip, batch_size=2, num_workers=0, on_progress=stop)
    key = snippet_key(clip.key)
    ids, first = snippet_features(project, key)
    assert len(ids) == 2
    seen = []
    real = clip.encode_images
    monkeypatch.setattr(clip, "encode_images", lambda x: (seen.append(len(x)), real(x))[1])
    res = compute_snippet_features(project, clip, batch_size=2, num_workers=0)
    assert (res["computed"], res["cached"]) == (4, 2) and sum(seen) == 4 * 9
    ids2, x = snippet_features(project, key)
    assert ids2[:2] == ids and np.array_equal(x[:2], first)


def test_tiny_images_are_enlarged_to_the_grid(tmp_path, clip):
    project, _ = _project(tmp_path, 2, sizes=[(1, 1), (2, 50)])
    res = compute_snippet_features(project, clip, num_workers=0)
    assert (res["computed"], res["failed"]) == (2, 0)
    view = SnippetView(clip.preprocess, 3)
    assert view(Image.new("RGB", (1, 1))).shape == (9, 3, clip.image_size, clip.image_size)


def test_cost_is_said_and_inputs_are_checked(tmp_path, clip):
    assert forwards_per_image(3) == 10
    assert "10 forwards per image" in snippet_cost(7, 3) and "63 snippet forwards" in snippet_cost(7, 3)
    project, _ = _project(tmp_path, 1)
    with pytest.raises(InvalidInputError, match="grid"):
        compute_snippet_features(project, clip, grid=0)
    with pytest.raises(NotReadyError, match="snippet"):
        snippet_features(project, snippet_key(clip.key))


def test_cli_features_snippets_says_the_cost_first(tmp_path, capsys):
    from labeler.cli import main

    project, _ = _project(tmp_path, 2)
    assert main(["features", str(project.root), "--clip", "tiny-random", "--snippets", "--grid", "2", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "5 forwards per image" in out.err
    assert "snippets2:clip:tiny-random" in out.out
    assert project.features.get_set("clip:tiny-random:none") is not None  # the whole-image features too
