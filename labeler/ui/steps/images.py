"""Step 2 · Images: upload files or a zip (or, locally, a folder path); counts, skipped files, thumbnails."""

from __future__ import annotations

import os
from typing import NamedTuple

import gradio as gr

from ...errors import InvalidInputError
from ...ingest import IMAGE_EXTENSIONS, import_sources, max_import_bytes, over_cap_message, thumbnail_for
from ...jobs import run_in_background
from ...preview import export_path_of
from ...project import Project, folder_class_names, image_page
from ..common import NO_PROJECT, Ctx, bind, empty_state, error_text, finished_task, guard, md_escape, wire

PAGE = 48


class ViewOut(NamedTuple):
    counts: str
    gallery: list  # (thumbnail path, relative path) pairs of the page
    page_info: str
    skipped: list  # [file, reason] rows
    skipped_box: object  # gr.Accordion update (its label counts the skipped files)
    page: int


class FinishedOut(NamedTuple):
    counts: str
    gallery: list
    page_info: str
    skipped: list
    skipped_box: object
    page: int
    status: str


def _start_import(ctx: Ctx, key: str, sources: list[str], copy: bool, what: str) -> str:
    project = ctx.open(key)
    root = str(project.root)
    cap = max_import_bytes(uploads_only=not ctx.local_mode)  # LABELER_MAX_IMPORT_BYTES; 2 GB on a Space
    if copy:  # uploads: refuse at once what could never fit (zip contents are checked by the import itself)
        sizes = {p: os.path.getsize(p) for p in sources if os.path.isfile(p)}
        if sum(sizes.values()) > cap:
            biggest = max(sizes, key=sizes.get)
            raise InvalidInputError(over_cap_message(os.path.basename(biggest), sum(sizes.values()), cap))

    def work():
        p = Project(root)
        try:
            return import_sources(p, sources, copy=copy, max_bytes=cap).to_dict()
        finally:
            p.close()

    run_in_background(root, "import", work, label=f"import {what}")
    return f"Importing {md_escape(what)}… progress is in the jobs panel; this page updates when it is done."


def no_images_text(local_mode: bool) -> str:
    return empty_state(
        "No images yet. Upload image files or a .zip on the left"
        + (", or type the path of a folder on this machine" if local_mode else "")
        + ", then press Import."
    )


