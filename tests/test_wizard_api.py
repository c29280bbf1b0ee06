"""The wizard's helpers: shift-click ranges (ui.common), visitor folders (ui.space), waiting for a run (jobs)."""

from __future__ import annotations

import pytest

from labeler.errors import InvalidInputError, NotReadyError
from labeler.jobs import wait_for_new_run
from labeler.ui.common import select_range
from labeler.ui.space import new_visitor_id, owns, visitor_root


def test_select_range_adds_the_span_between_anchor_and_click_in_page_order():
    page = [10, 11, 12, 13, 14]
    assert select_range(page, [], 11, 13) == [11, 12, 13]
    assert select_range(page, [99], 14, 12) == [99, 12, 13, 14]  # backwards, earlier selection kept
    assert select_range(page, [12], 10, 13) == [12, 10, 11, 13]  # no duplicates
    assert select_range(page, [], None, 12) == [12]  # no anchor: just the click
    assert select_range(page, [], 77, 12) == [12]  # anchor on another page
    assert select_range(page, [1], 11, 55) == [1]  # a click off the page changes nothing


def test_visitor_folders_accept_only_random_ids(tmp_path):
    vid = new_visitor_id()
    assert len(vid) == 32 and vid != new_visitor_id()
    root = visitor_root(vid)
    assert root == tmp_path / "data" / "visitors" / vid and root.is_dir()
    for bad in ("", None, "../" + vid[3:], vid.upper(), vid[:-1] + "/", "x" * 32):
        with pytest.raises(InvalidInputError, match="visitor id"):
            visitor_root(bad)
    (root / "p").mkdir()
    assert owns(root, root / "p")
    assert not owns(root, tmp_path / "data" / "p")
    assert not owns(root, root / "p" / ".." / ".." / "other" / "p")


def test_wait_for_new_run(project):
    from labeler.jobs import Job

    assert wait_for_new_run(project, "train", 0, timeout=0.2) is None
    assert wait_for_new_run(project, "train", 0, still_starting=lambda: False, timeout=30) is None
    job = Job.start(project, "train", method="nola")
    assert wait_for_new_run(project, "train", 0) == job.id
    assert wait_for_new_run(project, "train", job.id, timeout=0.1) is None
    job.finish("done")


def test_library_errors_are_worded_for_the_wizard(project):
    """A library error's hint (not CLI text) becomes the wizard's step and button."""
    gr = pytest.importorskip("gradio")
    from labeler.errors import Hint
    from labeler.review import review_queue
    from labeler.ui.common import guard

    with pytest.raises(NotReadyError) as info:
        review_queue(project)
    assert str(info.value) == "there is no finished labeling run" and info.value.hint == Hint("label")

    handler = guard(lambda: review_queue(project, by="nonsense"))  # what a step's event handler raises
    with pytest.raises(gr.Error) as shown:
        handler()
    assert shown.value.message.startswith("'by' must be one of ")
    handler = guard(lambda: review_queue(project))
    with pytest.raises(gr.Error) as shown:
        handler()
    assert shown.value.message == "there is no finished labeling run: run “Run zero-shot” (step 5, ②) first"


def test_map_legend_colours_the_most_frequent_and_mutes_the_rest():
    pytest.importorskip("gradio")
    from labeler.ui.scatter import MUTED, PALETTE, scatter_value

    names = ["unlabeled"] * 3 + [f"c{k:02d}" for k in range(24, -1, -1) for _ in range(25 - k)]  # c00 most frequent
    n = len(names)
    cols = {"x": [0.0] * n, "y": [1.0] * n, "colour": names, "image_id": list(range(n)), "label": names}
    v = scatter_value(cols, title="final label", legend_size=20)
    assert v["title"] == "final label" and len(v["x"]) == len(v["colour"]) == n
    legend = v["legend"]
    coloured = [e for e in legend if e["color"] != MUTED]
    assert [e["name"] for e in coloured] == [f"c{k:02d}" for k in range(20)]  # the 20 most frequent, sorted
    assert [e["color"] for e in coloured] == PALETTE[:20]
    assert [e["n"] for e in coloured] == [25 - k for k in range(20)]
    assert legend[-2:] == [
        {"name": "5 more", "color": MUTED, "n": sum(25 - k for k in range(20, 25))},
        {"name": "unlabeled", "color": MUTED, "n": 3},
    ]
    assert sum(e["n"] for e in legend) == n
    empty = scatter_value(None)
    assert empty["x"] == [] and empty["legend"] == []


def test_page_load_keeps_the_visitor_id_a_click_already_made():
    """A Create clicked before the page's load handler ran made a visitor id (its project lives there): the load
    handler keeps it and stores it in the browser instead of replacing it with a second one."""
    from labeler.ui import _visitor_id

    made = new_visitor_id()
    assert _visitor_id("", made) == (made, made)
    kept = new_visitor_id()
    vid, store = _visitor_id(kept, made)  # the browser's own id wins
    assert vid == kept and store is not kept
    vid, store = _visitor_id("", "")
    assert len(vid) == 32 and store == vid and vid != made


def test_one_session_gets_one_visitor_id_however_its_events_interleave():
    """A Create clicked while the page's load handler is still queued and the load handler itself both ask for
    the session's id before either stored one: they must get the same (the project is this visitor's)."""
    from labeler.ui import _visitor_id
    from labeler.ui.space import is_visitor_id, resolve_visitor, session_visitor_id

    a = session_visitor_id("session-a")
    assert is_visitor_id(a) and a == session_visitor_id("session-a") != session_visitor_id("session-b")
    assert session_visitor_id(None) != session_visitor_id(None)  # no session (a direct call): a random id

    class Request:
        session_hash = "session-a"

    assert _visitor_id("", "", Request())[0] == a == resolve_visitor("", "", "session-a")
    kept = new_visitor_id()
    assert resolve_visitor("", kept, "session-a") == kept == _visitor_id(kept, "", Request())[0]
    for hostile in ("../../etc", "Z" * 32, a.upper(), 12345):  # not an id: never a folder name
        assert not is_visitor_id(hostile)
        assert resolve_visitor(hostile, hostile, "session-a") == a


def test_the_page_load_never_replaces_a_project_opened_meanwhile_nor_a_pick(tmp_path):
    """The load handler's restore skips when the session already has a project open, and the Project step's
    refresh with none open leaves the user's pick in the list alone (unless the project was just deleted)."""
    import gradio as gr

    from labeler.project import Project
    from labeler.ui import _restore
    from labeler.ui.common import Ctx
    from labeler.ui.steps.project import _pick

    ctx = Ctx(data_dir=tmp_path, local_mode=True, project=None, finished=None)
    old = Project.create(tmp_path / "old", ["a", "b"])
    old.close()
    assert _restore(ctx, str(old.root)) == str(old.root)
    assert _restore(ctx, str(old.root), str(tmp_path / "new")) == gr.skip()
    assert _restore(ctx, "") == gr.skip()
    assert _restore(ctx, str(tmp_path / "gone")) == ""
    assert "value" not in _pick([("old", str(old.root))], "").constructor_args
    assert _pick([("old", str(old.root))], str(old.root)).constructor_args["value"] == str(old.root)
    assert _pick([], "", clear=True).constructor_args["value"] is None
