"""Step 5 · Pseudo-labels: compute features, run zero-shot, and review.

Review: a gallery per class (or the "needs review" queue) sorted by confidence, lowest first;
click thumbnails to select them, then accept, relabel or mark them unsure. Counts per class,
a confidence histogram, and — where images sit in class-named folders — accuracy and a
confusion matrix. Shift-click selects every thumbnail between the last clicked one and this one.
Keys: ``a`` accept, ``u`` unsure, ``n``/``p`` next/previous page, ``z`` undo the last change, ``1``–``9``
relabel the selection to that class.
"""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from ...device import resolve_device
from ...errors import NotReadyError
from ...evaluate import evaluate
from ...features import compute_features
from ...ingest import thumbnail_for
from ...jobs import run_in_background
from ...labels import accept_pseudo_labels, active_run, set_human_labels
from ...methods import get_method
from ...models import list_models, load_clip, load_dino
from ...precision import choose_encoder
from ...project import Project
from ...prompts import TEMPLATE_SETS
from ...review import (
    VIEW_ALL,
    VIEW_REVIEW,
    VIEW_UNLABELED,
    class_count_rows,
    confidence_histogram,
    mark_unsure,
    review_items,
)
from ..common import (
    NO_PROJECT,
    Ctx,
    empty_state,
    error_text,
    finished_task,
    guard,
    md_escape,
    pct,
    select_range,
    thumb_caption,
    undo_last,
)

PAGE = 36
MAX_CONFUSION = 30
DIGITS = 9


def relabel_choices(classes: list[str]) -> list[tuple[str, str]]:
    """(shown, value) pairs of the relabel dropdown: the first nine classes show their digit key ("3 · ship")."""
    return [(f"{i} · {c}" if i <= DIGITS else c, c) for i, c in enumerate(classes, start=1)]


VIEW_REVIEW, VIEW_ALL, VIEW_UNLABELED = VIEW_REVIEW, VIEW_ALL, VIEW_UNLABELED


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


