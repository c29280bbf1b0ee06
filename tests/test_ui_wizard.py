"""The wizard's steps 1–4 and 8 and the jobs panel, their handlers called by name in process (no server).

Each handler is ``handler(ctx, *inputs) -> NamedTuple`` (:mod:`labeler.ui.steps`); ``app_ctx`` is a wizard
context on the test's data dir (``conftest.make_ctx``). gradio_client tests of the same steps: test_ui_api.
"""

from __future__ import annotations

import inspect

import pytest

gr = pytest.importorskip("gradio")

from labeler.project import Project  # noqa: E402
from labeler.ui import jobs  # noqa: E402
from labeler.ui.common import bind  # noqa: E402
from labeler.ui.steps import classes, descriptions, export, images, project  # noqa: E402

from .conftest import class_folders  # noqa: E402


@pytest.fixture
def opened(app_ctx, tmp_path):
    """A project with two classes and 2 generated images per class, imported in process: its key."""
    from labeler.ingest import import_sources

    p = Project.create(app_ctx.data_dir / "pets", ["cat", "dog"])
    import_sources(p, [str(class_folders(tmp_path / "imgs", 2, ["cat", "dog"]))])
    key = str(p.root)
    p.close()
    return key


def test_project_create_opens_it_and_moves_on(app_ctx):
    out = project.create(app_ctx, "pets", True, "cat, dog", "")
    assert isinstance(out, project.CreateOut)
    assert out.project == str(app_ctx.data_dir / "pets")
    assert [row[0] for row in out.table] == ["pets"] and "Open: pets" in out.status
    assert out.tabs.selected == 1 and out.visitor == ""  # on to step 2; no visitor outside a Space
    assert Project(out.project).multi_label


def test_project_errors(app_ctx):
    with pytest.raises(gr.Error, match="Type a project name"):
        project.create(app_ctx, "  ", False, "", "")
    key = project.create(app_ctx, "pets", False, "", "").project
    with pytest.raises(gr.Error, match=r"type the project's name \(pets\)"):
        project.delete(app_ctx, key, "nope", "")
    out = project.delete(app_ctx, key, "pets", "")
    assert out.project == "" and out.table == [] and "No project open" in out.status


def test_images_view_pages_the_thumbnails(app_ctx, opened):
    view = images.refresh(app_ctx, opened)
    assert "**4 images**" in view.counts and "2 folders" in view.counts
    assert len(view.gallery) == 4 and all(path.endswith(".jpg") for path, _ in view.gallery)
    assert view.page_info == "page 1 of 1" and view.page == 0
    assert images.next_page(app_ctx, opened, 0).page == 0  # clamped to the last page


def test_images_errors(app_ctx, opened, tmp_path):
    with pytest.raises(gr.Error, match="does not exist on this machine"):
        images.import_folder(app_ctx, opened, str(tmp_path / "nope"))
    with pytest.raises(gr.Error, match="Choose image files"):
        images.import_uploads(app_ctx, opened, [])
    assert "No project open" in images.refresh(app_ctx, "").counts


def test_classes_save_and_folders(app_ctx, opened):
    assert classes.from_folders(app_ctx, opened) == "cat\ndog"
    out = classes.save(app_ctx, opened, "cat\ndog\nbird", classes.MODES[1])
    assert out.text == "cat\ndog\nbird"
    assert "**3 classes** (multi-label)" in out.status and "3\\. bird" in out.status
    view = classes.refresh(app_ctx, opened)
    assert view.mode == classes.MODES[1] and view.text == out.text


def test_classes_errors(app_ctx, opened):
    with pytest.raises(gr.Error, match="at least two class names"):
        classes.save(app_ctx, opened, "  ", classes.MODES[0])
    with pytest.raises(gr.Error, match="listed twice"):
        classes.save(app_ctx, opened, "cat\nCat", classes.MODES[0])
    assert Project(opened).classes == ["cat", "dog"]


def test_descriptions_add_edit_toggle(app_ctx, opened):
    out = descriptions.add(app_ctx, opened, "dog", "a loyal animal that barks")
    assert out.new_text == "" and out.cls.value == "dog"
    (row,) = out.table
    assert row[1:] == ["✓", "user", "a loyal animal that barks"]
    assert "**1 descriptions** (1 enabled)" in out.summary
    view = descriptions.toggle(app_ctx, opened, "dog", row[0])
    assert view.table[0][1] == "✗" and "(0 enabled)" in view.summary
    view = descriptions.save_edit(app_ctx, opened, "dog", row[0], "a dog on a lead")
    assert view.table[0][2:] == ["user (edited)", "a dog on a lead"]
    counted = descriptions.count(app_ctx, opened, "template", "", "", "", "", 10)
    assert "Nothing was sent" in counted


def test_descriptions_errors(app_ctx, opened):
    with pytest.raises(gr.Error, match="Click a sentence"):
        descriptions.toggle(app_ctx, opened, "dog", 0)
    with pytest.raises(gr.Error, match="Pick a class first"):
        descriptions.add(app_ctx, opened, None, "text")
    with pytest.raises(gr.Error, match="openai backend needs a model"):
        descriptions.generate(app_ctx, opened, "openai", "", "", "", "", 10)


def test_descriptions_import_says_what_was_dropped_and_why(app_ctx, opened, tmp_path):
    """Issue 12: the step said "2 dropped lines" without saying they were duplicates (now the core's summary)."""
    import json

    path = tmp_path / "desc.json"
    dup = "a small furry animal with whiskers"
    path.write_text(json.dumps({"cat": [dup, dup, dup], "dog": ["a loyal animal that barks"]}), encoding="utf-8")
    out = descriptions.import_file(app_ctx, opened, "cat", str(path), False)
    assert isinstance(out, descriptions.FinishedOut)
    assert "2 descriptions added" in out.status
    assert "2 lines of the file were not imported: 2 repeated an earlier line of the same class" in out.status


