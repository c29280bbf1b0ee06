"""Ground truth sets (labeler.truth): files of image → labels (hostile ones too) and folder names."""

from __future__ import annotations

import hashlib
import json

import pytest

from labeler import truth
from labeler.errors import InvalidInputError, NotReadyError
from labeler.export import export
from labeler.project import Project
from labeler.truth import clear_truth, folder_truth, import_truth, truth_sets, truth_summary, truth_table
from store import now

CLASSES = ["cat", "dog", "Golden Retriever", "car"]


def add_images(project, root, rel_paths, folders=None):
    ids = []
    for k, rel in enumerate(rel_paths):
        data = f"image {rel} {k}".encode()
        row = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "path": str(root / rel),
            "rel_path": rel,
            "root": str(root),
            "folder_label": (folders[k] if folders else rel.rsplit("/", 1)[0] if "/" in rel else None),
            "width": 8,
            "height": 8,
            "format": "PNG",
            "bytes": len(data),
            "status": "ok",
            "added_at": now(),
        }
        with project.db.conn:
            ids.append(project.db["images"].insert(row).last_pk)
    return ids


@pytest.fixture
def multi(tmp_path):
    project = Project.create(tmp_path / "m", CLASSES, multi_label=True)
    rels = ["cat+dog/1.jpg", "cat/2.jpg", "golden_retriever+CAR/3.jpg", "cat+horse/4.jpg", "misc/5.jpg", "6.jpg"]
    ids = add_images(project, tmp_path / "src", rels)
    return project, ids


def sha(project, image_id):
    return project.db.execute("select sha256 from images where id = ?", [image_id]).fetchone()[0]


def test_folder_rule():
    assert folder_truth("cat+dog", CLASSES, True) == ["cat", "dog"]
    assert folder_truth("dog+cat+dog", CLASSES, True) == ["cat", "dog"]  # class order, once each
    assert folder_truth("golden_retriever + Car", CLASSES, True) == ["Golden Retriever", "car"]
    assert folder_truth("cat+horse", CLASSES, True) is None  # every part must be a class
    assert folder_truth("cat+dog", CLASSES, False) is None  # single-label: one class per folder
    assert folder_truth("CAT", CLASSES, False) == ["cat"]
    assert folder_truth("a+b", ["a+b", "a", "b"], True) == ["a+b"]  # a class named with + wins whole
    assert folder_truth(None, CLASSES, True) is None and folder_truth("+", CLASSES, True) is None


def test_truth_sets_from_folders_and_a_file_wins(multi, tmp_path):
    project, ids = multi
    assert truth_sets(project) == {ids[0]: ["cat", "dog"], ids[1]: ["cat"], ids[2]: ["Golden Retriever", "car"]}
    f = tmp_path / "t.csv"
    f.write_text("path,labels\ncat+dog/1.jpg,dog\nmisc/5.jpg,\n6.jpg,car ; cat\n", encoding="utf-8")
    rep = import_truth(project, f)
    assert (rep.rows, rep.written, rep.empty) == (3, 3, 1)
    table = truth_table(project)
    assert table[ids[0]] == (["dog"], "file")  # the file wins over the folder name
    assert table[ids[4]] == ([], "file")  # an image with none of the classes
    assert table[ids[5]] == (["cat", "car"], "file")  # class order
    assert table[ids[1]] == (["cat"], "folder")
    assert truth_summary(project) == {"images": 5, "file": 3, "folder": 2, "files": [str(f)]}
    # excluded images have no ground truth; removed classes drop out
    with project.db.conn:
        project.db.execute("update images set status = 'excluded' where id = ?", [ids[1]])
    project.set_classes(["cat", "dog", "Golden Retriever"])
    assert truth_sets(project)[ids[5]] == ["cat"] and ids[1] not in truth_sets(project)
    assert clear_truth(project) == 3 and ids[4] not in truth_sets(project)


