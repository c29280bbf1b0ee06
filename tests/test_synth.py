"""The synthetic test images (tests/synth.py): deterministic, all different, classes told apart; edge cases decode."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from . import synth


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.*")}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = _digests(synth.image_folder(tmp_path / "a", 3))
    b = _digests(synth.image_folder(tmp_path / "b", 3))
    c = _digests(synth.image_folder(tmp_path / "c", 3, seed=1))
    assert len(a) == 30 and sorted(a)[:2] == ["airplane/0000.jpg", "airplane/0001.jpg"]
    assert a == b
    assert a.keys() == c.keys() and not set(a.values()) & set(c.values())
    assert len(set(a.values())) == 30  # no two images alike: distinct sha256 (no duplicates on import)
    with Image.open(tmp_path / "a" / "cat" / "0000.jpg") as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (32, 32))


def _colour_histogram(path) -> np.ndarray:
    q = np.asarray(Image.open(path), np.int64) // 64  # 4 levels per channel
    return np.bincount((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).ravel(), minlength=64) / q[..., 0].size


def test_classes_are_told_apart_by_their_colours(tmp_path):
    root = synth.image_folder(tmp_path / "imgs", 12)
    hists = {cls: np.stack([_colour_histogram(p) for p in sorted((root / cls).iterdir())]) for cls in synth.CLASSES}
    centres = np.stack([h[:6].mean(0) for h in hists.values()])  # "train" on 6 per class, test on the other 6
    for k, h in enumerate(hists.values()):
        nearest = np.linalg.norm(h[6:, None, :] - centres[None], axis=-1).argmin(1)
        assert (nearest == k).all(), (synth.CLASSES[k], nearest)


def test_any_class_name_gets_a_stable_style(tmp_path):
    assert synth.style("zebra") == synth.style("zebra")
    assert [synth.style(c, ["x", "y", "z"]) for c in "xyz"] == [0, 1, 2]
    a = np.asarray(synth.make_image("zebra", 0, size=(20, 10)))
    assert a.shape == (10, 20, 3) and np.array_equal(a, np.asarray(synth.make_image("zebra", 0, size=(20, 10))))


def test_edge_cases_have_their_modes_and_load_as_upright_rgb(tmp_path):
    from labeler.ingest import load_rgb

    files = synth.edge_cases(tmp_path)
    modes = {}
    for name, path in files.items():
        with Image.open(path) as img:
            modes[name] = img.mode
            assert img.format == synth.EDGE_CASES[name][0]
        rgb = load_rgb(path)
        assert rgb.mode == "RGB" and rgb.size == synth.EDGE_CASES[name][1], name
    assert modes["gray.jpg"] == "L" and modes["rgba.png"] == "RGBA" and modes["palette.png"] == "P"
    assert modes["cmyk.jpg"] == "CMYK" and modes["gray16.png"].startswith("I")
    with Image.open(files["exif-rotated.jpg"]) as img:
        assert img.size == (50, 30) and img.getexif()[0x0112] == 6  # stored sideways, shown upright
    # the transparent third of the RGBA image is composited on white
    assert load_rgb(files["rgba.png"]).getpixel((2, 20)) == (255, 255, 255)


def test_edge_cases_import_with_their_upright_sizes(project, tmp_path):
    from labeler.ingest import import_sources

    synth.edge_cases(tmp_path / "edge")
    report = import_sources(project, [tmp_path / "edge"])
    assert report.skipped == [] and report.added == len(synth.EDGE_CASES)
    rows = {r["rel_path"]: r for r in project.images()}
    assert {name: ((r := rows[name])["format"], (r["width"], r["height"])) for name in rows} == synth.EDGE_CASES
