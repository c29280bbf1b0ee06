"""Step 4 · Descriptions: generate with a backend (template, OpenAI-compatible endpoint, local model),
edit / disable / add per class, import and export. Optional: zero-shot works from class names alone.

Before a model backend is asked anything, the step counts the requests it would send (the library's dry
run: ``generate_descriptions(..., dry_run=True)``, answers already cached not counted as new) and says so;
above :data:`labeler.describe.CONFIRM_ABOVE` new requests it waits for a second click on
"Send N requests" (the CLI's ``--yes``).
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import gradio as gr

from ...describe import (
    CONFIRM_ABOVE,
    add_description,
    delete_description,
    edit_description,
    export_descriptions,
    generate_descriptions,
    get_backend,
    import_descriptions,
    list_backends,
    list_descriptions,
    set_description_enabled,
)
from ...jobs import run_in_background
from ...project import Project
from ..common import NO_PROJECT, Ctx, bind, empty_state, error_text, finished_task, guard, md_escape, wire

HEADERS = ["id", "on", "source", "text"]
MODEL_HINTS = {
    "template": "builtin (no model: fixed sentence templates, instant, offline)",
    "openai": "e.g. gpt-4o-mini, or llama3.2 on Ollama",
    "transformers": "a Hugging Face id or a local folder, e.g. Qwen/Qwen2.5-0.5B-Instruct",
    "file": "the path of a JSON ({class: [...]}) or CSV (class,description) file on this machine",
}
#: Backends that read a path on the server: offered only in local mode (on a Space: "Import file" uploads one).
SERVER_PATHS = {"file"}


class ViewOut(NamedTuple):
    """The per-class view: refresh, edit, toggle."""

    cls: object  # gr.Dropdown update: the classes, the shown one chosen
    summary: str
    table: list  # HEADERS rows of the shown class


class FinishedOut(NamedTuple):
    """A finished generation, an imported file: the view and the status line."""

    cls: object
    summary: str
    table: list
    status: str


class DeleteOut(NamedTuple):
    cls: object
    summary: str
    table: list
    selected: None  # the selected sentence's id, cleared
    edit_text: str


class AddOut(NamedTuple):
    cls: object
    summary: str
    table: list
    new_text: str  # the "add" box, emptied


class GenerateOut(NamedTuple):
    status: str
    confirm: object  # gr.Button update: "Send N requests", shown above CONFIRM_ABOVE


class BackendOut(NamedTuple):
    model: object  # gr.Textbox update: the backend's model hint
    endpoint: object  # gr.Group update: the endpoint fields, for openai only


class SelectOut(NamedTuple):
    selected: int
    edit_text: str


def backend_choices(local_mode: bool) -> list[tuple[str, str]]:
    """The description backends of the registry (:func:`labeler.describe.list_backends`) as (label, name);
    those reading a server path only in local mode."""
    return [
        (f"{b['name']} — {b['summary']}", b["name"])
        for b in list_backends()
        if local_mode or b["name"] not in SERVER_PATHS
    ]


def table_for(project: Project, class_name: str | None) -> list[list]:
    """The HEADERS rows of ``class_name``'s descriptions (none for no class)."""
    rows = list_descriptions(project, class_name) if class_name else []
    return [
        [d["id"], "✓" if d["enabled"] else "✗", d["source"] + (" (edited)" if d["edited"] else ""), d["text"]]
        for d in rows
    ]


def summary_text(project: Project) -> str:
    """How many descriptions there are (and what to do when there are none)."""
    all_rows = list_descriptions(project)
    total = len(all_rows)
    enabled = sum(d["enabled"] for d in all_rows)
    if total == 0:
        return empty_state(
            "No descriptions yet. They are optional: zero-shot works from the class names. "
            "To add some, pick a backend and press <b>Generate descriptions</b> "
            "(<i>template</i> needs no model), or import a file."
        )
    return (
        f"**{total} descriptions** ({enabled} enabled) over {len(project.classes)} classes. "
        "Click a row to edit, disable or delete it."
    )


def class_view(project: Project, class_name: str | None) -> ViewOut:
    classes = project.classes
    if not classes:
        return ViewOut(
            gr.Dropdown(choices=[], value=None),
            empty_state("Set the classes first (step 3); then generate descriptions here."),
            [],
        )
    if class_name not in classes:
        class_name = classes[0]
    return ViewOut(
        gr.Dropdown(choices=classes, value=class_name), summary_text(project), table_for(project, class_name)
    )


@guard
def refresh(ctx: Ctx, key: str, class_name: str | None = None) -> ViewOut:
    project = ctx.open(key, required=False)
    if project is None:
        return ViewOut(gr.Dropdown(choices=[], value=None), empty_state(NO_PROJECT), [])
    return class_view(project, class_name)


