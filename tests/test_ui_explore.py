"""The Explore step (cluster browser): its core helpers, its handlers called in process, its event API through
gradio_client, and a real browser. Results are read by name: a handler's NamedTuple (``out.counts``), or through
gradio_client the step's ``…Api`` NamedTuple for the api_name (:data:`labeler.ui.steps.explore.API_OUTPUTS`).

Projects are built through the library before the app starts (tiny-random CLIP + DINO features and a
zero-shot run; fast), then ``python app.py`` serves them on a free 127.0.0.1 port (see
:class:`tests.test_ui_api.AppServer`). The API tests use generated coloured squares; the browser test uses 40 generated
class images (:mod:`tests.synth`) in Debian's chromium (skipped without it) and leaves a screenshot of each state in
``tests/artifacts/ui-7-explore-*.png``.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from labeler.ui.steps import explore as ex

from .browser import chromium, drag, needs_chromium, new_page, open_project, pick, settled_box, shot
from .conftest import CIFAR_CLASSES, class_folders, wait_until
from .explore_helpers import (  # noqa: F401 (one_faiss_thread: an autouse fixture)
    Event,
    fake_thumbs,
    label_run,
    make_project,
    one_faiss_thread,
    planted,
    probs_for,
    records,
    step_ctx,
)
from .test_ui_api import AppServer, api_client, make_images, wait_for_run

pytest.importorskip("gradio_client")  # the API tests drive the server with it

GEN_CLASSES = ["cat", "dog", "ship"]
UI_CLASSES = CIFAR_CLASSES[:4]


# --- core helpers (no server) ----------------------------------------------------------------------------
@pytest.fixture
def synthetic(project):
    """30 images in 3 planted clusters with CLIP features and a label run whose top-1 is the cluster."""
    _, feats, y = planted(3, 16, 30, noise=0.3, seed=1)
    ids = make_project(project, feats)
    label_run(project, ids, probs_for(y, 3, seed=1))
    return project, ids, y


def test_explore_items_keep_order_and_show_excluded(synthetic):
    from labeler.review import (
        exclude_images,
        excluded_images,
        explore_counts,
        explore_items,
        label_images,
    )

    project, ids, _ = synthetic
    label_images(project, ids[2], "dog")
    exclude_images(project, ids[1])
    items = explore_items(project, [ids[2], ids[1], ids[0], 99999])
    assert [it["id"] for it in items] == [ids[2], ids[1], ids[0]]
    assert items[0]["label"] == "dog" and items[0]["source"] == "human"
    assert items[1]["status"] == "excluded" and items[1]["label"] is None
    assert items[2]["source"] == "pseudo" and 0 < items[2]["confidence"] <= 1
    assert excluded_images(project) == [ids[1]]
    c = explore_counts(project)
    assert c["total"] == 29 and c["excluded"] == 1 and c["human"] == 1
    assert sum(r["images"] for r in c["classes"]) == 29


def test_duplicates_keep_one(project):
    from labeler.review import exclude_duplicates, excluded_images, keep_one
    from labeler.search import duplicate_rows

    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 16))
    feats = np.vstack([base, base[:2] + 1e-3 * rng.normal(size=(2, 16)), base[:1] + 2e-3])  # 0~6~8, 1~7
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    ids = make_project(project, feats.astype(np.float32))
    rows = duplicate_rows(project, 0.99)
    assert [sorted(r["images"]) for r in rows] == [sorted([ids[0], ids[6], ids[8]]), sorted([ids[1], ids[7]])]
    assert rows[0]["group"] == 1 and rows[0]["size"] == 3 and rows[0]["labels"] == "unlabeled ×3"
    with pytest.raises(Exception, match="not in this group"):
        keep_one(project, rows[0]["images"], keep=ids[1])
    from labeler.review import label_images

    label_images(project, ids[8], "cat")  # the image a person labeled is the one kept
    assert keep_one(project, rows[0]["images"]) == {"kept": ids[8], "excluded": 2}
    assert exclude_duplicates(project, [r["images"] for r in rows]) == {"groups": 2, "excluded": 1}
    assert sorted(excluded_images(project)) == sorted([ids[0], ids[6], ids[7]])
    assert duplicate_rows(project, 0.99) == []
    with pytest.raises(Exception, match="no near-duplicate groups"):
        exclude_duplicates(project, [])


def test_map_frame_sample_colours_and_box(synthetic, monkeypatch):
    from labeler import projection
    from labeler.clusters import cluster_run
    from labeler.projection import map_box, map_frame, map_method, map_ready

    project, ids, y = synthetic
    assert map_method("pca") == "pca" and map_ready(project, "clip", "pca")
    assert not map_ready(project, "clip", "umap")  # UMAP maps are computed in the background
    monkeypatch.setattr(projection, "MAP_INLINE", 10)
    assert not map_ready(project, "clip", "pca")  # too many points to project in the request...
    map_frame(project, "clip", "pca")
    assert map_ready(project, "clip", "pca")  # ...until the map is cached
    monkeypatch.undo()
    full = map_frame(project, "clip", "pca", "pseudo-label")
    assert full["n"] == full["shown"] == 30 and full["method"] == "pca"
    assert set(full["colour"]) == {"cat", "dog", "car"}
    assert map_frame(project, "clip", "pca", "your label")["colour"][0] == "not labeled by you"
    assert map_frame(project, "clip", "pca", "cluster")["colour"][0] == "no cluster"
    cluster_run(project, k=3)
    assert {c[:8] for c in map_frame(project, "clip", "pca", "cluster")["colour"]} == {"cluster "}
    few = map_frame(project, "clip", "pca", "final label", max_points=7)
    assert few["shown"] == 7 and few["n"] == 30 and few["image_id"][0] == ids[0] and few["image_id"][-1] == ids[-1]
    xs = np.array(full["x"])
    cut = float(np.median(xs))
    left = map_box(project, "clip", "pca", (cut, xs.min() - 1))
    assert sorted(left) == sorted(i for i, x in zip(full["image_id"], xs, strict=True) if x <= cut)
    assert sorted(map_box(project, "clip", "pca")) == sorted(ids)
    ys = np.array(full["y"])
    box = map_box(project, "clip", "pca", (None, None), (None, float(np.median(ys))))
    assert 10 <= len(box) <= 20
    with pytest.raises(Exception, match="colour the map"):
        map_frame(project, "clip", "pca", "size")


# --- the step's handlers, in process (no server) ----------------------------------------------------------------
@pytest.fixture
def step(synthetic):
    """The Explore step on the synthetic project, its handlers called directly: (ctx, key, project, ids)."""
    project, ids, _ = synthetic
    fake_thumbs(project)
    return step_ctx(project), str(project.root), project, ids


def _clusters(out) -> list[dict]:
    return records(out.table, ex.HEADERS)


def test_handlers_view_cluster_select_label_exclude_undo(step):
    """Open the step, cluster, open a cluster, select two images, label, exclude, include, undo: by field name."""
    import gradio as gr

    from labeler.clusters import cluster_members, cluster_run

    ctx, key, project, ids = step
    v = ex.refresh(ctx, key)
    assert "No clusters yet" in v.status and "**30 images**, 0 reviewed" in v.counts
    assert {value for _, value in v.target.choices} == {"cat", "dog", "car"} and v.target.multiselect is False
    assert v.view == ex.NO_VIEW and v.selection == [] and v.drawn is False and not v.table.visible
    assert "Find groups" in v.dup_note and "Open a cluster" in v.info
    assert "Redraw" in v.map_note and "the 30 images (PCA under a second" in v.map_note  # how long it takes
    with pytest.raises(gr.Error, match="Nothing is shown"):
        ex.label(ctx, key, v.view, v.selection, v.page, "cat")

    cluster_run(project, k=3)
    v = ex.refresh(ctx, key)
    rows = _clusters(v)
    assert "3 clusters" in v.status and sum(r["n"] for r in rows) == 30 and all(r["done"] == 0 for r in rows)
    first = rows[0]
    shown = ex.open_cluster_number(ctx, key, str(first["#"]))
    members = cluster_members(project, int(first["#"]))
    assert shown.view["kind"] == "cluster" and shown.view["ids"] == members
    assert f"Cluster {first['#']}: {first['n']} images" in shown.info
    assert shown.page_ids == members and len(shown.gallery.value) == first["n"] and shown.gallery.visible
    assert shown.label_btn.value == f"Label all {first['n']} as →" and not shown.include_btn.visible
    assert ex.open_cluster(ctx, key, Event(row_value=[first["#"]])).view == shown.view  # a click on its row
    assert ex.open_cluster(ctx, key, Event(row_value=[])) == ex.skipped(ex.Shown)

    a, b = members[:2]
    picked = ex.select_ids(ctx, key, shown.view, shown.page, f"{a}, {b}")
    assert picked.selection == [a, b] and picked.picked == b and "**2 selected**" in picked.info
    assert picked.label_btn.value == "Label 2 selected as →"
    assert picked.accept_btn.value == "Accept 2 selected pseudo-labels"
    assert sum(c.startswith("✓") for c in _captions(picked.gallery)) == 2
    with pytest.raises(gr.Error, match="Pick the class"):
        ex.label(ctx, key, picked.view, picked.selection, picked.page, None)
    done = ex.label(ctx, key, picked.view, picked.selection, picked.page, "dog")
    assert done.selection == [] and done.view == shown.view and "2 reviewed" in done.counts
    assert next(r for r in _clusters(done) if r["#"] == first["#"])["done"] == 2

    out = ex.exclude(ctx, key, done.view, [a], done.page)
    assert "1 excluded" in out.counts and out.include_btn.visible  # an excluded image is in the view
    excluded = ex.show_excluded(ctx, key)
    assert excluded.view["ids"] == [a] and excluded.include_btn.value == "Include the 1 image again"
    back = ex.include(ctx, key, excluded.view, [], excluded.page)
    assert back.view["ids"] == [] and "excluded" not in back.counts  # the excluded view is read again
    undone = ex.undo(ctx, key, back.view, [], back.page)
    assert "1 excluded" in undone.counts and undone.view["ids"] == [a]


def test_map_offers_umap_where_installed_and_says_how_long(monkeypatch):
    from labeler.projection import umap_available

    assert ex.MAP_METHODS == (["pca", "umap"] if umap_available() else ["pca"])
    assert ex.map_estimate(40, "pca") == "under a second" and ex.map_estimate(100_000, "pca") == "about 4 s"
    assert ex.map_estimate(40, "umap") == "about 10 s" and ex.map_estimate(100_000, "umap") == "about 2 min"
    assert ex.map_seconds(1_000_000, "umap") > ex.map_seconds(100_000, "umap") > ex.map_seconds(100_000, "pca")
    monkeypatch.setattr(ex, "MAP_METHODS", ["pca", "umap"])
    assert ex.map_estimates(20_000) == "PCA about 1 s, UMAP about 30 s"


def test_handlers_pages_clicks_and_accept(step, monkeypatch):
    ctx, key, project, ids = step
    monkeypatch.setattr(ex, "PAGE", 8)
    v = ex.box_api(ctx, key, "clip", "pca", ",")  # an open box: every image, 4 pages of 8
    assert v.view["kind"] == "map" and sorted(v.view["ids"]) == sorted(ids) and "page 1/4" in v.info
    assert len(v.page_ids) == 8 and v.label_btn.value == "Label all 30 as →"
    nxt = ex.next_page(ctx, key, v.view, v.selection, v.page, v.picked)
    assert nxt.page == 1 and "page 2/4" in nxt.info and nxt.page_ids == v.view["ids"][8:16]
    assert ex.prev_page(ctx, key, v.view, [], 0, None).page == 0  # clamped
    assert ex.next_page(ctx, key, v.view, [], 3, None).page == 3

    clicked = ex.click(ctx, key, nxt.view, [], nxt.page, nxt.page_ids, Event(index=2))
    image = nxt.page_ids[2]
    assert clicked.selection == [image] and clicked.picked == image and clicked.gallery.selected_index == 2
    assert f"most like image {image}" in clicked.info
    again = ex.click(ctx, key, clicked.view, clicked.selection, clicked.page, clicked.page_ids, Event(index=2))
    assert again.selection == [] and again.picked == image  # a second click unselects
    assert ex.click(ctx, key, nxt.view, [], nxt.page, nxt.page_ids, Event(index=99)) == ex.skipped(ex.Shown)
    page = ex.select_page(ctx, key, clicked.view, clicked.selection, clicked.page, clicked.page_ids, clicked.picked)
    assert sorted(page.selection) == sorted(clicked.page_ids) and page.page == 1
    assert ex.clear(ctx, key, page.view, page.page).selection == []

    similar = ex.similar(ctx, key, "clip", image, [])
    assert similar.view["kind"] == "similar" and similar.view["ids"][0] == image and similar.picked == image
    assert f"Image {image} and its 24 nearest neighbours (clip)" in similar.info
    accepted = ex.accept(ctx, key, similar.view, [image], similar.page)
    assert "1 reviewed" in accepted.counts and accepted.selection == []


def test_handlers_map_select_box_lasso(step, monkeypatch):
    import gradio as gr

    ctx, key, project, ids = step
    m = ex.draw_map(ctx, key, "clip", "pca", "pseudo-label")
    points = m.plot.value
    assert m.drawn is True and len(points["x"]) == 30 and "PCA of" in m.map_note and not m.map_cluster.visible
    assert ex.redraw_drawn(ctx, key, "clip", "pca", "pseudo-label", False) == ex.skipped(ex.MapOut)
    assert ex.redraw_drawn(ctx, key, "clip", "pca", "your label", True).plot.value["title"] == "your label"
    none = ex.draw_map(ctx, key, "dino", "pca", "pseudo-label")
    assert none.drawn is False and "needs dino features" in none.map_note

    xs = sorted(points["x"])
    cut = (xs[9] + xs[10]) / 2
    boxed = ex.map_select(ctx, key, "clip", "pca", Event(data={"box": [xs[0] - 1, cut, -1e3, 1e3]}))
    assert len(boxed.view["ids"]) == 10 and boxed.view["title"].startswith("Map box x")
    assert ex.box_api(ctx, key, "clip", "pca", f",{cut}").view["ids"] == boxed.view["ids"]
    square = f"-1e3,-1e3; {cut},-1e3; {cut},1e3; -1e3,1e3"
    lasso = ex.lasso_api(ctx, key, "clip", "pca", square)
    assert sorted(lasso.view["ids"]) == sorted(boxed.view["ids"]) and "Map lasso (4 corners)" in lasso.info
    drawn = [[-1e3, -1e3], [cut, -1e3], [cut, 1e3], [-1e3, 1e3]]
    assert ex.map_select(ctx, key, "clip", "pca", Event(data={"lasso": drawn})).view == lasso.view
    point = ex.map_select(ctx, key, "clip", "pca", Event(data={"image_id": ids[3]}))
    assert point.view["kind"] == "similar" and point.picked == ids[3]
    assert ex.map_select(ctx, key, "clip", "pca", Event(data={})) == ex.skipped(ex.Shown)
    with pytest.raises(gr.Error, match="Give the box"):
        ex.box_api(ctx, key, "clip", "pca", "a,b")
    with pytest.raises(gr.Error, match="3 corners or more"):
        ex.lasso_api(ctx, key, "clip", "pca", "0,0; 1,1")

    from labeler.clusters import cluster_run

    cluster_run(project, k=3)
    by_cluster = ex.draw_map(ctx, key, "clip", "pca", "cluster")
    assert sorted(value for _, value in by_cluster.map_cluster.choices) == [0, 1, 2]
    one = ex.map_cluster_pick(ctx, key, "clip", 2)
    assert one.view["title"] == "Cluster 2" and len(one.view["ids"]) == by_cluster.plot.value["colour"].count(
        "cluster 2"
    )
    assert ex.map_cluster_pick(ctx, key, "clip", None) == ex.skipped(ex.Shown)

    # a map that is not ready (UMAP is never drawn inline) is computed in the background; the note says how long
    from labeler import projection
    from labeler.jobs import background_tasks

    def missing():
        raise projection.InvalidInputError(projection.UMAP_MISSING)

    # UMAP offered, and the job finds umap-learn missing: fast, and the same where it is installed
    monkeypatch.setattr(ex, "umap_available", lambda: True)
    monkeypatch.setattr(projection, "_umap_module", missing)
    computing = ex.draw_map(ctx, key, "clip", "umap", "pseudo-label")
    assert "Computing the UMAP map of 30 images (about 10 s)" in computing.map_note and computing.drawn == gr.skip()
    task = background_tasks(key)[0]
    assert task.kind == "map"
    wait_until(lambda: not task.running, "the map task")


def test_handlers_duplicates(project):
    import gradio as gr

    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 16))
    feats = np.vstack([base, base[:2] + 1e-3 * rng.normal(size=(2, 16)), base[:1] + 2e-3])  # 0~6~8, 1~7
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    ids = make_project(project, feats.astype(np.float32))
    fake_thumbs(project)
    ctx, key = step_ctx(project), str(project.root)
    d = ex.find_dups(ctx, key, "clip", 0.99)
    groups = records(d.dup_table, ex.DUP_HEADERS)
    assert [g["images"] for g in groups] == [3, 2] and "**2 groups** (5 images)" in d.dup_note
    assert sorted(d.dup_groups[0]) == sorted([ids[0], ids[6], ids[8]])
    assert ex.first_dups(ctx, key, "clip", 0.99, d.dup_groups) == ex.skipped(ex.Dups)  # found already
    assert ex.first_dups(ctx, key, "clip", 0.99, []).dup_groups == d.dup_groups  # a small project: found at once
    with pytest.raises(gr.Error, match="Show a near-duplicate group first"):
        ex.keep_shown(ctx, key, "clip", 0.99, ex.NO_VIEW, [], 0)
    with pytest.raises(gr.Error, match="no such group"):
        ex.open_group_number(ctx, key, d.dup_groups, "3")
    group = ex.open_group_number(ctx, key, d.dup_groups, "1")
    assert group.view["kind"] == "duplicates" and "Near-duplicate group 1: 3 images" in group.info
    assert ex.open_group(ctx, key, d.dup_groups, Event(row_value=[1])).view == group.view
    kept = ex.keep_shown(ctx, key, "clip", 0.99, group.view, [ids[6]], group.page)
    assert "2 excluded" in kept.counts and len(kept.dup_groups) == 1 and "**1 group**" in kept.dup_note
    assert kept.view == group.view and kept.include_btn.visible  # the two excluded stay in the view
    rest = ex.keep_every(ctx, key, "clip", 0.99, kept.dup_groups, kept.view, kept.page)
    assert "3 excluded" in rest.counts and rest.dup_groups == [] and "No near-duplicates" in rest.dup_note
    assert sorted(ex.show_excluded(ctx, key).view["ids"]) == sorted([ids[0], ids[8], ids[7]])


def test_handlers_background_tasks(step):
    """Clustering runs in the background; its end (the ``finished`` marker) reads the step again."""
    from labeler.jobs import background_tasks

    ctx, key, project, _ = step
    assert ex.finished(ctx, key, "") == ex.skipped(ex.View)
    assert ex.map_finished(ctx, key, "", "clip", "pca", "pseudo-label") == ex.skipped(ex.MapOut)
    assert "Clustering" in ex.start_clusters(ctx, key, "clip", 3)
    task = background_tasks(key)[0]
    wait_until(lambda: not task.running, "the clustering task")
    assert task.status == "done", task.error
    assert ex.finished(ctx, key, f"{key}#{task.id}:map") == ex.skipped(ex.View)  # not a kind this event shows
    out = ex.finished(ctx, key, f"{key}#{task.id}:cluster")
    assert "3 clusters" in out.status and len(_clusters(out)) == 3


def test_bound_handlers_get_their_event():
    """gradio passes ``evt`` only when it sees the annotation through :func:`labeler.ui.common.bind`."""
    from gradio.helpers import special_args

    from labeler.ui.common import bind

    for handler in (ex.open_cluster, ex.click, ex.open_group, ex.map_select):
        _, _, event_index, _ = special_args(bind(handler, None))
        assert event_index is not None, handler.__name__


# --- the app ------------------------------------------------------------------------------------------------
def _build(root: Path, images: Path, classes: list[str]) -> Path:
    """Import ``images`` into a new project at ``root``, tiny-random CLIP + DINO features, a zero-shot run."""
    from labeler.features import compute_features
    from labeler.ingest import import_sources
    from labeler.methods import get_method
    from labeler.models import load_clip, load_dino
    from labeler.project import Project

    project = Project.create(root, classes)
    import_sources(project, [str(images)])
    compute_features(project, load_clip("tiny-random", None, device="cpu"), num_workers=0)
    compute_features(project, load_dino("tiny-random", device="cpu"), num_workers=0)
    method = get_method("zeroshot")
    method.run(project, method.params_from({"templates": "photo", "descriptions": "none", "device": "cpu"}))
    project.close()
    return root


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A data dir with the "gen" project (24 coloured squares) and "cifar" (40 generated class images)."""
    tmp = tmp_path_factory.mktemp("ui_explore")
    data = tmp / "data"
    projects = {
        "gen": _build(data / "gen", make_images(tmp / "gen-images", per_class=8), GEN_CLASSES),
        "cifar": _build(data / "cifar", class_folders(tmp / "cifar", 10, UI_CLASSES), UI_CLASSES),
    }
    server = AppServer(data, tmp)
    yield server, projects
    server.stop()


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    server, projects = app
    return api_client(server, tmp_path_factory.mktemp("dl"), str(projects["gen"]))


