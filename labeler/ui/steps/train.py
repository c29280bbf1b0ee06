"""Step 7 · Train: pick a method, see the device, start / cancel / resume a run, watch its curves.

Methods come from :func:`labeler.methods.list_methods`; a method that is not implemented yet is
shown greyed out with its one-line reason and cannot be picked. A run goes through the library
(``get_method(name).run(project, params, resume=None)`` to start, ``run(project, None, resume=RUN)``
to continue a cancelled or interrupted ``train`` run — :class:`labeler.methods.trainable.TrainableMethod`)
in a background thread; its progress and metrics live in its ``runs`` row, so closing the tab does
not stop it.

The live plot reads :func:`labeler.run_curve`: the run's ``metrics["epochs"]`` (one row per
epoch: ``loss``, ``train_agreement``, ``teacher_agreement``, ``val_accuracy``…).
"""

from __future__ import annotations

import html
import inspect
import json
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from ...device import resolve_device
from ...errors import InvalidInputError, LabelerError
from ...jobs import background_tasks, list_runs, request_cancel, run_in_background, wait_for_new_run
from ...methods import METHODS, get_method, list_methods, method_defaults
from ...project import Project
from ...train.outcome import run_curve, train_outcome
from ...train.recipes import RECIPE_NAMES as RECIPES
from ..common import (
    NO_PROJECT,
    Ctx,
    bind,
    empty_state,
    error_text,
    finished_task,
    guard,
    md_escape,
    pct,
    ui_error,
    wire,
)
from .train_options import (
    CHOICES,
    MAIN,
    Field,
    all_fields,
    device_defaults,
    field_info,
    form_value,
    method_fields,
    options_json,
)

#: Methods that need no training run and live in step 5.
NOT_TRAINED_HERE = {"zeroshot", "cdul-init"}


def _trainable_class():
    try:
        from ...methods.trainable import TrainableMethod
    except ImportError:
        return None
    return TrainableMethod


def _trainable() -> list[dict]:
    """Methods shown in this step: the trainable ones (planned ones included, as not available)."""
    base = _trainable_class()
    out = []
    for m in list_methods():
        if m["name"] in NOT_TRAINED_HERE:
            continue
        if m["available"] and base is not None and not issubclass(METHODS.get(m["name"]), base):
            continue
        out.append(m)
    return out


def _takes_resume(method) -> bool:
    return "resume" in inspect.signature(method.run).parameters


def _methods_html() -> str:
    cards = []
    for m in list_methods():
        state = "ready" if m["available"] else "not available yet"
        cls = "lb-method" + ("" if m["available"] else " lb-disabled")
        where = " — runs in step 5" if m["name"] in NOT_TRAINED_HERE else ""
        cards.append(
            f"<div class='{cls}' aria-disabled='{str(not m['available']).lower()}'><b>{html.escape(m['name'])}"
            f"</b> <span class='lb-badge'>{state}</span><br><small>{html.escape(m['summary'])}{where}"
            "</small></div>"
        )
    return "<div class='lb-methods'>" + "".join(cards) + "</div>"


def _curve_frame(points: list[dict]) -> pd.DataFrame:
    """Curve points as a typed frame (untyped empty frames turn the plot's axes categorical)."""
    return pd.DataFrame(
        {
            "step": pd.Series([p["step"] for p in points], dtype=float),
            "metric": pd.Series([p["metric"] for p in points], dtype=str),
            "value": pd.Series([p["value"] for p in points], dtype=float),
        }
    )


