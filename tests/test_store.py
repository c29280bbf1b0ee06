"""The persistence layer on its own: feature-file growth, row allocation, repair, transactions and locks."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

import store
from store import features as features_mod
from store.lock import LockBusy, project_lock

from .conftest import REPO

DIM = 8


@pytest.fixture
def fs(tmp_path, monkeypatch):
    monkeypatch.setattr(features_mod, "_MIN_CAPACITY", 4)  # grow after a few rows
    db = store.connect(tmp_path / store.DB_FILENAME)
    feats = store.FeatureStore(db, tmp_path / "features")
    set_id = feats.ensure_set("clip:test", "clip", DIM)
    return feats, set_id


def _vecs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32) + 0.1


def _shas(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


def _rows(feats, set_id) -> dict[str, int]:
    return dict(feats.db.execute("select sha256, row from feature_rows where feature_set_id = ?", [set_id]))


def test_growth_keeps_every_vector_and_rows_are_dense(fs):
    feats, set_id = fs
    batches = [(_shas(f"b{k}-", n), _vecs(n, k)) for k, n in enumerate([3, 2, 7, 1, 20])]
    for shas, vecs in batches:
        assert feats.append(set_id, shas, vecs) == len(shas)
    all_shas = [s for shas, _ in batches for s in shas]
    want = np.concatenate([v for _, v in batches]).astype(np.float16)
    assert feats.count(set_id) == feats.extent(set_id) == len(all_shas) == 33
    assert sorted(_rows(feats, set_id).values()) == list(range(33))
    np.testing.assert_array_equal(feats.load(set_id, all_shas).astype(np.float16), want)
    assert np.load(feats._file("clip:test"), mmap_mode="r").shape[0] >= 33  # grown from 4
    assert not (feats.root / features_mod.slug("clip:test") / "vectors.tmp.npy").exists()


def test_present_and_repeated_shas_are_never_appended_twice(fs):
    feats, set_id = fs
    feats.append(set_id, ["a", "b"], _vecs(2, 0))
    first = feats.load(set_id, ["a", "b"])
    # "a" is present, "c" repeats: only "c" (its first vector) and "d" are added, after the last row.
    v = _vecs(4, 1)
    assert feats.append(set_id, ["a", "c", "c", "d"], v) == 2
    assert _rows(feats, set_id) == {"a": 0, "b": 1, "c": 2, "d": 3}
    np.testing.assert_array_equal(feats.load(set_id, ["a", "b"]), first)
    np.testing.assert_array_equal(feats.load(set_id, ["c", "d"]), v[[1, 3]].astype(np.float16).astype(np.float32))
    assert feats.append(set_id, ["a", "d"], _vecs(2, 2)) == 0


def test_rows_are_allocated_after_the_highest_row_not_the_count(fs):
    feats, set_id = fs
    feats.append(set_id, _shas("x", 5), _vecs(5, 0))
    with feats.db.conn:
        feats.db.execute("delete from feature_rows where sha256 = 'x0001'")  # a gap (as a repair leaves)
    assert feats.count(set_id) == 4 and feats.extent(set_id) == 5
    keep = feats.load(set_id, ["x0004"])
    feats.append(set_id, ["new"], _vecs(1, 9))
    assert _rows(feats, set_id)["new"] == 5  # not 4: that row is x0004's
    np.testing.assert_array_equal(feats.load(set_id, ["x0004"]), keep)
    assert feats.matrix(set_id).shape == (6, DIM)


def test_concurrent_appenders_in_threads_share_no_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(features_mod, "_MIN_CAPACITY", 4)
    path = tmp_path / store.DB_FILENAME
    db0 = store.connect(path)
    set_id = store.FeatureStore(db0, tmp_path / "features").ensure_set("k", "clip", DIM)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(prefix: str, seed: int) -> None:
        feats = store.FeatureStore(store.connect(path), tmp_path / "features")
        try:
            start.wait()
            for k in range(15):  # overlapping shas: half of each batch is the other writer's too
                shas = [f"{prefix}{k}-{i}" for i in range(3)] + [f"shared{k}-{i}" for i in range(3)]
                feats.append(set_id, shas, _vecs(6, seed * 100 + k))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p, s)) for p, s in (("a", 1), ("b", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    feats = store.FeatureStore(db0, tmp_path / "features")
    rows = _rows(feats, set_id)
    assert len(rows) == 15 * 9 and sorted(rows.values()) == list(range(15 * 9))
    assert feats.check(set_id) == {"past_end": [], "zeroed": []}


def test_repair_drops_rows_past_the_file_and_zeroed_vectors(fs):
    feats, set_id = fs
    feats.append(set_id, _shas("s", 10), _vecs(10, 0))
    capacity = np.load(feats._file("clip:test"), mmap_mode="r").shape[0]
    with feats.db.conn:
        feats.db.execute("update feature_rows set row = ? where sha256 = 's0009'", [capacity + 3])
    mm = np.load(feats._file("clip:test"), mmap_mode="r+")
    mm[2] = 0
    mm.flush()
    del mm
    assert feats.check(set_id) == {"past_end": ["s0009"], "zeroed": ["s0002"]}
    assert feats.repair(set_id) == {"key": "clip:test", "past_end": 1, "zeroed": 1}
    assert feats.missing(set_id, _shas("s", 10)) == ["s0002", "s0009"]
    assert feats.repair(set_id) is None
    # The next append fills exactly those two, after the highest remaining row.
    feats.append(set_id, ["s0002", "s0009"], _vecs(2, 5))
    assert feats.check(set_id) == {"past_end": [], "zeroed": []} and feats.count(set_id) == 10


def test_repair_reads_only_rows_newer_than_its_last_clean_check(fs):
    """An open reads the vectors of rows added since the last clean check (a million images' file is a GB)."""
    feats, set_id = fs
    feats.append(set_id, _shas("w", 6), _vecs(6, 0))
    assert feats.repair(set_id) is None  # clean: rows 0-5 are marked checked
    feats.append(set_id, _shas("n", 3), _vecs(3, 1))
    mm = np.load(feats._file("clip:test"), mmap_mode="r+")
    mm[1] = 0  # below the mark: not read again (a committed vector never changes)
    mm[7] = 0  # a new row: read and dropped
    mm.flush()
    del mm
    assert feats.repair(set_id) == {"key": "clip:test", "past_end": 0, "zeroed": 1}
    assert feats.missing(set_id, _shas("n", 3)) == ["n0001"]
    # A vector file shorter than the mark (replaced, truncated) is read in full again.
    path = feats._file("clip:test")
    short = np.lib.format.open_memmap(path.with_suffix(".x.npy"), mode="w+", dtype=np.float16, shape=(4, 8))
    short[:] = np.load(path, mmap_mode="r")[:4]
    short.flush()
    del short
    path.with_suffix(".x.npy").replace(path)
    report = feats.repair(set_id)
    assert report["zeroed"] == 1 and report["past_end"] == 4  # w0001 (row 1), and rows 4, 5, 6, 8


def test_repair_of_a_missing_vector_file_drops_every_row(fs):
    feats, set_id = fs
    feats.append(set_id, _shas("m", 3), _vecs(3, 0))
    feats._file("clip:test").unlink()
    assert feats.repair(set_id)["past_end"] == 3 and feats.count(set_id) == 0


def test_transaction_commits_rolls_back_and_nests(tmp_path):
    db = store.connect(tmp_path / store.DB_FILENAME)
    with store.transaction(db):
        db.execute("insert into meta (key, value) values ('a', '1')")
        assert db.conn.in_transaction  # db.execute did not auto-commit inside
        with pytest.raises(RuntimeError), store.transaction(db):
            db.execute("insert into meta (key, value) values ('b', '2')")
            raise RuntimeError
    with pytest.raises(RuntimeError), store.transaction(db):
        db.execute("insert into meta (key, value) values ('c', '3')")
        raise RuntimeError
    assert [r[0] for r in db.execute("select key from meta order by key")] == ["a"]


def test_old_runs_table_gains_pid_and_host(tmp_path):
    db = store.connect(tmp_path / store.DB_FILENAME)
    assert {"pid", "host"} <= set(db["runs"].columns_dict)
    db.execute("PRAGMA user_version = 4")  # as an older Labeler left it: the migration is idempotent
    db.conn.commit()
    db.conn.close()
    db = store.connect(tmp_path / store.DB_FILENAME)
    assert store.schema_version(db) == store.SCHEMA_VERSION


def test_project_lock_is_reentrant_per_thread_and_exclusive_across_threads_and_processes(tmp_path):
    lock = project_lock(tmp_path)
    assert lock is project_lock(str(tmp_path) + "/.")
    assert lock.acquire("features") is True
    assert lock.acquire("label") is False  # the same thread again (train labeling at its end)
    assert lock.holder()["kind"] == "features"
    seen: list = []

    def other() -> None:
        try:
            lock.acquire("label", timeout=0)
            seen.append("acquired")
        except LockBusy as exc:
            seen.append(exc.holder)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen and seen[0] != "acquired" and seen[0]["kind"] == "features"
    code = (
        "import sys; from store.lock import project_lock, LockBusy\n"
        "try:\n project_lock(sys.argv[1]).acquire('import', timeout=0)\nexcept LockBusy as e:\n"
        " print('busy', e.holder['pid'])\nelse:\n print('acquired')"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.split() == ["busy", str(__import__("os").getpid())], out.stderr
    assert not lock.is_free() and lock.held_here
    lock.release()  # the outermost holder's release frees it (the re-entry took nothing)
    assert not lock.held_here and lock.is_free() and lock.holder() == {}


def test_in_chunks_splits_below_the_variable_limit_and_binds_every_value(tmp_path):
    from store import CHUNK, in_chunks

    assert CHUNK < 999  # the oldest SQLite's limit on bound variables per statement
    values = iter(range(2 * CHUNK + 5))  # any iterable, read once
    parts = list(in_chunks(values))
    assert [len(chunk) for chunk, _ in parts] == [CHUNK, CHUNK, 5]
    assert [v for chunk, _ in parts for v in chunk] == list(range(2 * CHUNK + 5))
    assert all(marks == ",".join("?" * len(chunk)) for chunk, marks in parts)
    assert list(in_chunks([])) == []  # never an empty "in ()"

    db = store.connect(tmp_path / store.DB_FILENAME)
    db.execute("create table t (id integer primary key)")
    db.conn.executemany("insert into t values (?)", [(i,) for i in range(3 * CHUNK)])
    wanted = list(range(1, 3 * CHUNK, 2))  # more ids than one statement may bind
    found = []
    for chunk, marks in in_chunks(wanted):
        found += [r[0] for r in db.execute(f"select id from t where id > ? and id in ({marks})", [0, *chunk])]
    assert sorted(found) == wanted


def test_rows_for_more_shas_than_one_query_binds(fs):
    feats, set_id = fs
    shas = _shas("many-", store.CHUNK + 50)
    feats.append(set_id, shas[::2], _vecs(len(shas[::2]), 5))
    rows = feats.rows_for(set_id, shas)
    assert (rows[::2] >= 0).all() and (rows[1::2] == -1).all()
    assert sorted(rows[::2].tolist()) == list(range(len(shas[::2])))


def test_a_version_6_database_gains_import_roots_with_its_images_roots(tmp_path):
    db = store.connect(tmp_path / store.DB_FILENAME)
    db.execute("drop index idx_images_root_id")
    db.execute("drop table import_roots")
    db.execute("alter table images drop column root_id")
    db.execute("PRAGMA user_version = 6")
    rows = [("a", "/d/cat", "0000.jpg"), ("b", "/d/dog", "0000.jpg"), ("c", "/d/cat", "0001.jpg"), ("d", None, "x")]
    for sha, root, rel in rows:
        db.execute(
            "insert into images (sha256, path, rel_path, root, status, added_at) values (?, ?, ?, ?, 'ok', 1.0)",
            [sha, f"/p/{sha}", rel, root],
        )
    db.conn.commit()
    db.conn.close()
    db = store.connect(tmp_path / store.DB_FILENAME)
    assert store.schema_version(db) == store.SCHEMA_VERSION == 8
    assert db.execute("select id, path, kind from import_roots order by id").fetchall() == [
        (1, "/d/cat", None),
        (2, "/d/dog", None),
    ]
    assert db.execute("select sha256, root_id from images order by id").fetchall() == [
        ("a", 1),
        ("b", 2),
        ("c", 1),
        ("d", None),
    ]
