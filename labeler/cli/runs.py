"""CLI commands about a project's runs and changes: ``eval``, ``runs``, ``cancel``, ``undo``, ``methods``."""

from __future__ import annotations

import argparse

from ..errors import InvalidInputError
from ._common import PROG, emit, json_arg, open_project, project_arg, sub


def cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate

    res = evaluate(open_project(args), run_id=args.run)
    lines = [
        f"accuracy {res['accuracy']:.4f} on {res['n']} labeled images with ground truth "
        f"({res['n_ground_truth']} have ground truth)"
    ]
    lines += [
        f"  {c:>20}: precision {m['precision']:.3f} recall {m['recall']:.3f} (n={m['support']})"
        for c, m in res["per_class"].items()
    ]
    emit(args, res, "\n".join(lines))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from ..jobs import list_runs

    runs = list_runs(open_project(args))
    text = "\n".join(
        f"{r['id']:>4} {r['kind']:<9} {r['method'] or '':<10} {r['status']:<11} {100 * (r['progress'] or 0):5.1f}%"
        + (f"  {r['error']}" if r["error"] else "")
        for r in runs
    )
    emit(args, {"runs": runs}, text or "no runs yet")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    import sqlite_utils

    from ..jobs import get_run, request_cancel

    project = open_project(args)
    try:
        run = get_run(project, args.run)
    except sqlite_utils.db.NotFoundError:
        raise InvalidInputError(
            f"project {project.name!r} has no run {args.run}: list its runs with `{PROG} runs {args.project}`"
        ) from None
    request_cancel(project, args.run)
    print(f"asked run {args.run} ({run['kind']}, {run['status']}) to stop after its current batch")
    return 0


def cmd_undo(args: argparse.Namespace) -> int:
    from ..history import history, undo

    project = open_project(args)
    if args.list:
        entries = history(project, limit=args.limit)
        text = "\n".join(f"{e['id']:>4}  {e['action']}" for e in entries)
        emit(args, {"history": entries}, text or "nothing to undo")
        return 0
    done = undo(project)
    emit(args, {"undone": done}, f"undid: {done['action']}" if done else "nothing to undo")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from ..methods import list_methods

    methods = list_methods()
    text = "\n".join(f"{m['name']:<10} {'ready' if m['available'] else 'later'}  {m['summary']}" for m in methods)
    emit(args, {"methods": methods}, text)
    return 0


def register(subs) -> None:
    """Add ``eval``, ``runs``, ``cancel``, ``undo`` and ``methods`` to the CLI's subparsers."""
    p = sub(
        subs,
        "eval",
        cmd_eval,
        "accuracy against folder-name ground truth (class-named subfolders)",
        f"{PROG} eval pets --json",
    )
    project_arg(p)
    p.add_argument("--run", type=int, help="evaluate this run's predictions instead of the final labels")
    json_arg(p)

    p = sub(subs, "runs", cmd_runs, "list the project's runs (jobs)", f"{PROG} runs pets")
    project_arg(p)
    json_arg(p)

    p = sub(
        subs, "cancel", cmd_cancel, "ask a running job to stop (rerun its command to resume)", f"{PROG} cancel pets 3"
    )
    project_arg(p)
    p.add_argument("run", type=int, help="run id (see `runs`)")

    p = sub(
        subs,
        "undo",
        cmd_undo,
        "undo the newest label or exclusion change (from the CLI, the app or the library)",
        f"{PROG} undo pets\n{PROG} undo pets --list",
    )
    project_arg(p)
    p.add_argument("--list", action="store_true", help="list the changes that can be undone, newest first")
    p.add_argument("--limit", type=int, default=20, help="with --list: how many (default 20)")
    json_arg(p)

    p = sub(subs, "methods", cmd_methods, "list labeling methods", f"{PROG} methods")
    json_arg(p)
