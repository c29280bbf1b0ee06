"""Step 8 · Export: CSV, ImageFolder (zip) and JSONL downloads, with a preview of the first rows."""

from __future__ import annotations

import gradio as gr

from ...export import export_for_download, recent_exports
from ...jobs import run_in_background
from ...labels import label_counts
from ...project import Project
from ..common import NO_PROJECT, Ctx, empty_state, error_text, finished_task, guard

FORMATS = [
    ("CSV (path, label, score, source)", "csv"),
    ("ImageFolder — one folder per class, zipped", "imagefolder"),
    ("JSONL (one JSON object per image)", "jsonl"),
]


def _short(header: str, value):
    """Preview cells stay readable: hashes and long texts are cut (the file has them in full)."""
    if header == "sha256" and isinstance(value, str):
        return value[:10] + "…"
    if isinstance(value, str) and len(value) > 60:
        return value[:57] + "…"
    return value


def build(ctx: Ctx) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            summary = gr.Markdown(elem_id="export-summary")
            fmt = gr.Radio(FORMATS, value="csv", label="Format", elem_id="export-format")
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

    def summary_text(project):
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

    def done(project, res):
        name = res["path"].rsplit("/", 1)[-1]
        msg = (
            f"Wrote **{name}**: {res['n_images']} images ({res['n_labeled']} labeled, {res['n_unlabeled']} "
            "unlabeled)" + (f", {res['n_missing']} source files missing" if res.get("n_missing") else "") + "."
        )
        if res.get("audit"):
            msg += f" The audited accuracy is beside it in **{res['audit'].rsplit('/', 1)[-1]}**."
        rows = [[_short(h, v) for h, v in zip(res["headers"], row, strict=False)] for row in res["rows"]]
        return (
            gr.DownloadButton(f"Download {name}", value=res["path"], visible=True),
            msg,
            gr.Dataframe(value=rows, headers=res["headers"], visible=True),
            _recent(project),
        )

    def _recent(project):
        files = recent_exports(project)
        return gr.File(value=files or None, visible=bool(files))

    outs = [summary, download, status, preview, recent]

    @guard
    def refresh(key):
        project = ctx.open(key, required=False)
        if project is None:
            return (
                empty_state(NO_PROJECT),
                gr.DownloadButton(visible=False),
                "",
                gr.Dataframe(visible=False),
                gr.File(visible=False),
            )
        return summary_text(project), gr.skip(), gr.skip(), gr.skip(), _recent(project)

    @guard
    def run(key, fmt_value):
        project = ctx.open(key)
        if project.image_count() == 0:
            raise gr.Error("There are no images to export: import some in step 2 first.")
        if fmt_value == "imagefolder":  # copies every image: a background job
            root = str(project.root)

            def work():
                p = Project(root)
                try:
                    return export_for_download(p, "imagefolder")
                finally:
                    p.close()

            run_in_background(root, "export", work, label="ImageFolder export")
            return (
                summary_text(project),
                gr.DownloadButton(visible=False),
                "Copying the images into class folders… progress is in the jobs panel.",
                gr.skip(),
                gr.skip(),
            )
        res = export_for_download(project, fmt_value)
        return (summary_text(project), *done(project, res))

    @guard
    def finished(key, marker):
        task = finished_task(key, marker, {"export"})
        if task is None:
            return (gr.skip(),) * len(outs)
        project = ctx.open(key)
        if task.status != "done":
            return (
                gr.skip(),
                gr.skip(),
                f"**Export {task.status}:** {error_text(task.error, task.hint)}",
                gr.skip(),
                gr.skip(),
            )
        return (summary_text(project), *done(project, task.result))

    export_btn.click(run, [ctx.project, fmt], outs, api_name="export_run")
    ctx.finished.change(finished, [ctx.project, ctx.finished], outs, api_visibility="private")
    return {"refresh": refresh, "outputs": outs, "api_name": "export_view"}
