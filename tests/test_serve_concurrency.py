"""Issue 12, review speed: how many events of one kind the app serves at once is a setting (``--concurrency``,
``LABELER_CONCURRENCY``), and concurrent writers never lose an edit."""

from __future__ import annotations

import threading

import pytest

from labeler.cli import main
from labeler.errors import InvalidInputError
from labeler.ingest import import_sources
from labeler.labels import final_labels, set_human_labels
from labeler.project import Project

from .conftest import class_folders

gr = pytest.importorskip("gradio")

from labeler.ui import DEFAULT_CONCURRENCY, concurrency_limit  # noqa: E402


def test_concurrency_from_flag_then_env_then_default():
    assert concurrency_limit(None, {}) == DEFAULT_CONCURRENCY > 4  # more than the old fixed 4
    assert concurrency_limit(None, {"LABELER_CONCURRENCY": "32"}) == 32
    assert concurrency_limit("8", {"LABELER_CONCURRENCY": "32"}) == 8
    with pytest.raises(InvalidInputError, match="LABELER_CONCURRENCY must be a whole number from 1 to 1000"):
        concurrency_limit(None, {"LABELER_CONCURRENCY": "many"})
    with pytest.raises(InvalidInputError, match="--concurrency must be a whole number"):
        concurrency_limit("0", {})


def test_serve_passes_the_flag_to_the_queue(monkeypatch, capsys):
    import labeler.ui as ui

    seen = {}

    class FakeDemo:
        def queue(self, **kw):
            seen.update(kw)
            return self

        def launch(self, **kw):
            seen["launch"] = kw

    monkeypatch.setattr(ui, "build_demo", lambda *a, **k: FakeDemo())
    monkeypatch.setattr(ui, "launch_options", lambda demo: {})
    assert main(["serve", "--port", "7999", "--concurrency", "12"]) == 0
    assert seen["default_concurrency_limit"] == 12 and seen["launch"]["max_threads"] >= 24
    monkeypatch.setenv("LABELER_CONCURRENCY", "3")
    assert main(["serve", "--port", "7999"]) == 0
    assert seen["default_concurrency_limit"] == 3
    assert main(["serve", "--port", "7999", "--concurrency", "lots"]) != 0
    assert "--concurrency must be a whole number from 1 to 1000" in capsys.readouterr().err


def test_serve_help_names_the_flag(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--concurrency" in out and f"else {DEFAULT_CONCURRENCY}" in out  # the help says the real default


def test_concurrent_writers_lose_no_edit(tmp_path):
    """Eight threads, each with its own connection (as the app's handlers have), label their own images at once:
    every label is there afterwards (WAL, BEGIN IMMEDIATE, a busy timeout: writers wait, none fails)."""
    p = Project.create(tmp_path / "proj", ["cat", "dog"])
    import_sources(p, [str(class_folders(tmp_path / "imgs", 16, ["cat", "dog"]))])
    ids = [im["id"] for im in p.images()]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        mine = Project(p.root)
        try:
            for i in ids[k::8]:
                set_human_labels(mine, [i], "dog" if i % 2 else "cat")
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            mine.close()

    _in_threads(work, 8)
    assert not errors
    got = {it.image_id: (it.label, it.source) for it in final_labels(p)}
    assert got == {i: ("dog" if i % 2 else "cat", "human") for i in ids}


def test_concurrent_unsure_marks_are_all_kept(tmp_path):
    """Marking images unsure reads, extends and writes one meta list: two reviewers at once must not drop each
    other's marks (one write transaction from the read to the write)."""
    from labeler.review import mark_unsure, unsure_ids

    p = Project.create(tmp_path / "proj", ["cat", "dog"])
    import_sources(p, [str(class_folders(tmp_path / "imgs", 20, ["cat", "dog"]))])
    ids = [im["id"] for im in p.images()]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(k: int) -> None:
        mine = Project(p.root)
        try:
            start.wait()
            for i in ids[k::8]:
                mark_unsure(mine, [i])
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            mine.close()

    _in_threads(work, 8)
    assert not errors and unsure_ids(p) == set(ids)


def _in_threads(work, n: int) -> None:
    """Run ``work(k)`` for k in 0..n-1, each in its own thread, and wait for all of them."""
    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