def _api(client, api_name: str, *args):
    """Call ``/api_name`` and return its outputs by name: the step's ``…Api`` NamedTuple for it
    (:data:`labeler.ui.steps.explore.API_OUTPUTS`), or the one value of a single-output event."""
    out = ex.API_OUTPUTS[api_name]
    result = client.predict(*args, api_name=f"/{api_name}")
    return result if out is str else out._make(result)


def _value(update):
    """The value of an output: a component a handler returned, or an update dict gradio_client returned."""
    if hasattr(update, "value"):
        return update.value
    return update["value"] if isinstance(update, dict) and "value" in update else update


def _captions(gallery) -> list[str]:
    return [item["caption"] for item in _value(gallery) or []]


def _error(client, *args, api_name: str) -> str:
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def _project(path: Path):
    from labeler.project import Project

    return Project(path)


def test_api_outputs_match_the_served_endpoints(client):
    """Each api_name returns what :data:`~labeler.ui.steps.explore.API_OUTPUTS` says: as many values as fields."""
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for api_name, out in ex.API_OUTPUTS.items():
        returns = endpoints[f"/{api_name}"]["returns"]
        assert len(returns) == (1 if out is str else len(out._fields)), (api_name, returns)


def test_api_cluster_label_exclude_include(client, app):
    """Open a cluster, label all of it in one call, see the table and counts change; exclude and include."""
    server, projects = app
    v = _api(client, "explore_view")
    assert "No clusters yet" in v.status and "24 images" in v.counts
    assert "Nothing is shown" in _error(client, "cat", api_name="/explore_label")
    _api(client, "explore_cluster", "clip", 3)
    assert wait_for_run(server, projects["gen"], "cluster")["status"] == "done"
    v = _api(client, "explore_view")
    rows = records(v.table, ex.HEADERS)
    assert "3 clusters" in v.status and sum(r["n"] for r in rows) == 24 and all(r["done"] == 0 for r in rows)
    first, size = rows[0]["#"], rows[0]["n"]

    shown = _api(client, "explore_open_cluster", str(first))
    assert len(_value(shown.gallery)) == size and f"Cluster {first}: {size} images" in shown.info
    assert "Pick the class" in _error(client, None, api_name="/explore_label")
    done = _api(client, "explore_label", "ship")
    row = next(r for r in records(done.table, ex.HEADERS) if r["#"] == first)
    assert row["final"] == "ship" and row["done"] == size  # final majority and "done" follow at once
    n_ship = int(re.search(r"ship \*\*(\d+)\*\* \((\d+) reviewed\)", done.counts).group(2))
    assert n_ship == size
    assert set(_captions(done.gallery)) == {"ship ·you"}  # a person's label shows no model confidence
    p = _project(projects["gen"])
    from labeler.clusters import cluster_members
    from labeler.labels import final_labels

    members = cluster_members(p, int(first))
    assert {(it.label, it.source) for it in final_labels(p, members)} == {("ship", "human")}

    # exclude two selected images, see them in the excluded view, include them again
    two = members[:2] if len(members) >= 2 else members
    picked = _api(client, "explore_select_ids", ",".join(map(str, two)))
    assert f"{len(two)} selected" in picked.info
    assert sum(c.startswith("✓") for c in _captions(picked.gallery)) == len(two)
    out = _api(client, "explore_exclude")
    assert f"{len(two)} excluded" in out.counts and f"{24 - len(two)} images" in out.counts
    assert sum(c.endswith("excluded") for c in _captions(out.gallery)) == len(two)
    assert sum(r["n"] for r in records(out.table, ex.HEADERS)) == 24 - len(two)
    excluded = _api(client, "explore_excluded")
    assert len(_value(excluded.gallery)) == len(two) and "Excluded images" in excluded.info
    out = _api(client, "explore_include")
    assert "excluded" not in out.counts and not _value(out.gallery)  # the excluded view is empty now

    # undo, newest first: the include (the two are excluded again), the exclude, then the cluster's label
    assert f"{len(two)} excluded" in _api(client, "explore_undo").counts
    _api(client, "explore_undo")
    counts = _api(client, "explore_undo").counts
    assert "24 images**, 0 reviewed" in counts and not re.search(r"\(\d+ reviewed\)", counts)
    assert not [it for it in final_labels(p, members) if it.source == "human"]
    _api(client, "explore_open_cluster", str(first))  # label it again: the next tests expect it
    _api(client, "explore_label", "ship")
    p.close()


