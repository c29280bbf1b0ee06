"""What every command group of the CLI shares: output (:func:`emit`), the project argument, progress bars, and
:func:`sub`, which adds one command with its help and example."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from ..errors import Hint, InvalidInputError

PROG = "python -m labeler"

#: How the CLI does each step of a :class:`~labeler.errors.Hint`: ``{p}`` is the project argument, ``{opt}``
#: the hint's option as a flag (`` --clip MODEL``), ``{v}`` its value. The app's table is ``ui.common.STEP_IN_UI``.
STEP_COMMANDS = {
    "init": "create one with `{prog} init {p} --classes 'a,b,c'`",
    "classes": "set them with `{prog} init {p} --classes 'a,b,c'`",
    "import": "import images first (`{prog} import {p} FOLDER`)",
    "features": "run `{prog} features {p}{opt}` first",
    "label": "run `{prog} label {p}{opt}` first",
    "describe": "run `{prog} describe {p}{opt}` first",
    "descriptions": "list them with `{prog} descriptions {p} list`",
    "captions": "caption the images first (`{prog} caption {p} --groups{opt}`)",
    "cluster": "run `{prog} cluster {p}{opt}` first",
    "train": "train one first (`{prog} train {p}{opt}`)",
    "runs": "list runs with `{prog} runs {p}`",
    "cancel": "cancel it with `{prog} cancel {p} {v}`",
    "audit": "see the audit sample with `{prog} audit {p}{opt}`",
    "audit_reset": "or start a new audit with `{prog} audit {p} --reset` (its checks are lost)",
}

#: What a flag takes when a hint gives no value.
FLAG_PLACEHOLDERS = {"clip": "MODEL", "dino": "MODEL", "model": "MODEL", "k": "K", "classes": "'a,b,c'"}


def flag(option: str, value: str | None = None) -> str:
    """An option as the CLI spells it: ``batch_size`` → ``--batch-size`` (with ``value`` or a placeholder)."""
    text = "--" + option.replace("_", "-")
    shown = value if value is not None else FLAG_PLACEHOLDERS.get(option)
    return f"{text} {shown}" if shown is not None else text


def hint_text(hint: Hint, project: str | None = None) -> str:
    """A hint as a command line: ``run `python -m labeler features pets --clip MODEL` first``, or, for an
    option alone, the flag in backticks (``--precision fp32``)."""
    if hint.step is None:
        return f"`{flag(hint.option, hint.value)}`"
    opt = f" {flag(hint.option, hint.value)}" if hint.option else ""
    return STEP_COMMANDS[hint.step].format(prog=PROG, p=project or "PROJECT", opt=opt, v=hint.value or "RUN")


def error_text(message: str, hint: Hint | None, project: str | None = None) -> str:
    """A library message with its hint, as the CLI prints it after ``error: ``: a step joins with ``: ``,
    an option alone follows in parentheses."""
    if hint is None:
        return message
    if hint.step is None:
        return f"{message} ({hint_text(hint, project)})"
    return f"{message}: {hint_text(hint, project)}"


class TqdmProgress:
    """A ProgressCallback that drives one tqdm bar on stderr (recreated when the total changes)."""

    def __init__(self, desc: str, unit: str = "img"):
        self.desc, self.unit, self.bar = desc, unit, None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        if self.bar is None or self.bar.total != total:
            self.close()
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        self.bar.n = done
        if message:
            self.bar.set_postfix_str(message, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        """Close the bar (a later call opens a new one)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def progress(args: argparse.Namespace, desc: str, unit: str = "img") -> TqdmProgress | None:
    """A progress bar for one step, or None with ``--quiet``."""
    return None if getattr(args, "quiet", False) else TqdmProgress(desc, unit)


def emit(args: argparse.Namespace, data: dict, text: str) -> None:
    """Print ``data`` as one JSON object with ``--json``, else ``text``."""
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str) if getattr(args, "json", False) else text)


def open_project(args: argparse.Namespace):
    """The project named by ``args.project`` (a name under $LABELER_DATA_DIR or a folder)."""
    from ..project import Project

    return Project.open(args.project)


def classes_from(args: argparse.Namespace) -> list[str]:
    """The class names of ``--classes`` and ``--classes-file`` (in that order)."""
    from ..project import parse_class_list

    names: list[str] = []
    if args.classes:
        names += parse_class_list(args.classes)
    if args.classes_file:
        path = Path(args.classes_file)
        if not path.is_file():
            raise InvalidInputError(f"classes file {path} does not exist: give a text file with one class per line")
        names += [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    return names


def sub(subs, name: str, func: Callable, help: str, example: str) -> argparse.ArgumentParser:
    """Add command ``name`` (run by ``func``) with its help and an example in the epilog."""
    p = subs.add_parser(
        name,
        help=help,
        description=help,
        epilog="example:\n" + textwrap.indent(example, "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=func)
    return p


def project_arg(p: argparse.ArgumentParser) -> None:
    """The positional PROJECT argument."""
    p.add_argument("project", help="project name (under $LABELER_DATA_DIR) or folder path")


def json_arg(p: argparse.ArgumentParser) -> None:
    """``--json``."""
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def device_arg(p: argparse.ArgumentParser) -> None:
    """``--device`` (default auto)."""
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")


def quiet_arg(p: argparse.ArgumentParser) -> None:
    """``--quiet`` (no progress bar)."""
    p.add_argument("--quiet", action="store_true", help="no progress bar")
