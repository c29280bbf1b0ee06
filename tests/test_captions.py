"""Captions for LatteCLIP: the two group modes, the cache across reruns, editing and disabling, saved prompts,
and captions imported from a file. Model answers come from a real OpenAI-compatible server on 127.0.0.1
(tests/test_describe_openai.py) or from an in-process scripted backend."""

from __future__ import annotations

import json
import re

import pytest

from labeler.describe import (
    calls_per_image,
    caption_counts,
    caption_images,
    caption_prompts,
    caption_requests,
    captions_by_image,
    import_captions,
    list_captions,
    make_own_groups,
    set_caption,
    set_caption_enabled,
    set_caption_prompts,
)
from labeler.describe.captions import group_key
from labeler.describe.prompts import CAPTION_PROMPT, GROUP_PROMPT
from labeler.errors import InvalidInputError

from .test_describe import ScriptedBackend, add_images
from .test_describe_openai import backend_for, server  # noqa: F401  (fixture: the fake OpenAI server)


def _classes(images, n_cat: int) -> dict[int, str]:
    return {im["id"]: ("cat" if k < n_cat else "dog") for k, im in enumerate(images)}


# --- group modes --------------------------------------------------------------------------------------------------


def test_own_groups_hold_the_image_and_three_others_of_its_class():
    images = [{"id": i, "sha256": f"{i:064x}", "path": f"/x/{i}.png"} for i in range(12)]
    class_of = {i: ("cat" if i < 6 else "dog") for i in range(11)}  # 6 cats, 5 dogs, image 11 has no class
    class_of[10] = "owl"  # an owl alone
    groups = make_own_groups(images, class_of, group_size=4, seed=3, class_order=["dog", "cat", "owl"])
    assert [im["id"] for _, im, _ in groups] == [6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 10]  # one per classed image
    for c, im, members in groups:
        ids = [m["id"] for m in members]
        assert ids[0] == im["id"] and len(set(ids)) == len(ids)  # the image first, no repeats
        assert all(class_of[i] == c for i in ids)  # all of its class
        assert len(ids) == (1 if c == "owl" else 4)  # 3 others where the class has them
    again = make_own_groups(images, class_of, group_size=4, seed=3)
    assert {im["id"]: [m["id"] for m in ms] for _, im, ms in again} == {
        im["id"]: [m["id"] for m in ms] for _, im, ms in groups
    }  # seeded: the same draws
    other = make_own_groups(images, class_of, group_size=4, seed=4)
    assert [[m["id"] for m in ms] for *_, ms in other] != [[m["id"] for m in ms] for *_, ms in again]
    # the draw of an image depends on its class only: more dogs change no cat's group
    more = [*images, {"id": 20, "sha256": "f" * 64, "path": "/x/20.png"}]
    grown = make_own_groups(more, {**class_of, 20: "dog"}, group_size=4, seed=3)
    cats = {im["id"]: [m["id"] for m in ms] for c, im, ms in grown if c == "cat"}
    assert cats == {im["id"]: [m["id"] for m in ms] for c, im, ms in again if c == "cat"}
    with pytest.raises(InvalidInputError, match="group_size"):
        make_own_groups(images, class_of, group_size=0)


def test_requests_per_mode_and_calls_per_image(tmp_path):
    images = [{"id": i, "sha256": f"{i:064x}", "path": f"/x/{i}.png"} for i in range(8)]
    class_of = {i: ("cat" if i < 5 else "dog") for i in range(8)}
    shared = caption_requests(images, per_image=True, groups=True, class_of=class_of)
    own = caption_requests(images, per_image=True, groups=True, group_mode="per-image", class_of=class_of)
    assert [r.meta["kind"] for r in shared].count("group") == 3  # 5 cats → 2 groups, 3 dogs → 1
    assert [r.meta["kind"] for r in own].count("group-own") == 8  # one per image
    for r in (r for r in own if r.meta["kind"] == "group-own"):
        (owner,) = r.meta["image_ids"]  # the answer is the owner's alone
        shas = r.subject.removeprefix("group-own:").split(",")
        assert shas[0] == f"{owner:064x}" and r.meta["group_key"] == group_key(shas)
        assert len(shas) == (4 if class_of[owner] == "cat" else 3)  # 3 dogs only: the dog and its 2 mates
    assert {r.subject.split(":")[0] for r in shared if r.task == "group"} == {"group"}
    assert calls_per_image(True, None) == 1 and calls_per_image(True, "shared") == 1.25
    assert calls_per_image(True, "per-image") == 2 and calls_per_image(False, "shared", 5) == 0.2
    with pytest.raises(InvalidInputError, match="group mode 'pairs'"):
        caption_requests(images, groups=True, group_mode="pairs", class_of=class_of)