def test_api_search_similar_queue_duplicates_map(client, app):
    server, projects = app
    assert "Click a thumbnail first" in _error(client, "clip", api_name="/explore_similar")
    found = _api(client, "explore_search", "a photo of a ship")
    assert "Best matches" in found.info and len(_value(found.gallery)) == 24
    assert re.search(r"similarity -?\d\.\d\d → -?\d\.\d\d", found.info)
    p = _project(projects["gen"])
    some = p.images()[5]["id"]
    p.close()
    _api(client, "explore_select_ids", str(some))
    for feats in ("clip", "dino"):
        similar = _api(client, "explore_similar", feats)
        assert f"Image {some} and its 23 nearest neighbours ({feats})" in similar.info
        assert len(_value(similar.gallery)) == 24

    for by in ("confidence", "margin", "entropy", "disagreement"):
        queue = _api(client, "explore_queue", by, 5)
        assert "Review queue" in queue.info and len(_value(queue.gallery)) == 5, (by, queue.info)
    _api(client, "explore_label", "cat")  # labeled images leave the queue at once
    assert "first 5 of" in _api(client, "explore_queue", "disagreement", 5).info

    dups = _api(client, "explore_duplicates", "clip", 0.9)
    groups = records(dups.dup_table, ex.DUP_HEADERS)
    assert groups and "group" in dups.dup_note
    group = _api(client, "explore_open_group", "1")
    assert len(_value(group.gallery)) == groups[0]["images"] and "Near-duplicate group 1" in group.info
    kept = _api(client, "explore_keep_one", "clip", 0.9)
    assert f"{24 - groups[0]['images'] + 1} images" in kept.counts  # one of the group is left
    _api(client, "explore_excluded")
    _api(client, "explore_include")  # all back

    m = _api(client, "explore_map", "clip", "pca", "pseudo-label")
    points = _value(m.plot)
    assert len(points["x"]) == len(points["y"]) == len(points["colour"]) == 24 and "PCA" in m.map_note
    legend = {e["name"]: e for e in points["legend"]}
    assert sum(e["n"] for e in legend.values()) == 24 and set(points["colour"]) == set(legend)
    assert len({e["color"] for e in legend.values()}) == len(legend)  # one colour per class
    p = _project(projects["gen"])
    sha = {im["id"]: im["sha256"] for im in p.images()}
    p.close()
    assert points["sha256"] == [sha[i] for i in points["image_id"]]
    # the tooltip's thumbnail: the server really serves it at the URL the page builds
    first = points["sha256"][0]
    url = f"{server.url.rstrip('/')}/{points['thumb_base']}{first[:2]}/{first}.jpg"
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200 and resp.read(3) == b"\xff\xd8\xff"  # a JPEG
    order = sorted(range(24), key=lambda i: points["x"][i])
    xs = [points["x"][i] for i in order]
    x_cut = (xs[9] + xs[10]) / 2  # between two points: the drawn coordinates are rounded
    boxed = _api(client, "explore_map_box", "clip", "pca", f",{x_cut}")
    assert "Map box x" in boxed.info and "10 images" in boxed.info and len(_value(boxed.gallery)) == 10
    # a 2-D box: of those ten, the five lowest
    ys = sorted(points["y"][i] for i in order[:10])
    y_cut = (ys[4] + ys[5]) / 2
    boxed = _api(client, "explore_map_box", "clip", "pca", f"{xs[0] - 1},{x_cut},,{y_cut}")
    assert "5 images" in boxed.info and len(_value(boxed.gallery)) == 5
    # a lasso: a rectangle drawn as one gives the same ten; a triangle below the diagonal y = x, its points
    big = 1_000.0
    square = f"{-big},{-big}; {x_cut},{-big}; {x_cut},{big}; {-big},{big}"
    lasso = _api(client, "explore_map_lasso", "clip", "pca", square)
    assert "Map lasso (4 corners)" in lasso.info and "10 images" in lasso.info and len(_value(lasso.gallery)) == 10
    below = sum(1 for x, y in zip(points["x"], points["y"], strict=True) if y < x)
    assert 0 < below < 24
    triangle = f"{-big},{-big}; {big},{big}; {big},{-big}"
    lasso = _api(client, "explore_map_lasso", "clip", "pca", triangle)
    assert f"{below} images" in lasso.info and len(_value(lasso.gallery)) == below
    assert "3 corners or more" in _error(client, "clip", "pca", "0,0; 1,1", api_name="/explore_map_lasso")
    m = _api(client, "explore_map", "clip", "pca", "cluster")
    clusters = _value(m.plot)["colour"]
    assert set(clusters) == {"cluster 0", "cluster 1", "cluster 2"}
    choices = [value for _, value in m.map_cluster["choices"]]
    assert sorted(choices) == [0, 1, 2] and m.map_cluster["visible"]
    one = _api(client, "explore_map_cluster", "clip", 2)
    assert "Cluster 2:" in one.info and len(_value(one.gallery)) == clusters.count("cluster 2")
    mine = _value(_api(client, "explore_map", "clip", "pca", "your label").plot)
    assert set(mine["colour"]) >= {"cat", "ship", "not labeled by you"}
    muted = {e["name"] for e in mine["legend"] if e["color"] == mine["muted"]}
    assert muted == {"not labeled by you"}  # the "no value" colour is grey, listed last
    assert mine["legend"][-1]["name"] == "not labeled by you"