def build(ctx: Ctx) -> dict:
    clip_choices, dino_choices, clip_default = _model_choices()
    with (
        gr.Accordion("① Features · ② Zero-shot", open=True, elem_id="pl-setup") as setup_box,
        gr.Row(equal_height=False),
    ):
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
                    dino_choices,
                    value="none",
                    label="DINO (optional)",
                    allow_custom_value=True,
                    elem_id="pl-dino",
                    scale=2,
                )
            with gr.Row():
                device = gr.Dropdown(
                    ["auto", "cpu", "cuda", "mps"],
                    value="auto",
                    label="Device",
                    scale=1,
                    info=f"auto = {resolve_device('auto')}",
                )
                feat_btn = gr.Button("Compute features", variant="primary", elem_id="pl-features", scale=2)
            feat_status = gr.Markdown(elem_id="pl-features-status")
        with gr.Column(scale=1, elem_classes=["lb-card"]):
            gr.Markdown("#### ② Zero-shot")
            with gr.Row():
                templates = gr.Radio(
                    list(TEMPLATE_SETS),
                    value="simple",
                    label="Prompt templates",
                    info="photo: 1 · simple: 7 · openai: 80",
                )
                desc_mode = gr.Radio(
                    ["none", "llm", "both"],
                    value="both",
                    label="Descriptions",
                    info="both: templates + your enabled descriptions",
                )
            zs_btn = gr.Button("Run zero-shot", variant="primary", elem_id="pl-zeroshot")
            zs_status = gr.Markdown(elem_id="pl-zeroshot-status")
    gr.Markdown("#### ③ Review")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                view = gr.Dropdown(
                    label="Show",
                    choices=[(VIEW_REVIEW, VIEW_REVIEW)],
                    value=VIEW_REVIEW,
                    scale=2,
                    elem_id="review-view",
                )
                threshold = gr.Slider(
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
                sel_text = gr.Markdown(elem_id="review-selection", scale=4)
                page_info = gr.Markdown(elem_classes=["lb-right"], elem_id="review-page", scale=1)
            with gr.Row():
                accept_btn = gr.Button("Accept selected (a)", variant="primary", size="sm", elem_id="review-accept")
                relabel_btn = gr.Button("Relabel selected to →", size="sm", elem_id="review-relabel")
                target = gr.Dropdown(
                    label="Relabel to", choices=[], scale=2, elem_id="review-target", show_label=False, container=False
                )
                unsure_btn = gr.Button("Mark unsure (u)", size="sm", elem_id="review-unsure")
            gallery = gr.Gallery(
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
                prev_btn = gr.Button("← Prev (p)", size="sm", elem_id="review-prev")
                next_btn = gr.Button("Next (n) →", size="sm", elem_id="review-next")
                all_btn = gr.Button("Select page", size="sm", elem_id="review-select-page")
                none_btn = gr.Button("Clear selection", size="sm", elem_id="review-clear")
                bulk_btn = gr.Button("Accept all ≥ threshold", size="sm", elem_id="review-bulk")
                undo_btn = gr.Button("↶ Undo (z)", size="sm", elem_id="review-undo")
            digit_btns = [
                gr.Button(str(k), visible="hidden", elem_id=f"review-digit-{k}") for k in range(1, DIGITS + 1)
            ]
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

    selection = gr.State([])  # selected image ids
    last_click = gr.State(None)  # image id of the last clicked thumbnail (the anchor of a shift-click range)
    shift = gr.Checkbox(False, visible=False)  # set by SHIFT_JS from the click that fired the select event
    page_ids = gr.State([])  # image ids shown on the current page, in gallery order
    page = gr.State(0)

    # --- rendering -----------------------------------------------------------------------------------------
    def gallery_view(project, view_value, thr, page_no, chosen_ids):
        chosen = set(chosen_ids or [])
        if active_run(project) is None and view_value == VIEW_REVIEW:
            items = []
        else:
            items = review_items(project, view_value or VIEW_REVIEW, float(thr))
        pages = max(1, -(-len(items) // PAGE))
        page_no = min(max(0, int(page_no or 0)), pages - 1)
        shown = items[page_no * PAGE : (page_no + 1) * PAGE]
        pics = []
        ids = []
        for it in shown:
            thumb = thumbnail_for(project, it["id"], it["sha256"], it["path"])
            if thumb:
                pics.append((thumb, thumb_caption(it, chosen)))
                ids.append(it["id"])
        info = f"{len(items)} images · page {page_no + 1}/{pages}" if items else ""
        return gr.Gallery(value=pics, visible=bool(pics), selected_index=None), ids, info, page_no

    def selection_text(project, chosen_ids, view_value, n_items, thr):
        n = len(chosen_ids or [])
        if active_run(project) is None:
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
            return empty_state("No images in this view: pick another one in <b>Show</b>.")
        hint = "Click thumbnails to select them (click again to unselect; shift-click selects a range)."
        if n:
            return f"**{n} selected** — accept, relabel or mark unsure below. {hint}"
        if view_value == VIEW_REVIEW:
            return f"Pseudo-labels below the threshold or marked unsure, least confident first. {hint}"
        return hint

    def stats(project, thr, view_value):
        classes = project.classes
        review_n = len(review_items(project, VIEW_REVIEW, float(thr))) if active_run(project) else 0
        rows = class_count_rows(project, float(thr))
        choices = [(f"{VIEW_REVIEW} ({review_n})", VIEW_REVIEW), (VIEW_ALL, VIEW_ALL), (VIEW_UNLABELED, VIEW_UNLABELED)]
        choices += [(f"class: {r['class']} ({r['images']})", r["class"]) for r in rows]
        if view_value not in [c[1] for c in choices]:
            view_value = VIEW_REVIEW
        hist_rows = confidence_histogram(project)
        hist_df = gr.BarPlot(value=_hist_frame(hist_rows), visible=bool(hist_rows))
        try:
            res = evaluate(project)
            by_src = ", ".join(f"{k} {pct(v['accuracy'])} (n={v['n']})" for k, v in res["by_source"].items())
            acc_text = f"**Accuracy vs. folder names: {pct(res['accuracy'])}** on {res['n']} images ({by_src})."
            conf_html = _confusion_html(res)
        except NotReadyError as exc:
            acc_text = (
                f"<span class='lb-note'>Accuracy: {error_text(str(exc), exc.hint)}</span>"
                if active_run(project)
                else ""
            )
            conf_html = ""
        multi = project.multi_label
        target_update = gr.Dropdown(
            choices=relabel_choices(classes), multiselect=multi, value=[] if multi else None, label="Relabel to"
        )
        table = [[r["class"], r["images"], r["reviewed"], r["low confidence"]] for r in rows]
        return view_value, (
            gr.Dropdown(choices=choices, value=view_value),
            table,
            hist_df,
            acc_text,
            conf_html,
            target_update,
        )

    gallery_outs = [gallery, page_ids, page_info, page, sel_text, selection]
    stats_outs = [view, counts, hist, acc, confusion, target]
    top_outs = [feat_status, zs_status]
    outs = [*top_outs, *stats_outs, *gallery_outs]

    def render(project, view_value, thr, page_no, chosen_ids):
        if project is None:
            blank = empty_state(NO_PROJECT)
            return (
                blank,
                "",
                gr.Dropdown(choices=[(VIEW_REVIEW, VIEW_REVIEW)], value=VIEW_REVIEW),
                [],
                gr.BarPlot(value=_hist_frame([]), visible=False),
                "",
                "",
                gr.Dropdown(choices=[], value=None),
                [],
                [],
                "",
                0,
                "",
                [],
            )
        view_value, st = stats(project, thr, view_value)
        pics, ids, info, page_no = gallery_view(project, view_value, thr, page_no, chosen_ids)
        return (
            _features_text(project),
            _zeroshot_text(project),
            *st,
            pics,
            ids,
            info,
            page_no,
            selection_text(project, chosen_ids, view_value, len(ids), thr),
            list(chosen_ids or []),
        )

    # --- events --------------------------------------------------------------------------------------------
    @guard
    def refresh(key):
        project = ctx.open(key, required=False)
        view_value = VIEW_REVIEW
        if project is not None and active_run(project) is not None and not review_items(project, VIEW_REVIEW, 0.5):
            view_value = VIEW_ALL  # nothing to review: show everything rather than an empty page
        has_run = project is not None and active_run(project) is not None
        setup = gr.Accordion(
            open=not has_run, label="① Features · ② Zero-shot" + (" — done; open to recompute" if has_run else "")
        )
        return (*render(project, view_value, 0.5, 0, []), _clip_value(project), setup)

    def _clip_value(project):
        sets = project.features.sets("clip") if project is not None else []
        if not sets:
            return gr.skip()
        s = sets[0]
        return f"{s['model']}:{s['pretrained']}" if s["pretrained"] else s["model"]

    @guard
    def reload(key, view_value, thr, page_no, chosen):
        return render(ctx.open(key, required=False), view_value, thr, page_no, chosen)

    @guard
    def show(key, view_value, thr, page_no, chosen):
        project = ctx.open(key)
        pics, ids, info, page_no = gallery_view(project, view_value, thr, page_no, chosen)
        return pics, ids, info, page_no, selection_text(project, chosen, view_value, len(ids), thr), list(chosen or [])

    @guard
    def change_view(key, view_value, thr):
        return show(key, view_value, thr, 0, [])

    @guard
    def turn(key, view_value, thr, page_no, chosen, delta):
        return show(key, view_value, thr, int(page_no or 0) + delta, chosen)

    @guard
    def click(key, view_value, thr, page_no, chosen, ids, last, shift, evt: gr.SelectData):
        """A click toggles one thumbnail; a shift-click selects every thumbnail from the last click to this one."""
        chosen = list(chosen or [])
        idx = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else None)
        if idx is None or idx >= len(ids or []):
            return (gr.skip(),) * (len(gallery_outs) + 1)
        image_id = int(ids[idx])
        if shift and last is not None and last in ids:
            chosen = select_range(ids, chosen, last, image_id)
        else:
            chosen = [i for i in chosen if i != image_id] if image_id in chosen else [*chosen, image_id]
        return (*show(key, view_value, thr, page_no, chosen), image_id)

    @guard
    def select_ids(key, view_value, thr, page_no, text):
        """Select images by id (comma-separated) — for scripts and the API."""
        chosen = [int(t) for t in str(text or "").replace(" ", "").split(",") if t]
        return show(key, view_value, thr, page_no, chosen)

    @guard
    def select_page(key, view_value, thr, page_no, chosen, ids):
        merged = list(dict.fromkeys([*(chosen or []), *(ids or [])]))
        return show(key, view_value, thr, page_no, merged)

    @guard
    def clear(key, view_value, thr, page_no):
        return show(key, view_value, thr, page_no, [])

    def _need(chosen):
        if not chosen:
            raise gr.Error("Select images first: click their thumbnails (or press Select page).")
        return [int(i) for i in chosen]

    @guard
    def accept(key, view_value, thr, page_no, chosen):
        project = ctx.open(key)
        n = accept_pseudo_labels(project, _need(chosen))
        skipped = len(chosen) - n
        gr.Info(
            f"Accepted {n} pseudo-label(s)" + (f"; {skipped} kept their own label" if skipped else "") + ".", duration=5
        )
        return render(project, view_value, thr, page_no, [])

    @guard
    def relabel(key, view_value, thr, page_no, chosen, target_value):
        project = ctx.open(key)
        ids = _need(chosen)
        if not target_value:
            raise gr.Error("Pick the class to relabel to in 'Relabel to' first.")
        n = set_human_labels(project, ids, target_value)
        shown = ", ".join(target_value) if isinstance(target_value, list) else target_value
        gr.Info(f"Labeled {n} image(s) as {shown}.", duration=5)
        return render(project, view_value, thr, page_no, [])

    def relabel_digit(k):
        @guard
        def handler(key, view_value, thr, page_no, chosen):
            project = ctx.open(key)
            classes = project.classes
            if k > len(classes):
                raise gr.Error(f"There is no class {k}: the project has {len(classes)} classes.")
            return relabel(
                key, view_value, thr, page_no, chosen, [classes[k - 1]] if project.multi_label else classes[k - 1]
            )

        return handler

    @guard
    def unsure(key, view_value, thr, page_no, chosen):
        project = ctx.open(key)
        n = mark_unsure(project, _need(chosen))
        gr.Info(f"Marked {n} image(s) unsure: they are in the 'needs review' queue.", duration=5)
        return render(project, view_value, thr, page_no, [])

    @guard
    def undo(key, view_value, thr, page_no):
        project = ctx.open(key)
        undo_last(project)
        return render(project, view_value, thr, page_no, [])

    @guard
    def bulk(key, view_value, thr, page_no):
        project = ctx.open(key)
        if active_run(project) is None:
            raise gr.Error("There are no pseudo-labels yet: run zero-shot (②) first.")
        n = accept_pseudo_labels(project, min_score=float(thr))
        gr.Info(
            f"Accepted {n} pseudo-labels with confidence ≥ {float(thr):.2f} (your own labels were kept).", duration=5
        )
        return render(project, view_value, thr, page_no, [])

    @guard
    def start_features(key, clip_choice, dino_choice, device_choice):
        project = ctx.open(key)
        if project.image_count() == 0:
            raise gr.Error("There are no images yet: import some in step 2 first.")
        name, pretrained = split_clip(clip_choice)
        dino_name = None if (dino_choice or "none") == "none" else dino_choice.strip()
        root = str(project.root)

        def work():
            p = Project(root)
            try:
                # precision auto, as `labeler features` (bf16 where it is native and probed to match fp32)
                clip_model, _ = choose_encoder(p, load_clip(name, pretrained, device=device_choice))
                out = {"clip": compute_features(p, clip_model)}
                if dino_name:
                    dino_model, _ = choose_encoder(p, load_dino(dino_name, device=device_choice))
                    out["dino"] = compute_features(p, dino_model)
                return out
            finally:
                p.close()

        run_in_background(
            root, "features", work, label=f"features {clip_choice}" + (f" + {dino_name}" if dino_name else "")
        )
        return "Computing features… progress is in the jobs panel."

    @guard
    def start_zeroshot(key, templates_value, mode, device_choice):
        project = ctx.open(key)
        if len(project.classes) < 2:
            raise gr.Error("Set at least two classes first (step 3).")
        if not project.features.sets("clip"):
            raise gr.Error("Compute CLIP features first (① on the left).")
        method = get_method("zeroshot")
        params = method.params_from({"templates": templates_value, "descriptions": mode, "device": device_choice})
        root = str(project.root)

        def work():
            p = Project(root)
            try:
                return method.run(p, params)
            finally:
                p.close()

        run_in_background(root, "label", work, label="zero-shot")
        return "Running zero-shot… progress is in the jobs panel."

    @guard
    def finished(key, marker, view_value, thr, page_no, chosen):
        task = finished_task(key, marker, {"features", "label", "train", "import"})
        if task is None:
            return (gr.skip(),) * len(outs)
        out = list(render(ctx.open(key), view_value, thr, page_no, chosen))
        if task.status != "done":
            note = f"**{task.label} {task.status}:** {error_text(task.error, task.hint)}"
            out[0 if task.kind == "features" else 1] = note
        return tuple(out)

    nav = [ctx.project, view, threshold, page]
    feat_btn.click(start_features, [ctx.project, clip, dino, device], [feat_status], api_name="features_start")
    zs_btn.click(start_zeroshot, [ctx.project, templates, desc_mode, device], [zs_status], api_name="zeroshot_start")
    ctx.finished.change(
        finished, [ctx.project, ctx.finished, view, threshold, page, selection], outs, api_visibility="private"
    )
    view.input(change_view, [ctx.project, view, threshold], gallery_outs, api_name="review_view")
    threshold.release(reload, [*nav, selection], outs, api_name="review_threshold")
    gallery.select(
        click,
        [*nav, selection, page_ids, last_click, shift],
        [*gallery_outs, last_click],
        js=SHIFT_JS,
        api_visibility="private",
    )
    prev_btn.click(lambda *a: turn(*a, -1), [*nav, selection], gallery_outs, api_visibility="private")
    next_btn.click(lambda *a: turn(*a, +1), [*nav, selection], gallery_outs, api_name="review_next_page")
    all_btn.click(select_page, [*nav, selection, page_ids], gallery_outs, api_name="review_select_page")
    none_btn.click(clear, nav, gallery_outs, api_name="review_clear")
    ids_box = gr.Textbox(visible=False)
    ids_box.submit(select_ids, [*nav, ids_box], gallery_outs, api_name="review_select_ids")
    accept_btn.click(accept, [*nav, selection], outs, api_name="review_accept")
    relabel_btn.click(relabel, [*nav, selection, target], outs, api_name="review_relabel")
    unsure_btn.click(unsure, [*nav, selection], outs, api_name="review_unsure")
    bulk_btn.click(bulk, nav, outs, api_name="review_accept_above")
    undo_btn.click(undo, nav, outs, api_name="review_undo")
    for k, btn in enumerate(digit_btns, start=1):
        btn.click(relabel_digit(k), [*nav, selection], outs, api_visibility="private")
    return {"refresh": refresh, "outputs": [*outs, clip, setup_box], "api_name": "review_refresh"}


#: Fills the select event's last input (the hidden ``shift`` box) from the click that fired it.
SHIFT_JS = "(...args) => [...args.slice(0, -1), !!window.lbShiftClick]"

#: Keyboard shortcuts of the review gallery (installed with the page head; ignored while typing), and the
#: shift state of the last click (read by SHIFT_JS: gr.SelectData carries no modifier keys).
SHORTCUTS_JS = """
<script>
document.addEventListener('click', (e) => { window.lbShiftClick = e.shiftKey; }, true);
document.addEventListener('keydown', (e) => {
  const t = e.target; const tag = (t && t.tagName || '').toLowerCase();
  if (e.ctrlKey || e.metaKey || e.altKey || tag === 'input' || tag === 'textarea' || (t && t.isContentEditable)) return;
  const gal = document.getElementById('review-gallery');
  if (!gal || gal.offsetParent === null) return;  // only while the review step is on screen
  const ids = {a: 'review-accept', u: 'review-unsure', n: 'review-next', p: 'review-prev', z: 'review-undo'};
  let id = ids[e.key];
  if (!id && /^[1-9]$/.test(e.key)) id = 'review-digit-' + e.key;
  const el = id && document.getElementById(id);
  if (el) { e.preventDefault(); el.click(); }
});
</script>
"""
