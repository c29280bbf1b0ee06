"""FAISS index: exact vs IVF, nprobe tuned to recall@20, persistence, staleness, excluded images."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from labeler import index as lindex
from labeler.errors import InvalidInputError, NotReadyError

from .explore_helpers import (
    add_features,
    add_images,
    make_project,
    one_faiss_thread,  # noqa: F401  (autouse fixture)
    planted,
    unit,
)


@pytest.fixture(autouse=True)
def _fresh_cache():
    lindex.clear_cache()
    yield
    lindex.clear_cache()


def _exact_topk(x, q, k):
    sims = q @ x.T
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_small_set_is_exact(project):
    _, feats, _ = planted(5, 32, 300, seed=1)
    ids = make_project(project, feats)
    fi = lindex.get_index(project, "clip")
    assert fi.type == "flat" and fi.n == 300 and fi.n_searchable == 300
    q = unit(np.random.default_rng(2).normal(size=(7, 32)))
    scores, got = fi.search(q, 10)
    want = np.asarray(ids)[_exact_topk(feats, q, 10)]
    assert (got == want).mean() > 0.97  # float16 storage may swap near-ties
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    # Its own image is left out of an image query.
    s, nb = fi.search_images([ids[0]], 5)
    assert ids[0] not in nb[0] and nb.shape == (1, 5)


def test_ivf_reaches_target_recall_and_tuning_matters(project):
    """20k clustered vectors with the switch set low: IVF, nprobe tuned to recall@20 >= 0.95 on new queries."""
    n, d = 20_000, 48
    _, feats, _ = planted(40, d, n, noise=1.2, seed=3)
    ids = np.asarray(make_project(project, feats))
    fi = lindex.get_index(project, "clip", switch_at=2_000)
    assert fi.type == "ivf"
    nlist = fi.meta["nlist"]
    assert 1 < fi.nprobe < nlist, (fi.nprobe, nlist)  # not exhaustive: the switch buys something
    assert fi.meta["recall"] >= 0.95
    # Held-out check with other queries than the tuning ones (other seed), own image excluded.
    rng = np.random.default_rng(99)
    qi = rng.choice(n, 300, replace=False)
    x16 = project.features.matrix(fi.set_id)
    x = unit(np.asarray(x16, dtype=np.float32))
    truth = ids[lindex._drop_self(_exact_topk(x, x[qi], 21), qi, 20)]
    _, got = fi.search_images(ids[qi], 20)
    assert lindex.recall_at_k(got, truth) >= 0.95
    # The broken variant (one probe) misses many neighbours, so the tuning is what gets recall up.
    _, got1 = fi.search(x[qi], 21, nprobe=1)
    assert lindex.recall_at_k(lindex._drop_self(got1, ids[qi], 20), truth) < 0.9


def test_persisted_index_is_loaded_extended_and_rebuilt_only_when_stale(project, monkeypatch):
    builds = []
    real_build = lindex.build_faiss_index
    monkeypatch.setattr(lindex, "build_faiss_index", lambda *a, **kw: builds.append(1) or real_build(*a, **kw))
    _, feats, _ = planted(6, 32, 700, seed=4)
    make_project(project, feats[:500])
    fi = lindex.get_index(project, "clip")
    folder = lindex.index_dir(project, fi.key)
    assert (folder / lindex.INDEX_FILE).is_file() and (folder / lindex.META_FILE).is_file()
    assert len(builds) == 1 and fi.n == 500
    assert lindex.get_index(project, "clip") is fi  # in-process cache
    lindex.clear_cache()  # "reopen": a new process loads the saved index
    fi2 = lindex.get_index(project, "clip")
    assert len(builds) == 1 and fi2 is not fi and fi2.n == 500
    # New images arrive: their vectors are added, nothing rebuilt, and they are searchable.
    new_ids = add_images(project, 200, start=500)
    add_features(project, feats[500:], start=500)
    fi3 = lindex.get_index(project, "clip")
    assert len(builds) == 1 and fi3.n == 700
    _, nb = fi3.search(feats[650:651], 1)
    assert nb[0, 0] == new_ids[150]
    lindex.clear_cache()
    assert lindex.get_index(project, "clip").n == 700 and len(builds) == 1
    # A row map that no longer matches (here: the saved hash) means stale: rebuilt.
    meta = (folder / lindex.META_FILE).read_text().replace('"rows_hash": "', '"rows_hash": "0')
    (folder / lindex.META_FILE).write_text(meta)
    lindex.clear_cache()
    assert lindex.get_index(project, "clip").n == 700 and len(builds) == 2
    # A corrupt index file: rebuilt, not a crash.
    (folder / lindex.INDEX_FILE).write_bytes(b"garbage")
    lindex.clear_cache()
    assert lindex.get_index(project, "clip").n == 700 and len(builds) == 3


def test_growing_past_the_switch_point_rebuilds_as_ivf(project):
    _, feats, _ = planted(10, 32, 2600, seed=5)
    make_project(project, feats[:1000])
    assert lindex.get_index(project, "clip", switch_at=1500).type == "flat"
    add_images(project, 1600, start=1000)
    add_features(project, feats[1000:], start=1000)
    before = lindex.STATS["built"]
    fi = lindex.get_index(project, "clip")  # the saved switch point is kept
    assert fi.type == "ivf" and fi.n == 2600 and lindex.STATS["built"] == before + 1
    # Excluded images are hidden from IVF searches too (ID selector with the tuned nprobe).
    from labeler.review import exclude_images

    _, nb = fi.search(feats[2000:2001], 3)
    exclude_images(project, nb[0, :2].tolist())
    _, nb2 = lindex.get_index(project, "clip").search(feats[2000:2001], 3)
    assert not set(nb[0, :2].tolist()) & set(nb2[0].tolist()) and nb2[0, 0] == nb[0, 2]


def test_excluded_images_are_not_returned_without_rebuild(project):
    from labeler.review import exclude_images, include_images

    _, feats, _ = planted(4, 16, 200, seed=6)
    ids = make_project(project, feats)
    fi = lindex.get_index(project, "clip")
    _, nb = fi.search(feats[:1], 5)
    gone = nb[0, :3].tolist()
    built = lindex.STATS["built"]
    assert exclude_images(project, gone) == 3
    fi = lindex.get_index(project, "clip")
    _, nb2 = fi.search(feats[:1], 5)
    assert not set(gone) & set(nb2[0].tolist()) and (nb2[0] >= 0).all()
    assert fi.n_searchable == 197 and lindex.STATS["built"] == built
    include_images(project, gone)
    _, nb3 = lindex.get_index(project, "clip").search(feats[:1], 5)
    assert set(gone) <= set(nb3[0].tolist()) and ids


def test_errors_say_what_to_do(project):
    with pytest.raises(NotReadyError, match="no clip features") as info:
        lindex.get_index(project, "clip")
    assert info.value.hint.step == "features"
    with pytest.raises(NotReadyError, match="no feature set"):
        lindex.get_index(project, "clip:nope")
    make_project(project, planted(2, 8, 20)[1])
    fi = lindex.get_index(project, "clip")
    with pytest.raises(InvalidInputError, match="k must be"):
        fi.search(np.ones((1, 8)), 0)
    with pytest.raises(InvalidInputError, match="dimension"):
        fi.search(np.ones((1, 9)), 3)
    s, i = fi.search(np.ones((2, 8)), 50)  # k larger than the set: capped
    assert i.shape == (2, 20)


def test_tune_nprobe_pure():
    rng = np.random.default_rng(0)
    x = unit(rng.normal(size=(3000, 16)))
    q = faiss.IndexFlatIP(16)
    ivf = faiss.IndexIVFFlat(q, 16, 32, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x)
    ivf.add(x)
    nprobe, recall = lindex.tune_nprobe(ivf, x, target=0.9)
    assert recall >= 0.9 and 1 <= nprobe <= 32
    assert lindex.recall_at_k(np.array([[1, 2, -1]]), np.array([[2, 3]])) == 0.5
    assert lindex.default_nlist(1_000_000) == 2048 and lindex.default_nlist(10) == 16


def test_tune_nprobe_on_a_sample_of_the_rows_errs_on_the_large_side():
    """Tuning against a sample of the database (the exact search over all rows was most of a 1M build) picks an
    nprobe at least the full tuning's, whose recall over all rows reaches the target, and not the exhaustive one."""
    rng = np.random.default_rng(3)
    centres = unit(rng.normal(size=(200, 16)))
    x = unit(centres[rng.integers(0, 200, 30_000)] + 0.35 * rng.normal(size=(30_000, 16)))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(16), 16, 128, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x)
    ivf.add(x)
    full, _ = lindex.tune_nprobe(ivf, x, target=0.9, n_queries=300, sample=None)
    sampled, in_sample = lindex.tune_nprobe(ivf, x, target=0.9, n_queries=300, sample=5000)
    assert in_sample >= 0.9 and full <= sampled < 128, (full, sampled)
    qi = np.random.default_rng(9).choice(len(x), 300, replace=False)  # other queries, all rows: the real recall
    truth = lindex._drop_self(lindex.exact_knn(x[qi], x, 21), qi, 20)
    _, found = ivf.search(x[qi], 21, params=faiss.SearchParametersIVF(nprobe=sampled))
    assert lindex.recall_at_k(lindex._drop_self(found, qi, 20), truth) >= 0.9


