"""What every wizard step shares: the app context, error handling, project lookup, gallery helpers.

State rules: ``gr.State`` holds ids only — the open project's folder path, selected image ids, a
page number. Everything shown is read from the library on each event; nothing here touches SQLite.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from ..errors import Hint, LabelerError
from ..project import Project

log = logging.getLogger("labeler.ui")

NO_PROJECT = "**No project open.** Create or open one in step 1 (Project)."


@dataclass
class Ctx:
    """Components and settings the step modules share (built once per demo)."""

    data_dir: Path
    local_mode: bool
    project: gr.State  # the open project's folder (str), "" when none
    finished: gr.State  # "task_id:kind" of the newest finished background task of the project
    tabs: gr.Tabs | None = None  # the wizard: one tab per step, ids 0..8
    allowed: list[str] = field(default_factory=list)  # folders gradio may serve (thumbnails, exports)
    demo: gr.Blocks | None = None
    isolate: bool = False  # a Space: each browser gets its own folder of projects (``visitor``)
    visitor: gr.State | None = None  # this session's visitor id (32 hex digits), "" when not isolated
    kept_visitor: gr.BrowserState | None = None  # the visitor id this browser keeps (read at each click)

    def home(self, visitor: str | None) -> Path:
        """Where this session's projects live: the data dir, or on a Space the visitor's own folder."""
        if not self.isolate:
            return self.data_dir
        from .space import visitor_root

        return visitor_root(visitor)

    def owned(self, key: str | None, visitor: str | None) -> bool:
        """Whether this session may open the project at ``key`` (always, unless isolated)."""
        if not key or not self.isolate:
            return True
        from .space import owns

        try:
            return owns(self.home(visitor), key)
        except LabelerError:
            return False

    def allow(self, project: Project) -> None:
        """Let the app serve this project's thumbnails and exports (never its database)."""
        for folder in (project.thumbs_dir, project.exports_dir):
            path = str(folder.resolve())
            if path not in self.allowed:
                self.allowed.append(path)
                if folder == project.thumbs_dir:
                    # thumbnails never change once made: gradio serves them in place instead of copying every
                    # gallery page's files into its cache on each event (the main cost of a review event)
                    gr.set_static_paths(path)
            if self.demo is not None:
                paths = self.demo.allowed_paths
                if isinstance(paths, list) and path not in paths:
                    paths.append(path)

    def open(self, key: str | None, required: bool = True) -> Project | None:
        """The project whose folder is ``key``; gr.Error (or None when not ``required``) if none is open."""
        if not key:
            if required:
                raise gr.Error("No project is open: create or open one in step 1 (Project) first.")
            return None
        try:
            project = Project(key)
        except LabelerError as exc:
            if required:
                raise gr.Error(f"{ui_error(str(exc), exc.hint)}. Open another project in step 1.") from None
            return None
        self.allow(project)
        return project


#: Where the wizard does each step of a :class:`~labeler.errors.Hint` (the CLI's table is
#: ``cli._common.STEP_COMMANDS``); ``{with}`` is the hint's option and value (`` with “CLIP model” set to X``).
STEP_IN_UI = {
    "init": "create one in step 1 (Project)",
    "classes": "set them in step 3 (Classes)",
    "import": "add images in step 2 (Images) first",
    "features": "run “Compute features” (step 5, ①){with} first",
    "label": "run “Run zero-shot” (step 5, ②){with} first",
    "describe": "run “Generate descriptions” (step 4){with} first",
    "descriptions": "see step 4 (Descriptions)",
    "captions": "run “Caption images” in step 6 (Captions){with} first",
    "cluster": "run “Cluster images” (step 8, Explore){with} first",
    "train": "train one first with “Start” in step 7 (Train){with}",
    "runs": "see the Job history panel",
    "cancel": "cancel it in the jobs panel",
    "audit": "draw or check the sample in the Audit panel (step 7, Train → Audit){with}",
    "audit_reset": "or draw a new sample with another seed in the Audit panel (step 7, Train → Audit)",
}