@guard
def pick_class(ctx: Ctx, key: str, class_name: str) -> list[list]:
    project = ctx.open(key)
    return table_for(project, class_name)


@guard
def backend_changed(name: str) -> BackendOut:
    label = "File path" if name == "file" else "Model"
    return BackendOut(
        gr.Textbox(label=label, placeholder=MODEL_HINTS.get(name, ""), value=""), gr.Group(visible=name == "openai")
    )


def hide_confirm():
    """A changed setting needs a new count: the "Send N requests" button goes."""
    return gr.Button(visible=False)


def backend_options(name: str, model_name: str, url: str, key_text: str) -> dict:
    """The backend's options from the form; gr.Error when a model backend has no model."""
    options = {}
    if name == "file":
        if not (model_name or "").strip():
            raise gr.Error(f"The file backend needs a file: type its path in the File path box ({MODEL_HINTS[name]}).")
        options["path"] = os.path.expanduser(model_name.strip().strip('"').strip("'"))
    if name in ("openai", "transformers"):
        if not (model_name or "").strip():
            raise gr.Error(f"The {name} backend needs a model: type one in the Model box ({MODEL_HINTS[name]}).")
        options["model"] = model_name.strip()
    if name == "openai":
        options["base_url"] = (url or "").strip() or None
        options["api_key"] = key_text or None
    return options


def dry_run(project: Project, name: str, options: dict, domain_text: str, n) -> tuple[dict, bool]:
    """The dry run: ``{"requests", "cached", "new"}`` and whether the backend samples a model."""
    b = get_backend(name, **options)  # checks the options now, so mistakes show here and not in a job
    try:
        preview = generate_descriptions(
            project, b, dry_run=True, domain=(domain_text or "").strip() or None, max_per_class=int(n)
        )
        return preview, bool(b.sampling)
    finally:
        b.close()


def count_text(name: str, preview: dict, classes: int) -> str:
    where = "to the endpoint" if name == "openai" else "to the model"
    return (
        f"**{preview['new']} new requests** {where} ({preview['requests']} in all for {classes} classes, "
        f"{preview['cached']} answered from the cache)."
    )


def _two_classes(ctx: Ctx, key: str, name: str) -> Project:
    if name in SERVER_PATHS and not ctx.local_mode:
        raise gr.Error("Reading a file on the server is off in this app: upload it with “Import file” instead.")
    project = ctx.open(key)
    if len(project.classes) < 2:
        raise gr.Error("Set at least two classes first (step 3).")
    return project


@guard
def count(ctx: Ctx, key: str, name: str, model_name: str, url: str, key_text: str, domain_text: str, n) -> str:
    """How many requests generating would send (nothing is sent)."""
    project = _two_classes(ctx, key, name)
    preview, _ = dry_run(project, name, backend_options(name, model_name, url, key_text), domain_text, n)
    return count_text(name, preview, len(project.classes)) + " Nothing was sent."


def _start_generation(project: Project, name: str, options: dict, domain_text: str, n) -> None:
    root = str(project.root)

    def work():
        p = Project(root)
        b = get_backend(name, **options)
        try:
            return generate_descriptions(p, b, domain=(domain_text or "").strip() or None, max_per_class=int(n))
        finally:
            b.close()
            p.close()

    run_in_background(root, "describe", work, label=f"descriptions ({name})")


def start(ctx: Ctx, key, name, model_name, url, key_text, domain_text, n, confirmed: bool) -> GenerateOut:
    """Generate in the background, or (a model backend, over CONFIRM_ABOVE new requests, not ``confirmed``)
    ask for the second click first."""
    project = _two_classes(ctx, key, name)
    options = backend_options(name, model_name, url, key_text)
    preview, sampling = dry_run(project, name, options, domain_text, n)
    counted = count_text(name, preview, len(project.classes)) if sampling else ""
    if sampling and preview["new"] > CONFIRM_ABOVE and not confirmed:
        return GenerateOut(
            f"⚠ {counted} That is a large run (over {CONFIRM_ABOVE}): check the model and the sentences per "
            f"class, then press **Send {preview['new']} requests** to go on.",
            gr.Button(value=f"Send {preview['new']} requests", visible=True),
        )
    _start_generation(project, name, options, domain_text, n)
    return GenerateOut(
        f"Generating with **{name}**… {counted} Progress is in the jobs panel.", gr.Button(visible=False)
    )


@guard
def generate(ctx: Ctx, key, name, model_name, url, key_text, domain_text, n) -> GenerateOut:
    return start(ctx, key, name, model_name, url, key_text, domain_text, n, confirmed=False)


@guard
def generate_confirmed(ctx: Ctx, key, name, model_name, url, key_text, domain_text, n) -> GenerateOut:
    return start(ctx, key, name, model_name, url, key_text, domain_text, n, confirmed=True)


