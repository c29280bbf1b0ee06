"""The wizard's Captions step (step 6), its handlers called by name in process (no server): prompts, the call
count and cost before a run, a run as a background job against a fake OpenAI-compatible server on 127.0.0.1,
browsing, editing and disabling. The same step in a real browser: tests/test_ui_captions.py."""

from __future__ import annotations

import pytest

gr = pytest.importorskip("gradio")

from labeler.describe import captions_by_image, list_captions  # noqa: E402
from labeler.describe.prompts import CAPTION_PROMPT, GROUP_PROMPT  # noqa: E402
from labeler.jobs import background_tasks  # noqa: E402
from labeler.project import Project  # noqa: E402
from labeler.ui import STEPS  # noqa: E402
from labeler.ui.steps import captions  # noqa: E402

from .conftest import class_folders, tiny_project, wait_until  # noqa: E402
from .test_describe_openai import server  # noqa: E402, F401  (fixture: the fake OpenAI server)


@pytest.fixture
def labeled(app_ctx, tmp_path):
    """6 generated images of cat/dog, tiny-random features and a zero-shot run: the project's key."""
    root = tiny_project(
        app_ctx.data_dir / "pets", class_folders(tmp_path / "imgs", 3, ["cat", "dog"]), ["cat", "dog"], True
    )
    return str(root)


def _wait_done(key: str):
    """The newest caption task of the project (started last), once it has finished."""
    newest = next(t for t in background_tasks(key) if t.kind == "caption")
    task = wait_until(
        lambda: None if newest.running else newest,
        "the caption task to finish",
        timeout=60,
    )
    return task, f"{key}#{task.id}:caption"


def test_the_step_sits_between_pseudo_labels_and_train():
    names = [label for label, _ in STEPS]
    assert names.index("6 · Captions") == names.index("5 · Pseudo-labels") + 1 == names.index("7 · Train") - 1
    assert [n.split(" · ")[0] for n in names] == [str(i) for i in range(1, len(names) + 1)]


def test_no_project_and_the_empty_view(app_ctx, labeled):
    view = captions.refresh(app_ctx, "")
    assert "No project open" in view.summary and view.gallery == []
    view = captions.refresh(app_ctx, labeled)
    assert (view.prompt, view.group_prompt) == (CAPTION_PROMPT, GROUP_PROMPT)
    assert "No captions yet" in view.summary and len(view.gallery) == 6 and view.page_info == "page 1 of 1"
    assert all(text.endswith("no caption") for _, text in view.gallery)
    assert [name for _, name in captions.backend_choices()] == ["openai", "template", "transformers"]


def test_count_says_calls_and_cost_and_sends_nothing(app_ctx, labeled, server):  # noqa: F811
    args = ("openai", "vlm", server.url, "")
    text = captions.count(app_ctx, labeled, *args, True, "per-image", CAPTION_PROMPT, GROUP_PROMPT)
    assert "**12 new LMM calls** to the endpoint" in text and "6 per-image captions + 6 group grids" in text
    assert "2 calls per image" in text and "the backend gives no price" in text and "output tokens" in text
    text = captions.count(app_ctx, labeled, *args, True, "shared", CAPTION_PROMPT, GROUP_PROMPT)
    assert "6 per-image captions + 2 group grids" in text and "1.33 calls per image" in text  # 2 grids, 6 images
    assert "no model calls" in captions.count(app_ctx, labeled, "template", "", "", "", True, "none", "", "")
    assert server.requests == 0
    with pytest.raises(gr.Error, match="needs a model"):
        captions.count(app_ctx, labeled, "openai", "", server.url, "", True, "none", "", "")
    with pytest.raises(gr.Error, match="Nothing to do"):
        captions.count(app_ctx, labeled, *args, False, "none", "", "")


def test_prompts_are_saved_and_reset(app_ctx, labeled):
    out = captions.save_prompts(app_ctx, labeled, "Describe the {c}.", "What do the {c} share?")
    assert (out.prompt, out.group_prompt) == ("Describe the {c}.", "What do the {c} share?") and "saved" in out.status
    assert captions.refresh(app_ctx, labeled).prompt == "Describe the {c}."
    out = captions.reset_prompts(app_ctx, labeled)
    assert (out.prompt, out.group_prompt) == (CAPTION_PROMPT, GROUP_PROMPT)


