"""Step 6 · Captions: LMM captions of each image and descriptions of groups of images, for LatteCLIP.

Pick a vision backend (an OpenAI-compatible endpoint, a local transformers model, or the offline
``template``), edit the per-image and group prompts (saved per project), choose per-image captions and/or
group descriptions (``shared``: ≈ 0.25 calls per image; ``per-image``, the official LatteCLIP: 1 call per
image), see how many calls a run sends before sending them, and run it as a job (progress and cancel in the
jobs panel; a rerun resumes from the cache, sending no request twice). Captions written elsewhere come in
from a JSON/CSV file. Then browse the images with their texts: edit a caption, or disable a hallucinated one —
disabled texts drop out of LatteCLIP's text fusion.

Like the Descriptions step, above :data:`labeler.describe.CONFIRM_ABOVE` new calls a model backend waits
for a second click on "Send N calls" (the CLI's ``--yes``).
"""

from __future__ import annotations

import html
from typing import NamedTuple

import gradio as gr

from ...describe import (
    CONFIRM_ABOVE,
    caption_counts,
    caption_images,
    caption_prompts,
    get_backend,
    import_captions,
    list_backends,
    list_captions,
    pseudo_classes,
    set_caption,
    set_caption_enabled,
    set_caption_prompts,
)
from ...jobs import run_in_background
from ...project import Project, image_page
from ..common import NO_PROJECT, Ctx, bind, empty_state, error_text, finished_task, gallery_items, guard, wire
from .descriptions import BackendOut, backend_options, endpoint_fields, hide_confirm

PAGE = 24
MODEL_HINTS = {
    "template": "builtin (no model: 'a photo of a {class}.', instant, offline — to try the step)",
    "openai": "a vision model, e.g. gpt-4o-mini, or llava / qwen2.5vl on Ollama",
    "transformers": "an image-text-to-text model (Hub id or local folder), e.g. HuggingFaceTB/SmolVLM-256M-Instruct",
}
KIND_LABELS = {"image": "caption", "group": "group (shared)", "group-own": "group (own)"}
GROUP_CHOICES = [
    ("none", "none"),
    ("shared: a class's images in groups of 4 — 1 call per 4 images", "shared"),
    ("per-image (official LatteCLIP): each image + 3 others of its class — 1 call per image", "per-image"),
]
FUSION_NOTE = (
    "Disabled texts drop out of LatteCLIP's fusion (training never sees them); a rerun never overwrites a "
    "caption you edited or disabled."
)


class PageOut(NamedTuple):
    """One page of the gallery."""

    summary: str
    gallery: list  # (thumbnail, "class · caption") pairs
    page_info: str
    page: int
    page_ids: list  # the page's image ids, in gallery order


class ViewOut(NamedTuple):
    """The step's view: the saved prompts and the gallery's first page."""

    prompt: str
    group_prompt: str
    summary: str
    gallery: list
    page_info: str
    page: int
    page_ids: list


class SelectOut(NamedTuple):
    """The selected image's texts."""

    image_id: int | None
    detail: str  # HTML: every text of the image with its state
    kind: object  # gr.Radio update: the kinds the image has
    edit_text: str


class EditOut(NamedTuple):
    """An edit or a toggle: the image's texts again, and the page (its captions changed)."""

    image_id: int | None
    detail: str
    kind: object
    edit_text: str
    summary: str
    gallery: list
    page_info: str
    page: int
    page_ids: list


class FinishedOut(NamedTuple):
    """A finished captioning job or an imported file: the page and the status line."""

    summary: str
    gallery: list
    page_info: str
    page: int
    page_ids: list
    status: str


class RunOut(NamedTuple):
    status: str
    confirm: object  # gr.Button update: "Send N calls", shown above CONFIRM_ABOVE


class PromptOut(NamedTuple):
    prompt: str
    group_prompt: str
    status: str


def backend_choices() -> list[tuple[str, str]]:
    """The registry's backends that take images, as (label, name)."""
    return [(f"{b['name']} — {b['summary']}", b["name"]) for b in list_backends() if b["supports_images"]]


# --- the view -----------------------------------------------------------------------------------------------------


