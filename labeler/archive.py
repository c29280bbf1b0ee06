"""A whole project as one ``.zip``: export it, import it elsewhere (needed on Spaces, where the disk is not kept).

The archive holds a manifest (``labeler-project.json``), a consistent snapshot of the database
(``labeler.db``, taken with SQLite's backup API), and the project folder's ``files/``, ``thumbs/``,
``features/`` and ``runs/``. Images that live outside the project folder (imported from a folder by
reference) are copied in under ``files/archived/`` so the archive stands alone; ``exports/`` is left out
(exports are made again from the labels in seconds, and the archive itself is written there).

Import checks every entry before writing anything: absolute paths, ``..``, drive letters, backslashes,
NUL bytes, links and duplicate names are refused (no zip-slip), as are archives without the manifest or
bigger than ``max_bytes`` once unpacked. It unpacks into a hidden folder beside the target, points the
stored image paths at the new folder, and only then moves it into place — a failed import leaves nothing.

>>> path = export_archive(project)                      # doctest: +SKIP
>>> copy = import_archive(path, name="pets-copy")       # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import tempfile
import time
import zipfile
from pathlib import Path

import store

from .errors import InvalidInputError, ProjectExistsError
from .project import Project, data_dir, resolve_project_path

MANIFEST = "labeler-project.json"
FORMAT = "labeler-project"
VERSION = 1
#: Project sub-folders that go into the archive (``exports/`` does not).
FOLDERS = ("files", "thumbs", "features", "runs")
#: Where images from outside the project folder are put inside it.
ARCHIVED_DIR = "files/archived"
#: Default cap on the unpacked size of an archive being imported.
MAX_BYTES = 50 * 1024**3
MAX_ENTRIES = 2_000_000
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _snapshot_db(project: Project, dest: Path) -> None:
    """A consistent copy of the project's database (other connections may be writing)."""
    src = sqlite3.connect(str(project.root / store.DB_FILENAME))
    try:
        out = sqlite3.connect(str(dest))
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()


def export_archive(project: Project, dest: str | os.PathLike | None = None) -> Path:
    """Write the project as one ``.zip`` and return its path.

    Parameters
    ----------
    project : Project
    dest : path, optional
        The archive file (or a folder to put it in). Default: ``exports/<name>-project-<time>.zip`` in the
        project (which the browser app can serve for download).

    Raises
    ------
    InvalidInputError
        A job is running in the project (wait for it or cancel it: a half-written feature file would be
        archived), or ``dest`` lies inside one of the archived folders.
    """
    from .jobs import list_runs

    if list_runs(project, status="running"):
        raise InvalidInputError("a job is running in this project: wait for it (or cancel it) before exporting")
    root = project.root.resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if dest is None:
        out = project.exports_dir / f"{project.name}-project-{stamp}.zip"
    else:
        out = Path(dest).expanduser()
        if out.is_dir():
            out = out / f"{project.name}-project-{stamp}.zip"
    out = out.resolve()
    for folder in FOLDERS:
        if _inside(str(out), str(root / folder)):
            raise InvalidInputError(f"the archive cannot be written inside the project's {folder}/ folder: {out}")
    out.parent.mkdir(parents=True, exist_ok=True)

    rows = project.db.execute("select id, sha256, path, status from images").fetchall()
    external: dict[str, str] = {}  # image id → archive name, for images outside the project folder
    missing = 0
    for image_id, sha, path, _status in rows:
        if not path or _inside(os.path.realpath(path), os.path.realpath(root)):
            continue
        if not os.path.isfile(path):
            missing += 1
            continue
        external[str(image_id)] = f"{ARCHIVED_DIR}/{sha}{Path(path).suffix.lower()}"

    tmp = out.with_name(f".{out.name}.part")
    with tempfile.TemporaryDirectory(prefix="labeler-export-") as work:
        db_copy = Path(work) / store.DB_FILENAME
        _snapshot_db(project, db_copy)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "name": project.name,
            "root": str(root),
            "created_at": time.time(),
            "images": len(rows),
            "external": external,
            "missing_external": missing,
        }
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2))
            zf.write(db_copy, store.DB_FILENAME)
            for folder in FOLDERS:
                base = root / folder
                if not base.is_dir():
                    continue
                for dirpath, dirnames, filenames in os.walk(base):
                    dirnames.sort()
                    for fname in sorted(filenames):
                        full = Path(dirpath) / fname
                        if full.is_symlink() or not full.is_file() or fname.endswith((".part", ".tmp.npy")):
                            continue
                        zf.write(full, full.relative_to(root).as_posix())
            by_path = {str(i): p for i, _, p, _ in rows}
            written = set()
            for image_id, arcname in external.items():
                if arcname in written:
                    continue
                zf.write(by_path[image_id], arcname, compress_type=zipfile.ZIP_STORED)
                written.add(arcname)
    os.replace(tmp, out)
    return out


def _check_member(info: zipfile.ZipInfo) -> str:
    """The entry's name if it is safe to unpack, else InvalidInputError (zip-slip, links, odd names)."""
    name = info.filename
    why = None
    if "\\" in name or "\x00" in name:
        why = "a backslash or NUL byte in the name"
    elif name.startswith("/") or _DRIVE_RE.match(name) or os.path.isabs(name):
        why = "an absolute path"
    elif any(part == ".." for part in name.split("/")):
        why = "'..' in the path"
    elif stat.S_ISLNK(info.external_attr >> 16):
        why = "a symbolic link"
    if why:
        raise InvalidInputError(f"unsafe entry {name!r} in the project archive ({why}): nothing was imported")
    return name


