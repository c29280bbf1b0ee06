"""Project archives: a round trip keeps images, labels, descriptions and features; unsafe archives are refused."""

from __future__ import annotations

import json
import os
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from labeler.archive import IMPORT_LOCK, MANIFEST, export_archive, import_archive, read_manifest
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


# --- tampered archives (issue 10: an archive must not read any file on the server) ------------------

MARKER = b"LABELER-SECRET-7f3a9c-DO-NOT-LEAK"


def _rebuild(archive, out, *, db_edit=None, manifest_edit=None, tmp):
    """``archive`` unpacked, its database / manifest edited, packed again as ``out``."""
    import shutil
    import sqlite3

    work = tmp / f"unpacked-{out.stem}"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(work)
    if db_edit:
        conn = sqlite3.connect(work / "labeler.db")
        db_edit(conn)
        conn.commit()
        conn.close()
    manifest = json.loads((work / MANIFEST).read_text())
    if manifest_edit:
        manifest_edit(manifest)
    (work / MANIFEST).write_text(json.dumps(manifest))
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(work.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(work).as_posix())
    shutil.rmtree(work)
    return out


def _secrets() -> list[bytes]:
    """Bytes that must never show up in an export: our marker, and pieces of the server's own files."""
    found = [MARKER]
    for path in ("/etc/passwd", "/proc/self/environ"):
        try:
            data = open(path, "rb").read()
        except OSError:
            continue
        if len(data) >= 16:
            found.append(data[:64])
    return found


def _assert_clean(paths):
    for path in paths:
        if path.is_dir():
            files = [f for f in path.rglob("*") if f.is_file() and not f.is_symlink()]
            links = [f for f in path.rglob("*") if f.is_symlink()]
            assert not links, links
            _assert_clean(files)
            continue
        blobs = [path.read_bytes()]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                blobs += [zf.read(n) for n in zf.namelist()]
        for blob in blobs:
            for secret in _secrets():
                assert secret not in blob, f"{path} holds bytes of a file outside the project"


@pytest.fixture
def tampered(tmp_path):
    """A project archive whose database points its images at files outside the project, /proc and devices."""
    from labeler.ingest import import_sources

    src = tmp_path / "src"
    src.mkdir()
    for k in range(8):
        Image.new("RGB", (10 + k, 10), (20 * k, 3, 4)).save(src / f"{k}.png")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(MARKER * 10)
    project = Project.create("src", ["cat", "dog"])
    import_sources(project, [str(src)], copy=True)
    from labeler.labels import set_human_labels

    ids = [im["id"] for im in project.images()]
    set_human_labels(project, ids, "cat")
    good = export_archive(project, tmp_path / "good.zip")
    fd = os.open(secret, os.O_RDONLY)  # /proc/self/fd/N: an open file of this very process
    evil_paths = [
        str(secret),
        "/etc/passwd",
        "/proc/self/environ",
        f"/proc/self/fd/{fd}",
        "/dev/zero",
        f"{read_manifest(good)['root']}/files/../../secret.txt",
        "/nowhere/6.png",  # these two are "rescued" only by the manifest's external map
        "/nowhere/7.png",
    ]

    def db_edit(conn):
        for image_id, path in zip(ids, evil_paths, strict=False):
            conn.execute("update images set path = ?, root = '/', rel_path = ? where id = ?", [path, path, image_id])

    def manifest_edit(manifest):  # the external map names a file outside the archive's folder
        manifest["external"] = {str(ids[6]): "files/archived/../../../../secret.txt", str(ids[7]): str(secret)}

    bad = _rebuild(good, tmp_path / "bad.zip", db_edit=db_edit, manifest_edit=manifest_edit, tmp=tmp_path)
    yield bad, secret, ids
    os.close(fd)


def test_tampered_archive_reads_nothing_outside_the_project(tampered, tmp_path):
    from labeler.export import export_report

    bad, secret, ids = tampered
    copy = import_archive(bad, name="victim")
    root = str(copy.root.resolve()) + "/"
    rows = {im["id"]: im for im in copy.db["images"].rows}
    assert all(r["path"].startswith(root) and ".." not in r["path"].split("/") for r in rows.values())
    assert [rows[i]["status"] for i in ids] == ["missing"] * 8  # every tampered image, none resolvable
    assert all(not r["rel_path"].startswith("/") for r in rows.values())

    again = export_archive(copy, tmp_path / "again.zip")
    outs = [again]
    for fmt, out in (("csv", "l.csv"), ("jsonl", "l.jsonl"), ("imagefolder", "folder")):
        outs.append(export_report(copy, fmt, tmp_path / out).path)
    _assert_clean(outs)
    assert read_manifest(again)["external"] == {}