def test_export_csv_shows_the_file_and_its_rows(app_ctx, opened):
    out = export.run(app_ctx, opened, "csv")
    assert isinstance(out, export.ExportOut)
    assert "**4 images:**" in out.summary and "Wrote **" in out.status and "4 images (0 labeled" in out.status
    assert out.download.label.startswith("Download ") and out.download.label.endswith(".csv")
    assert out.download.visible and out.download.label.removeprefix("Download ") in out.status
    assert out.preview.headers[:3] == ["path", "sha256", "label"] and len(out.preview.value["data"]) == 4
    assert out.preview.value["data"][0][1].endswith("…")  # hashes are cut in the preview


def test_export_errors(app_ctx):
    key = str(Project.create(app_ctx.data_dir / "empty", ["a", "b"]).root)
    with pytest.raises(gr.Error, match="no images to export"):
        export.run(app_ctx, key, "csv")
    with pytest.raises(gr.Error, match="No project is open"):
        export.run(app_ctx, "", "csv")


def test_jobs_poll_and_cancel(app_ctx, opened):
    out = jobs.poll(app_ctx, opened, "", f"{opened}#~")
    assert isinstance(out, jobs.PollOut)
    assert "No job running" in out.live
    assert [row[1] for row in out.table] == ["import"]  # the fixture's import run
    assert out.cancel_pick.visible is False and out.panel.label == "Job history (1 recent)"
    again = jobs.poll(app_ctx, opened, out.signature, f"{opened}#~")
    assert again.signature == out.signature and again.live == gr.skip()  # nothing changed: nothing redrawn
    assert jobs.reset(app_ctx, opened) == jobs.ResetOut(f"{opened}#~", "")
    with pytest.raises(gr.Error, match="No job is running"):
        jobs.cancel(app_ctx, opened, None)


def test_bind_lets_gradio_see_event_data_parameters(app_ctx):
    """The bound handler's type hints resolve in the handler's module, so gradio passes gr.SelectData."""
    from gradio.helpers import special_args

    bound = bind(descriptions.select_row, app_ctx)
    assert list(inspect.signature(bound).parameters) == ["key", "class_name", "evt"]
    _, _, event_index, _ = special_args(bound)
    assert event_index == 2


def test_a_failed_job_leaves_the_panel_once_a_later_job_starts(app_ctx, opened):
    """Issue 12 item 3: a failure stayed in the panel above every step after later jobs succeeded."""
    from labeler.errors import NotReadyError
    from labeler.jobs import run_in_background

    def fail():
        raise NotReadyError("the model's weights are not here")

    failed = run_in_background(opened, "features", fail, label="features (clip)")
    assert failed.wait(30) and failed.status == "failed"
    assert "features (clip) failed:" in jobs.poll(app_ctx, opened, "", f"{opened}#~").live
    later = run_in_background(opened, "features", lambda: None, label="features (tiny)")
    assert later.wait(30) and later.status == "done"
    live = jobs.poll(app_ctx, opened, "", f"{opened}#~").live
    assert "failed" not in live and "No job running" in live


def test_export_offers_every_registered_format(app_ctx, opened):
    """Issue 12 item 9: the app's list lacked the CLI's ``model``; it is the exporter registry now."""
    from labeler.export import list_exporters

    names = [name for _, name in export.formats()]
    assert names == [e["name"] for e in list_exporters()] and "model" in names
    with pytest.raises(gr.Error, match=r"step 7 \(Train\)"):  # no trained model yet: the hint says where
        export.run(app_ctx, opened, "model")


def test_descriptions_file_backend_locally_only(app_ctx, opened, tmp_path):
    """Issue 12 item 9: the app's backends lacked the CLI's ``file``; offered where a server path may be read."""
    import json

    from labeler.describe import list_backends, list_descriptions
    from labeler.jobs import background_tasks

    from .conftest import make_ctx

    assert [name for _, name in descriptions.backend_choices(True)] == [b["name"] for b in list_backends()]
    assert "file" not in [name for _, name in descriptions.backend_choices(False)]
    with pytest.raises(gr.Error, match="File path box"):
        descriptions.generate(app_ctx, opened, "file", "", "", "", "", 10)
    path = tmp_path / "desc.json"
    path.write_text(json.dumps({"cat": ["a small cat"], "dog": ["a big dog", "a dog barking"]}))
    out = descriptions.generate(app_ctx, opened, "file", str(path), "", "", "", 10)
    assert "Generating with **file**" in out.status
    (task,) = background_tasks(opened)[:1]
    assert task.wait(30) and task.status == "done", task.error
    assert sorted(d["text"] for d in list_descriptions(Project(opened))) == [
        "a big dog",
        "a dog barking",
        "a small cat",
    ]
    space = make_ctx(app_ctx.data_dir, local_mode=False)
    with pytest.raises(gr.Error, match="Import file"):
        descriptions.generate(space, opened, "file", str(path), "", "", "", 10)


def test_user_mistakes_are_toasts_not_tracebacks_in_the_log(app_ctx, opened):
    """Issue 12: "Select images first" and library errors printed a traceback into the server log (gradio prints
    one for every gr.Error whose print_exception is on); only unexpected errors are logged."""
    from labeler.errors import InvalidInputError
    from labeler.ui.common import guard

    cases = [
        lambda: classes.save(app_ctx, opened, "", classes.MODES[0]),  # the step's own gr.Error
        guard(lambda: (_ for _ in ()).throw(InvalidInputError("bad value"))),  # a library error
    ]
    for call in cases:
        with pytest.raises(gr.Error) as info:
            call()
        assert info.value.print_exception is False
