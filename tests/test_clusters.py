"""k-means clusters: planted clusters recovered, stored per run, summaries, labeling a whole cluster."""

from __future__ import annotations

import numpy as np
import pytest

from labeler import clusters, labels
from labeler.errors import InvalidInputError, NotReadyError
from labeler.export import export, read_csv
from labeler.review import label_counts

from .explore_helpers import (
    label_run,
    make_project,
    one_faiss_thread,  # noqa: F401  (autouse fixture)
    planted,
    probs_for,
)


def _two_way_purity(assign, truth):
    """Majority-mapping purity in both directions (a trivial clustering cannot score high on both)."""
    return min(clusters.cluster_purity(assign, truth), clusters.cluster_purity(truth, assign))


def test_planted_clusters_are_recovered():
    _, feats, y = planted(8, 32, 800, noise=0.6, seed=0)
    centroids, assign, sim = clusters.kmeans(feats, 8, seed=1)
    assert centroids.shape == (8, 32) and assign.shape == sim.shape == (800,)
    assert _two_way_purity(assign, y) > 0.95
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-4)
    assert np.allclose(sim, (feats * centroids[assign]).sum(1), atol=1e-4)
    # Broken variants score low: random assignments, or a single cluster.
    rand = np.random.default_rng(0).integers(0, 8, 800)
    assert _two_way_purity(rand, y) < 0.5
    assert _two_way_purity(np.zeros(800, int), y) < 0.5


def test_small_projects_cluster_without_raw_faiss_warnings(capfd):
    """Issue 12: faiss printed "please provide at least 390 training points" (k=10 on 100 images) to stderr."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 16)).astype(np.float32)
    _, assign, _ = clusters.kmeans(x, clusters.default_k(10, len(x)))
    err = capfd.readouterr().err
    assert "training points" not in err and "WARNING" not in err
    assert len(set(assign.tolist())) > 1


def test_default_k_and_validation():
    assert clusters.default_k(10, 10_000) == 20
    assert clusters.default_k(500, 10_000) == clusters.MAX_DEFAULT_K
    assert clusters.default_k(10, 30) == 6 and clusters.default_k(3, 2) == 1 and clusters.default_k(3, 0) == 0
    with pytest.raises(InvalidInputError, match="k must be between"):
        clusters.kmeans(np.ones((5, 4)), 6)
    with pytest.raises(InvalidInputError, match="NaN"):
        clusters.kmeans(np.full((5, 4), np.nan), 2)


def _labeled_project(project, flip_cluster=2):
    """3 classes x 60 images; half of cluster ``flip_cluster``'s pseudo-labels point at the wrong class."""
    _, feats, y = planted(3, 32, 180, noise=0.5, seed=2)
    ids = make_project(project, feats)
    pseudo = y.copy()
    members = np.flatnonzero(y == flip_cluster)
    pseudo[members[::2]] = (flip_cluster + 1) % 3
    run = label_run(project, ids, probs_for(pseudo, 3, seed=3))
    return np.asarray(ids), y, pseudo, run


def test_cluster_run_stores_assignments_and_summaries_find_the_confused_cluster(project):
    ids, y, pseudo, _ = _labeled_project(project)
    with pytest.raises(NotReadyError, match="no clusters yet") as info:
        clusters.cluster_summaries(project)
    assert info.value.hint.step == "cluster"
    res = clusters.cluster_run(project, k=3, features="clip", seed=0)
    assert res["k"] == 3 and res["n"] == 180
    assign = clusters.assignments(project, res["run_id"])
    assert sorted(assign) == sorted(ids.tolist())
    got = np.array([assign[i] for i in ids])
    assert _two_way_purity(got, y) > 0.95
    summ = res["clusters"]
    assert sum(s["size"] for s in summ) == 180 and len(summ) == 3
    # Sorted by purity: the cluster with flipped pseudo-labels comes first, at about 50% purity.
    worst = summ[0]
    assert 0.4 < worst["majority_share"] < 0.6
    assert all(s["majority_share"] > 0.95 for s in summ[1:])
    members = clusters.cluster_members(project, worst["cluster"])
    truth = np.array([y[ids.tolist().index(i)] for i in members])
    assert (truth == 2).mean() > 0.95
    assert 0 < worst["mean_confidence"] < 1
    by_size = clusters.cluster_summaries(project, sort="size")
    assert [s["size"] for s in by_size] == sorted((s["size"] for s in by_size), reverse=True)
    # A second run keeps the first's assignments.
    res2 = clusters.cluster_run(project, k=5)
    assert clusters.latest_cluster_run(project)["id"] == res2["run_id"]
    assert len(set(clusters.assignments(project, res["run_id"]).values())) == 3
    with pytest.raises(InvalidInputError, match="'k' must be"):
        clusters.cluster_run(project, k=1000)
    with pytest.raises(InvalidInputError, match="no cluster 9"):
        clusters.cluster_members(project, 9, res["run_id"])


def test_labeling_a_cluster_changes_labels_counts_and_export(project, tmp_path):
    from labeler.review import accept_images, label_images

    ids, y, _, _ = _labeled_project(project)
    res = clusters.cluster_run(project, k=3)
    worst = res["clusters"][0]
    members = clusters.cluster_members(project, worst["cluster"])
    before = label_counts(project)
    not_car = sum(1 for it in labels.final_labels(project, members) if it.label != "car")
    assert not_car > 0
    assert label_images(project, members, "car") == len(members)
    after = label_counts(project)
    assert after["human"] == len(members)
    assert after["per_class"]["car"] == before["per_class"]["car"] + not_car
    summ = {s["cluster"]: s for s in clusters.cluster_summaries(project)}
    assert summ[worst["cluster"]]["final_majority"] == "car" and summ[worst["cluster"]]["final_share"] == 1.0
    assert summ[worst["cluster"]]["n_human"] == len(members)
    rows = {r["sha256"]: r for r in read_csv(export(project, "csv", tmp_path / "out.csv"))}
    shas = {r[0]: r[1] for r in project.db.execute("select id, sha256 from images")}
    assert all(rows[shas[i]]["label"] == "car" and rows[shas[i]]["source"] == "human" for i in members)
    # Accepting another cluster's pseudo-labels leaves the human ones alone.
    other = [s for s in res["clusters"] if s["cluster"] != worst["cluster"]][0]
    others = clusters.cluster_members(project, other["cluster"])
    assert accept_images(project, others + members[:3]) == len(others)
    final = {it.image_id: it for it in labels.final_labels(project)}
    assert all(final[i].source == "accepted" for i in others)
    assert all(final[i].source == "human" for i in members)
