"""CLI commands that make human decisions: ``assign``, ``accept``, ``exclude``, ``include``, ``thresholds``.

Each names its images by path — as exported (the CSV/JSONL ``path``), or the file as imported (absolute, or
relative to the current folder, or relative to its import root when that is unique) — by sha256 prefix (at
least 6 hex digits, unique in the project) or by image id. Every change is one entry of the undo log, so
``undo`` takes it back. Like the app's review edits they are short transactions and take no writer lock: a
running job (features, label, train) does not block them.

``--json`` prints one object with these keys:

``command``
    ``assign``, ``accept``, ``exclude`` or ``include``.
``selected``
    Images the command was given (after removing repeats); for ``accept --above`` the images with a pseudo-label.
``changed``
    Images whose label (``assign``, ``accept``) or status (``exclude``, ``include``) was written.
``image_ids``
    The ids the IMAGES arguments resolved to, in the order given (``accept --above``: null).
``undo``
    What ``undo`` would now take back (the action's name in the undo log), or null when nothing changed.

plus ``class`` and ``mode`` (``set``, ``add``, ``remove``) for ``assign``, and ``above`` and ``run_id`` (the
labeling run whose pseudo-labels were accepted) for ``accept``.

``thresholds`` (multi-label projects) shows or sets the per-class score thresholds that multi-label pseudo-labels
follow; ``--json`` prints ``{"command", "saved", "classes": [{"class", "threshold", "saved", "images", "pseudo",
"decided"}], "undo"}``.
"""

from __future__ import annotations

import argparse
import string

from ..errors import InvalidInputError
from ._common import PROG, emit, json_arg, open_project, project_arg, sub

IMAGES_HELP = "images: path as exported (CSV/JSONL 'path') or as imported, sha256 prefix (6+ hex digits) or image id"


