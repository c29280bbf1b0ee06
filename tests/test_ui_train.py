"""The Train step against the launched app: start, watch, cancel and resume a NoLA run; then the step in a browser.

One server (``python app.py`` on a free 127.0.0.1 port, own data dir and gradio cache) for the module. The
project — 16 generated images in 4 classes, tiny-random CLIP and DINO features, a zero-shot run — is made with
the library before the server starts. Through gradio_client: start NoLA with a tiny schedule, see the run's
progress and its loss/agreement curve, cancel it (status ``cancelled``), resume it from its checkpoint until
it finishes, and check that a new label run (method ``nola``) labels every image. In chromium (Playwright):
the device line, the planned methods greyed out with their reason, the method list, and the curve — with a
screenshot in ``tests/artifacts/``. The browser part skips without chromium.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from labeler.ui.steps.train import CurveOut, TrainView

from .browser import CHROMIUM, chromium, needs_chromium, new_page, open_project, shot
from .conftest import class_folders, shown, wait_until
from .test_ui_api import AppServer, api_client

pytest.importorskip("gradio_client")  # the API tests drive the server with it

CLASSES = ["cat", "dog", "ship", "truck"]
#: A schedule long enough to cancel mid-run (8 steps of 2 images an epoch, ~0.4 s) yet done in seconds.
#: Epochs of the browser test's run: enough that a cancel after 3 lands long before the end on a fast machine.
EPOCHS = 100
OPTIONS = {"epochs": 16, "batch_size": 2, "tokens": 2, "patience": 100, "align_epochs": 5, "device": "cpu"}


def _project(path: Path):
    from labeler.project import Project

    return Project(path)


def _runs(path: Path, kind: str | None = None) -> list[dict]:
    from labeler.jobs import list_runs

    p = _project(path)
    try:
        return list_runs(p, kind=kind)
    finally:
        p.close()


def _wait(cond, what: str, server: AppServer, timeout: float = 90.0):
    return wait_until(cond, what, timeout, logs=server.logs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(server, project folder): the labeled project exists before the app starts."""
    from labeler.cli import main

    tmp = tmp_path_factory.mktemp("ui_train")
    src = class_folders(tmp / "imgs", per_class=4, classes=CLASSES)
    proj = tmp / "data" / "cifar"
    quiet = ["--quiet"]
    assert main(["init", str(proj), "--classes", ",".join(CLASSES)]) == 0
    assert main(["import", str(proj), str(src), *quiet]) == 0
    assert main(["features", str(proj), "--clip", "tiny-random", "--dino", "tiny-random", *quiet]) == 0
    assert main(["label", str(proj), *quiet]) == 0
    server = AppServer(tmp / "data", tmp)
    yield server, proj
    server.stop()


@pytest.fixture(scope="module")
def client(setup, tmp_path_factory):
    server, _ = setup
    return api_client(server, tmp_path_factory.mktemp("dl"), "cifar")


def _curve_points(curve) -> list[dict]:
    """The LinePlot value gradio_client returns, as ``[{"step", "metric", "value"}]``."""
    value = curve.get("value", curve) if isinstance(curve, dict) else curve
    if value is None:
        return []
    if isinstance(value, dict) and "data" in value:
        cols = [c if isinstance(c, str) else c.get("name") for c in value.get("columns") or value.get("headers")]
        return [dict(zip(cols, row, strict=False)) for row in value["data"]]
    return list(value)