def summary_text(project: Project) -> str:
    """How many texts there are, how many disabled or edited (and what to do when there are none)."""
    n = caption_counts(project)
    if not n["texts"]:
        return empty_state(
            "No captions yet. Pick a backend and press <b>Caption images</b> (<i>template</i> needs no model), "
            "or import a captions file. Group descriptions need pseudo-labels (step 5)."
        )
    kinds = ", ".join(f"{c} {KIND_LABELS[k]}" for k, c in n["by_kind"].items() if c)
    return (
        f"**{n['texts']} texts** on {n['images']} images ({kinds}); {n['disabled']} disabled, {n['edited']} edited. "
        "Click a thumbnail to read, edit or disable its texts."
    )


def thumb_text(texts: dict, cls: str | None) -> str:
    """A thumbnail's caption: ⊘ when its caption is disabled, ✎ when edited (first, so a cut label still shows
    them), the class, then the caption (else the group text)."""
    head = f"{cls} · " if cls else ""
    row = texts.get("image") or texts.get("group-own") or texts.get("group")
    if row is None:
        return head + "no caption"
    mark = "⊘ " if not row["enabled"] else ("✎ " if row["edited"] else "")
    text = row["text"] if len(row["text"]) <= 70 else row["text"][:68] + "…"
    return f"{mark}{head}{text}"


