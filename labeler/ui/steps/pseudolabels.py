"""Step 5 · Pseudo-labels: compute features, run zero-shot, and review.

Review: a gallery per class (or the "needs review" queue) sorted by confidence, lowest first;
click thumbnails to select them, then accept, relabel or mark them unsure. Counts per class,
a confidence histogram, and — where images sit in class-named folders — accuracy and a
confusion matrix. Shift-click selects every thumbnail between the last clicked one and this one.
Keys: ``a`` accept, ``u`` unsure, ``n``/``p`` next/previous page, ``z`` undo the last change, ``1``–``9``
relabel the selection to that class, ``v`` (or a double-click) preview one image larger (:mod:`labeler.ui.preview`).

Multi-label projects show more (single-label ones look as before): the labels of the last clicked image as
checkboxes with the active run's scores (tick or untick to change them), a class picker with its threshold slider
and a live count of the images that would carry it (saved on release; pseudo-labels follow it), add/remove that
class for the selection, and the view "near a threshold" (a class score within ±0.10 of its threshold, closest
first). Undo (``z``) takes back toggles, bulk edits and threshold changes. Against ground truth sets (a file, or
folders named like ``cat+dog``) they show mAP, F1 at the thresholds and per-class AP bars, never a top-1 confusion
matrix.
"""

from __future__ import annotations

import functools
import html
from typing import NamedTuple

import gradio as gr
import pandas as pd

from ...errors import NotReadyError
from ...evaluate import evaluate, evaluate_multi_label
from ...ingest import thumbnail_for
from ...jobs import run_in_background
from ...labels import accept_pseudo_labels, active_run, final_labels, set_human_labels
from ...methods import get_method
from ...models import list_models, load_clip, load_dino
from ...project import Project
from ...prompts import TEMPLATE_SETS
from ...review import (
    DEFAULT_MARGIN,
    VIEW_ALL,
    VIEW_NEAR,
    VIEW_REVIEW,
    VIEW_UNLABELED,
    ReviewCounts,
    class_scores,
    class_thresholds,
    edit_label,
    mark_unsure,
    near_threshold_queue,
    review_counts,
    review_queue,
    set_image_labels,
    set_thresholds,
    threshold_counts,
)
from .. import preview
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
    select_range,
    thumb_caption,
    undo_last,
    wire,
)

PAGE = 36
MAX_CONFUSION = 30
DIGITS = 9


def relabel_choices(classes: list[str]) -> list[tuple[str, str]]:
    """(shown, value) pairs of the relabel dropdown: the first nine classes show their digit key ("3 · ship")."""
    return [(f"{i} · {c}" if i <= DIGITS else c, c) for i, c in enumerate(classes, start=1)]


def _model_choices() -> tuple[list[str], list[str], str]:
    try:
        models = list_models()
        clip = list(
            dict.fromkeys([*models["clip"]["registered"], models["clip"]["default"], *models["clip"]["pretrained"]])
        )
        dino = ["none", *dict.fromkeys([*models["dino"]["registered"], *models["dino"]["suggested"]])]
        return clip, dino, models["clip"]["default"]
    except Exception:  # open_clip missing or broken: still let people type a name
        return ["tiny-random", "ViT-B-32:laion2b_s34b_b79k"], ["none", "tiny-random"], "ViT-B-32:laion2b_s34b_b79k"


def split_clip(choice: str) -> tuple[str, str | None]:
    """``ViT-B-32:laion2b_s34b_b79k`` → (name, pretrained); ``hf-hub:org/repo`` and plain names keep no tag."""
    choice = (choice or "").strip()
    if not choice:
        raise gr.Error("Pick a CLIP model first (tiny-random needs no download, for a quick try).")
    if choice.startswith("hf-hub:") or ":" not in choice:
        return choice, None
    name, pretrained = choice.split(":", 1)
    return name, pretrained or None


def _features_text(project: Project) -> str:
    sets = project.features.sets()
    n = project.image_count()
    if n == 0:
        return empty_state("Import images first (step 2).")
    if not sets:
        return empty_state(
            f"No features yet for the {n} images. Pick a CLIP model and press <b>Compute "
            "features</b> (tiny-random: seconds, random labels — only to try the flow)."
        )
    lines = [f"- `{md_escape(s['key'])}`: {project.features.count(s['id'])} of {n} images" for s in sets]
    return "**Features**\n" + "\n".join(lines)


def _zeroshot_text(project: Project) -> str:
    run = active_run(project)
    if run is None:
        if not project.features.sets("clip"):
            return empty_state("Zero-shot needs CLIP features: compute them on the left first.")
        if len(project.classes) < 2:
            return empty_state("Set at least two classes (step 3), then run zero-shot.")
        return empty_state("Ready: press <b>Run zero-shot</b>.")
    m = run["metrics"]
    stale = list(run["params"].get("classes", [])) != project.classes
    text = (
        f"**Pseudo-labels from run {run['id']}** ({run['method']}): {m.get('n', '?')} images, mean confidence "
        f"{pct(m.get('mean_confidence'))}." + (f" Texts: {md_escape(m['texts'])}" if m.get("texts") else "")
    )
    if stale:
        text += "  \n⚠ The classes changed since: run zero-shot again."
    return text


def _hist_frame(rows: list[dict]) -> pd.DataFrame:
    """The histogram as a typed frame (an untyped empty frame would make the plot's y axis categorical)."""
    return pd.DataFrame(
        {
            "bin": pd.Series([r["bin"] for r in rows], dtype=str),
            "low": pd.Series([r["low"] for r in rows], dtype=float),
            "images": pd.Series([r["images"] for r in rows], dtype="int64"),
        }
    )


def _confusion_html(res: dict) -> str:
    classes, mat = res["classes"], res.get("confusion")
    if not mat:
        return ""
    if len(classes) > MAX_CONFUSION:
        return f"<p class='lb-note'>Confusion matrix hidden: {len(classes)} classes (shown up to {MAX_CONFUSION}).</p>"
    peak = max(1, max(max(r) for r in mat))
    head = "".join(f"<th title='{html.escape(c)}'>{k + 1}</th>" for k, c in enumerate(classes))
    body = []
    for i, (name, row) in enumerate(zip(classes, mat, strict=True)):
        cells = []
        for j, v in enumerate(row):
            alpha = v / peak
            color = f"rgba(37,99,235,{alpha:.2f})" if i == j else f"rgba(220,38,38,{alpha:.2f})"
            fg = "#fff" if alpha > 0.55 else "inherit"
            cells.append(
                f"<td style='background:{color};color:{fg}' title='{html.escape(name)} → "
                f"{html.escape(classes[j])}: {v}'>{v or ''}</td>"
            )
        body.append(
            f"<tr><th class='lb-rowhead' title='{html.escape(name)}'>{i + 1} {html.escape(name[:14])}</th>"
            f"{''.join(cells)}</tr>"
        )
    return (
        "<div class='lb-confusion'><table><caption>rows: folder (truth) · columns: label (same numbers)</caption>"
        f"<tr><th></th>{head}</tr>{''.join(body)}</table></div>"
    )


