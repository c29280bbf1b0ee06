"""Import: folders, files, zips, dedupe, bad files, modes, orientation, thumbnails, cancel."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeler import ingest
from labeler.errors import InvalidInputError, JobCancelled
from labeler.ingest import BadImageError, ensure_thumbnail, import_sources, load_rgb, thumbnail_path
from labeler.jobs import get_run, list_runs, request_cancel

from .conftest import CIFAR_CLASSES, cifar_subset, class_folders

# --- helpers ------------------------------------------------------------------------


def make_image(path: Path, seed: int = 0, size: tuple[int, int] = (16, 12), fmt: str | None = None, **kw) -> Path:
    """A small RGB noise image (distinct bytes per seed) saved at path."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **kw)
    return path


def image_bytes(seed: int = 0, size: tuple[int, int] = (16, 12), fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def rows_by_rel(project) -> dict[str, dict]:
    return {r["rel_path"]: r for r in project.images()}


def skipped_reasons(project) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in project.skipped()}


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- folders ---------------------------------------------------------------------------


def test_folder_import_fields_labels_and_extensions(project, tmp_path):
    src = tmp_path / "src"
    make_image(src / "root.jpg", 1)
    make_image(src / "cat" / "a.JPG", 2, fmt="JPEG")
    make_image(src / "dog" / "b.PNG", 3, fmt="PNG")
    make_image(src / "dog" / "c.Jpeg", 4, fmt="JPEG")
    make_image(src / "x" / "y" / "d.TIFF", 5, fmt="TIFF")
    make_image(src / "e.webp", 6)
    make_image(src / "f.bmp", 7)
    make_image(src / "g.gif", 8)
    make_image(src / "h.tif", 9)
    (src / "notes.txt").write_text("not an image, and not an image extension")
    (src / "cat" / "data.csv").write_text("a,b\n")

    report = import_sources(project, [src])

    assert (report.added, report.duplicates, report.skipped) == (9, 0, [])
    rows = rows_by_rel(project)
    assert set(rows) == {
        "root.jpg",
        "cat/a.JPG",
        "dog/b.PNG",
        "dog/c.Jpeg",
        "x/y/d.TIFF",
        "e.webp",
        "f.bmp",
        "g.gif",
        "h.tif",
    }
    assert rows["root.jpg"]["folder_label"] is None
    assert rows["e.webp"]["folder_label"] is None
    assert rows["cat/a.JPG"]["folder_label"] == "cat"
    assert rows["dog/b.PNG"]["folder_label"] == "dog"
    assert rows["x/y/d.TIFF"]["folder_label"] == "y"
    r = rows["dog/b.PNG"]
    assert r["path"] == str(src / "dog" / "b.PNG") and os.path.isabs(r["path"])
    assert r["root"] == str(src)
    assert (r["width"], r["height"], r["format"], r["status"]) == (16, 12, "PNG", "ok")
    assert r["bytes"] == (src / "dog" / "b.PNG").stat().st_size
    assert r["sha256"] == sha_of(src / "dog" / "b.PNG")
    assert r["added_at"] > 0
    assert {rows[k]["format"] for k in ("e.webp", "f.bmp", "g.gif", "h.tif")} == {"WEBP", "BMP", "GIF", "TIFF"}
    assert project.skipped() == []

    run = get_run(project, report.run_id)
    assert run["kind"] == "import" and run["status"] == "done" and run["progress"] == 1.0
    assert run["params"]["sources"] == [str(src)]
    assert run["metrics"]["added"] == 9
    assert report.to_dict() == {"added": 9, "duplicates": 0, "restored": 0, "skipped": [], "run_id": report.run_id}


def test_single_files_and_non_image_file_source(project, tmp_path):
    img = make_image(tmp_path / "one.png", 1)
    other = tmp_path / "readme.md"
    other.write_text("hello")
    report = import_sources(project, [str(img), other])
    assert report.added == 1
    row = project.images()[0]
    assert (row["rel_path"], row["root"], row["folder_label"]) == ("one.png", str(tmp_path), None)
    assert len(report.skipped) == 1 and report.skipped[0]["path"] == str(other)
    assert report.skipped[0]["reason"].startswith("not an image file")
    assert skipped_reasons(project) == {str(other): report.skipped[0]["reason"]}


