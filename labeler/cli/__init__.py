"""Command line: ``python -m labeler COMMAND PROJECT ...``. Thin: every command calls the library.

One module per command group, each with a ``register(subs)`` that adds its commands: :mod:`.project` (init,
import, export, status, serve), :mod:`.features` (features, label), :mod:`.runs` (eval, runs, cancel, undo,
methods), :mod:`.labels` (assign, accept, exclude, include), :mod:`.run`, :mod:`.describe`, :mod:`.train`,
:mod:`.audit`, :mod:`.explore`, :mod:`.archive`; what they share is in :mod:`._common`.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence

from ..errors import LabelerError
from . import archive, audit, describe, explore, features, labels, project, run, runs, train
from ._common import PROG, error_text

__all__ = ["PROG", "build_parser", "main"]

#: The command groups' ``register`` functions, in the order ``--help`` lists their commands.
GROUPS = (
    project.register,  # init, import
    features.register,  # features, label
    project.register_export,  # export, status
    runs.register,  # eval, runs, cancel, undo, methods
    labels.register,  # assign, accept, exclude, include
    run.register,
    describe.register,  # describe, caption, descriptions
    train.register,  # train, apply
    audit.register,  # audit
    explore.register,  # cluster, similar, search, duplicates, queue
    archive.register,
    project.register_serve,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (``{data_dir}`` in its epilog is filled in by :func:`main`)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Labeler: label a folder of images from class names alone, review, export.",
        epilog=textwrap.dedent(
            f"""\
            a whole run, with tiny offline models:
              {PROG} init pets --classes "cat,dog"
              {PROG} import pets ~/Pictures/pets
              {PROG} features pets --clip tiny-random
              {PROG} label pets --method zeroshot
              {PROG} export pets --format csv -o labels.csv
            projects given by name live in $LABELER_DATA_DIR (now: {{data_dir}})"""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in GROUPS:
        register(subs)
    return parser


def _error_text(exc: BaseException) -> str | None:
    """The one-line ``error: ...`` for an exception a user can act on, or None for a bug (keeps its traceback)."""
    import sqlite_utils

    from store.db import SchemaTooNewError

    if isinstance(exc, LabelerError):
        return str(exc)  # main() appends the hint
    if isinstance(exc, SchemaTooNewError):
        return str(exc)  # names the database and says to upgrade
    if isinstance(exc, FloatingPointError):  # a non-finite loss in training; the message says what to change
        return f"{exc}" if str(exc) else "a computation gave NaN or infinity: lower the learning rate (--lr)"
    if isinstance(exc, sqlite_utils.db.NotFoundError):
        return "a run, image or class the command refers to does not exist: check the id (see `runs` and `status`)"
    if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"{exc.strerror or exc}{where}: check the path, its permissions and the free disk space"
    return None


def _stdout_closed() -> int:
    """stdout's reader went away (``| head``): stop quietly, as Python's docs advise ("Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the flush at exit must not fail again
    except (OSError, ValueError):  # no real file descriptor (tests capture stdout)
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, also when the reader of stdout closed it early; 2 an error
    the user can act on, printed as one ``error: ...`` line; 130 interrupted).

    ``LABELER_DEBUG=1`` re-raises errors with their traceback.
    """
    from ..project import data_dir

    parser = build_parser()
    parser.epilog = (parser.epilog or "").replace("{data_dir}", str(data_dir()))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, not at exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print("interrupted: finished batches are saved; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        text = _error_text(exc)
        if text is None or os.environ.get("LABELER_DEBUG"):
            raise
        if isinstance(exc, LabelerError):
            text = error_text(text, exc.hint, getattr(args, "project", None))
        print(f"error: {text}", file=sys.stderr)
        return 2
