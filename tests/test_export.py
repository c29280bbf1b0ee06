"""Exporters (labeler.export): csv round trip and injection safety, imagefolder, jsonl, registry."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from labeler.errors import InvalidInputError
from labeler.export import (
    EXPORTERS,
    MANIFEST_NAME,
    export,
    export_report,
    read_csv,
    register_exporter,
    safe_name,
)
from labeler.jobs import Job
from labeler.labels import accept_pseudo_labels, final_labels, set_human_labels, write_predictions
from labeler.project import Project
from store import now

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def add_images(project, root, rel_paths, folder_labels=None):
    ids = []
    for k, rel in enumerate(rel_paths):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = f"image {rel} {k}".encode()
        path.write_bytes(data)
        row = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "path": str(path),
            "rel_path": rel,
            "root": str(root),
            "folder_label": folder_labels[k] if folder_labels else None,
            "width": 40 + k,
            "height": 30,
            "format": "PNG",
            "bytes": len(data),
            "status": "ok",
            "added_at": now(),
        }
        with project.db.conn:
            ids.append(project.db["images"].insert(row).last_pk)
    return ids


def label_run(project, ids, top, multi=False, labels=None, score=0.75):
    classes = project.classes
    probs = np.full((len(ids), len(classes)), (1 - score) / (len(classes) - 1), dtype=np.float32)
    probs[np.arange(len(ids)), top] = score
    with Job.start(project, "label", method="zeroshot", params={"classes": classes, "multi_label": multi}) as job:
        write_predictions(project, job.id, ids, probs, labels)
    return job.id


WEIRD_CLASSES = [
    "café, crème",
    'say "hi"',
    "猫",
    '=HYPERLINK("http://evil.example","x")',
    "+1",
    "-2",
    "@SUM(A1)",
    "'quoted",
]
WEIRD_FILES = [
    "=1+1.png",
    "+1.png",
    "-2.png",
    "@SUM(A1).png",
    "\tx.png",
    "'q.png",
    "\rcr.png",
    'café, crème/say "hi".png',
    "猫/猫.png",
    "new\nline.png",
]


@pytest.fixture
def weird(tmp_path):
    project = Project.create(tmp_path / "weird", WEIRD_CLASSES)
    ids = add_images(project, tmp_path / "src", WEIRD_FILES)
    # pseudo-labels for all but the last image (which stays unlabeled)
    run = label_run(project, ids[:-1], [k % len(WEIRD_CLASSES) for k in range(len(ids) - 1)])
    set_human_labels(project, ids[0], "猫")
    accept_pseudo_labels(project, ids[1:3])
    return project, ids, run


def test_csv_round_trip_and_formula_neutralisation(weird, tmp_path):
    project, ids, run = weird
    out = export(project, "csv", tmp_path / "out" / "labels.csv")
    assert out == tmp_path / "out" / "labels.csv"
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM for Excel
    assert b'\'=HYPERLINK(""http://evil.example' in raw
    # Nothing in the raw file would run as a formula in a spreadsheet.
    with open(out, encoding="utf-8-sig", newline="") as handle:
        raw_rows = list(csv.reader(handle))
    assert raw_rows[0] == ["path", "sha256", "label", "score", "source", "run_id", "root"]
    cells = [c for row in raw_rows for c in row]
    assert not [c for c in cells if c.startswith(TRIGGERS)]
    assert "'=1+1.png" in cells and "'\tx.png" in cells and "''q.png" in cells and "'-2" in cells

    rows = read_csv(out)
    expected = []
    for it in final_labels(project):
        expected.append(
            {
                "path": it.rel_path,
                "sha256": it.sha256,
                "label": it.label or "",
                "score": "" if it.score is None else f"{it.score:.6g}",
                "source": it.source or "",
                "run_id": "" if it.run_id is None else str(it.run_id),
                "root": str(tmp_path / "src"),
            }
        )
    assert rows == expected
    assert [r["path"] for r in rows] == WEIRD_FILES
    assert [r["source"] for r in rows] == ["human", "accepted", "accepted"] + ["pseudo"] * 6 + [""]
    assert rows[0]["label"] == "猫" and rows[0]["score"] == "" and rows[0]["run_id"] == ""
    assert rows[1]["score"] == "0.75" and rows[1]["run_id"] == str(run)
    assert rows[-1]["label"] == "" and rows[-1]["source"] == ""
    assert {r["label"] for r in rows} >= {
        'say "hi"',
        "café, crème",
        '=HYPERLINK("http://evil.example","x")',
        "+1",
        "-2",
        "@SUM(A1)",
        "'quoted",
    }

    # One-hot columns are named by the classes: neutralised in the header too, restored by read_csv.
    hot = export(project, "csv", tmp_path / "hot.csv", one_hot=True)
    with open(hot, encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle))
    assert header[7:] == [("'" + c if c.startswith(TRIGGERS + ("'",)) else c) for c in WEIRD_CLASSES]
    hot_rows = read_csv(hot)
    assert list(hot_rows[0])[7:] == WEIRD_CLASSES
    assert [r["猫"] for r in hot_rows][:2] == ["1", "0"] and hot_rows[1][WEIRD_CLASSES[1]] == "1"

    plain = export(project, "csv", tmp_path / "nobom.csv", bom=False)
    assert not plain.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_csv(plain) == rows


def test_csv_multi_label_join_and_one_hot(tmp_path):
    project = Project.create(tmp_path / "m", ["sky", "sea", "label"], multi_label=True)
    ids = add_images(project, tmp_path / "src", ["a.png", "b.png", "c.png"])
    label_run(project, ids, [1, 0, 2], multi=True, labels=[[0, 1], [0], []])
    set_human_labels(project, ids[2], ["label", "sky"])
    rows = read_csv(export(project, "csv", tmp_path / "m.csv", one_hot=True))
    assert [r["label"] for r in rows] == ["sea;sky", "sky", "label;sky"]
    # A class named like a fixed column gets a prefix, so no column is lost.
    assert list(rows[0])[7:] == ["class:sky", "class:sea", "class:label"]
    assert [(r["class:sky"], r["class:sea"], r["class:label"]) for r in rows] == [
        ("1", "1", "0"),
        ("1", "0", "0"),
        ("1", "0", "1"),
    ]
    rows = read_csv(export(project, "csv", tmp_path / "m2.csv", sep="|"))
    assert rows[0]["label"] == "sea|sky" and "sky" not in rows[0]

    project.set_classes(["sky", "sea;foam"])
    with pytest.raises(InvalidInputError, match="separator"):
        export(project, "csv", tmp_path / "m3.csv")
    assert read_csv(export(project, "csv", tmp_path / "m3.csv", sep="|"))[0]["label"] == "sky"


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_csv_and_jsonl_files_get_the_umask_mode(weird, tmp_path, umask):
    """Issue 12: exports were written 0600 (the temp file's mode), whatever the umask."""
    project, _, _ = weird
    old = os.umask(umask)
    try:
        paths = [export(project, "csv", tmp_path / "l.csv"), export(project, "jsonl", tmp_path / "l.jsonl")]
        paths.append(export(project, "csv", tmp_path / "l.csv"))  # over an existing file, too
    finally:
        os.umask(old)
    for p in paths:
        assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~umask)


