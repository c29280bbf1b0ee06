"""Step 1 · Project: create, open, rename, delete; the projects in the data dir with their counts."""

from __future__ import annotations

import gradio as gr

from .. import app_api
from ..errors import InvalidInputError
from ..jobs import background_tasks
from ..project import Project, parse_class_list, resolve_project_path
from .common import Ctx, empty_state, guard, md_escape

HEADERS = ["project", "images", "classes", "labels", "review"]


def _table() -> list[list]:
    return [
        [r["name"], r["images"], r["classes"], r["labels"], r["error"] or r["labeled"]] for r in app_api.project_rows()
    ]


def _choices() -> list[tuple[str, str]]:
    return [(r["name"], r["path"]) for r in app_api.project_rows() if not r.get("error")]


def _status(ctx: Ctx, key: str) -> str:
    project = ctx.open(key, required=False)
    if project is None:
        return empty_state(
            "No project open yet. <b>Create</b> one on the right (a name is enough; classes can come later), "
            "or <b>open</b> one from the list."
        )
    n, classes = project.image_count(), project.classes
    nxt = "import images (step 2)" if n == 0 else ("enter classes (step 3)" if not classes else "review (step 5)")
    return (
        f"**Open: {md_escape(project.name)}** — {n} images, {len(classes)} classes, "
        f"{'multi' if project.multi_label else 'single'}-label · folder `{project.root}`  \nNext: {nxt}."
    )


def build(ctx: Ctx) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gr.Markdown(f"#### Projects in `{ctx.data_dir}`")
            table = gr.Dataframe(
                headers=HEADERS,
                value=_table(),
                interactive=False,
                max_height=320,
                column_widths=["28%", "13%", "13%", "13%", "33%"],
                wrap=True,
                elem_id="project-table",
            )
            with gr.Row():
                pick = gr.Dropdown(
                    label="Open a project",
                    choices=_choices(),
                    value=None,
                    scale=3,
                    allow_custom_value=ctx.local_mode,
                    elem_id="project-pick",
                    info="pick from the list" + (" or paste a project folder path" if ctx.local_mode else ""),
                )
                open_btn = gr.Button("Open", variant="secondary", scale=1, elem_id="project-open")
        with gr.Column(scale=2):
            gr.Markdown("#### New project")
            name = gr.Textbox(label="Name", placeholder="e.g. pets", elem_id="project-name")
            multi = gr.Checkbox(label="Multi-label (an image may have several classes)", value=False)
            classes = gr.Textbox(
                label="Classes (optional now)", lines=2, placeholder="cat, dog, car", elem_id="project-classes"
            )
            create_btn = gr.Button("Create project", variant="primary", elem_id="project-create")
            with gr.Accordion("Rename or delete the open project", open=False):
                new_name = gr.Textbox(label="New name", elem_id="project-new-name")
                rename_btn = gr.Button("Rename", size="sm", elem_id="project-rename")
                confirm = gr.Textbox(label="Type the project's name to delete it", elem_id="project-confirm")
                delete_btn = gr.Button("Delete project", variant="stop", size="sm", elem_id="project-delete")
    status = gr.Markdown(_status(ctx, ""), elem_id="project-status")

    @guard
    def refresh(key):
        return _table(), gr.Dropdown(choices=_choices(), value=key or None), _status(ctx, key)

    @guard
    def create(name_text, multi_label, classes_text):
        if not (name_text or "").strip():
            raise gr.Error("Type a project name first (e.g. 'pets').")
        if any(c in name_text for c in "/\\") or name_text.strip().startswith((".", "~")):
            raise gr.Error(
                f"Project name {name_text.strip()!r} is not valid: use letters, digits, '.', '_', '-' or "
                f"spaces (projects live in {ctx.data_dir})."
            )
        names = parse_class_list(classes_text or "")
        project = Project.create(name_text.strip(), names, multi_label=bool(multi_label))
        ctx.allow(project)
        key = str(project.root)
        gr.Info(f"Created project {project.name}. Next: import images.")
        return key, *refresh(key), gr.Tabs(selected=1)

    @guard
    def open_(choice):
        if not choice:
            raise gr.Error("Pick a project in the list first (or create one).")
        try:
            root = resolve_project_path(choice)
        except InvalidInputError as exc:
            raise gr.Error(str(exc)) from None
        project = ctx.open(str(root))
        key = str(project.root)
        running = [t for t in background_tasks(key) if t.running]
        if running:
            gr.Info(f"{len(running)} job(s) still running in this project: see the jobs panel.")
        return key, *refresh(key)

    @guard
    def rename(key, new):
        project = ctx.open(key)
        renamed = app_api.rename_project(project, new)
        ctx.allow(renamed)
        key = str(renamed.root)
        gr.Info(f"Renamed to {renamed.name}.")
        return key, *refresh(key)

    @guard
    def delete(key, typed):
        project = ctx.open(key)
        if (typed or "").strip() != project.name:
            raise gr.Error(f"To delete, type the project's name ({project.name}) in the box above the button.")
        if any(t.running for t in background_tasks(key)):
            raise InvalidInputError("a job is running in this project: cancel it in the jobs panel first")
        name = project.name
        project.delete()
        gr.Info(f"Deleted project {name} (images outside the project folder were not touched).")
        return "", *refresh("")

    outs = [table, pick, status]
    create_btn.click(create, [name, multi, classes], [ctx.project, *outs, ctx.tabs], api_name="project_create")
    name.submit(create, [name, multi, classes], [ctx.project, *outs, ctx.tabs], api_visibility="private")
    open_btn.click(open_, [pick], [ctx.project, *outs], api_name="project_open")
    rename_btn.click(rename, [ctx.project, new_name], [ctx.project, *outs], api_name="project_rename")
    delete_btn.click(delete, [ctx.project, confirm], [ctx.project, *outs], api_name="project_delete")
    return {"refresh": refresh, "outputs": outs, "api_name": "project_view"}
