"""The image preview: a larger view of one gallery image with its details, shared by Review (step 5) and Explore.

Opened by the gallery's **Preview (v)** button, the key ``v`` (the image clicked last, else the first of the page)
or a double-click on a thumbnail (that one). It shows the image (:func:`labeler.preview.preview_image`), its export
path, folder, import root, pixel and file size, final label and its source, the active run's top-3 class scores and
its nearest neighbours (:func:`labeler.preview.image_details`); a click on a neighbour previews it. Keys while it is
open: ``←``/``→`` the previous/next image of the gallery page it was opened on, ``1``–``9`` label the image as that
class, ``a`` accept its pseudo-label, ``Esc`` close; the gallery's own keys wait until it is closed.

A step calls :func:`opener` where its Preview button goes and :func:`build` once its gallery's states exist; each
handler is a module-level ``handler(ctx, *inputs) -> PreviewOut``.
"""

from __future__ import annotations

from html import escape
from typing import Any, NamedTuple

import gradio as gr
from PIL import Image

from ..ingest import fmt_bytes, thumbnail_for
from ..preview import image_details, preview_image
from ..project import Project
from ..review import accept_images, label_images
from . import assets
from .common import Ctx, bind, guard, md_escape, pct, wire

#: Smaller images are shown enlarged by a whole factor to about this many pixels (their pixels as squares).
UPSCALE_TO = 384
#: Neighbours shown under the image.
NEIGHBOURS = 8
DIGITS = 9


def esc(text) -> str:
    """Text safe inside HTML (quotes too: it goes in attributes)."""
    return escape(str(text), quote=True)


SOURCE_TEXT = {"human": "your label", "accepted": "accepted pseudo-label", "pseudo": "pseudo-label"}


class PreviewOut(NamedTuple):
    """What opening, moving or labeling in the preview shows (field order = the wiring order)."""

    panel: Any  # gr.Column update: the overlay shown or hidden
    title: str
    image: Any  # a PIL image
    details: str
    scores: str  # HTML: the top-3 bars
    neighbours: Any  # gr.Gallery update
    near_note: str
    target: Any  # gr.Dropdown update: the project's classes
    current: int | None  # state: the image shown
    ids: list  # state: the gallery page's ids when the preview opened (what ← → walk through)
    near_ids: list  # state: the neighbours' ids, in gallery order


def _source_text(label: dict) -> str:
    """ "pseudo-label of run 3 (zeroshot), 54 %", "your label", "unlabeled"."""
    src = label["source"]
    if src is None:
        return "unlabeled"
    text = SOURCE_TEXT.get(src, src)
    run = label.get("run")
    if run is not None:
        text += f" of run {run['id']} ({esc(run['method'] or run['kind'])})"
    if label.get("score") is not None and src != "human":
        text += f", {pct(label['score'])}"
    return text


def details_text(d: dict, local_mode: bool = True) -> str:
    """The details table (HTML) of :func:`labeler.preview.image_details`'s dict (folders only in local mode)."""
    lab = d["label"]
    if d["status"] != "ok":
        label = f"⊘ <b>{esc(d['status'])}</b> — not in labels, counts, search or exports"
    else:
        shown = ", ".join(esc(c) for c in lab["classes"])
        if not shown and lab["source"] is not None:  # a person's "none of the classes" (multi-label)
            shown = "none of the classes"
        label = f"<b>{shown}</b> · {_source_text(lab)}" if shown else "<b>unlabeled</b>"
        label += " · marked unsure" if lab["unsure"] else ""
    root = d["root"]
    kind = f"{esc(root['kind'])} " if root.get("kind") else ""
    rows = [("Label", label), ("Export path", f"<code>{esc(d['path'])}</code>")]
    if local_mode:
        rows.append(("Folder", esc(d["folder"])))
        rows.append(("Import root", f"{kind}#{root['id']}: {esc(root['path'] or '–')}"))
    else:
        rows.append(("Import root", f"{kind}#{root['id']}"))
    size = f"{d['width']} × {d['height']} px" if d["width"] else "–"
    file_size = fmt_bytes(d["bytes"]) if d["bytes"] is not None else "–"
    rows.append(("Size", f"{size} · {file_size} · {esc(d['format'] or '?')}"))
    if d.get("folder_label"):
        rows.append(("Folder name", esc(d["folder_label"])))
    rows.append(("Image", f"id {d['id']} · sha256 <code>{esc(d['sha256'][:12])}…</code>"))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='lb-details'>{body}</table>"


