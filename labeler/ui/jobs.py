"""The jobs panel: what is running in the open project, polled by a gr.Timer; cancel a job.

Two sources, both through the library: the project's ``runs`` rows (every import, features,
labeling, description, clustering and training job records one — they outlive the browser tab and
the server) and this process's background tasks (:func:`labeler.jobs.background_tasks`), which also
know about work that failed before it could start its row. When a task of the open project ends,
the panel writes ``"<project>#task_id:kind"`` into ``ctx.finished`` (only against a baseline set when the project
was opened, marked with a trailing ``BASELINE``, so tasks that ended before are history, not news); the steps listen
to it and refresh.
"""

from __future__ import annotations

import html
import time
from typing import NamedTuple

import gradio as gr

from ..jobs import background_tasks, list_runs, request_cancel
from .common import BASELINE, Ctx, bind, guard, ui_error, wire

HEADERS = ["run", "kind", "method", "status", "progress", "message"]
RECENT = 8
IDLE = "<div class='lb-job lb-idle'>Jobs of the open project show here.</div>"
NOTHING_RUNNING = (
    "<div class='lb-job lb-idle'>No job running. Long steps (import, features, zero-shot, "
    "training) run here in the background: you can leave the page and come back.</div>"
)


class Snapshot(NamedTuple):
    """The open project's jobs, read once per poll."""

    live: str  # HTML: running jobs with their bars, tasks starting, recent failures
    rows: list  # HEADERS rows of the RECENT newest runs
    choices: list  # (label, run id) of the running runs, for the cancel picker
    running: list  # the running ``runs`` rows
    marker: str  # "<project>#<task id>:<kind>" of the newest finished task ("<project>#" for none)


class PollOut(NamedTuple):
    live: str
    table: list
    cancel_pick: object  # gr.Dropdown update
    cancel_btn: object  # gr.Button update: shown while something runs
    panel: object  # gr.Accordion update: "Job history (N recent)"
    signature: str  # what was shown last (unchanged: every field skips)
    finished: str  # ctx.finished: the newest finished task, when it is news


class ResetOut(NamedTuple):
    finished: str  # the baseline marker of the newly opened project
    signature: str


def _bar(frac: float) -> str:
    pct = max(0.0, min(1.0, float(frac or 0.0))) * 100
    return f"<span class='lb-bar'><span style='width:{pct:.0f}%'></span></span> {pct:.0f}%"


def stale_failure(task, tasks: list) -> bool:
    """Whether a job was started after ``task`` ended: then its failure is old news, not shown any more (the
    job history and the step that ran it still say what happened)."""
    return task.finished_at is not None and any(t.started_at >= task.finished_at for t in tasks if t is not task)


def live_lines(runs: list[dict], tasks: list) -> list[str]:
    """One HTML line per running run, per task still starting (none running yet), per recent failure."""
    running = [r for r in runs if r["status"] == "running"]
    lines = []
    for r in running:
        what = f"<b>{html.escape(r['kind'])}</b> {html.escape(r['method'] or '')} (run {r['id']})"
        lines.append(
            f"<div class='lb-job'>{what} {_bar(r['progress'])} <small>{html.escape(r['message'] or '')}</small></div>"
        )
    busy_tasks = [t for t in tasks if t.running]
    if busy_tasks and not running:
        for t in busy_tasks:
            lines.append(
                f"<div class='lb-job'><b>{html.escape(t.label)}</b> starting… "
                f"<small>{time.time() - t.started_at:.0f} s</small></div>"
            )
    for t in tasks[:3]:
        if stale_failure(t, tasks):
            continue
        if t.status == "failed" and t.finished_at and time.time() - t.finished_at < 600:
            lines.append(
                f"<div class='lb-job lb-failed'><b>{html.escape(t.label)} failed:</b> "
                f"{html.escape(ui_error(t.error, t.hint))}</div>"
            )
    return lines


def history_rows(runs: list[dict]) -> list[list]:
    """The job history table: the RECENT newest runs."""
    return [
        [
            r["id"],
            r["kind"],
            r["method"] or "",
            r["status"],
            f"{100 * (r['progress'] or 0):.0f}%",
            r["error"] or r["message"] or "",
        ]
        for r in runs[:RECENT]
    ]