def generation_message(task) -> str:
    """What a finished describe task says in the status line."""
    if task.status != "done":
        return f"Generation {task.status}: {error_text(task.error, task.hint)}"
    r = task.result or {}
    msg = f"Done: {r.get('added', 0)} added, {r.get('removed', 0)} replaced, {r.get('kept', 0)} kept."
    if r.get("warning"):  # refusals or empty answers: not stored, not cached (asked again next time)
        msg += f" {md_escape(r['warning'])}"
    elif r.get("empty_classes"):
        msg += f" No usable sentence for: {md_escape(', '.join(r['empty_classes'][:10]))}."
    return msg


@guard
def finished(ctx: Ctx, key: str, marker: str, class_name: str) -> FinishedOut:
    task = finished_task(key, marker, {"describe"})
    if task is None:
        return FinishedOut(*(gr.skip(),) * len(FinishedOut._fields))
    return FinishedOut(*refresh(ctx, key, class_name), generation_message(task))


@guard
def select_row(ctx: Ctx, key: str, class_name: str, evt: gr.SelectData) -> SelectOut:
    row = evt.row_value or []
    if not row:
        return SelectOut(gr.skip(), gr.skip())
    return SelectOut(int(row[0]), row[3])


def need_selected(selected_id) -> int:
    if selected_id is None or selected_id == "" or int(selected_id) <= 0:
        raise gr.Error("Click a sentence in the table first.")
    return int(selected_id)


@guard
def save_edit(ctx: Ctx, key: str, class_name: str, selected_id, text: str) -> ViewOut:
    project = ctx.open(key)
    edit_description(project, need_selected(selected_id), text or "")
    return refresh(ctx, key, class_name)


@guard
def toggle(ctx: Ctx, key: str, class_name: str, selected_id) -> ViewOut:
    project = ctx.open(key)
    did = need_selected(selected_id)
    row = next((d for d in list_descriptions(project) if d["id"] == did), None)
    if row is None:
        raise gr.Error("That sentence is gone (deleted or replaced): click another row.")
    set_description_enabled(project, did, not row["enabled"])
    return refresh(ctx, key, class_name)


@guard
def delete(ctx: Ctx, key: str, class_name: str, selected_id) -> DeleteOut:
    project = ctx.open(key)
    delete_description(project, need_selected(selected_id))
    return DeleteOut(*refresh(ctx, key, class_name), selected=None, edit_text="")


@guard
def add(ctx: Ctx, key: str, class_name: str, text: str) -> AddOut:
    project = ctx.open(key)
    if not class_name:
        raise gr.Error("Pick a class first.")
    if not (text or "").strip():
        raise gr.Error("Type the sentence to add first.")
    add_description(project, class_name, text)
    return AddOut(*refresh(ctx, key, class_name), new_text="")


@guard
def import_file(ctx: Ctx, key: str, class_name: str, path, replace_flag: bool) -> FinishedOut:
    project = ctx.open(key)
    if not path:
        raise gr.Error("Choose a .json or .csv descriptions file first.")
    r = import_descriptions(project, path, replace=bool(replace_flag))
    msg = "Imported: " + md_escape(r["summary"])  # what was dropped and why, as the CLI says it
    return FinishedOut(*refresh(ctx, key, class_name), msg)


@guard
def export(ctx: Ctx, key: str) -> str:
    """Write the enabled descriptions as JSON into the project's exports; the file's path."""
    project = ctx.open(key)
    out = project.exports_dir / f"descriptions-{time.strftime('%Y%m%d-%H%M%S')}.json"
    export_descriptions(project, out)
    return str(out)


def endpoint_fields(prefix: str) -> tuple[gr.Group, gr.Textbox, gr.Textbox]:
    """The OpenAI-compatible endpoint's fields (hidden until that backend is picked): group, base URL, API key."""
    with gr.Group(visible=False) as endpoint:
        base_url = gr.Textbox(
            label="Endpoint base URL",
            placeholder="http://localhost:11434/v1 (Ollama)",
            info="any OpenAI-compatible server; empty: $OPENAI_BASE_URL, else api.openai.com",
            elem_id=f"{prefix}-base-url",
        )
        api_key = gr.Textbox(label="API key", type="password", placeholder="empty: $OPENAI_API_KEY")
    return endpoint, base_url, api_key


