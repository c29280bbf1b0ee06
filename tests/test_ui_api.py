"""The wizard's event API, driven with gradio_client against the launched app (one server per module).

The app runs as ``python app.py`` in a subprocess on a free port of 127.0.0.1 with its own data dir and
gradio cache; it is stopped at teardown. Every step is exercised through its ``api_name``s with tiny
models on a dozen generated images; waiting for background jobs reads the project's ``runs`` rows.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO, shown

gradio_client = pytest.importorskip("gradio_client")

from labeler.ui import jobs as jobs_panel  # noqa: E402
from labeler.ui.steps import classes as classes_step  # noqa: E402
from labeler.ui.steps import descriptions as descriptions_step  # noqa: E402
from labeler.ui.steps import export as export_step  # noqa: E402
from labeler.ui.steps import images as images_step  # noqa: E402
from labeler.ui.steps import project as project_step  # noqa: E402

CLASSES = ["cat", "dog", "ship"]
#: What gradio_client leaves out of each step's outputs (gr.State, gr.Tabs, gr.Accordion, gr.Button updates).
CREATED_HIDDEN = ("project", "tabs", "visitor")
OPENED_HIDDEN = ("project",)
IMAGES_HIDDEN = ("skipped_box", "page")
POLL_HIDDEN = ("cancel_btn", "panel", "signature", "finished")
#: Review outputs gradio_client leaves out (gr.State values, the accordion's layout update).
REVIEW_HIDDEN = ("page_ids", "page", "selection", "last_click", "setup", "ml_add", "ml_remove")  # buttons: not returned
COLORS = {"cat": (200, 60, 40), "dog": (40, 160, 60), "ship": (30, 60, 200)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """``python app.py`` on a free local port; ``stop()`` ends it (terminate, then kill)."""

    def __init__(self, data_dir: Path, tmp: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.data_dir = data_dir
        self.log = open(tmp / "server.log", "w")  # noqa: SIM115 (closed in stop)
        env = {
            **os.environ,
            "NO_PROXY": "localhost,127.0.0.1",
            "no_proxy": "localhost,127.0.0.1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_TEMP_DIR": str(tmp / "gradio"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(data_dir)],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 150
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}: {self.logs()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the app did not answer in 150 s: {self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def wait_for_run(
    server: AppServer, project_dir: Path, kind: str, after: int = 0, count: int = 1, timeout: float = 180
) -> dict:
    """Wait until ``count`` ``kind`` runs with id > ``after`` have finished; return the newest (decoded)."""
    from labeler.jobs import list_runs
    from labeler.project import Project

    deadline = time.time() + timeout
    while time.time() < deadline:
        project = Project(project_dir)
        runs = [r for r in list_runs(project, kind=kind) if r["id"] > after]
        project.close()
        if len(runs) >= count and all(r["status"] != "running" for r in runs):
            return runs[0]
        time.sleep(0.3)
    raise AssertionError(f"no finished {kind} run after {timeout} s; server log:\n{server.logs()}")


def last_run_id(project_dir: Path) -> int:
    from labeler.jobs import list_runs
    from labeler.project import Project

    project = Project(project_dir)
    runs = list_runs(project)
    project.close()
    return runs[0]["id"] if runs else 0


def make_images(root: Path, per_class: int = 4) -> Path:
    """Small coloured PNGs in class folders, plus one file that is not an image."""
    from PIL import Image

    for cls in CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            r, g, b = COLORS[cls]
            Image.new("RGB", (40 + k, 32), (r, (g + 17 * k) % 256, b)).save(root / cls / f"{cls}{k}.png")
    (root / "cat" / "broken.jpg").write_bytes(b"this is not a jpeg")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui_api")
    srv = AppServer(tmp / "data", tmp)
    yield srv
    srv.stop()


def api_client(server: AppServer, downloads: Path, project: str | None = None):
    """A gradio_client on ``server`` (downloads into ``downloads``), with ``project`` opened when given."""
    c = gradio_client.Client(server.url, verbose=False, analytics_enabled=False, download_files=str(downloads))
    if project is not None:
        c.predict(project, api_name="/project_open")
    return c


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return api_client(server, tmp_path_factory.mktemp("downloads"))


def call_error(client, *args, api_name: str) -> str:
    """The message of the gr.Error an endpoint raises."""
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def test_api_lists_every_step(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    for name in (
        "project_create",
        "project_open",
        "project_rename",
        "project_delete",
        "images_import_upload",
        "images_import_folder",
        "images_view",
        "classes_save",
        "classes_from_folders",
        "descriptions_generate",
        "descriptions_add",
        "descriptions_edit",
        "descriptions_toggle",
        "descriptions_delete",
        "descriptions_import",
        "descriptions_export",
        "features_start",
        "zeroshot_start",
        "review_refresh",
        "review_accept",
        "review_relabel",
        "review_unsure",
        "review_accept_above",
        "review_select_ids",
        "train_start",
        "train_cancel",
        "train_resume",
        "explore_view",
        "explore_cluster",
        "explore_search",
        "export_run",
        "jobs_poll",
        "jobs_cancel",
    ):
        assert f"/{name}" in names, name


def test_project_step_errors_and_lifecycle(client, server):
    assert "Type a project name" in call_error(client, "", False, "", api_name="/project_create")
    assert "is not a project name" in call_error(client, "bad/..name?", False, "", api_name="/project_create")
    assert "listed twice" in call_error(client, "dupes", False, "a, b, A", api_name="/project_create")
    out = shown(
        project_step.CreateOut, client.predict("scratch", False, "x, y", api_name="/project_create"), CREATED_HIDDEN
    )
    assert [row[0] for row in out.table["data"]] == ["scratch"]
    assert "Open: scratch" in out.status
    assert "already exists" in call_error(client, "scratch", False, "", api_name="/project_create")
    out = shown(project_step.OpenOut, client.predict("scratch2", api_name="/project_rename"), OPENED_HIDDEN)
    assert [row[0] for row in out.table["data"]] == ["scratch2"] and "scratch2" in out.status
    assert (server.data_dir / "scratch2").is_dir() and not (server.data_dir / "scratch").exists()
    assert "type the project's name" in call_error(client, "nope", api_name="/project_delete")
    out = shown(project_step.OpenOut, client.predict("scratch2", api_name="/project_delete"), OPENED_HIDDEN)
    assert not any(r[0] for r in out.table["data"])
    assert "No project open" in out.status and not (server.data_dir / "scratch2").exists()
    view = shown(images_step.ViewOut, client.predict(api_name="/images_view"), IMAGES_HIDDEN)
    assert "No project open" in view.counts
    assert "Pick a project" in call_error(client, None, api_name="/project_open")


def test_multi_label_project(client):
    client.predict("tags", True, "indoor, outdoor, people", api_name="/project_create")
    view = classes_step.ViewOut._make(client.predict(api_name="/classes_view"))
    assert view.text.split("\n") == ["indoor", "outdoor", "people"] and view.mode.startswith("multi-label")
    assert "multi-label" in view.status
    from labeler.ui.steps.pseudolabels import RefreshOut

    out = shown(RefreshOut, hidden=REVIEW_HIDDEN, values=client.predict(api_name="/review_refresh"))
    target = out.target
    assert target["multiselect"] is True  # each class shows the digit key that relabels to it
    expected = [("1 · indoor", "indoor"), ("2 · outdoor", "outdoor"), ("3 · people", "people")]
    assert [tuple(c) for c in target["choices"]] == expected
    assert "No pseudo-labels yet" in out.selection_text or "Import images first" in out.features
    saved = classes_step.SaveOut._make(
        client.predict("indoor\noutdoor", "single-label (one class per image)", api_name="/classes_save")
    )
    assert "single-label" in saved.status


def test_wizard_flow_through_the_api(client, server, tmp_path):
    images = make_images(tmp_path / "imgs")
    client.predict("pets", False, "", api_name="/project_create")
    proj = server.data_dir / "pets"

    # --- images ---------------------------------------------------------------------------------------------
    assert "does not exist" in call_error(client, str(tmp_path / "nope"), api_name="/images_import_folder")
    assert "Choose image files" in call_error(client, [], api_name="/images_import_upload")
    assert "Importing" in client.predict(str(images), api_name="/images_import_folder")
    run = wait_for_run(server, proj, "import")
    assert run["status"] == "done", run
    view = shown(images_step.ViewOut, client.predict(api_name="/images_view"), IMAGES_HIDDEN)
    assert "12 images" in view.counts and "1 skipped" in view.counts
    assert len(view.gallery) == 12
    assert all(
        Path(item["image"]["path"] if isinstance(item.get("image"), dict) else item["image"]).suffix == ".jpg"
        for item in view.gallery
    )  # thumbnails, not the PNG originals
    assert [r[1] for r in view.skipped["data"]] == ["not an image: cannot identify image file"]
    upload = tmp_path / "extra.png"
    from PIL import Image

    Image.new("RGB", (20, 20), (1, 2, 3)).save(upload)
    before = last_run_id(proj)
    client.predict([gradio_client.handle_file(str(upload))], api_name="/images_import_upload")
    assert wait_for_run(server, proj, "import", after=before)["metrics"]["added"] == 1
    assert (proj / "files" / "uploads").is_dir()

    # --- classes --------------------------------------------------------------------------------------------
    assert "at least two" in call_error(client, "", "single-label (one class per image)", api_name="/classes_save")
    assert "listed twice" in call_error(
        client, "cat\ndog\nCat", "single-label (one class per image)", api_name="/classes_save"
    )
    assert "characters long" in call_error(
        client, "cat\n" + "x" * 300, "single-label (one class per image)", api_name="/classes_save"
    )
    assert client.predict(api_name="/classes_from_folders").split("\n") == CLASSES
    saved = classes_step.SaveOut._make(
        client.predict("cat\ndog\nship", "single-label (one class per image)", api_name="/classes_save")
    )
    assert saved.text == "cat\ndog\nship" and "3 classes" in saved.status

    # --- descriptions ---------------------------------------------------------------------------------------
    assert "needs a model" in call_error(client, "openai", "", "", "", "", 10, api_name="/descriptions_generate")
    before = last_run_id(proj)
    client.predict("template", "", "", "", "", 10, api_name="/descriptions_generate")
    assert wait_for_run(server, proj, "describe", after=before)["status"] == "done"
    view = descriptions_step.ViewOut._make(client.predict(api_name="/descriptions_view"))
    assert "30 descriptions" in view.summary and len(view.table["data"]) == 10
    added = descriptions_step.AddOut._make(
        client.predict("cat", "a small furry animal with whiskers", api_name="/descriptions_add")
    )
    assert added.new_text == ""
    rows = [r for r in added.table["data"] if r[3] == "a small furry animal with whiskers"]
    assert rows and rows[0][2] == "user"
    first = added.table["data"][0][0]
    view = descriptions_step.ViewOut._make(
        client.predict("cat", first, "a cat sitting on a sofa", api_name="/descriptions_edit")
    )
    assert any(r[3] == "a cat sitting on a sofa" and "edited" in r[2] for r in view.table["data"])
    view = descriptions_step.ViewOut._make(client.predict("cat", first, api_name="/descriptions_toggle"))
    assert next(r for r in view.table["data"] if r[0] == first)[1] == "✗"
    assert "Click a sentence" in call_error(client, "cat", 0, api_name="/descriptions_toggle")
    exported = client.predict(api_name="/descriptions_export")
    assert Path(exported).suffix == ".json"

    # --- features and zero-shot -----------------------------------------------------------------------------
    assert "Compute CLIP features first" in call_error(client, "simple", "both", "auto", api_name="/zeroshot_start")
    before = last_run_id(proj)
    client.predict("tiny-random", "tiny-random", "cpu", api_name="/features_start")
    run = wait_for_run(server, proj, "features", after=before, count=2)  # CLIP, then DINO
    assert run["status"] == "done" and run["method"] == "dino"
    before = last_run_id(proj)
    client.predict("photo", "both", "cpu", api_name="/zeroshot_start")
    assert wait_for_run(server, proj, "label", after=before)["status"] == "done"

    from labeler.ui.steps.pseudolabels import GalleryOut, RefreshOut, ReviewOut

    out = shown(RefreshOut, hidden=REVIEW_HIDDEN, values=client.predict(api_name="/review_refresh"))
    feat_text, zs_text, counts, hist, acc, confusion = (
        out.features,
        out.zeroshot,
        out.counts,
        out.hist,
        out.accuracy,
        out.confusion,
    )
    assert "clip:tiny-random:none" in feat_text and "13 of 13" in feat_text
    assert "Pseudo-labels from run" in zs_text
    assert sum(r[1] for r in counts["data"]) == 13
    hist = hist["value"] if "value" in hist else hist
    assert sum(r[2] for r in hist["data"]) == 13  # histogram: bin, low, images
    assert "Accuracy vs. folder names" in acc and "<table>" in confusion

    from labeler.project import Project

    project = Project(proj)
    ids = [im["id"] for im in project.images()]
    project.close()
    assert "Select images first" in call_error(client, "all images", 0.5, api_name="/review_accept")
    picked = shown(
        GalleryOut,
        hidden=REVIEW_HIDDEN,
        values=client.predict("all images", 0.5, ",".join(map(str, ids[:4])), api_name="/review_select_ids"),
    )
    items = picked.gallery["value"] if isinstance(picked.gallery, dict) else picked.gallery
    assert "4 selected" in picked.selection_text and len(items) == 13
    assert sum(item["caption"].startswith("✓") for item in items) == 4
    out = shown(ReviewOut, hidden=REVIEW_HIDDEN, values=client.predict("all images", 0.5, api_name="/review_accept"))
    assert sum(r[2] for r in out.counts["data"]) == 4  # reviewed column
    client.predict("all images", 0.5, str(ids[5]), api_name="/review_select_ids")
    assert "Pick the class" in call_error(client, "all images", 0.5, None, api_name="/review_relabel")
    client.predict("all images", 0.5, "ship", api_name="/review_relabel")
    client.predict("all images", 0.5, str(ids[6]), api_name="/review_select_ids")
    out = shown(ReviewOut, hidden=REVIEW_HIDDEN, values=client.predict("all images", 0.5, api_name="/review_unsure"))
    view_update = out.view
    assert any(c[1] == "needs review" for c in view_update["choices"])

    # --- train and explore ----------------------------------------------------------------------------------
    from labeler.ui.steps.train import TrainView

    status = shown(TrainView, client.predict(api_name="/train_view"), ("curve_row",)).status  # no layout row
    assert "training run" in status or "No training method" in status
    from labeler.ui.steps.explore import ShownApi, ViewApi

    view = ViewApi._make(client.predict(api_name="/explore_view"))
    assert "No clusters yet" in view.status
    before = last_run_id(proj)
    client.predict("clip", 3, api_name="/explore_cluster")
    assert wait_for_run(server, proj, "cluster", after=before)["status"] == "done"
    view = ViewApi._make(client.predict(api_name="/explore_view"))
    table = view.table["value"] if "value" in view.table else view.table
    assert "3 clusters" in view.status and sum(r[1] for r in table["data"]) == 13
    found = ShownApi._make(client.predict("a photo of a ship", api_name="/explore_search"))
    assert "Best matches" in found.info and len(found.gallery["value"]) == 13

    # --- export ---------------------------------------------------------------------------------------------
    out = export_step.ExportOut._make(client.predict("csv", api_name="/export_run"))
    assert "Wrote" in out.status and "13 images" in out.status
    path = out.download["value"] if isinstance(out.download, dict) else out.download
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 13
    by_source = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    assert len(by_source.get("accepted", [])) == 4
    assert [r["label"] for r in by_source["human"]] == ["ship"]
    table = out.preview["value"]
    assert table["headers"][:3] == ["path", "sha256", "label"] and len(table["data"]) == 10
    assert [r[0] for r in table["data"]] == [r["path"] for r in rows[:10]]
    out = export_step.ExportOut._make(client.predict("jsonl", api_name="/export_run"))
    assert "Wrote" in out.status and out.preview["value"]["data"]
    client.predict("imagefolder", api_name="/export_run")
    deadline = time.time() + 60
    while time.time() < deadline and not list((proj / "exports").glob("imagefolder-*.zip")):
        time.sleep(0.3)
    assert list((proj / "exports").glob("imagefolder-*.zip"))

    # --- jobs -----------------------------------------------------------------------------------------------
    polled = shown(jobs_panel.PollOut, client.predict(api_name="/jobs_poll"), POLL_HIDDEN)
    assert "No job running" in polled.live or polled.table is not None