def test_api_says_what_to_do_first(client):
    """A project without features: every view says which step comes first (runs last: it opens another project)."""
    client.predict("bare", False, "a, b", api_name="/project_create")
    assert "compute them first" in _api(client, "explore_view").status
    assert "needs clip features" in _api(client, "explore_map", "clip", "pca", "pseudo-label").map_note
    assert "no clip features yet" in _error(client, "clip", 0.95, api_name="/explore_duplicates")
    assert "no clip features yet" in _error(client, "a cat", api_name="/explore_search")
    assert "run zero-shot first" in _error(client, "margin", 10, api_name="/explore_queue")
    assert "Give the box" in _error(client, "clip", "pca", "a,b", api_name="/explore_map_box")


# --- the browser ----------------------------------------------------------------------------------------------
def _shot(page, name: str) -> None:
    shot(page, f"ui-7-explore-{name}")


@needs_chromium
def test_explore_in_the_browser(app):
    sync_api = pytest.importorskip("playwright.sync_api")
    server, projects = app
    try:
        with chromium() as browser:
            page, errors = new_page(browser)
            try:
                _drive(page, sync_api.expect, server, projects["cifar"])
            except Exception:
                _shot(page, "failure")
                raise
            assert not errors, errors
    except Exception:
        print(server.logs())
        raise