def test_train_start_watch_cancel_resume_and_relabel(client, setup):
    server, proj = setup
    assert "No training run yet" in _view(client).status

    # start: a NoLA run in the background
    zero_shot = max(r["id"] for r in _runs(proj, "label"))
    started = _train_out(client.predict("nola", json.dumps(OPTIONS), api_name="/train_start"))
    assert "Starting **nola**" in started.status
    run = _wait(lambda: next(iter(_runs(proj, "train")), None), "the train run row", server)
    run_id = run["id"]
    assert run["method"] == "nola" and run["params"]["epochs"] == 16 and run["params"]["batch_size"] == 2

    # watch: progress in the run list and the curve (loss, agreement) grows epoch by epoch while it runs
    def two_epochs():
        r = next(r for r in _runs(proj, "train") if r["id"] == run_id)
        return r if len(r["metrics"].get("epochs", [])) >= 2 else None

    _wait(two_epochs, "two epochs", server)
    live = _view(client)
    assert f"run {run_id} (nola) **running**" in live.status
    label = next(c[0] for c in live.run_pick["choices"] if c[1] == run_id)
    assert label.startswith(f"run {run_id} · nola · running") and label.endswith("%")
    points = _curve_points(CurveOut._make(client.predict(run_id, api_name="/train_curve")).curve)
    metrics = {p["metric"] for p in points}
    assert {"loss", "train_agreement", "teacher_agreement"} <= metrics, metrics
    assert sorted({p["step"] for p in points})[:2] == [1.0, 2.0]

    # cancel: the run stops after its current step, its finished epochs checkpointed
    client.predict(run_id, api_name="/train_cancel")
    cancelled = _wait(
        lambda: next((r for r in _runs(proj, "train") if r["id"] == run_id and r["status"] != "running"), None),
        "the cancelled run",
        server,
    )
    assert cancelled["status"] == "cancelled", cancelled
    done_epochs = len(cancelled["metrics"]["epochs"])
    assert 2 <= done_epochs < 16
    status = _view(client).status
    assert f"run {run_id} (nola) **cancelled**" in status and "Press **Resume**" in status
    assert "No training run is running" in _train_out(client.predict(run_id, api_name="/train_cancel")).status

    # resume: the same run continues from its checkpoint and finishes, then labels every image
    resumed = _train_out(client.predict("nola", run_id, api_name="/train_resume"))
    assert f"Resuming run {run_id}" in resumed.status
    finished = _wait(
        lambda: next(
            (r for r in _runs(proj, "train") if r["id"] == run_id and r["status"] not in ("running", "cancelled")),
            None,
        ),
        "the resumed run to finish",
        server,
    )
    assert finished["status"] == "done", finished
    m = finished["metrics"]
    assert m["resumed_from_epoch"] == done_epochs and [e["epoch"] for e in m["epochs"]] == list(range(1, 17))
    assert len(_runs(proj, "train")) == 1  # resumed, not a second run
    label_run = _wait(
        lambda: next((r for r in _runs(proj, "label") if r["id"] > zero_shot and r["status"] == "done"), None),
        "the label run of the trained model",
        server,
    )
    assert label_run["method"] == "nola" and label_run["metrics"]["n"] == 16
    assert label_run["metrics"]["train_run"] == run_id

    from labeler.labels import active_run, read_predictions

    p = _project(proj)
    try:
        assert active_run(p)["id"] == label_run["id"]
        ids, probs, classes = read_predictions(p, label_run["id"])
        assert len(ids) == 16 and probs.shape == (16, 4) and classes == CLASSES
    finally:
        p.close()
    done = _view(client)
    assert f"run {run_id} (nola) **done**" in done.status
    again = _train_out(client.predict("nola", run_id, api_name="/train_resume"))
    assert "no cancelled or interrupted run" in again.status

    # the outcome: the trained model's labels against the zero-shot labels they replaced, counted independently
    p = _project(proj)
    try:
        old_ids, old_probs, old_classes = read_predictions(p, zero_shot)
        new_ids, new_probs, new_classes = read_predictions(p, label_run["id"])
    finally:
        p.close()
    old_names = dict(zip(old_ids.tolist(), (old_classes[k] for k in old_probs.argmax(1)), strict=True))
    new_names = dict(zip(new_ids.tolist(), (new_classes[k] for k in new_probs.argmax(1)), strict=True))
    changed = sum(old_names[i] != new_names[i] for i in new_names)
    outcome = done.outcome
    assert f"**Run {run_id}'s labels** (label run {label_run['id']}): 16 images labeled" in outcome, outcome
    assert "**the active labels**" in outcome
    agree = f"{100 * (16 - changed) / 16:.0f}%"
    assert f"Compared with run {zero_shot} (zeroshot): **{agree} agree** on 16 images, {changed} changed." in outcome
    assert ("Most common changes: " in outcome) == (changed > 0)
    shown = CurveOut._make(client.predict(run_id, api_name="/train_curve"))  # picking the run shows the same
    assert shown.outcome == outcome


