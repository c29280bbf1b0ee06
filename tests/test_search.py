"""Image and text search, near-duplicates, the 2-D map, and the explore CLI commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labeler import index as lindex
from labeler import projection, search
from labeler.errors import InvalidInputError, NotReadyError

from .explore_helpers import (
    add_features,
    label_run,
    make_project,
    one_faiss_thread,  # noqa: F401  (autouse fixture)
    planted,
    probs_for,
    sha,
    unit,
)


@pytest.fixture(autouse=True)
def _fresh_cache():
    lindex.clear_cache()
    yield
    lindex.clear_cache()


class _FakeClip:
    """Text → a planted embedding: the vector of the first planted phrase found in the text."""

    def __init__(self, phrases: dict[str, np.ndarray]):
        self.phrases = phrases
        self.calls: list[list[str]] = []

    def encode_texts(self, texts):  # numpy, not torch: importing torch costs seconds (both are accepted)
        self.calls.append(list(texts))
        return np.stack([next(v for p, v in self.phrases.items() if p in t) for t in texts])


def test_text_search_finds_the_image_matching_the_planted_text(project, monkeypatch):
    rng = np.random.default_rng(0)
    feats = unit(rng.normal(size=(300, 32)))
    ids = make_project(project, feats)
    red_car = unit(feats[123] + 0.3 * unit(rng.normal(size=32)))  # near image 123 only
    fake = _FakeClip({"red car": red_car, "cat": unit(rng.normal(size=32))})
    seen = []
    monkeypatch.setattr(search, "_text_encoder", lambda fset, device: seen.append(fset["model"]) or fake)
    hits = search.text_search(project, "a red car at night", k=5)
    assert hits[0]["image_id"] == ids[123] and hits[0]["score"] > hits[1]["score"]
    assert hits[0]["rel_path"] == "img/123.png" and len(hits) == 5
    assert seen == ["fake"] and fake.calls == [["a red car at night"]]
    # The broken variant (a text that embeds elsewhere) does not land on image 123.
    assert search.text_search(project, "a cat", k=5)[0]["image_id"] != ids[123]
    with pytest.raises(InvalidInputError, match="give a text"):
        search.text_search(project, "  ")
    add_features(project, feats, kind="dino")
    with pytest.raises(InvalidInputError, match="needs CLIP"):
        search.text_search(project, "red car", features="dino")


def test_similar_images_are_the_planted_cluster_mates(project):
    _, feats, y = planted(6, 32, 240, noise=0.4, seed=1)
    ids = make_project(project, feats)
    label_run(project, ids, probs_for(y % 3, 3))
    hits = search.similar_images(project, ids[10], k=8)
    assert len(hits) == 8 and ids[10] not in [h["image_id"] for h in hits]
    assert all(y[ids.index(h["image_id"])] == y[10] for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert hits[0]["label"] in ("cat", "dog", "car") and hits[0]["source"] == "pseudo"
    # The query image can be named by sha256 prefix, path, rel_path or id.
    for ref in (sha(10), sha(10).upper(), "/x/10.png", "img/10.png", str(ids[10]), ids[10]):
        assert search.resolve_image(project, ref)["id"] == ids[10]
    with pytest.raises(InvalidInputError, match="several images"):
        search.resolve_image(project, sha(10)[:60])  # the planted sha256s share their first 60 digits
    with pytest.raises(InvalidInputError, match="no image in this project"):
        search.resolve_image(project, "/nowhere.jpg")
    with pytest.raises(InvalidInputError, match="k must be"):
        search.similar_images(project, ids[0], k=0)


def test_near_duplicates_finds_the_planted_groups(project):
    rng = np.random.default_rng(2)
    feats = unit(rng.normal(size=(400, 64)))
    feats[101] = unit(feats[100] + 0.05 * unit(rng.normal(size=64)))  # pair
    feats[201] = unit(feats[200] + 0.05 * unit(rng.normal(size=64)))  # triple (chained)
    feats[202] = unit(feats[201] + 0.05 * unit(rng.normal(size=64)))
    feats[300] = feats[299]  # exact copy
    ids = make_project(project, feats)
    groups = search.near_duplicates(project, threshold=0.95)
    got = [sorted(im["image_id"] for im in g["images"]) for g in groups]
    assert got[0] == [ids[200], ids[201], ids[202]]
    assert sorted(got[1:]) == sorted([[ids[100], ids[101]], [ids[299], ids[300]]])
    assert all(g["min_similarity"] >= 0.95 for g in groups)
    # A lower threshold finds more; a threshold above every pair finds none.
    assert len(search.near_duplicates(project, threshold=0.999)) == 1
    with pytest.raises(InvalidInputError, match="threshold"):
        search.near_duplicates(project, threshold=1.5)
    pairs = search.duplicate_groups(
        np.array([1, 2, 3]), np.array([[2, 3], [1, -1], [1, 2]]), np.array([[0.99, 0.5], [0.99, 0.0], [0.5, 0.2]]), 0.9
    )
    assert pairs == [{"images": [1, 2], "max_similarity": 0.99, "min_similarity": 0.99, "pairs": 1}]


def test_duplicate_chains_are_split_and_uniform_features_are_named(project):
    """Issue 12: union-find chained near-identical features into one "keep one" group of every image."""
    # the pure part: a ~ b ~ c with a !~ c (the pair 1-3 is not in the neighbour lists, or is given as 0.5)
    nbr, sims = np.array([[2, -1], [1, 3], [2, -1]]), np.array([[0.96, 0.0], [0.96, 0.97], [0.97, 0.0]])
    for similarity in (
        None,
        lambda m: np.array([[1, 0.96, 0.5], [0.96, 1, 0.97], [0.5, 0.97, 1]])[
            np.ix_([x - 1 for x in m], [x - 1 for x in m])
        ],
    ):
        groups = search.duplicate_groups(np.array([1, 2, 3]), nbr, sims, 0.95, similarity)
        assert [g["images"] for g in groups] == [[2, 3]]

    rng = np.random.default_rng(5)
    feats = unit(rng.normal(size=(200, 64)))
    a = feats[10]
    c = unit(a + 0.5 * unit(rng.normal(size=64) - (rng.normal(size=64) @ a) * a))  # cos(a, c) ≈ 0.9
    assert 0.85 < float(a @ c) < 0.93
    feats[11], feats[12] = unit(a + c), c  # b: ≥ 0.95 to both a and c
    for k in (51, 52, 53):  # a real group of four
        feats[k] = unit(feats[50] + 0.03 * unit(rng.normal(size=64)))
    ids = make_project(project, feats)
    got = [sorted(im["image_id"] for im in g["images"]) for g in search.near_duplicates(project, threshold=0.95)]
    assert [ids[50], ids[51], ids[52], ids[53]] in got
    assert sorted([ids[10], ids[11], ids[12]]) not in got
    chain = [g for g in got if ids[11] in g]
    assert len(chain) == 1 and len(chain[0]) == 2  # b with a or with c, never a with c


def test_near_identical_features_say_so_instead_of_one_giant_group(project):
    rng = np.random.default_rng(6)
    base = unit(rng.normal(size=64))
    make_project(project, unit(base + 0.01 * rng.normal(size=(60, 64))))
    with pytest.raises(InvalidInputError, match="features look uniform: 60 of the 60 images") as info:
        search.near_duplicates(project, threshold=0.95)
    assert info.value.hint.step == "features"


def test_map_pca_separates_planted_clusters_and_carries_colourings(project):
    _, feats, y = planted(3, 32, 90, noise=0.3, seed=3)
    xy = projection.pca_2d(feats)
    assert xy.shape == (90, 2)
    centres = np.stack([xy[y == c].mean(0) for c in range(3)])
    spread = max(np.linalg.norm(xy[y == c] - centres[c], axis=1).mean() for c in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 2 * spread
    np.testing.assert_allclose(projection.pca_2d(feats), xy)  # deterministic
    ids = make_project(project, feats)
    label_run(project, ids, probs_for(y, 3))
    from labeler.clusters import cluster_run
    from labeler.review import label_images

    cluster_run(project, k=3)
    label_images(project, ids[0], "dog")
    m = projection.feature_map(project, method="pca")
    assert m["method"] == "pca" and m["xy"].shape == (90, 2) and m["image_ids"] == ids
    assert m["pseudo"][1] == "dog" and m["human"][0] == "dog" and m["human"][1] is None
    assert m["final"][0] == "dog" and set(m["cluster"]) == {0, 1, 2}
    box = projection.points_in_box(m["xy"], m["image_ids"], -1e9, 1e9, -1e9, 1e9)
    assert box == ids
    if not projection.umap_available():
        with pytest.raises(InvalidInputError, match="umap-learn"):
            projection.project_2d(feats, "umap")


def test_points_in_polygon_takes_a_lasso_not_its_bounding_box():
    """An L-shaped lasso around a planted blob: the blob, not the points in the L's empty corner nor outside."""
    rng = np.random.default_rng(0)
    blob = rng.uniform(0.1, 0.9, size=(40, 2))  # inside the unit square, the L's lower-left arm
    corner = rng.uniform(2.1, 2.9, size=(15, 2))  # inside the L's bounding box, outside the L
    arm = np.column_stack([rng.uniform(2.1, 2.9, 10), rng.uniform(0.1, 0.9, 10)])  # the L's lower-right arm
    far = rng.uniform(5, 6, size=(5, 2))
    xy = np.vstack([blob, corner, arm, far])
    ids = np.arange(100, 100 + len(xy))
    lasso = [(0, 0), (3, 0), (3, 1), (1, 1), (1, 3), (0, 3)]  # an L: the corner (1..3, 1..3) is outside
    got = projection.points_in_polygon(xy, ids, lasso)
    assert got == [*range(100, 140), *range(155, 165)]
    assert projection.points_in_polygon(xy, ids, lasso[::-1]) == got  # either direction
    box = projection.points_in_box(xy, ids, 0, 3, 0, 3)
    assert len(box) == 65  # the bounding box would take the corner too
    with pytest.raises(InvalidInputError, match="at least 3"):
        projection.points_in_polygon(xy, ids, [(0, 0), (1, 1)])
    with pytest.raises(InvalidInputError, match="xy must be"):
        projection.points_in_polygon(xy[:5], ids, lasso)


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run one command through the CLI's front door (labeler.cli.main)."""
    from labeler import cli

    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_commands_print_text_and_json(project, capsys, monkeypatch):
    root = str(project.root)
    assert _cli(["similar", root, "1", "--k", "3"], capsys)[0] == 2  # no features yet
    _, feats, y = planted(3, 32, 60, noise=0.4, seed=4)
    feats[59] = feats[58]
    ids = make_project(project, feats)
    label_run(project, ids, probs_for(y, 3))
    code, out, _ = _cli(["cluster", root, "--k", "3", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["k"] == 3 and len(data["clusters"]) == 3
    code, out, _ = _cli(["cluster", root, "--k", "3"], capsys)
    assert code == 0 and "purity" in out and "3 clusters of 60 images" in out
    code, out, _ = _cli(["similar", root, "img/5.png", "--k", "4", "--json"], capsys)
    data = json.loads(out)
    assert data["query"]["image_id"] == ids[5] and len(data["results"]) == 4
    monkeypatch.setattr(search, "_text_encoder", lambda fset, device: _FakeClip({"x": feats[7]}))
    code, out, _ = _cli(["search", root, "x marks", "--k", "2", "--json"], capsys)
    assert json.loads(out)["results"][0]["image_id"] == ids[7]
    code, out, _ = _cli(["duplicates", root, "--json"], capsys)
    groups = json.loads(out)["groups"]
    assert [[im["image_id"] for im in g["images"]] for g in groups] == [[ids[58], ids[59]]]
    code, out, _ = _cli(["duplicates", root], capsys)
    assert "1 groups" in out and "img/59.png" in out
    for by in ("margin", "entropy", "confidence", "disagreement"):
        code, out, _ = _cli(["queue", root, "--by", by, "--limit", "5", "--json"], capsys)
        data = json.loads(out)
        assert code == 0 and data["by"] == by and len(data["items"]) == 5
    code, out, _ = _cli(["queue", root, "--by", "disagreement", "--limit", "2"], capsys)
    assert "no DINO features" in out
    code, _, err = _cli(["similar", root, "/no/such.png"], capsys)
    assert code == 2 and "no image in this project" in err
    with pytest.raises(SystemExit):
        _cli(["queue", root, "--by", "random"], capsys)


def test_search_needs_features(project):
    with pytest.raises(NotReadyError, match="no clip features") as info:
        search.near_duplicates(project)
    assert info.value.hint.step == "features"


def test_text_search_uses_the_feature_sets_own_clip_model(project):
    """Wiring with a real (tiny-random) CLIP: the set's model and pretrained tag load its text tower."""
    from labeler.models import load_clip

    from .explore_helpers import add_images

    model = load_clip("tiny-random", None, device="cpu")
    text = "a photo of a red car"
    feats = unit(np.random.default_rng(5).normal(size=(50, model.dim)))
    feats[17] = unit(model.encode_texts([text]).float().numpy()[0])
    ids = add_images(project, len(feats))
    sid = project.features.ensure_set(model.key, "clip", model.dim, model=model.name, pretrained=model.pretrained or "")
    project.features.append(sid, [sha(i) for i in range(len(feats))], feats)
    hits = search.text_search(project, text, k=3, device="cpu")
    assert hits[0]["image_id"] == ids[17] and hits[0]["score"] > 0.99
