"""Step 1 · Project: create, open, rename, delete; the projects with their counts; the project as one archive.

On a Space (``ctx.isolate``) every browser gets its own folder of projects, named by a random visitor id
kept in the browser (``gr.BrowserState``): the list, create, open, rename, delete and import only see that
folder, and a project outside it is never opened. Export packs the open project as one ``.zip``
(:func:`labeler.archive.export_archive`, in the background); import unpacks one as a new project
(:func:`labeler.archive.import_archive`) — the way to keep work on a Space, whose disk is not persistent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import gradio as gr

from ...archive import export_archive, import_archive
from ...errors import InvalidInputError
from ...ingest import max_import_bytes
from ...jobs import background_tasks, run_in_background
from ...project import (
    Project,
    list_projects,
    parse_class_list,
    rename_project,
    resolve_project_path,
    validate_project_name,
)
from ..common import Ctx, bind, empty_state, error_text, finished_task, guard, md_escape, ui_error, wire
from ..space import resolve_visitor

HEADERS = ["project", "images", "classes", "labels", "review"]


class ViewOut(NamedTuple):
    table: list  # one row per project: HEADERS
    pick: object  # gr.Dropdown update: the projects to open, the open one chosen
    status: str


class OpenOut(NamedTuple):
    """Open, rename, delete: the open project's folder ("" for none) and the view."""

    project: str
    table: list
    pick: object
    status: str


class CreateOut(NamedTuple):
    project: str
    table: list
    pick: object
    status: str
    tabs: object  # gr.Tabs update: on to step 2
    visitor: str  # this session's visitor id ("" unless isolated)


class ImportOut(NamedTuple):
    project: str
    table: list
    pick: object
    status: str
    upload: None  # the upload box, emptied
    visitor: str


class ArchiveOut(NamedTuple):
    status: str
    archive_file: object  # gr.File update: the packed project, shown when ready


def project_rows(root: str | os.PathLike | None = None) -> list[dict]:
    """Projects under ``root`` (default: the data dir) with counts: ``{"name", "path", "images", "classes",
    "labels", "labeled"}``."""
    from ...review import label_counts

    out = []
    for p in list_projects(root):
        row = {
            "name": p["name"],
            "path": p["path"],
            "images": p.get("images", 0),
            "classes": p.get("classes", 0),
            "labels": "multi" if p.get("multi_label") else "single",
            "labeled": "",
            "error": p.get("error"),
        }
        if not p.get("error"):
            try:
                project = Project(p["path"])
                c = label_counts(project)
                row["labeled"] = f"{c['human'] + c['accepted']} reviewed, {c['pseudo']} pseudo"
                project.close()
            except Exception as exc:  # a broken project must not hide the others
                row["error"] = str(exc)
        out.append(row)
    return out


def _table(home: Path | None = None) -> list[list]:
    return [[r["name"], r["images"], r["classes"], r["labels"], r["error"] or r["labeled"]] for r in project_rows(home)]


def _choices(home: Path | None = None) -> list[tuple[str, str]]:
    return [(r["name"], r["path"]) for r in project_rows(home) if not r.get("error")]


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


def _pick(choices: list, key: str, clear: bool = False):
    """The project list's update: its choices, showing the open project. With none open the box keeps what the
    user picked (a step refresh that lands between their pick and their "Open" must not undo it) unless
    ``clear`` (the picked project was just deleted)."""
    if key or clear:
        return gr.Dropdown(choices=choices, value=key or None)
    return gr.Dropdown(choices=choices)


@guard
def refresh(ctx: Ctx, key: str, visitor: str = "") -> ViewOut:
    return _view(ctx, key, visitor)


def _view(ctx: Ctx, key: str, visitor: str = "", clear: bool = False) -> ViewOut:
    if ctx.isolate:
        try:
            home = ctx.home(visitor)
        except InvalidInputError:  # no visitor id yet (the page is still loading): nothing to list
            return ViewOut([], _pick([], "", clear), _status(ctx, ""))
        return ViewOut(_table(home), _pick(_choices(home), key, clear), _status(ctx, key))
    return ViewOut(_table(), _pick(_choices(), key, clear), _status(ctx, key))


def session_visitor(ctx: Ctx, visitor: str, kept: str | None = None, request: gr.Request | None = None) -> str:
    """This session's visitor id (:func:`labeler.ui.space.resolve_visitor`): the browser's kept one, else the
    session's, else one derived from the session (the page's load handler, still queued, derives the same); ""
    unless isolated. An API client (it never loads the page) gets one of its own the same way."""
    if not ctx.isolate:
        return ""
    return resolve_visitor(visitor, kept, getattr(request, "session_hash", None))