def test_export_reads_only_checked_files_even_from_a_tampered_project(full_project, tmp_path):
    """Defence in depth: a project whose database was edited some other way still exports nothing foreign."""
    from labeler.export import export_report
    from labeler.labels import set_human_labels

    project, *_ = full_project
    secret = tmp_path / "secret.txt"
    secret.write_bytes(MARKER * 10)
    inside_link = project.files_dir / "link.png"
    inside_link.symlink_to(secret)  # a link inside the project folder
    ids = [im["id"] for im in project.images()]
    fd = os.open(secret, os.O_RDONLY)
    try:
        evil = [str(secret), "/etc/passwd", "/proc/self/environ", f"/proc/self/fd/{fd}", str(inside_link)]
        with project.db.conn:
            for image_id, path in zip(ids, evil, strict=False):
                project.db.execute("update images set path = ? where id = ?", [path, image_id])
        set_human_labels(project, ids, "cat")
        out = export_archive(project, tmp_path / "out.zip")
        folder = export_report(project, "imagefolder", tmp_path / "folder").path
        linked = export_report(project, "imagefolder", tmp_path / "linked", link=True)
    finally:
        os.close(fd)
    _assert_clean([out, folder])
    with zipfile.ZipFile(out) as zf:
        assert "files/link.png" not in zf.namelist()
    assert read_manifest(out)["missing_external"] == len(evil)  # the inside link resolves outside: refused too
    targets = [os.path.realpath(p) for p in linked.path.rglob("*.png")]
    assert not any(t == str(secret) or t.startswith(("/proc", "/etc")) for t in targets)


def test_planted_trigger_cannot_undo_the_checks(full_project, tmp_path):
    project, *_ = full_project
    good = export_archive(project, tmp_path / "good.zip")

    def db_edit(conn):
        conn.execute(
            "create trigger evil after update on images begin update images set path = '/etc/passwd', "
            "status = 'ok' where id = new.id; end"
        )

    bad = _rebuild(good, tmp_path / "trig.zip", db_edit=db_edit, tmp=tmp_path)
    copy = import_archive(bad, name="trig")
    assert all(im["path"].startswith(str(copy.root.resolve())) for im in copy.images())
    assert not copy.db.execute("select name from sqlite_master where type = 'trigger'").fetchall()


def test_bad_sha256_refused(full_project, tmp_path):
    project, *_ = full_project
    good = export_archive(project, tmp_path / "good.zip")
    bad = _rebuild(
        good,
        tmp_path / "sha.zip",
        db_edit=lambda c: c.execute("update images set sha256 = '../../../../tmp/x' where id = 1"),
        tmp=tmp_path,
    )
    with pytest.raises(InvalidInputError, match="sha256"):
        import_archive(bad, name="sha")
    assert not (tmp_path / "data" / "sha").exists()


def _leftovers(home):
    """What a data dir holds, less the archive import lock file (kept: unlinking a lock others may wait on races)."""
    return sorted(p.name for p in home.iterdir() if p.name != IMPORT_LOCK) if home.exists() else []


def test_schema_too_new_leaves_nothing(full_project, tmp_path):
    project, *_ = full_project
    good = export_archive(project, tmp_path / "good.zip")
    newer = _rebuild(
        good, tmp_path / "newer.zip", db_edit=lambda c: c.execute("pragma user_version = 999"), tmp=tmp_path
    )
    home = tmp_path / "data"
    before = _leftovers(home)
    with pytest.raises(InvalidInputError, match="newer than this Labeler"):
        import_archive(newer, name="newer")
    with pytest.raises(InvalidInputError, match="newer than this Labeler"):
        import_archive(newer)
    assert _leftovers(home) == before


def test_not_a_database_leaves_nothing(tmp_path):
    path = tmp_path / "junkdb.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MANIFEST, json.dumps({"format": "labeler-project", "version": 1, "name": "j", "root": "/x"}))
        zf.writestr("labeler.db", b"this is not sqlite" * 100)
    with pytest.raises(InvalidInputError, match="cannot be read|not a Labeler project database"):
        import_archive(path, name="junk")
    assert _leftovers(tmp_path / "data") == []