def scores_html(top: list[dict], run: dict | None) -> str:
    """The active run's best class scores as bars (a note when there is no prediction)."""
    if not top:
        return "<p class='lb-note'>No class scores: run zero-shot (step 5, ②) to score this image.</p>"
    multi = any("in_label" in t for t in top)  # multi-label: every class, ✓ where the image carries it
    head = f"Top {len(top)} of run {run['id']}" if run else f"Top {len(top)}"
    if multi:
        head = (f"Class scores of run {run['id']}" if run else "Class scores") + " · ✓ in the label · | threshold"

    def mark(t: dict) -> str:
        if not multi:
            return ""
        return "<span class='lb-top-in'>✓</span> " if t["in_label"] else "<span class='lb-top-in'></span> "

    def tick(t: dict) -> str:
        if t.get("threshold") is None:
            return ""
        return f"<span class='lb-top-tick' style='left:{100 * t['threshold']:.1f}%'></span>"

    rows = "".join(
        f"<div class='lb-top-row{' lb-top-on' if t.get('in_label') else ''}'>"
        f"<span class='lb-top-name' title='{esc(t['class'])}'>{mark(t)}{esc(t['class'])}"
        f"{'' if t['current'] else ' (removed)'}</span>"
        f"<span class='lb-bar'><span style='width:{100 * max(0.0, min(1.0, t['score'])):.1f}%'></span>{tick(t)}</span>"
        f"<span class='lb-top-pct'>{100 * t['score']:.1f}%</span></div>"
        for t in top
    )
    return f"<div class='lb-top' id='lb-top'><div class='lb-note'>{head}</div>{rows}</div>"


def _choices(project: Project) -> list[tuple[str, str]]:
    return [(f"{i} · {c}" if i <= DIGITS else c, c) for i, c in enumerate(project.classes, start=1)]


def view(ctx: Ctx, project: Project, ids: list, image_id: int, near_pos: int | None = None) -> PreviewOut:
    """The preview of ``image_id`` with ``ids`` the page it walks through (``near_pos``: it is a neighbour)."""
    ids = [int(i) for i in ids or []]
    d = image_details(project, int(image_id), neighbours=NEIGHBOURS)
    img, img_note = preview_image(project, int(image_id))
    if max(img.size) < UPSCALE_TO:  # a tiny image (CIFAR's 32 px): whole pixels, big enough to see
        f = UPSCALE_TO // max(img.size)
        img = img.resize((img.width * f, img.height * f), Image.Resampling.NEAREST)
    if d["id"] in ids:
        where = f"image {ids.index(d['id']) + 1} of {len(ids)} on this page"
    else:
        where = "a neighbour (← → go back to the page)" if ids else "not on the gallery page"
    title = f"### {md_escape(d['path'])}\n<span class='lb-note'>{where}</span>"
    near = d["neighbours"]
    pics, near_ids = [], []
    for n in near:
        thumb = thumbnail_for(project, n["id"], n["sha256"])
        if thumb:
            pics.append((thumb, f"{n['score']:.2f} · {n['label'] or 'unlabeled'}"))
            near_ids.append(n["id"])
    note = (
        md_escape(d["neighbours_note"])
        if d["neighbours_note"]
        else ("Nearest neighbours (cosine similarity), most similar first — click one to preview it." if pics else "")
    )
    details = details_text(d, ctx.local_mode) + (f"\n\n⚠ {md_escape(img_note)}" if img_note else "")
    multi = project.multi_label
    return PreviewOut(
        panel=gr.Column(visible=True),
        title=title,
        image=img,
        details=details,
        scores=scores_html(d["top"], d["label"]["active_run"]),
        neighbours=gr.Gallery(value=pics, visible=bool(pics), selected_index=None),
        near_note=note,
        target=gr.Dropdown(choices=_choices(project), value=[] if multi else None, multiselect=multi),
        current=d["id"],
        ids=ids,
        near_ids=near_ids,
    )


# --- events -----------------------------------------------------------------------------------------------------
@guard
def open_preview(ctx: Ctx, key: str, page_ids: list, picked, index) -> PreviewOut:
    """Open the preview on the page's ``index``-th image (a double-click), else the image clicked last when it is
    on the page, else the page's first image."""
    project = ctx.open(key)
    ids = [int(i) for i in page_ids or []]
    if not ids:
        raise gr.Error("There is no image on this page to preview: show some in the gallery first.")
    try:
        index = int(index)
    except (TypeError, ValueError):
        index = -1
    if 0 <= index < len(ids):
        image_id = ids[index]
    elif picked is not None and int(picked) in ids:
        image_id = int(picked)
    else:
        image_id = ids[0]
    return view(ctx, project, ids, image_id)