def test_nonexistent_source_raises_before_any_work(project, tmp_path):
    good = make_image(tmp_path / "ok.jpg")
    missing = tmp_path / "nope"
    with pytest.raises(InvalidInputError, match="nope"):
        import_sources(project, [good, missing])
    assert project.image_count() == 0
    assert list_runs(project, kind="import") == []
    with pytest.raises(InvalidInputError):
        import_sources(project, [])


def test_symlinked_files_keep_link_paths(project, tmp_path):
    real = make_image(tmp_path / "store" / "0001.jpg", 1)
    (tmp_path / "src" / "bird").mkdir(parents=True)
    (tmp_path / "src" / "bird" / "0001.jpg").symlink_to(real)
    import_sources(project, [tmp_path / "src"])
    row = project.images()[0]
    assert row["rel_path"] == "bird/0001.jpg" and row["folder_label"] == "bird"
    assert row["path"] == str(tmp_path / "src" / "bird" / "0001.jpg")


def test_importing_a_parent_folder_skips_the_project_itself(project, tmp_path):
    # The project lives in tmp_path/proj; its thumbnails must not be imported as images.
    make_image(tmp_path / "pics" / "a.jpg", 1)
    make_image(tmp_path / "pics" / "b.jpg", 2)
    import_sources(project, [tmp_path])
    assert any(project.thumbs_dir.rglob("*.jpg"))
    second = import_sources(project, [tmp_path])
    assert project.image_count() == 2
    assert (second.added, second.duplicates) == (0, 2)


# --- bad files -------------------------------------------------------------------------


