"""labeler.preview: one image in detail, with planted answers (paths from two import roots, planted features whose
nearest neighbours are known, a planted prediction whose top-3 is known), and the checks on untrusted input."""

from __future__ import annotations

import numpy as np
import pytest

from labeler.errors import InvalidInputError

from .conftest import class_folders
from .explore_helpers import label_run, unit


@pytest.fixture
def two_roots(tmp_path):
    """cat/ and dog/ (3 images each, 32×32) and car/ (one 48×40 image) imported as three roots: their rel_paths
    repeat (0000.jpg three times)."""
    from labeler.ingest import import_sources
    from labeler.project import Project

    src = class_folders(tmp_path / "imgs", per_class=3, classes=["cat", "dog"])
    from .synth import image_folder

    image_folder(src, 1, ["car"], size=(48, 40))
    project = Project.create(tmp_path / "proj", ["cat", "dog", "car"])
    import_sources(project, [str(src / "cat")])
    import_sources(project, [str(src / "dog")])
    import_sources(project, [str(src / "car")])
    return project


def _ids(project) -> dict[str, int]:
    """'cat/0000.jpg' → image id (folder of the file / its name)."""
    rows = project.db.execute("select id, path from images").fetchall()
    return {"/".join(p.split("/")[-2:]): i for i, p in rows}


def _plant_features(project, ids: dict[str, int]) -> None:
    """Vectors where cat/0000's neighbours are, in order: cat/0001 (0.99), dog/0000 (0.9), dog/0001 (0.5)."""
    rng = np.random.default_rng(0)
    dim = 16
    base = unit(rng.normal(size=dim))
    other = unit(rng.normal(size=dim))
    other = unit(other - (other @ base) * base)  # orthogonal to base
    at = {"cat/0000.jpg": 1.0, "cat/0001.jpg": 0.99, "dog/0000.jpg": 0.9, "dog/0001.jpg": 0.5}
    vecs = {}
    for name, i in ids.items():
        cos = at.get(name, -0.2 - 0.1 * len(vecs))
        vecs[i] = unit(cos * base + np.sqrt(max(0.0, 1 - cos**2)) * other * (1 if name != "car/0000.jpg" else -1))
    shas = dict(project.db.execute("select id, sha256 from images").fetchall())
    sid = project.features.ensure_set("clip:fake:none", "clip", dim, model="fake", pretrained="")
    order = sorted(vecs)
    project.features.append(sid, [shas[i] for i in order], np.stack([vecs[i] for i in order]).astype(np.float32))


def test_details_paths_sizes_label_scores_and_neighbours(two_roots):
    from labeler.export import export_paths
    from labeler.labels import set_human_labels
    from labeler.preview import image_details

    project = two_roots
    ids = _ids(project)
    _plant_features(project, ids)
    order = sorted(ids.values())
    probs = np.full((len(order), 3), 0.1, dtype=np.float32)
    probs[:, 0] = 0.8
    cat0 = order.index(ids["cat/0000.jpg"])
    probs[cat0] = [0.2, 0.5, 0.3]  # top-3 of cat/0000: dog 0.5, car 0.3, cat 0.2
    run_id = label_run(project, order, probs)

    d = image_details(project, ids["cat/0000.jpg"], neighbours=3)
    plan = export_paths(project).paths
    assert d["path"] == plan[ids["cat/0000.jpg"]] == "cat/0000.jpg"  # unique: the two roots' common folder
    assert image_details(project, ids["dog/0000.jpg"], neighbours=0)["path"] == "dog/0000.jpg"
    assert d["rel_path"] == "0000.jpg" and d["root"]["path"].endswith("imgs/cat") and d["root"]["kind"] == "folder"
    assert d["folder"].endswith("imgs/cat") and d["file"].endswith("imgs/cat/0000.jpg")
    assert (d["width"], d["height"], d["format"]) == (32, 32, "JPEG") and d["bytes"] > 0
    assert [(t["class"], round(t["score"], 3)) for t in d["top"]] == [("dog", 0.5), ("car", 0.3), ("cat", 0.2)]
    assert d["label"]["source"] == "pseudo" and d["label"]["label"] == "dog"
    assert d["label"]["run"]["id"] == run_id and d["label"]["run"]["method"] == "zeroshot"
    assert [n["id"] for n in d["neighbours"]] == [ids["cat/0001.jpg"], ids["dog/0000.jpg"], ids["dog/0001.jpg"]]
    assert [round(n["score"], 2) for n in d["neighbours"]] == [0.99, 0.9, 0.5]
    assert d["neighbours"][1]["path"] == "dog/0000.jpg" and d["neighbours_note"] == ""

    big = image_details(project, ids["car/0000.jpg"], neighbours=0)
    assert (big["width"], big["height"]) == (48, 40)

    set_human_labels(project, [ids["cat/0000.jpg"]], "car")
    d = image_details(project, ids["cat/0000.jpg"], neighbours=0)
    assert d["label"]["source"] == "human" and d["label"]["classes"] == ["car"] and d["label"]["run"] is None
    assert d["neighbours"] == [] and d["neighbours_note"] == ""