def _move(ctx: Ctx, key: str, ids: list, current, delta: int) -> PreviewOut:
    project = ctx.open(key)
    ids = [int(i) for i in ids or []]
    if current is None or not ids:
        raise gr.Error("Open the preview first (Preview, or the key v).")
    current = int(current)
    pos = ids.index(current) + delta if current in ids else 0
    return view(ctx, project, ids, ids[min(max(pos, 0), len(ids) - 1)])


@guard
def prev_image(ctx: Ctx, key: str, ids: list, current) -> PreviewOut:
    """The page's image before the one shown (the first stays)."""
    return _move(ctx, key, ids, current, -1)


@guard
def next_image(ctx: Ctx, key: str, ids: list, current) -> PreviewOut:
    """The page's image after the one shown (the last stays)."""
    return _move(ctx, key, ids, current, +1)


@guard
def show_neighbour(ctx: Ctx, key: str, ids: list, near_ids: list, evt: gr.SelectData):
    """A click on a neighbour: preview it (← → still walk the gallery page). Returns a :class:`PreviewOut`."""
    idx = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else None)
    if idx is None or not 0 <= idx < len(near_ids or []):
        return PreviewOut(*(gr.skip(),) * len(PreviewOut._fields))
    return view(ctx, ctx.open(key), ids, int(near_ids[idx]))


def _shown(current) -> int:
    if current is None:
        raise gr.Error("Open the preview first (Preview, or the key v).")
    return int(current)


@guard
def label_as(ctx: Ctx, key: str, ids: list, current, cls) -> PreviewOut:
    """Label the image shown as ``cls`` (a person's label; a list in multi-label projects)."""
    project = ctx.open(key)
    image_id = _shown(current)
    if not cls:
        raise gr.Error("Pick the class first (the box left of “Label as”), or press its number key.")
    label_images(project, [image_id], cls)  # no toast: the details say it (and a toast would cover the buttons)
    return view(ctx, project, ids, image_id)


@guard
def label_digit(ctx: Ctx, k: int, key: str, ids: list, current) -> PreviewOut:
    """Key ``k`` (1–9): label the image shown as the k-th class."""
    project = ctx.open(key)
    classes = project.classes
    if k > len(classes):
        raise gr.Error(f"There is no class {k}: the project has {len(classes)} classes.")
    return label_as(ctx, key, ids, current, [classes[k - 1]] if project.multi_label else classes[k - 1])


@guard
def accept(ctx: Ctx, key: str, ids: list, current) -> PreviewOut:
    """Key ``a``: accept the pseudo-label of the image shown (a person's own label stays)."""
    project = ctx.open(key)
    image_id = _shown(current)
    if not accept_images(project, [image_id]):
        gr.Info("Nothing to accept: it has your label, or no pseudo-label.", duration=3)
    return view(ctx, project, ids, image_id)


def close() -> tuple:
    """Esc or ✕: hide the preview (``(panel, current)``)."""
    return gr.Column(visible=False), None


# --- layout and wiring ------------------------------------------------------------------------------------------
#: Fills the open event's last input (a hidden number) with the thumbnail a double-click named (-1: none).
OPEN_JS = (
    "(...args) => { const i = window.lbPreviewIndex ?? -1; window.lbPreviewIndex = -1; "
    "return [...args.slice(0, -1), i]; }"
)


def opener(prefix: str) -> gr.Button:
    """The gallery's Preview button (``#<prefix>-preview-open``), made where it is called."""
    return gr.Button("Preview (v)", size="sm", elem_id=f"{prefix}-preview-open", min_width=60)