def test_jsonl(weird, tmp_path):
    project, ids, run = weird
    out = export(project, "jsonl", tmp_path / "labels.jsonl")
    lines = out.read_text(encoding="utf-8").splitlines()
    objs = [json.loads(line) for line in lines]
    assert len(objs) == len(ids)
    assert "猫" in lines[0]  # not \u-escaped
    assert objs[0] == {
        "path": "=1+1.png",
        "sha256": objs[0]["sha256"],
        "classes": ["猫"],
        "score": None,
        "source": "human",
        "run_id": None,
        "width": 40,
        "height": 30,
        "root": str(tmp_path / "src"),
    }
    assert objs[3]["source"] == "pseudo" and objs[3]["run_id"] == run and objs[3]["score"] == pytest.approx(0.75)
    assert objs[-1]["classes"] == [] and objs[-1]["source"] is None and objs[-1]["path"] == "new\nline.png"


def _tree(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir())


def test_imagefolder_copy_collisions_and_unsafe_names(tmp_path):
    project = Project.create(tmp_path / "f", ["a/b", "..", "CON", "cat", "dog"])
    src = tmp_path / "src"
    ids = add_images(project, src, ["x/1.png", "y/1.png", "z/1.PNG", "w/2.png", "u/3.png", "v/4.png"])
    label_run(project, ids[:5], [3, 3, 3, 0, 1])  # three "1.png" cats, one "a/b", one ".."
    set_human_labels(project, ids[5], "CON")
    sha = {it.image_id: it.sha256 for it in final_labels(project)}
    out = tmp_path / "export"
    report = export_report(project, "imagefolder", out)
    assert report.path == out and report.n_labeled == 6 and report.n_unlabeled == 0 and report.n_files == 6
    files = _tree(out)
    assert files == sorted(
        [
            MANIFEST_NAME,
            "cat/1.png",
            f"cat/{sha[ids[1]][:8]}_1.png",
            f"cat/{sha[ids[2]][:8]}_1.PNG",
            "a_b/2.png",
            "_/3.png",
            "_CON/4.png",
        ]
    )
    assert (out / "cat" / "1.png").read_bytes() == (src / "x/1.png").read_bytes()
    assert (out / "cat" / f"{sha[ids[1]][:8]}_1.png").read_bytes() == (src / "y/1.png").read_bytes()
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert all(out.resolve() in p.resolve().parents for p in out.rglob("*"))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["complete"] and manifest["classes"] == {"a/b": "a_b", "..": "_", "CON": "_CON", "cat": "cat"}
    assert not (out / "dog").exists()  # no empty class folders (torchvision's ImageFolder rejects them)

    # Re-exporting into a previous export replaces it; files someone added stay.
    (out / "cat" / "mine.txt").write_text("keep")
    set_human_labels(project, ids[0], "dog")
    assert export_report(project, "imagefolder", out).n_files == 6
    files = _tree(out)
    assert files == sorted(
        [
            MANIFEST_NAME,
            "cat/mine.txt",
            "dog/1.png",
            "cat/1.png",
            f"cat/{sha[ids[2]][:8]}_1.PNG",
            "a_b/2.png",
            "_/3.png",
            "_CON/4.png",
        ]
    )
    assert (out / "dog" / "1.png").read_bytes() == (src / "x/1.png").read_bytes()
    assert (out / "cat" / "1.png").read_bytes() == (src / "y/1.png").read_bytes()

    # A non-empty folder that is not a Labeler export is refused, untouched.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    with pytest.raises(InvalidInputError, match="not empty"):
        export(project, "imagefolder", foreign)
    assert _tree(foreign) == ["thesis.docx"]


