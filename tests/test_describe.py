"""Descriptions and captions on a project: template and file backends, editing, regeneration, zero-shot texts."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeler.describe import (
    Backend,
    BackendError,
    Request,
    Response,
    add_description,
    caption_images,
    captions_by_image,
    class_texts,
    class_texts_report,
    count_cached,
    delete_description,
    description_requests,
    edit_description,
    export_descriptions,
    generate_descriptions,
    get_backend,
    import_descriptions,
    list_backends,
    list_captions,
    list_descriptions,
    make_groups,
    read_descriptions_file,
    register_backend,
    set_description_enabled,
    tile_grid,
)
from labeler.describe.base import BACKENDS
from labeler.errors import InvalidInputError, JobCancelled, NotReadyError
from labeler.jobs import list_runs, request_cancel

from .conftest import SHARED_DATA

CIFAR_JSON = SHARED_DATA / "descriptions" / "cifar10-gpt35.json"


# --- helpers shared with the other test_describe_* files ---------------------------------------------------------


def add_images(project, folder: Path, n: int, size=(32, 32)) -> list[dict]:
    """Write ``n`` small distinct PNGs and register them as project images (no ingest needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = folder / f"img{i:03d}.png"
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        data = path.read_bytes()
        rows.append(
            {
                "sha256": hashlib.sha256(data).hexdigest(),
                "path": str(path),
                "rel_path": path.name,
                "root": str(folder),
                "folder_label": None,
                "width": size[0],
                "height": size[1],
                "format": "PNG",
                "bytes": len(data),
                "status": "ok",
                "added_at": 0.0,
            }
        )
    with project.db.conn:
        project.db["images"].insert_all(rows)
    return project.images()


class ScriptedBackend(Backend):
    """A sampling 'LLM' that answers from a function and counts calls (an in-process stand-in)."""

    name = "scripted"
    source = "llm"
    supports_images = True

    def __init__(self, answer=None, model: str = "scripted-1"):
        self.model = model
        self.answer = answer or (lambda r: f"1. A {r.meta.get('class_name')} answer to '{r.prompt}' #{r.sample}.")
        self.calls = 0
        self.batch_size = 4

    def complete(self, requests):
        self.calls += len(requests)
        return [Response([self.answer(r)] * r.n) for r in requests]


# --- registry ----------------------------------------------------------------------------------------------------


def test_registry_lists_and_builds_backends(tmp_path):
    names = {b["name"] for b in list_backends()}
    assert {"template", "openai", "transformers", "file"} <= names
    assert get_backend("template").name == "template"
    with pytest.raises(InvalidInputError, match="unknown description backend 'nope'.*template"):
        get_backend("nope")
    with pytest.raises(InvalidInputError, match="no option colour"):
        get_backend("template", colour="red")
    assert get_backend("template", model=None).model == "builtin"  # None options are ignored

    @register_backend
    class Echo(ScriptedBackend):
        name = "echo-test"

    try:
        assert isinstance(get_backend("echo-test"), Echo)
    finally:
        BACKENDS.unregister("echo-test")


# --- generation and regeneration ---------------------------------------------------------------------------------


def test_template_descriptions(project):
    preview = generate_descriptions(project, "template", dry_run=True)
    assert preview["requests"] == 3 and preview["new"] == 3
    assert list_descriptions(project) == []  # a dry run writes nothing
    result = generate_descriptions(project, "template", max_per_class=20, domain="satellite photo")
    assert result["added"] == 60 and result["empty_classes"] == []
    rows = list_descriptions(project, "car")
    assert len(rows) == 20
    assert rows[0]["text"] == "a satellite photo of a car."
    assert all(r["source"] == "template" and r["backend"] == "template" and r["enabled"] for r in rows)
    assert all("car" in r["text"] for r in rows)
    run = list_runs(project, kind="describe")[0]
    assert run["status"] == "done" and run["method"] == "template" and run["metrics"]["added"] == 60


def test_llm_descriptions_interleave_questions_and_cache(project):
    backend = ScriptedBackend(
        lambda r: (
            f"Here are some sentences:\n1. A {r.meta['class_name']} seen for question {r.meta['question']}.\n"
            f"2. The {r.meta['class_name']} again for question {r.meta['question']} sample {r.sample}.\n"
            "I hope this helps!"
        )
    )
    result = generate_descriptions(project, backend, classes=["cat"], samples_per_prompt=2, max_per_class=8)
    assert result["requests"] == 12 and result["sent"] == 12 and backend.calls == 12
    texts = [r["text"] for r in list_descriptions(project, "cat")]
    assert len(texts) == 8
    # round robin: the first sentences come from 6 different questions
    assert [f"A cat seen for question {q}." for q in range(6)] == texts[:6]
    row = list_descriptions(project, "cat")[0]
    assert row["source"] == "llm" and row["model"] == "scripted-1"
    assert row["prompt"] == "Describe what a cat looks like."
    # a rerun costs nothing and changes nothing
    again = generate_descriptions(project, backend, classes=["cat"], samples_per_prompt=2, max_per_class=8)
    assert backend.calls == 12 and again["cached"] == 12 and again["sent"] == 0
    assert [r["text"] for r in list_descriptions(project, "cat")] == texts
    assert generate_descriptions(project, backend, classes=["cat"], samples_per_prompt=2, dry_run=True)["new"] == 0
    # another model is another cache key
    other = ScriptedBackend(model="scripted-2")
    assert generate_descriptions(project, other, classes=["cat"], samples_per_prompt=2, dry_run=True)["new"] == 12
    # refresh asks again
    generate_descriptions(project, backend, classes=["cat"], samples_per_prompt=2, max_per_class=8, refresh=True)
    assert backend.calls == 24


def test_user_edits_additions_and_disables_survive_regeneration(project):
    answers = {"round": 1}
    backend = ScriptedBackend(
        lambda r: (
            "\n".join(f"- A cat fact {k} from round {answers['round']}." for k in range(3)) + "\n- A cat is a cat."
        )
    )
    generate_descriptions(project, backend, classes=["cat"], samples_per_prompt=1, max_per_class=4)
    rows = {r["text"]: r for r in list_descriptions(project, "cat")}
    assert len(rows) == 4
    edited = edit_description(project, rows["A cat fact 0 from round 1."]["id"], "A cat has soft striped fur.")
    assert edited["edited"] == 1 and edited["original"] == "A cat fact 0 from round 1."
    disabled = set_description_enabled(project, rows["A cat fact 1 from round 1."]["id"], False)
    assert disabled["enabled"] == 0
    added = add_description(project, "cat", "  A cat   has whiskers.  ")
    with pytest.raises(InvalidInputError, match="already has this description"):
        add_description(project, "CAT", "a cat has whiskers")
    with pytest.raises(InvalidInputError, match="not in this project"):
        add_description(project, "zebra", "A zebra.")
    with pytest.raises(InvalidInputError, match="empty"):
        add_description(project, "cat", "   ")

    # Round 2 returns new sentences and, again, round 1's fact 0 and 1 (refresh: the cache would repeat round 1).
    answers["round"] = 2
    backend.answer = lambda r: (
        "- A cat fact 0 from round 1.\n- A cat fact 1 from round 1.\n- A cat fact 9 from round 2.\n- A cat is a cat."
    )
    result = generate_descriptions(project, backend, classes=["cat"], samples_per_prompt=1, refresh=True)
    after = {r["text"]: r for r in list_descriptions(project, "cat")}
    assert after["A cat has soft striped fur."]["edited"]  # the edit stays
    assert "A cat fact 0 from round 1." not in after  # its original does not come back
    assert after["A cat fact 1 from round 1."]["enabled"] is False  # still disabled, not duplicated
    assert after["A cat has whiskers."]["source"] == "user" and after["A cat has whiskers."]["id"] == added
    assert after["A cat is a cat."]["source"] == "llm"  # an untouched sentence that came again is kept
    assert "A cat fact 9 from round 2." in after
    assert "A cat fact 2 from round 1." not in after  # an untouched sentence that did not come again is replaced
    assert result["classes"]["cat"]["removed"] == 1 and result["classes"]["cat"]["protected"] == 3
    # enabling again makes it a normal sentence; deleting removes it
    set_description_enabled(project, after["A cat fact 1 from round 1."]["id"], True)
    delete_description(project, added)
    assert "A cat has whiskers." not in {r["text"] for r in list_descriptions(project, "cat")}
    with pytest.raises(InvalidInputError, match="no description with id 99999"):
        edit_description(project, 99999, "x y z")


def test_empty_answers_keep_existing_rows(project):
    generate_descriptions(project, "template", classes=["dog"], max_per_class=5)
    refusing = ScriptedBackend(lambda r: "I'm sorry, but I cannot help with that.")
    with pytest.raises(BackendError, match=r"6 answers were refusals or empty: nothing stored for dog.*another model"):
        generate_descriptions(project, refusing, classes=["dog"], samples_per_prompt=1)
    assert len(list_descriptions(project, "dog")) == 5  # the rows already there stay
    assert list_runs(project, kind="describe")[0]["status"] == "failed"
    assert count_cached(project, refusing, description_requests(refusing, ["dog"], samples_per_prompt=1)) == 0


def test_some_refusals_are_reported_not_cached_and_asked_again(project):
    flaky = ScriptedBackend(
        lambda r: "" if r.meta["class_name"] == "dog" else f"A {r.meta['class_name']} has soft fur."
    )
    result = generate_descriptions(project, flaky, classes=["cat", "dog"], samples_per_prompt=1)
    assert result["unusable"] == 6 and result["empty_classes"] == ["dog"]
    assert result["warning"] == "6 answers were refusals or empty: nothing stored for dog; try another model or prompt"
    assert list_descriptions(project, "cat") and not list_descriptions(project, "dog")
    good = ScriptedBackend()  # same name and model: the cache key is the same
    again = generate_descriptions(project, good, classes=["cat", "dog"], samples_per_prompt=1)
    assert again["cached"] == 6 and again["sent"] == 6 and good.calls == 6  # only dog's answers are asked again
    assert list_descriptions(project, "dog") and again["warning"] == ""


def test_cancel_then_resume_sends_only_the_rest(project):
    backend = ScriptedBackend()
    backend.batch_size = 3
    seen = []

    def on_progress(done, total, msg):
        seen.append(done)
        if done >= 3:
            request_cancel(project, list_runs(project, kind="describe")[0]["id"])

    with pytest.raises(JobCancelled):
        generate_descriptions(project, backend, samples_per_prompt=1, on_progress=on_progress)
    assert backend.calls == 3
    assert list_runs(project, kind="describe")[0]["status"] == "cancelled"
    result = generate_descriptions(project, backend, samples_per_prompt=1)
    assert result["requests"] == 18 and result["cached"] == 3 and result["sent"] == 15
    assert backend.calls == 18


# --- files -------------------------------------------------------------------------------------------------------


def test_cifar_gpt35_json_round_trip(tmp_path):
    if not CIFAR_JSON.is_file():
        pytest.skip(f"{CIFAR_JSON} not found")
    from labeler.project import Project

    source = json.loads(CIFAR_JSON.read_text())
    project = Project.create(tmp_path / "c", ["airplane", "Cat", "dog", "unicorn"])
    result = import_descriptions(project, CIFAR_JSON)
    assert result["missing_classes"] == ["unicorn"]
    assert "truck" in result["unknown_classes"] and "cat" not in result["unknown_classes"]
    rows = list_descriptions(project, "Cat")  # matched ignoring case
    assert rows and all(r["source"] == "file" and r["model"] == "cifar10-gpt35.json" for r in rows)
    assert rows[0]["text"] == source["cat"][0]
    # fragments like "." and "S." and repeats are dropped, everything else comes in as written
    kept = {r["text"] for r in list_descriptions(project)}
    assert "S." not in kept and "." not in kept
    words = [s for s in source["airplane"] if len(s.split()) >= 2]
    assert len(list_descriptions(project, "airplane")) == len({" ".join(s.lower().strip(" .").split()) for s in words})
    out = export_descriptions(project, tmp_path / "out.json")
    again = json.loads((tmp_path / "out.json").read_text())
    assert out["descriptions"] == sum(len(v) for v in again.values())
    assert again["unicorn"] == [] and again["Cat"] == [r["text"] for r in rows]
    # importing the same file again adds nothing
    assert import_descriptions(project, CIFAR_JSON)["added"] == 0
    # and via the file backend, as a "generation"
    fb = get_backend("file", path=CIFAR_JSON)
    assert generate_descriptions(project, fb)["added"] == 0


def test_csv_round_trip_with_commas_quotes_and_unicode(project, tmp_path):
    texts = {
        "cat": ['A cat, sitting; with "quotes" inside.', "Un chat noir — élégant, très doux ✓.", "A cat\twith a tab."],
        "dog": ["A dog's tail, wagging."],
    }
    for c, items in texts.items():
        for t in items:
            add_description(project, c, t)
    out = export_descriptions(project, tmp_path / "d.csv")
    assert out["descriptions"] == 4
    assert read_descriptions_file(tmp_path / "d.csv") == {
        "cat": ['A cat, sitting; with "quotes" inside.', "Un chat noir — élégant, très doux ✓.", "A cat with a tab."],
        "dog": ["A dog's tail, wagging."],
    }
    from labeler.project import Project

    other = Project.create(tmp_path / "other", ["cat", "dog", "car"])
    result = import_descriptions(other, tmp_path / "d.csv")
    assert result["added"] == 4 and result["missing_classes"] == ["car"]
    written = read_descriptions_file(tmp_path / "d.csv")
    assert {r["text"] for r in list_descriptions(other, "cat")} == set(written["cat"])
    # a headerless CSV with an unquoted comma keeps the whole description
    (tmp_path / "raw.csv").write_text("car,A car has four wheels, two doors.\ncar,A red car.\n", encoding="utf-8")
    assert read_descriptions_file(tmp_path / "raw.csv") == {"car": ["A car has four wheels, two doors.", "A red car."]}


def test_import_replace_and_errors(project, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"cat": ["A cat one.", "A cat two."], "dog": "A single dog."}))
    (tmp_path / "b.json").write_text(json.dumps({"cat": ["A cat three."]}))
    import_descriptions(project, tmp_path / "a.json")
    uid = add_description(project, "cat", "My own cat sentence.")
    r = import_descriptions(project, tmp_path / "b.json", replace=True)
    assert r["classes"]["cat"] == {"added": 1, "kept": 0, "removed": 2, "protected": 1}
    assert {d["text"] for d in list_descriptions(project, "cat")} == {"A cat three.", "My own cat sentence."}
    assert [d["id"] for d in list_descriptions(project, "cat") if d["source"] == "user"] == [uid]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        import_descriptions(project, tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text(json.dumps({"cat": [1, 2]}))
    with pytest.raises(InvalidInputError, match="list of sentences"):
        import_descriptions(project, tmp_path / "wrong.json")
    (tmp_path / "none.json").write_text(json.dumps({"zebra": ["A zebra."]}))
    with pytest.raises(InvalidInputError, match="no descriptions for any class"):
        import_descriptions(project, tmp_path / "none.json")
    with pytest.raises(InvalidInputError, match="not found"):
        import_descriptions(project, tmp_path / "missing.json")
    with pytest.raises(InvalidInputError, match=".json or .csv"):
        export_descriptions(project, tmp_path / "out.txt")


# --- what zero-shot embeds ---------------------------------------------------------------------------------------


def test_class_texts_modes(project):
    add_description(project, "cat", "A cat has whiskers.")
    did = add_description(project, "cat", "A cat is disabled here.")
    set_description_enabled(project, did, False)
    none = class_texts(project, "none", "photo")
    assert none == [["a photo of a cat."], ["a photo of a dog."], ["a photo of a car."]]
    warnings = []
    llm = class_texts(project, "llm", "photo", warn=warnings.append)
    assert llm == [["A cat has whiskers."], ["a photo of a dog."], ["a photo of a car."]]
    assert "dog, car" in warnings[0]
    texts, report = class_texts_report(project, "both", "photo")
    assert texts[0] == ["a photo of a cat.", "A cat has whiskers."]
    assert report["descriptions"] == "both" and report["descriptions_per_class"] == {"cat": 1, "dog": 0, "car": 0}
    assert report["texts_per_class"] == [2, 1, 1]
    assert len(class_texts(project, "none")[0]) == 7  # the default "simple" template set
    with pytest.raises(InvalidInputError, match="none, llm, both"):
        class_texts(project, "all")


def test_descriptions_raise_zero_shot_accuracy_on_synthetic_embeddings(project):
    """Two classes whose names embed almost identically; their descriptions carry the attribute that
    separates their images. Zero-shot with descriptions beats names alone."""
    from labeler.methods.zeroshot import text_classifier, zero_shot_probs
    from labeler.project import Project

    rng = np.random.default_rng(0)
    dim = 64
    basis = {
        w: v / np.linalg.norm(v)
        for w, v in ((w, rng.normal(size=dim)) for w in ("husky", "malamute", "blue", "eyes", "brown", "curly"))
    }
    common = rng.normal(size=dim)
    common /= np.linalg.norm(common)

    def encode(text: str) -> np.ndarray:
        words = text.lower().replace(".", " ").split()
        v = 2.0 * common
        v = v + 0.05 * sum(basis[w] for w in words if w in ("husky", "malamute"))  # names barely differ
        v = v + sum(basis[w] for w in words if w in ("blue", "eyes", "brown", "curly"))
        return v / np.linalg.norm(v)

    p = Project.create(project.root.parent / "dogs", ["husky", "malamute"])
    # images: a shared dog direction plus the class attribute plus noise
    n = 200
    labels = np.repeat([0, 1], n // 2)
    attr = np.stack([basis["blue"] + basis["eyes"], basis["brown"] + basis["curly"]])
    feats = 2.0 * common + 0.6 * attr[labels] + rng.normal(scale=0.25, size=(n, dim))

    def accuracy(mode: str) -> float:
        texts = class_texts(p, mode, ["a photo of a {c}.", "a {c}."])
        clf = text_classifier([np.stack([encode(t) for t in ts]) for ts in texts])
        return float((zero_shot_probs(feats, clf).argmax(1) == labels).mean())

    base = accuracy("none")
    add_description(p, "husky", "A husky has striking blue eyes.")
    add_description(p, "husky", "The husky with blue eyes.")
    add_description(p, "malamute", "A malamute has brown eyes and curly tail.")
    add_description(p, "malamute", "The malamute is brown with a curly coat.")
    llm, both = accuracy("llm"), accuracy("both")
    assert base < 0.75
    assert llm > 0.95 and both > 0.95
    assert llm > base + 0.2


# --- captions ----------------------------------------------------------------------------------------------------


def test_tile_grid_and_groups(tmp_path):
    ims = [Image.new("RGB", (40, 20), c) for c in ("red", "green", "blue", "white")]
    grid = tile_grid(ims, cell=50, gap=2)
    assert grid.size == (102, 102)
    assert grid.getpixel((25, 25)) == (255, 0, 0) and grid.getpixel((77, 77)) == (255, 255, 255)
    assert grid.getpixel((25, 77)) == (0, 0, 255)
    assert grid.getpixel((25, 2)) == (255, 255, 255)  # letterboxed: the 2:1 image leaves a band
    assert tile_grid(ims[:3], cell=10, gap=0).size == (20, 20)
    images = [{"id": i} for i in range(10)]
    class_of = {i: ("a" if i < 7 else "b") for i in range(9)}  # image 9 has no class
    groups = make_groups(images, class_of, group_size=4, seed=1, class_order=["b", "a"])
    assert [(c, len(m)) for c, m in groups] == [("b", 2), ("a", 4), ("a", 3)]
    assert sorted(m["id"] for c, ms in groups if c == "a" for m in ms) == list(range(7))


def test_template_captions_and_groups(project, tmp_path):
    images = add_images(project, tmp_path / "imgs", 6)
    class_of = {im["id"]: ("cat" if k < 4 else "dog") for k, im in enumerate(images)}
    with pytest.raises(NotReadyError, match="pseudo-label"):
        caption_images(project, "template", groups=True)
    preview = caption_images(project, "template", groups=True, class_of=class_of, dry_run=True)
    assert preview["requests"] == 6 + 2 and preview["groups"] == 2 and preview["images"] == 6
    result = caption_images(project, "template", groups=True, class_of=class_of)
    assert result["captions"] == 6 and result["groups"] == 2
    caps = captions_by_image(project)
    assert caps[images[0]["id"]] == {"image": "a photo of a cat.", "group": "a photo of a cat."}
    assert caps[images[5]["id"]]["image"] == "a photo of a dog."
    group_rows = list_captions(project, kind="group")
    assert len(group_rows) == 6 and len({r["group_key"] for r in group_rows}) == 2
    # without classes: per-image captions without the class
    caption_images(project, "template")
    assert captions_by_image(project)[images[0]["id"]]["image"] == "a photo."
    assert len(list_captions(project, kind="image")) == 6  # replaced, not duplicated
    with pytest.raises(InvalidInputError, match="cannot caption"):
        caption_images(project, get_backend("file", path=_tiny_json(tmp_path)))
    assert list_runs(project, kind="caption")[0]["status"] == "done"


def test_caption_prompts_include_class_and_grid(project, tmp_path):
    images = add_images(project, tmp_path / "imgs", 5)
    seen: list[Request] = []

    def answer(r: Request) -> str:
        seen.append(r)
        from labeler.describe import load_image

        ims = [load_image(im) for im in r.images]
        return f"Sure! Here is a caption:\n**{len(ims)} image of {ims[0].size[0]}x{ims[0].size[1]} px.**"

    backend = ScriptedBackend(answer)
    class_of = {images[0]["id"]: "cat", images[1]["id"]: "cat", images[2]["id"]: "cat"}
    result = caption_images(project, backend, groups=True, class_of=class_of, cell=64)
    assert result["sent"] == 6 and backend.calls == 6
    prompts = [r.prompt for r in seen if r.task == "caption"]
    assert prompts[0] == "Describe the cat in the photo concisely, less than 20 words."
    assert prompts[4] == "Describe the photo concisely, less than 20 words."  # image without a class
    group = [r for r in seen if r.task == "group"][0]
    assert "common visual attributes of the cat in all the photos" in group.prompt
    caps = captions_by_image(project)
    assert caps[images[0]["id"]]["image"] == "1 image of 32x32 px."
    assert caps[images[0]["id"]]["group"] == "1 image of 132x132 px."  # 2×2 grid of 64 px cells + 4 px gap
    assert "group" not in caps[images[3]["id"]]
    again = caption_images(project, backend, groups=True, class_of=class_of, cell=64)
    assert again["sent"] == 0 and backend.calls == 6


def _tiny_json(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"cat": ["A cat sits."]}))
    return path


# --- schema ------------------------------------------------------------------------------------------------------


def test_migration_2_from_version_1(tmp_path):
    import sqlite_utils

    import store
    from store import db as dbmod

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    old = sqlite_utils.Database(conn)
    dbmod._migrate_1(old)
    old.execute("PRAGMA user_version = 1")
    old["classes"].insert({"idx": 0, "name": "cat"})
    old["descriptions"].insert({"class_id": 1, "text": "A cat.", "source": "llm", "enabled": 1, "edited": 0})
    conn.commit()
    conn.close()
    db = store.connect(path)
    assert store.schema_version(db) == store.SCHEMA_VERSION >= 2
    assert {"llm_cache", "captions"} <= set(db.table_names())
    assert "original" in db["descriptions"].columns_dict
    assert db.execute("select text from descriptions").fetchone()[0] == "A cat."
    dbmod._migrate_2(db)  # idempotent
    assert "original" in db["descriptions"].columns_dict
