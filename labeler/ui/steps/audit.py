"""The Audit panel (a tab of step 7 · Train): check a random sample by hand, read the audited accuracy.

Draw a seeded sample (uniform, or stratified by the current label) with :func:`labeler.audit.draw_sample`;
the panel shows one image at a time, large, with its current final label: **Correct (y)** confirms it,
picking the true class (the list, or keys 1–9) corrects it, **Skip (s)** leaves it out. After each check the
estimate updates: the accuracy of the final labels with its 95 % Wilson interval, per class as a small
interval plot (precision: of the images labeled as the class, how many are), and every labeling run side by
side (did training help?). Audit images are never trained on; a check is not a label
(:mod:`labeler.audit`).
"""

from __future__ import annotations

import html
from typing import Any, NamedTuple

import gradio as gr

from ... import audit
from ..common import NO_PROJECT, Ctx, bind, empty_state, guard, md_escape, wire

DIGITS = 9
RUN_HEADERS = ["labels", "checked", "accuracy", "95% interval"]
IMAGE_SIDE = 720


def _image(path: str | None):
    """The image at display size (PIL), or None when it cannot be read."""
    from ...ingest import load_rgb

    if not path:
        return None
    try:
        img = load_rgb(path)
    except Exception:  # a missing or broken file: the panel says so, the check can still be skipped
        return None
    scale = IMAGE_SIDE / max(img.size)
    if scale < 1:
        img.thumbnail((IMAGE_SIDE, IMAGE_SIDE))
    elif scale > 1.5:  # a small image is shown large, its pixels kept sharp
        from PIL import Image

        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.NEAREST)
    return img


def _bar(est: dict, width: int = 180) -> str:
    """One interval as a tiny plot on [0, 1]: the interval as a bar, the estimate as a tick."""
    if est.get("accuracy") is None:
        return '<span class="lb-note">–</span>'
    lo, hi, p = est["low"], est["high"], est["accuracy"]
    return (
        f'<span class="lb-ci" style="width:{width}px" title="{p:.3f} ({lo:.3f}–{hi:.3f})">'
        f'<span class="lb-ci-range" style="left:{100 * lo:.1f}%;width:{100 * (hi - lo):.1f}%"></span>'
        f'<span class="lb-ci-tick" style="left:{100 * p:.1f}%"></span></span>'
    )


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def estimate_html(rep: dict) -> str:
    """The overall estimate and the per-class interval plot (HTML)."""
    o = rep["overall"]
    what = "exact-set accuracy" if rep.get("multi_label") else "accuracy"
    if o["accuracy"] is None:
        head = f"<b>Estimated {what}:</b> nothing checked yet."
    else:
        head = (
            f"<b>Estimated {what} of the final labels: {_pct(o['accuracy'])}</b> "
            f"(95&nbsp;% interval {_pct(o['low'])}–{_pct(o['high'])}, {o['n']} checked) {_bar(o, 220)}"
        )
        micro = rep.get("micro")
        if micro and micro["precision"]["accuracy"] is not None:
            p, r = micro["precision"], micro["recall"]
            head += (
                f"<div class='lb-note'>All labels pooled: precision {_pct(p['accuracy'])} "
                f"({_pct(p['low'])}–{_pct(p['high'])}, {p['n']} labels), recall {_pct(r['accuracy'])} "
                f"({_pct(r['low'])}–{_pct(r['high'])}, {r['n']} true labels).</div>"
            )
    rows = []
    for c, m in rep["per_class"].items():
        prec, rec = m["precision"], m["recall"]
        few = ' <span class="lb-note">(few)</span>' if m["few"] else ""
        interval = "–" if prec["accuracy"] is None else f"{_pct(prec['low'])}–{_pct(prec['high'])}"
        rows.append(
            f"<tr><th class='lb-rowhead'>{html.escape(c)}</th><td>{_bar(prec)}</td>"
            f"<td>{_pct(prec['accuracy'])}</td><td>{interval}</td><td>{prec['n']}{few}</td>"
            f"<td>{_pct(rec['accuracy'])} of {rec['n']}</td></tr>"
        )
    table = (
        "<table class='lb-ci-table'><tr><th>labeled as</th><th>0 — 100 %</th><th>right</th><th>95 % interval</th>"
        f"<th>n</th><th>found</th></tr>{''.join(rows)}</table>"
        "<div class='lb-note'>right: of the images labeled as the class, how many are (precision); found: of the "
        "images that truly are, how many got the label (recall).</div>"
        if rows
        else ""
    )
    warn = "".join(f"<div class='lb-note'>⚠ {html.escape(w)}</div>" for w in rep["warnings"])
    return f"<div id='audit-estimate-body'><div>{head}</div>{table}{warn}</div>"


def run_rows(project) -> list[list]:
    """The final labels and every labeling run: checked, accuracy, interval (for the runs table)."""
    return [
        [r["labels"], r["used"], _pct(r["accuracy"]), f"{_pct(r['low'])}–{_pct(r['high'])}"]
        for r in audit.compare_runs(project)
    ]