def test_imagefolder_link_mode_multi_label_and_unlabeled(tmp_path):
    project = Project.create(tmp_path / "m", ["sky", "sea", "猫 cat"], multi_label=True)
    src = tmp_path / "src"
    ids = add_images(project, src, ["a.png", "b.png", "c.png"])
    label_run(project, ids, [0, 2, 1], multi=True, labels=[[0, 1], [2], []])  # c.png unlabeled
    report = export_report(project, "imagefolder", tmp_path / "out", link=True)
    out = report.path
    assert report.n_unlabeled == 1 and report.n_labeled == 2 and report.n_files == 3
    assert _tree(out) == sorted([MANIFEST_NAME, "sky/a.png", "sea/a.png", "猫 cat/b.png"])
    for rel, name in (("sky/a.png", "a.png"), ("sea/a.png", "a.png"), ("猫 cat/b.png", "b.png")):
        assert (out / rel).is_symlink() and os.readlink(out / rel) == str(src / name)
    assert json.loads((out / MANIFEST_NAME).read_text())["counts"]["unlabeled"] == 1


def test_safe_name():
    assert safe_name("a/b") == "a_b"
    assert safe_name("..") == "_" and safe_name(".") == "_" and safe_name("") == "_"
    assert safe_name("../../etc") == "_.._etc"
    assert safe_name("x\x00y\x1fz") == "x_y_z"
    assert safe_name('a\\b:c*d?e"f<g>h|i') == "a_b_c_d_e_f_g_h_i"
    assert safe_name("nul.txt") == "_nul.txt" and safe_name("com1") == "_com1"
    assert safe_name("猫 café") == "猫 café"
    long = safe_name("é" * 300 + ".jpeg")
    assert long.endswith(".jpeg") and len(long.encode()) <= 200


