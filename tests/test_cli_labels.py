"""The CLI's human decisions (labeler/cli/labels.py): assign, accept, exclude, include — by exported path, imported
path or sha256 prefix, each undone by ``undo``, each with ``--json``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labeler.cli import main
from labeler.export import export, read_csv
from labeler.ingest import import_sources
from labeler.jobs import Job
from labeler.labels import final_labels, set_human_labels, write_predictions
from labeler.project import Project

from .conftest import class_folders

KEYS = {"command", "selected", "changed", "image_ids", "undo"}


def _run(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys, *args) -> dict:
    code, out, err = _run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _pseudo(project: Project, top: list[int], scores: list[float], multi: bool = False) -> int:
    """A done labeling run predicting class ``top[k]`` with ``scores[k]`` for image k + 1."""
    classes = project.classes
    ids = list(range(1, len(top) + 1))
    probs = np.zeros((len(ids), len(classes)), dtype=np.float32)
    for k, (t, s) in enumerate(zip(top, scores, strict=True)):
        probs[k] = (1 - s) / (len(classes) - 1)
        probs[k, t] = s
    labels = [[t] for t in top] if multi else None
    params = {"classes": classes, "multi_label": multi}
    with Job.start(project, "label", method="zeroshot", params=params) as job:
        write_predictions(project, job.id, ids, probs, labels)
    return job.id


@pytest.fixture
def two(tmp_path):
    """Two imports, imgs/cat and imgs/dog (each 0000.jpg..0002.jpg): ids 1-3 and 4-6, with pseudo-labels."""
    imgs = class_folders(tmp_path / "imgs", 3, ["cat", "dog"])
    project = Project.create(tmp_path / "two", ["cat", "dog", "car"])
    import_sources(project, [imgs / "cat"])
    import_sources(project, [imgs / "dog"])
    _pseudo(project, [0, 0, 2, 1, 1, 0], [0.95, 0.6, 0.9, 0.85, 0.4, 0.7])
    return project, imgs


def _labels(project) -> dict[int, tuple[list[str], str | None]]:
    return {it.image_id: (it.classes, it.source) for it in final_labels(project)}


def test_assign_by_exported_path_imported_path_and_sha_prefix_then_undo(two, capsys):
    project, imgs = two
    root = project.root
    sha5 = project.db.execute("select sha256 from images where id = 5").fetchone()[0]
    before = _labels(project)
    data = _json(capsys, "assign", root, "DOG", "cat/0000.jpg", imgs / "cat" / "0001.jpg", sha5[:8], "cat/0000.jpg")
    assert KEYS | {"class", "mode"} == set(data)
    assert data == {
        "command": "assign",
        "class": "dog",
        "mode": "set",
        "selected": 3,
        "changed": 3,
        "image_ids": [1, 2, 5],
        "undo": "label 3 images as dog",
    }
    after = _labels(project)
    assert [after[i] for i in (1, 2, 5)] == [(["dog"], "human")] * 3
    rows = {r["path"]: r for r in read_csv(export(project, "csv", root / "out.csv"))}
    assert rows["cat/0000.jpg"]["label"] == "dog" and rows["cat/0000.jpg"]["source"] == "human"
    # A CLI-only session can undo what it did.
    code, out, _ = _run(capsys, "undo", root)
    assert code == 0 and out.strip() == "undid: label 3 images as dog"
    assert _labels(project) == before
    assert _run(capsys, "undo", root)[1].strip() == "nothing to undo"


def test_unknown_ambiguous_and_short_image_arguments_are_named_and_change_nothing(two, capsys):
    project, imgs = two
    with project.db.conn:  # two images whose sha256 share a 6-digit prefix
        for sha in ("abcdef01" + "0" * 56, "abcdef02" + "0" * 56):
            project.db.conn.execute(
                "insert into images (sha256, path, rel_path, root, status, added_at) values (?, ?, ?, ?, 'ok', 0)",
                [sha, str(imgs / "more" / f"{sha[:8]}.jpg"), f"{sha[:8]}.jpg", str(imgs / "more")],
            )
    cases = {
        "nope.jpg": "nope.jpg",
        "0000.jpg": "0000.jpg",  # the relative path of two imports: ambiguous (the exported paths are unique)
        "abcdef": "abcdef",  # a sha256 prefix of two images
        "abc": "'abc'",  # too short to be a prefix
    }
    for arg, named in cases.items():
        code, out, err = _run(capsys, "assign", project.root, "cat", "cat/0000.jpg", arg)
        assert code == 2 and out == "", arg
        assert err.startswith("error: ") and named in err, err
    assert "several" in _run(capsys, "exclude", project.root, "abcdef")[2]
    code, _, err = _run(capsys, "assign", project.root, "zebra", "cat/0000.jpg")
    assert code == 2 and "'zebra' is not a class" in err
    assert _json(capsys, "undo", project.root, "--list") == {"history": []}
    assert project.db.execute("select count(*) from labels").fetchone()[0] == 0


def test_multi_label_add_and_remove_are_one_undo_step_each(tmp_path, capsys):
    imgs = class_folders(tmp_path / "imgs", 2, ["sky", "sea"])
    project = Project.create(tmp_path / "m", ["sky", "sea", "boat"], multi_label=True)
    import_sources(project, [imgs])  # ids 1, 2: sea/0000.jpg, sea/0001.jpg; 3, 4: sky/...
    _pseudo(project, [1, 1, 0, 0], [0.9, 0.8, 0.7, 0.6], multi=True)
    set_human_labels(project, 1, ["sea", "boat"])
    root = project.root
    before = _labels(project)

    data = _json(capsys, "assign", root, "boat", "--add", "sky/0000.jpg", "sea/0000.jpg", "sea/0001.jpg")
    assert (data["mode"], data["changed"], data["image_ids"]) == ("add", 3, [3, 1, 2])
    assert data["undo"] == "add boat to 3 images"
    after = _labels(project)
    assert after[3] == (["sky", "boat"], "human") and after[1] == (["sea", "boat"], "human")
    assert after[2] == (["sea", "boat"], "human") and after[4] == before[4]

    data = _json(capsys, "assign", root, "sky", "--remove", "sky/0000.jpg", "sea/0000.jpg")
    assert (data["changed"], data["selected"]) == (1, 2)  # sea/0000.jpg had no sky
    assert _labels(project)[3] == (["boat"], "human")
    code, out, _ = _run(capsys, "assign", root, "boat", "--remove", "sky/0000.jpg")  # its only class
    assert code == 0 and _labels(project)[3] == ([], "human")  # "none of the classes", a person's label

    assert _run(capsys, "undo", root)[1].strip() == "undid: remove boat from 1 image"
    assert _run(capsys, "undo", root)[1].strip() == "undid: remove sky from 1 image"
    assert _run(capsys, "undo", root)[1].strip() == "undid: add boat to 3 images"
    assert _labels(project) == before


def test_add_and_remove_need_a_multi_label_project(two, capsys):
    code, _, err = _run(capsys, "assign", two[0].root, "cat", "--add", "cat/0000.jpg")
    assert code == 2 and "multi-label" in err


def test_accept_above_a_score_or_named_images_keeps_human_labels_and_undoes(two, capsys):
    project, _ = two
    root = project.root
    set_human_labels(project, 1, "car")
    before = _labels(project)
    data = _json(capsys, "accept", root, "--above", "0.8")
    assert KEYS | {"above", "run_id"} == set(data)
    # scores 0.95 (human: kept), 0.6, 0.9, 0.85, 0.4, 0.7
    assert (data["changed"], data["selected"], data["image_ids"], data["above"]) == (2, 6, None, 0.8)
    after = _labels(project)
    assert after[1] == (["car"], "human") and after[3] == (["car"], "accepted") and after[4] == (["dog"], "accepted")
    assert after[2] == (["cat"], "pseudo")
    data = _json(capsys, "accept", root, "cat/0001.jpg", "dog/0001.jpg")
    assert (data["changed"], data["image_ids"], data["undo"]) == (2, [2, 5], "accept 2 pseudo-labels")
    assert _labels(project)[5] == (["dog"], "accepted")
    assert _run(capsys, "undo", root)[0] == 0 and _run(capsys, "undo", root)[0] == 0
    assert _labels(project) == before
    for bad in ([], ["--above", "0.5", "cat/0000.jpg"], ["--above", "2"]):
        code, _, err = _run(capsys, "accept", root, *bad)
        assert code == 2 and err.startswith("error: "), bad


def test_exclude_and_include_by_exported_path_and_undo(two, capsys):
    project, _ = two
    root = project.root
    data = _json(capsys, "exclude", root, "dog/0002.jpg", "cat/0002.jpg")
    assert data == {
        "command": "exclude",
        "selected": 2,
        "changed": 2,
        "image_ids": [6, 3],
        "undo": "exclude 2 images",
    }
    assert project.image_count("excluded") == 2
    assert "dog/0002.jpg" not in {r["path"] for r in read_csv(export(project, "csv", root / "a.csv"))}
    # Excluded images are still found by their path, to include them again.
    code, out, _ = _run(capsys, "include", root, "dog/0002.jpg", "cat/0000.jpg")
    assert code == 0 and out.strip() == "included 1 image (1 was included already or missing)"
    assert project.image_count("excluded") == 1
    assert _run(capsys, "undo", root)[1].strip() == "undid: include 1 image"
    assert project.image_count("excluded") == 2
    assert _run(capsys, "undo", root)[1].strip() == "undid: exclude 2 images"
    assert project.image_count("excluded") == 0


def test_the_commands_are_listed_with_their_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    for command in ("assign", "accept", "exclude", "include"):
        assert f"    {command} " in listing
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "undo" in capsys.readouterr().out