def test_run_browse_edit_disable_and_rerun_from_the_cache(app_ctx, labeled, server, monkeypatch):  # noqa: F811
    args = ("openai", "vlm", server.url, "")
    monkeypatch.setattr(captions, "CONFIRM_ABOVE", 5)
    out = captions.run(app_ctx, labeled, *args, True, "per-image", CAPTION_PROMPT, GROUP_PROMPT)
    assert "large run" in out.status and out.confirm.visible and server.requests == 0  # waits for a 2nd click
    out = captions.run_confirmed(app_ctx, labeled, *args, True, "per-image", CAPTION_PROMPT, GROUP_PROMPT)
    assert "Captioning with **openai**" in out.status and not out.confirm.visible
    task, marker = _wait_done(labeled)
    done = captions.finished(app_ctx, labeled, marker, 0)
    assert task.status == "done", task.error
    assert "Done: 6 captions and 6 group descriptions written (12 calls sent" in done.status
    assert server.requests == 12 and "**12 texts** on 6 images" in done.summary
    assert all("Saw 1 image(s) of 32x32" in text for _, text in done.gallery)  # each thumbnail with its caption
    image_id = done.page_ids[2]
    shown = captions.show(app_ctx, labeled, image_id)
    assert shown.kind.value == "image" and shown.edit_text.startswith("Saw 1 image(s)")
    assert [k for _, k in shown.kind.choices] == ["image", "group-own"]
    assert "group (own)" in shown.detail and "672x" in shown.detail
    assert captions.pick_kind(app_ctx, labeled, image_id, "group-own").startswith("Saw 1 image(s) of 672x")
    edited = captions.save_edit(app_ctx, labeled, image_id, "image", "a grey tabby cat", 0)
    assert "a grey tabby cat" in edited.detail and "edited" in edited.detail and "model's text" in edited.detail
    assert any(text.startswith("✎ ") and text.endswith("· a grey tabby cat") for _, text in edited.gallery)
    off = captions.toggle(app_ctx, labeled, image_id, "group-own", 0)
    assert "left out of LatteCLIP's fusion" in off.detail and "1 disabled, 1 edited" in off.summary
    p = Project(labeled)
    assert captions_by_image(p)[image_id] == {"image": "a grey tabby cat"}
    assert list_captions(p, kind="group-own", image_id=image_id)[0]["enabled"] is False
    # a rerun: nothing sent, the edit and the disabled text kept
    captions.run(app_ctx, labeled, *args, True, "per-image", CAPTION_PROMPT, GROUP_PROMPT)
    task, marker = _wait_done(labeled)
    assert task.status == "done" and server.requests == 12
    rerun = captions.finished(app_ctx, labeled, marker, 0).status
    assert "0 calls sent, 12 from the cache" in rerun and "2 texts you edited or disabled were kept" in rerun
    assert captions_by_image(Project(labeled))[image_id] == {"image": "a grey tabby cat"}
    on = captions.toggle(app_ctx, labeled, image_id, "group-own", 0)
    assert "0 disabled" in on.summary
    with pytest.raises(gr.Error, match="Click a thumbnail first"):
        captions.save_edit(app_ctx, labeled, None, "image", "x", 0)
    with pytest.raises(gr.Error, match="cannot be empty"):
        captions.save_edit(app_ctx, labeled, image_id, "image", "  ", 0)


def test_a_failed_run_says_how_to_go_on_and_import_from_a_file(app_ctx, labeled, server, tmp_path):  # noqa: F811
    server.mode = "refuse"
    captions.run(app_ctx, labeled, "openai", "vlm", server.url, "", True, "none", "", "")
    task, marker = _wait_done(labeled)
    status = captions.finished(app_ctx, labeled, marker, 0).status
    assert task.status == "failed" and "refusals or empty" in status and "press **Caption images** again" in status
    rows = [r for r in Project(labeled).images()]
    path = tmp_path / "caps.json"
    path.write_text("{" + ", ".join(f'"{r["rel_path"]}": "imported {r["id"]}"' for r in rows) + "}")
    out = captions.import_file(app_ctx, labeled, str(path), 0)
    assert "6 captions imported" in out.status and "**6 texts** on 6 images" in out.summary
    with pytest.raises(gr.Error, match="Choose a .json or .csv"):
        captions.import_file(app_ctx, labeled, None, 0)