def build(
    ctx: Ctx, prefix: str, open_btn: gr.Button, page_ids: gr.State, picked: gr.State, after: tuple | None = None
) -> dict:
    """The preview overlay (``#<prefix>-preview``) of a gallery, wired to ``open_btn``.

    ``page_ids``/``picked``: the states holding the gallery page's ids and the image clicked last. ``after``:
    ``(fn, inputs, outputs)`` run after a label change in the preview (the step shows the new label). Public
    api_names: ``<prefix>_preview``, ``<prefix>_preview_next``, ``<prefix>_preview_prev``,
    ``<prefix>_preview_label``, ``<prefix>_preview_accept``.
    """
    c: dict = {}
    with gr.Column(visible=False, elem_id=f"{prefix}-preview", elem_classes=["lb-preview"]) as c["panel"]:
        with gr.Row(equal_height=False):
            c["title"] = gr.Markdown(elem_id=f"{prefix}-preview-title")
            c["prev"] = gr.Button("← Prev", size="sm", elem_id=f"{prefix}-preview-prev", scale=0, min_width=80)
            c["next"] = gr.Button("Next →", size="sm", elem_id=f"{prefix}-preview-next", scale=0, min_width=80)
            c["close"] = gr.Button(
                "✕ Close (Esc)", size="sm", elem_id=f"{prefix}-preview-close", scale=0, min_width=110
            )
        with gr.Row(equal_height=False):
            c["image"] = gr.Image(
                type="pil", interactive=False, show_label=False, height=360, elem_id=f"{prefix}-preview-image",
                buttons=[], format="png", scale=3,
            )  # fmt: skip
            with gr.Column(scale=2, min_width=320):
                c["details"] = gr.Markdown(elem_id=f"{prefix}-preview-details")
                c["scores"] = gr.HTML(elem_id=f"{prefix}-preview-scores")
                with gr.Row(equal_height=True):
                    c["target"] = gr.Dropdown(
                        choices=[], show_label=False, container=False, scale=2, elem_id=f"{prefix}-preview-target"
                    )
                    c["label"] = gr.Button(
                        "Label as", size="sm", scale=1, min_width=80, elem_id=f"{prefix}-preview-label"
                    )
                    c["accept"] = gr.Button(
                        "Accept (a)", size="sm", scale=1, min_width=80, elem_id=f"{prefix}-preview-accept"
                    )
                gr.Markdown(
                    "Keys: **←** **→** previous/next image of the page · **1**–**9** label as that class · **a** "
                    "accept the pseudo-label · **Esc** close.",
                    elem_classes=["lb-note"],
                )
        c["near_note"] = gr.Markdown(elem_id=f"{prefix}-preview-near-note", elem_classes=["lb-note"])
        c["neighbours"] = gr.Gallery(
            columns=NEIGHBOURS, height=150, allow_preview=False, object_fit="cover", show_label=False,
            elem_id=f"{prefix}-preview-neighbours", buttons=[], fit_columns=False,
        )  # fmt: skip
    # the label keys' buttons, outside the panel (gradio shows the "hidden" buttons of a column it made visible)
    c["digits"] = [
        gr.Button(str(k), visible="hidden", elem_id=f"{prefix}-preview-digit-{k}") for k in range(1, DIGITS + 1)
    ]
    c["index"] = gr.Number(-1, visible=False)
    c["current"], c["ids"], c["near_ids"] = gr.State(None), gr.State([]), gr.State([])
    outs = wire(PreviewOut, **{f: c[f] for f in PreviewOut._fields})
    key, shown = ctx.project, [c["ids"], c["current"]]

    open_btn.click(
        bind(open_preview, ctx), [key, page_ids, picked, c["index"]], outs, js=OPEN_JS, api_name=f"{prefix}_preview"
    )
    c["prev"].click(bind(prev_image, ctx), [key, *shown], outs, api_name=f"{prefix}_preview_prev")
    c["next"].click(bind(next_image, ctx), [key, *shown], outs, api_name=f"{prefix}_preview_next")
    c["neighbours"].select(bind(show_neighbour, ctx), [key, c["ids"], c["near_ids"]], outs, api_visibility="private")
    c["close"].click(close, None, [c["panel"], c["current"]], api_visibility="private")
    changes = [
        c["label"].click(bind(label_as, ctx), [key, *shown, c["target"]], outs, api_name=f"{prefix}_preview_label"),
        c["accept"].click(bind(accept, ctx), [key, *shown], outs, api_name=f"{prefix}_preview_accept"),
    ]
    for k, btn in enumerate(c["digits"], start=1):
        changes.append(btn.click(bind(label_digit, ctx, k), [key, *shown], outs, api_visibility="private"))
    if after is not None:
        fn, inputs, outputs = after
        for event in changes:
            event.success(fn, inputs, outputs, api_visibility="private")
    return c


#: The preview's keys and double-click (installed with the page head, after the galleries' own keys: it listens
#: first, on window in the capture phase, and while the preview is open keeps the galleries' keys from acting).
PREVIEW_JS = assets.script("preview.js")  # assets/preview.js

#: The overlay and its score bars (added to the app's CSS).
PREVIEW_CSS = assets.read("preview.css")  # assets/preview.css
