"""The map's methods: PCA by default, UMAP (umap-learn) on demand where installed, and how long each took.

The UMAP test runs where umap-learn is installed (requirements-dev.txt pins it); the rest runs everywhere.
"""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from labeler import projection
from labeler.errors import InvalidInputError

from .explore_helpers import make_project, planted


def _knn_purity(xy: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Share of each point's k nearest 2-D neighbours that have its label."""
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return float((y[nn] == y[:, None]).mean())


@pytest.mark.skipif(not projection.umap_available(), reason="umap-learn is not installed")
def test_umap_keeps_three_planted_blobs_apart():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 64)) * 4
    y = np.repeat(np.arange(3), 60)
    x = (centres[y] + rng.normal(size=(len(y), 64))).astype(np.float32)
    xy, used = projection.project_2d(x, "umap", seed=0)
    assert used == "umap" and xy.shape == (180, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    assert _knn_purity(xy, y) > 0.95
    means = np.stack([xy[y == c].mean(0) for c in range(3)])
    spread = max(float(np.linalg.norm(xy[y == c] - means[c], axis=1).mean()) for c in range(3))
    gaps = [np.linalg.norm(means[a] - means[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 2 * spread  # the blobs are apart, not only locally sorted


def test_umap_without_umap_learn_says_how_to_install_it(monkeypatch):
    real = builtins.__import__

    def no_umap(name, *args, **kwargs):
        if name == "umap" or name.startswith("umap."):
            raise ImportError("No module named 'umap'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_umap)
    x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    with pytest.raises(InvalidInputError, match="pip install umap-learn") as err:
        projection.project_2d(x, "umap")
    assert "PCA" in str(err.value)
    xy, used = projection.project_2d(x, "auto")  # the default needs nothing extra
    assert used == "pca" and xy.shape == (20, 2)


def test_a_leftover_umap_folder_is_not_umap_learn(monkeypatch):
    """After ``pip uninstall umap-learn`` numba's cache can leave ``site-packages/umap/``: a namespace package."""
    import importlib.machinery
    import importlib.util
    import types

    spec = importlib.machinery.ModuleSpec("umap", None, is_package=True)  # what find_spec gives for such a folder
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "umap" else None)
    assert not projection.umap_available()
    monkeypatch.setitem(__import__("sys").modules, "umap", types.ModuleType("umap"))  # importable, no UMAP in it
    with pytest.raises(InvalidInputError, match="pip install umap-learn"):
        projection.project_2d(np.zeros((5, 3), np.float32), "umap")


def test_pca_is_the_default_even_where_umap_is_installed(monkeypatch):
    monkeypatch.setattr(projection, "umap_available", lambda: True)
    assert projection.map_method(None) == projection.map_method("auto") == "pca"
    assert projection.map_method("umap") == "umap"
    x = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    assert projection.project_2d(x)[1] == "pca"


def test_a_map_records_how_long_it_took(project):
    _, feats, _ = planted(3, 16, 30, noise=0.3, seed=1)
    make_project(project, feats)
    assert projection.last_map_timing(project, "clip", "pca") is None  # nothing drawn yet
    first = projection.feature_map(project, "clip", "pca")
    assert isinstance(first["seconds"], float) and first["seconds"] >= 0
    again = projection.map_frame(project, "clip", "pca")  # from the cache: the time it took then
    assert again["seconds"] == first["seconds"]
    assert projection.last_map_timing(project, "clip", "pca") == (30, first["seconds"])


def test_the_explore_map_says_how_long_it_took_and_estimates_from_it(project, monkeypatch):
    gr = pytest.importorskip("gradio")
    from labeler.ui.steps import explore as ex

    from .conftest import make_ctx
    from .explore_helpers import fake_thumbs

    _, feats, _ = planted(3, 16, 30, noise=0.3, seed=1)
    make_project(project, feats)
    fake_thumbs(project)
    ctx, key = make_ctx(), str(project.root)
    drawn = ex.draw_map(ctx, key, "clip", "pca", "pseudo-label")
    secs = projection.last_map_timing(project, "clip", "pca")[1]
    assert f"PCA of 30 points took {secs:.1f} s." in drawn.map_note
    # before a map: scaled from the last one this project computed the same way, and saying so
    scaled = ex.map_estimate(4_000, "umap", (2_000, 20.0))
    assert scaled == "about 30 s, from the last UMAP here: 2,000 points in 20.0 s"
    assert ex.map_seconds(20_000, "umap", (2_000, 20.0)) > ex.map_seconds(20_000, "umap")  # this machine is slower
    assert ex.took(125.0) == "2 min 5 s" and ex.took(4.14) == "4.1 s"

    monkeypatch.setattr(ex, "umap_available", lambda: False)  # asked for where umap-learn is missing
    missing = ex.draw_map(ctx, key, "clip", "umap", "pseudo-label")
    assert "pip install umap-learn" in missing.map_note and missing.plot == gr.skip()
    monkeypatch.setattr(ex, "MAP_METHODS", ["pca"])
    assert ex.map_estimates(30).endswith("for UMAP too: `pip install umap-learn`, then restart")