def _curve_plot(points: list[dict]) -> gr.LinePlot:
    """The plot update for curve points: hidden while there are none.

    gradio 6.31's plot fixes its series (colour domain) when it draws the chart; a new value alone only
    swaps the data, so a run's curves drawn into a chart first drawn empty would stay invisible. A hidden
    plot is drawn afresh when it shows again.
    """
    frame = _curve_frame(points)
    steps = set(frame["step"])
    if len(steps) == 1:  # one epoch: dots (a line through one point draws nothing) on an axis around it
        (step,) = steps
        dots = gr.ScatterPlot(x="step", y="value", color="metric").postprocess(frame).model_dump()
        return gr.LinePlot(value=dots, visible=True, x_lim=[step - 1, step + 1])
    return gr.LinePlot(value=frame, visible=bool(points), x_lim=None)


def _device_text() -> str:
    dev = resolve_device("auto")
    extra = ""
    if dev.type == "cuda":
        import torch

        extra = f" ({torch.cuda.get_device_name(dev)})"
    elif dev.type == "cpu":
        extra = " — training on a CPU is slow; fine for tiny models and trying the flow"
    return f"Device: **{dev}**{extra}"


def _defaults(name: str | None) -> str:
    """A method's default options as JSON text."""
    return json.dumps(method_defaults(name), indent=2) if name else ""


def _run_rows(project: Project) -> list[dict]:
    """The project's training runs, newest first."""
    return list_runs(project, kind="train")


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _before_after(old: float | None, new: float | None, fmt=_num) -> str:
    """``old → **new**`` (``**new**`` alone without an old value)."""
    return (f"{fmt(old)} → " if old is not None else "") + f"**{fmt(new)}**"


def _multi_label_lines(out: dict, comp: dict | None) -> list[str]:
    """A multi-label run's outcome: label-set changes, mAP and F1 before → after, cardinality, pseudo-labels."""
    ml = out["multi_label"]
    lines = []
    if comp and ml["n_common"]:
        before = f"run {comp['old_run']}" + (f" ({md_escape(out['old_method'])})" if out["old_method"] else "")
        changes = [f"+{md_escape(a['class'])} on {a['n']}" for a in ml["added"][:5]]
        changes += [f"−{md_escape(r['class'])} on {r['n']}" for r in ml["removed"][:5]]
        if changes:
            changes[0] += " images"
        lines.append(
            f"Compared with {before}: the label sets of **{ml['changed']} of {ml['n_common']} images** changed"
            + (f" ({', '.join(changes)})." if changes else ".")
        )
    old, new = ml["old"] or {}, ml["new"]
    if new is None:
        lines.append(
            "mAP: no ground truth sets to score against (import a CSV/JSON file of image → labels, or images in "
            "folders named like cat+dog)."
        )
    else:
        lines.append(
            f"mAP (macro) vs. the ground truth sets: {_before_after(old.get('map'), new['map'])} on {new['n']} "
            f"images; F1 at the thresholds: macro {_before_after(old.get('macro_f1'), new['macro_f1'])}, "
            f"micro {_before_after(old.get('micro_f1'), new['micro_f1'])}."
        )
    card = ml["cardinality"]
    if card["new"] is not None:
        lines.append(f"Labels per image: {_before_after(card['old'], card['new'], lambda x: f'{x:.2f}')}.")
    if ml.get("pseudo_labels"):
        lines.append(f"Pseudo-labels: {md_escape(ml['pseudo_labels'])}.")
    return lines