#: An option's field in the wizard, by the option's library name (others show as 'name').
OPTION_IN_UI = {
    "clip": "“CLIP model”",
    "dino": "“DINO (optional)”",
    "model": "“Model”",
    "base_url": "“Endpoint base URL”",
    "api_key": "“API key”",
    "device": "“Device”",
    "method": "“Method”",
    "recipe": "“Recipe”",
}


def option_text(option: str, value: str | None = None) -> str:
    """An option as the wizard names it: its field (“CLIP model”), or 'batch_size' in the step's options."""
    name = OPTION_IN_UI.get(option, f"'{option}'")
    return f"{name} set to {value}" if value is not None else name


def hint_text(hint: Hint) -> str:
    """A hint as the wizard says it: its step and button (“Compute features” (step 5, ①)), or the option."""
    if hint.step is None:
        return option_text(hint.option, hint.value)
    # the step's form shows the option's field; a hint names it only when it says what to set it to
    with_ = f" with {option_text(hint.option, hint.value)}" if hint.option and hint.value is not None else ""
    return STEP_IN_UI[hint.step].format(**{"with": with_})


def error_text(message, hint: Hint | None = None) -> str:
    """A library or task error with its hint, in the wizard's words, safe inside Markdown/HTML."""
    return md_escape(ui_error(message, hint))


def ui_error(message, hint: Hint | None = None) -> str:
    """A library message with its hint as the wizard says it (a step joins with ``: ``, an option alone
    follows in parentheses)."""
    text = str(message or "")
    if hint is None:
        return text
    if hint.step is None:
        return f"{text} ({hint_text(hint)})"
    return f"{text}: {hint_text(hint)}"


def guard(func: Callable) -> Callable:
    """Turn library errors into a gr.Error toast with the library's message; never crash the server.

    A user's mistake ("Select images first", a library error with its hint) is a toast, not a traceback in the
    server log: gradio prints one for every gr.Error unless ``print_exception`` is off. Only an unexpected
    exception is logged, once, with its traceback.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except gr.Error as exc:
            exc.print_exception = False
            raise
        except LabelerError as exc:
            raise gr.Error(ui_error(str(exc), exc.hint), print_exception=False) from None
        except Exception as exc:
            log.exception("UI handler %s failed", getattr(func, "__name__", func))
            raise gr.Error(
                f"Something went wrong ({type(exc).__name__}: {exc}). Nothing was changed by the failed step; "
                "try again, and if it keeps failing run the same step with the CLI for details.",
                print_exception=False,
            ) from None

    return wrapper


def bind(handler: Callable, *bound) -> Callable:
    """``handler`` with its first arguments fixed (usually the step's :class:`Ctx`), for wiring an event.

    Steps keep their handlers at module level, ``handler(ctx, *inputs) -> Outputs``, so tests call them by name;
    ``build`` wires ``bind(handler, ctx)``. Unlike :func:`functools.partial` the result keeps the handler's name and
    shows gradio only the remaining parameters (gradio reads the signature: ``gr.Request``, ``gr.Progress``), and a
    generator handler stays a generator (gradio streams it).
    """
    sig = inspect.signature(handler)
    rest = list(sig.parameters.values())[len(bound) :]
    if inspect.isgeneratorfunction(inspect.unwrap(handler)):

        @functools.wraps(handler)
        def call(*args, **kwargs):
            yield from handler(*bound, *args, **kwargs)

    else:

        @functools.wraps(handler)
        def call(*args, **kwargs):
            return handler(*bound, *args, **kwargs)

    del call.__wrapped__  # gradio and inspect must see the bound signature, not the handler's
    call.__signature__ = sig.replace(parameters=rest)
    # gradio finds ``gr.SelectData``/``gr.Request`` parameters by their resolved type hints, read in the
    # wrapper's module (this one): resolve them in the handler's module now (``from __future__ import
    # annotations`` leaves strings such as "gr.SelectData" or the handler's own NamedTuple).
    try:
        hints = typing.get_type_hints(handler)
    except (NameError, TypeError):
        hints = {}
    call.__annotations__ = {k: v for k, v in hints.items() if k == "return" or k in {p.name for p in rest}}
    return call


def wire(outputs_type: type, **components) -> list:
    """The output components of an event in the order of ``outputs_type``'s fields (a NamedTuple the handler
    returns): ``wire(View, gallery=gallery, status=status)``. A missing or extra name is an error at build time,
    so a handler's outputs and its wiring cannot drift apart."""
    fields = list(outputs_type._fields)
    if set(fields) != set(components):
        missing, extra = sorted(set(fields) - set(components)), sorted(set(components) - set(fields))
        raise TypeError(f"{outputs_type.__name__}: missing components {missing}, unknown {extra}")
    return [components[f] for f in fields]


