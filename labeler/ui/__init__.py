"""The browser app: a wizard from a new project to a downloaded CSV.

``build_demo(data_dir, local_mode)`` builds it (not launched); ``launch(host, port)`` serves it
(``python app.py`` and ``python -m labeler serve`` call it). One module per step —
:mod:`.project`, :mod:`.images`, :mod:`.classes`, :mod:`.descriptions`, :mod:`.pseudolabels`,
:mod:`.captions`, :mod:`.train`, :mod:`.explore`, :mod:`.export` — plus the jobs panel (:mod:`.jobs`) and the
panels shown as tabs inside a step (:data:`PANELS`: the Audit panel, :mod:`.audit`, in step 7). Each step's
``build(ctx)`` lays out its components, wires its events (with ``api_name``s, so gradio_client can
drive every step) and returns its ``refresh(project_key)``; this module wires refreshes to step
selection, "Next" buttons and project changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from ..project import data_dir as default_data_dir  # noqa: E402
from . import assets, jobs, preview  # noqa: E402
from .common import Ctx, bind, guard, md_escape  # noqa: E402
from .steps import (  # noqa: E402
    audit,
    captions,
    classes,
    descriptions,
    explore,
    export,
    images,
    project,
    pseudolabels,
    train,
)

STEPS = [
    ("1 · Project", project),
    ("2 · Images", images),
    ("3 · Classes", classes),
    ("4 · Descriptions", descriptions),
    ("5 · Pseudo-labels", pseudolabels),
    ("6 · Captions", captions),
    ("7 · Train", train),
    ("8 · Explore", explore),
    ("9 · Export", export),
]
#: Panels shown as tabs inside a step, after the step's own content (a module like a step's, see above).
PANELS = {train: [("Audit", audit)]}

#: The app's styles (assets/app.css).
CSS = assets.read("app.css")


def _header_text(ctx: Ctx, key: str) -> str:
    p = ctx.open(key, required=False)
    if p is None:
        return "No project open — start with step 1."
    return (
        f"Project **{md_escape(p.name)}** · {p.image_count()} images · {len(p.classes)} classes · "
        f"{'multi' if p.multi_label else 'single'}-label"
    )


@guard
def header(ctx: Ctx, key: str) -> str:
    """The line under the title: the open project and its counts."""
    return _header_text(ctx, key)


def go_to(index: int):
    """The wizard on step ``index`` (a "Next" button)."""
    return gr.Tabs(selected=index)


def same(value: str) -> str:
    """``value`` itself: copies a state into the browser's storage."""
    return value


def _restore(ctx: Ctx, saved: str, current: str = "", visitor: str = ""):
    """The project a tab had open before, if it still exists (and, on a Space, is this visitor's); nothing when
    this session opened one meanwhile (a click that beat the page's load handler: that project stays)."""
    from ..project import Project

    if not saved or current:
        return gr.skip()
    if not ctx.owned(saved, visitor):
        return ""
    try:
        Project(saved).close()
    except Exception:
        return ""
    return saved


def _visitor_id(saved: str, current: str = "", request: gr.Request | None = None):
    """This browser's visitor id (:func:`labeler.ui.space.resolve_visitor`: the one it kept, else the one this
    session already has, else one derived from the session — the same a click that beat this handler got, so
    its project is this visitor's) and what to store in the browser (skipped when it kept that one)."""
    from .space import resolve_visitor

    vid = resolve_visitor(current, saved, getattr(request, "session_hash", None))
    return vid, (gr.skip() if vid == saved else vid)


def _next_button(index: int):
    """Step ``index``'s "Next: <step> →" button (None on the last step)."""
    if index + 1 >= len(STEPS):
        return None
    return gr.Button(
        f"Next: {STEPS[index + 1][0].split(' · ')[1]} →", size="sm", elem_classes=["lb-next"], elem_id=f"next-{index}"
    )


def _build_step(ctx: Ctx, index: int, label: str, module, panels: list) -> dict:
    """Step ``index``'s content, its panels (``PANELS``) as tabs after it; each panel's (step, tab, handles)
    goes to ``panels``. Returns the step's handles (``build``'s dict)."""
    extra = PANELS.get(module, [])
    if not extra:
        return module.build(ctx)
    with gr.Tabs(elem_id=f"step-{index}-panels"):
        with gr.Tab(label.split(" · ")[1], id="main", elem_id=f"step-{index}-main"):
            handles = module.build(ctx)
        for name, panel in extra:
            with gr.Tab(name, id=name.lower(), elem_id=f"panel-{name.lower()}") as tab:
                panels.append((tab, panel.build(ctx)))
    return handles


def _build_steps(ctx: Ctx) -> tuple[list, list]:
    """The wizard's tabs: ``[(step tab, handles, next button)]`` and ``[(step tab, panel tab, handles)]``."""
    built, panels = [], []
    with gr.Tabs(selected=0, elem_id="lb-wizard") as tabs:
        ctx.tabs = tabs
        for index, (label, module) in enumerate(STEPS):
            with gr.Tab(label, id=index, elem_id=f"step-{index}") as step:
                inner: list = []
                handles = _build_step(ctx, index, label, module, inner)
                panels += [(step, tab, h) for tab, h in inner]
                built.append((step, handles, _next_button(index)))
    return built, panels