def test_per_image_groups_through_the_server_then_nothing_sent_twice(project, server, tmp_path):  # noqa: F811
    images = add_images(project, tmp_path / "imgs", 6)
    class_of = _classes(images, 4)
    backend = backend_for(server, max_workers=3)
    preview = caption_images(project, backend, groups=True, group_mode="per-image", class_of=class_of, dry_run=True)
    assert (preview["requests"], preview["new"], preview["images"], preview["groups"]) == (12, 12, 6, 6)
    assert preview["calls_per_image"] == 2 and preview["max_new_tokens"] == 6 * 80 + 6 * 160
    assert server.requests == 0  # a dry run sends nothing
    res = caption_images(project, backend, groups=True, group_mode="per-image", class_of=class_of)
    assert (res["sent"], res["captions"], res["groups"]) == (12, 6, 6) and server.requests == 12
    grids = [b for b in server.bodies if "common visual attributes" in json.dumps(b)]
    assert len(grids) == 6
    caps = captions_by_image(project)
    assert set(caps) == {im["id"] for im in images}
    for im in images:
        # the official grid: 2×2 cells of 326 px with 20 px gaps = 672×672 (2 dogs only: one row)
        size = "672x672" if class_of[im["id"]] == "cat" else "672x326"
        assert caps[im["id"]]["group-own"].startswith(f"Saw 1 image(s) of {size}")
        assert f"of the {class_of[im['id']]} in all the photos" in caps[im["id"]]["group-own"]
        assert set(caps[im["id"]]) == {"image", "group-own"}
    # a rerun: everything from the cache
    again = caption_images(project, backend, groups=True, group_mode="per-image", class_of=class_of)
    assert (again["sent"], again["cached"]) == (0, 12) and server.requests == 12
    assert (
        caption_images(project, backend, groups=True, group_mode="per-image", class_of=class_of, dry_run=True)["new"]
        == 0
    )
    # shared groups beside them: only the 2 shared grids are new (the per-image captions come from the cache)
    shared = caption_images(project, backend, groups=True, group_mode="shared", class_of=class_of)
    assert (shared["sent"], shared["cached"]) == (2, 6) and server.requests == 14
    caps = captions_by_image(project)
    assert all(set(c) == {"image", "group", "group-own"} for c in caps.values())
    rows = list_captions(project, kind="group-own")
    cats = group_key([im["sha256"] for im in images[:4]])  # 4 cats: each one's group is all of them
    assert len(rows) == 6 and [r["group_key"] for r in rows[:4]] == [cats] * 4


# --- editing ------------------------------------------------------------------------------------------------------


def test_edit_disable_enable_and_a_rerun_keeps_them(project, tmp_path):
    images = add_images(project, tmp_path / "imgs", 4)
    class_of = _classes(images, 2)
    backend = ScriptedBackend(lambda r: f"a model text about {r.meta.get('class_name')}")
    caption_images(project, backend, groups=True, group_mode="per-image", class_of=class_of)
    a, b = images[0]["id"], images[1]["id"]
    row = set_caption(project, a, "image", "  a tabby   cat on a sofa ")
    assert row["text"] == "a tabby cat on a sofa" and row["edited"] and row["original"] == "a model text about cat"
    row = set_caption(project, a, "image", "a tabby cat")  # a second edit keeps the model's text
    assert row["original"] == "a model text about cat"
    assert not set_caption(project, b, "image", "a model text about cat")["edited"]  # the model's text: no edit
    row = set_caption_enabled(project, b, "group-own", False)
    assert row["enabled"] is False
    caps = captions_by_image(project)
    assert caps[a] == {"image": "a tabby cat", "group-own": "a model text about cat"}
    assert caps[b] == {"image": "a model text about cat"}  # the disabled group text is left out
    assert len(captions_by_image(project)) == 4
    counts = caption_counts(project)
    assert counts == {"texts": 8, "images": 4, "by_kind": {"image": 4, "group": 0, "group-own": 4}, "disabled": 1,
                      "edited": 1}  # fmt: skip
    assert {r["image_id"] for r in list_captions(project, image_ids=[a, b])} == {a, b}
    assert [r["kind"] for r in list_captions(project, image_id=a)] == ["image", "group-own"]
    listed = {(r["image_id"], r["kind"]): r for r in list_captions(project)}
    assert listed[(b, "group-own")]["enabled"] is False and listed[(a, "image")]["edited"] is True
    assert {r["image_id"] for r in list_captions(project, kind="group-own", enabled_only=True)} == {
        im["id"] for im in images if im["id"] != b
    }
    # a rerun with another model: the edited and the disabled texts stay, the rest is replaced
    other = ScriptedBackend(lambda r: "another text", model="scripted-2")
    res = caption_images(project, other, groups=True, group_mode="per-image", class_of=class_of)
    assert res["kept"] == 2
    caps = captions_by_image(project)
    assert caps[a]["image"] == "a tabby cat" and caps[a]["group-own"] == "another text"
    assert "group-own" not in caps[b] and caps[b]["image"] == "another text"
    set_caption_enabled(project, b, "group-own", True)
    assert captions_by_image(project)[b]["group-own"] == "a model text about cat"  # kept while disabled
    set_caption(project, a, "image", "a model text about cat")  # back to the model's text: not edited any more
    assert not list_captions(project, kind="image", image_id=a)[0]["edited"]
    with pytest.raises(InvalidInputError, match="caption kind 'grp'"):
        set_caption(project, a, "grp", "x")
    with pytest.raises(InvalidInputError, match="has no 'group' caption"):
        set_caption(project, a, "group", "x")
    with pytest.raises(InvalidInputError, match="cannot be empty"):
        set_caption(project, a, "image", "   ")
    with pytest.raises(InvalidInputError, match="has no 'image' caption"):
        set_caption_enabled(project, 999, "image", False)


