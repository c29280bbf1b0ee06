"""CLI commands about a project as a whole: ``init``, ``import``, ``export``, ``status``, ``serve``.

The runs of a project (``runs``, ``cancel``, ``eval``, ``undo``, ``methods``) are in :mod:`labeler.cli.runs`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import InvalidInputError
from ._common import PROG, classes_from, emit, json_arg, open_project, progress, project_arg, sub


def import_text(report) -> str:
    """What ``import`` prints for an :class:`labeler.ingest.ImportReport` (also ``run``)."""
    lines = [f"added {report.added} images, {report.duplicates} already in the project, {len(report.skipped)} skipped"]
    if report.restored:
        lines.append(f"  {report.restored} images marked missing were found again at their new path")
    lines += [f"  skipped {s['path']}: {s['reason']}" for s in report.skipped[:20]]
    if len(report.skipped) > 20:
        lines.append(f"  ... and {len(report.skipped) - 20} more (see `status`)")
    return "\n".join(lines)


def export_text(rep, format: str) -> str:
    """What ``export --format FORMAT`` prints for an :class:`labeler.export.ExportReport` (also ``run``)."""
    if rep.format == "model":
        x = rep.extra
        base = x.get("base") or {}
        kind = "CLIP"
        if isinstance(base, dict):
            kind = str(base.get("kind") or "clip").upper()  # a CDUL head reads CLIP or DINO features
            name = base.get("model") or "?"
            base = f"{name} ({base['pretrained']} weights)" if base.get("pretrained") else name
        return (
            f"wrote the {x.get('method')} model of train run {x.get('train_run')} to {rep.path}\n"
            f"  epoch {x.get('epoch')}, {x.get('classes')} classes, on {kind} {base}\n"
            f"  label new images with it: {PROG} apply {rep.path} IMAGES_OR_FOLDERS"
        )
    return (
        f"wrote {format} export of {rep.n_images} images ({rep.n_labeled} labeled, {rep.n_unlabeled} unlabeled"
        + (f", {rep.n_none} labeled none of the classes" if rep.n_none else "")
        + (f", {rep.n_missing} files missing" if rep.n_missing else "")
        + f") to {rep.path}"
        + (f"\naudited accuracy beside it: {rep.extra['audit']}" if rep.extra.get("audit") else "")
    )


def cmd_init(args: argparse.Namespace) -> int:
    from ..project import Project

    names = classes_from(args)
    if not names:
        raise InvalidInputError("give the classes: --classes 'cat,dog,car' or --classes-file FILE (one per line)")
    project = Project.create(args.project, names, multi_label=args.multi_label)
    kind = "multi-label" if project.multi_label else "single-label"
    print(f"created {kind} project {project.name!r} at {project.root} with {len(project.classes)} classes")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..ingest import import_sources

    project = open_project(args)
    bar = progress(args, "import", "file")
    try:
        report = import_sources(project, args.sources, on_progress=bar, copy=args.copy)
    finally:
        bar and bar.close()
    emit(args, report.to_dict(), import_text(report))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_report

    project = open_project(args)
    options = {}
    if args.link:
        options["link"] = True
    if args.one_hot:
        options["one_hot"] = True
    if args.scores:
        options["scores"] = True
    rep = export_report(project, args.format, args.output, **options)
    data = {
        "format": rep.format,
        "path": str(rep.path),
        "n_images": rep.n_images,
        "n_labeled": rep.n_labeled,
        "n_unlabeled": rep.n_unlabeled,
        "n_none": rep.n_none,
        "n_files": rep.n_files,
        "n_missing": rep.n_missing,
        **rep.extra,
    }
    emit(args, data, export_text(rep, args.format))
    return 0


def status_dict(project) -> dict:
    """Everything ``status --json`` prints."""
    from ..jobs import list_runs
    from ..labels import active_run
    from ..review import label_counts

    counts = label_counts(project)
    active = active_run(project)
    return {
        "project": project.name,
        "path": str(project.root),
        "multi_label": project.multi_label,
        "classes": project.classes,
        "images_ok": project.image_count("ok"),
        "images_missing": project.image_count("missing"),
        "images_excluded": project.image_count("excluded"),
        "images_skipped": project.skipped(),
        "labels": {k: counts[k] for k in ("human", "accepted", "pseudo", "unlabeled")},
        "per_class": counts.get("per_class", {}),
        "feature_sets": [
            {"key": s["key"], "kind": s["kind"], "dim": s["dim"], "count": project.features.count(s["id"])}
            for s in project.features.sets()
        ],
        "feature_repairs": project.feature_repairs(),
        "active_run": active["id"] if active else None,
        "runs": [
            {k: r.get(k) for k in ("id", "kind", "method", "status", "progress", "message", "error")}
            for r in list_runs(project)[:20]
        ],
    }


def cmd_status(args: argparse.Namespace) -> int:
    data = status_dict(open_project(args))
    lab = data["labels"]
    lines = [
        f"project {data['project']} ({data['path']}), {'multi' if data['multi_label'] else 'single'}-label",
        f"classes ({len(data['classes'])}): {', '.join(data['classes'])}",
        f"images: {data['images_ok']} ok, {len(data['images_skipped'])} skipped, {data['images_missing']} missing, "
        f"{data['images_excluded']} excluded",
        f"labels: {lab['human']} human, {lab['accepted']} accepted, {lab['pseudo']} pseudo, "
        f"{lab['unlabeled']} unlabeled",
    ]
    lines += [f"features {s['key']}: {s['count']} vectors (dim {s['dim']})" for s in data["feature_sets"]]
    lines += [
        f"features {r['key']}: repaired on open — dropped {r['past_end']} rows past the end of the vector file "
        f"and {r['zeroed']} zeroed vectors; run `labeler features` to recompute those images"
        for r in data["feature_repairs"]
    ]
    lines += [
        f"run {r['id']}: {r['kind']} {r['method'] or ''} {r['status']} {100 * (r['progress'] or 0):.0f}%"
        + (f" — {r['error']}" if r["error"] else "")
        for r in data["runs"][:5]
    ]
    lines += [f"skipped {s['path']}: {s['reason']}" for s in data["images_skipped"][:20]]
    emit(args, data, "\n".join(lines))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.data_dir:  # before the app is imported: parts of it read the data dir when they load
        os.environ["LABELER_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    from ..ui import launch

    extra = {} if args.concurrency is None else {"concurrency": args.concurrency}  # None: the env, else 16
    launch(host=args.host, port=args.port, local_mode=False if args.uploads_only else None, **extra)
    return 0


def register(subs) -> None:
    """Add ``init`` and ``import`` to the CLI's subparsers."""
    p = sub(
        subs,
        "init",
        cmd_init,
        "create a project with its class names",
        f'{PROG} init pets --classes "cat,dog,car"\n{PROG} init ./birds --classes-file birds.txt',
    )
    project_arg(p)
    p.add_argument("--classes", help="comma-separated class names (or one per line)")
    p.add_argument("--classes-file", help="text file with one class name per line")
    p.add_argument("--multi-label", action="store_true", help="an image may have several classes")

    p = sub(
        subs,
        "import",
        cmd_import,
        "import images from folders (recursive), files and .zip archives",
        f"{PROG} import pets ~/Pictures/pets extra/cat1.jpg more.zip",
    )
    project_arg(p)
    p.add_argument("sources", nargs="+", help="folders, image files or .zip archives")
    p.add_argument("--copy", action="store_true", help="copy files into the project instead of referencing them")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    json_arg(p)


