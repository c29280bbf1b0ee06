"""describe / caption / descriptions / label --descriptions through the CLI (in-process)."""

from __future__ import annotations

import json
import re

import pytest

from labeler.cli import main
from labeler.jobs import get_run
from labeler.project import Project

from .conftest import class_folders
from .test_describe import add_images
from .test_describe_openai import DripServer, server  # noqa: F401  (fixture: a real OpenAI-compatible HTTP server)

FEATURES = ["pointed ears", "soft fur", "a long tail", "bright eyes", "whiskers", "a wet nose", "four paws"]
PLACES = ["on a sofa", "in the grass", "by a window", "in the snow"]


def descriptions_file(path) -> object:
    """A CuPL/NoLA-style JSON (class -> sentences) like cifar10-gpt35.json: 28 per class for cat and dog, a few
    for a class the project does not have."""
    data = {cls: [f"A photo of a {cls} with {f} {p}." for f in FEATURES for p in PLACES] for cls in ("cat", "dog")}
    data["truck"] = ["A truck on a road.", "A red truck with a trailer."]
    path.write_text(json.dumps(data, indent=1))
    return path


def run_json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main([*map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def small(tmp_path):
    """A project with 6 generated images, tiny-random CLIP features and a zero-shot run."""
    src = class_folders(tmp_path / "imgs", per_class=3, classes=["cat", "dog"])
    proj = tmp_path / "p"
    assert main(["init", str(proj), "--classes", "cat,dog"]) == 0
    assert main(["import", str(proj), str(src), "--quiet"]) == 0
    assert main(["features", str(proj), "--clip", "tiny-random", "--quiet"]) == 0
    assert main(["label", str(proj), "--quiet"]) == 0
    return proj


def test_describe_through_an_openai_endpoint_then_cached(small, server, capsys):  # noqa: F811
    argv = ["describe", small, "--backend", "openai", "--model", "tiny-llm", "--base-url", server.url, "--quiet"]
    first = run_json(capsys, *argv)
    assert first["sent"] > 0 and first["added"] > 0
    seen = server.requests
    assert seen == first["sent"]
    again = run_json(capsys, *argv)
    assert again["sent"] == 0 and server.requests == seen  # a rerun costs no new requests
    listed = run_json(capsys, "descriptions", small, "list", "--class", "cat")["descriptions"]
    assert listed and all(d["class"] == "cat" and d["backend"] == "openai" for d in listed)
    assert all(not d["text"].startswith(("1.", "-", "**")) for d in listed)  # parsed, not raw


def test_dry_run_sends_nothing(small, server, capsys):  # noqa: F811
    out = run_json(
        capsys, "describe", small, "--backend", "openai", "--model", "m", "--base-url", server.url, "--dry-run"
    )
    assert out["requests"] > 0 and server.requests == 0


def test_edit_disable_add_export_import_and_label_with_descriptions(small, tmp_path, capsys):
    imported = run_json(capsys, "descriptions", small, "import", descriptions_file(tmp_path / "gpt.json"))
    assert "cat" in json.dumps(imported)
    rows = run_json(capsys, "descriptions", small, "list")["descriptions"]
    assert {r["class"] for r in rows} == {"cat", "dog"} and len(rows) > 40
    first = rows[0]
    assert main(["descriptions", str(small), "edit", str(first["id"]), "a cat with striped fur"]) == 0
    assert main(["descriptions", str(small), "disable", str(rows[1]["id"])]) == 0
    assert main(["descriptions", str(small), "add", "dog", "a dog wagging its tail"]) == 0
    rows = {r["id"]: r for r in run_json(capsys, "descriptions", small, "list")["descriptions"]}
    assert rows[first["id"]]["text"] == "a cat with striped fur" and rows[first["id"]]["edited"]
    assert not rows[rows_id := list(rows)[1]]["enabled"], rows_id
    assert any(r["source"] == "user" and r["text"] == "a dog wagging its tail" for r in rows.values())

    out = tmp_path / "descs.json"
    assert main(["descriptions", str(small), "export", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "a cat with striped fur" in data["cat"] and "a dog wagging its tail" in data["dog"]
    assert rows[list(rows)[1]]["text"] not in data["cat"]  # disabled ones stay out

    res = run_json(capsys, "label", small, "--descriptions", "llm", "--quiet")
    params = get_run(Project.open(small), res["run_id"])["params"]
    assert params["descriptions"] == "llm"
    enabled = sum(1 for r in rows.values() if r["enabled"] and r["class"] == "cat")
    assert params["descriptions_per_class"]["cat"] == enabled
    assert params["texts_per_class"][0] == enabled  # llm mode: descriptions only
    none = run_json(capsys, "label", small, "--descriptions", "none", "--quiet")
    assert get_run(Project.open(small), none["run_id"])["params"]["texts_per_class"][0] == 7  # simple templates


def test_caption_images_and_groups_through_the_cli(small, server, capsys):  # noqa: F811
    argv = ["caption", small, "--backend", "openai", "--model", "vlm", "--base-url", server.url, "--groups", "--quiet"]
    res = run_json(capsys, *argv)
    assert server.requests > 0
    from labeler.describe import captions_by_image

    caps = captions_by_image(Project.open(small))
    assert len(caps) == 6 and all(c.get("image") and c.get("group") for c in caps.values())
    before = server.requests
    run_json(capsys, *argv)
    assert server.requests == before, res  # cached


def test_describe_errors_are_clear(small, capsys):
    assert main(["describe", str(small), "--backend", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert (
        main(
            [
                "describe",
                str(small),
                "--backend",
                "openai",
                "--model",
                "m",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--timeout",
                "2",
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "127.0.0.1:9" in err and "Traceback" not in err


# --- deadlines and unusable answers (no CIFAR needed) --------------------------------------------------------------


def openai_argv(command, project, url, *extra):
    return [command, str(project.root), "--backend", "openai", "--model", "m", "--base-url", url, "--quiet", *extra]


def error_line(err: str) -> str:
    """The one ``error: ...`` line (after the request count that describe/caption print first)."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("describe:", "caption:"))]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_describe_timeout_is_a_total_deadline_against_a_drip_feed(project, capsys):
    with DripServer("headers") as drip:
        capsys.readouterr()
        argv = openai_argv("describe", project, drip.url, "--timeout", "1", "--retries", "0", "--classes", "cat")
        assert main([*argv, "--samples", "1", "--workers", "1"]) == 2
        assert "did not answer within 1 s" in error_line(capsys.readouterr().err)
        assert drip.finished == 0  # the call returned before the server's 30 s drip was over
        assert drip.cut.wait(10)  # and it closed the connection


def test_describe_refusals_exit_non_zero_and_a_later_good_server_is_asked(project, server, capsys):  # noqa: F811
    server.mode = "refuse"
    capsys.readouterr()
    assert main(openai_argv("describe", project, server.url, "--samples", "1")) == 2
    line = error_line(capsys.readouterr().err)
    assert "18 answers were refusals or empty: nothing stored for cat, dog, car; try another model" in line
    server.mode = "normal"
    first = server.requests
    res = run_json(capsys, *openai_argv("describe", project, server.url, "--samples", "1"))
    assert res["sent"] == 18 and server.requests == first + 18 and res["added"] > 0


def test_caption_refusals_exit_non_zero(project, server, tmp_path, capsys):  # noqa: F811
    add_images(project, tmp_path / "imgs", 2)
    server.mode = "null"
    capsys.readouterr()
    assert main(openai_argv("caption", project, server.url)) == 2
    assert "all 2 answers were refusals or empty" in error_line(capsys.readouterr().err)
    server.mode = "normal"
    assert run_json(capsys, *openai_argv("caption", project, server.url))["captions"] == 2


def test_describe_deadline_stops_cleanly_and_says_how_far(project, server, capsys):  # noqa: F811
    server.hang_after = 2
    capsys.readouterr()
    argv = openai_argv("describe", project, server.url, "--samples", "1", "--classes", "cat", "--workers", "1")
    assert main([*argv, "--deadline", "1", "--timeout", "60"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "stopped at the 1 s deadline after 2 of 6 answers" in line and "rerun the same step" in line
    server.hang_after = None
    server.release.set()
    res = run_json(capsys, *argv)
    assert res["cached"] == 2 and res["sent"] == 4
    assert main([*argv, "--deadline", "0"]) == 2
    assert "positive number of seconds" in error_line(capsys.readouterr().err)


def test_import_says_what_was_dropped_and_why(tmp_path, capsys):
    """Issue 12: an import said "41 dropped lines" without saying they were duplicates; the CLI said nothing."""
    proj = tmp_path / "p"
    assert main(["init", str(proj), "--classes", "cat,dog"]) == 0
    data = {"cat": ["A cat on a sofa.", "a cat on a SOFA", "A cat on a sofa.", "S.", ""], "dog": ["A dog running."]}
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    res = run_json(capsys, "descriptions", proj, "import", path)
    assert res["dropped"] == 4 and res["dropped_reasons"] == {"duplicate": 2, "fragment": 1, "empty": 1}
    assert main(["descriptions", str(proj), "import", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 lines of the file were not imported: 2 repeated an earlier line" in out
    assert "1 had fewer than two words" in out and "1 were blank" in out and "0 descriptions added" in out


def test_file_and_template_backends_do_not_claim_requests_sent(small, tmp_path, capsys):
    """Issue 12: the file backend reported "10 requests sent" (it reads a file and sends nothing)."""
    path = descriptions_file(tmp_path / "d.json")
    assert main(["describe", str(small), "--backend", "file", "--file", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert not re.search(r"\d+ requests sent", out) and f"read {path} for 2 classes (no requests sent)" in out
    assert main(["describe", str(small), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert not re.search(r"\d+ requests sent", out) and "built-in templates for 2 classes" in out


def test_caption_group_modes_through_the_cli_send_nothing_twice(small, server, capsys):  # noqa: F811
    base = ["caption", small, "--backend", "openai", "--model", "vlm", "--base-url", server.url, "--quiet"]
    own = run_json(capsys, *base, "--groups", "per-image")
    assert (own["sent"], own["captions"], own["groups"]) == (12, 6, 6) and server.requests == 12
    from labeler.describe import captions_by_image, list_captions

    caps = captions_by_image(Project.open(small))
    assert len(caps) == 6 and all(set(c) == {"image", "group-own"} for c in caps.values())
    shared = run_json(capsys, *base, "--groups")  # a bare --groups keeps meaning shared groups
    assert (shared["sent"], shared["cached"]) == (2, 6) and server.requests == 14  # 3 per class: 1 grid each
    assert all(set(c) == {"image", "group", "group-own"} for c in captions_by_image(Project.open(small)).values())
    again = run_json(capsys, *base, "--groups", "per-image")
    assert again["sent"] == 0 and server.requests == 14
    preview = run_json(capsys, *base, "--groups-only", "--groups", "per-image", "--dry-run", "--refresh")
    assert (preview["requests"], preview["groups"], preview["images"], preview["calls_per_image"]) == (6, 6, 0, 1)
    assert server.requests == 14
    assert len(list_captions(Project.open(small), kind="group-own")) == 6


def test_captions_command_edits_disables_sets_prompts_and_imports(small, tmp_path, capsys):
    run_json(capsys, "caption", small, "--groups", "per-image", "--quiet")  # template backend
    listed = run_json(capsys, "captions", small, "list", "--kind", "image")["captions"]
    assert len(listed) == 6 and all(r["enabled"] and not r["edited"] for r in listed)
    first = listed[0]["image_id"]
    row = run_json(capsys, "captions", small, "edit", first, "image", "a small grey cat")
    assert row["text"] == "a small grey cat" and row["edited"] and row["original"].startswith("a photo of")
    assert not run_json(capsys, "captions", small, "disable", first, "group-own")["enabled"]
    from labeler.describe import captions_by_image

    assert captions_by_image(Project.open(small))[first] == {"image": "a small grey cat"}
    assert main(["captions", str(small), "enable", str(first), "group-own"]) == 0
    assert "enabled the group-own caption" in capsys.readouterr().out
    assert main(["captions", str(small), "edit", str(first), "image"]) == 2  # no text
    assert "usage: captions PROJECT edit IMAGE_ID KIND 'new text'" in capsys.readouterr().err
    prompts = run_json(capsys, "captions", small, "prompts", "--prompt", "Describe the {c} briefly.")
    assert prompts["caption"] == "Describe the {c} briefly." and prompts["group"].startswith("Describe the common")
    run_json(capsys, "caption", small, "--quiet")  # template: answers from templates, the prompt is recorded
    rows = run_json(capsys, "captions", small, "list", "--kind", "image")["captions"]
    prompts_used = {r["prompt"] for r in rows if r["image_id"] != first}
    assert prompts_used and prompts_used <= {"Describe the cat briefly.", "Describe the dog briefly."}
    assert next(r for r in rows if r["image_id"] == first)["text"] == "a small grey cat"  # the edit stays
    run_json(capsys, "caption", small, "--quiet", "--prompt", "Say {c}.", "--save-prompts")
    assert run_json(capsys, "captions", small, "prompts")["caption"] == "Say {c}."
    path = tmp_path / "caps.csv"
    path.write_text("image,caption\n" + "".join(f"{r['rel_path']},imported {r['image_id']}\n" for r in rows))
    res = run_json(capsys, "caption", small, "--backend", "file", "--file", path)
    assert (res["imported"], res["kept"], res["unmatched"]) == (5, 1, 0)
    assert main(["caption", str(small), "--backend", "file"]) == 2
    assert "--file" in capsys.readouterr().err