def test_prompts_are_saved_per_project_and_used(project, tmp_path):
    images = add_images(project, tmp_path / "imgs", 3)
    assert caption_prompts(project) == {"caption": CAPTION_PROMPT, "group": GROUP_PROMPT}
    assert CAPTION_PROMPT == "Describe the {c} in the photo concisely, less than 20 words."
    assert (
        GROUP_PROMPT
        == "Describe the common visual attributes of the {c} in all the photos concisely, less than 20 words."
    )
    saved = set_caption_prompts(project, caption="What is the {c} doing?", group="What do these {k} {c} share?")
    assert saved == {"caption": "What is the {c} doing?", "group": "What do these {k} {c} share?"}
    seen = []
    backend = ScriptedBackend(lambda r: seen.append(r.prompt) or "a text")
    caption_images(project, backend, groups=True, class_of=_classes(images, 3))
    assert seen == ["What is the cat doing?"] * 3 + ["What do these 3 cat share?"]
    assert set_caption_prompts(project, group="") == {"caption": "What is the {c} doing?", "group": GROUP_PROMPT}
    with pytest.raises(InvalidInputError, match="under 2,000"):
        set_caption_prompts(project, caption="x" * 2001)


def test_import_captions_from_csv_and_json(project, tmp_path):
    images = add_images(project, tmp_path / "imgs", 3)
    csv_path = tmp_path / "caps.csv"
    csv_path.write_text(
        f"image,caption,kind\n{images[0]['rel_path']},a red square,image\n"
        f'sub/{images[1]["rel_path"]},"a blue, noisy patch",\n{images[2]["sha256"]},what they share,group-own\n'
        "nothere.png,lost,image\n"
    )
    res = import_captions(project, csv_path)
    assert (res["imported"], res["unmatched"], res["examples"]) == (3, 1, ["nothere.png"])
    caps = captions_by_image(project)
    assert caps[images[0]["id"]] == {"image": "a red square"}
    assert caps[images[1]["id"]] == {"image": "a blue, noisy patch"}  # matched by file name
    assert caps[images[2]["id"]] == {"group-own": "what they share"}
    assert list_captions(project, image_id=images[0]["id"])[0]["backend"] == "file"
    set_caption_enabled(project, images[0]["id"], "image", False)
    js = tmp_path / "caps.json"
    js.write_text(json.dumps({images[0]["rel_path"]: "replaced?", images[1]["rel_path"]: "a blue patch"}))
    res = import_captions(project, js)
    assert (res["imported"], res["kept"]) == (1, 1)  # the disabled one stays
    assert list_captions(project, image_id=images[0]["id"])[0]["text"] == "a red square"
    bad = tmp_path / "bad.csv"
    bad.write_text("image,caption,kind\nx.png,text,weird\n")
    with pytest.raises(InvalidInputError, match=re.escape("kind 'weird'")):
        import_captions(project, bad)
    with pytest.raises(InvalidInputError, match="not found"):
        import_captions(project, tmp_path / "none.csv")


def test_a_cancelled_run_resumes_from_the_cache(project, server, tmp_path):  # noqa: F811
    from labeler.errors import JobCancelled
    from labeler.jobs import list_runs, request_cancel

    images = add_images(project, tmp_path / "imgs", 6)
    backend = backend_for(server, max_workers=1)  # batches of 4 requests: cancel is checked between them

    def cancel_after_first_batch(done, total, message):
        if done >= 4:
            request_cancel(project, list_runs(project, kind="caption")[0]["id"])

    options = {"groups": True, "group_mode": "per-image", "class_of": _classes(images, 3)}
    with pytest.raises(JobCancelled):
        caption_images(project, backend, on_progress=cancel_after_first_batch, **options)
    sent_before = server.requests
    assert 4 <= sent_before < 12 and list_runs(project, kind="caption")[0]["status"] == "cancelled"
    res = caption_images(project, backend, **options)
    assert (res["cached"], res["sent"]) == (sent_before, 12 - sent_before) and server.requests == 12
    assert len(list_captions(project)) == 12