def view(ctx: Ctx, key: str, page_no) -> ViewOut:
    """Page ``page_no`` (clamped) of the open project's thumbnails, with the counts and skipped files."""
    project = ctx.open(key, required=False)
    if project is None:
        return ViewOut(empty_state(NO_PROJECT), [], "", [], gr.Accordion(label="Skipped files"), 0)
    n = project.image_count()
    skipped_rows = [[s["path"], s["reason"]] for s in project.skipped()]
    missing = project.image_count("missing")
    if n == 0:
        box = gr.Accordion(label=f"Skipped files ({len(skipped_rows)})")
        return ViewOut(no_images_text(ctx.local_mode), [], "", skipped_rows, box, 0)
    pages = max(1, -(-n // PAGE))
    page_no = min(max(0, int(page_no or 0)), pages - 1)
    rows = image_page(project, page_no * PAGE, PAGE)
    paths = export_path_of(project, [r["id"] for r in rows])  # the CSV's unique path, not the repeating rel_path
    items = [(thumbnail_for(project, r["id"], r["sha256"]), paths.get(r["id"], r["rel_path"])) for r in rows]
    items = [it for it in items if it[0]]
    folders = folder_class_names(project)
    text = (
        f"**{n} images** · {len(skipped_rows)} skipped · {missing} missing"
        + (f" · {len(folders)} folders" if folders else "")
        + "  \nNext: enter the classes (step 3)"
        + (" — or take the folder names there." if folders else ".")
    )
    return ViewOut(
        text,
        items,
        f"page {page_no + 1} of {pages}",
        skipped_rows,
        gr.Accordion(label=f"Skipped files ({len(skipped_rows)})", open=bool(skipped_rows) and n < 1),
        page_no,
    )


@guard
def refresh(ctx: Ctx, key: str) -> ViewOut:
    return view(ctx, key, 0)


@guard
def turn(ctx: Ctx, key: str, page_no, delta: int) -> ViewOut:
    return view(ctx, key, int(page_no or 0) + delta)


@guard
def prev_page(ctx: Ctx, key: str, page_no) -> ViewOut:
    return turn(ctx, key, page_no, -1)


@guard
def next_page(ctx: Ctx, key: str, page_no) -> ViewOut:
    return turn(ctx, key, page_no, +1)


@guard
def import_uploads(ctx: Ctx, key: str, paths) -> str:
    """Start importing uploaded files (copied into the project) in the background; the status line."""
    if not paths:
        raise gr.Error("Choose image files or a .zip in the upload box first.")
    paths = [p if isinstance(p, str) else getattr(p, "name", str(p)) for p in paths]
    return _start_import(ctx, key, paths, copy=True, what=f"{len(paths)} uploaded file(s)")


@guard
def import_folder(ctx: Ctx, key: str, path: str) -> str:
    """Start importing a folder (or zip) on this machine, in place, in the background; the status line."""
    if not ctx.local_mode:
        raise gr.Error("Folder import is off in this app: upload files or a zip instead.")
    path = (path or "").strip().strip('"').strip("'")
    if not path:
        raise gr.Error("Type the path of a folder (or .zip) on this machine first.")
    full = os.path.expanduser(path)
    if not os.path.exists(full):
        raise gr.Error(
            f"{path} does not exist on this machine: check the path (it is on the server, not your browser's computer)."
        )
    return _start_import(ctx, key, [full], copy=False, what=path)


def import_message(task) -> str:
    """What a finished import task says in the status line."""
    if task.status != "done":
        return f"Import {task.status}: {error_text(task.error, task.hint)}"
    r = task.result or {}
    return (
        f"Import finished: **{r.get('added', 0)} added**, {r.get('duplicates', 0)} duplicates, "
        f"{len(r.get('skipped', []))} skipped."
    )


@guard
def finished(ctx: Ctx, key: str, marker: str) -> FinishedOut:
    """The first page and the import's outcome when an import task of the open project ended (else all skip)."""
    task = finished_task(key, marker, {"import"})
    if task is None:
        return FinishedOut(*(gr.skip(),) * len(FinishedOut._fields))
    return FinishedOut(*view(ctx, key, 0), import_message(task))


def build(ctx: Ctx) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            files = gr.File(
                label="Upload images or a .zip",
                file_count="multiple",
                file_types=sorted(IMAGE_EXTENSIONS) + [".zip"],
                height=150,
                elem_id="images-upload",
            )
            upload_btn = gr.Button("Import uploaded files", variant="primary", elem_id="images-import-upload")
            if ctx.local_mode:
                folder = gr.Textbox(
                    label="…or a folder (or zip) on this machine",
                    placeholder="/home/me/Pictures/pets",
                    info="imported in place, subfolders included; nothing is copied",
                    elem_id="images-folder",
                )
                folder_btn = gr.Button("Import folder", variant="primary", elem_id="images-import-folder")
            else:
                folder = gr.Textbox(visible=False)
                folder_btn = gr.Button(visible=False)
            status = gr.Markdown(elem_id="images-status")
        with gr.Column(scale=2):
            counts = gr.Markdown(elem_id="images-counts")
            gallery = gr.Gallery(
                label="Thumbnails",
                show_label=False,
                columns=6,
                height=380,
                allow_preview=True,
                object_fit="cover",
                fit_columns=False,  # a few images keep their size (gradio would stretch them over the row)
                elem_id="images-gallery",
                buttons=[],
            )
            with gr.Row():
                prev_btn = gr.Button("← Previous", size="sm", elem_id="images-prev")
                page_info = gr.Markdown(elem_classes=["lb-center"])
                next_btn = gr.Button("Next →", size="sm", elem_id="images-next")
            with gr.Accordion("Skipped files", open=False) as skipped_box:
                skipped = gr.Dataframe(
                    headers=["file", "reason"],
                    interactive=False,
                    max_height=240,
                    wrap=True,
                    column_widths=["55%", "45%"],
                    elem_id="images-skipped",
                )
    page = gr.State(0)

    shown = {"counts": counts, "gallery": gallery, "page_info": page_info, "skipped": skipped}
    outs = wire(ViewOut, **shown, skipped_box=skipped_box, page=page)
    upload_btn.click(bind(import_uploads, ctx), [ctx.project, files], [status], api_name="images_import_upload")
    folder_btn.click(bind(import_folder, ctx), [ctx.project, folder], [status], api_name="images_import_folder")
    folder.submit(bind(import_folder, ctx), [ctx.project, folder], [status], api_visibility="private")
    prev_btn.click(bind(prev_page, ctx), [ctx.project, page], outs, api_visibility="private")
    next_btn.click(bind(next_page, ctx), [ctx.project, page], outs, api_visibility="private")
    ctx.finished.change(
        bind(finished, ctx),
        [ctx.project, ctx.finished],
        wire(FinishedOut, **shown, skipped_box=skipped_box, page=page, status=status),
        api_visibility="private",
    )
    return {"refresh": bind(refresh, ctx), "outputs": outs, "api_name": "images_view"}
