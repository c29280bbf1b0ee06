"""Feature computation: cache, resume, batch-size invariance, unreadable files, class folders (generated; CIFAR).

The CIFAR case is an extra: it uses ../shared/data where present and skips elsewhere.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labeler.errors import JobCancelled, NotReadyError
from labeler.features import compute_features, default_num_workers, feature_matrix, latest_set
from labeler.ingest import load_rgb
from labeler.jobs import get_run, list_runs, request_cancel
from labeler.models import load_clip, load_dino
from labeler.project import Project

from .conftest import cifar_subset, class_folders


@pytest.fixture(scope="module")
def clip():
    return load_clip("tiny-random", device="cpu")


@pytest.fixture(scope="module")
def dino():
    return load_dino("tiny-random", device="cpu")


def _add_files(project: Project, paths: list[Path]) -> None:
    """Insert ``images`` rows for existing files (no dependence on the importer)."""
    rows = []
    for p in paths:
        data = p.read_bytes()
        rows.append(
            {
                "sha256": hashlib.sha256(data).hexdigest(),
                "path": str(p.resolve()),
                "rel_path": p.name,
                "root": str(p.parent.resolve()),
                "folder_label": p.parent.name,
                "bytes": len(data),
                "status": "ok",
                "added_at": 0.0,
            }
        )
    with project.db.conn:
        project.db["images"].insert_all(rows)


def _pngs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(24 + i % 5, 32, 3), dtype=np.uint8)
        p = folder / f"img{i:03d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def _make_project(tmp_path: Path, n: int, name: str = "proj", seed: int = 0) -> tuple[Project, list[Path]]:
    project = Project.create(tmp_path / name, ["a", "b"])
    paths = _pngs(tmp_path / f"{name}-files", n, seed)
    _add_files(project, paths)
    return project, paths


def _direct(model, paths: list[Path]) -> np.ndarray:
    x = torch.stack([model.preprocess(load_rgb(str(p))) for p in paths])
    return model.encode_images(x).numpy()


def _forbid_forward(model, monkeypatch):
    def boom(x):
        raise AssertionError("the model forward ran, but every image was cached")

    monkeypatch.setattr(model, "encode_images", boom)


def test_compute_stores_right_vectors_then_hits_the_cache(tmp_path, clip, monkeypatch):
    project, paths = _make_project(tmp_path, 10)
    seen = []
    res = compute_features(project, clip, batch_size=4, num_workers=0, on_progress=lambda d, t, m: seen.append((d, t)))
    assert (res["key"], res["computed"], res["cached"], res["failed"]) == (clip.key, 10, 0, 0)
    assert seen[-1] == (10, 10)
    run = get_run(project, res["run_id"])
    assert run["kind"] == "features" and run["status"] == "done" and run["params"]["key"] == clip.key
    assert run["metrics"]["computed"] == 10

    ids, X = feature_matrix(project, clip.key)
    assert ids == [r["id"] for r in project.images()] and X.shape == (10, 64) and X.dtype == np.float32
    # Each image's row holds that image's features (float16 storage).
    np.testing.assert_allclose(X, _direct(clip, paths), atol=2e-3)

    _forbid_forward(clip, monkeypatch)
    again = compute_features(project, clip, batch_size=4, num_workers=0)
    assert (again["computed"], again["cached"], again["failed"]) == (0, 10, 0)
    assert get_run(project, again["run_id"])["status"] == "done"
    assert np.array_equal(feature_matrix(project, "clip")[1], X)


def test_new_images_only_are_computed(tmp_path, clip, monkeypatch):
    project, _ = _make_project(tmp_path, 6)
    compute_features(project, clip, batch_size=4, num_workers=0)
    _add_files(project, _pngs(tmp_path / "more", 3, seed=1))
    encoded = []
    real = clip.encode_images
    monkeypatch.setattr(clip, "encode_images", lambda x: (encoded.append(len(x)), real(x))[1])
    res = compute_features(project, clip, batch_size=4, num_workers=0)
    assert (res["computed"], res["cached"]) == (3, 6) and sum(encoded) == 3
    assert feature_matrix(project, clip.key)[1].shape == (9, 64)


def test_interrupted_run_resumes_without_recomputing(tmp_path, clip, monkeypatch):
    project, paths = _make_project(tmp_path, 10)

    def stop_after_first_batch(done, total, msg):
        if done >= 4:
            running = list_runs(project, kind="features", status="running")
            request_cancel(project, running[0]["id"])

    with pytest.raises(JobCancelled):
        compute_features(project, clip, batch_size=4, num_workers=0, on_progress=stop_after_first_batch)
    run = list_runs(project, kind="features")[0]
    assert run["status"] == "cancelled"
    ids, first = feature_matrix(project, clip.key)
    assert len(ids) == 4
    first = first.copy()

    encoded = []
    real = clip.encode_images
    monkeypatch.setattr(clip, "encode_images", lambda x: (encoded.append(len(x)), real(x))[1])
    res = compute_features(project, clip, batch_size=4, num_workers=0)
    assert (res["computed"], res["cached"]) == (6, 4) and sum(encoded) == 6
    ids2, X = feature_matrix(project, clip.key)
    assert len(ids2) == 10 and ids2[:4] == ids
    assert np.array_equal(X[:4], first)  # committed rows are kept as they were
    np.testing.assert_allclose(X, _direct(clip, paths), atol=2e-3)


def test_on_progress_raising_stops_the_job(tmp_path, clip):
    project, _ = _make_project(tmp_path, 9)

    def stop(done, total, msg):
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_features(project, clip, batch_size=3, num_workers=0, on_progress=stop)
    assert list_runs(project, kind="features")[0]["status"] == "cancelled"
    assert len(feature_matrix(project, clip.key)[0]) == 3
    assert compute_features(project, clip, batch_size=3, num_workers=0)["computed"] == 6


def test_features_do_not_depend_on_batch_size_or_workers(tmp_path, dino):
    a, _ = _make_project(tmp_path, 11, "a")
    b, _ = _make_project(tmp_path, 11, "b")
    compute_features(a, dino, batch_size=3, num_workers=2)
    compute_features(b, dino, batch_size=16, num_workers=0)
    ids_a, xa = feature_matrix(a, "dino")
    ids_b, xb = feature_matrix(b, "dino")
    assert len(ids_a) == len(ids_b) == 11
    np.testing.assert_allclose(xa, xb, atol=2e-3)  # float16 storage; the forward itself may differ in the last bits
    assert np.abs(xa[0] - xa[1]).max() > 1e-2


@pytest.mark.parametrize("workers", [0, 2])
def test_vanished_and_broken_files_are_reported_not_fatal(tmp_path, clip, workers):
    project, paths = _make_project(tmp_path, 7)
    paths[2].unlink()
    paths[5].write_bytes(b"not an image at all")
    res = compute_features(project, clip, batch_size=3, num_workers=workers)
    assert (res["computed"], res["failed"]) == (5, 2)
    reasons = {Path(f["path"]).name: f["reason"] for f in res["failures"]}
    assert reasons[paths[2].name] == "file not found"
    assert reasons[paths[5].name].startswith("cannot decode")
    status = {Path(r["path"]).name: r["status"] for r in project.db["images"].rows}
    assert status[paths[2].name] == "missing" and status[paths[5].name] == "ok"
    assert get_run(project, res["run_id"])["status"] == "done"
    ids, X = feature_matrix(project, clip.key)
    assert len(ids) == 5 and X.shape == (5, 64)


def test_feature_matrix_and_latest_set(tmp_path, clip, dino):
    project, _ = _make_project(tmp_path, 5)
    assert latest_set(project, "clip") is None
    with pytest.raises(NotReadyError):
        feature_matrix(project, "clip")
    with pytest.raises(NotReadyError):
        feature_matrix(project, "clip:nothing:here")
    compute_features(project, clip, num_workers=0)
    compute_features(project, dino, num_workers=0)
    s = latest_set(project, "dino")
    assert (s["key"], s["dim"], s["count"]) == (dino.key, 32, 5)
    assert feature_matrix(project, "clip")[1].shape == (5, 64)
    # An image marked missing later drops out of the matrix.
    victim = project.images()[0]["id"]
    with project.db.conn:
        project.db["images"].update(victim, {"status": "missing"})
    ids, X = feature_matrix(project, "dino")
    assert victim not in ids and X.shape == (4, 32)


def test_default_workers():
    assert default_num_workers(10) == 0
    assert default_num_workers(100_000) >= 0


@pytest.mark.parametrize("source", ["generated", "cifar"])
def test_class_folder_images(tmp_path, clip, dino, source):
    src = (class_folders if source == "generated" else cifar_subset)(tmp_path / source, per_class=4)
    project = Project.create(tmp_path / "proj", ["a", "b"])
    files = sorted(p for p in src.rglob("*.jpg"))
    _add_files(project, files)
    for model in (clip, dino):
        res = compute_features(project, model, batch_size=16)
        assert (res["computed"], res["failed"]) == (40, 0)
        ids, X = feature_matrix(project, model.kind)
        assert X.shape == (40, model.dim) and np.isfinite(X).all()
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=2e-3)
        assert len({row.tobytes() for row in X}) == 40  # all different
        rows = {r["id"]: Path(r["path"]) for r in project.images()}
        np.testing.assert_allclose(X[:5], _direct(model, [rows[i] for i in ids[:5]]), atol=2e-3)