def test_registry_and_errors(project, tmp_path):
    with pytest.raises(InvalidInputError, match="csv, imagefolder, jsonl"):
        export(project, "xlsx", tmp_path / "x")
    with pytest.raises(InvalidInputError, match="no option"):
        export(project, "csv", tmp_path / "x.csv", onehot=True)
    add_images(project, tmp_path / "src", ["a.png"])
    # Default output: under the project's exports folder; a folder given to a file format gets a file inside.
    default = export(project, "jsonl")
    assert default.parent == project.exports_dir and default.suffix == ".jsonl"
    inside = export(project, "csv", tmp_path)
    assert inside.parent == tmp_path and inside.suffix == ".csv"
    assert read_csv(inside)[0]["path"] == "a.png"

    @register_exporter("paths", suffix=".txt")
    def _paths(project, out):
        """Just the paths."""
        out.write_text("\n".join(it.rel_path for it in final_labels(project)))
        from labeler.export import ExportReport

        return ExportReport("paths", out)

    try:
        assert export(project, "paths", tmp_path / "p.txt").read_text() == "a.png"
        assert EXPORTERS.get("paths").description == "Just the paths."
    finally:
        EXPORTERS.unregister("paths")


# --- unique, traceable paths -----------------------------------------------------------------------------
def _two_imports(tmp_path):
    """Two imports, ``imgs/cat`` and ``imgs/dog``, each a folder of 0000.jpg, 0001.jpg, 0002.jpg."""
    from labeler.ingest import import_sources

    from .conftest import class_folders

    imgs = class_folders(tmp_path / "imgs", 3, ["cat", "dog"])
    project = Project.create(tmp_path / "two", ["cat", "dog", "car"])
    import_sources(project, [imgs / "cat"])
    import_sources(project, [imgs / "dog"])
    return project, imgs


def test_two_imports_get_unique_paths_relative_to_their_common_folder_and_their_root(tmp_path):
    project, imgs = _two_imports(tmp_path)
    rows = read_csv(export(project, "csv", tmp_path / "two.csv"))
    assert [r["path"] for r in rows] == [f"{c}/{n:04d}.jpg" for c in ("cat", "dog") for n in range(3)]
    assert [r["root"] for r in rows] == [str(imgs / "cat")] * 3 + [str(imgs / "dog")] * 3
    assert list(rows[0]) == ["path", "sha256", "label", "score", "source", "run_id", "root"]
    # The path, joined to the common folder, is the file.
    for r in rows:
        assert hashlib.sha256((imgs / r["path"]).read_bytes()).hexdigest() == r["sha256"]
    objs = [json.loads(line) for line in export(project, "jsonl", tmp_path / "two.jsonl").read_text().splitlines()]
    assert [(o["path"], o["root"]) for o in objs] == [(r["path"], r["root"]) for r in rows]
    report = export_report(project, "csv", tmp_path / "again.csv")
    assert report.extra["paths"] == "common" and report.extra["path_base"] == str(imgs)


def test_uploads_beside_an_import_get_root_id_paths_and_excluding_changes_no_path(tmp_path):
    from labeler.export import export_paths
    from labeler.ingest import import_roots, import_sources
    from labeler.review import exclude_images

    project, imgs = _two_imports(tmp_path)
    upload = tmp_path / "upload" / "cat-0100.jpg"
    upload.parent.mkdir()
    upload.write_bytes((tmp_path / "imgs" / "cat" / "0000.jpg").read_bytes() + b"\0")  # other bytes, same image
    import_sources(project, [upload], copy=True)
    roots = import_roots(project)
    assert [(r["id"], r["kind"], r["images"]) for r in roots] == [(1, "folder", 3), (2, "folder", 3), (3, "uploads", 1)]
    rows = read_csv(export(project, "csv", tmp_path / "up.csv"))
    paths = [r["path"] for r in rows]
    assert paths == [f"{k}/{n:04d}.jpg" for k in (1, 2) for n in range(3)] + ["3/cat-0100.jpg"]
    assert len(set(paths)) == len(paths)
    assert rows[-1]["root"] == str(project.files_dir / "uploads")
    # The part after the root id is the path below the root.
    for r in rows:
        below = r["path"].split("/", 1)[1]
        assert hashlib.sha256((Path(r["root"]) / below).read_bytes()).hexdigest() == r["sha256"]
    before = export_paths(project).paths
    exclude_images(project, [7])  # the upload leaves the export, the others keep their paths
    assert export_paths(project).paths == before
    assert [r["path"] for r in read_csv(export(project, "csv", tmp_path / "ex.csv"))] == paths[:-1]