def page_view(project: Project, page_no) -> PageOut:
    """Page ``page_no`` (clamped) of the images with their captions."""
    n = project.image_count()
    pages = max(1, -(-n // PAGE))
    page_no = min(max(0, int(page_no or 0)), pages - 1)
    rows = image_page(project, page_no * PAGE, PAGE)
    ids = [int(r["id"]) for r in rows]
    texts: dict[int, dict] = {}
    for c in list_captions(project, image_ids=ids):
        texts.setdefault(c["image_id"], {})[c["kind"]] = c
    classes = pseudo_classes(project)
    pics = gallery_items(project, rows, lambda it: thumb_text(texts.get(it["id"], {}), classes.get(it["id"])))
    info = f"page {page_no + 1} of {pages}" if n else ""
    return PageOut(summary_text(project), pics, info, page_no, ids)


def detail_html(project: Project | None, image_id: int | None) -> str:
    """Every text of one image: kind, state (on/off, edited), the text, and the model's text when edited."""
    if image_id is None:
        return "<p class='lb-note'>Click a thumbnail to see its caption and group description.</p>"
    row = project.db.execute("select rel_path from images where id = ?", [int(image_id)]).fetchone()
    name = html.escape(row[0]) if row else f"image {int(image_id)}"
    cls = pseudo_classes(project).get(int(image_id))
    parts = [f"<p><b>{name}</b>" + (f" · zero-shot: {html.escape(cls)}" if cls else "") + "</p>"]
    rows = list_captions(project, image_id=int(image_id))
    if not rows:
        parts.append("<p class='lb-note'>No caption for this image yet.</p>")
    for r in rows:
        state = "on" if r["enabled"] else "off — left out of LatteCLIP's fusion"
        style = "" if r["enabled"] else " style='opacity:0.55;text-decoration:line-through'"
        parts.append(
            f"<div class='lb-caption' data-kind='{r['kind']}' data-enabled='{int(r['enabled'])}'>"
            f"<b>{KIND_LABELS[r['kind']]}</b> <small>({state}{', edited' if r['edited'] else ''} · "
            f"{html.escape(r['backend'] or '')} {html.escape(r['model'] or '')})</small>"
            f"<p{style}>{html.escape(r['text'])}</p>"
            + (f"<p class='lb-note'>model's text: {html.escape(r['original'])}</p>" if r["edited"] else "")
            + "</div>"
        )
    return "".join(parts)


def select_view(project: Project, image_id: int | None, kind: str | None = None) -> SelectOut:
    """The image's texts, the kind picker (``kind`` kept when the image has it) and that text in the edit box."""
    rows = list_captions(project, image_id=int(image_id)) if image_id is not None else []
    kinds = [r["kind"] for r in rows]
    kind = kind if kind in kinds else (kinds[0] if kinds else None)
    text = next((r["text"] for r in rows if r["kind"] == kind), "")
    radio = gr.Radio(choices=[(KIND_LABELS[k], k) for k in kinds], value=kind)
    return SelectOut(image_id, detail_html(project, image_id), radio, text)


@guard
def refresh(ctx: Ctx, key: str) -> ViewOut:
    project = ctx.open(key, required=False)
    if project is None:
        return ViewOut("", "", empty_state(NO_PROJECT), [], "", 0, [])
    prompts = caption_prompts(project)
    return ViewOut(prompts["caption"], prompts["group"], *page_view(project, 0))


@guard
def turn(ctx: Ctx, key: str, page_no, delta: int = 0) -> PageOut:
    return page_view(ctx.open(key), int(page_no or 0) + int(delta))


@guard
def prev_page(ctx: Ctx, key: str, page_no) -> PageOut:
    return turn(ctx, key, page_no, -1)


@guard
def next_page(ctx: Ctx, key: str, page_no) -> PageOut:
    return turn(ctx, key, page_no, +1)


@guard
def select(ctx: Ctx, key: str, page_ids, evt: gr.SelectData) -> SelectOut:
    """A click on a thumbnail: its texts."""
    idx = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else None)
    if idx is None or idx >= len(page_ids or []):
        return SelectOut(*(gr.skip(),) * len(SelectOut._fields))
    return select_view(ctx.open(key), int(page_ids[idx]))


@guard
def show(ctx: Ctx, key: str, image_id) -> SelectOut:
    """One image's texts by id (for scripts and the API)."""
    return select_view(ctx.open(key), need_image(image_id))


@guard
def pick_kind(ctx: Ctx, key: str, image_id, kind: str) -> str:
    """The chosen kind's text, into the edit box."""
    if image_id is None or not kind:
        return ""
    rows = list_captions(ctx.open(key), kind=kind, image_id=int(image_id))
    return rows[0]["text"] if rows else ""


def need_image(image_id) -> int:
    if image_id is None or image_id == "":
        raise gr.Error("Click a thumbnail first.")
    return int(image_id)


def need_kind(kind) -> str:
    if not kind:
        raise gr.Error("This image has no caption yet: caption the images first.")
    return str(kind)


@guard
def save_edit(ctx: Ctx, key: str, image_id, kind: str, text: str, page_no) -> EditOut:
    """Replace the chosen text with the edit box's (the model's text is kept)."""
    project = ctx.open(key)
    image_id = need_image(image_id)
    set_caption(project, image_id, need_kind(kind), text or "")
    return EditOut(*select_view(project, image_id, kind), *page_view(project, page_no))


@guard
def toggle(ctx: Ctx, key: str, image_id, kind: str, page_no) -> EditOut:
    """Disable the chosen text (it drops out of LatteCLIP's fusion), or enable it again."""
    project = ctx.open(key)
    image_id = need_image(image_id)
    rows = list_captions(project, kind=need_kind(kind), image_id=image_id)
    if not rows:
        raise gr.Error("That text is gone (captioned again?): click the thumbnail again.")
    set_caption_enabled(project, image_id, kind, not rows[0]["enabled"])
    return EditOut(*select_view(project, image_id, kind), *page_view(project, page_no))


# --- prompts and backends -----------------------------------------------------------------------------------------


@guard
def backend_changed(name: str) -> BackendOut:
    return BackendOut(gr.Textbox(placeholder=MODEL_HINTS.get(name, ""), value=""), gr.Group(visible=name == "openai"))


@guard
def save_prompts(ctx: Ctx, key: str, prompt: str, group_prompt: str) -> PromptOut:
    """Save both prompts in the project (an empty box brings back its default)."""
    saved = set_caption_prompts(ctx.open(key), caption=prompt or "", group=group_prompt or "")
    return PromptOut(saved["caption"], saved["group"], "Prompts saved in the project (the CLI uses them too).")


@guard
def reset_prompts(ctx: Ctx, key: str) -> PromptOut:
    """Bring back LatteCLIP's default prompts."""
    saved = set_caption_prompts(ctx.open(key), caption="", group="")
    return PromptOut(saved["caption"], saved["group"], "Prompts reset to LatteCLIP's defaults.")


def job_options(project: Project, per_image: bool, groups: str, prompt: str, group_prompt: str) -> dict:
    """``caption_images`` options from the form (the prompts are saved in the project first)."""
    if not per_image and groups in (None, "", "none"):
        raise gr.Error("Nothing to do: tick per-image captions, or choose a kind of group descriptions.")
    set_caption_prompts(project, caption=prompt or "", group=group_prompt or "")
    with_groups = groups not in (None, "", "none")
    return {
        "per_image": bool(per_image),
        "groups": with_groups,
        "group_mode": groups if with_groups else "shared",
        "class_of": pseudo_classes(project) or None,
    }


def dry_run(project: Project, name: str, backend: dict, options: dict) -> dict:
    """The library's count of what a run would send (nothing is sent)."""
    b = get_backend(name, **backend)  # checks the options now, so mistakes show here and not in a job
    try:
        return caption_images(project, b, dry_run=True, **options)
    finally:
        b.close()


def count_text(name: str, preview: dict) -> str:
    """The preview in words: new calls, what they are, calls per image, and the cost we can tell."""
    what = f"{preview['images']} per-image captions + {preview['groups']} group grids"
    if name == "template":
        return f"**{preview['requests']} texts** from templates ({what}): instant, offline, no model calls."
    where = "to the endpoint" if name == "openai" else "to the local model"
    cost = (
        f"at most {preview['max_new_tokens']:,} output tokens; the backend gives no price — multiply by your "
        "provider's price per token"
        if name == "openai"
        else f"at most {preview['max_new_tokens']:,} generated tokens on this machine"
    )
    return (
        f"**{preview['new']} new LMM calls** {where} ({preview['requests']} in all: {what}; {preview['cached']} "
        f"answered from the cache) — {round(preview['calls_per_image'], 2):g} calls per image; {cost}."
    )


def _project_with_images(ctx: Ctx, key: str) -> Project:
    project = ctx.open(key)
    if project.image_count() == 0:
        raise gr.Error("Add images first (step 2).")
    return project


@guard
def count(ctx: Ctx, key, name, model_name, url, key_text, per_image, groups, prompt, group_prompt) -> str:
    """How many calls captioning would send, and what they may cost (nothing is sent)."""
    project = _project_with_images(ctx, key)
    options = job_options(project, per_image, groups, prompt, group_prompt)
    preview = dry_run(project, name, backend_options(name, model_name, url, key_text), options)
    return count_text(name, preview) + " Nothing was sent."


def _start(project: Project, name: str, backend: dict, options: dict) -> None:
    root = str(project.root)

    def work():
        p = Project(root)
        b = get_backend(name, **backend)
        try:
            return caption_images(p, b, **options)
        finally:
            b.close()
            p.close()

    run_in_background(root, "caption", work, label=f"captions ({name})")


def start(ctx: Ctx, key, name, model_name, url, key_text, per_image, groups, prompt, group_prompt, confirmed) -> RunOut:
    """Caption in the background, or (over CONFIRM_ABOVE new calls, not ``confirmed``) ask for a second click."""
    project = _project_with_images(ctx, key)
    options = job_options(project, per_image, groups, prompt, group_prompt)
    backend = backend_options(name, model_name, url, key_text)
    preview = dry_run(project, name, backend, options)
    counted = count_text(name, preview)
    if name != "template" and preview["new"] > CONFIRM_ABOVE and not confirmed:
        return RunOut(
            f"⚠ {counted} That is a large run (over {CONFIRM_ABOVE}): check the model and the prompts, then press "
            f"**Send {preview['new']} calls** to go on.",
            gr.Button(value=f"Send {preview['new']} calls", visible=True),
        )
    _start(project, name, backend, options)
    return RunOut(f"Captioning with **{name}**… {counted} Progress is in the jobs panel.", gr.Button(visible=False))


@guard
def run(ctx: Ctx, key, name, model_name, url, key_text, per_image, groups, prompt, group_prompt) -> RunOut:
    return start(ctx, key, name, model_name, url, key_text, per_image, groups, prompt, group_prompt, False)


@guard
def run_confirmed(ctx: Ctx, key, name, model_name, url, key_text, per_image, groups, prompt, group_prompt) -> RunOut:
    return start(ctx, key, name, model_name, url, key_text, per_image, groups, prompt, group_prompt, True)


def finished_message(task) -> str:
    """What a finished caption task says in the status line."""
    if task.status != "done":
        return (
            f"Captioning {task.status}: {error_text(task.error, task.hint)}. The answers that arrived are stored "
            "and cached: press **Caption images** again to go on from there."
        )
    r = task.result or {}
    msg = (
        f"Done: {r.get('captions', 0)} captions and {r.get('groups', 0)} group descriptions written "
        f"({r.get('sent', 0)} calls sent, {r.get('cached', 0)} from the cache)."
    )
    if r.get("kept"):
        msg += f" {r['kept']} texts you edited or disabled were kept."
    if r.get("warning"):
        msg += f" {html.escape(r['warning'])}"
    return msg


@guard
def finished(ctx: Ctx, key: str, marker: str, page_no) -> FinishedOut:
    task = finished_task(key, marker, {"caption"})
    if task is None:
        return FinishedOut(*(gr.skip(),) * len(FinishedOut._fields))
    return FinishedOut(*page_view(ctx.open(key), page_no), finished_message(task))


@guard
def import_file(ctx: Ctx, key: str, path, page_no) -> FinishedOut:
    """Captions from a JSON ``{image: caption}`` or CSV ``image,caption[,kind]`` file."""
    project = ctx.open(key)
    if not path:
        raise gr.Error("Choose a .json or .csv captions file first.")
    r = import_captions(project, path)
    return FinishedOut(*page_view(project, page_no), "Imported: " + html.escape(r["summary"]))


# --- layout -------------------------------------------------------------------------------------------------------


def build(ctx: Ctx) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=340):
            gr.Markdown("#### Caption images")
            backend = gr.Dropdown(backend_choices(), value="template", label="Backend", elem_id="cap-backend")
            model = gr.Textbox(label="Model", placeholder=MODEL_HINTS["template"], elem_id="cap-model")
            endpoint, base_url, api_key = endpoint_fields("cap")
            prompt = gr.Textbox(
                label="Per-image prompt", info="{c}: the image's zero-shot class", lines=2, elem_id="cap-prompt"
            )
            group_prompt = gr.Textbox(
                label="Group prompt",
                info="asked about a 2×2 grid of 4 images of one class; {c}: the class, {k}: images in the grid",
                lines=2,
                elem_id="cap-group-prompt",
            )
            with gr.Row():
                save_prompts_btn = gr.Button("Save prompts", size="sm", elem_id="cap-save-prompts")
                reset_btn = gr.Button("LatteCLIP defaults", size="sm", elem_id="cap-reset-prompts")
            per_image = gr.Checkbox(value=True, label="Per-image captions — 1 call per image", elem_id="cap-per-image")
            groups = gr.Radio(GROUP_CHOICES, value="shared", label="Group descriptions", elem_id="cap-groups")
            gr.Markdown(
                "<span class='lb-note'>Per-image + shared ≈ 1.25 calls per image; per-image + per-image = 2 "
                "(the official recipe). Groups need pseudo-labels (step 5). Both kinds of groups may coexist.</span>"
            )
            with gr.Row():
                run_btn = gr.Button("Caption images", variant="primary", elem_id="cap-run", scale=3)
                count_btn = gr.Button("Count calls", size="sm", elem_id="cap-count", scale=1)
            confirm_btn = gr.Button("Send the calls", variant="stop", visible=False, elem_id="cap-confirm")
            status = gr.Markdown(elem_id="cap-status")
            with gr.Accordion("Import captions file", open=False):
                upload = gr.File(
                    label="JSON {image: caption} or CSV image,caption[,kind]; image: its relative path, name or sha256",
                    file_types=[".json", ".csv"],
                    height=110,
                    elem_id="cap-upload",
                )
                import_btn = gr.Button("Import file", size="sm", elem_id="cap-import")
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_id="cap-summary")
            gallery = gr.Gallery(
                show_label=False,
                columns=6,
                height=330,
                allow_preview=False,
                object_fit="cover",
                fit_columns=False,
                elem_id="cap-gallery",
                buttons=[],
            )
            with gr.Row():
                prev_btn = gr.Button("← Previous", size="sm", elem_id="cap-prev")
                page_info = gr.Markdown(elem_classes=["lb-center"])
                next_btn = gr.Button("Next →", size="sm", elem_id="cap-next")
            detail = gr.HTML(detail_html(None, None), elem_id="cap-detail")
            kind = gr.Radio([(v, k) for k, v in KIND_LABELS.items()], label="Text", elem_id="cap-kind")
            edit_text = gr.Textbox(label="Edit the chosen text", lines=2, elem_id="cap-edit")
            with gr.Row():
                save_btn = gr.Button("Save edit", size="sm", elem_id="cap-save")
                toggle_btn = gr.Button("Disable / enable", size="sm", elem_id="cap-toggle")
            gr.Markdown(f"<span class='lb-note'>{FUSION_NOTE}</span>")
            show_btn = gr.Button(visible=False)  # for scripts: show the image whose id is in image_id
    page = gr.State(0)
    page_ids = gr.State([])
    image_id = gr.Number(visible=False, precision=0)  # a component, not a State: the API can set it

    shown = {"summary": summary, "gallery": gallery, "page_info": page_info, "page": page, "page_ids": page_ids}
    page_outs = wire(PageOut, **shown)
    view_outs = wire(ViewOut, prompt=prompt, group_prompt=group_prompt, **shown)
    selection = {"image_id": image_id, "detail": detail, "kind": kind, "edit_text": edit_text}
    edit_outs = wire(EditOut, **selection, **shown)
    prompt_outs = wire(PromptOut, prompt=prompt, group_prompt=group_prompt, status=status)
    run_outs = wire(RunOut, status=status, confirm=confirm_btn)
    with_status = wire(FinishedOut, **shown, status=status)

    backend.change(
        backend_changed, [backend], wire(BackendOut, model=model, endpoint=endpoint), api_visibility="private"
    )
    save_prompts_btn.click(
        bind(save_prompts, ctx), [ctx.project, prompt, group_prompt], prompt_outs, api_name="captions_prompts"
    )
    reset_btn.click(bind(reset_prompts, ctx), [ctx.project], prompt_outs, api_name="captions_prompts_reset")
    run_inputs = [ctx.project, backend, model, base_url, api_key, per_image, groups, prompt, group_prompt]
    run_btn.click(bind(run, ctx), run_inputs, run_outs, api_name="captions_run")
    confirm_btn.click(bind(run_confirmed, ctx), run_inputs, run_outs, api_name="captions_run_confirmed")
    count_btn.click(bind(count, ctx), run_inputs, [status], api_name="captions_count")
    for box in (backend, model, base_url, per_image, groups, prompt, group_prompt):  # a new count is needed
        box.change(hide_confirm, None, [confirm_btn], api_visibility="private")
    ctx.finished.change(bind(finished, ctx), [ctx.project, ctx.finished, page], with_status, api_visibility="private")
    prev_btn.click(bind(prev_page, ctx), [ctx.project, page], page_outs, api_visibility="private")
    next_btn.click(bind(next_page, ctx), [ctx.project, page], page_outs, api_visibility="private")
    sel = wire(SelectOut, **selection)
    gallery.select(bind(select, ctx), [ctx.project, page_ids], sel, api_visibility="private")
    show_btn.click(bind(show, ctx), [ctx.project, image_id], sel, api_name="captions_show")
    kind.input(bind(pick_kind, ctx), [ctx.project, image_id, kind], [edit_text], api_visibility="private")
    save_btn.click(
        bind(save_edit, ctx), [ctx.project, image_id, kind, edit_text, page], edit_outs, api_name="captions_edit"
    )
    toggle_btn.click(bind(toggle, ctx), [ctx.project, image_id, kind, page], edit_outs, api_name="captions_toggle")
    import_btn.click(bind(import_file, ctx), [ctx.project, upload, page], with_status, api_name="captions_import")
    return {"refresh": bind(refresh, ctx), "outputs": view_outs, "api_name": "captions_view"}