def test_import_cap_names_the_archive_and_the_env_var(full_project, tmp_path, monkeypatch):
    from labeler.ingest import MAX_IMPORT_BYTES_ENV

    project, *_ = full_project
    good = export_archive(project, tmp_path / "good.zip")
    before = _leftovers(tmp_path / "data")
    monkeypatch.setenv(MAX_IMPORT_BYTES_ENV, "1000")
    with pytest.raises(InvalidInputError) as exc:
        import_archive(good, name="capped")
    assert (
        "good.zip" in str(exc.value) and MAX_IMPORT_BYTES_ENV in str(exc.value) and "1.0 kB allowed" in str(exc.value)
    )
    assert _leftovers(tmp_path / "data") == before


def test_device_member_refused(tmp_path):
    archive = tmp_path / "dev.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(MANIFEST, json.dumps({"format": "labeler-project", "version": 1, "name": "d", "root": "/x"}))
        zf.writestr("labeler.db", b"")
        info = zipfile.ZipInfo("files/zero")
        info.external_attr = (stat.S_IFCHR | 0o666) << 16
        zf.writestr(info, b"")
    with pytest.raises(InvalidInputError, match="not a regular file"):
        import_archive(archive, name="dev")


def test_no_images_and_inside_only_exports(full_project, tmp_path):
    project, outside, *_ = full_project
    light = export_archive(project, tmp_path / "light.zip", images=False)
    with zipfile.ZipFile(light) as zf:
        assert not any(n.startswith("files/") for n in zf.namelist())
    copy = import_archive(light, name="light")
    assert copy.image_count("ok") == 0 and copy.image_count("missing") == 7
    from labeler.ingest import import_sources

    import_sources(copy, [str(outside)])  # the same images again: found by content, labels kept
    assert copy.image_count("ok") == 6

    inside = export_archive(project, tmp_path / "inside.zip", outside=False)  # the app in uploads-only mode
    manifest = read_manifest(inside)
    assert manifest["external"] == {} and manifest["missing_external"] == 6


def test_cli_archive_round_trip_json(full_project, tmp_path, capsys):
    from labeler.cli import main

    project, *_ = full_project
    out = tmp_path / "cli.zip"
    assert main(["archive", "export", str(project.root), "-o", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["path"] == str(out.resolve()) and data["images"] == 7 and data["copied_from_outside"] == 6
    assert main(["archive", "import", str(out), "--name", "cli-copy", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["project"] == "cli-copy" and data["images_ok"] == 7 and data["images_missing"] == 0
    assert main(["archive", "import", str(out), "--name", "cli-copy"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["archive", "export", str(project.root), "-o", str(tmp_path / "n.zip"), "--no-images"]) == 0
    assert "image files left out" in capsys.readouterr().out


def test_two_names_for_one_file_refused_cleanly(tmp_path):
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(MANIFEST, json.dumps({"format": "labeler-project", "version": 1, "name": "d", "root": "/x"}))
        zf.writestr("labeler.db", b"")
        zf.writestr("files/a.png", b"1")
        zf.writestr("files/./a.png", b"2")
    with pytest.raises(InvalidInputError, match="cannot be unpacked"):
        import_archive(archive, name="dup")
    assert _leftovers(tmp_path / "data") == []


def test_two_imports_into_one_name_do_not_race(full_project, tmp_path, monkeypatch):
    """Imports into one data dir take turns: one that waits too long is refused, leaving nothing."""
    from filelock import FileLock

    import labeler.archive as archive_mod
    from labeler.jobs import ProjectBusyError

    project, *_ = full_project
    path = export_archive(project, tmp_path / "p.zip")
    home = project.root.parent
    monkeypatch.setattr(archive_mod, "ARCHIVE_LOCK_TIMEOUT_S", 0.2)
    other = FileLock(str(home / IMPORT_LOCK))
    with other:
        with pytest.raises(ProjectBusyError, match="another project import"):
            import_archive(path, name="copy")
    assert not (home / "copy").exists() and not any(".importing-" in n for n in _leftovers(home))
    assert import_archive(path, name="copy").root == home / "copy"
    with pytest.raises(ProjectExistsError):
        import_archive(path, name="copy")