def test_the_same_path_twice_gets_a_sha256_prefix(tmp_path):
    from labeler.export import export_paths

    project = Project.create(tmp_path / "p", ["cat", "dog"])
    src = tmp_path / "src"
    ids = add_images(project, src, ["a/x.png", "b.png"])
    # The file was replaced after import and imported again: the same root and rel_path, other bytes.
    ids += add_images(project, src, ["c.png", "a/x.png"])
    plan = export_paths(project)
    sha = project.db.execute("select sha256 from images where id = ?", [ids[3]]).fetchone()[0]
    assert plan.paths == {ids[0]: "a/x.png", ids[1]: "b.png", ids[2]: "c.png", ids[3]: f"a/{sha[:8]}_x.png"}
    assert plan.mode == "common" and plan.base == str(src)


def test_imagefolder_still_dedupes_two_imports_file_names(tmp_path):
    project, _ = _two_imports(tmp_path)
    ids = [r[0] for r in project.db.execute("select id from images order by id")]
    set_human_labels(project, ids, "cat")
    out = export(project, "imagefolder", tmp_path / "folder")
    names = sorted(p.name for p in (out / "cat").iterdir())
    assert len(names) == 6 and "0000.jpg" in names and sum(n.endswith("_0000.jpg") for n in names) == 1


def test_the_projects_own_copies_alone_are_relative_to_its_files_folder(tmp_path):
    import zipfile

    from labeler.export import export_paths
    from labeler.ingest import import_sources

    from .conftest import class_folders

    imgs = class_folders(tmp_path / "imgs", 1, ["cat", "dog"])
    project = Project.create(tmp_path / "own", ["cat", "dog"])
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(imgs / "cat" / "0000.jpg", "cat/0000.jpg")
    import_sources(project, [archive])
    import_sources(project, [imgs / "dog" / "0000.jpg"], copy=True)
    plan = export_paths(project)
    unpacked = next(p.name for p in project.files_dir.iterdir() if p.name.startswith("pets-"))
    assert (plan.mode, plan.base) == ("common", str(project.files_dir))
    assert list(plan.paths.values()) == [f"{unpacked}/cat/0000.jpg", "uploads/0000.jpg"]


# --- multi-label ------------------------------------------------------------------------------------------
@pytest.fixture
def multi(tmp_path):
    """A multi-label project: pseudo {sky, sea} and {sea}, an accepted {label}, a human {label, sky}, one
    unlabeled image."""
    project = Project.create(tmp_path / "ml", ["sky", "sea", "label"], multi_label=True)
    ids = add_images(project, tmp_path / "src", ["a.png", "b.png", "c.png", "d.png", "e.png"])
    probs = np.array([[0.9, 0.6, 0.1], [0.2, 0.7, 0.3], [0.1, 0.2, 0.8], [0.4, 0.4, 0.2]], dtype=np.float32)
    params = {"classes": project.classes, "multi_label": True}
    with Job.start(project, "label", method="zeroshot", params=params) as job:
        write_predictions(project, job.id, ids[:4], probs, [[0, 1], [1], [2], [0]])
    accept_pseudo_labels(project, ids[2:3])
    set_human_labels(project, ids[3], ["label", "sky"])
    return project, ids, job.id


def test_multi_label_csv_one_hot_and_scores_columns_line_up(multi, tmp_path):
    project, ids, run = multi
    rows = read_csv(export(project, "csv", tmp_path / "m.csv", one_hot=True, scores=True))
    header = list(rows[0])
    assert header[:7] == ["path", "sha256", "label", "score", "source", "run_id", "root"]
    assert header[7:] == ["class:sky", "class:sea", "class:label", "score:sky", "score:sea", "score:label"]
    got = [[r["label"], r["source"], *(r[h] for h in header[7:])] for r in rows]
    assert got == [
        ["sky;sea", "pseudo", "1", "1", "0", "0.9", "0.6", "0.1"],
        ["sea", "pseudo", "0", "1", "0", "0.2", "0.7", "0.3"],
        ["label", "accepted", "0", "0", "1", "0.1", "0.2", "0.8"],  # the scores of the run it came from
        ["label;sky", "human", "1", "0", "1", "", "", ""],  # a person's label has no scores
        ["", "", "0", "0", "0", "", "", ""],
    ]
    # each one-hot column agrees with the joined labels, class by class
    for r in rows:
        have = set(filter(None, r["label"].split(";")))
        assert {c for c in project.classes if r["class:" + c] == "1"} == have
    # scores alone (no one-hot); a class the run did not have scores empty
    project.set_classes(["sky", "sea", "label", "boat"])
    rows = read_csv(export(project, "csv", tmp_path / "m2.csv", scores=True))
    assert list(rows[0])[7:] == ["score:sky", "score:sea", "score:label", "score:boat"]
    assert [rows[0][f"score:{c}"] for c in ("sky", "boat")] == ["0.9", ""]