def read_manifest(archive: str | os.PathLike) -> dict:
    """The manifest of a project archive (InvalidInputError if the file is not one)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            try:
                manifest = json.loads(zf.read(MANIFEST))
            except KeyError:
                raise InvalidInputError(
                    f"{Path(archive).name} is not a Labeler project archive (no {MANIFEST}); to add images, "
                    "import the zip in the Images step instead"
                ) from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInputError(f"{Path(archive).name} is not a readable zip archive: {exc}") from None
    except ValueError as exc:
        raise InvalidInputError(f"the manifest of {Path(archive).name} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInputError(f"{Path(archive).name} is not a Labeler project archive (wrong manifest format)")
    if int(manifest.get("version", 0)) > VERSION:
        raise InvalidInputError(
            f"the archive was written by a newer Labeler (format version {manifest.get('version')}): update Labeler"
        )
    return manifest


def _free_name(base: str, home: Path) -> str:
    """``base``, or ``base-2``, ``base-3``… whichever is not taken in ``home``."""
    if not (home / base).exists():
        return base
    k = 2
    while (home / f"{base}-{k}").exists():
        k += 1
    return f"{base}-{k}"


def import_archive(
    archive: str | os.PathLike,
    name: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    max_bytes: int = MAX_BYTES,
) -> Project:
    """Unpack a project archive as a new project and return it (opened).

    Parameters
    ----------
    archive : path
        A ``.zip`` written by :func:`export_archive`.
    name : str or path, optional
        The new project's name (under the data dir) or folder. Default: the archived project's name, with
        ``-2``, ``-3``… added if that is taken.
    root : path, optional
        The folder projects given by name live in (default: the data dir); ``name`` is then a plain name.
    max_bytes : int
        Refuse archives that unpack to more than this (default 50 GiB).

    Raises
    ------
    InvalidInputError
        Not a project archive, an unsafe entry (absolute path, ``..``, link…), too big.
    ProjectExistsError
        ``name`` is given and a project or folder of that name exists.
    """
    manifest = read_manifest(archive)
    home = Path(root) if root is not None else data_dir()
    if name is None:
        base = str(manifest.get("name") or Path(archive).stem)
        base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" ._-")[:90] or "imported"
        target = home / _free_name(base, home)
    else:
        if root is not None and (os.sep in str(name) or "/" in str(name) or str(name).startswith((".", "~"))):
            raise InvalidInputError(f"{name!r} is not a project name: use letters, digits, '.', '_', '-' or spaces")
        target = home / str(name) if root is not None else resolve_project_path(name)
        if target.exists():
            raise ProjectExistsError(f"a project or folder named {target.name!r} already exists: pick another name")
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise InvalidInputError(f"the archive has {len(infos)} entries (at most {MAX_ENTRIES}): nothing imported")
        names = [_check_member(i) for i in infos]
        if len(set(names)) != len(names):
            raise InvalidInputError("the archive lists an entry twice: nothing was imported")
        if store.DB_FILENAME not in names:
            raise InvalidInputError(f"the archive has no {store.DB_FILENAME}: nothing was imported")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise InvalidInputError(
                f"the archive unpacks to {total / 1e9:.1f} GB, more than the {max_bytes / 1e9:.1f} GB allowed"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.importing-", dir=target.parent))
        try:
            work_real = os.path.realpath(work)
            for info, member in zip(infos, names, strict=True):
                dest = work.joinpath(*[p for p in member.split("/") if p not in ("", ".")])
                if not _inside(os.path.realpath(dest), work_real) or os.path.realpath(dest) == work_real:
                    if info.is_dir():
                        continue
                    raise InvalidInputError(f"unsafe entry {member!r} in the project archive: nothing was imported")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            _repoint(work, target, manifest)
            if target.exists():
                raise ProjectExistsError(f"a project or folder named {target.name!r} appeared meanwhile: try again")
            os.rename(work, target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    project = Project(target)
    project.set_meta("name", target.name)
    return project


def _repoint(work: Path, target: Path, manifest: dict) -> None:
    """Point the unpacked database's image paths at ``target`` (the folder it will be moved to)."""
    old_root = str(manifest.get("root") or "")
    new_root = str(target.resolve())
    external = {int(k): v for k, v in (manifest.get("external") or {}).items()}
    conn = sqlite3.connect(str(work / store.DB_FILENAME))
    try:
        rows = conn.execute("select id, path, root from images").fetchall()
        updates = []
        for image_id, path, root in rows:
            new_path, new_img_root = path, root
            if image_id in external:
                new_path = new_root + "/" + external[image_id]
                new_img_root = new_root + "/" + ARCHIVED_DIR
            else:
                if old_root and path and _inside(path, old_root):
                    new_path = new_root + path[len(old_root) :]
                if old_root and root and _inside(root, old_root):
                    new_img_root = new_root + root[len(old_root) :]
            if (new_path, new_img_root) != (path, root):
                updates.append((new_path, new_img_root, image_id))
        with conn:
            conn.executemany("update images set path = ?, root = ? where id = ?", updates)
            conn.execute("update runs set status = 'interrupted' where status = 'running'")  # none runs here
    finally:
        conn.close()