def _inputs(ctx: Ctx, handles: dict) -> list:
    return handles.get("inputs", [ctx.project])


def _wire_steps(ctx: Ctx, built: list, panels: list) -> None:
    """Each step (and panel) refreshes when selected, reached by "Next" and when the project changes."""
    for index, (step, handles, nxt) in enumerate(built):
        inputs = _inputs(ctx, handles)
        step.select(handles["refresh"], inputs, handles["outputs"], api_name=handles["api_name"])
        if nxt is not None:
            target = built[index + 1][1]
            nxt.click(bind(go_to, index + 1), None, ctx.tabs, api_visibility="private").then(
                target["refresh"], _inputs(ctx, target), target["outputs"], api_visibility="private"
            )
        ctx.project.change(handles["refresh"], inputs, handles["outputs"], api_visibility="private")
    for step, tab, handles in panels:
        inputs = _inputs(ctx, handles)
        tab.select(handles["refresh"], inputs, handles["outputs"], api_name=handles["api_name"])
        step.select(handles["refresh"], inputs, handles["outputs"], api_visibility="private")
        ctx.project.change(handles["refresh"], inputs, handles["outputs"], api_visibility="private")


def _wire_header(ctx: Ctx, demo: gr.Blocks, shown: gr.Markdown) -> None:
    header_fn = bind(header, ctx)
    ctx.project.change(header_fn, [ctx.project], [shown], api_visibility="private")
    ctx.finished.change(header_fn, [ctx.project], [shown], api_visibility="private")
    demo.load(header_fn, [ctx.project], [shown], api_visibility="private")


#: Marks the page once its load handlers are done (``<body data-lb-loaded="1">``): what a browser test waits for
#: before it acts, where it is not testing a click that races them.
LOADED_JS = "() => { document.body.dataset.lbLoaded = '1'; }"


def _wire_load(ctx: Ctx, demo: gr.Blocks, first: dict) -> None:
    """On page load: step 1's view, then the project this browser had open (kept in its storage); on a Space
    first this browser's visitor id (its own folder of projects)."""
    first_inputs = _inputs(ctx, first)
    last = gr.BrowserState("", storage_key="labeler-open-project")
    ctx.project.change(same, [ctx.project], [last], api_visibility="private")
    restore = bind(_restore, ctx)
    if ctx.isolate:
        kept = ctx.kept_visitor
        ctx.visitor.change(same, [ctx.visitor], [kept], api_visibility="private")
        loaded = demo.load(_visitor_id, [kept, ctx.visitor], [ctx.visitor, kept], api_visibility="private").then(
            first["refresh"], first_inputs, first["outputs"], api_visibility="private"
        )
        loaded = loaded.then(restore, [last, ctx.project, ctx.visitor], [ctx.project], api_visibility="private")
    else:
        loaded = demo.load(first["refresh"], first_inputs, first["outputs"], api_visibility="private")
        loaded = loaded.then(restore, [last, ctx.project], [ctx.project], api_visibility="private")
    loaded.then(None, js=LOADED_JS, api_visibility="private")


def build_demo(
    data_dir: str | os.PathLike | None = None, local_mode: bool = True, isolate: bool | None = None
) -> gr.Blocks:
    """Build the wizard (not launched).

    Parameters
    ----------
    data_dir : path, optional
        Where projects live (sets ``LABELER_DATA_DIR``); default: the current data dir.
    local_mode : bool
        True on your own machine: images can be imported from a folder path on the server. False
        on a shared server (a Space): uploads only.
    isolate : bool, optional
        Give every browser its own folder of projects (``<data dir>/visitors/<random id>/``, the id kept
        in the browser), so visitors never see each other's projects. Default: ``not local_mode``.
    """
    if isolate is None:
        isolate = not local_mode
    if data_dir is not None:
        os.environ["LABELER_DATA_DIR"] = str(Path(data_dir).expanduser().resolve())
    root = default_data_dir()
    with gr.Blocks(title="Labeler") as demo:
        ctx = Ctx(
            data_dir=root,
            local_mode=local_mode,
            project=gr.State(""),
            finished=gr.State(""),
            isolate=bool(isolate),
            visitor=gr.State(""),
            kept_visitor=gr.BrowserState("", storage_key="labeler-visitor") if isolate else None,
        )
        ctx.demo = demo
        with gr.Row(elem_id="lb-header"):
            gr.HTML(f'<div id="lb-brand">{assets.read("logo.svg")}<h1>Labeler</h1></div>', elem_id="lb-title")
            shown = gr.Markdown(_header_text(ctx, ""), elem_id="lb-project")
        jobs.build(ctx)
        built, panels = _build_steps(ctx)
        _wire_steps(ctx, built, panels)
        _wire_header(ctx, demo, shown)
        # A reloaded or reopened tab comes back to the project it had open (its folder, kept in the browser).
        _wire_load(ctx, demo, built[0][1])
    demo.labeler_ctx = ctx  # for launch(): the folders it may serve
    return demo