class AuditView(NamedTuple):
    """What the panel shows after every event."""

    progress: str
    image: Any  # PIL image, or None
    label: str
    current: int | None  # the image id on screen (gr.State)
    truth: Any  # gr.Radio update: the classes, nothing picked (hidden for multi-label projects)
    truth_set: Any  # gr.CheckboxGroup update: the true label set of a multi-label project (hidden otherwise)
    estimate: str
    runs: Any  # gr.Dataframe update


def _choices(classes: list[str]) -> list[tuple[str, str]]:
    """The true-class list: ``"k · class"`` for the classes a digit key picks."""
    return [(f"{k} · {c}" if k <= DIGITS else c, c) for k, c in enumerate(classes, start=1)]


def _truth_pickers(classes: list[str], multi: bool) -> tuple:
    """(Radio, CheckboxGroup) updates: one class for single-label projects, a set for multi-label ones."""
    return (
        gr.Radio(choices=_choices(classes), value=None, visible=not multi),
        gr.CheckboxGroup(choices=classes, value=[], visible=multi),
    )


def _empty(
    progress: str, classes: list[str] | None = None, estimate: str = "", runs=None, multi: bool = False
) -> AuditView:
    """The panel with no image to check."""
    one, many = _truth_pickers(classes or [], multi)
    return AuditView(
        progress=progress,
        image=None,
        label="",
        current=None,
        truth=one,
        truth_set=many,
        estimate=estimate,
        runs=runs if runs is not None else gr.Dataframe(visible=False),
    )


def _progress_text(project, note: str = "") -> str:
    """How much of the sample is checked, and how it was drawn."""
    p = audit.audit_progress(project)
    design = audit.design(project)
    text = (
        f"**{p['checked']} of {p['sampled']} checked**"
        + (f" ({p['skipped']} skipped)" if p["skipped"] else "")
        + f" · {design['mode']} sample, seed {design['seed']}"
    )
    return text + (f"  \n{note}" if note else "")


def item_md(it: dict) -> str:
    """The image's current final label, where it came from, and its confidence (Markdown)."""
    shown = ", ".join(it["classes"]) or "unlabeled"
    where = {"human": "your label", "accepted": "accepted pseudo-label", "pseudo": "pseudo-label"}
    return (
        f"### {md_escape(shown)}\n"
        f"<span class='lb-note'>image {it['image_id']} · {md_escape(it['rel_path'] or '')} · "
        f"{where.get(it['source'] or '', 'no label')}"
        + (f" · {100 * it['score']:.0f}%" if it["score"] is not None and it["source"] != "human" else "")
        + "</span>"
    )


def view(project, note: str = "") -> AuditView:
    """The panel for ``project`` (None: no project open): the next unchecked image and the estimate."""
    if project is None:
        return _empty(empty_state(NO_PROJECT))
    classes = project.classes
    multi = project.multi_label
    if audit.design(project) is None:
        return _empty(
            empty_state(
                "No audit sample yet: choose a size (100 gives about ±8 % at 80 % accuracy) and press "
                "<b>Draw sample</b>."
            ),
            classes,
            multi=multi,
        )
    text = _progress_text(project, note)
    nxt = audit.audit_items(project, unchecked=True, limit=1)
    estimate = estimate_html(audit.audit_report(project))
    runs_update = gr.Dataframe(value=run_rows(project), headers=RUN_HEADERS, visible=True)
    if not nxt:
        done = empty_state("Every image of the sample is checked. Draw a larger sample to narrow the interval.")
        return _empty(text + "  \n" + done, classes, estimate, runs_update, multi=multi)
    it = nxt[0]
    lab = item_md(it)
    img = _image(it["path"])
    if img is None:
        lab += "  \n" + empty_state("This image cannot be read: skip it.")
    one, many = _truth_pickers(classes, multi)
    return AuditView(
        progress=text,
        image=img,
        label=lab,
        current=it["image_id"],
        truth=one,
        truth_set=many,
        estimate=estimate,
        runs=runs_update,
    )


@guard
def refresh(ctx: Ctx, key: str) -> AuditView:
    return view(ctx.open(key, required=False))


@guard
def draw(ctx: Ctx, key: str, n: float | None, strat: bool, s: float | None) -> AuditView:
    """Draw (or grow) the seeded sample of ``n`` images."""
    project = ctx.open(key)
    if n is None or int(n) < 1:
        raise gr.Error("Give a sample size of at least 1.")
    res = audit.draw_sample(project, int(n), stratify=bool(strat), seed=None if s is None else int(s))
    return view(project, f"Drew {res['added']} new images.")


def _check(ctx: Ctx, key: str, image_id: int | None, verdict: str, classes=None) -> AuditView:
    project = ctx.open(key)
    if image_id is None:
        raise gr.Error("There is no image to check: draw a sample first.")
    audit.record_verdict(project, int(image_id), verdict, classes)
    return view(project)


