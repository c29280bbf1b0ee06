"""CLI commands about a project's runs and changes: ``eval``, ``truth``, ``runs``, ``cancel``, ``undo``, ``methods``."""

from __future__ import annotations

import argparse

from ..errors import InvalidInputError
from ._common import PROG, emit, json_arg, open_project, project_arg, sub


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def multi_label_eval_text(res: dict) -> str:
    """What ``eval`` prints for a multi-label project (:func:`labeler.evaluate.evaluate_multi_label`)."""
    src = res["truth_sources"]
    set_t = {c: t for c, t in res["thresholds"].items() if t is not None}
    at = ", ".join(f"{c} ≥ {t:g}" for c, t in set_t.items()) if set_t else "the run's own label sets"
    lines = [
        f"{res['labels']}: mAP {_fmt(res['map'])} (macro, {res['n_scored']} images with scores), "
        f"macro F1 {_fmt(res['macro_f1'])}, micro F1 {_fmt(res['micro']['f1'])}, "
        f"exact-set accuracy {_fmt(res['exact_match'])}",
        f"  on {res['n']} images with ground truth ({src['file']} from files, {src['folder']} from folder names); "
        f"labels at: {at}",
    ]
    lines += [
        f"  {c:>20}: AP {_fmt(m['ap'])}  precision {_fmt(m['precision'])} recall {_fmt(m['recall'])} "
        f"F1 {_fmt(m['f1'])} (n={m['support']}, labeled {m['predicted']})"
        for c, m in res["per_class"].items()
    ]
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate, evaluate_multi_label

    project = open_project(args)
    multi = project.multi_label
    if args.run is not None and not multi:
        from ..labels import get_label_run

        multi = bool(get_label_run(project, args.run, require_done=False)["params"].get("multi_label"))
    if multi:
        res = evaluate_multi_label(project, run_id=args.run)
        emit(args, res, multi_label_eval_text(res))
        return 0
    res = evaluate(project, run_id=args.run)
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


def cmd_truth(args: argparse.Namespace) -> int:
    from ..history import counted
    from ..truth import clear_truth, import_truth, truth_summary

    project = open_project(args)
    if args.clear:
        n = clear_truth(project)
        emit(args, {"deleted": n}, f"deleted the ground truth of {n} images from files (folder names still count)")
        return 0
    if args.file is None:
        s = truth_summary(project)
        text = (
            f"{counted(s['images'], 'image')} with ground truth: {s['file']} from files, "
            f"{s['folder']} from folder names"
        )
        text += "".join(f"\n  file: {f}" for f in s["files"])
        emit(args, s, text)
        return 0
    rep = import_truth(
        project,
        args.file,
        replace=args.replace,
        skip_unknown_images=args.skip_unknown_images,
        drop_unknown_classes=args.drop_unknown_classes,
        sep=args.sep,
    )
    lines = [
        f"imported the ground truth of {counted(rep.written, 'image')} ({rep.empty} with no class) from {rep.file}"
    ]
    if rep.replaced:
        lines.append(f"  replaced that of {rep.replaced} images from earlier files")
    if rep.skipped_images:
        lines.append(f"  skipped {rep.skipped_images} entries naming no image of the project, e.g.")
        lines += [f"    {e}" for e in rep.examples[:5]]
    if rep.dropped_classes:
        shown = ", ".join(f"{c!r} ({n}x)" for c, n in list(rep.dropped_classes.items())[:10])
        lines.append(f"  dropped names that are no class: {shown}")
    lines.append(f"score the labels against it: {PROG} eval {args.project}")
    emit(args, rep.to_dict(), "\n".join(lines))
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
        "score the labels against ground truth: accuracy vs. class-named folders; multi-label: mAP, AP, F1",
        f"{PROG} eval pets --json\n{PROG} truth photos truth.csv && {PROG} eval photos   # a multi-label project",
    )
    project_arg(p)
    p.add_argument("--run", type=int, help="evaluate this run's predictions instead of the final labels")
    json_arg(p)

    p = sub(
        subs,
        "truth",
        cmd_truth,
        "import ground truth sets for a multi-label project (CSV/JSON/JSONL of image → labels), or show them",
        f"{PROG} truth photos truth.csv            # path,labels  cat/1.jpg,cat;dog\n"
        f'{PROG} truth photos truth.jsonl --replace  # {{"path": "cat/1.jpg", "labels": ["cat", "dog"]}}\n'
        f"{PROG} truth photos                      # how many images have ground truth, from where\n"
        "folder names count too: a folder named cat+dog holds images of both (see labeler/truth.py)",
    )
    project_arg(p)
    p.add_argument(
        "file",
        nargs="?",
        help="a .csv (image column image_id, sha256, path or rel_path; labels column labels, joined with ';', or "
        "one 0/1 column per class), .json ({image: [labels]}) or .jsonl file; all or nothing",
    )
    p.add_argument("--replace", action="store_true", help="drop the ground truth of earlier files first")
    p.add_argument("--skip-unknown-images", action="store_true", help="count entries naming no image, not refuse")
    p.add_argument("--drop-unknown-classes", action="store_true", help="drop names that are no class, not refuse")
    p.add_argument("--sep", default=";", help="separator of the labels in a CSV labels column (default ;)")
    p.add_argument("--clear", action="store_true", help="delete the ground truth imported from files")
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