def launch_options(demo: gr.Blocks) -> dict:
    """What ``demo.launch`` needs besides host and port: CSS, keyboard shortcuts, the folders it may serve."""
    ctx: Ctx = demo.labeler_ctx
    for p in _existing_projects():
        ctx.allow(p)
    from ..ingest import max_import_bytes

    return {
        "css": CSS + audit.CSS + preview.PREVIEW_CSS,
        "head": pseudolabels.SHORTCUTS_JS + audit.SHORTCUTS_JS + preview.PREVIEW_JS,
        "allowed_paths": ctx.allowed,
        "max_file_size": max_import_bytes(uploads_only=not ctx.local_mode),  # one upload; LABELER_MAX_IMPORT_BYTES
        "theme": gr.themes.Soft(primary_hue="blue"),
    }


def _existing_projects():
    from ..project import Project, list_projects

    for row in list_projects():
        if not row.get("error"):
            try:
                yield Project(row["path"])
            except Exception:
                continue


def server_address(
    host: str | None = None, port: int | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, int]:
    """The ``(host, port)`` to serve on: the argument, else ``LABELER_HOST``/``LABELER_PORT``, else Gradio's
    ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``, else 127.0.0.1 (0.0.0.0 on a Hugging Face Space) and 7860.

    ``environ`` defaults to ``os.environ``. Raises ``InvalidInputError`` for a port that is not 1–65535.
    """
    from ..errors import InvalidInputError

    env = os.environ if environ is None else environ
    if not host:
        host = env.get("LABELER_HOST") or env.get("GRADIO_SERVER_NAME") or None
        host = host or ("0.0.0.0" if env.get("SPACE_ID") else "127.0.0.1")
    source = "port"
    if port is None:
        for name in ("LABELER_PORT", "GRADIO_SERVER_PORT"):
            if env.get(name, "").strip():
                source, port = name, env[name].strip()
                break
        else:
            port = 7860
    try:
        port = int(port)
    except (TypeError, ValueError):
        port = -1
    if not 1 <= port <= 65535:
        raise InvalidInputError(f"{source} must be a port number from 1 to 65535, got {env.get(source, port)!r}")
    return host, port


#: Events of one kind (one button, one endpoint) served at once by default. Review events are short and read
#: mostly; SQLite in WAL mode lets readers run beside a writer, and writers queue on the write lock (busy timeout
#: 30 s, ``BEGIN IMMEDIATE``), so independent users proceed in parallel without losing a write.
DEFAULT_CONCURRENCY = 16


def concurrency_limit(value: int | str | None = None, environ: Mapping[str, str] | None = None) -> int:
    """How many events of one kind the app serves at once: ``value``, else ``LABELER_CONCURRENCY``, else
    :data:`DEFAULT_CONCURRENCY`. Raises ``InvalidInputError`` for anything but a whole number from 1 to 1000."""
    from ..errors import InvalidInputError

    env = os.environ if environ is None else environ
    source = "--concurrency"
    if value is None or (isinstance(value, str) and not value.strip()):
        source, value = "LABELER_CONCURRENCY", env.get("LABELER_CONCURRENCY", "").strip() or DEFAULT_CONCURRENCY
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or not 1 <= n <= 1000:
        raise InvalidInputError(
            f"{source} must be a whole number from 1 to 1000 (events served at once), got {value!r}"
        )
    return n


def launch(
    host: str | None = None,
    port: int | None = None,
    data_dir: str | os.PathLike | None = None,
    local_mode: bool | None = None,
    concurrency: int | None = None,
    **kwargs,
) -> gr.Blocks:
    """Serve the app on ``host:port`` (never through a public share link); None: see :func:`server_address`.

    ``local_mode`` None: on unless the app runs on a Hugging Face Space (``SPACE_ID`` set) or
    ``LABELER_LOCAL_MODE=0``. ``concurrency``: events of one kind served at once (None: see
    :func:`concurrency_limit`). Extra keyword arguments go to ``gr.Blocks.launch`` (e.g.
    ``prevent_thread_lock=True`` to return at once; then ``demo.close()`` stops the server).
    """
    host, port = server_address(host, port)
    limit = concurrency_limit(concurrency)
    if local_mode is None:
        local_mode = os.environ.get("LABELER_LOCAL_MODE", "0" if os.environ.get("SPACE_ID") else "1") != "0"
    demo = build_demo(data_dir, local_mode=local_mode)
    options = {**launch_options(demo), **kwargs}
    # the worker threads must cover every event that may run at once (gradio's default pool is 40)
    options.setdefault("max_threads", max(40, 2 * limit))
    demo.queue(default_concurrency_limit=limit).launch(server_name=host, server_port=port, share=False, **options)
    return demo