def _truncated(fmt: str, ext: str):
    def make(path: Path) -> None:
        data = image_bytes(3, size=(64, 48), fmt=fmt)
        path.write_bytes(data[: len(data) // 2])

    return make


BAD_FILES = {
    "empty.jpg": (lambda p: p.write_bytes(b""), "empty file"),
    "trunc.jpg": (_truncated("JPEG", "jpg"), "truncated or corrupt image"),
    "trunc.png": (_truncated("PNG", "png"), "truncated or corrupt image"),
    "text.jpg": (lambda p: p.write_text("this is plain text, not a JPEG\n" * 20), "not an image: cannot identify"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_recorded_and_does_not_stop_import(project, tmp_path, name):
    make, reason = BAD_FILES[name]
    src = tmp_path / "src"
    make_image(src / "a_good.jpg", 1)
    (src / "cat").mkdir(parents=True)
    make(src / "cat" / name)
    make_image(src / "z_good.png", 2)

    report = import_sources(project, [src])

    assert report.added == 2
    assert set(rows_by_rel(project)) == {"a_good.jpg", "z_good.png"}
    bad_path = str(src / "cat" / name)
    assert [s["path"] for s in report.skipped] == [bad_path]
    assert report.skipped[0]["reason"].startswith(reason)
    assert len(report.skipped[0]["reason"]) < 200
    assert skipped_reasons(project)[bad_path] == report.skipped[0]["reason"]
    row = project.db.execute("select root, time from skipped_files where path = ?", [bad_path]).fetchone()
    assert row[0] == str(src) and row[1] > 0
    with pytest.raises(BadImageError):
        load_rgb(bad_path)


def test_decompression_bomb_rejected(project, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    src = tmp_path / "src"
    make_image(src / "ok.png", 1, size=(20, 20))  # 400 px
    make_image(src / "warn.png", 2, size=(40, 40))  # 1,600 px: over the limit, under twice it (Pillow only warns)
    make_image(src / "error.png", 3, size=(100, 100))  # 10,000 px: Pillow raises
    report = import_sources(project, [src])
    assert report.added == 1 and project.images()[0]["rel_path"] == "ok.png"
    reasons = {Path(s["path"]).name: s["reason"] for s in report.skipped}
    assert set(reasons) == {"warn.png", "error.png"}
    assert "1,600 pixels" in reasons["warn.png"] and "1,000" in reasons["warn.png"]
    assert "10,000 pixels" in reasons["error.png"] and "1,000" in reasons["error.png"]
    with pytest.raises(BadImageError, match="too large"):
        load_rgb(src / "warn.png")


# --- orientation and modes ------------------------------------------------------------------


def test_exif_orientation_applied(project, tmp_path):
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    img.paste((10, 10, 200), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)

    import_sources(project, [path])
    row = project.images()[0]
    assert (row["width"], row["height"]) == (20, 40)
    out = load_rgb(path)
    assert out.size == (20, 40) and out.mode == "RGB"
    # Rotated clockwise: the left (blue) half is now on top.
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[2] > 150 and top[0] < 80
    assert bottom[0] > 150 and bottom[2] < 80
    with Image.open(thumbnail_path(project, row["sha256"])) as th:
        assert th.size[1] > th.size[0]


def _save_modes(d: Path) -> dict[str, tuple[Path, tuple[int, int, int]]]:
    """One file per awkward mode and the RGB value expected at pixel (1, 1)."""
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    Image.new("L", (8, 8), 100).save(d / "gray.png")
    out["L"] = (d / "gray.png", (100, 100, 100))
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(d / "cmyk.jpg", quality=95)
    out["CMYK"] = (d / "cmyk.jpg", (255, 255, 255))
    mid = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    assert mid.mode == "I;16"
    mid.save(d / "gray16.png")
    out["I;16"] = (d / "gray16.png", (128, 128, 128))
    Image.fromarray(np.full((8, 8), 32768, dtype=np.int32)).save(d / "gray32.tif")
    out["I"] = (d / "gray32.tif", (128, 128, 128))
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(d / "float.tif")
    out["F"] = (d / "float.tif", (128, 128, 128))
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(d / "clear.png")  # fully transparent red → white
    out["RGBA"] = (d / "clear.png", (255, 255, 255))
    Image.new("RGBA", (8, 8), (0, 0, 255, 255)).save(d / "opaque.png")
    out["RGBA opaque"] = (d / "opaque.png", (0, 0, 255))
    Image.new("LA", (8, 8), (0, 0)).save(d / "la.png")
    out["LA"] = (d / "la.png", (255, 255, 255))
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))
    pal.save(d / "palette.png")
    out["P"] = (d / "palette.png", (0, 200, 0))
    pal_t = pal.copy()
    pal_t.info["transparency"] = 1
    pal_t.save(d / "palette_t.gif", transparency=1)
    out["P transparent"] = (d / "palette_t.gif", (255, 255, 255))
    Image.new("1", (8, 8), 1).save(d / "bilevel.bmp")
    out["1"] = (d / "bilevel.bmp", (255, 255, 255))
    return out


def test_modes_import_and_load_as_rgb(project, tmp_path):
    files = _save_modes(tmp_path / "modes")
    report = import_sources(project, [tmp_path / "modes"])
    assert report.skipped == []
    assert report.added == len(files)
    for mode, (path, expected) in files.items():
        img = load_rgb(path)
        assert img.mode == "RGB", mode
        assert img.size == (8, 8), mode
        got = img.getpixel((1, 1))
        assert all(abs(g - e) <= 3 for g, e in zip(got, expected, strict=True)), (mode, got, expected)
    for row in project.images():
        assert thumbnail_path(project, row["sha256"]).exists()


def test_16bit_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.float64).round().astype(np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    arr = np.asarray(load_rgb(tmp_path / "ramp16.png"))[:, :, 0].astype(int)
    assert arr.min() == 0 and arr.max() == 255
    np.testing.assert_allclose(arr.ravel(), ramp.ravel() / 257.0, atol=1)


# --- zips ---------------------------------------------------------------------------------


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_zip_traversal_refused_and_good_entries_imported(project, tmp_path):
    work = tmp_path / "work"
    archive = make_zip(
        work / "shots.zip",
        {
            "good/a.jpg": image_bytes(1),
            "b.png": image_bytes(2, fmt="PNG"),
            "../evil.jpg": image_bytes(3),
            "/abs.jpg": image_bytes(4),
            "a/../../x.jpg": image_bytes(5),
            "C:/drive.jpg": image_bytes(6),
            "readme.txt": b"ignored",
        },
    )
    before = {p for p in tmp_path.rglob("*")}
    report = import_sources(project, [archive])

    target = project.files_dir / f"shots-{sha_of(archive)[:8]}"
    assert report.added == 2
    rows = rows_by_rel(project)
    assert set(rows) == {"good/a.jpg", "b.png"}
    assert rows["good/a.jpg"]["root"] == str(target)
    assert rows["good/a.jpg"]["path"] == str(target / "good" / "a.jpg")
    assert rows["good/a.jpg"]["folder_label"] == "good" and rows["b.png"]["folder_label"] is None
    assert (target / "good" / "a.jpg").read_bytes() == image_bytes(1)

    unsafe = {s["path"]: s["reason"] for s in report.skipped}
    assert set(unsafe) == {f"{archive}/{n}" for n in ("../evil.jpg", "/abs.jpg", "a/../../x.jpg", "C:/drive.jpg")}
    assert all(r.startswith("unsafe path in zip archive") for r in unsafe.values())
    assert skipped_reasons(project) == unsafe
    # Nothing was written outside the extraction folder (and no .part files were left behind).
    new = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert all(target in p.parents or project.thumbs_dir in p.parents or p.parent == project.root for p in new)
    assert not any(p.name in ("evil.jpg", "x.jpg", "abs.jpg", "drive.jpg") for p in tmp_path.rglob("*"))
    assert not list(project.files_dir.rglob("*.part"))
    assert not Path("/abs.jpg").exists()


def test_zip_entry_size_guard(project, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "ZIP_MAX_ENTRY_BYTES", 2000)
    small = image_bytes(1, size=(4, 4))
    big = image_bytes(2, size=(64, 64), fmt="PNG")
    assert len(small) < 2000 < len(big)
    archive = make_zip(tmp_path / "bomb.zip", {"small.jpg": small, "big.png": big})
    report = import_sources(project, [archive])
    assert report.added == 1
    assert [s["path"] for s in report.skipped] == [f"{archive}/big.png"]
    assert "zip entry too large" in report.skipped[0]["reason"]
    assert not list(project.files_dir.rglob("big.png*"))


def test_zip_inside_folder_and_bad_entries(project, tmp_path):
    src = tmp_path / "src"
    make_image(src / "pics" / "a.jpg", 1)
    archive = make_zip(src / "sub" / "More.ZIP", {"cat/b.jpg": image_bytes(2), "cat/broken.jpg": b"nope"})
    (src / "sub" / "bad.zip").write_bytes(b"not a zip at all")
    report = import_sources(project, [src])
    assert report.added == 2
    rows = rows_by_rel(project)
    assert set(rows) == {"pics/a.jpg", "cat/b.jpg"}
    assert rows["cat/b.jpg"]["root"] == str(project.files_dir / f"More-{sha_of(archive)[:8]}")
    assert rows["cat/b.jpg"]["folder_label"] == "cat"
    reasons = skipped_reasons(project)
    assert reasons[f"{archive}/cat/broken.jpg"].startswith("not an image")
    assert reasons[str(src / "sub" / "bad.zip")].startswith("not a readable zip archive")


# --- dedupe and idempotence ---------------------------------------------------------------------


def test_reimport_is_idempotent(project, tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        make_image(src / f"c{i % 2}" / f"{i}.jpg", i)
    (src / "empty.png").write_bytes(b"")
    (src / "junk.jpg").write_text("junk")
    archive = make_zip(tmp_path / "z.zip", {"d/z1.jpg": image_bytes(10), "../bad.jpg": image_bytes(11)})

    first = import_sources(project, [src, archive])
    assert (first.added, first.duplicates, len(first.skipped)) == (4, 0, 3)
    rows_before = project.images()
    second = import_sources(project, [src, archive])
    assert (second.added, second.duplicates, len(second.skipped)) == (0, 4, 3)
    assert project.images() == rows_before
    assert project.db.execute("select count(*) from skipped_files").fetchone()[0] == 3
    assert len(project.skipped()) == 3
    assert not list(project.files_dir.rglob("*.part"))


def test_moved_file_marked_missing_is_restored_by_reimport(project, tmp_path):
    from labeler.labels import set_human_labels

    src = tmp_path / "old"
    a = make_image(src / "cat" / "a.jpg", 1)
    make_image(src / "dog" / "b.jpg", 2)
    import_sources(project, [src])
    row = rows_by_rel(project)["cat/a.jpg"]
    set_human_labels(project, [row["id"]], "dog")
    moved = tmp_path / "new" / "cat"
    moved.mkdir(parents=True)
    a.rename(moved / "a.jpg")
    with project.db.conn:  # what features/export do when a file has vanished
        project.db.conn.execute("update images set status = 'missing' where id = ?", [row["id"]])
    assert project.image_count("missing") == 1

    report = import_sources(project, [tmp_path / "new"])
    assert (report.added, report.duplicates, report.restored) == (0, 0, 1)
    again = project.db["images"].get(row["id"])
    assert again["status"] == "ok" and again["path"] == str(moved / "a.jpg") and again["folder_label"] == "cat"
    root_path = project.db.execute("select path from import_roots where id = ?", [again["root_id"]]).fetchone()[0]
    assert root_path == again["root"] == str(tmp_path / "new")  # the import root it was found under
    assert project.image_count("missing") == 0 and project.image_count() == 2
    label = project.db.execute("select classes, source from labels where image_id = ?", [row["id"]]).fetchone()
    assert tuple(label) == ('["dog"]', "human")  # the human label survived the move
    # a second import of the same folder is a plain duplicate
    assert (import_sources(project, [tmp_path / "new"]).restored, project.image_count()) == (0, 2)


def test_duplicates_across_paths_counted(project, tmp_path):
    a = make_image(tmp_path / "a" / "x.jpg", 7)
    (tmp_path / "b").mkdir()
    b = tmp_path / "b" / "y.jpg"
    b.write_bytes(a.read_bytes())
    report = import_sources(project, [tmp_path / "a", tmp_path / "b"])
    assert (report.added, report.duplicates) == (1, 1)
    assert project.image_count() == 1


def test_fixed_file_leaves_skipped_list(project, tmp_path):
    path = tmp_path / "src" / "later.jpg"
    path.parent.mkdir()
    path.write_bytes(b"")
    import_sources(project, [tmp_path / "src"])
    assert skipped_reasons(project) == {str(path): "empty file"}
    make_image(path, 1)
    report = import_sources(project, [tmp_path / "src"])
    assert report.added == 1 and project.skipped() == []


# --- thumbnails and copy ---------------------------------------------------------------------


def test_thumbnails_written_and_regenerated(project, tmp_path):
    big = make_image(tmp_path / "big.png", 1, size=(300, 200))
    tall = make_image(tmp_path / "tall.jpg", 2, size=(50, 400))
    tiny = make_image(tmp_path / "tiny.jpg", 3, size=(10, 6))
    import_sources(project, [big, tall, tiny])
    sizes = {}
    for row in project.images():
        th = thumbnail_path(project, row["sha256"])
        assert th == project.thumbs_dir / row["sha256"][:2] / f"{row['sha256']}.jpg"
        with Image.open(th) as im:
            assert im.format == "JPEG" and max(im.size) <= 128
            sizes[row["rel_path"]] = im.size
    assert sizes == {"big.png": (128, 85), "tall.jpg": (16, 128), "tiny.jpg": (10, 6)}

    row = rows_by_rel(project)["big.png"]
    th = thumbnail_path(project, row["sha256"])
    th.unlink()
    assert ensure_thumbnail(project, row) == th and th.exists()
    with Image.open(th) as im:
        assert im.size == (128, 85)


def test_copy_mode_copies_into_project(project, tmp_path):
    a = make_image(tmp_path / "up1" / "image.jpg", 1)
    b = make_image(tmp_path / "up2" / "image.jpg", 2)
    report = import_sources(project, [a, b], copy=True)
    assert report.added == 2
    uploads = project.files_dir / ingest.UPLOADS_DIRNAME
    rows = project.images()
    for row in rows:
        p = Path(row["path"])
        assert uploads in p.parents and p.exists()
        assert row["root"] == str(uploads) and Path(row["root"], row["rel_path"]) == p
        assert sha_of(p) == row["sha256"]
    assert len({r["path"] for r in rows}) == 2
    a.unlink()
    b.unlink()
    assert all(load_rgb(r["path"]).size == (16, 12) for r in rows)


# --- cancel ---------------------------------------------------------------------------------


def _ten_images(src: Path) -> Path:
    for i in range(10):
        make_image(src / f"{i:02d}.png", i, fmt="PNG")
    return src


def test_cancel_from_progress_callback_keeps_committed_batches(project, tmp_path):
    src = _ten_images(tmp_path / "src")
    calls = []

    def stop_after_first_batch(done, total, msg):
        calls.append((done, total))
        if done >= 3:
            raise JobCancelled("stop")

    with pytest.raises(JobCancelled):
        import_sources(project, [src], batch_size=3, on_progress=stop_after_first_batch)
    assert calls[0] == (0, 10)
    assert project.image_count() == 3
    assert list_runs(project, kind="import")[0]["status"] == "cancelled"

    report = import_sources(project, [src], batch_size=3)
    assert (report.added, report.duplicates) == (7, 3)
    assert project.image_count() == 10
    assert get_run(project, report.run_id)["status"] == "done"


def test_request_cancel_stops_import(project, tmp_path):
    src = _ten_images(tmp_path / "src")

    def cancel_at_six(done, total, msg):
        if done == 6:
            request_cancel(project, list_runs(project, kind="import", status="running")[0]["id"])

    with pytest.raises(JobCancelled):
        import_sources(project, [src], batch_size=3, on_progress=cancel_at_six)
    assert project.image_count() == 6
    report = import_sources(project, [src], batch_size=3)
    assert (report.added, report.duplicates) == (4, 6)


# --- class folders: generated, and real CIFAR where present -----------------------------------------------------------


@pytest.mark.parametrize("source", ["generated", "cifar"])
def test_class_folder_import(project, tmp_path, source):
    src = (class_folders if source == "generated" else cifar_subset)(tmp_path / source, 5)
    report = import_sources(project, [src], batch_size=16)
    assert report.skipped == []
    assert report.added + report.duplicates == 50
    rows = project.images()
    assert len(rows) == report.added >= 45
    assert {r["folder_label"] for r in rows} <= set(CIFAR_CLASSES)
    assert all((r["width"], r["height"], r["format"]) == (32, 32, "JPEG") for r in rows)
    assert all(r["rel_path"] == f"{r['folder_label']}/{Path(r['path']).name}" for r in rows)
    assert all(thumbnail_path(project, r["sha256"]).exists() for r in rows)


# --- size limits and padded images ------------------------------------------------------


def _padded_png(seed: int, pad: int) -> bytes:
    """An 8×8 PNG followed by ``pad`` zero bytes (the disk-filling upload of issue 10)."""
    return image_bytes(seed, (8, 8), "PNG") + b"\0" * pad


def _project_bytes(project) -> int:
    return sum(f.stat().st_size for f in project.root.rglob("*") if f.is_file())


def test_padded_png_in_a_zip_is_skipped_without_being_extracted(project, tmp_path):
    pad = 3 * 1024 * 1024  # a few MB, over the 1 MiB slack
    zpath = tmp_path / "padded.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k in range(4):
            zf.writestr(f"img{k}.png", _padded_png(k, pad))
        zf.writestr("ok.png", image_bytes(9, (8, 8), "PNG"))
    assert zpath.stat().st_size < 200_000
    before = _project_bytes(project)
    report = import_sources(project, [zpath])
    assert report.added == 1 and len(report.skipped) == 4
    assert all(s["reason"].startswith("padded image") for s in report.skipped)
    assert all("padded image" in r for r in skipped_reasons(project).values())
    assert _project_bytes(project) - before < 1_000_000  # nothing big landed on disk, not even for a moment
    assert not list(project.files_dir.rglob("*.part"))


def test_padded_file_skipped_and_modest_trailing_data_allowed(project, tmp_path):
    padded = tmp_path / "src" / "padded.png"
    padded.parent.mkdir()
    padded.write_bytes(_padded_png(1, 2 * 1024 * 1024))
    trailer = tmp_path / "src" / "trailer.jpg"
    trailer.write_bytes(image_bytes(2, (16, 12), "JPEG") + b"metadata" * 1000)  # 8 kB after EOI: fine
    report = import_sources(project, [tmp_path / "src"], copy=True)
    assert report.added == 1
    assert [s["reason"][:12] for s in report.skipped] == ["padded image"]
    assert not (project.files_dir / "uploads" / "padded.png").exists()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_image_data_end_finds_the_end_of_each_format(fmt):
    data = image_bytes(3, (40, 30), fmt)
    assert ingest.image_data_end(io.BytesIO(data)) == len(data)
    assert ingest.image_data_end(io.BytesIO(data + b"\0" * 5000)) == len(data)
    assert ingest.padding_reason(io.BytesIO(data + b"\0" * (2 * 1024 * 1024)), len(data) + 2 * 1024 * 1024)


def test_progressive_jpeg_end(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        buf, "JPEG", progressive=True
    )
    assert ingest.image_data_end(io.BytesIO(buf.getvalue())) == len(buf.getvalue())


def test_zip_over_the_import_cap_is_refused_before_writing(project, tmp_path, monkeypatch):
    zpath = make_zip(tmp_path / "many.zip", {f"a{k}.png": image_bytes(k, (64, 64), "PNG") for k in range(6)})
    with zipfile.ZipFile(zpath) as zf:
        unpacked = sum(i.file_size for i in zf.infolist())
    monkeypatch.setenv(ingest.MAX_IMPORT_BYTES_ENV, str(unpacked - 1))
    before = _project_bytes(project)
    with pytest.raises(InvalidInputError, match=ingest.MAX_IMPORT_BYTES_ENV) as exc:
        import_sources(project, [zpath])
    assert "many.zip" in str(exc.value) and "allowed for one import" in str(exc.value)
    assert project.image_count() == 0 and not list(project.files_dir.rglob("*.png"))
    assert _project_bytes(project) - before < 100_000
    monkeypatch.setenv(ingest.MAX_IMPORT_BYTES_ENV, str(unpacked))
    assert import_sources(project, [zpath]).added == 6


def test_byte_budget_skips_files_past_the_cap(project, tmp_path):
    """The budget also holds while importing (files that grow after they were counted, zips in folders)."""
    budget = ingest._Budget(10)
    zpath = make_zip(tmp_path / "z.zip", {"a.png": image_bytes(1, (8, 8), "PNG")})
    items = list(ingest._iter_zip(project, str(zpath), budget))
    assert isinstance(items[0], ingest._Skip) and ingest.MAX_IMPORT_BYTES_ENV in items[0].reason
    assert not list(project.files_dir.rglob("*.png*"))


def test_copy_import_counts_against_the_cap(project, tmp_path):
    src = tmp_path / "up"
    for k in range(3):
        make_image(src / f"{k}.png", k, (32, 32), fmt="PNG")
    total = sum(p.stat().st_size for p in src.iterdir())
    with pytest.raises(InvalidInputError, match="allowed for one import"):
        import_sources(project, [src], copy=True, max_bytes=total - 1)
    assert import_sources(project, [src], copy=False, max_bytes=total - 1).added == 3  # by reference: free


def test_max_import_bytes_env(monkeypatch):
    monkeypatch.delenv(ingest.MAX_IMPORT_BYTES_ENV, raising=False)
    assert ingest.max_import_bytes() == ingest.DEFAULT_MAX_IMPORT_BYTES
    assert ingest.max_import_bytes(uploads_only=True) == ingest.UPLOADS_ONLY_MAX_IMPORT_BYTES
    monkeypatch.setenv(ingest.MAX_IMPORT_BYTES_ENV, "1.5GB")
    assert ingest.max_import_bytes(uploads_only=True) == 1_500_000_000
    monkeypatch.setenv(ingest.MAX_IMPORT_BYTES_ENV, "lots")
    with pytest.raises(InvalidInputError, match="LABELER_MAX_IMPORT_BYTES='lots' is not a size"):
        ingest.max_import_bytes()


def test_free_disk_check(tmp_path, monkeypatch):
    import shutil as _shutil

    usage = _shutil.disk_usage(tmp_path)
    monkeypatch.setattr(ingest.shutil, "disk_usage", lambda p: usage._replace(free=10**6))
    with pytest.raises(InvalidInputError, match="not enough free disk space") as exc:
        ingest.check_free_disk(tmp_path, 10, "big.zip")
    assert str(exc.value).startswith("big.zip")


def test_each_import_root_is_recorded_once_with_its_kind_and_source(project, tmp_path):
    from labeler.ingest import import_roots

    imgs = class_folders(tmp_path / "imgs", 2, ["cat", "dog"])
    first = import_sources(project, [imgs / "cat"])
    import_sources(project, [imgs / "dog", imgs / "cat"])  # cat again: nothing new, no new root
    archive = make_zip(tmp_path / "more.zip", {"x/b.jpg": image_bytes(7)})
    import_sources(project, [archive])
    single = make_image(tmp_path / "loose" / "c.jpg", 8)
    import_sources(project, [single])
    make_image(tmp_path / "up" / "d.jpg", 9)
    import_sources(project, [tmp_path / "up" / "d.jpg"], copy=True)
    roots = import_roots(project)
    unpacked = str(project.files_dir / f"more-{sha_of(archive)[:8]}")
    assert [(r["path"], r["kind"], r["source"], r["images"]) for r in roots] == [
        (str(imgs / "cat"), "folder", str(imgs / "cat"), 2),
        (str(imgs / "dog"), "folder", str(imgs / "dog"), 2),
        (unpacked, "zip", str(archive), 1),
        (str(tmp_path / "loose"), "folder", str(single), 1),
        (str(project.files_dir / "uploads"), "uploads", str(tmp_path / "up"), 1),
    ]
    assert roots[0]["run_id"] == first.run_id
    # Every image points at the root its rel_path is relative to.
    by_id = {r["id"]: r["path"] for r in roots}
    for row in project.images():
        assert by_id[row["root_id"]] == row["root"]
    # Importing the cat folder again after more files arrived adds them under the same root.
    make_image(imgs / "cat" / "0009.jpg", 10)
    import_sources(project, [imgs / "cat"])
    assert [r["images"] for r in import_roots(project)][0] == 3 and len(import_roots(project)) == 5


def test_uploads_keep_their_root_id_after_the_project_is_renamed(project, tmp_path):
    from labeler.ingest import import_roots
    from labeler.project import rename_project

    import_sources(project, [make_image(tmp_path / "up" / "a.jpg", 1)], copy=True)
    renamed = rename_project(project, "renamed", root=tmp_path)
    import_sources(renamed, [make_image(tmp_path / "up" / "b.jpg", 2)], copy=True)
    roots = import_roots(renamed)
    assert [(r["id"], r["path"], r["images"]) for r in roots] == [(1, str(renamed.files_dir / "uploads"), 2)]