def outcome_md(project: Project, run: dict | None) -> str:
    """What a run's trained model did to the labels, compared with the labels that were active before."""
    if run is None:
        return ""
    if run["status"] == "running":
        return "<span class='lb-note'>When the run ends, its model labels every image; the result shows here.</span>"
    out = train_outcome(project, run["id"])
    if out is None:
        return (
            f"<span class='lb-note'>Run {run['id']} has not labeled the images (it did not finish): "
            "press Resume to complete it.</span>"
            if run["status"] != "done"
            else ""
        )
    metrics = run.get("metrics") or {}
    warnings = [*(metrics.get("setup") or {}).get("warnings", []), *metrics.get("warnings", [])]
    lines = [f"⚠️ **Warning:** {md_escape(w)}" for w in warnings]
    lines += [
        f"**Run {run['id']}'s labels** (label run {out['label_run']}): {out['n']} images labeled by the trained model"
        + (" (the untrained model: no trained epoch did better)" if metrics.get("best_epoch") == 0 else "")
        + (f", {out['failed']} unreadable" if out["failed"] else "")
        + (" — **the active labels** (step 5 reviews them, step 9 exports them)." if out["active"] else ".")
    ]
    recipe = str((run.get("params") or {}).get("recipe", "labeler"))
    lines.append(
        f"Recipe: **{md_escape(recipe)}** ("
        + ("the official code's settings" if recipe == "paper" else "Labeler's settings")
        + "; docs/methods.md lists the differences)."
    )
    comp = out["comparison"]
    if out.get("multi_label") is not None:
        return "  \n".join(lines + _multi_label_lines(out, comp))
    if comp:
        before = f"run {comp['old_run']}" + (f" ({md_escape(out['old_method'])})" if out["old_method"] else "")
        lines.append(
            f"Compared with {before}: **{pct(comp['agreement'])} agree** on {comp['n_common']} images, "
            f"{comp['changed']} changed."
        )
        acc = comp.get("accuracy") or {}
        if acc.get("old") is not None and acc.get("new") is not None:
            lines.append(f"Accuracy vs. folder names: {pct(acc['old'])} → **{pct(acc['new'])}**.")
        moves = comp.get("transitions") or []
        if moves:
            lines.append(
                "Most common changes: "
                + ", ".join(f"{md_escape(t['from'])} → {md_escape(t['to'])} ({t['n']})" for t in moves[:5])
                + "."
            )
    return "  \n".join(lines)


class TrainView(NamedTuple):
    """What the step shows (refresh, start, cancel, resume, the timer, a finished run)."""

    params: Any  # the options editor: always gr.skip() here (the options keep what the user typed)
    status: str
    run_pick: Any  # gr.Dropdown update: the runs, the one shown
    curve: Any  # gr.LinePlot update
    timer: Any  # gr.Timer update: active while a run is live
    curve_row: Any  # gr.Row update: shown once there is a run
    outcome: str


class CurveOut(NamedTuple):
    curve: Any
    outcome: str


def ready_methods() -> list[str]:
    """The trainable methods that can be picked (implemented ones)."""
    return [m["name"] for m in _trainable() if m["available"]]


def run_choices(project: Project) -> list[tuple[str, int]]:
    """The run picker's ``(label, run id)`` choices, newest first."""
    return [
        (f"run {r['id']} · {r['method']} · {r['status']} {pct(r['progress'])}", r["id"]) for r in _run_rows(project)
    ]


def curve_update(project: Project, run_id: int | None) -> gr.LinePlot:
    """The plot update for a run's curves (hidden without a run)."""
    return _curve_plot(run_curve(project, run_id) if run_id else [])


def _status_text(runs: list[dict], ready: bool) -> str:
    """The status line: what to do first, or the latest run's state."""
    if not ready:
        return empty_state(
            "No training method is implemented yet (see the list on the left). The zero-shot "
            "pseudo-labels of step 5 are the result for now: review them and export (step 9)."
        )
    if not runs:
        return empty_state(
            "No training run yet. Pick a method, adjust its options, press <b>Start</b>. "
            "It uses the features and pseudo-labels of step 5."
        )
    r = runs[0]
    stopped = r["status"] in ("cancelled", "interrupted")
    return (
        f"Latest: run {r['id']} ({r['method']}) **{r['status']}** {pct(r['progress'])}"
        + (f" — {md_escape(r['message'])}" if r.get("message") else "")
        + (f"  \n{error_text(r['error'])}" if r.get("error") and not stopped else "")
        + ("  \nPress **Resume** to continue it from its last finished epoch." if stopped else "")
    )


