"""Step 3 · Classes: one per line or comma-separated, or the folder names; single- vs multi-label."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr

from ...labels import active_run
from ...project import (
    MAX_CLASS_NAME_LENGTH,
    MAX_CLASSES,
    folder_class_names,
    parse_class_list,
    set_multi_label,
    validate_class_names,
)
from .. import assets
from ..common import NO_PROJECT, Ctx, bind, empty_state, guard, md_escape, wire

MODES = ["single-label (one class per image)", "multi-label (any number of classes per image)"]


class ViewOut(NamedTuple):
    text: str  # the class list, one per line
    mode: str  # one of MODES
    status: str


class SaveOut(NamedTuple):
    text: str
    status: str


def current(project) -> str:
    """The saved class list as a numbered Markdown list, with a warning when the pseudo-labels used another."""
    classes = project.classes
    if not classes:
        return empty_state(
            "No classes yet. Type them on the left (or press <b>Use the folder names</b> if your "
            "images sit in one folder per class), then <b>Save classes</b>."
        )
    run = active_run(project)
    stale = run is not None and list(run["params"].get("classes", [])) != classes
    lines = [f"**{len(classes)} classes** ({'multi' if project.multi_label else 'single'}-label):", ""]
    # numbers as text, one line each (a Markdown list's markers sit left of its box, and clip from "10." on)
    lines += [f"{k + 1}\\. {md_escape(c)}  " for k, c in enumerate(classes[:50])]
    if len(classes) > 50:
        lines.append(f"… and {len(classes) - 50} more")
    lines.append("")
    if stale:
        lines.append("⚠ The pseudo-labels were made with another class list: run zero-shot again (step 5).")
    lines.append("Next: descriptions (step 4, optional) or pseudo-labels (step 5).")
    return "\n".join(lines)


@guard
def refresh(ctx: Ctx, key: str) -> ViewOut:
    project = ctx.open(key, required=False)
    if project is None:
        return ViewOut("", gr.Radio(value=MODES[0]), empty_state(NO_PROJECT))
    return ViewOut("\n".join(project.classes), MODES[1 if project.multi_label else 0], current(project))


@guard
def save(ctx: Ctx, key: str, value: str, mode_value: str) -> SaveOut:
    project = ctx.open(key)
    names = parse_class_list(value or "")
    if not names:
        raise gr.Error("Type at least two class names (one per line or comma-separated), then save.")
    names = validate_class_names(names)
    old = project.classes
    multi = mode_value == MODES[1]
    if multi != project.multi_label:
        set_multi_label(project, multi)
    project.set_classes(names)
    removed = [c for c in old if c not in names]
    if removed:
        gr.Warning(
            f"Removed {len(removed)} class(es) ({', '.join(removed[:5])}); their descriptions were "
            "deleted and their labels no longer count."
        )
    gr.Info(f"Saved {len(names)} classes.")
    return SaveOut(text="\n".join(names), status=current(project))


@guard
def from_folders(ctx: Ctx, key: str) -> str:
    """The class names taken from the images' folder names, one per line (not saved)."""
    project = ctx.open(key)
    names = folder_class_names(project)
    if not names:
        raise gr.Error(
            "The images are not in class-named subfolders (or none are imported yet): type the classes instead."
        )
    gr.Info(f"Took {len(names)} folder names; check them and press Save classes.")
    return "\n".join(names)


@guard
def use_example(name: str | None) -> str:
    """The example class list ``name`` (a file of ``assets/examples/``, see :func:`labeler.ui.assets.examples`),
    one class per line, for the classes box (not saved)."""
    if not name:
        return gr.skip()
    if name not in assets.examples().values():
        raise gr.Error(f"There is no example class list {name!r}: pick one of the list.")
    names = assets.example_classes(name)
    gr.Info(f"Filled in {len(names)} example classes; edit them if you like and press Save classes.")
    return "\n".join(names)


def build(ctx: Ctx) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            text = gr.Textbox(
                label="Classes",
                lines=10,
                max_lines=20,
                elem_id="classes-text",
                placeholder="one per line, or comma-separated:\ncat\ndog\ncar",
                info=f"at least 2, at most {MAX_CLASSES:,}; each under {MAX_CLASS_NAME_LENGTH} "
                "characters; no duplicates",
            )
            mode = gr.Radio(MODES, value=MODES[0], label="Labels per image", elem_id="classes-mode")
            example = gr.Dropdown(
                [(title, name) for title, name in assets.examples().items()],
                value=None,
                label="Example class lists",
                info="fills the box above with a well-known dataset's classes (not saved until you press Save)",
                elem_id="classes-example",
            )
            with gr.Row():
                folders_btn = gr.Button("Use the folder names", elem_id="classes-folders")
                save_btn = gr.Button("Save classes", variant="primary", elem_id="classes-save")
        with gr.Column(scale=1):
            status = gr.Markdown(elem_id="classes-status")

    save_btn.click(
        bind(save, ctx), [ctx.project, text, mode], wire(SaveOut, text=text, status=status), api_name="classes_save"
    )
    folders_btn.click(bind(from_folders, ctx), [ctx.project], [text], api_name="classes_from_folders")
    example.input(use_example, [example], [text], api_name="classes_example")
    outs = wire(ViewOut, text=text, mode=mode, status=status)
    return {"refresh": bind(refresh, ctx), "outputs": outs, "api_name": "classes_view"}