def test_every_way_to_name_an_image_and_give_labels(multi, tmp_path):
    project, ids = multi
    s2 = sha(project, ids[1])
    abs3 = project.db.execute("select path from images where id = ?", [ids[3]]).fetchone()[0]
    cases = {
        "a.csv": f"image_id,labels\n{ids[0]},cat;dog\n",
        "b.csv": f"sha256,cat,dog,class:car,other\n{s2.upper()},1,0,1,7\n",  # one-hot, sha256 any case
        "c.json": json.dumps({"6.jpg": ["Cat"], s2: ["dog"]}),
        "d.json": json.dumps([{"rel_path": "misc/5.jpg", "classes": ["golden_retriever"]}]),
        "e.jsonl": json.dumps({"id": ids[2], "labels": ["car"]}) + "\n\n" + json.dumps({"path": abs3, "label": []}),
    }
    want = {
        "a.csv": {ids[0]: ["cat", "dog"]},
        "b.csv": {ids[1]: ["cat", "car"]},
        "c.json": {ids[5]: ["cat"], ids[1]: ["dog"]},
        "d.json": {ids[4]: ["Golden Retriever"]},
        "e.jsonl": {ids[2]: ["car"], ids[3]: []},
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        clear_truth(project)
        import_truth(project, tmp_path / name)
        got = {i: n for i, (n, s) in truth_table(project).items() if s == "file"}
        assert got == want[name], name


def test_an_export_reads_back_as_ground_truth(multi, tmp_path):
    from labeler.labels import set_human_labels

    project, ids = multi
    set_human_labels(project, ids[:3], ["dog", "car"])
    set_human_labels(project, ids[3], ["cat"])
    for fmt, opts in (("csv", {}), ("csv", {"one_hot": True}), ("jsonl", {})):
        out = export(project, fmt, tmp_path / f"x.{fmt}", **opts)
        clear_truth(project)
        rep = import_truth(project, out)
        assert rep.written == 6
        got = {i: n for i, (n, s) in truth_table(project).items() if s == "file"}
        assert got == {ids[0]: ["dog", "car"], ids[1]: ["dog", "car"], ids[2]: ["dog", "car"], ids[3]: ["cat"],
                       ids[4]: [], ids[5]: []}, (fmt, opts)  # fmt: skip


HOSTILE = {
    "wrong columns": ("x.csv", "file,tags\na.jpg,cat\n", "no column names the image"),
    "no labels": ("x.csv", "path,tags\na.jpg,cat\n", "no labels column"),
    "dup column": ("x.csv", "path,labels,Labels\na,b,c\n", "appears twice"),
    "ragged row": ("x.csv", "path,labels\n6.jpg,cat,dog\n", "line 2: 3 cells"),
    "bad one-hot": ("x.csv", "path,cat,dog\n6.jpg,1,yes\n", "line 2: one-hot column 'dog' must be 0 or 1"),
    "unknown path": ("x.csv", "path,labels\ncat/2.jpg,cat\nnope.jpg,cat\n", "line 3: field 'path': no image"),
    "traversal": ("x.csv", "path,labels\n../../../etc/passwd,cat\n", "no image of the project has path '../../../etc"),
    "unknown class": ("x.csv", "path,labels\n6.jpg,cat;zebra\n", "line 2: 'zebra' is not a class"),
    "bad sha": ("x.csv", "sha256,labels\nabc,cat\n", "is not 64 hex digits"),
    "bad id": ("x.csv", "image_id,labels\n1e9,cat\n", "is not an image id"),
    "missing id": ("x.csv", "image_id,labels\n99999,cat\n", "there is no image with id 99999"),
    "twice": ("x.csv", "path,labels\n6.jpg,cat\n6.jpg,dog\n", "line 3: the image of line 2 is given again"),
    "bad quote": ("x.csv", 'path,labels\n"6.jpg,cat\n', "not valid CSV"),
    "bad json": ("x.json", '{"6.jpg": ["cat"]', "line 1: not valid JSON"),
    "json scalar": ("x.json", "42", "expected a JSON object"),
    "json labels not list": ("x.json", '{"6.jpg": "cat"}', "must be a list of class names"),
    "json label not text": ("x.json", '{"6.jpg": [1]}', "must hold class names"),
    "deep json": ("x.json", "[" * 100000 + "]" * 100000, "nested too deeply"),
    "jsonl bad line": ("x.jsonl", '{"path": "6.jpg", "labels": []}\n{oops\n', "line 2: not valid JSON"),
    "jsonl no image": ("x.jsonl", '{"labels": ["cat"]}\n', "line 1: no field names the image"),
    "jsonl list": ("x.jsonl", '["6.jpg", "cat"]\n', "expected an object"),
    "nul": ("x.csv", "path,labels\n6.jpg\x00,cat\n", "NUL"),
    "suffix": ("x.txt", "6.jpg cat\n", "give a .csv, .json or .jsonl"),
    "empty": ("x.csv", "", "the file is empty"),
    "long jsonl line": ("x.jsonl", '{"path": "' + "a" * 300_000 + '", "labels": []}\n', "line 1: the line is longer"),
    "long csv cell": ("x.csv", "path,labels\n6.jpg," + "a" * 200_000 + "\n", "line 2: not valid CSV"),
    "long path": ("x.csv", "path,labels\n" + "a" * 5000 + ",cat\n", "longer than 4096 characters"),
    "not utf-8": ("x.csv", "path,labels\n6.jpg,caf\udce9\n", "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_are_refused_naming_the_line_and_field_and_write_nothing(multi, tmp_path, case):
    project, ids = multi
    good = tmp_path / "good.csv"
    good.write_text("path,labels\n6.jpg,car\n", encoding="utf-8")
    import_truth(project, good)
    name, text, message = HOSTILE[case]
    f = tmp_path / name
    f.write_text(text, encoding="utf-8", errors="surrogateescape")
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace("'", "'")) as err:
        # the good rows of a bad file are not written either, even with replace (one transaction)
        import_truth(project, f, replace=True)
    if name != "x.txt":
        assert name in str(err.value)
    assert {i: n for i, (n, s) in truth_table(project).items() if s == "file"} == {ids[5]: ["car"]}


def test_unknown_images_and_classes_can_be_skipped_and_are_counted(multi, tmp_path):
    project, ids = multi
    f = tmp_path / "t.csv"
    f.write_text("path,labels\n6.jpg,cat;zebra;Zebra\nnope.jpg,cat\n../x,dog\n", encoding="utf-8")
    rep = import_truth(project, f, skip_unknown_images=True, drop_unknown_classes=True)
    assert (rep.written, rep.skipped_images) == (1, 2)
    assert rep.dropped_classes == {"zebra": 1, "Zebra": 1}
    assert rep.examples[0].startswith("line 3:")
    assert truth_table(project)[ids[5]] == (["cat"], "file")


def test_bounds_on_rows_errors_and_size(multi, tmp_path, monkeypatch):
    project, _ = multi
    monkeypatch.setattr(truth, "MAX_ROWS", 50)
    for name, text in (
        ("big.csv", "path,labels\n" + "6.jpg,cat\n" * 51),
        ("big.jsonl", '{"path": "6.jpg", "labels": ["cat"]}\n' * 51),
        ("big.json", json.dumps([{"path": "6.jpg", "labels": ["cat"]}] * 51)),
    ):
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(InvalidInputError, match="more than 50 rows"):
            import_truth(project, tmp_path / name)
    # many bad lines: it stops after MAX_ERRORS problems, not after reading them all
    (tmp_path / "bad.csv").write_text("path,labels\n" + "nope.jpg,cat\n" * 1000, encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"20 problem\(s\) \(stopped there\)"):
        import_truth(project, tmp_path / "bad.csv")
    monkeypatch.setattr(truth, "MAX_BYTES", 10)
    with pytest.raises(InvalidInputError, match="at most 10 are read"):
        import_truth(project, tmp_path / "bad.csv")
    with pytest.raises(InvalidInputError, match="cannot read"):
        import_truth(project, tmp_path / "absent.csv")
    assert truth_summary(project)["file"] == 0


def test_single_label_projects_take_folder_names(project, tmp_path):
    ids = add_images(project, tmp_path, ["cat/1.jpg", "Dog/2.jpg", "cat+dog/3.jpg"])
    assert truth_sets(project) == {ids[0]: ["cat"], ids[1]: ["dog"]}
    (tmp_path / "t.csv").write_text("path,labels\ncat/1.jpg,dog\n", encoding="utf-8")
    with pytest.raises(NotReadyError, match="multi-label projects"):
        import_truth(project, tmp_path / "t.csv")
