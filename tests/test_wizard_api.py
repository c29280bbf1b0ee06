"""The wizard's helpers in labeler.app_api: shift-click ranges, visitor folders, waiting for a run's row."""

from __future__ import annotations

import pytest

from labeler import app_api
from labeler.errors import InvalidInputError


def test_select_range_adds_the_span_between_anchor_and_click_in_page_order():
    page = [10, 11, 12, 13, 14]
    assert app_api.select_range(page, [], 11, 13) == [11, 12, 13]
    assert app_api.select_range(page, [99], 14, 12) == [99, 12, 13, 14]  # backwards, earlier selection kept
    assert app_api.select_range(page, [12], 10, 13) == [12, 10, 11, 13]  # no duplicates
    assert app_api.select_range(page, [], None, 12) == [12]  # no anchor: just the click
    assert app_api.select_range(page, [], 77, 12) == [12]  # anchor on another page
    assert app_api.select_range(page, [1], 11, 55) == [1]  # a click off the page changes nothing


def test_visitor_folders_accept_only_random_ids(tmp_path):
    vid = app_api.new_visitor_id()
    assert len(vid) == 32 and vid != app_api.new_visitor_id()
    root = app_api.visitor_root(vid)
    assert root == tmp_path / "data" / "visitors" / vid and root.is_dir()
    for bad in ("", None, "../" + vid[3:], vid.upper(), vid[:-1] + "/", "x" * 32):
        with pytest.raises(InvalidInputError, match="visitor id"):
            app_api.visitor_root(bad)
    (root / "p").mkdir()
    assert app_api.owns(root, root / "p")
    assert not app_api.owns(root, tmp_path / "data" / "p")
    assert not app_api.owns(root, root / "p" / ".." / ".." / "other" / "p")


def test_wait_for_new_run(project):
    from labeler.jobs import Job

    assert app_api.wait_for_new_run(project, "train", 0, timeout=0.2) is None
    assert app_api.wait_for_new_run(project, "train", 0, still_starting=lambda: False, timeout=30) is None
    job = Job.start(project, "train", method="nola")
    assert app_api.wait_for_new_run(project, "train", 0) == job.id
    assert app_api.wait_for_new_run(project, "train", job.id, timeout=0.1) is None
    job.finish("done")