def _map_points(project_dir: Path):
    """The PCA map's points as the server draws them (every point: the test project is small)."""
    from labeler.projection import map_frame

    p = _project(project_dir)
    try:
        cols = map_frame(p, "clip", "pca")
    finally:
        p.close()
    assert cols["shown"] == cols["n"]
    return np.asarray(cols["x"]), np.asarray(cols["y"]), cols["image_id"]


def _pixel(xs, ys, box: dict, x: float, y: float) -> tuple[float, float]:
    """Where the map draws the point (x, y) on the page: labeler.ui.scatter's padding and margin."""
    from labeler.ui.scatter import MARGIN, PAD

    mx, my = (xs.max() - xs.min()) * MARGIN, (ys.max() - ys.min()) * MARGIN
    x0, x1, y0, y1 = xs.min() - mx, xs.max() + mx, ys.min() - my, ys.max() + my
    w, h = box["width"] - PAD["l"] - PAD["r"], box["height"] - PAD["t"] - PAD["b"]
    return box["x"] + PAD["l"] + (x - x0) / (x1 - x0) * w, box["y"] + PAD["t"] + (1 - (y - y0) / (y1 - y0)) * h


def _trace(page, box: dict, path: list[tuple[float, float]]) -> None:
    """Press, move through ``path`` (fractions of ``box``) and release: a lasso outline."""
    page.mouse.move(box["x"] + box["width"] * path[0][0], box["y"] + box["height"] * path[0][1])
    page.mouse.down()
    for fx, fy in path[1:]:
        page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy, steps=4)
    page.mouse.up()