def check_owner(ctx: Ctx, key: str, visitor: str) -> None:
    """gr.Error unless this session may touch the project at ``key`` (on a Space: only its own)."""
    if not ctx.owned(key, visitor):
        raise gr.Error("That project belongs to another visitor of this app: open one of yours.")


@guard
def create(
    ctx: Ctx,
    name_text: str,
    multi_label: bool,
    classes_text: str,
    visitor: str = "",
    kept: str | None = None,
    request: gr.Request | None = None,
) -> CreateOut:
    visitor = session_visitor(ctx, visitor, kept, request)
    if not (name_text or "").strip():
        raise gr.Error("Type a project name first (e.g. 'pets').")
    name = validate_project_name(name_text)  # a name, never a path: projects live in the data dir
    names = parse_class_list(classes_text or "")
    where = ctx.home(visitor) / name if ctx.isolate else name
    project = Project.create(where, names, multi_label=bool(multi_label))
    ctx.allow(project)
    key = str(project.root)
    gr.Info(f"Created project {project.name}. Next: import images.")
    return CreateOut(key, *refresh(ctx, key, visitor), tabs=gr.Tabs(selected=1), visitor=visitor)


@guard
def open_(ctx: Ctx, choice: str, visitor: str = "") -> OpenOut:
    if not choice:
        raise gr.Error("Pick a project in the list first (or create one).")
    try:
        root = resolve_project_path(choice)
    except InvalidInputError as exc:
        raise gr.Error(ui_error(str(exc), exc.hint)) from None
    if ctx.isolate and not Path(str(choice)).is_absolute():
        root = ctx.home(visitor) / str(choice)
    check_owner(ctx, str(root), visitor)
    project = ctx.open(str(root))
    key = str(project.root)
    running = [t for t in background_tasks(key) if t.running]
    if running:
        gr.Info(f"{len(running)} job(s) still running in this project: see the jobs panel.")
    return OpenOut(key, *refresh(ctx, key, visitor))


@guard
def rename(ctx: Ctx, key: str, new: str, visitor: str = "") -> OpenOut:
    check_owner(ctx, key, visitor)
    project = ctx.open(key)
    renamed = rename_project(project, new, root=ctx.home(visitor) if ctx.isolate else None)
    ctx.allow(renamed)
    key = str(renamed.root)
    gr.Info(f"Renamed to {renamed.name}.")
    return OpenOut(key, *refresh(ctx, key, visitor))


@guard
def delete(ctx: Ctx, key: str, typed: str, visitor: str = "") -> OpenOut:
    check_owner(ctx, key, visitor)
    project = ctx.open(key)
    if (typed or "").strip() != project.name:
        raise gr.Error(f"To delete, type the project's name ({project.name}) in the box above the button.")
    if any(t.running for t in background_tasks(key)):
        raise InvalidInputError("a job is running in this project: cancel it in the jobs panel first")
    name = project.name
    project.delete()
    gr.Info(f"Deleted project {name} (images outside the project folder were not touched).")
    return OpenOut("", *_view(ctx, "", visitor, clear=True))


@guard
def export(ctx: Ctx, key: str) -> ArchiveOut:
    """Pack the open project into one .zip in the background (:func:`exported` shows it when ready)."""
    project = ctx.open(key)
    root = str(project.root)
    outside = ctx.local_mode  # in uploads-only mode (a Space) nothing outside the project folder is ever read

    def work():
        p = Project(root)
        try:
            return str(export_archive(p, outside=outside))
        finally:
            p.close()

    run_in_background(root, "archive", work, label="project archive")
    return ArchiveOut(
        "Packing the project into one .zip… it appears here when ready (progress: jobs panel).", gr.File(visible=False)
    )


def size_text(size: int) -> str:
    """A file size as the step shows it: MB from 100 kB up, else kB (at least 1)."""
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{max(1, round(size / 1e3))} kB"


@guard
def exported(ctx: Ctx, key: str, marker: str) -> ArchiveOut:
    """The archive, shown for download, when an archive task of the open project ended (else both skip)."""
    task = finished_task(key, marker, {"archive"})
    if task is None:
        return ArchiveOut(gr.skip(), gr.skip())
    if task.status != "done":
        return ArchiveOut(f"**Export {task.status}:** {error_text(task.error, task.hint)}", gr.File(visible=False))
    shown = size_text(Path(task.result).stat().st_size)
    return ArchiveOut(
        f"Exported **{md_escape(Path(task.result).name)}** ({shown}): download it below.",
        gr.File(value=task.result, visible=True),
    )


