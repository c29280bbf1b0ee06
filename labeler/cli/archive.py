"""CLI commands for whole-project archives: ``archive export`` and ``archive import``.

Registered into ``python -m labeler`` by :func:`register` (called from :func:`labeler.cli.build_parser`).
Both call the library functions the app's Project step calls (:func:`labeler.archive.export_archive`,
:func:`labeler.archive.import_archive`) and print text, or one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from ._common import PROG, emit, json_arg, open_project, project_arg, sub


def cmd_archive_export(args: argparse.Namespace) -> int:
    from ..archive import export_archive, read_manifest
    from ..ingest import fmt_bytes

    project = open_project(args)
    path = export_archive(project, args.output, images=not args.no_images)
    manifest = read_manifest(path)
    size = path.stat().st_size
    data = {
        "project": project.name,
        "path": str(path),
        "bytes": size,
        "images": manifest.get("images", 0),
        "images_included": manifest.get("images_included", True),
        "copied_from_outside": len(manifest.get("external") or {}),
        "missing_external": manifest.get("missing_external", 0),
    }
    lines = [f"wrote project {project.name!r} ({data['images']} images) to {path} ({fmt_bytes(size)})"]
    if not data["images_included"]:
        lines.append("  image files left out (--no-images): the imported copy marks them missing")
    if data["copied_from_outside"]:
        lines.append(f"  {data['copied_from_outside']} images from outside the project folder copied in")
    if data["missing_external"]:
        lines.append(
            f"  {data['missing_external']} images outside the project folder were not archived (file gone, "
            "changed since import, or not a regular file)"
        )
    emit(args, data, "\n".join(lines))
    return 0


def cmd_archive_import(args: argparse.Namespace) -> int:
    from ..archive import import_archive

    project = import_archive(Path(args.archive).expanduser(), name=args.name)
    data = {
        "project": project.name,
        "path": str(project.root),
        "images_ok": project.image_count("ok"),
        "images_missing": project.image_count("missing"),
        "images_excluded": project.image_count("excluded"),
        "classes": project.classes,
    }
    text = (
        f"imported project {project.name!r} at {project.root}: {data['images_ok']} images"
        + (f", {data['images_missing']} missing" if data["images_missing"] else "")
        + f", {len(data['classes'])} classes"
    )
    emit(args, data, text)
    return 0


def register(subs) -> None:
    """Add ``archive export`` and ``archive import`` to the CLI's subparsers."""
    group = subs.add_parser(
        "archive",
        help="export a whole project as one .zip, or import one as a new project",
        description="A whole project (images, labels, descriptions, features, runs) as one .zip — what the "
        "app's Project step exports and imports. Import checks everything it takes from the archive and "
        "refuses archives over $LABELER_MAX_IMPORT_BYTES (default 20 GB).",
        epilog="examples:\n"
        + textwrap.indent(
            f"{PROG} archive export pets -o pets.zip\n{PROG} archive import pets.zip --name pets-copy --json", "  "
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group.set_defaults(func=lambda args: (group.print_help(), 2)[1])
    actions = group.add_subparsers(dest="archive_command", metavar="ACTION")

    p = sub(
        actions,
        "export",
        cmd_archive_export,
        "write the project as one .zip (images outside the project folder are copied in)",
        f"{PROG} archive export pets -o pets.zip\n{PROG} archive export pets -o backups/ --no-images --json",
    )
    project_arg(p)
    p.add_argument(
        "-o", "--output", help="the .zip to write, or a folder for it (default: the project's exports/ folder)"
    )
    p.add_argument(
        "--no-images", action="store_true", help="leave the image files out (labels, features, thumbnails only)"
    )
    json_arg(p)

    p = sub(
        actions,
        "import",
        cmd_archive_import,
        "unpack a project archive as a new project",
        f"{PROG} archive import pets.zip\n{PROG} archive import pets.zip --name pets-copy --json",
    )
    p.add_argument("archive", help="a .zip written by `archive export` (or the app's Project step)")
    p.add_argument(
        "--name", help="the new project's name or folder (default: the archived name, with -2, -3… if taken)"
    )
    json_arg(p)
