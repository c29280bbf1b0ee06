"""Feature computation: cache, resume, batch-size invariance, unreadable files, class folders (generated; CIFAR).

The CIFAR case is an extra: it uses ../shared/data where present and skips elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
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

from .conftest import REPO, cifar_subset, class_folders


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


# --- one writer at a time, repair -------------------------------------------------------------------------
def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "labeler", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=600, **kw
    )


def _assert_consistent(project: Project, n_images: int) -> None:
    """Every row inside its file, one row per image, no zeroed vectors, every image has a vector."""
    shas = [im["sha256"] for im in project.images()]
    assert len(shas) == n_images
    for s in project.features.sets():
        sid = int(s["id"])
        rows = project.features.rows_for(sid, shas)
        assert (rows >= 0).all(), f"{s['key']}: {(rows < 0).sum()} images without a vector"
        assert project.features.count(sid) == n_images
        assert len(set(rows.tolist())) == n_images
        assert project.features.check(sid) == {"past_end": [], "zeroed": []}
        assert project.features.extent(sid) <= np.load(project.features._file(s["key"]), mmap_mode="r").shape[0]


def test_two_concurrent_feature_processes_leave_a_consistent_project(tmp_path, capsys):
    n = 400
    project, _ = _make_project(tmp_path, n)
    cmd = [sys.executable, "-m", "labeler", "features", str(project.root), "--clip", "tiny-random"]
    cmd += ["--dino", "tiny-random", "--batch-size", "16", "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        # Each either ran (alone, or after the other released the lock) or was refused with the message.
        assert p.returncode == 0 or (p.returncode == 2 and "already running on proj" in err), (out, err)
    assert any(p.returncode == 0 for p in procs)
    project = Project(project.root)
    _assert_consistent(project, n)
    # What they left, read back by the CLI in this process (the writers have ended; two more interpreters would
    # only add their start-up)
    from labeler.cli import main

    capsys.readouterr()
    again = ["features", str(project.root), "--clip", "tiny-random", "--dino", "tiny-random", "--json", "--quiet"]
    assert main(again) == 0
    assert [s["computed"] for s in json.loads(capsys.readouterr().out)["feature_sets"]] == [0, 0]
    assert main(["label", str(project.root), "--quiet"]) == 0


def test_a_second_writer_job_is_refused_with_a_clear_message(tmp_path, clip):
    from labeler.jobs import Job, ProjectBusyError
    from store.lock import project_lock

    project, _ = _make_project(tmp_path, 6)
    holding, release = threading.Event(), threading.Event()

    def other_thread_job() -> None:  # like the app: a job in a worker thread of this process
        with Job.start(Project(project.root), "import"):
            holding.set()
            release.wait(60)

    t = threading.Thread(target=other_thread_job)
    t.start()
    try:
        assert holding.wait(60)
        with pytest.raises(ProjectBusyError, match=rf"import is already running on proj \(pid {os.getpid()}, started"):
            compute_features(project, clip)
        busy = pytest.raises(ProjectBusyError, compute_features, project, clip).value
        assert busy.hint.step == "cancel" and busy.hint.value.isdigit()  # the holder's run, to cancel
        assert "wait for it or cancel it" in str(pytest.raises(ProjectBusyError, Job.start, project, "label").value)
        Job.start(project, "cluster").finish("done")  # kinds that write no shared state are not locked
        # The app's background tasks say so up front instead of starting a task that fails at once.
        from labeler.jobs import background_tasks, run_in_background

        before = len(background_tasks(str(project.root)))
        with pytest.raises(ProjectBusyError, match="import is already running on proj"):
            run_in_background(str(project.root), "features", lambda: None)
        assert len(background_tasks(str(project.root))) == before
        run_in_background(str(project.root), "cluster", lambda: None).wait(30)
    finally:
        release.set()
        t.join()
    assert compute_features(project, clip)["computed"] == 6  # the lock was released with that job
    assert project_lock(project.root).is_free()  # ... and by this one
    assert not [r for r in list_runs(project) if r["status"] == "running"]


def test_two_threads_feature_jobs_do_not_corrupt_the_store(tmp_path, clip):
    from labeler.jobs import ProjectBusyError

    project, _ = _make_project(tmp_path, 40)
    outcomes: list = []
    start = threading.Barrier(2)

    def job() -> None:
        p = Project(project.root)
        start.wait()
        try:
            outcomes.append(compute_features(p, clip, batch_size=4)["computed"])
        except ProjectBusyError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 2 and 40 in outcomes  # one did the work; the other was refused or found it done
    other = next(o for o in outcomes if o != 40) if outcomes.count(40) == 1 else 0
    assert other == 0 or "features is already running" in other
    _assert_consistent(project, 40)


def test_rows_past_the_file_and_zeroed_vectors_are_repaired_on_open_and_status_says_so(tmp_path, clip):
    from labeler import project as project_mod

    project, _ = _make_project(tmp_path, 12)
    compute_features(project, clip)
    fset = latest_set(project, "clip")
    path = project.features._file(fset["key"])
    capacity = np.load(path, mmap_mode="r").shape[0]
    shas = [im["sha256"] for im in project.images()]
    with project.db.conn:  # a row past the end of the file (its vector was lost when the file was replaced)
        project.db.execute("update feature_rows set row = ? where sha256 = ?", [capacity + 5, shas[3]])
    mm = np.load(path, mmap_mode="r+")  # and a committed row whose vector never reached the file
    mm[int(project.features.rows_for(int(fset["id"]), [shas[7]])[0])] = 0
    mm.flush()
    del mm
    project.close()
    project_mod._checked.discard(os.path.realpath(project.root))  # a new process opening it

    status = _cli("status", str(project.root), "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert [(r["key"], r["past_end"], r["zeroed"]) for r in data["feature_repairs"]] == [(fset["key"], 1, 1)]
    text = _cli("status", str(project.root)).stdout
    assert "repaired on open — dropped 1 rows past the end of the vector file and 1 zeroed vectors" in text

    project = Project(project.root)
    assert project.features.missing(int(fset["id"]), shas) == [shas[3], shas[7]]
    res = compute_features(project, clip)
    assert res["computed"] == 2 and res["cached"] == 10
    _assert_consistent(project, 12)
    np.testing.assert_allclose(
        project.features.load(int(fset["id"]), shas[3:4]), _direct(clip, [Path(project.images()[3]["path"])]), atol=2e-3
    )
    assert project.feature_repairs() == []
    assert "repaired" not in _cli("status", str(project.root)).stdout


def test_the_next_batch_decodes_while_the_model_runs_and_results_are_unchanged(tmp_path, clip, monkeypatch):
    """Without worker processes, batch k+1 is decoded in a thread during batch k's forward (the decode hid
    behind the bf16 forward); features, their order and the failures are those of decoding in turn."""
    import labeler.features as lfeatures

    project, paths = _make_project(tmp_path, 10, "overlap")
    paths[6].write_bytes(b"broken")
    decoding = threading.Event()
    real_getitem = lfeatures.ImageFiles.__getitem__

    def getitem(self, i):
        if i >= 4:  # an image of a later batch
            decoding.set()
        return real_getitem(self, i)

    overlapped = []
    real = clip.encode_images

    def forward(x):
        if not overlapped:  # the first batch's forward waits (bounded) for the next batch's decode to start
            overlapped.append(decoding.wait(timeout=30))
        return real(x)

    monkeypatch.setattr(lfeatures.ImageFiles, "__getitem__", getitem)
    monkeypatch.setattr(clip, "encode_images", forward)
    res = compute_features(project, clip, batch_size=4, num_workers=0)
    assert overlapped == [True]
    monkeypatch.undo()
    serial, _ = _make_project(tmp_path, 0, "serial")
    _add_files(serial, paths)
    monkeypatch.setattr(lfeatures, "PREFETCH_BATCHES", 0)
    res0 = compute_features(serial, clip, batch_size=4, num_workers=0)
    assert (res["computed"], res["failed"]) == (res0["computed"], res0["failed"]) == (9, 1)
    assert [Path(f["path"]).name for f in res["failures"]] == [paths[6].name]
    ids, x = feature_matrix(project, clip.key)
    ids0, x0 = feature_matrix(serial, clip.key)
    shas = {r["id"]: r["sha256"] for r in project.images()}
    shas0 = {r["id"]: r["sha256"] for r in serial.images()}
    assert [shas[i] for i in ids] == [shas0[i] for i in ids0]  # same images, same order
    np.testing.assert_allclose(x, x0, atol=2e-3)
    np.testing.assert_allclose(x, _direct(clip, [p for k, p in enumerate(paths) if k != 6]), atol=2e-3)


def test_prefetch_batches_keeps_order_and_stops_its_thread_when_abandoned():
    from labeler.features import prefetch_batches

    class Items:
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return i, torch.full((2,), float(i)), i != 3, "" if i != 3 else "bad"

    for depth in (0, 1, 3):
        got = list(prefetch_batches(Items(), 4, depth))
        assert [b[0] for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        assert got[0][1].shape == (3, 2) and got[0][2] == [True, True, True, False]
    before = threading.active_count()
    gen = prefetch_batches(Items(), 2, 1)
    next(gen)
    gen.close()  # what a cancelled run does
    assert not [t for t in threading.enumerate() if t.name.startswith("labeler-decode")]
    assert threading.active_count() <= before