def test_multi_label_jsonl_has_label_lists_and_per_class_scores(multi, tmp_path):
    project, ids, run = multi
    objs = [json.loads(line) for line in export(project, "jsonl", tmp_path / "m.jsonl").read_text().splitlines()]
    assert [o["classes"] for o in objs] == [["sky", "sea"], ["sea"], ["label"], ["label", "sky"], []]
    assert objs[0]["scores"] == pytest.approx({"sky": 0.9, "sea": 0.6, "label": 0.1})
    assert objs[2]["scores"]["label"] == pytest.approx(0.8) and objs[3]["scores"] is None
    assert objs[4]["scores"] is None
    assert "scores" not in json.loads(
        export(project, "jsonl", tmp_path / "n.jsonl", scores=False).read_text().split("\n")[0]
    )


def test_multi_label_none_of_the_classes_in_every_format(multi, tmp_path):
    """A person's "none of the classes": an empty label, all-0 one-hot and source human in CSV (unlabeled: an
    empty source too), ``classes: []`` with source human in JSONL, no file in a linked ImageFolder."""
    project, ids, run = multi
    set_human_labels(project, ids[1], [])  # had the pseudo-label {sea}
    report = export_report(project, "csv", tmp_path / "n.csv", one_hot=True)
    rows = read_csv(report.path)
    got = [[r["label"], r["source"], r["class:sky"], r["class:sea"], r["class:label"]] for r in rows]
    assert got[1] == ["", "human", "0", "0", "0"] and got[4] == ["", "", "0", "0", "0"]
    assert (report.n_labeled, report.n_unlabeled, report.n_none) == (4, 1, 1)
    objs = [json.loads(line) for line in export(project, "jsonl", tmp_path / "n.jsonl").read_text().splitlines()]
    assert [(o["classes"], o["source"]) for o in objs[1::3]] == [([], "human"), ([], None)]
    folder = export_report(project, "imagefolder", tmp_path / "out", link=True)
    assert not any(p.name == "b.png" for p in folder.path.rglob("*.png"))
    counts = json.loads((folder.path / MANIFEST_NAME).read_text())["counts"]
    assert counts["none"] == 1 and counts["unlabeled"] == 1 and folder.n_files == 5


def test_single_label_exports_gain_nothing_by_default(weird, tmp_path):
    project, _, _ = weird
    assert list(read_csv(export(project, "csv", tmp_path / "s.csv"))[0]) == [
        "path", "sha256", "label", "score", "source", "run_id", "root"
    ]  # fmt: skip
    line = export(project, "jsonl", tmp_path / "s.jsonl").read_text(encoding="utf-8").splitlines()[3]
    assert "scores" not in json.loads(line)
    scored = json.loads(export(project, "jsonl", tmp_path / "t.jsonl", scores=True).read_text().splitlines()[3])
    assert max(scored["scores"].values()) == pytest.approx(0.75)


def test_imagefolder_refuses_multi_label_unless_asked_for_links(multi, tmp_path, monkeypatch):
    project, ids, run = multi
    with pytest.raises(InvalidInputError, match="multi-label.*one_hot.*jsonl.*link the images") as err:
        export(project, "imagefolder", tmp_path / "out")
    assert err.value.hint is not None and err.value.hint.option == "link"
    assert not (tmp_path / "out").exists()  # refused before anything was written
    rep = export_report(project, "imagefolder", tmp_path / "linked", link=True)
    assert rep.extra["links"] == {"symlink": 6, "hardlink": 0, "copy": 0}
    assert _tree(rep.path) == sorted(
        [MANIFEST_NAME, "sky/a.png", "sea/a.png", "sea/b.png", "label/c.png", "label/d.png", "sky/d.png"]
    )

    # no symlinks on this file system: hard links; no hard links either: checked copies
    def refuse(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)
    rep = export_report(project, "imagefolder", tmp_path / "hard", link=True)
    assert rep.extra["links"] == {"symlink": 0, "hardlink": 6, "copy": 0}
    assert os.path.samefile(rep.path / "sky/a.png", tmp_path / "src/a.png")
    monkeypatch.setattr(os, "link", refuse)
    rep = export_report(project, "imagefolder", tmp_path / "copied", link=True)
    assert rep.extra["links"] == {"symlink": 0, "hardlink": 0, "copy": 6} and rep.n_files == 6
    assert (rep.path / "sky/d.png").read_bytes() == (tmp_path / "src/d.png").read_bytes()
    assert not os.path.samefile(rep.path / "sky/d.png", tmp_path / "src/d.png")