def _train_out(res):
    """An API result by name: gradio_client leaves out layout outputs (the plot's row, ``curve_row``)."""
    return shown(TrainView, res, ("curve_row",))


def _view(client) -> TrainView:
    return _train_out(client.predict(api_name="/train_view"))


def test_bad_options_say_what_to_fix(client):
    def status(*args):
        return _train_out(client.predict(*args, api_name="/train_start")).status

    assert "not valid JSON" in status("nola", "{epochs: 3")
    assert "epochs" in status("nola", json.dumps({"epochs": 0}))
    assert "Pick a method" in status(None, "{}")


@needs_chromium
@pytest.mark.timeout(600)
def test_train_step_in_the_browser(setup, client):
    """The device line, every method offered, and a run started, cancelled and resumed with the buttons."""
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    server, proj = setup
    with chromium() as browser:
        page, errors = new_page(browser)
        open_project(page, "cifar", server.url)
        page.click("#step-6-button")
        expect(page.locator("#train-device")).to_contain_text("Device: cpu")
        disabled = page.locator("#train-methods .lb-disabled")
        expect(disabled).to_have_count(0)  # every method is built
        ready = page.locator("#train-methods .lb-method:not(.lb-disabled)")
        expect(ready).to_have_count(
            6
        )  # cdul, cdul-init, lafter, latteclip, nola, zeroshot (cdul-init, zeroshot: step 5)
        page.locator("#train-method input").first.click()
        options = [o.get_attribute("aria-label") for o in page.locator('li[role="option"]').all()]
        assert options == ["cdul", "lafter", "latteclip", "nola"], options
        page.keyboard.press("Escape")
        assert page.locator("#train-method input").first.input_value() == "nola"

        # nothing to cancel: the message as the status, the rest of the step as it was (no "Error" pills)
        status = page.locator("#train-status")
        page.click("#train-cancel")
        expect(status).to_contain_text("No training run is running")
        for elem in (
            "#train-form",
            "#train-run",
            "#train-curve",
            "#train-outcome",
        ):  # the picker and plot may be hidden
            expect(page.locator(elem, has_text="Error")).to_have_count(0)
        expect(page.locator("#train-opt-epochs input")).to_be_visible()

        # the options form: the method's fields, the rest under "Advanced"; a run driven by the buttons
        page.get_by_text("Advanced options").click()
        for name, value in {**OPTIONS, "epochs": EPOCHS}.items():
            page.locator(f"#train-opt-{name}").locator("input, textarea").first.fill(str(value))
        shot(page, "ui-6-train-form")
        page.click("#train-start")
        expect(status).to_contain_text(re.compile(r"\(nola\) running"), timeout=30_000)
        expect(page.locator("#train-run input")).to_have_value(re.compile(r"nola · running"), timeout=30_000)
        expect(status).to_contain_text(re.compile(rf"epoch \d+/{EPOCHS}"), timeout=30_000)  # timer-refreshed
        # cancel once 3 epochs are checkpointed, read from the database: the status is refreshed every 2 s, and a
        # quiet machine ran all of a 36-epoch run between two refreshes (the test then had nothing to cancel)
        _wait(lambda: len(_runs(proj, "train")[0]["metrics"].get("epochs", [])) >= 3, "3 epochs", server)
        page.click("#train-cancel")
        expect(status).to_contain_text(re.compile(r"\(nola\) cancelled"), timeout=30_000)
        curve = page.locator("#train-curve")
        expect(curve).to_contain_text("teacher_agreement", timeout=20_000)  # the curve of the epochs run so far
        shot(page, "ui-6-train-live")
        expect(status).to_contain_text("Press Resume")
        page.click("#train-resume")
        # 97 epochs of ~0.4 s on a quiet CPU; a loaded machine can take four times that (a condition, not a sleep)
        expect(status).to_contain_text(re.compile(r"\(nola\) done 100%"), timeout=300_000)
        expect(page.locator("#train-run input")).to_have_value(re.compile(r"nola · done 100%"))
        run = _runs(proj, "train")[0]  # the same run, continued from its checkpoint
        assert run["metrics"]["resumed_from_epoch"] >= 3 and len(run["metrics"]["epochs"]) == EPOCHS
        expect(curve).to_contain_text("teacher_agreement", timeout=20_000)
        outcome = page.locator("#train-outcome")  # the trained model's labels against the ones they replaced
        expect(outcome).to_contain_text("the active labels", timeout=30_000)
        expect(outcome).to_contain_text(re.compile(r"Compared with run \d+ \(\w+\): \d+% agree on \d+ images"))
        shot(page, "ui-6-train-run")
        # gradio 6.31's LinePlot re-measures its container (offsetWidth) after an update; when the timer's update
        # lands while the row re-renders the element is gone for a moment and the frontend throws. The chart is
        # drawn right after (checked above), so only that frontend race is let through; any other page error fails.
        assert not [e for e in errors if "reading 'offsetWidth'" not in e], errors