def register_export(subs) -> None:
    """Add ``export`` and ``status`` (after ``features`` and ``label`` in ``--help``)."""
    p = sub(
        subs,
        "export",
        cmd_export,
        "export the final labels (human > accepted > pseudo)",
        f"{PROG} export pets --format csv -o labels.csv\n{PROG} export pets --format imagefolder -o out/ --link\n"
        f"{PROG} export photos --format csv --one-hot --scores -o labels.csv   # multi-label: a 0/1 column per class\n"
        f"{PROG} export pets --format model -o pets.pt   # a trained model, for `apply`",
    )
    project_arg(p)
    p.add_argument(
        "--format",
        default="csv",
        help="csv (default), imagefolder, jsonl, model (the trained model of the newest train run)",
    )
    p.add_argument("-o", "--output", required=True, help="output file (csv, jsonl) or folder (imagefolder)")
    p.add_argument(
        "--link",
        action="store_true",
        help="imagefolder: link instead of copying (symlink, else hard link, else copy); needed for a multi-label "
        "project: one folder per label",
    )
    p.add_argument("--one-hot", action="store_true", help="csv: add one 0/1 column per class")
    p.add_argument(
        "--scores",
        action="store_true",
        help="csv: add a score:<class> column per class (the run's per-class scores); jsonl: a scores object "
        "(on by itself for multi-label projects)",
    )
    json_arg(p)

    p = sub(
        subs,
        "status",
        cmd_status,
        "show images, skipped files, classes, labels, features and runs",
        f"{PROG} status pets --json",
    )
    project_arg(p)
    json_arg(p)


def register_serve(subs) -> None:
    """Add ``serve`` (the last command in ``--help``; ``python app.py`` takes the same flags)."""
    p = sub(
        subs,
        "serve",
        cmd_serve,
        "start the browser app",
        f"{PROG} serve --port 7860\n{PROG} serve --host 0.0.0.0 --data-dir /data --uploads-only   # a shared server",
    )
    p.add_argument(
        "--host",
        help="interface to listen on; default: $LABELER_HOST, else $GRADIO_SERVER_NAME, else 127.0.0.1 "
        "(0.0.0.0 on a Hugging Face Space)",
    )
    p.add_argument("--port", type=int, help="default: $LABELER_PORT, else $GRADIO_SERVER_PORT, else 7860")
    p.add_argument("--data-dir", help="where projects live (sets LABELER_DATA_DIR)")
    p.add_argument(
        "--uploads-only",
        action="store_true",
        help="no import from folder paths on this machine, and each browser gets its own projects "
        "(on by itself on a Hugging Face Space)",
    )
    p.add_argument(
        "--concurrency",
        help="events of one kind (one button) served at once, so several users proceed in parallel; "
        "default: $LABELER_CONCURRENCY, else 16",
    )