def view(project: Project | None, run_id: int | None = None) -> TrainView:
    """The step for ``project`` (None: no project open), showing run ``run_id`` (default: the newest)."""
    if project is None:
        return TrainView(
            params=gr.skip(),
            status=empty_state(NO_PROJECT),
            run_pick=gr.Dropdown(choices=[], value=None),
            curve=_curve_plot([]),
            timer=gr.Timer(active=False),
            curve_row=gr.Row(visible=False),
            outcome="",
        )
    runs = _run_rows(project)
    ids = [r["id"] for r in runs]
    run_id = run_id if run_id in ids else (ids[0] if ids else None)
    live = any(r["status"] == "running" for r in runs) or any(
        t.kind == "train" and t.running for t in background_tasks(str(project.root))
    )
    return TrainView(
        params=gr.skip(),
        status=_status_text(runs, bool(ready_methods())),
        run_pick=gr.Dropdown(choices=run_choices(project), value=run_id),
        curve=curve_update(project, run_id),
        timer=gr.Timer(active=live),
        curve_row=gr.Row(visible=bool(runs)),
        outcome=outcome_md(project, next((r for r in runs if r["id"] == run_id), None)),
    )


def refused(message: str) -> TrainView:
    """A request that cannot be done (nothing to cancel or resume, options to fix): the message as a warning
    toast and as the status, every other output left as it is — a raised gr.Error would mark all of them
    (the options editor, the run list, the plot, the outcome) as failed and empty the editor."""
    gr.Warning(message)
    return TrainView(*(gr.skip(),) * len(TrainView._fields))._replace(status=f"⚠️ {md_escape(message)}")


def _options(name: str, text: str | None):
    """The method and its params from the options text; gr.Error saying what to fix."""
    method = get_method(name)
    try:
        values = json.loads(text or "{}")
    except ValueError as exc:
        raise gr.Error(f"The options are not valid JSON ({exc}): fix them or pick the method again to reset.") from None
    if not isinstance(values, dict):
        raise gr.Error('The options must be a JSON object, like {"epochs": 10}.')
    return method, method.params_from(values)


def _start(project: Project, name: str, method, p, resume: int | None = None):
    """Run ``method`` on the project in a background task (a fresh Project in its thread)."""
    root = str(project.root)

    def work():
        proj = Project(root)
        try:
            if _takes_resume(method):
                return method.run(proj, p, resume=resume)
            return method.run(proj, p)
        finally:
            proj.close()

    return run_in_background(root, "train", work, label=f"train {name}")


@guard
def refresh(ctx: Ctx, key: str) -> TrainView:
    return view(ctx.open(key, required=False))  # the options keep what the user typed


#: The options form: one field per option of any trainable method (a method shows its own).
FIELDS: list[Field] = all_fields(ready_methods())

#: The form's outputs: the JSON export, the recipe, then one update per field of :data:`FIELDS`.
FormOut = NamedTuple("FormOut", [("params", Any), ("recipe", Any), *((f.name, Any) for f in FIELDS)])


@guard
def pick_method(name: str | None) -> FormOut:
    """A picked method resets the form to its defaults (its own fields shown) and the recipe to ours."""
    recipe = "labeler"
    own = {f.name: f for f in method_fields(name)} if name else {}
    resolved = device_defaults(name, recipe) if name else {}
    values = [form_value(own.get(f.name, f)) for f in FIELDS]
    fields = {
        f.name: gr.update(value=v, visible=f.name in own, info=field_info(own.get(f.name, f), resolved))
        for f, v in zip(FIELDS, values, strict=True)
    }
    return FormOut(params=options_json(name, recipe, FIELDS, values), recipe=recipe, **fields)


@guard
def pick_recipe(name: str | None, recipe: str, *values) -> FormOut:
    """A picked recipe: the options it fills say what they become now; the typed values stay."""
    resolved = device_defaults(name, recipe) if name else {}
    fields = {f.name: gr.update(info=field_info(f, resolved)) for f in FIELDS}
    return FormOut(params=options_json(name, recipe, FIELDS, list(values)), recipe=gr.skip(), **fields)