# --- outputs: one NamedTuple per output list (field order = the order the events were wired with) -----------
class GalleryOut(NamedTuple):
    """The gallery and its page: what a page turn, a view change or a selection updates."""

    gallery: object  # gr.Gallery update
    page_ids: list[int]  # image ids shown, in gallery order
    page_info: str
    page: int
    selection_text: str
    selection: list[int]


class ClickOut(NamedTuple):
    """A thumbnail click: the gallery and the clicked image (the anchor of the next shift-click)."""

    gallery: object
    page_ids: list[int]
    page_info: str
    page: int
    selection_text: str
    selection: list[int]
    last_click: int | None
    ml_labels: object  # multi-label: the clicked image's labels as checkboxes


class ReviewOut(NamedTuple):
    """Everything the step shows: after a label change, a new threshold or a finished job."""

    features: str
    zeroshot: str
    view: object  # gr.Dropdown update: the views with their sizes
    counts: list[list]
    hist: object  # gr.BarPlot update
    accuracy: str
    confusion: str
    target: object  # gr.Dropdown update: the relabel classes
    gallery: object
    page_ids: list[int]
    page_info: str
    page: int
    selection_text: str
    selection: list[int]
    # multi-label only (hidden in single-label projects): see :func:`ml_parts`
    ml_labels: object  # gr.CheckboxGroup update: the focused image's classes with scores
    ml_class: object  # gr.Dropdown update: the class the threshold slider and add/remove act on
    ml_threshold: object  # gr.Slider update: that class's threshold
    ml_count: str  # how many images carry the class at the slider's threshold
    ml_add: object  # gr.Button update
    ml_remove: object  # gr.Button update


class RefreshOut(NamedTuple):
    """Opening the step: :class:`ReviewOut` plus the CLIP model of the features and the setup accordion."""

    features: str
    zeroshot: str
    view: object
    counts: list[list]
    hist: object
    accuracy: str
    confusion: str
    target: object
    gallery: object
    page_ids: list[int]
    page_info: str
    page: int
    selection_text: str
    selection: list[int]
    ml_labels: object
    ml_class: object
    ml_threshold: object
    ml_count: str
    ml_add: object
    ml_remove: object
    clip: object  # the CLIP model's name (or gr.skip() without features)
    setup: object  # gr.Accordion update: closed once there are pseudo-labels


# --- rendering (pure: a project in, outputs out) -----------------------------------------------------------
def _caption_item(it: dict) -> dict:
    """A queue item as :func:`thumb_caption` reads it."""
    return {**it, "id": it["image_id"]}


