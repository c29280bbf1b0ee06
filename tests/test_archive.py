"""Project archives: a round trip keeps images, labels, descriptions and features; unsafe archives are refused."""

from __future__ import annotations

import json
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from labeler.archive import MANIFEST, export_archive, import_archive, read_manifest
from labeler.errors import InvalidInputError, ProjectExistsError
from labeler.project import Project


@pytest.fixture
def full_project(tmp_path):
    """A project with images by reference and uploaded (copied), labels, descriptions, a feature set, a run."""
    from labeler.describe import add_description
    from labeler.ingest import import_sources
    from labeler.jobs import Job
    from labeler.labels import set_human_labels

    outside = tmp_path / "outside"
    for cls, color in (("cat", (200, 30, 30)), ("dog", (30, 200, 30))):
        (outside / cls).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (24 + k, 20), (color[0], color[1] + k, 40)).save(outside / cls / f"{cls}{k}.png")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    Image.new("RGB", (30, 30), (1, 2, 250)).save(uploads / "car.png")
    project = Project.create("pets", ["cat", "dog", "car"])
    import_sources(project, [str(outside)])
    import_sources(project, [str(uploads / "car.png")], copy=True)
    images = project.images()
    assert len(images) == 7
    set_human_labels(project, [images[0]["id"], images[1]["id"]], "cat")
    set_human_labels(project, [images[-1]["id"]], "car")
    add_description(project, "cat", "a small furry animal with whiskers")
    fs = project.features
    set_id = fs.ensure_set("clip:tiny:none", "clip", 8, model="tiny")
    shas = [im["sha256"] for im in images]
    vectors = np.random.default_rng(0).standard_normal((len(shas), 8)).astype(np.float32)
    fs.append(set_id, shas, vectors)
    with Job.start(project, "train", method="nola", params={"epochs": 1}) as job:
        (project.runs_dir / str(job.id)).mkdir(parents=True)
        (project.runs_dir / str(job.id) / "best.pt").write_bytes(b"weights")
    return project, outside, set_id, vectors


def _snapshot(project: Project) -> dict:
    from labeler.describe import list_descriptions
    from labeler.labels import final_labels

    return {
        "classes": project.classes,
        "images": [(im["sha256"], im["rel_path"], im["folder_label"]) for im in project.images()],
        "labels": [(it.sha256, it.source, it.label) for it in final_labels(project)],
        "descriptions": [(d["class"], d["text"], d["enabled"]) for d in list_descriptions(project)],
        "runs": [(r[0], r[1], r[2]) for r in project.db.execute("select kind, method, status from runs order by id")],
    }


def test_round_trip_keeps_images_labels_descriptions_and_features(full_project, tmp_path):
    import shutil

    project, outside, set_id, vectors = full_project
    before = _snapshot(project)
    path = export_archive(project)
    assert path.parent == project.exports_dir and path.suffix == ".zip"
    manifest = read_manifest(path)
    assert manifest["name"] == "pets" and manifest["images"] == 7 and len(manifest["external"]) == 6
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    assert "labeler.db" in names and not any(n.startswith("exports/") for n in names)
    assert any(n.startswith("files/uploads/") for n in names) and any(n.startswith("thumbs/") for n in names)

    shutil.rmtree(outside)  # the copy must not need the original folders
    copy = import_archive(path, name="pets-copy")
    assert copy.root.name == "pets-copy" and copy.name == "pets-copy"
    assert _snapshot(copy) == before
    for im in copy.images():
        assert str(copy.root.resolve()) in im["path"] and Image.open(im["path"]).size[0] >= 24
    new_set = copy.features.sets()[0]
    got = copy.features.load(new_set["id"], [im["sha256"] for im in copy.images()])
    stored = project.features.load(set_id, [im["sha256"] for im in copy.images()])  # float16 on disk
    assert np.array_equal(got, stored) and np.allclose(got, vectors, atol=1e-2)
    assert [p.read_bytes() for p in copy.runs_dir.glob("*/best.pt")] == [b"weights"]
    assert any(copy.thumbs_dir.rglob("*.jpg"))

    again = import_archive(path)  # the archived name is taken: a free one is picked
    assert again.root.name == "pets-2" and _snapshot(again) == before
    with pytest.raises(ProjectExistsError):
        import_archive(path, name="pets-copy")


def test_export_refuses_while_a_job_runs(full_project):
    from labeler.jobs import Job

    project, *_ = full_project
    job = Job.start(project, "features")
    with pytest.raises(InvalidInputError, match="job is running"):
        export_archive(project)
    job.finish("done")
    assert export_archive(project, project.root.parent / "out.zip").name == "out.zip"


def _evil_zip(path, member: str, symlink: bool = False):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MANIFEST, json.dumps({"format": "labeler-project", "version": 1, "name": "evil", "root": "/x"}))
        zf.writestr("labeler.db", b"")
        info = zipfile.ZipInfo(member)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, b"/etc/passwd" if symlink else b"pwned")
    return path


@pytest.mark.parametrize(
    ("member", "symlink"),
    [
        ("../evil.txt", False),
        ("files/../../evil.txt", False),
        ("/tmp/evil.txt", False),
        ("C:/evil.txt", False),
        ("files\\..\\..\\evil.txt", False),
        ("files/link", True),
    ],
)
def test_zip_slip_and_links_are_refused(tmp_path, member, symlink):
    archive = _evil_zip(tmp_path / "evil.zip", member, symlink)
    with pytest.raises(InvalidInputError, match="unsafe entry"):
        import_archive(archive, name="victim")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "data" / "evil.txt").exists()
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_not_an_archive(tmp_path):
    plain = tmp_path / "images.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("cat/a.png", b"x")
    with pytest.raises(InvalidInputError, match="not a Labeler project archive"):
        import_archive(plain)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="not a readable zip"):
        import_archive(tmp_path / "junk.zip")
    big = _evil_zip(tmp_path / "big.zip", "files/ok.txt")
    with pytest.raises(InvalidInputError, match="more than"):
        import_archive(big, name="big", max_bytes=3)


def test_import_into_a_visitor_folder(full_project, tmp_path):
    project, *_ = full_project
    path = export_archive(project)
    home = tmp_path / "data" / "visitors" / ("a" * 32)
    home.mkdir(parents=True)
    copy = import_archive(path, root=home)
    assert copy.root.parent == home and copy.root.name == "pets" and copy.image_count() == 7
    with pytest.raises(InvalidInputError, match="not a project name"):
        import_archive(path, name="../escape", root=home)