def md_escape(text) -> str:
    """Text safe to put inside Markdown/HTML."""
    return html.escape(str(text), quote=False).replace("|", "&#124;").replace("*", "&#42;").replace("_", "&#95;")


def empty_state(message: str) -> str:
    """A boxed hint that says what to do next."""
    return f'<div class="lb-empty">{message}</div>'


def thumb_caption(it: dict, chosen: set[int]) -> str:
    """A thumbnail's caption: ✓ when selected, the final label, the model's confidence when the label is the
    model's (a label a person chose has none), who decided (·you, ·ok accepted), "none" for a person's "none of
    these" (multi-label), ? when marked unsure, and
    ⊘ with the status for an image that is not ok (excluded, missing)."""
    mark = "✓ " if it["id"] in chosen else ""
    if it.get("status", "ok") != "ok":
        return f"{mark}⊘ {it['status']}"
    # no class: unlabeled, or a person's "none of these" (multi-label: a negative for every class)
    label = ", ".join(it["labels"]) if it["labels"] else ("none" if it.get("source") else "unlabeled")
    human = it["source"] == "human"
    conf = "" if it["confidence"] is None or human else f" {100 * it['confidence']:.0f}%"
    src = {"human": " ·you", "accepted": " ·ok"}.get(it["source"] or "", "")
    flag = " ?" if it.get("unsure") else ""
    return f"{mark}{label}{conf}{src}{flag}"


def undo_last(project: Project) -> dict | None:
    """Undo the project's newest label or exclusion change (:func:`labeler.history.undo`) and say what in a toast."""
    from ..history import undo

    done = undo(project)
    if done is None:
        gr.Info("Nothing to undo.", duration=4)
    else:
        gr.Info(f"Undid: {done['action']}.", duration=5)
    return done


def gallery_items(project: Project, items: list[dict], caption: Callable[[dict], str]) -> list[tuple[str, str]]:
    """``(thumbnail path, caption)`` pairs for gr.Gallery — cached thumbnails only, never full images."""
    from ..ingest import thumbnail_for

    out = []
    for it in items:
        thumb = thumbnail_for(project, it["id"], it["sha256"], it.get("path"))
        if thumb is not None:
            out.append((thumb, caption(it)))
    return out


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


#: Ends the ``ctx.finished`` marker set when a project is opened: the newest task then is history, not news.
BASELINE = "~"


def finished_task(key: str, marker: str | None, kinds: set[str]):
    """The background task a ``"<project>#<task_id>:<kind>"`` marker names, if it belongs to project ``key`` and is
    of ``kinds``."""
    from ..jobs import get_background_task

    tail = str(marker or "").rsplit("#", 1)[-1]
    if not key or ":" not in tail or tail.endswith(BASELINE):  # a baseline set when the project opened: no news
        return None
    task_id, kind = tail.split(":", 1)
    if kind not in kinds:
        return None
    task = get_background_task(int(task_id))
    if task is None or task.project_root != str(key) or task.running:
        return None
    return task


def select_range(page_ids, selected, anchor_id, clicked_id) -> list[int]:
    """Shift-click selection: add every image shown between ``anchor_id`` (the last click) and ``clicked_id``.

    Both ends included, in page order. Without an anchor on the page (first click, or the page changed) only
    ``clicked_id`` is added. Returns the new selection (earlier selections kept, no duplicates).
    """
    ids = [int(i) for i in page_ids or []]
    chosen = [int(i) for i in selected or []]
    clicked = int(clicked_id)
    if clicked not in ids:
        return chosen
    if anchor_id is None or int(anchor_id) not in ids:
        span = [clicked]
    else:
        a, b = ids.index(int(anchor_id)), ids.index(clicked)
        span = ids[min(a, b) : max(a, b) + 1]
    return list(dict.fromkeys([*chosen, *span]))