def test_descriptions_count_requests_and_confirm_large_runs(client, setup):
    """Step 4 on the same server: the dry-run count before a remote backend is asked, and a confirm step above 500."""
    server, proj = setup
    endpoint = ("openai", "gpt-4o-mini", "http://127.0.0.1:9/v1", "sk-test", "", 50)
    status = client.predict(*endpoint, api_name="/descriptions_count")
    assert "**48 new requests** to the endpoint (48 in all for 4 classes, 0 answered from the cache)" in status
    assert "Nothing was sent" in status

    # a large run: 50 classes × 12 requests each waits for a confirmation, and sends nothing before it
    many = ", ".join(f"class {k}" for k in range(50))
    client.predict("many", False, many, api_name="/project_create")
    big = server.data_dir / "many"
    status = client.predict(*endpoint, api_name="/descriptions_generate")  # (the button is not an API output)
    assert "**600 new requests**" in status and "large run" in status
    assert _runs(big, "describe") == []
    status = client.predict(*endpoint, api_name="/descriptions_generate_confirmed")
    assert status.startswith("Generating with **openai**") and "600 new requests" in status
    run = _wait(lambda: next(iter(_runs(big, "describe")), None), "the describe run", server)
    assert run["kind"] == "describe"
    from labeler.jobs import request_cancel

    p = _project(big)
    try:
        request_cancel(p, run["id"])
    finally:
        p.close()
    # let that run end (cancelled, or failed: nothing listens on port 9) before a browser opens the project, so
    # its end does not land in the step's status while the browser test reads it
    _wait(lambda: _runs(big, "describe")[0]["status"] not in ("running", "pending"), "the describe run to end", server)
    client.predict("cifar", api_name="/project_open")
    if CHROMIUM.exists():
        _confirm_in_the_browser(server)


def _confirm_in_the_browser(server):
    """In chromium: Generate shows the count and a red "Send 600 requests" button instead of starting."""
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    with chromium() as browser:
        page, _ = new_page(browser)
        open_project(page, "many", server.url)
        expect(page.locator("#lb-project")).to_contain_text("50 classes")
        page.click("#step-3-button")
        backend = page.locator("#desc-backend input").first
        backend.click()
        page.locator('li[role="option"]', has_text="openai").first.click()
        # the backend change shows the endpoint box and clears the model box: fill it only after that landed
        expect(page.get_by_label("Endpoint base URL")).to_be_visible()
        page.locator("#desc-model").locator("textarea, input").first.fill("gpt-4o-mini")
        page.get_by_label("Endpoint base URL").fill("http://127.0.0.1:9/v1")
        page.click("#desc-count")
        expect(page.locator("#desc-status")).to_contain_text("600 new requests")
        expect(page.locator("#desc-confirm")).to_be_hidden()
        page.click("#desc-generate")
        expect(page.locator("#desc-status")).to_contain_text("large run")
        expect(page.locator("#desc-confirm")).to_be_visible()
        expect(page.locator("#desc-confirm")).to_have_text("Send 600 requests")
        shot(page, "ui-4-descriptions-confirm")
        page.locator("#desc-domain, #desc-model").locator("textarea, input").first.fill("gpt-4o")
        expect(page.locator("#desc-confirm")).to_be_hidden()  # a changed setting needs a new count


