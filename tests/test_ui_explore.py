"""The Explore step (cluster browser): its core helpers, its event API through gradio_client, and a real browser.

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

from .browser import chromium, drag, needs_chromium, new_page, open_project, pick, settled_box, shot
from .conftest import CIFAR_CLASSES, class_folders
from .explore_helpers import label_run, make_project, one_faiss_thread, planted, probs_for  # noqa: F401
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


def _value(update):
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


def test_api_cluster_label_exclude_include(client, app):
    """Open a cluster, label all of it in one call, see the table and counts change; exclude and include."""
    server, projects = app
    status, table, counts, *_ = client.predict(api_name="/explore_view")
    assert "No clusters yet" in status and "24 images" in counts
    assert "Nothing is shown" in _error(client, "cat", api_name="/explore_label")
    client.predict("clip", 3, api_name="/explore_cluster")
    assert wait_for_run(server, projects["gen"], "cluster")["status"] == "done"
    status, table, counts, *_ = client.predict(api_name="/explore_view")
    rows = _value(table)["data"]
    assert "3 clusters" in status and sum(r[1] for r in rows) == 24 and all(r[6] == 0 for r in rows)
    first, size = rows[0][0], rows[0][1]

    gallery, info = client.predict(str(first), api_name="/explore_open_cluster")
    assert len(_value(gallery)) == size and f"Cluster {first}: {size} images" in info
    assert "Pick the class" in _error(client, None, api_name="/explore_label")
    status, table, counts, gallery, *_ = client.predict("ship", api_name="/explore_label")
    row = next(r for r in _value(table)["data"] if r[0] == first)
    assert row[5] == "ship" and row[6] == size  # final majority and "done" follow at once
    n_ship = int(re.search(r"ship \*\*(\d+)\*\* \((\d+) reviewed\)", counts).group(2))
    assert n_ship == size
    assert set(_captions(gallery)) == {"ship ·you"}  # a person's label shows no model confidence
    p = _project(projects["gen"])
    from labeler.clusters import cluster_members
    from labeler.labels import final_labels

    members = cluster_members(p, int(first))
    assert {(it.label, it.source) for it in final_labels(p, members)} == {("ship", "human")}

    # exclude two selected images, see them in the excluded view, include them again
    two = members[:2] if len(members) >= 2 else members
    gallery, info = client.predict(",".join(map(str, two)), api_name="/explore_select_ids")
    assert f"{len(two)} selected" in info
    assert sum(c.startswith("✓") for c in _captions(gallery)) == len(two)
    status, table, counts, gallery, *_ = client.predict(api_name="/explore_exclude")
    assert f"{len(two)} excluded" in counts and f"{24 - len(two)} images" in counts
    assert sum(c.endswith("excluded") for c in _captions(gallery)) == len(two)
    assert sum(r[1] for r in _value(table)["data"]) == 24 - len(two)
    gallery, info, *_ = client.predict(api_name="/explore_excluded")
    assert len(_value(gallery)) == len(two) and "Excluded images" in info
    status, table, counts, gallery, *_ = client.predict(api_name="/explore_include")
    assert "excluded" not in counts and not _value(gallery)  # the excluded view is empty now

    # undo, newest first: the include (the two are excluded again), the exclude, then the cluster's label
    status, table, counts, *_ = client.predict(api_name="/explore_undo")
    assert f"{len(two)} excluded" in counts
    client.predict(api_name="/explore_undo")
    status, table, counts, *_ = client.predict(api_name="/explore_undo")
    assert "24 images**, 0 reviewed" in counts and not re.search(r"\(\d+ reviewed\)", counts)
    assert not [it for it in final_labels(p, members) if it.source == "human"]
    client.predict(str(first), api_name="/explore_open_cluster")  # label it again: the next tests expect it
    client.predict("ship", api_name="/explore_label")
    p.close()


def test_api_search_similar_queue_duplicates_map(client, app):
    server, projects = app
    assert "Click a thumbnail first" in _error(client, "clip", api_name="/explore_similar")
    gallery, info, *_ = client.predict("a photo of a ship", api_name="/explore_search")
    assert "Best matches" in info and len(_value(gallery)) == 24
    assert re.search(r"similarity -?\d\.\d\d → -?\d\.\d\d", info)
    p = _project(projects["gen"])
    some = p.images()[5]["id"]
    p.close()
    client.predict(str(some), api_name="/explore_select_ids")
    for feats in ("clip", "dino"):
        gallery, info, *_ = client.predict(feats, api_name="/explore_similar")
        assert f"Image {some} and its 23 nearest neighbours ({feats})" in info and len(_value(gallery)) == 24

    for by in ("confidence", "margin", "entropy", "disagreement"):
        gallery, info, *_ = client.predict(by, 5, api_name="/explore_queue")
        assert "Review queue" in info and len(_value(gallery)) == 5, (by, info)
    client.predict("cat", api_name="/explore_label")  # labeled images leave the queue at once
    gallery, info, *_ = client.predict("disagreement", 5, api_name="/explore_queue")
    assert "first 5 of" in info

    table, note = client.predict("clip", 0.9, api_name="/explore_duplicates")
    groups = _value(table)["data"]
    assert groups and "group" in note
    gallery, info, *_ = client.predict("1", api_name="/explore_open_group")
    assert len(_value(gallery)) == groups[0][1] and "Near-duplicate group 1" in info
    out = client.predict("clip", 0.9, api_name="/explore_keep_one")
    assert f"{24 - groups[0][1] + 1} images" in out[2]  # counts: one of the group is left
    client.predict(api_name="/explore_excluded")
    client.predict(api_name="/explore_include")  # all back

    plot, note, pick = client.predict("clip", "pca", "pseudo-label", api_name="/explore_map")
    points = _value(plot)
    assert len(points["x"]) == len(points["y"]) == len(points["colour"]) == 24 and "PCA" in note
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
    gallery, info, *_ = client.predict("clip", "pca", f",{x_cut}", api_name="/explore_map_box")
    assert "Map box x" in info and "10 images" in info and len(_value(gallery)) == 10
    # a 2-D box: of those ten, the five lowest
    ys = sorted(points["y"][i] for i in order[:10])
    y_cut = (ys[4] + ys[5]) / 2
    gallery, info, *_ = client.predict("clip", "pca", f"{xs[0] - 1},{x_cut},,{y_cut}", api_name="/explore_map_box")
    assert "5 images" in info and len(_value(gallery)) == 5
    # a lasso: a rectangle drawn as one gives the same ten; a triangle below the diagonal y = x, its points
    big = 1_000.0
    square = f"{-big},{-big}; {x_cut},{-big}; {x_cut},{big}; {-big},{big}"
    gallery, info, *_ = client.predict("clip", "pca", square, api_name="/explore_map_lasso")
    assert "Map lasso (4 corners)" in info and "10 images" in info and len(_value(gallery)) == 10
    below = sum(1 for x, y in zip(points["x"], points["y"], strict=True) if y < x)
    assert 0 < below < 24
    triangle = f"{-big},{-big}; {big},{big}; {big},{-big}"
    gallery, info, *_ = client.predict("clip", "pca", triangle, api_name="/explore_map_lasso")
    assert f"{below} images" in info and len(_value(gallery)) == below
    assert "3 corners or more" in _error(client, "clip", "pca", "0,0; 1,1", api_name="/explore_map_lasso")
    plot, _, pick = client.predict("clip", "pca", "cluster", api_name="/explore_map")
    clusters = _value(plot)["colour"]
    assert set(clusters) == {"cluster 0", "cluster 1", "cluster 2"}
    choices = [c[1] for c in pick["choices"]]
    assert sorted(choices) == [0, 1, 2] and pick["visible"]
    gallery, info = client.predict("clip", 2, api_name="/explore_map_cluster")
    assert "Cluster 2:" in info and len(_value(gallery)) == clusters.count("cluster 2")
    plot, *_ = client.predict("clip", "pca", "your label", api_name="/explore_map")
    mine = _value(plot)
    assert set(mine["colour"]) >= {"cat", "ship", "not labeled by you"}
    muted = {e["name"] for e in mine["legend"] if e["color"] == mine["muted"]}
    assert muted == {"not labeled by you"}  # the "no value" colour is grey, listed last
    assert mine["legend"][-1]["name"] == "not labeled by you"


def test_api_says_what_to_do_first(client):
    """A project without features: every view says which step comes first (runs last: it opens another project)."""
    client.predict("bare", False, "a, b", api_name="/project_create")
    status, table, counts, *_ = client.predict(api_name="/explore_view")
    assert "compute them first" in status
    plot, note, _ = client.predict("clip", "pca", "pseudo-label", api_name="/explore_map")
    assert "needs clip features" in note
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
    """Where the map draws the point (x, y) on the page: labeler.app.scatter's padding and margin."""
    from labeler.app.scatter import MARGIN, PAD

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
    page.click("#step-6-button")
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
    expect(page.locator("#map-note")).to_contain_text("PCA", timeout=slow)
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
