"""Undo of label and exclusion changes (labeler.history): each change recorded, undone newest first, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from labeler import history
from labeler.labels import accept_pseudo_labels, clear_labels, final_labels, set_human_labels
from labeler.review import exclude_images, include_images

from .explore_helpers import add_images, label_run, one_faiss_thread, probs_for  # noqa: F401


def _state(project) -> tuple[list, dict]:
    """Every labels row and every image status: what an undo must bring back exactly."""
    labels = [tuple(r) for r in project.db.execute("select * from labels order by image_id")]
    status = dict(project.db.execute("select id, status from images").fetchall())
    return labels, status


@pytest.fixture
def labeled(project):
    """12 images, a zero-shot run (class i % 3), no decisions yet."""
    ids = add_images(project, 12)
    label_run(project, ids, probs_for(np.arange(12) % 3, 3))
    return project, ids


def test_each_change_is_undone_newest_first_back_to_the_exact_state(labeled):
    project, ids = labeled
    states = [_state(project)]
    assert history.undo(project) is None  # nothing to undo yet

    assert accept_pseudo_labels(project, ids[:6]) == 6
    states.append(_state(project))
    set_human_labels(project, ids[4:8], "dog")  # replaces two accepted labels, adds two
    states.append(_state(project))
    exclude_images(project, ids[7:10])
    states.append(_state(project))
    clear_labels(project, ids[:2], sources=["accepted"])
    states.append(_state(project))
    assert states[-1] != states[-2] != states[-3] != states[-4] != states[0]

    assert [e["action"] for e in history.history(project)] == [
        "clear 2 labels (accepted)",
        "exclude 3 images",
        "label 4 images as dog",
        "accept 6 pseudo-labels",
    ]
    for expected in ("clear 2 labels (accepted)", "exclude 3 images", "label 4 images as dog"):
        states.pop()
        assert history.undo(project)["action"] == expected
        assert _state(project) == states[-1]  # every row back, scores and run ids included
    # the final labels follow: the image labeled dog by hand is back to its accepted pseudo-label
    final = {r.image_id: (r.classes, r.source) for r in final_labels(project)}
    assert final[ids[4]] == (["dog"], "accepted")  # class 4 % 3 = 1 of cat, dog, car
    assert history.undo(project)["action"] == "accept 6 pseudo-labels"
    assert _state(project) == states[0]
    assert history.undo(project) is None and history.history(project) == []


def test_accept_all_and_include_are_undone_and_the_log_is_capped(labeled, monkeypatch):
    project, ids = labeled
    before = _state(project)
    assert accept_pseudo_labels(project) == 12  # every image
    exclude_images(project, ids[:3])
    include_images(project, ids[:2])
    assert history.undo(project)["action"] == "include 2 images"
    assert _state(project)[1][ids[0]] == "excluded"
    assert history.undo(project)["action"] == "exclude 3 images"
    assert history.undo(project)["action"] == "accept 12 pseudo-labels"
    assert _state(project) == before

    assert accept_pseudo_labels(project, []) == 0 and history.history(project) == []  # no change, no entry
    monkeypatch.setattr(history, "KEEP", 3)
    for k in range(5):
        set_human_labels(project, ids[k], "car")
    assert [e["action"] for e in history.history(project)] == ["label 1 image as car"] * 3
    for _ in range(3):
        history.undo(project)
    assert history.undo(project) is None
    labels = dict(project.db.execute("select image_id, source from labels").fetchall())
    assert labels == {ids[0]: "human", ids[1]: "human"}  # the two oldest changes fell off the log


def test_cli_undo_lists_and_undoes(labeled, capsys):
    import json

    from labeler import cli

    project, ids = labeled
    root = str(project.root)
    assert cli.main(["undo", root]) == 0 and capsys.readouterr().out.strip() == "nothing to undo"
    set_human_labels(project, ids[:3], "car")
    exclude_images(project, ids[5])
    assert cli.main(["undo", root, "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split(None, 1)[1] for ln in lines] == ["exclude 1 image", "label 3 images as car"]
    assert cli.main(["undo", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["undone"]["action"] == "exclude 1 image"
    assert project.db.execute("select status from images where id = ?", [ids[5]]).fetchone()[0] == "ok"
    assert cli.main(["undo", root]) == 0 and capsys.readouterr().out.strip() == "undid: label 3 images as car"
    assert project.db.execute("select count(*) from labels").fetchone()[0] == 0


_WRITER = """
import sys
from labeler.labels import accept_pseudo_labels, clear_labels, set_human_labels
from labeler.project import Project
from labeler.review import exclude_images, include_images

p = Project(sys.argv[1])
ids = [int(i) for i in sys.argv[2].split(",")]
print("ready", flush=True)
for k in range(int(sys.argv[3])):
    if k % 3:
        set_human_labels(p, ids[k % 4 : k % 4 + 6], "dog")
    else:
        accept_pseudo_labels(p, ids[k % 4 : k % 4 + 6])
    if k % 7 == 0:
        clear_labels(p, ids[:3])
    if k % 11 == 0:
        exclude_images(p, ids[10:])
        include_images(p, ids[10:])
"""


def test_undo_under_a_concurrent_label_writer_never_raises(labeled):
    """Label changes in another process while this one undoes them: every change and every undo is whole."""
    import subprocess
    import sys

    from .conftest import REPO

    project, ids = labeled
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(project.root), ",".join(map(str, ids)), "1500"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        undone = 0
        for _ in range(100_000):  # bounded: the writer's 1500 changes end long before
            if writer.poll() is not None:
                break
            undone += history.undo(project) is not None
    finally:
        out, err = writer.communicate(timeout=600)
    assert writer.returncode == 0, err
    assert undone > 0
    # Every change left a whole entry (undo keeps the newest KEEP), and undoing them all never fails.
    assert len(history.history(project, limit=1000)) <= history.KEEP
    while history.undo(project) is not None:
        pass
    assert {r[0] for r in project.db.execute("select source from labels")} <= {"human", "accepted"}
