"""The ``path`` every image has in CSV and JSONL exports (:func:`export_paths`; the rule is in
:mod:`labeler.export`, *Paths*). Its own module so that what reads those paths back (ground truth files,
:mod:`labeler.truth`) needs no exporter."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .project import Project


@dataclass
class PathPlan:
    """What :func:`export_paths` returns: the ``path`` every image gets in CSV and JSONL exports.

    ``mode`` is ``common`` (``path`` is relative to ``base``, the common folder of the import roots) or
    ``root_id`` (``path`` is ``<root id>/<path below that root>``; ``base`` is None). ``paths`` maps image id →
    path, for every image of the project whatever its status (so ``include`` finds excluded ones by it).
    """

    mode: str
    base: str | None
    paths: dict[int, str] = field(default_factory=dict)


def _unique_path(path: str, sha256: str, used: set[str]) -> str:
    """``path``, or with a sha256 prefix before its file name when another image has that path already."""
    if path not in used:
        return path
    folder, slash, name = path.rpartition("/")
    for length in (8, 16, 64):
        candidate = f"{folder}{slash}{sha256[:length]}_{name}"
        if candidate not in used:
            return candidate
    n = 2
    while f"{folder}{slash}{sha256[:8]}_{n}_{name}" in used:
        n += 1
    return f"{folder}{slash}{sha256[:8]}_{n}_{name}"


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def export_paths(project: Project) -> PathPlan:
    """The unique ``path`` of every image in CSV and JSONL exports (see the module docstring, *Paths*).

    The rule looks at the import roots of all the project's images (ok, excluded and missing alike), so
    excluding or including images never changes another image's path; importing from a new root can.

    Returns
    -------
    PathPlan
        ``mode`` ``common`` with ``base`` the common folder of the roots, or ``root_id``; ``paths``: image id →
        path (posix separators), unique over the project.
    """
    rows = project.db.execute("select id, root_id, root, rel_path, sha256 from images order by id").fetchall()
    roots = sorted({os.path.normpath(r[2]) for r in rows if r[2]})
    files = os.path.realpath(project.files_dir)
    base: str | None = None
    if roots and all(r[2] for r in rows) and all(os.path.isabs(r) for r in roots):
        # Labeler's own copies (uploads, unpacked zips) and the user's folders have no meaningful common folder:
        # one would be an accident of where the project lives (and change when it is renamed).
        sides = {_inside(os.path.realpath(r), files) for r in roots}
        common = os.path.commonpath(roots)
        if len(sides) == 1 and (len(roots) == 1 or os.path.dirname(common) != common):
            base = common
    plan = PathPlan("common" if base is not None else "root_id", base)
    used: set[str] = set()
    for image_id, root_id, root, rel_path, sha in rows:
        rel = PurePosixPath(rel_path or "").as_posix()
        if base is not None:
            prefix = Path(os.path.relpath(os.path.normpath(root), base)).as_posix()
        else:
            prefix = str(root_id if root_id is not None else 0)
        path = rel if prefix in ("", ".") else f"{prefix}/{rel}"
        path = _unique_path(path, sha or "", used)
        used.add(path)
        plan.paths[int(image_id)] = path
    return plan


__all__ = ["PathPlan", "export_paths"]