class _Intermixed(argparse.ArgumentParser):
    """A command parser that takes its optional IMAGES after flags too (``accept pets --json a.jpg``): argparse
    gives a ``nargs="*"`` positional nothing once a flag follows PROJECT, unless the arguments are intermixed."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args calls parse_known_args itself
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def resolve_images(project, refs: list[str]) -> list[int]:
    """Image ids of the IMAGES arguments (order kept, repeats dropped); an unknown or ambiguous one is an error
    that names it."""
    from ..export import export_paths
    from ..search import resolve_image

    by_path = {path: image_id for image_id, path in export_paths(project).paths.items()}
    ids: dict[int, None] = {}
    for ref in refs:
        text = ref.strip()
        if text in by_path:
            ids[by_path[text]] = None
            continue
        if text and len(text) < 6 and not text.isdigit() and all(ch in string.hexdigits for ch in text):
            raise InvalidInputError(f"image {ref!r}: a sha256 prefix needs at least 6 hex digits")
        ids[int(resolve_image(project, text)["id"])] = None  # its errors name the argument
    if not ids:
        raise InvalidInputError("no images given: name them by path, sha256 prefix or id")
    return list(ids)


def _newest_undo(project, changed: int) -> str | None:
    from ..history import history

    if not changed:
        return None
    entries = history(project, limit=1)
    return entries[0]["action"] if entries else None


def cmd_assign(args: argparse.Namespace) -> int:
    from ..history import counted
    from ..labels import canonical_classes
    from ..review import edit_label, label_images

    project = open_project(args)
    mode = "add" if args.add else "remove" if args.remove else "set"
    if mode != "set" and not project.multi_label:
        raise InvalidInputError(
            f"--{mode} is for multi-label projects; {project.name!r} is single-label: "
            f"`{PROG} assign {args.project} CLASS IMAGES...` replaces the label"
        )
    (name,) = canonical_classes(project, args.cls)
    ids = resolve_images(project, args.images)
    if mode == "set":
        changed = label_images(project, ids, [name] if project.multi_label else name)
        text = f"labeled {counted(changed, 'image')} as {name}"
    else:
        try:
            res = edit_label(project, ids, name, mode)
        except InvalidInputError as exc:
            if "leave no class" not in str(exc):
                raise
            raise InvalidInputError(
                f"{exc}: give it another class with `{PROG} assign {args.project} CLASS IMAGES` first"
            ) from None
        changed = res["changed"]
        text = f"{'added' if mode == 'add' else 'removed'} {name} {'to' if mode == 'add' else 'from'} " + counted(
            changed, "image"
        )
        if len(ids) > changed:
            text += f" ({len(ids) - changed} did not have it)"
    data = {
        "command": "assign",
        "class": name,
        "mode": mode,
        "selected": len(ids),
        "changed": changed,
        "image_ids": ids,
        "undo": _newest_undo(project, changed),
    }
    emit(args, data, text + " (human labels)")
    return 0


def cmd_accept(args: argparse.Namespace) -> int:
    from ..history import counted
    from ..labels import accept_pseudo_labels, active_run
    from ..review import accept_images

    project = open_project(args)
    if args.above is None and not args.images:
        raise InvalidInputError(
            f"give the IMAGES to accept or --above T (`{PROG} accept {args.project} --above 0` accepts every "
            "pseudo-label)"
        )
    if args.above is not None and args.images:
        raise InvalidInputError("give either --above T or IMAGES, not both")
    if args.above is not None and not 0.0 <= args.above <= 1.0:
        raise InvalidInputError(f"--above must be a score between 0 and 1, not {args.above}")
    run = active_run(project)
    if args.above is not None:
        ids = None
        selected = int(
            project.db.execute(
                "select count(*) from predictions p join images i on i.id = p.image_id "
                "where p.run_id = ? and i.status = 'ok'",
                [run["id"] if run else -1],
            ).fetchone()[0]
        )
        changed = accept_pseudo_labels(project, None, min_score=args.above)
    else:
        ids = resolve_images(project, args.images)
        selected = len(ids)
        changed = accept_images(project, ids)
    text = f"accepted {counted(changed, 'pseudo-label')}"
    if selected > changed:
        why = "scored below --above, " if args.above is not None else ""
        text += f" ({selected - changed} kept their human label, {why}or had no prediction)"
    data = {
        "command": "accept",
        "above": args.above,
        "run_id": run["id"] if run else None,
        "selected": selected,
        "changed": changed,
        "image_ids": ids,
        "undo": _newest_undo(project, changed),
    }
    emit(args, data, text)
    return 0


def _status_command(args: argparse.Namespace, command: str) -> int:
    from ..history import counted
    from ..review import exclude_images, include_images

    project = open_project(args)
    ids = resolve_images(project, args.images)
    changed = (exclude_images if command == "exclude" else include_images)(project, ids)
    done = "excluded" if command == "exclude" else "included"
    text = f"{done} {counted(changed, 'image')}"
    if len(ids) > changed:
        text += f" ({len(ids) - changed} {'were' if len(ids) - changed > 1 else 'was'} {done} already or missing)"
    data = {
        "command": command,
        "selected": len(ids),
        "changed": changed,
        "image_ids": ids,
        "undo": _newest_undo(project, changed),
    }
    emit(args, data, text)
    return 0


def _parse_thresholds(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise InvalidInputError(f"{item!r} is not CLASS=VALUE (e.g. dog=0.4)")
    return out


def cmd_thresholds(args: argparse.Namespace) -> int:
    from ..labels import canonical_classes
    from ..review import set_thresholds, threshold_counts

    project = open_project(args)
    if not project.multi_label:
        raise InvalidInputError(
            f"{project.name!r} is single-label: thresholds decide multi-label pseudo-labels (top-1 decides here)"
        )
    wanted = {canonical_classes(project, k)[0]: v for k, v in _parse_thresholds(args.set).items()}
    changed = 0
    if args.clear or wanted:
        old = project.thresholds()
        changed = int(set_thresholds(project, wanted, replace=bool(args.clear)) != old)
    saved = project.thresholds()
    rows = []
    for name, r in threshold_counts(project).items():
        rows.append({"class": name, **r, "saved": name in saved})
    lines = [
        f"{r['class']:<20} {r['threshold']:.2f}  {r['images']} images ({r['pseudo']} pseudo-labels + "
        f"{r['decided']} decided by people)" + ("" if r["saved"] else " · not set: the run's own sets stand")
        for r in rows
    ]
    data = {"command": "thresholds", "saved": saved, "classes": rows, "undo": _newest_undo(project, changed)}
    emit(args, data, "\n".join(lines))
    return 0


def cmd_exclude(args: argparse.Namespace) -> int:
    return _status_command(args, "exclude")


def cmd_include(args: argparse.Namespace) -> int:
    return _status_command(args, "include")


def register(subs) -> None:
    """Add ``assign``, ``accept``, ``exclude`` and ``include`` to the CLI's subparsers."""
    p = sub(
        subs,
        "assign",
        cmd_assign,
        "label images by hand as CLASS (a human label: wins over pseudo-labels, undone by `undo`)",
        f"{PROG} assign pets cat cat/0001.jpg 3fa9c2e1\n"
        f"{PROG} assign tags dog --add 0001.jpg 0002.jpg   # multi-label: add dog, keep the other classes\n"
        f"{PROG} assign tags dog --remove 0003.jpg",
    )
    project_arg(p)
    p.add_argument("cls", metavar="CLASS", help="a class of the project (matched ignoring case)")
    p.add_argument("images", nargs="+", metavar="IMAGES", help=IMAGES_HELP)
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--add", action="store_true", help="multi-label: add CLASS to each image's current classes (default: replace)"
    )
    how.add_argument("--remove", action="store_true", help="multi-label: remove CLASS from each image's classes")
    json_arg(p)

    p = sub(
        subs,
        "accept",
        cmd_accept,
        "accept the active run's pseudo-labels as labels (images with a human label keep it; undone by `undo`)",
        f"{PROG} accept pets --above 0.9      # every pseudo-label scoring 0.9 or more\n"
        f"{PROG} accept pets cat/0001.jpg 3fa9c2e1",
    )
    p.__class__ = _Intermixed
    project_arg(p)
    p.add_argument("images", nargs="*", metavar="IMAGES", help=IMAGES_HELP)
    p.add_argument("--above", type=float, metavar="T", help="accept every image whose top-1 score is at least T (0..1)")
    json_arg(p)

    p = sub(
        subs,
        "thresholds",
        cmd_thresholds,
        "multi-label: show or set the per-class score thresholds pseudo-labels follow (with the images each gives; "
        "undone by `undo`)",
        f"{PROG} thresholds tags                  # each class's threshold and how many images carry it\n"
        f"{PROG} thresholds tags dog=0.4 cat=0.25 # set two (the others keep theirs)\n"
        f"{PROG} thresholds tags --clear          # back to each run's own label sets",
    )
    project_arg(p)
    p.add_argument("set", nargs="*", metavar="CLASS=T", help="set CLASS's threshold to T (0..1)")
    p.add_argument("--clear", action="store_true", help="forget every saved threshold first")
    json_arg(p)

    p = sub(
        subs,
        "exclude",
        cmd_exclude,
        "exclude images: they leave labels, counts, search and exports (labels kept; `include` or `undo` brings "
        "them back)",
        f"{PROG} exclude pets blurry/0007.jpg 3fa9c2e1",
    )
    project_arg(p)
    p.add_argument("images", nargs="+", metavar="IMAGES", help=IMAGES_HELP)
    json_arg(p)

    p = sub(
        subs,
        "include",
        cmd_include,
        "include excluded images again, with their labels (undone by `undo`)",
        f"{PROG} include pets blurry/0007.jpg",
    )
    project_arg(p)
    p.add_argument("images", nargs="+", metavar="IMAGES", help=IMAGES_HELP)
    json_arg(p)