def build(ctx: Ctx) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            gr.Markdown("#### Generate")
            backend = gr.Dropdown(
                backend_choices(ctx.local_mode), value="template", label="Backend", elem_id="desc-backend"
            )
            model = gr.Textbox(label="Model", placeholder=MODEL_HINTS["template"], elem_id="desc-model")
            endpoint, base_url, api_key = endpoint_fields("desc")
            domain = gr.Textbox(label="Domain hint (optional)", placeholder="e.g. satellite photo, drawing")
            per_class = gr.Slider(5, 100, value=50, step=5, label="Sentences per class")
            with gr.Row():
                gen_btn = gr.Button("Generate descriptions", variant="primary", elem_id="desc-generate", scale=3)
                count_btn = gr.Button("Count requests", size="sm", elem_id="desc-count", scale=1)
            confirm_btn = gr.Button("Send the requests", variant="stop", visible=False, elem_id="desc-confirm")
            status = gr.Markdown(elem_id="desc-status")
            with gr.Accordion("Import / export", open=False):
                upload = gr.File(
                    label="Descriptions file (JSON {class: [...]}, or CSV class,description)",
                    file_types=[".json", ".csv"],
                    height=110,
                )
                replace = gr.Checkbox(label="Replace untouched sentences (keeps your own, edited and disabled ones)")
                import_btn = gr.Button("Import file", size="sm")
                export_btn = gr.Button("Export enabled descriptions (JSON)", size="sm", elem_id="desc-export")
                export_file = gr.File(label="Exported file", interactive=False, height=80)
        with gr.Column(scale=3):
            gr.Markdown("#### Per class")
            cls = gr.Dropdown(label="Class", choices=[], elem_id="desc-class")
            summary = gr.Markdown(elem_id="desc-summary")
            table = gr.Dataframe(
                headers=HEADERS,
                interactive=False,
                max_height=330,
                wrap=True,
                column_widths=["8%", "8%", "12%", "72%"],
                elem_id="desc-table",
            )
            selected = gr.Number(visible=False, precision=0)
            with gr.Row():
                edit_text = gr.Textbox(label="Selected sentence (click a row)", scale=4, elem_id="desc-edit")
                with gr.Column(scale=1, min_width=130):
                    save_btn = gr.Button("Save edit", size="sm")
                    toggle_btn = gr.Button("Enable / disable", size="sm")
                    delete_btn = gr.Button("Delete", size="sm", variant="stop")
            with gr.Row():
                new_text = gr.Textbox(
                    label="Add your own sentence",
                    scale=4,
                    elem_id="desc-new",
                    placeholder="e.g. a small furry animal with pointed ears",
                )
                add_btn = gr.Button("Add", scale=1, size="sm", elem_id="desc-add")

    view = {"cls": cls, "summary": summary, "table": table}
    outs = wire(ViewOut, **view)
    with_status = wire(FinishedOut, **view, status=status)
    gen_outs = wire(GenerateOut, status=status, confirm=confirm_btn)
    backend.change(
        backend_changed, [backend], wire(BackendOut, model=model, endpoint=endpoint), api_visibility="private"
    )
    cls.input(bind(pick_class, ctx), [ctx.project, cls], [table], api_name="descriptions_class")
    gen_inputs = [ctx.project, backend, model, base_url, api_key, domain, per_class]
    gen_btn.click(bind(generate, ctx), gen_inputs, gen_outs, api_name="descriptions_generate")
    confirm_btn.click(bind(generate_confirmed, ctx), gen_inputs, gen_outs, api_name="descriptions_generate_confirmed")
    count_btn.click(bind(count, ctx), gen_inputs, [status], api_name="descriptions_count")
    for box in (backend, model, base_url, domain, per_class):  # a changed setting needs a new count
        box.change(hide_confirm, None, [confirm_btn], api_visibility="private")
    ctx.finished.change(bind(finished, ctx), [ctx.project, ctx.finished, cls], with_status, api_visibility="private")
    selection = wire(SelectOut, selected=selected, edit_text=edit_text)
    table.select(bind(select_row, ctx), [ctx.project, cls], selection, api_visibility="private")
    save_btn.click(bind(save_edit, ctx), [ctx.project, cls, selected, edit_text], outs, api_name="descriptions_edit")
    toggle_btn.click(bind(toggle, ctx), [ctx.project, cls, selected], outs, api_name="descriptions_toggle")
    deleted = wire(DeleteOut, **view, selected=selected, edit_text=edit_text)
    delete_btn.click(bind(delete, ctx), [ctx.project, cls, selected], deleted, api_name="descriptions_delete")
    added = wire(AddOut, **view, new_text=new_text)
    add_btn.click(bind(add, ctx), [ctx.project, cls, new_text], added, api_name="descriptions_add")
    new_text.submit(bind(add, ctx), [ctx.project, cls, new_text], added, api_visibility="private")
    import_inputs = [ctx.project, cls, upload, replace]
    import_btn.click(bind(import_file, ctx), import_inputs, with_status, api_name="descriptions_import")
    export_btn.click(bind(export, ctx), [ctx.project], [export_file], api_name="descriptions_export")
    return {"refresh": bind(refresh, ctx), "outputs": outs, "api_name": "descriptions_view"}