def test_ivf_reopens_memory_mapped_with_the_same_results_and_still_extends(project):
    """Reopening a saved IVF index maps its lists instead of reading them (a 1M index took ~8 s to reopen);
    searches are the same, and new vectors are still added (the mapped index is read fully first)."""
    _, feats, _ = planted(20, 32, 4000, noise=1.0, seed=7)
    make_project(project, feats[:3000])
    built = lindex.get_index(project, "clip", switch_at=1000)
    assert built.type == "ivf" and not built.mapped
    q = feats[::97]
    want = built.search(q, 10)
    lindex.clear_cache()
    reopened = lindex.get_index(project, "clip")
    assert reopened is not built and reopened.mapped and reopened.nprobe == built.nprobe
    got = reopened.search(q, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    new_ids = add_images(project, 1000, start=3000)
    add_features(project, feats[3000:], start=3000)
    before = lindex.STATS["built"]
    grown = lindex.get_index(project, "clip")
    assert grown.n == 4000 and not grown.mapped and lindex.STATS["built"] == before
    _, nb = grown.search(feats[3500:3501], 1)
    assert nb[0, 0] == new_ids[500]


def test_row_hash_from_sql_matches_the_list_of_row_shas_with_gaps(project):
    """RowShas hashes the rows in SQL-sized strings: the same hash as the list of sha256s, gaps included."""
    _, feats, _ = planted(3, 8, 50, seed=8)
    make_project(project, feats)
    set_id = int(project.features.latest("clip")["id"])
    with project.db.conn:  # a gap, as a repair leaves one
        project.db.conn.execute("delete from feature_rows where feature_set_id = ? and row = 7", [set_id])
    rows = dict(project.db.execute("select row, sha256 from feature_rows where feature_set_id = ?", [set_id]))
    shas = [rows.get(r, "") for r in range(50)]
    mapped, row_image = lindex._row_map(project, set_id)
    assert len(mapped) == 50 and row_image[7] == -1 and (np.delete(row_image, 7) >= 0).all()
    for m in (50, 20, 0, 50):  # prefixes in any order
        assert mapped.hash(m) == lindex._rows_hash(shas[:m])


def test_build_streams_a_float16_matrix_as_unit_vectors():
    """The builder takes the stored float16 matrix (not unit length) block by block: the same index as from the
    unit float32 copy; exact_knn over blocks equals one exact search."""
    _, feats, _ = planted(16, 24, 3000, noise=1.0, seed=9)
    x16 = (3.0 * feats).astype(np.float16)  # any scale: normalised here
    x32 = lindex.as_unit_float32(x16)
    q = x32[::50]
    truth = faiss.knn(q, x32, 11, metric=faiss.METRIC_INNER_PRODUCT)[1]
    np.testing.assert_array_equal(lindex.exact_knn(q, x16, 11, chunk=700), truth)
    for switch in (10**9, 0):
        a, info_a = lindex.build_faiss_index(x16, switch_at=switch)
        b, info_b = lindex.build_faiss_index(x32, switch_at=switch)
        assert info_a["nprobe"] == info_b["nprobe"] and a.ntotal == b.ntotal == 3000
        np.testing.assert_array_equal(a.search(q, 10)[1], b.search(q, 10)[1])


def test_reopen_reads_the_saved_row_map_until_rows_or_images_change(project, monkeypatch):
    """The row → image map is saved beside the index; a reopen with the same rows and images signature reads
    it instead of joining every row with ``images`` in SQL; excluding an image makes it computed again."""
    from labeler.review import exclude_images

    _, feats, _ = planted(4, 16, 300, seed=10)
    ids = make_project(project, feats)
    first = lindex.get_index(project, "clip")
    want = first.row_image.copy()
    lindex.clear_cache()
    real = lindex._query_row_image
    monkeypatch.setattr(lindex, "_query_row_image", lambda *a: pytest.fail("the row map was queried again"))
    again = lindex.get_index(project, "clip")
    np.testing.assert_array_equal(again.row_image, want)
    calls = []
    monkeypatch.setattr(lindex, "_query_row_image", lambda *a: calls.append(1) or real(*a))
    exclude_images(project, [ids[3]])
    lindex.clear_cache()
    fi = lindex.get_index(project, "clip")
    assert calls == [1] and fi.row_image[3] == -1 and fi.n_searchable == 299
