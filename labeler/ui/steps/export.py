"""Step 9 · Export: every registered format (CSV, ImageFolder zipped, JSONL, the trained model) as a download,
with a preview of the first rows, and the options multi-label projects need (one-hot columns, per-class scores,
one folder per label with links)."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr

from ...export import export_for_download, list_exporters, recent_exports
from ...jobs import run_in_background
from ...project import Project
from ...review import label_counts
from ..common import NO_PROJECT, Ctx, bind, empty_state, error_text, finished_task, guard, wire

#: How the step names the formats it knows well; any other registered exporter shows its registry summary.
FORMAT_LABELS = {
    "csv": "CSV (path, label, score, source)",
    "imagefolder": "ImageFolder — one folder per class, zipped",
    "jsonl": "JSONL (one JSON object per image)",
    "model": "Model — the trained model (.pt)",
}


#: The export options the step offers, as (label, exporter option); each format takes those it has.
OPTIONS = [
    ("One-hot columns (CSV: a 0/1 column per class)", "one_hot"),
    ("Per-class scores (CSV columns; JSONL, always on for multi-label)", "scores"),
    ("Links instead of copies (ImageFolder; multi-label: one folder per label)", "link"),
]


def option_values(chosen) -> dict:
    """The exporter options of the ticked boxes (unknown values ignored)."""
    names = {v for _, v in OPTIONS}
    return {v: True for v in (chosen or []) if v in names}


def formats() -> list[tuple[str, str]]:
    """The export formats of the registry (:func:`labeler.export.list_exporters`) as (label, name)."""
    return [(FORMAT_LABELS.get(e["name"], f"{e['name']} — {e['summary']}"), e["name"]) for e in list_exporters()]


class ExportOut(NamedTuple):
    """Every event of the step shows these (``refresh``, ``run``, a finished export)."""

    summary: str
    download: object  # gr.DownloadButton update: the written file
    status: str
    preview: object  # gr.Dataframe update: the first rows
    recent: object  # gr.File update: this project's exports


def _short(header: str, value):
    """Preview cells stay readable: hashes and long texts are cut (the file has them in full)."""
    if header == "sha256" and isinstance(value, str):
        return value[:10] + "…"
    if isinstance(value, str) and len(value) > 60:
        return value[:57] + "…"
    return value


def summary_text(project: Project) -> str:
    """How many images are labeled by whom, and what the file says about it."""
    n = project.image_count()
    if n == 0:
        return empty_state("Nothing to export yet: import images (step 2) and make pseudo-labels (step 5).")
    c = label_counts(project)
    text = (
        f"**{n} images:** {c['human']} labeled by you, {c['accepted']} accepted, {c['pseudo']} pseudo-labels, "
        f"{c['unlabeled']} unlabeled. The file says which for every image (column *source*); your labels "
        "win over accepted ones, which win over pseudo-labels."
    )
    if c["unlabeled"] == n:
        text += "  \n" + empty_state("No image has a label yet: run zero-shot in step 5 first.")
    return text


def recent_files(project: Project):
    files = recent_exports(project)
    return gr.File(value=files or None, visible=bool(files))


def done(project: Project, res: dict) -> ExportOut:
    """The step after an export wrote ``res["path"]`` (:func:`labeler.export.export_for_download`'s result)."""
    name = res["path"].rsplit("/", 1)[-1]
    msg = (
        f"Wrote **{name}**: {res['n_images']} images ({res['n_labeled']} labeled, {res['n_unlabeled']} "
        "unlabeled"
        + (f", {res['n_none']} labeled none of the classes" if res.get("n_none") else "")
        + ")"
        + (f", {res['n_missing']} source files missing" if res.get("n_missing") else "")
        + "."
    )
    if res.get("audit"):
        msg += f" The audited accuracy is beside it in **{res['audit'].rsplit('/', 1)[-1]}**."
    rows = [[_short(h, v) for h, v in zip(res["headers"], row, strict=False)] for row in res["rows"]]
    return ExportOut(
        summary=summary_text(project),
        download=gr.DownloadButton(f"Download {name}", value=res["path"], visible=True),
        status=msg,
        preview=gr.Dataframe(value=rows, headers=res["headers"], visible=True),
        recent=recent_files(project),
    )


@guard
def refresh(ctx: Ctx, key: str) -> ExportOut:
    project = ctx.open(key, required=False)
    if project is None:
        return ExportOut(
            empty_state(NO_PROJECT),
            gr.DownloadButton(visible=False),
            "",
            gr.Dataframe(visible=False),
            gr.File(visible=False),
        )
    return ExportOut(summary_text(project), gr.skip(), gr.skip(), gr.skip(), recent_files(project))


def _start_imagefolder(project: Project, options: dict) -> ExportOut:
    root = str(project.root)

    def work():
        p = Project(root)
        try:
            return export_for_download(p, "imagefolder", **options)
        finally:
            p.close()

    run_in_background(root, "export", work, label="ImageFolder export")
    return ExportOut(
        summary_text(project),
        gr.DownloadButton(visible=False),
        "Copying the images into class folders… progress is in the jobs panel.",
        gr.skip(),
        gr.skip(),
    )


@guard
def run(ctx: Ctx, key: str, fmt_value: str, chosen: list[str] | None = None) -> ExportOut:
    """Export in format ``fmt_value`` with the ticked ``chosen`` options (ImageFolder copies every image: a
    background job)."""
    project = ctx.open(key)
    if project.image_count() == 0:
        raise gr.Error("There are no images to export: import some in step 2 first.")
    options = option_values(chosen)
    if fmt_value == "imagefolder":
        if project.multi_label and not options.get("link"):
            raise gr.Error(
                "This project is multi-label and an ImageFolder holds one class per image: tick “Links instead of "
                "copies” for one folder per label, or export CSV with one-hot columns, or JSONL."
            )
        return _start_imagefolder(project, options)
    return done(project, export_for_download(project, fmt_value, **options))


@guard
def finished(ctx: Ctx, key: str, marker: str) -> ExportOut:
    """The written file when an export task of the open project ended (else all skip)."""
    task = finished_task(key, marker, {"export"})
    if task is None:
        return ExportOut(*(gr.skip(),) * len(ExportOut._fields))
    project = ctx.open(key)
    if task.status != "done":
        failed = f"**Export {task.status}:** {error_text(task.error, task.hint)}"
        return ExportOut(gr.skip(), gr.skip(), failed, gr.skip(), gr.skip())
    return done(project, task.result)


def build(ctx: Ctx) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            summary = gr.Markdown(elem_id="export-summary")
            fmt = gr.Radio(formats(), value="csv", label="Format", elem_id="export-format")
            opts = gr.CheckboxGroup(
                OPTIONS,
                value=[],
                label="Options",
                info="Each format takes the ones it has. Multi-label: one-hot columns, or links for ImageFolder.",
                elem_id="export-options",
            )
            export_btn = gr.Button("Export", variant="primary", elem_id="export-run")
            download = gr.DownloadButton("Download", visible=False, variant="primary", elem_id="export-download")
            status = gr.Markdown(elem_id="export-status")
        with gr.Column(scale=2):
            preview = gr.Dataframe(
                label="Preview (first rows)",
                interactive=False,
                max_height=360,
                wrap=True,
                elem_id="export-preview",
                visible=False,
            )
            recent = gr.File(
                label="Exports of this project (newest first)",
                interactive=False,
                file_count="multiple",
                height=140,
                elem_id="export-recent",
                visible=False,
            )

    outs = wire(ExportOut, summary=summary, download=download, status=status, preview=preview, recent=recent)
    export_btn.click(bind(run, ctx), [ctx.project, fmt, opts], outs, api_name="export_run")
    ctx.finished.change(bind(finished, ctx), [ctx.project, ctx.finished], outs, api_visibility="private")
    return {"refresh": bind(refresh, ctx), "outputs": outs, "api_name": "export_view"}