def _drive(page, expect, server, project_dir: Path) -> None:
    slow = 60_000
    open_project(page, "cifar", server.url)
    expect(page.locator("#lb-project")).to_contain_text("40 images")

    # Clusters: k-means in the background, then the table
    page.click("#step-7-button")
    status, counts = page.locator("#explore-status"), page.locator("#explore-counts")
    expect(status).to_contain_text("No clusters yet")
    expect(counts).to_contain_text("40 images, 0 reviewed")
    page.locator("#explore-k input").fill("4")
    page.click("#explore-cluster")
    expect(status).to_contain_text("4 clusters", timeout=slow)
    table = page.locator("#explore-clusters")
    rows = table.locator('div[role="row"][data-index]')  # gradio 6's virtual table: one div per body row
    expect(rows).to_have_count(4)
    _shot(page, "1-clusters")

    # Open the first cluster and label all of it as "bird" in one click; the counts and table follow
    number = table.locator('[data-testid="cell-0-0"]').inner_text().strip()
    size = int(table.locator('[data-testid="cell-0-1"]').inner_text().strip())
    table.locator('[data-testid="cell-0-0"]').click()
    shown = page.locator("#explore-shown")
    expect(shown).to_contain_text(f"Cluster {number}: {size} images")
    thumbs = page.locator("#explore-gallery button.thumbnail-item")
    expect(thumbs).to_have_count(size)
    pick(page, "explore-target", "bird")
    label_btn = page.locator("#explore-label")
    expect(label_btn).to_have_text(f"Label all {size} as →")
    _shot(page, "2-cluster")
    label_btn.click()
    expect(counts).to_contain_text(f"{size} reviewed", timeout=slow)
    expect(counts).to_contain_text(re.compile(rf"bird {size}\b"))
    row = rows.filter(has=page.locator('[data-col="0"]', has_text=re.compile(rf"^\s*{number}\s*$")))
    expect(row).to_contain_text("bird")
    expect(page.locator("#explore-gallery .caption-label").first).to_contain_text("bird")
    _shot(page, "3-labeled")

    # Pick an image, show the similar ones
    thumbs.first.click()
    expect(shown).to_contain_text("1 selected")
    page.click("#explore-similar")
    expect(shown).to_contain_text("nearest neighbours", timeout=slow)
    expect(thumbs).to_have_count(25)
    _shot(page, "4-similar")

    # Text search
    page.locator("#explore-query textarea, #explore-query input").first.fill("a photo of a ship")
    page.click("#explore-search")
    expect(shown).to_contain_text("Best matches for", timeout=slow)
    _shot(page, "5-search")

    # The map: drag a box around every point, then around the left half; hover a point and click it
    page.click("#explore-tab-map-button")
    expect(page.locator("#map-note")).to_contain_text("PCA of", timeout=slow)  # drawn (not the estimate before)
    canvas = page.locator("#explore-map canvas")
    expect(canvas).to_be_visible()
    legend = page.locator("#explore-map .lb-scatter-legend")
    expect(legend).to_contain_text("pseudo-label", timeout=slow)
    box = settled_box(canvas)
    drag(page, box, (0.005, 0.005), (0.995, 0.99))
    expect(shown).to_contain_text("Map box x", timeout=slow)
    expect(shown).to_contain_text("40 images")
    xs, ys, ids = _map_points(project_dir)
    order = np.sort(xs)
    gap = 10 + int(np.argmax(np.diff(order)[10:30]))  # the widest gap between two points near the middle
    x_cut = _pixel(xs, ys, box, (order[gap] + order[gap + 1]) / 2, ys[0])[0]
    drag(page, box, (0.005, 0.005), ((x_cut - box["x"]) / box["width"], 0.99))
    expect(shown).to_contain_text(f"{gap + 1} images", timeout=slow)  # only the points inside the box
    _shot(page, "6-map")
    k = int(np.argmax(xs))  # the rightmost point: nothing overlaps it
    box = settled_box(canvas)
    px, py = _pixel(xs, ys, box, xs[k], ys[k])
    page.mouse.move(px, py)
    tip = page.locator("#explore-map .lb-scatter-tip")
    expect(tip).to_contain_text(f"image {ids[k]} ")
    page.wait_for_function(  # with the image's thumbnail, loaded
        "() => { const i = document.querySelector('#explore-map .lb-scatter-tip img');"
        " return !!i && i.complete && i.naturalWidth > 0; }",
        timeout=slow,
    )
    _shot(page, "6-map-hover")
    page.mouse.click(px, py)
    expect(shown).to_contain_text(f"Image {ids[k]} and its", timeout=slow)
    # lasso mode: a loop around every point, then a small one around the rightmost point
    page.locator("#explore-map button", has_text="Lasso").click()
    expect(page.locator("#explore-map button", has_text="Lasso")).to_have_attribute("aria-pressed", "true")
    _trace(page, box, [(0.01, 0.01), (0.99, 0.01), (0.99, 0.99), (0.01, 0.99), (0.01, 0.02)])
    expect(shown).to_contain_text("Map lasso", timeout=slow)
    expect(shown).to_contain_text("40 images")
    on_page = np.array([_pixel(xs, ys, box, x, y) for x, y in zip(xs, ys, strict=True)])
    dist = np.hypot(on_page[:, 0] - px, on_page[:, 1] - py)
    r = next(r for r in range(8, 60) if not ((dist > r - 3) & (dist < r + 3)).any())  # no point near the outline
    near = int((dist < r).sum())
    assert near >= 1
    loop = [(px + r * np.cos(a), py + r * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 16)]
    _trace(page, box, [((x - box["x"]) / box["width"], (y - box["y"]) / box["height"]) for x, y in loop])
    expect(shown).to_contain_text(re.compile(rf"Map lasso \(\d+ corners\): {near} images?"), timeout=slow)
    _shot(page, "6-map-lasso")
    page.locator("#explore-map button", has_text="Box").click()
    page.locator("#map-colour label", has_text="cluster").click()  # colour by cluster, then show one of them
    expect(legend).to_contain_text("cluster 3", timeout=slow)
    page.locator("#map-cluster input").click()
    page.locator('li[role="option"]', has_text="Show cluster 1").first.click()
    expect(shown).to_contain_text("Cluster 1:", timeout=slow)
    _shot(page, "6-map-cluster")
    # a bulk action redraws a drawn map on its own: colour by your labels, label the cluster, the legend follows
    page.locator("#map-colour label", has_text="your label").click()
    the_map = legend
    expect(the_map).to_contain_text("not labeled by you", timeout=slow)
    expect(the_map).not_to_contain_text("cat")
    pick(page, "explore-target", "cat")
    page.click("#explore-label")
    expect(counts).to_contain_text(re.compile(r"cat \d+"), timeout=slow)
    expect(the_map).to_contain_text("cat", timeout=slow)  # no Redraw pressed
    _shot(page, "6-map-relabeled")

    # The review queue
    page.click("#explore-tab-queue-button")
    page.click("#queue-show")
    expect(shown).to_contain_text("Review queue", timeout=slow)
    _shot(page, "7-queue")

    # Near-duplicates (tiny random features are all alike: raise the threshold so groups stay small)
    page.click("#explore-tab-dups-button")
    expect(page.locator("#dup-note")).to_contain_text("group", timeout=slow)
    _shot(page, "8-duplicates")