def gallery_view(project: Project, view_value: str, thr: float, page_no: int, chosen_ids, total: int | None = None):
    """One page of the view, lowest confidence first: ``(gallery update, ids shown, page info, page number)``.

    Reads only the page's rows; ``total`` (the view's size, when the caller has counted it) saves a count.
    """
    chosen = set(chosen_ids or [])
    view_value = view_value or VIEW_REVIEW
    has_run = active_run(project) is not None
    known, items, total = total, [], 0
    if has_run or view_value != VIEW_REVIEW:
        page_no = max(0, int(page_no or 0))
        if known is not None:
            page_no = min(page_no, max(0, -(-known // PAGE) - 1))
        q = _page(project, view_value, thr, page_no)
        if not q.items and q.total and page_no > 0:  # past the end: the last page
            page_no = -(-q.total // PAGE) - 1
            q = _page(project, view_value, thr, page_no)
        items, total = q.items, q.total
    pages = max(1, -(-total // PAGE))
    page_no = min(max(0, int(page_no or 0)), pages - 1)
    pics, ids = [], []
    for it in items:
        thumb = thumbnail_for(project, it["image_id"], it["sha256"], it["path"])
        if thumb:
            pics.append((thumb, thumb_caption(_caption_item(it), chosen)))
            ids.append(it["image_id"])
    info = f"{total} images · page {page_no + 1}/{pages}" if total else ""
    # an update, not a gr.Gallery: a component built here would copy its 36 files into gradio's cache once more
    return gr.update(value=pics, visible=bool(pics), selected_index=None), ids, info, page_no


def _page(project: Project, view_value: str, thr: float, page_no: int):
    if view_value == VIEW_NEAR:  # multi-label: a class score near its threshold, closest first
        return near_threshold_queue(project, margin=DEFAULT_MARGIN, limit=PAGE, offset=page_no * PAGE)
    return review_queue(
        project,
        by="confidence",
        view=view_value,
        threshold=float(thr),
        limit=PAGE,
        offset=page_no * PAGE,
        include_labeled=True,
    )


def selection_text(has_run: bool, chosen_ids, view_value: str, n_items: int, thr: float) -> str:
    """What the line above the gallery says: how to start, that the view is empty, or what is selected."""
    n = len(chosen_ids or [])
    if not has_run:
        return empty_state(
            "No pseudo-labels yet: compute features (①) and run zero-shot (②); the images to "
            "review appear here, least confident first."
        )
    if not n_items:
        if view_value == VIEW_REVIEW:
            return empty_state(
                f"Nothing needs review at threshold {float(thr):.2f}. Raise the threshold, or "
                "pick <i>all images</i> or a class in <b>Show</b> to check the confident ones."
            )
        if view_value == VIEW_NEAR:
            return empty_state(
                f"No image without your label has a class score within ±{DEFAULT_MARGIN:.2f} of its threshold: "
                "move a threshold, or pick another view in <b>Show</b>."
            )
        return empty_state("No images in this view: pick another one in <b>Show</b>.")
    hint = "Click thumbnails to select them (click again to unselect; shift-click selects a range)."
    if n:
        return f"**{n} selected** — accept, relabel or mark unsure below. {hint}"
    if view_value == VIEW_REVIEW:
        return f"Pseudo-labels below the threshold or marked unsure, least confident first. {hint}"
    if view_value == VIEW_NEAR:
        return f"A class score within ±{DEFAULT_MARGIN:.2f} of its threshold, closest first. {hint}"
    return hint


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _ap_html(res: dict) -> str:
    """Per-class AP (the report's ``ap_bars``) as horizontal bars, with F1 at the thresholds and the support."""
    bars = res["ap_bars"]
    if not bars:
        return ""
    rows = []
    for b in bars[:MAX_CONFUSION]:
        m = res["per_class"][b["class"]]
        name = html.escape(b["class"])
        rows.append(
            f"<tr><th class='lb-rowhead' title='{name}'>{html.escape(b['class'][:14])}</th>"
            f"<td style='width:60%'><div style='background:rgba(37,99,235,0.75);height:0.8em;"
            f"width:{100 * b['ap']:.1f}%'></div></td><td>AP {b['ap']:.2f}</td>"
            f"<td>F1 {'–' if m['f1'] is None else format(m['f1'], '.2f')}</td><td>n={m['support']}</td></tr>"
        )
    more = len(bars) - MAX_CONFUSION
    tail = f"<p class='lb-note'>{more} more classes (the CLI's <code>eval</code> lists all).</p>" if more > 0 else ""
    return (
        "<div class='lb-ap'><table style='width:100%'><caption>AP per class (the active run's scores) · F1 at the "
        f"thresholds</caption>{''.join(rows)}</table>{tail}</div>"
    )


def _multi_label_accuracy(project: Project, has_run: bool) -> tuple[str, str]:
    """A multi-label project's line (mAP, F1 at the thresholds, on N images with ground truth) and AP bars."""
    try:
        res = evaluate_multi_label(project)
    except NotReadyError as exc:
        text = f"<span class='lb-note'>mAP: {error_text(str(exc), exc.hint)}</span>" if has_run else ""
        return text, ""
    by_src = ", ".join(f"{k} {v}" for k, v in res["by_source"].items())
    text = (
        f"**mAP (macro): {_num(res['map'])}** (the active run's scores, {res['n_scored']} images); F1 at the "
        f"thresholds: macro {_num(res['macro_f1'])}, micro {_num(res['micro']['f1'])}; exact sets "
        f"{pct(res['exact_match'])} — on {res['n']} images with ground truth ({by_src})."
    )
    return text, _ap_html(res)


def _accuracy(project: Project, has_run: bool) -> tuple[str, str]:
    """The accuracy line and the confusion matrix against the folder names (empty without folder classes); in a
    multi-label project mAP, F1 and per-class AP against the ground truth sets instead (no top-1 confusion)."""
    if project.multi_label:
        return _multi_label_accuracy(project, has_run)
    try:
        res = evaluate(project)
    except NotReadyError as exc:
        text = f"<span class='lb-note'>Accuracy: {error_text(str(exc), exc.hint)}</span>" if has_run else ""
        return text, ""
    by_src = ", ".join(f"{k} {pct(v['accuracy'])} (n={v['n']})" for k, v in res["by_source"].items())
    text = f"**Accuracy vs. folder names: {pct(res['accuracy'])}** on {res['n']} images ({by_src})."
    return text, _confusion_html(res)


def stats(project: Project, counts: ReviewCounts, view_value: str, has_run: bool) -> tuple[str, tuple]:
    """The view to show (the one asked for, if it still exists) and the outputs beside the gallery:
    ``(view dropdown, counts table, histogram, accuracy, confusion, relabel dropdown)``."""
    review_n = counts.needs_review if has_run else 0
    choices = [(f"{VIEW_REVIEW} ({review_n})", VIEW_REVIEW), (VIEW_ALL, VIEW_ALL), (VIEW_UNLABELED, VIEW_UNLABELED)]
    if project.multi_label and has_run:
        choices.insert(1, (f"{VIEW_NEAR} ±{DEFAULT_MARGIN:.2f} ({near_count(project)})", VIEW_NEAR))
    choices += [(f"class: {r['class']} ({r['images']})", r["class"]) for r in counts.classes]
    if view_value not in [c[1] for c in choices]:
        view_value = VIEW_REVIEW
    hist = gr.BarPlot(value=_hist_frame(counts.histogram), visible=bool(counts.histogram))
    acc_text, conf_html = _accuracy(project, has_run)
    multi = project.multi_label
    target = gr.Dropdown(
        choices=relabel_choices(project.classes), multiselect=multi, value=[] if multi else None, label="Relabel to"
    )
    table = [[r["class"], r["images"], r["reviewed"], r["low confidence"]] for r in counts.classes]
    return view_value, (gr.Dropdown(choices=choices, value=view_value), table, hist, acc_text, conf_html, target)


def near_count(project: Project) -> int:
    """How many images are in the :data:`VIEW_NEAR` view (no pass over the images: the scores are cached)."""
    return near_threshold_queue(project, margin=DEFAULT_MARGIN, limit=1).total


def ml_labels_box(project: Project | None, focus) -> object:
    """The focused image's labels as a CheckboxGroup update: every class with the active run's score, the classes
    of its final label ticked (hidden in single-label projects)."""
    if project is None or not project.multi_label:
        return gr.update(visible=False, choices=[], value=[])
    item = final_labels(project, [int(focus)]) if focus is not None else []
    if not item:
        return gr.update(
            visible=True, choices=[], value=[], label="Labels of one image: click a thumbnail to see and change them"
        )
    scores = class_scores(project, [int(focus)]).get(int(focus), {})
    choices = [(f"{c} {scores[c]:.2f}" if c in scores else c, c) for c in project.classes]
    who = {"human": "your label", "accepted": "accepted", "pseudo": "pseudo-label"}.get(item[0].source or "", "none")
    if item[0].source == "human" and not item[0].classes:
        who = "your label: none of the classes"
    return gr.update(
        visible=True,
        choices=choices,
        value=list(item[0].classes),
        label=f"Labels of image {int(focus)} ({who}) — tick or untick to change them; the numbers are scores",
    )


def ml_count_text(project: Project, cls: str, value: float) -> str:
    """What the threshold slider's class would carry at ``value`` (nothing is saved)."""
    got = threshold_counts(project, {cls: float(value)})[cls]
    saved = project.thresholds()
    note = (
        f" · saved {saved[cls]:.2f}"
        if cls in saved
        else " · not set yet: the run's own label sets stand until you move the slider"
    )
    return (
        f"**{md_escape(cls)} ≥ {float(value):.2f}: <span id='review-ml-n'>{got['images']}</span> images** "
        f"({got['pseudo']} pseudo-labels + {got['decided']} decided by people){note}"
    )


def ml_parts(project: Project | None, focus=None, ml_cls=None) -> tuple:
    """The multi-label fields of :class:`ReviewOut` (all hidden in single-label projects)."""
    if project is None or not project.multi_label or not project.classes:
        hidden = gr.update(visible=False)
        return (ml_labels_box(None, None), hidden, hidden, "", hidden, hidden)
    classes = project.classes
    cls = ml_cls if ml_cls in classes else classes[0]
    t = class_thresholds(project)[cls]
    return (
        ml_labels_box(project, focus),
        gr.update(visible=True, choices=classes, value=cls),
        gr.update(visible=True, value=t),
        ml_count_text(project, cls, t),
        gr.update(visible=True),
        gr.update(visible=True),
    )


def _blank() -> ReviewOut:
    return ReviewOut(
        features=empty_state(NO_PROJECT),
        zeroshot="",
        view=gr.Dropdown(choices=[(VIEW_REVIEW, VIEW_REVIEW)], value=VIEW_REVIEW),
        counts=[],
        hist=gr.BarPlot(value=_hist_frame([]), visible=False),
        accuracy="",
        confusion="",
        target=gr.Dropdown(choices=[], value=None),
        gallery=[],
        page_ids=[],
        page_info="",
        page=0,
        selection_text="",
        selection=[],
        **dict(zip(ReviewOut._fields[-6:], ml_parts(None), strict=True)),
    )


def render(
    project: Project | None,
    view_value,
    thr,
    page_no,
    chosen_ids,
    counts: ReviewCounts | None = None,
    focus: int | None = None,
    ml_cls: str | None = None,
) -> ReviewOut:
    """Everything the step shows, from one count of the project (``counts``, computed here if not given) and
    one page of the view; multi-label projects also the labels of ``focus`` (the last clicked image) and the
    threshold of ``ml_cls``."""
    if project is None:
        return _blank()
    has_run = active_run(project) is not None
    counts = counts if counts is not None else review_counts(project, float(thr))
    view_value, st = stats(project, counts, view_value, has_run)
    total = near_count(project) if view_value == VIEW_NEAR else counts.view_size(view_value)
    pics, ids, info, page_no = gallery_view(project, view_value, thr, page_no, chosen_ids, total=total)
    return ReviewOut(
        _features_text(project),
        _zeroshot_text(project),
        *st,
        pics,
        ids,
        info,
        page_no,
        selection_text(has_run, chosen_ids, view_value, len(ids), thr),
        list(chosen_ids or []),
        *ml_parts(project, focus, ml_cls),
    )


def _clip_value(project: Project | None):
    sets = project.features.sets("clip") if project is not None else []
    if not sets:
        return gr.skip()
    s = sets[0]
    return f"{s['model']}:{s['pretrained']}" if s["pretrained"] else s["model"]


def _need(chosen) -> list[int]:
    if not chosen:
        raise gr.Error("Select images first: click their thumbnails (or press Select page).")
    return [int(i) for i in chosen]


# --- events (module level, ctx first; ``build`` wires them with bind) -------------------------------------
@guard
def refresh(ctx: Ctx, key: str) -> RefreshOut:
    """Opening the step: the needs-review queue at 0.5 (everything when nothing needs review), first page."""
    project = ctx.open(key, required=False)
    has_run = project is not None and active_run(project) is not None
    counts = review_counts(project, 0.5) if project is not None else None
    view_value = VIEW_ALL if has_run and not counts.needs_review else VIEW_REVIEW  # never an empty first page
    setup = gr.Accordion(
        open=not has_run, label="① Features · ② Zero-shot" + (" — done; open to recompute" if has_run else "")
    )
    return RefreshOut(*render(project, view_value, 0.5, 0, [], counts=counts), _clip_value(project), setup)


@guard
def reload(
    ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, chosen: list[int], focus=None, ml_cls=None
) -> ReviewOut:
    return render(ctx.open(key, required=False), view_value, thr, page_no, chosen, focus=focus, ml_cls=ml_cls)


@guard
def show(ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, chosen: list[int]) -> GalleryOut:
    """The gallery at ``page_no`` with ``chosen`` selected (nothing beside it changes)."""
    project = ctx.open(key)
    pics, ids, info, page_no = gallery_view(project, view_value, thr, page_no, chosen)
    has_run = active_run(project) is not None
    text = selection_text(has_run, chosen, view_value, len(ids), thr)
    return GalleryOut(pics, ids, info, page_no, text, list(chosen or []))


@guard
def change_view(ctx: Ctx, key: str, view_value: str, thr: float) -> GalleryOut:
    return show(ctx, key, view_value, thr, 0, [])


@guard
def turn(ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, chosen: list[int], delta: int) -> GalleryOut:
    return show(ctx, key, view_value, thr, int(page_no or 0) + delta, chosen)


def prev_page(ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, chosen: list[int]) -> GalleryOut:
    return turn(ctx, key, view_value, thr, page_no, chosen, -1)


def next_page(ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, chosen: list[int]) -> GalleryOut:
    return turn(ctx, key, view_value, thr, page_no, chosen, +1)


@guard
def click(
    ctx: Ctx,
    key: str,
    view_value: str,
    thr: float,
    page_no: int,
    chosen: list[int],
    ids: list[int],
    last,
    shift: bool,
    evt: gr.SelectData,
):  # no "-> ClickOut": gradio reads this signature's hints in common.py's namespace (an unknown name hides evt)
    """A click toggles one thumbnail; a shift-click selects every thumbnail from the last click to this one.

    Returns a :class:`ClickOut` (every field skipped for a click outside the page).
    """
    chosen = list(chosen or [])
    idx = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else None)
    if idx is None or idx >= len(ids or []):
        return ClickOut(*(gr.skip(),) * len(ClickOut._fields))
    image_id = int(ids[idx])
    if shift and last is not None and last in ids:
        chosen = select_range(ids, chosen, last, image_id)
    else:
        chosen = [i for i in chosen if i != image_id] if image_id in chosen else [*chosen, image_id]
    return ClickOut(*show(ctx, key, view_value, thr, page_no, chosen), image_id, ml_labels_box(ctx.open(key), image_id))


@guard
def select_ids(ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, text: str) -> GalleryOut:
    """Select images by id (comma-separated) — for scripts and the API."""
    chosen = [int(t) for t in str(text or "").replace(" ", "").split(",") if t]
    return show(ctx, key, view_value, thr, page_no, chosen)


@guard
def select_page(
    ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, chosen: list[int], ids: list[int]
) -> GalleryOut:
    merged = list(dict.fromkeys([*(chosen or []), *(ids or [])]))
    return show(ctx, key, view_value, thr, page_no, merged)


@guard
def clear(ctx: Ctx, key: str, view_value: str, thr: float, page_no: int) -> GalleryOut:
    return show(ctx, key, view_value, thr, page_no, [])


@guard
def accept(
    ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, chosen: list[int], focus=None, ml_cls=None
) -> ReviewOut:
    project = ctx.open(key)
    n = accept_pseudo_labels(project, _need(chosen))
    skipped = len(chosen) - n
    gr.Info(
        f"Accepted {n} pseudo-label(s)" + (f"; {skipped} kept their own label" if skipped else "") + ".", duration=5
    )
    return render(project, view_value, thr, page_no, [], focus=focus, ml_cls=ml_cls)


@guard
def relabel(
    ctx: Ctx,
    key: str,
    view_value: str,
    thr: float,
    page_no: int,
    chosen: list[int],
    target_value,
    focus=None,
    ml_cls=None,
) -> ReviewOut:
    project = ctx.open(key)
    ids = _need(chosen)
    if not target_value:
        raise gr.Error("Pick the class to relabel to in 'Relabel to' first.")
    n = set_human_labels(project, ids, target_value)
    shown = ", ".join(target_value) if isinstance(target_value, list) else target_value
    gr.Info(f"Labeled {n} image(s) as {shown}.", duration=5)
    return render(project, view_value, thr, page_no, [], focus=focus, ml_cls=ml_cls)


@guard
def relabel_digit(
    ctx: Ctx, k: int, key: str, view_value: str, thr: float, page_no: int, chosen: list[int], focus=None, ml_cls=None
) -> ReviewOut:
    """Key ``k`` (1–9): relabel the selection to the k-th class."""
    project = ctx.open(key)
    classes = project.classes
    if k > len(classes):
        raise gr.Error(f"There is no class {k}: the project has {len(classes)} classes.")
    target = [classes[k - 1]] if project.multi_label else classes[k - 1]
    return relabel(ctx, key, view_value, thr, page_no, chosen, target, focus, ml_cls)


@guard
def unsure(
    ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, chosen: list[int], focus=None, ml_cls=None
) -> ReviewOut:
    project = ctx.open(key)
    n = mark_unsure(project, _need(chosen))
    gr.Info(f"Marked {n} image(s) unsure: they are in the 'needs review' queue.", duration=5)
    return render(project, view_value, thr, page_no, [], focus=focus, ml_cls=ml_cls)


@guard
def undo(ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, focus=None, ml_cls=None) -> ReviewOut:
    """Undo the newest change: a label edit, a toggle, a bulk add/remove or a threshold change."""
    project = ctx.open(key)
    undo_last(project)
    return render(project, view_value, thr, page_no, [], focus=focus, ml_cls=ml_cls)


@guard
def bulk(ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, focus=None, ml_cls=None) -> ReviewOut:
    """Accept every pseudo-label at or above the threshold (people's own labels are kept)."""
    project = ctx.open(key)
    if active_run(project) is None:
        raise gr.Error("There are no pseudo-labels yet: run zero-shot (②) first.")
    n = accept_pseudo_labels(project, min_score=float(thr))
    gr.Info(f"Accepted {n} pseudo-labels with confidence ≥ {float(thr):.2f} (your own labels were kept).", duration=5)
    return render(project, view_value, thr, page_no, [], focus=focus, ml_cls=ml_cls)


# --- multi-label: toggles, add/remove for the selection, thresholds -----------------------------------------
def _need_multi(project: Project) -> None:
    if not project.multi_label:
        raise gr.Error("This is for multi-label projects: relabel the selection instead.")


@guard
def ml_toggle(
    ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, chosen: list[int], focus, ml_cls, checked
) -> ReviewOut:
    """The focused image's checkboxes changed: its human label becomes the ticked classes (undoable)."""
    project = ctx.open(key)
    _need_multi(project)
    if focus is None:
        raise gr.Error("Click a thumbnail first: its labels show here.")
    res = set_image_labels(project, int(focus), list(checked or []))
    if res["changed"]:
        what = ", ".join([f"+{c}" for c in res["added"]] + [f"−{c}" for c in res["removed"]])
        what += "" if checked else (" → none of the classes" if what else "none of the classes")
        gr.Info(f"Image {int(focus)}: {what} (press z to undo).", duration=4)
    return render(project, view_value, thr, page_no, chosen, focus=focus, ml_cls=ml_cls)


def _ml_edit(ctx, key, view_value, thr, page_no, chosen, focus, ml_cls, mode: str) -> ReviewOut:
    project = ctx.open(key)
    _need_multi(project)
    ids = _need(chosen)
    if not ml_cls:
        raise gr.Error("Pick the class to add or remove first (the class box beside the threshold).")
    res = edit_label(project, ids, ml_cls, mode)
    skipped = res["selected"] - res["changed"]
    verb = "Added" if mode == "add" else "Removed"
    prep = "to" if mode == "add" else "from"
    note = f"; {skipped} did not have it" if skipped else ""  # (add writes every selected image)
    gr.Info(f"{verb} {res['class']} {prep} {res['changed']} image(s){note}.", duration=5)
    return render(project, view_value, thr, page_no, [], focus=focus, ml_cls=ml_cls)


@guard
def ml_add(
    ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, chosen: list[int], focus=None, ml_cls=None
) -> ReviewOut:
    """Add the picked class to every selected image (its other classes kept): one undoable action."""
    return _ml_edit(ctx, key, view_value, thr, page_no, chosen, focus, ml_cls, "add")


@guard
def ml_remove(
    ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, chosen: list[int], focus=None, ml_cls=None
) -> ReviewOut:
    """Remove the picked class from every selected image that has it: one undoable action."""
    return _ml_edit(ctx, key, view_value, thr, page_no, chosen, focus, ml_cls, "remove")


class ThresholdOut(NamedTuple):
    """The class picker changed: its threshold and count."""

    ml_threshold: object
    ml_count: str


@guard
def ml_pick(ctx: Ctx, key: str, ml_cls: str) -> ThresholdOut:
    project = ctx.open(key)
    _need_multi(project)
    t = class_thresholds(project).get(ml_cls)
    if t is None:
        raise gr.Error(f"{ml_cls!r} is not a class of this project.")
    return ThresholdOut(gr.update(value=t), ml_count_text(project, ml_cls, t))


@guard
def ml_live(ctx: Ctx, key: str, ml_cls: str, value: float) -> str:
    """The slider moves: how many images would carry the class at its value (nothing saved yet)."""
    project = ctx.open(key)
    _need_multi(project)
    return ml_count_text(project, ml_cls, float(value))


@guard
def ml_save(
    ctx: Ctx, key: str, view_value: str, thr: float, page_no: int, chosen: list[int], focus, ml_cls, value
) -> ReviewOut:
    """The slider was released: save the class's threshold (undoable); its pseudo-labels follow it."""
    project = ctx.open(key)
    _need_multi(project)
    if ml_cls not in project.classes:
        raise gr.Error("Pick a class for the threshold first.")
    set_thresholds(project, {ml_cls: float(value)})
    return render(project, view_value, thr, page_no, chosen, focus=focus, ml_cls=ml_cls)


def _features_job(root: str, name: str, pretrained: str | None, dino_name: str | None, device: str) -> dict:
    """The background features job: CLIP features, then DINO ones if asked (precision auto, as the CLI)."""
    from ...features import compute_features  # torch: imported by the job, not at the app's start
    from ...precision import choose_encoder

    p = Project(root)
    try:
        # precision auto, as `labeler features` (bf16 where it is native and probed to match fp32)
        clip_model, _ = choose_encoder(p, load_clip(name, pretrained, device=device))
        out = {"clip": compute_features(p, clip_model)}
        if dino_name:
            dino_model, _ = choose_encoder(p, load_dino(dino_name, device=device))
            out["dino"] = compute_features(p, dino_model)
        return out
    finally:
        p.close()


def _label_job(root: str, method, params) -> dict:
    p = Project(root)
    try:
        return method.run(p, params)
    finally:
        p.close()


@guard
def start_features(ctx: Ctx, key: str, clip_choice: str, dino_choice: str, device_choice: str) -> str:
    project = ctx.open(key)
    if project.image_count() == 0:
        raise gr.Error("There are no images yet: import some in step 2 first.")
    name, pretrained = split_clip(clip_choice)
    dino_name = None if (dino_choice or "none") == "none" else dino_choice.strip()
    root = str(project.root)
    work = functools.partial(_features_job, root, name, pretrained, dino_name, device_choice)
    run_in_background(
        root, "features", work, label=f"features {clip_choice}" + (f" + {dino_name}" if dino_name else "")
    )
    return "Computing features… progress is in the jobs panel."


@guard
def start_zeroshot(ctx: Ctx, key: str, templates_value: str, mode: str, device_choice: str) -> str:
    project = ctx.open(key)
    if len(project.classes) < 2:
        raise gr.Error("Set at least two classes first (step 3).")
    if not project.features.sets("clip"):
        raise gr.Error("Compute CLIP features first (① on the left).")
    method = get_method("zeroshot")
    params = method.params_from({"templates": templates_value, "descriptions": mode, "device": device_choice})
    root = str(project.root)
    run_in_background(root, "label", functools.partial(_label_job, root, method, params), label="zero-shot")
    return "Running zero-shot… progress is in the jobs panel."


def _cdul_job(root: str, grid: int, params) -> dict:
    """Snippet features for the newest CLIP set's model (cached ones are skipped), then ``cdul-init``."""
    from ...features import compute_snippet_features

    p = Project(root)
    try:
        fset = p.features.latest("clip")
        model = load_clip(fset["model"], fset["pretrained"] or None, device=params.device)
        snippets = compute_snippet_features(p, model, grid=grid)
        return {"snippets": snippets, "label": get_method("cdul-init").run(p, params)}
    finally:
        p.close()


@guard
def start_cdul(ctx: Ctx, key: str, grid: float, temperature: str, threshold: float, device_choice: str) -> str:
    """CDUL's pseudo-labels (multi-label projects): snippet features, then the aggregation, in one background job."""
    from ...methods.cdul import cost_line

    project = ctx.open(key)
    if not project.multi_label:
        raise gr.Error("CDUL labels multi-label projects; this one is single-label (use zero-shot).")
    if len(project.classes) < 2:
        raise gr.Error("Set at least two classes first (step 3).")
    if not project.features.sets("clip"):
        raise gr.Error("Compute CLIP features first (① on the left).")
    method = get_method("cdul-init")
    params = method.params_from(
        {"grid": int(grid), "temperature": temperature, "threshold": float(threshold), "device": device_choice}
    )
    root = str(project.root)
    cost = cost_line(project, int(grid))
    run_in_background(root, "label", functools.partial(_cdul_job, root, int(grid), params), label="CDUL")
    return f"Running CDUL… progress is in the jobs panel. {cost}."


@guard
def finished(
    ctx: Ctx,
    key: str,
    marker: str,
    view_value: str,
    thr: float,
    page_no: int,
    chosen: list[int],
    focus=None,
    ml_cls=None,
):
    """A background job of this project ended: show it (its error in the features or zero-shot status).

    Returns a :class:`ReviewOut` (every field skipped when the job is none of this step's).
    """
    task = finished_task(key, marker, {"features", "label", "train", "import"})
    if task is None:
        return ReviewOut(*(gr.skip(),) * len(ReviewOut._fields))
    out = render(ctx.open(key), view_value, thr, page_no, chosen, focus=focus, ml_cls=ml_cls)
    if task.status != "done":
        note = f"**{task.label} {task.status}:** {error_text(task.error, task.hint)}"
        out = out._replace(**{"features" if task.kind == "features" else "zeroshot": note})
    return out


# --- layout and wiring ---------------------------------------------------------------------------------
def _setup_column_features(clip_choices, dino_choices, clip_default) -> dict:
    with gr.Column(scale=1, elem_classes=["lb-card"]):
        gr.Markdown("#### ① Features")
        with gr.Row():
            clip = gr.Dropdown(
                clip_choices,
                value=clip_default,
                label="CLIP model",
                allow_custom_value=True,
                elem_id="pl-clip",
                scale=3,
                info="name:pretrained, hf-hub:org/repo, or name:/path/to/weights",
            )
            dino = gr.Dropdown(
                dino_choices, value="none", label="DINO (optional)", allow_custom_value=True, elem_id="pl-dino", scale=2
            )
        with gr.Row():
            device = gr.Dropdown(
                ["auto", "cpu", "cuda", "mps"],
                value="auto",
                label="Device",
                scale=1,
                info="auto = a CUDA GPU if torch sees one, else Apple MPS, else the CPU",
            )
            feat_btn = gr.Button("Compute features", variant="primary", elem_id="pl-features", scale=2)
        feat_status = gr.Markdown(elem_id="pl-features-status")
    return {"clip": clip, "dino": dino, "device": device, "feat_btn": feat_btn, "feat_status": feat_status}


def _setup_column_zeroshot() -> dict:
    with gr.Column(scale=1, elem_classes=["lb-card"]):
        gr.Markdown("#### ② Zero-shot")
        with gr.Row():
            templates = gr.Radio(
                list(TEMPLATE_SETS), value="simple", label="Prompt templates", info="photo: 1 · simple: 7 · openai: 80"
            )
            desc_mode = gr.Radio(
                ["none", "llm", "both"],
                value="both",
                label="Descriptions",
                info="both: templates + your enabled descriptions",
            )
        zs_btn = gr.Button("Run zero-shot", variant="primary", elem_id="pl-zeroshot")
        zs_status = gr.Markdown(elem_id="pl-zeroshot-status")
    return {"templates": templates, "desc_mode": desc_mode, "zs_btn": zs_btn, "zs_status": zs_status}


def _setup_column_cdul() -> dict:
    with gr.Column(scale=1, elem_classes=["lb-card"]):
        gr.Markdown("#### ②′ CDUL (multi-label)")
        with gr.Row():
            grid = gr.Slider(
                1, 6, value=3, step=1, label="Snippet grid", elem_id="pl-cdul-grid",
                info="grid × grid crops: grid² + 1 CLIP forwards per image (3: 10), once, cached",
            )  # fmt: skip
            temperature = gr.Radio(
                ["clip", "raw"], value="clip", label="Temperature", elem_id="pl-cdul-temperature",
                info="clip: CLIP's logit_scale.exp() (100) · raw: the reproduction's ln 100 ≈ 4.6 (a nearly flat "
                "softmax)",
            )  # fmt: skip
        threshold = gr.Slider(
            0, 1, value=0.0, step=0.01, label="Aggregation threshold", elem_id="pl-cdul-threshold",
            info="a class takes its snippets' max where the max reaches this, else their min. It only means "
            "something where snippet scores cross it: at 0 the max is always used; with the raw temperature's "
            "flat softmax (≈ 1/classes) anything ≳ 0.1 means the min everywhere",
        )  # fmt: skip
        btn = gr.Button("Run CDUL", variant="primary", elem_id="pl-cdul")
        status = gr.Markdown(elem_id="pl-cdul-status")
    return {"grid": grid, "temperature": temperature, "threshold": threshold, "btn": btn, "status": status}


def _review_column() -> dict:
    c: dict = {}
    with gr.Column(scale=3):
        with gr.Row():
            c["view"] = gr.Dropdown(
                label="Show", choices=[(VIEW_REVIEW, VIEW_REVIEW)], value=VIEW_REVIEW, scale=2, elem_id="review-view"
            )
            c["threshold"] = gr.Slider(
                0.0,
                1.0,
                value=0.5,
                step=0.05,
                label="Confidence threshold",
                scale=2,
                info="pseudo-labels below it need review",
                elem_id="review-threshold",
            )
        with gr.Row(equal_height=True):
            c["sel_text"] = gr.Markdown(elem_id="review-selection", scale=4)
            c["page_info"] = gr.Markdown(elem_classes=["lb-right"], elem_id="review-page", scale=1)
        with gr.Row():
            c["accept_btn"] = gr.Button("Accept selected (a)", variant="primary", size="sm", elem_id="review-accept")
            c["relabel_btn"] = gr.Button("Relabel selected to →", size="sm", elem_id="review-relabel")
            c["target"] = gr.Dropdown(
                label="Relabel to", choices=[], scale=2, elem_id="review-target", show_label=False, container=False
            )
            c["unsure_btn"] = gr.Button("Mark unsure (u)", size="sm", elem_id="review-unsure")
        # multi-label only (hidden in single-label projects): one class's threshold and add/remove, one image's labels
        with gr.Row(equal_height=False):
            c["ml_class"] = gr.Dropdown(
                label="Class", choices=[], scale=1, visible=False, elem_id="review-ml-class", min_width=140
            )
            c["ml_threshold"] = gr.Slider(
                0.0,
                1.0,
                value=0.5,
                step=0.01,
                label="Its threshold",
                info="a score at least this gives the class · saved on release",
                scale=3,
                visible=False,
                elem_id="review-ml-threshold",
            )
        with gr.Row(equal_height=True):
            c["ml_count"] = gr.Markdown(elem_id="review-ml-count")
            c["ml_add"] = gr.Button(
                "Add to selected", size="sm", visible=False, elem_id="review-ml-add", scale=0, min_width=140
            )
            c["ml_remove"] = gr.Button(
                "Remove from selected", size="sm", visible=False, elem_id="review-ml-remove", scale=0, min_width=160
            )
        c["ml_labels"] = gr.CheckboxGroup(
            choices=[], value=[], visible=False, elem_id="review-ml-labels", elem_classes=["lb-ml-labels"]
        )
        c["gallery"] = gr.Gallery(
            columns=6,
            height=400,
            allow_preview=False,
            object_fit="cover",
            fit_columns=False,  # a few images keep their size (gradio would stretch them over the row)
            show_label=False,
            elem_id="review-gallery",
            buttons=[],
        )
        with gr.Row():
            c["prev_btn"] = gr.Button("← Prev (p)", size="sm", elem_id="review-prev")
            c["next_btn"] = gr.Button("Next (n) →", size="sm", elem_id="review-next")
            c["all_btn"] = gr.Button("Select page", size="sm", elem_id="review-select-page")
            c["none_btn"] = gr.Button("Clear selection", size="sm", elem_id="review-clear")
            c["bulk_btn"] = gr.Button("Accept all ≥ threshold", size="sm", elem_id="review-bulk")
            c["undo_btn"] = gr.Button("↶ Undo (z)", size="sm", elem_id="review-undo")
            c["preview_btn"] = preview.opener("review")
        c["digit_btns"] = [
            gr.Button(str(k), visible="hidden", elem_id=f"review-digit-{k}") for k in range(1, DIGITS + 1)
        ]
    return c


def _stats_column() -> dict:
    with gr.Column(scale=2):
        counts = gr.Dataframe(
            headers=["class", "images", "reviewed", "low confidence"],
            interactive=False,
            max_height=230,
            label="Per class",
            elem_id="review-counts",
        )
        hist = gr.BarPlot(
            x="bin",
            y="images",
            title="Top-1 confidence",
            height=200,
            x_title="confidence",
            y_title="images",
            elem_id="review-hist",
            sort=None,
            x_label_angle=-45,
        )
        acc = gr.Markdown(elem_id="review-accuracy")
        confusion = gr.HTML(elem_id="review-confusion")
    return {"counts": counts, "hist": hist, "acc": acc, "confusion": confusion}


def build(ctx: Ctx) -> dict:
    with (
        gr.Accordion("① Features · ② Zero-shot", open=True, elem_id="pl-setup") as setup_box,
        gr.Row(equal_height=False),
    ):
        f = _setup_column_features(*_model_choices())
        z = _setup_column_zeroshot()
        cd = _setup_column_cdul()
    gr.Markdown("#### ③ Review")
    with gr.Row(equal_height=False):
        r = _review_column()
        s = _stats_column()
    selection = gr.State([])  # selected image ids
    last_click = gr.State(None)  # image id of the last clicked thumbnail (the anchor of a shift-click range)
    shift = gr.Checkbox(False, visible=False)  # set by SHIFT_JS from the click that fired the select event
    page_ids = gr.State([])  # image ids shown on the current page, in gallery order
    page = gr.State(0)
    view, threshold = r["view"], r["threshold"]

    gallery_parts = dict(
        gallery=r["gallery"],
        page_ids=page_ids,
        page_info=r["page_info"],
        page=page,
        selection_text=r["sel_text"],
        selection=selection,
    )
    all_parts = dict(
        features=f["feat_status"],
        zeroshot=z["zs_status"],
        view=view,
        counts=s["counts"],
        hist=s["hist"],
        accuracy=s["acc"],
        confusion=s["confusion"],
        target=r["target"],
        **gallery_parts,
        **{k: r[k] for k in ("ml_labels", "ml_class", "ml_threshold", "ml_count", "ml_add", "ml_remove")},
    )
    gallery_outs = wire(GalleryOut, **gallery_parts)
    outs = wire(ReviewOut, **all_parts)
    nav = [ctx.project, view, threshold, page]
    ml_in = [last_click, r["ml_class"]]  # the focused image and the class of the multi-label tools

    f["feat_btn"].click(
        bind(start_features, ctx), [ctx.project, f["clip"], f["dino"], f["device"]], [f["feat_status"]],
        api_name="features_start",
    )  # fmt: skip
    z["zs_btn"].click(
        bind(start_zeroshot, ctx), [ctx.project, z["templates"], z["desc_mode"], f["device"]], [z["zs_status"]],
        api_name="zeroshot_start",
    )  # fmt: skip
    cd["btn"].click(
        bind(start_cdul, ctx), [ctx.project, cd["grid"], cd["temperature"], cd["threshold"], f["device"]],
        [cd["status"]], api_name="cdul_start",
    )  # fmt: skip
    ctx.finished.change(
        bind(finished, ctx), [ctx.project, ctx.finished, view, threshold, page, selection, *ml_in], outs,
        api_visibility="private",
    )  # fmt: skip
    view.input(bind(change_view, ctx), [ctx.project, view, threshold], gallery_outs, api_name="review_view")
    threshold.release(bind(reload, ctx), [*nav, selection, *ml_in], outs, api_name="review_threshold")
    r["gallery"].select(
        bind(click, ctx), [*nav, selection, page_ids, last_click, shift],
        wire(ClickOut, **gallery_parts, last_click=last_click, ml_labels=r["ml_labels"]), js=SHIFT_JS,
        api_visibility="private",
    )  # fmt: skip
    r["prev_btn"].click(bind(prev_page, ctx), [*nav, selection], gallery_outs, api_visibility="private")
    r["next_btn"].click(bind(next_page, ctx), [*nav, selection], gallery_outs, api_name="review_next_page")
    r["all_btn"].click(bind(select_page, ctx), [*nav, selection, page_ids], gallery_outs, api_name="review_select_page")
    r["none_btn"].click(bind(clear, ctx), nav, gallery_outs, api_name="review_clear")
    ids_box = gr.Textbox(visible=False)
    ids_box.submit(bind(select_ids, ctx), [*nav, ids_box], gallery_outs, api_name="review_select_ids")
    r["accept_btn"].click(bind(accept, ctx), [*nav, selection, *ml_in], outs, api_name="review_accept")
    r["relabel_btn"].click(bind(relabel, ctx), [*nav, selection, r["target"], *ml_in], outs, api_name="review_relabel")
    r["unsure_btn"].click(bind(unsure, ctx), [*nav, selection, *ml_in], outs, api_name="review_unsure")
    r["bulk_btn"].click(bind(bulk, ctx), [*nav, *ml_in], outs, api_name="review_accept_above")
    r["undo_btn"].click(bind(undo, ctx), [*nav, *ml_in], outs, api_name="review_undo")
    for k, btn in enumerate(r["digit_btns"], start=1):
        btn.click(bind(relabel_digit, ctx, k), [*nav, selection, *ml_in], outs, api_visibility="private")
    # multi-label: one image's toggles, add/remove for the selection, a class's threshold with its live count
    r["ml_labels"].input(
        bind(ml_toggle, ctx), [*nav, selection, *ml_in, r["ml_labels"]], outs, api_name="review_ml_toggle"
    )
    r["ml_add"].click(bind(ml_add, ctx), [*nav, selection, *ml_in], outs, api_name="review_ml_add")
    r["ml_remove"].click(bind(ml_remove, ctx), [*nav, selection, *ml_in], outs, api_name="review_ml_remove")
    r["ml_class"].input(
        bind(ml_pick, ctx), [ctx.project, r["ml_class"]], wire(ThresholdOut, ml_threshold=r["ml_threshold"],
        ml_count=r["ml_count"]), api_visibility="private",
    )  # fmt: skip
    r["ml_threshold"].input(
        bind(ml_live, ctx), [ctx.project, r["ml_class"], r["ml_threshold"]], [r["ml_count"]],
        api_name="review_ml_count", trigger_mode="always_last",
    )  # fmt: skip
    r["ml_threshold"].release(
        bind(ml_save, ctx), [*nav, selection, *ml_in, r["ml_threshold"]], outs, api_name="review_ml_threshold"
    )
    # the preview of one image (click Preview, the key v, or double-click a thumbnail); its label keys then redraw
    preview.build(
        ctx,
        "review",
        r["preview_btn"],
        page_ids,
        last_click,
        after=(bind(reload, ctx), [*nav, selection, *ml_in], outs),
    )
    refresh_outs = wire(RefreshOut, **all_parts, clip=f["clip"], setup=setup_box)
    return {"refresh": bind(refresh, ctx), "outputs": refresh_outs, "api_name": "review_refresh"}


#: Fills the select event's last input (the hidden ``shift`` box) from the click that fired it.
SHIFT_JS = "(...args) => [...args.slice(0, -1), !!window.lbShiftClick]"

from ..assets import script as _asset_script  # noqa: E402  (here, beside the constant it defines)

#: Keyboard shortcuts of the review gallery (installed with the page head; ignored while typing), and the
#: shift state of the last click (read by SHIFT_JS: gr.SelectData carries no modifier keys).
SHORTCUTS_JS = _asset_script("shortcuts.js")  # assets/shortcuts.js