@guard
def confirm(ctx: Ctx, key: str, image_id: int | None) -> AuditView:
    """The label shown is right."""
    return _check(ctx, key, image_id, "confirm")


@guard
def correct(ctx: Ctx, key: str, image_id: int | None, cls: str | None, cls_set: list[str] | None = None) -> AuditView:
    """The true class is ``cls`` (multi-label projects: the true labels are ``cls_set``; none ticked: the image
    has none of the classes)."""
    if ctx.open(key).multi_label:
        return _check(ctx, key, image_id, "correct", list(cls_set or []))
    if not cls:
        raise gr.Error("Pick the true class first.")
    return _check(ctx, key, image_id, "correct", cls)


@guard
def skip(ctx: Ctx, key: str, image_id: int | None) -> AuditView:
    """Leave the image out of the estimate."""
    return _check(ctx, key, image_id, "skip")


@guard
def correct_digit(ctx: Ctx, k: int, key: str, image_id: int | None) -> AuditView:
    """Key ``k`` (1–9): the true class is the k-th class (nothing happens past the last class)."""
    classes = ctx.open(key).classes
    if k > len(classes):
        return AuditView(*(gr.skip(),) * len(AuditView._fields))
    return _check(ctx, key, image_id, "correct", classes[k - 1])


def build(ctx: Ctx) -> dict:
    gr.Markdown(
        "Check a **random sample** by hand to learn how good the labels are, with error bars. Audit images are "
        "kept out of training (an unbiased test set); your checks are not labels.",
        elem_classes=["lb-note"],
    )
    with gr.Row(equal_height=True):
        size = gr.Number(value=100, precision=0, minimum=1, label="Sample size", scale=1, elem_id="audit-size")
        stratify = gr.Checkbox(value=False, label="Stratify by current label", scale=1, elem_id="audit-stratify")
        seed = gr.Number(value=0, precision=0, label="Seed", scale=1, elem_id="audit-seed")
        draw_btn = gr.Button("Draw sample", variant="primary", scale=1, elem_id="audit-draw")
    progress = gr.Markdown(elem_id="audit-progress")
    current = gr.State(None)  # the image id on screen
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            image = gr.Image(
                type="pil",
                interactive=False,
                show_label=False,
                height=460,
                elem_id="audit-image",
                buttons=[],
            )
        with gr.Column(scale=2, min_width=300):
            label = gr.Markdown(elem_id="audit-label")
            confirm_btn = gr.Button("✓ Correct (y)", variant="primary", elem_id="audit-confirm")
            truth = gr.Radio([], label="…or the true class is (keys 1–9)", elem_id="audit-truth")
            truth_set = gr.CheckboxGroup(
                [],
                label="…or the true labels are (none ticked: none of the classes)",
                elem_id="audit-truth-set",
                visible=False,
            )
            with gr.Row():
                correct_btn = gr.Button("Set true class", elem_id="audit-correct")
                skip_btn = gr.Button("Skip (s)", elem_id="audit-skip")
            digit_btns = [gr.Button(str(k), visible="hidden", elem_id=f"audit-digit-{k}") for k in range(1, DIGITS + 1)]
            estimate = gr.HTML(elem_id="audit-estimate")
    runs = gr.Dataframe(
        headers=RUN_HEADERS,
        interactive=False,
        label="Audited accuracy per labeling run (did training help?)",
        elem_id="audit-runs",
        visible=False,
    )

    outs = wire(
        AuditView,
        progress=progress,
        image=image,
        label=label,
        current=current,
        truth=truth,
        truth_set=truth_set,
        estimate=estimate,
        runs=runs,
    )
    draw_btn.click(bind(draw, ctx), [ctx.project, size, stratify, seed], outs, api_name="audit_draw")
    confirm_btn.click(bind(confirm, ctx), [ctx.project, current], outs, api_name="audit_confirm")
    correct_btn.click(bind(correct, ctx), [ctx.project, current, truth, truth_set], outs, api_name="audit_correct")
    skip_btn.click(bind(skip, ctx), [ctx.project, current], outs, api_name="audit_skip")
    for k, btn in enumerate(digit_btns, start=1):
        btn.click(bind(correct_digit, ctx, k), [ctx.project, current], outs, api_visibility="private")
    return {"refresh": bind(refresh, ctx), "outputs": outs, "api_name": "audit_view"}


from ..assets import read as _asset_read  # noqa: E402  (here, beside the constants it defines)
from ..assets import script as _asset_script  # noqa: E402

#: The panel's keys (installed with the page head; ignored while typing, and while the panel is hidden).
SHORTCUTS_JS = _asset_script("audit.js")  # assets/audit.js

#: The interval plot's styles (added to the app's CSS).
CSS = _asset_read("audit.css")  # assets/audit.css