@guard
def import_(
    ctx: Ctx, upload_path, visitor: str = "", kept: str | None = None, request: gr.Request | None = None
) -> ImportOut:
    visitor = session_visitor(ctx, visitor, kept, request)
    if not upload_path:
        raise gr.Error("Choose a project archive (.zip made by 'Export') first.")
    path = upload_path if isinstance(upload_path, str) else getattr(upload_path, "name", upload_path)
    project = import_archive(
        path,
        root=ctx.home(visitor) if ctx.isolate else None,
        max_bytes=max_import_bytes(uploads_only=not ctx.local_mode),
    )
    ctx.allow(project)
    key = str(project.root)
    gr.Info(f"Imported project {project.name}: {project.image_count()} images.")
    return ImportOut(key, *refresh(ctx, key, visitor), upload=None, visitor=visitor)


def build(ctx: Ctx) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            if ctx.isolate:
                gr.Markdown(
                    "#### Your projects\n<span class='lb-note'>Only this browser sees them. This server's disk is "
                    "not kept: <b>export</b> a project (below) to keep your work, and import it next time.</span>"
                )
            else:
                gr.Markdown(f"#### Projects in `{ctx.data_dir}`")
            table = gr.Dataframe(
                headers=HEADERS,
                value=[] if ctx.isolate else _table(),
                interactive=False,
                max_height=320,
                column_widths=["28%", "13%", "13%", "13%", "33%"],
                wrap=True,
                elem_id="project-table",
            )
            with gr.Row():
                pick = gr.Dropdown(
                    label="Open a project",
                    choices=[] if ctx.isolate else _choices(),
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
            with gr.Accordion("Export or import a whole project (.zip)", open=ctx.isolate, elem_id="project-archive"):
                gr.Markdown(
                    "<span class='lb-note'>One file with the images, labels, descriptions, features and "
                    "training runs — to move a project or keep it.</span>"
                )
                export_btn = gr.Button("Export the open project", size="sm", elem_id="project-export")
                archive_file = gr.File(
                    label="Project archive", interactive=False, visible=False, elem_id="project-archive-file"
                )
                upload = gr.File(
                    label="Import a project archive",
                    file_types=[".zip"],
                    file_count="single",
                    elem_id="project-archive-upload",
                )
                import_btn = gr.Button("Import as a new project", size="sm", elem_id="project-import")
    status = gr.Markdown(_status(ctx, ""), elem_id="project-status")

    visitor = [ctx.visitor]
    # A new project goes to the visitor's folder: the browser's kept id is read at the click too (the page's load
    # handler may still be queued); for an API client it is an optional last parameter (default: its session's).
    made = [ctx.visitor, ctx.kept_visitor] if ctx.isolate else []
    view = {"table": table, "pick": pick, "status": status}
    opened = wire(OpenOut, project=ctx.project, **view)
    created = wire(CreateOut, project=ctx.project, **view, tabs=ctx.tabs, visitor=ctx.visitor)
    create_btn.click(bind(create, ctx), [name, multi, classes, *made], created, api_name="project_create")
    name.submit(bind(create, ctx), [name, multi, classes, *made], created, api_visibility="private")
    open_btn.click(bind(open_, ctx), [pick, *visitor], opened, api_name="project_open")
    rename_btn.click(bind(rename, ctx), [ctx.project, new_name, *visitor], opened, api_name="project_rename")
    delete_btn.click(bind(delete, ctx), [ctx.project, confirm, *visitor], opened, api_name="project_delete")
    archived = wire(ArchiveOut, status=status, archive_file=archive_file)
    export_btn.click(bind(export, ctx), [ctx.project], archived, api_name="project_export")
    ctx.finished.change(bind(exported, ctx), [ctx.project, ctx.finished], archived, api_visibility="private")
    imported = wire(ImportOut, project=ctx.project, **view, upload=upload, visitor=ctx.visitor)
    import_btn.click(bind(import_, ctx), [upload, *made], imported, api_name="project_import")
    outs = wire(ViewOut, **view)
    return {
        "refresh": bind(refresh, ctx),
        "outputs": outs,
        "api_name": "project_view",
        "inputs": [ctx.project, *visitor],
    }