def test_by_sha256_and_without_features(two_roots):
    from labeler.preview import image_details

    project = two_roots
    i = _ids(project)["dog/0002.jpg"]
    sha = project.db.execute("select sha256 from images where id = ?", [i]).fetchone()[0]
    d = image_details(project, sha.upper())
    assert d["id"] == i and d["path"] == "dog/0002.jpg"
    assert image_details(project, sha[:10])["id"] == i
    assert d["neighbours"] == [] and "no clip features" in d["neighbours_note"].lower()
    assert d["top"] == [] and d["label"]["source"] is None


def test_export_path_follows_a_new_import_root(two_roots, tmp_path):
    """The cached export paths are recomputed when the roots change: a third root under another folder."""
    from labeler.export import export_paths
    from labeler.ingest import import_sources
    from labeler.preview import image_details

    project = two_roots
    i = _ids(project)["cat/0000.jpg"]
    assert image_details(project, i, neighbours=0)["path"] == "cat/0000.jpg"
    other = class_folders(tmp_path / "else" / "x", per_class=1, classes=["bird"], seed=7)
    import_sources(project, [str(other)])
    path = image_details(project, i, neighbours=0)["path"]
    assert path == export_paths(project).paths[i] and path != "cat/0000.jpg"


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", "/etc/passwd", "", "   ", "zz12345", "abc", "0", -3, True, 1.5, None, "a" * 65, ["1"]],
)
def test_refuses_what_is_not_an_id_or_sha256(two_roots, bad):
    from labeler.preview import image_details, preview_image

    with pytest.raises(InvalidInputError, match="image"):
        image_details(two_roots, bad)
    with pytest.raises(InvalidInputError, match="image"):
        preview_image(two_roots, bad)


def test_unknown_ids_and_bad_options(two_roots):
    from labeler.preview import image_details, preview_image

    with pytest.raises(InvalidInputError, match="no image with id 999"):
        image_details(two_roots, 999)
    with pytest.raises(InvalidInputError, match="no image of this project has sha256 'abcdef12'"):
        image_details(two_roots, "abcdef12")
    with pytest.raises(InvalidInputError, match="neighbours"):
        image_details(two_roots, 1, neighbours=1000)
    with pytest.raises(InvalidInputError, match="max_side"):
        preview_image(two_roots, 1, max_side=5)


def test_preview_image_is_the_file_else_its_thumbnail(two_roots):
    import os

    from labeler.preview import preview_image

    project = two_roots
    i = _ids(project)["car/0000.jpg"]
    img, note = preview_image(project, i)
    assert img.size == (48, 40) and note == ""
    small, _ = preview_image(project, i, max_side=24)
    assert max(small.size) == 24
    os.remove(project.db.execute("select path from images where id = ?", [i]).fetchone()[0])
    img, note = preview_image(project, i)
    assert img.size == (48, 40) and "thumbnail" in note  # the 128 px thumbnail of a 48×40 image is 48×40


def test_excluded_image_has_details_but_no_neighbours(two_roots):
    from labeler.preview import image_details
    from labeler.review import exclude_images

    project = two_roots
    ids = _ids(project)
    _plant_features(project, ids)
    exclude_images(project, [ids["cat/0001.jpg"]])
    d = image_details(project, ids["cat/0001.jpg"])
    assert d["status"] == "excluded" and d["label"]["source"] is None and "excluded" in d["neighbours_note"]
    near = image_details(project, ids["cat/0000.jpg"], neighbours=2)["neighbours"]
    assert [n["id"] for n in near] == [ids["dog/0000.jpg"], ids["dog/0001.jpg"]]  # the excluded one left out


def test_resolve_image_knows_exported_paths(two_roots):
    """``labeler similar PROJECT cat/0000.jpg``: the export path names one image, though three share 0000.jpg."""
    from labeler.export import export_paths
    from labeler.search import resolve_image

    project = two_roots
    ids = _ids(project)
    for name in ("cat/0000.jpg", "dog/0000.jpg", "car/0000.jpg"):
        assert export_paths(project).paths[ids[name]] == name
        assert resolve_image(project, name)["id"] == ids[name]
    with pytest.raises(InvalidInputError, match="several images"):
        resolve_image(project, "0000.jpg")  # a rel_path of three roots (and no export path) stays ambiguous