# --- in process, by name: the handlers without a server ---------------------------------------------------------
def _ctx(tmp_path: Path):
    import gradio as gr

    from labeler.ui.common import Ctx

    return Ctx(data_dir=tmp_path, local_mode=True, project=gr.State(""), finished=gr.State(""))


def test_nothing_to_cancel_or_resume_says_so_and_leaves_the_step_alone(tmp_path):
    """Cancel with nothing running, Resume with nothing to resume, Start with options to fix: the message as the
    status (and a toast), every other output skipped — no "Error" on the editor, runs, plot and outcome."""
    import gradio as gr

    from labeler.cli import main
    from labeler.ui.steps import train

    proj = tmp_path / "p"
    assert main(["init", str(proj), "--classes", "cat,dog"]) == 0
    ctx = _ctx(tmp_path)
    cases = [
        (train.cancel(ctx, str(proj), None), "No training run is running"),
        (train.resume(ctx, str(proj), "nola", None), "no cancelled or interrupted run"),
        (train.start(ctx, str(proj), "nola", "{epochs: 3"), "not valid JSON"),
        (train.start(ctx, str(proj), "nola", json.dumps({"epochs": 0})), "epochs"),
        (train.start(ctx, str(proj), None, "{}"), "Pick a method"),
    ]
    for out, message in cases:
        assert message in out.status, out.status
        others = out._replace(status=gr.skip())
        assert all(v == gr.skip() for v in others), others


def test_options_form_round_trips_to_the_run_and_one_epoch_plots_as_dots(tmp_path):
    """The form starts at the method's defaults (its JSON is method_defaults); typed fields reach the run's
    recorded params, empty ones become what their line says; a one-epoch curve is drawn as dots on a sane axis."""
    from labeler.jobs import list_runs
    from labeler.methods import get_method, method_defaults
    from labeler.project import Project
    from labeler.ui.steps import train
    from labeler.ui.steps.train_options import device_defaults

    from .conftest import tiny_project

    form = train.pick_method("nola")
    values = [getattr(form, f.name)["value"] for f in train.FIELDS]
    assert json.loads(form.params) == method_defaults("nola")
    assert get_method("nola").params_from(json.loads(form.params)) == get_method("nola").Params()
    epochs = next(getattr(form, f.name) for f in train.FIELDS if f.name == "epochs")
    here = device_defaults("nola", "labeler")
    assert epochs["value"] == "" and f"empty: {here['epochs']} here" in epochs["info"]
    assert not next(getattr(form, f.name) for f in train.FIELDS if f.name == "text_steps")["visible"]  # lafter's

    typed = {"epochs": 1, "batch_size": 8, "tokens": 4, "lr": 0.01, "patience": 2, "precision": "fp32"}
    typed |= {"align_epochs": 5, "device": "cpu", "text_steps": 7}  # text_steps: lafter's, hidden, ignored
    sent = {**typed, "epochs": "1", "lr": "0.01"}  # an option the recipe fills is a text field
    values = [sent.get(f.name, v) for f, v in zip(train.FIELDS, values, strict=True)]
    text = train.form_json("nola", "labeler", *values)
    assert "text_steps" not in json.loads(text)

    proj = tiny_project(tmp_path / "p", class_folders(tmp_path / "imgs", per_class=2, classes=CLASSES), CLASSES, True)
    ctx = _ctx(tmp_path)
    out = train.start(ctx, str(proj), "nola", text)
    assert "Starting **nola**" in out.status, out.status
    p = Project(proj)
    try:
        run = wait_until(
            lambda: next((r for r in list_runs(p, kind="train") if r["status"] != "running"), None), "the run", 120
        )
        assert run["status"] == "done", run
        for name, value in typed.items():
            if name != "text_steps":
                assert run["params"][name] == value, name
        for name in ("schedule", "weight_decay", "holdout"):  # left as they were: what the form's lines said
            assert run["params"][name] == here[name], name
        curve = train.curve_update(p, run["id"])
    finally:
        p.close()
    assert curve.visible and curve.x_lim == [0.0, 2.0]  # one epoch: an axis around it, not "1.000000"
    assert curve.value["mark"] == "point" and len(curve.value["data"]) >= 2  # dots, one per metric