@guard
def form_json(name: str | None, recipe: str, *values) -> str:
    """The form as the JSON options Start sends (the export below the form)."""
    return options_json(name, recipe, FIELDS, list(values))


def _field(f: Field, visible: bool, info: str, value: Any):
    """The component of one option."""
    kw = {"label": f.name, "info": info, "visible": visible, "elem_id": f"train-opt-{f.name}", "value": value}
    if f.kind == "bool":
        return gr.Checkbox(**kw)
    if f.kind in ("int", "float") and f.default is not None:
        return gr.Number(precision=0 if f.kind == "int" else None, **kw)
    if f.kind == "choice":
        unset = [("(default)", "")] if f.default is None else []
        return gr.Dropdown([*unset, *((c, c) for c in CHOICES[f.name])], **kw)
    return gr.Textbox(max_lines=1, placeholder="(default)" if f.default is None else None, **kw)


def form(first: str | None) -> dict:
    """The options form for method ``first``: the main fields, the rest under "Advanced" (components by name)."""
    own = {f.name: f for f in method_fields(first)} if first else {}
    # The lines say what an empty field becomes on this device once the page loads (build() wires that):
    # resolving the device imports torch, which the app's first page does without.
    resolved: dict = {}
    out = {}
    with gr.Row(elem_id="train-form"):
        for f in (f for f in FIELDS if f.name in MAIN):
            g = own.get(f.name, f)
            out[f.name] = _field(f, f.name in own, field_info(g, resolved), form_value(g))
    with gr.Accordion("Advanced options", open=False, elem_id="train-advanced"):
        with gr.Row():
            for f in (f for f in FIELDS if f.name not in MAIN):
                g = own.get(f.name, f)
                out[f.name] = _field(f, f.name in own, field_info(g, resolved), form_value(g))
    return out


@guard
def start(ctx: Ctx, key: str, name: str | None, text: str | None) -> TrainView:
    """Start a run of method ``name`` with the options ``text`` (JSON); the view follows the new run."""
    project = ctx.open(key)
    if not name:
        return refused("Pick a method first (only implemented methods can be picked).")
    try:
        method, p = _options(name, text)
        if getattr(p, "backbone_weights", None) and not ctx.local_mode:
            return refused(
                "On a public Space the app reads no file outside the project: leave backbone_weights empty "
                "(the torch hub cache's ResNet-101 weights are used)."
            )
        if hasattr(method, "resolve"):
            method.resolve(project, p)  # bad options and missing features fail here, not in the background
    except gr.Error as exc:
        return refused(exc.message)
    except LabelerError as exc:
        return refused(ui_error(str(exc), exc.hint))
    before = max((r["id"] for r in _run_rows(project)), default=0)
    task = _start(project, name, method, p)
    new_id = wait_for_new_run(project, "train", before, still_starting=lambda: task.running, timeout=10)
    return view(project, new_id)._replace(
        status=f"Starting **{name}**… progress is in the jobs panel; the plot below follows the run.",
        timer=gr.Timer(active=True),
    )


@guard
def cancel(ctx: Ctx, key: str, run_id: int | None) -> TrainView:
    """Ask the picked running run (else the newest running one) to stop after its current step."""
    project = ctx.open(key)
    running = [r for r in _run_rows(project) if r["status"] == "running"]
    if not running:
        return refused("No training run is running.")
    target = next((r for r in running if r["id"] == run_id), running[0])
    request_cancel(project, target["id"])
    gr.Info(f"Asked run {target['id']} to stop after its current step.")
    return view(project, target["id"])