def test_imagefolder_never_writes_through_a_class_folder_that_is_a_link(multi, tmp_path):
    project, ids, run = multi
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    export(project, "imagefolder", out, link=True)
    shutil.rmtree(out / "sky")
    (out / "sky").symlink_to(elsewhere)  # planted between two exports
    with pytest.raises(InvalidInputError, match="link out of the export folder"):
        export(project, "imagefolder", out, link=True)
    assert list(elsewhere.iterdir()) == []


def test_the_model_export_carries_a_multi_label_model(multi, tmp_path):
    import torch

    from labeler.train.loop import BEST, atomic_save
    from labeler.train.runs import run_dir
    from labeler.train.student import MODEL_FORMAT

    project, _, _ = multi
    with Job.start(project, "train", method="cdul", params={"multi_label": True}) as job:
        run_dir(project, job.id).mkdir(parents=True)
        model = {"format": MODEL_FORMAT, "version": 1, "method": "cdul", "classes": project.classes,
                 "multi_label": True, "thresholds": {"sky": 0.4}, "base": {"model": "tiny"}, "epoch": 3,
                 "state": {"head.weight": torch.zeros(3, 4)}}  # fmt: skip
        atomic_save(model, run_dir(project, job.id) / BEST)
    rep = export_report(project, "model", tmp_path / "m.pt")
    data = torch.load(rep.path, weights_only=True)
    assert data["multi_label"] is True and data["thresholds"] == {"sky": 0.4} and data["classes"] == project.classes
    assert rep.extra["train_run"] == job.id and rep.extra["classes"] == 3


def test_the_export_step_offers_the_multi_label_options(multi, tmp_path, _data_dir):
    import gradio as gr

    from labeler.ui.steps import export as step

    from .conftest import make_ctx

    project, _, _ = multi
    ctx = make_ctx(tmp_path)
    key = str(project.root)
    out = step.run(ctx, key, "csv", ["one_hot", "scores", "link"])  # csv takes the two it has
    assert out.preview.headers[7:10] == ["class:sky", "class:sea", "class:label"]
    assert out.preview.headers[10:] == ["score:sky", "score:sea", "score:label"]
    assert out.preview.value["data"][0][7:] == ["1", "1", "0", "0.9", "0.6", "0.1"]
    assert step.run(ctx, key, "csv").preview.headers == [
        "path", "sha256", "label", "score", "source", "run_id", "root"
    ]  # fmt: skip
    with pytest.raises(gr.Error, match="Links instead of copies"):
        step.run(ctx, key, "imagefolder", ["one_hot"])
    assert {v for _, v in step.OPTIONS} == {"one_hot", "scores", "link"}
    assert step.option_values(["link", "bogus"]) == {"link": True}


def test_a_linked_multi_label_imagefolder_downloads_as_a_zip_of_the_files(multi, tmp_path):
    import zipfile

    from labeler.export import export_for_download

    project, _, _ = multi
    res = export_for_download(project, "imagefolder", link=True, one_hot=True)  # one_hot: not an imagefolder option
    with zipfile.ZipFile(res["path"]) as zf:
        names = {n.split("/", 1)[1] for n in zf.namelist() if not n.endswith("/")}
        assert {"sky/a.png", "sea/a.png", "label/d.png", "sky/d.png"} <= names
        top = zf.namelist()[0].split("/", 1)[0]
        assert zf.read(f"{top}/sky/a.png") == (tmp_path / "src/a.png").read_bytes()  # the bytes, not a link
    assert ["sky", "a.png"] in res["rows"] or ["sea", "a.png"] in res["rows"]