def snapshot(ctx: Ctx, key: str) -> Snapshot:
    """What the panel shows for the project at ``key`` (idle for none)."""
    project = ctx.open(key, required=False) if key else None
    if project is None:
        return Snapshot(IDLE, [], [], [], "")
    runs = list_runs(project)
    tasks = background_tasks(key)
    running = [r for r in runs if r["status"] == "running"]
    lines = live_lines(runs, tasks) or [NOTHING_RUNNING]
    choices = [(f"run {r['id']} · {r['kind']}", r["id"]) for r in running]
    done = sorted((t for t in tasks if not t.running), key=lambda t: (t.finished_at or 0, t.id))
    marker = f"{key}#{done[-1].id}:{done[-1].kind}" if done else f"{key}#"
    return Snapshot("".join(lines), history_rows(runs), choices, running, marker)


@guard
def poll(ctx: Ctx, key: str, sig: str, finished: str) -> PollOut:
    """The panel, every tick: skips what did not change; announces a newly finished task in ``ctx.finished``."""
    snap = snapshot(ctx, key)
    new_sig = repr((snap.live, snap.rows, snap.choices))
    label = f"Job history ({len(snap.rows)} recent)" if snap.rows else "Job history"
    # News only against a baseline of this project (set by `reset` when it was opened): a poll that still
    # carries another project's marker, or none, must not announce tasks that ended before it was opened.
    seen = str(finished or "")
    fresh = bool(key) and seen.startswith(f"{key}#") and snap.marker != seen.removesuffix(BASELINE)
    fin = snap.marker if fresh else gr.skip()
    if new_sig == sig:
        return PollOut(gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), sig, fin)
    choices = snap.choices
    return PollOut(
        snap.live,
        snap.rows,
        gr.Dropdown(choices=choices, value=choices[0][1] if choices else None, visible=bool(choices)),
        gr.Button(visible=bool(choices)),
        gr.Accordion(label=label),
        new_sig,
        fin,
    )


@guard
def cancel(ctx: Ctx, key: str, run_id) -> str:
    """Ask run ``run_id`` to stop after its current batch; clears the signature (the panel redraws)."""
    project = ctx.open(key)
    if run_id is None:
        raise gr.Error("No job is running (pick one in the list next to the button).")
    request_cancel(project, int(run_id))
    gr.Info(f"Asked run {run_id} to stop after its current batch; what it finished is kept.")
    return ""


@guard
def reset(ctx: Ctx, key: str) -> ResetOut:
    """A newly opened project: its finished tasks are history, not news. The baseline marker ends in BASELINE,
    so the steps listening to ctx.finished (common.finished_task) know it announces nothing."""
    return ResetOut(snapshot(ctx, key).marker + BASELINE, "")


def build(ctx: Ctx) -> dict:
    with gr.Row(equal_height=True, elem_id="jobs-panel", elem_classes=["lb-jobs"]):
        live = gr.HTML(IDLE, elem_id="jobs-live", scale=5, padding=False)
        cancel_pick = gr.Dropdown(
            choices=[], container=False, elem_id="jobs-pick", scale=1, min_width=150, visible=False
        )
        cancel_btn = gr.Button(
            "Cancel job", size="sm", variant="stop", elem_id="jobs-cancel", scale=0, min_width=110, visible=False
        )
    with gr.Accordion("Job history", open=False, elem_id="jobs-history") as panel:
        table = gr.Dataframe(
            headers=HEADERS,
            interactive=False,
            max_height=200,
            wrap=True,
            column_widths=["7%", "11%", "11%", "12%", "12%", "47%"],
            elem_id="jobs-table",
        )
    timer = gr.Timer(1.0)
    signature = gr.State("")

    outs = wire(
        PollOut,
        live=live,
        table=table,
        cancel_pick=cancel_pick,
        cancel_btn=cancel_btn,
        panel=panel,
        signature=signature,
        finished=ctx.finished,
    )
    polled = bind(poll, ctx)
    timer.tick(polled, [ctx.project, signature, ctx.finished], outs, api_name="jobs_poll", show_progress="hidden")
    cancel_btn.click(bind(cancel, ctx), [ctx.project, cancel_pick], [signature], api_name="jobs_cancel")
    resets = wire(ResetOut, finished=ctx.finished, signature=signature)
    ctx.project.change(bind(reset, ctx), [ctx.project], resets, api_visibility="private")
    return {"poll": polled, "outputs": outs}