def _resume_target(project: Project, name: str | None, run_id: int | None) -> dict | None:
    """The picked stopped run, else the newest stopped run of method ``name``."""
    runs = [r for r in _run_rows(project) if r["status"] in ("cancelled", "interrupted", "failed")]
    return next((r for r in runs if r["id"] == run_id), None) or next((r for r in runs if r["method"] == name), None)


@guard
def resume(ctx: Ctx, key: str, name: str | None, run_id: int | None) -> TrainView:
    """Start the method again with the options of a cancelled or interrupted run (it continues from its
    last checkpoint when the method supports a ``resume`` option)."""
    project = ctx.open(key)
    target = _resume_target(project, name, run_id)
    if target is None:
        return refused("There is no cancelled or interrupted run to resume: press Start for a new one.")
    for task in background_tasks(str(project.root)):  # a cancelled run's thread may still be unwinding
        if task.kind == "train" and task.running:
            task.wait(10)
    method = get_method(target["method"])
    if _takes_resume(method):
        _start(project, target["method"], method, None, resume=int(target["id"]))
    else:  # a method without checkpoints: start again with the run's options
        known = set(method_defaults(target["method"]))
        try:
            p = method.params_from({k: v for k, v in target["params"].items() if k in known})
        except InvalidInputError as exc:
            return refused(f"Run {target['id']}'s options no longer fit the method ({exc}): start a new run.")
        _start(project, target["method"], method, p)
    return view(project, target["id"])._replace(
        status=f"Resuming run {target['id']} ({target['method']})… progress is in the jobs panel.",
        timer=gr.Timer(active=True),
    )


#: The only multi-label training method; the others learn one class per image.
MULTI_LABEL_METHODS = ("cdul",)


def method_choice(project: Project | None, current: str | None) -> Any:
    """The method picker for ``project``: a multi-label project gets cdul first and picked (the others are
    single-label); a single-label one keeps the built order and ``current`` unless it is cdul (then nola)."""
    ready = ready_methods()
    if project is None or not ready:
        return gr.skip()
    multi = [m for m in ready if m in MULTI_LABEL_METHODS]
    single = [m for m in ready if m not in MULTI_LABEL_METHODS]
    if project.multi_label:
        order = multi + single
        value = multi[0] if multi else current
        info = "a multi-label project: cdul learns label sets; " + ", ".join(single) + " are single-label"
    else:
        order = ready  # as built
        value = current if current in single else ("nola" if "nola" in single else (single or [current])[0])
        info = "a single-label project: " + ", ".join(multi) + " is for multi-label projects"
    return gr.Dropdown(choices=order, value=value, info=info)


@guard
def suit_method(ctx: Ctx, key: str, current: str | None) -> Any:
    """A project was opened: the method picker suits it (:func:`method_choice`)."""
    return method_choice(ctx.open(key, required=False), current)


@guard
def tick(ctx: Ctx, key: str, run_id: int | None) -> TrainView:
    return view(ctx.open(key, required=False), run_id)


@guard
def show_run(ctx: Ctx, key: str, run_id: int | None) -> CurveOut:
    """The picked run's curves and outcome."""
    project = ctx.open(key)
    run = next((r for r in _run_rows(project) if r["id"] == run_id), None)
    return CurveOut(curve=curve_update(project, run_id), outcome=outcome_md(project, run))


@guard
def finished(ctx: Ctx, key: str, marker: str | None, run_id: int | None) -> TrainView:
    """A background train task of this project ended: show it (a failure with its message)."""
    task = finished_task(key, marker, {"train"})
    if task is None:
        return TrainView(*(gr.skip(),) * len(TrainView._fields))
    out = view(ctx.open(key), run_id)
    if task.status == "failed":  # a cancelled run keeps the view's text: it says to press Resume
        out = out._replace(status=f"**Training failed:** {error_text(task.error, task.hint)}")
    return out


def build(ctx: Ctx) -> dict:
    ready = ready_methods()
    first = "nola" if "nola" in ready else (ready[0] if ready else None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            gr.Markdown("#### Methods")
            gr.HTML(_methods_html(), elem_id="train-methods")
            device_md = gr.Markdown("Device: …", elem_id="train-device")
            # on page load, not at build: resolving the device imports torch (seconds), which the first page skips
            ctx.demo.load(_device_text, None, device_md, api_visibility="private")
        with gr.Column(scale=3):
            method = gr.Dropdown(
                ready,
                value=first,
                label="Method",
                elem_id="train-method",
                interactive=bool(ready),
                info="only methods that are implemented can be picked",
            )
            recipe = gr.Dropdown(
                list(RECIPES),
                value="labeler",
                label="Recipe",
                elem_id="train-recipe",
                interactive=bool(ready),
                info="labeler: our settings · paper: the official code's (docs/methods.md lists every difference); "
                'sets the options\' "recipe", options given there override it',
            )
            fields = form(first)
            with gr.Accordion("Options as JSON (what Start sends)", open=False):
                params = gr.Code(
                    _defaults(first),
                    language="json",
                    label="Options (JSON)",
                    lines=8,
                    max_lines=16,
                    interactive=False,
                    elem_id="train-params",
                )
            with gr.Row():
                start_btn = gr.Button("Start", variant="primary", interactive=bool(ready), elem_id="train-start")
                cancel_btn = gr.Button("Cancel", variant="stop", interactive=bool(ready), elem_id="train-cancel")
                resume_btn = gr.Button("Resume", interactive=bool(ready), elem_id="train-resume")
            status = gr.Markdown(elem_id="train-status")
    with gr.Row(equal_height=False, visible=False) as curve_row:
        run_pick = gr.Dropdown(label="Run", choices=[], scale=1, elem_id="train-run")
        curve = gr.LinePlot(
            x="step",
            y="value",
            color="metric",
            x_title="epoch",
            title="Loss and pseudo-label agreement",
            height=260,
            scale=3,
            elem_id="train-curve",
        )
    outcome = gr.Markdown(elem_id="train-outcome")
    timer = gr.Timer(2.0, active=False)

    outs = wire(
        TrainView,
        params=params,
        status=status,
        run_pick=run_pick,
        curve=curve,
        timer=timer,
        curve_row=curve_row,
        outcome=outcome,
    )
    form_outs = wire(FormOut, params=params, recipe=recipe, **fields)
    values = [fields[f.name] for f in FIELDS]
    method.change(pick_method, [method], form_outs, api_visibility="private")
    ctx.project.change(bind(suit_method, ctx), [ctx.project, method], [method], api_visibility="private")
    ctx.demo.load(pick_method, [method], form_outs, api_visibility="private")  # this device's defaults
    recipe.input(pick_recipe, [method, recipe, *values], form_outs, api_visibility="private")
    gr.on(
        [c.input for c in values], form_json, [method, recipe, *values], [params], api_visibility="private"
    )  # the export follows the form
    start_btn.click(form_json, [method, recipe, *values], [params], api_visibility="private").then(
        bind(start, ctx), [ctx.project, method, params], outs, api_name="train_start"
    )  # Start sends the form as it is now
    cancel_btn.click(bind(cancel, ctx), [ctx.project, run_pick], outs, api_name="train_cancel")
    resume_btn.click(bind(resume, ctx), [ctx.project, method, run_pick], outs, api_name="train_resume")
    run_pick.input(
        bind(show_run, ctx),
        [ctx.project, run_pick],
        wire(CurveOut, curve=curve, outcome=outcome),
        api_name="train_curve",
    )
    timer.tick(bind(tick, ctx), [ctx.project, run_pick], outs, api_visibility="private")
    ctx.finished.change(bind(finished, ctx), [ctx.project, ctx.finished, run_pick], outs, api_visibility="private")
    return {"refresh": bind(refresh, ctx), "outputs": outs, "api_name": "train_view"}
