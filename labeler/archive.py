"""A whole project as one ``.zip``: export it, import it elsewhere (needed on Spaces, where the disk is not kept).

The archive holds a manifest (``labeler-project.json``), a consistent snapshot of the database
(``labeler.db``, taken with SQLite's backup API), and the project folder's ``files/``, ``thumbs/``,
``features/`` and ``runs/``. Images that live outside the project folder (imported from a folder by
reference) are copied in under ``files/archived/`` so the archive stands alone; ``exports/`` is left out
(exports are made again from the labels in seconds, and the archive itself is written there).
``images=False`` leaves every image file out (the copy marks them missing; importing the same images
again finds them by content).

**What an export reads.** Only regular files, opened without following links (``O_NOFOLLOW``, then
``fstat``), never the archive being written:

* inside the project folder: the files under ``files/``, ``thumbs/``, ``features/``, ``runs/``
  (symbolic links, and folders that are links, are left out);
* outside it: an image whose database path ingest recorded when *this* project imported a folder by
  reference — and only if the file's real path is not under ``/proc``, ``/sys`` or ``/dev``, it is a
  regular file, and its bytes still have the sha256 recorded at import. Anything else is counted in
  the manifest's ``missing_external`` and not read. ``outside=False`` (the app in uploads-only mode, a
  Space) reads nothing outside the project folder at all.

The rule that makes this safe: a project that came from an archive has *every* image path inside its own
folder after import (see below), so the only paths outside a project are those that ingest wrote for the
local user's own imports — files that user could read anyway. A crafted ``labeler.db`` pointing at
``/etc/passwd``, ``/proc/self/environ`` or ``/proc/self/fd/N`` is neutralised at import and, were it ever
planted some other way, fails the regular-file and sha256 checks at export.

**What an import trusts.** Nothing it takes from the archive: every entry is checked before anything is
written (absolute paths, ``..``, drive letters, backslashes, NUL bytes, links and duplicate names are refused:
no zip-slip), as are archives without the manifest, over the import cap (:func:`labeler.ingest.max_import_bytes`,
``$LABELER_MAX_IMPORT_BYTES``) or bigger than the free disk. It unpacks into a hidden folder beside the target,
checks the database there (readable SQLite, schema not newer than this Labeler, migrated, triggers dropped),
then rewrites every image's ``path``, ``root`` and ``rel_path``: a path survives only if it names a regular file
(no link on the way) under ``files/`` of the unpacked folder — from the old root, or from the manifest's
``external`` map (whose names must lie under ``files/archived/``); any other image is pointed at a path inside
the new folder and marked ``missing``. Only then is the folder moved into place — a refused or failed import
leaves nothing behind.

>>> path = export_archive(project)                      # doctest: +SKIP
>>> copy = import_archive(path, name="pets-copy")       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
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

from filelock import FileLock, Timeout

import store

from .errors import InvalidInputError, ProjectExistsError
from .ingest import check_free_disk, max_import_bytes, over_cap_message
from .jobs import ProjectBusyError
from .project import Project, data_dir, resolve_project_path, validate_project_name

MANIFEST = "labeler-project.json"
FORMAT = "labeler-project"
VERSION = 1
#: Project sub-folders that go into the archive (``exports/`` does not).
FOLDERS = ("files", "thumbs", "features", "runs")
#: Where images from outside the project folder are put inside it.
ARCHIVED_DIR = "files/archived"
#: Where an imported image whose path was refused points (no file there: it is marked missing).
MISSING_DIR = "files/missing"
MAX_ENTRIES = 2_000_000
#: Lock file in the data dir that archive imports into it take in turn, and how long one waits for it.
IMPORT_LOCK = ".archive-import.lock"
ARCHIVE_LOCK_TIMEOUT_S = 600.0
#: Real paths an export never reads, whatever the database says.
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX_RE = re.compile(r"^\.[a-z0-9]{1,8}$")
_CHUNK = 1 << 20


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


# --- reading files for an export --------------------------------------------------------------------


def _open_regular(path: str, avoid: tuple[int, int]) -> tuple[int, os.stat_result] | None:
    """An open descriptor of ``path`` if it is a regular file (not a link, not ``avoid`` = (dev, ino)), else None."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) != avoid:
            return fd, st
    except OSError:
        pass
    os.close(fd)
    return None


def _forbidden(real: str) -> bool:
    return any(_inside(real, r) for r in FORBIDDEN_ROOTS)


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, _CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _write_fd(zf: zipfile.ZipFile, fd: int, st: os.stat_result, arcname: str, compress: int) -> None:
    """Add the open file as ``arcname`` (read from the descriptor: the name is never opened again)."""
    info = zipfile.ZipInfo(arcname, date_time=time.localtime(max(st.st_mtime, 315532800))[:6])
    info.compress_type = compress
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.file_size = st.st_size
    os.lseek(fd, 0, os.SEEK_SET)
    with zf.open(info, "w", force_zip64=st.st_size > (1 << 30)) as dst:
        while chunk := os.read(fd, _CHUNK):
            dst.write(chunk)


def _external_image(path: str, sha: str, avoid: tuple[int, int]) -> tuple[int, os.stat_result] | None:
    """The open file of an image outside the project, if an export may read it (see the module doc)."""
    if not path or not os.path.isabs(path) or "\x00" in path or _forbidden(os.path.abspath(path)):
        return None
    real = os.path.realpath(path)
    if _forbidden(real):
        return None
    opened = _open_regular(real, avoid)
    if opened is None:
        return None
    fd, st = opened
    try:
        if st.st_size > 0 and _sha256_fd(fd) == sha:
            return fd, st
    except OSError:
        pass
    os.close(fd)
    return None


def export_archive(
    project: Project, dest: str | os.PathLike | None = None, *, images: bool = True, outside: bool = True
) -> Path:
    """Write the project as one ``.zip`` and return its path.

    Parameters
    ----------
    project : Project
    dest : path, optional
        The archive file (or a folder to put it in). Default: ``exports/<name>-project-<time>.zip`` in the
        project (which the browser app can serve for download).
    images : bool
        Include the image files (default). Without them the archive is small (labels, descriptions,
        features, thumbnails, runs); the imported copy marks its images missing.
    outside : bool
        Copy in images that were imported by reference from outside the project folder (default; only
        regular files whose bytes still match their sha256). False reads nothing outside the project folder
        (what the app does in uploads-only mode).

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
    tmp = out.with_name(f".{out.name}.part")
    root_real = os.path.realpath(root)
    external: dict[str, str] = {}  # image id → archive name, for images outside the project folder
    missing = 0
    with tempfile.TemporaryDirectory(prefix="labeler-export-") as work:
        db_copy = Path(work) / store.DB_FILENAME
        _snapshot_db(project, db_copy)
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            tmp_st = os.fstat(zf.fp.fileno())
            avoid = (tmp_st.st_dev, tmp_st.st_ino)  # never read the archive being written
            zf.write(db_copy, store.DB_FILENAME)
            for folder in FOLDERS:
                if folder == "files" and not images:
                    continue
                base = root / folder
                if base.is_symlink() or not base.is_dir():
                    continue
                for dirpath, dirnames, filenames in os.walk(base):  # does not descend into linked folders
                    dirnames.sort()
                    for fname in sorted(filenames):
                        if fname.endswith((".part", ".tmp.npy")):
                            continue
                        full = Path(dirpath) / fname
                        opened = _open_regular(str(full), avoid)
                        if opened is None:
                            continue
                        fd, st = opened
                        try:
                            _write_fd(zf, fd, st, full.relative_to(root).as_posix(), zipfile.ZIP_DEFLATED)
                        finally:
                            os.close(fd)
            written: set[str] = set()
            for image_id, sha, path, _status in rows if images else ():
                if not path or _inside(os.path.realpath(path), root_real):
                    continue
                suffix = Path(path).suffix.lower()
                arcname = f"{ARCHIVED_DIR}/{sha}{suffix if _SUFFIX_RE.match(suffix) else ''}"
                if arcname in written:
                    external[str(image_id)] = arcname
                    continue
                opened = _external_image(path, sha, avoid) if outside and _SHA_RE.match(str(sha)) else None
                if opened is None:
                    missing += 1
                    continue
                fd, st = opened
                try:
                    _write_fd(zf, fd, st, arcname, zipfile.ZIP_STORED)
                finally:
                    os.close(fd)
                written.add(arcname)
                external[str(image_id)] = arcname
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "name": project.name,
                "root": str(root),
                "created_at": time.time(),
                "images": len(rows),
                "images_included": bool(images),
                "external": external,
                "missing_external": missing,
            }
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2))
    os.replace(tmp, out)
    return out


# --- import ------------------------------------------------------------------------------------------


def _check_member(info: zipfile.ZipInfo) -> str:
    """The entry's name if it is safe to unpack, else InvalidInputError (zip-slip, links, odd names)."""
    name = info.filename
    mode = info.external_attr >> 16
    why = None
    if "\\" in name or "\x00" in name:
        why = "a backslash or NUL byte in the name"
    elif name.startswith("/") or _DRIVE_RE.match(name) or os.path.isabs(name):
        why = "an absolute path"
    elif any(part == ".." for part in name.split("/")):
        why = "'..' in the path"
    elif stat.S_ISLNK(mode):
        why = "a symbolic link"
    elif not info.is_dir() and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        why = "not a regular file (a device, pipe or socket)"
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
    try:
        version = int(manifest.get("version", 0))
    except (TypeError, ValueError):
        raise InvalidInputError(f"the manifest of {Path(archive).name} has no valid format version") from None
    if version > VERSION:
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
    max_bytes: int | None = None,
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
    max_bytes : int, optional
        Refuse archives that unpack to more than this. Default: :func:`labeler.ingest.max_import_bytes`
        (20 GB, or ``$LABELER_MAX_IMPORT_BYTES``).

    Raises
    ------
    InvalidInputError
        Not a project archive, an unsafe entry (absolute path, ``..``, link…), too big for the cap or the
        free disk, a database that is not one or comes from a newer Labeler. Nothing is left behind.
    ProjectExistsError
        ``name`` is given and a project or folder of that name exists.
    """
    cap = max_import_bytes() if max_bytes is None else int(max_bytes)
    manifest = read_manifest(archive)
    home = Path(root) if root is not None else data_dir()
    if name is None:
        base = str(manifest.get("name") or Path(archive).stem)
        base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" ._-")[:90] or "imported"
        target = home / _free_name(base, home)
    else:
        target = home / validate_project_name(name) if root is not None else resolve_project_path(name)
        if target.exists():
            raise ProjectExistsError(f"a project or folder named {target.name!r} already exists: pick another name")
    shown = Path(archive).name
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
        if total > cap:
            raise InvalidInputError(over_cap_message(shown, total, cap) + ": nothing was imported")
        target.parent.mkdir(parents=True, exist_ok=True)
        check_free_disk(target.parent, total, shown)
        # Imports into one data dir take turns (two into one name: the second then finds the folder taken).
        name_lock = FileLock(str(target.parent / IMPORT_LOCK), timeout=ARCHIVE_LOCK_TIMEOUT_S)
        try:
            name_lock.acquire()
        except Timeout:
            raise ProjectBusyError(
                f"another project import into {target.parent} is still running: wait for it to finish and try again"
            ) from None
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.importing-", dir=target.parent))
        try:
            if target.exists():
                raise ProjectExistsError(f"a project or folder named {target.name!r} already exists: pick another name")
            try:
                _unpack(zf, infos, names, work, cap, shown)
            except (OSError, zipfile.BadZipFile, EOFError) as exc:  # two names for one file, a corrupt entry...
                raise InvalidInputError(f"{shown} cannot be unpacked ({exc}): nothing was imported") from None
            _check_db(work / store.DB_FILENAME, shown)
            _repoint(work, target, manifest)
            if target.exists():
                raise ProjectExistsError(f"a project or folder named {target.name!r} appeared meanwhile: try again")
            os.rename(work, target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            name_lock.release()
    project = Project(target)
    project.set_meta("name", target.name)
    return project


def _unpack(zf: zipfile.ZipFile, infos: list, names: list[str], work: Path, cap: int, shown: str) -> None:
    """Write the (checked) entries under ``work`` as new regular files, never more than ``cap`` bytes in all."""
    work_real = os.path.realpath(work)
    written = 0
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
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        with zf.open(info) as src, open(os.open(dest, flags, 0o644), "wb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > cap:
                    raise InvalidInputError(over_cap_message(shown, written, cap) + ": nothing was imported")
                out.write(chunk)


def _check_db(path: Path, shown: str) -> None:
    """Refuse a database that is not SQLite or is newer than this Labeler; drop triggers; migrate it in place."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
        try:
            conn.execute("PRAGMA trusted_schema=OFF")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > store.SCHEMA_VERSION:
                raise InvalidInputError(
                    f"{shown}: its database has schema version {version}, newer than this Labeler understands "
                    f"({store.SCHEMA_VERSION}); update Labeler (pip install -U -r requirements.txt): nothing "
                    "was imported"
                )
            tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
            if "images" not in tables:
                raise InvalidInputError(f"{shown}: its {store.DB_FILENAME} is not a Labeler project database")
            # Labeler's schema has no triggers or views; a planted one could rewrite the paths checked below.
            planted = conn.execute("select type, name from sqlite_master where type in ('trigger', 'view')").fetchall()
            for kind, name in planted:
                quoted = '"' + name.replace('"', '""') + '"'
                conn.execute(f"drop {kind} if exists {quoted}")
            conn.commit()
        finally:
            conn.close()
        store.connect(path).conn.close()  # migrate an older schema now, before anything is moved into place
    except InvalidInputError:
        raise
    except (sqlite3.DatabaseError, store.db.SchemaTooNewError) as exc:
        raise InvalidInputError(
            f"{shown}: its {store.DB_FILENAME} cannot be read ({exc}): nothing was imported"
        ) from None


def _safe_rel(rel) -> str | None:
    """``rel`` as a clean relative posix path (no ``..``, ``.``, empty parts, NUL or backslash), else None."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        return None
    if _DRIVE_RE.match(rel) or any(p in ("", ".", "..") for p in rel.split("/")):
        return None
    return rel


def _regular_in(work: Path, rel: str) -> bool:
    """Whether ``work/rel`` is a regular file reached through real folders only (no link anywhere)."""
    cur = work
    parts = rel.split("/")
    mode = 0
    try:
        for i, part in enumerate(parts):
            cur = cur / part
            mode = os.lstat(cur).st_mode
            if i < len(parts) - 1 and not stat.S_ISDIR(mode):
                return False
    except OSError:
        return False
    return stat.S_ISREG(mode)


def _below(path, old_root: str) -> str | None:
    """The part of ``path`` below ``old_root`` as a clean relative path, or None."""
    if not isinstance(path, str) or not old_root or path == old_root or not _inside(path, old_root):
        return None
    return _safe_rel(path[len(old_root.rstrip("/")) :].lstrip("/"))


def _repoint(work: Path, target: Path, manifest: dict) -> None:
    """Point the unpacked database's image paths inside ``target`` (the folder it will be moved to).

    An image keeps a real path only if it names a regular file under ``files/`` of the unpacked folder;
    every other image gets a path under ``files/missing/`` and status ``missing`` (see the module doc).
    """
    old_root = manifest.get("root")
    old_root = old_root if isinstance(old_root, str) and os.path.isabs(old_root) else ""
    new_root = str(target.resolve())
    external: dict[int, str] = {}
    raw = manifest.get("external")
    for k, v in raw.items() if isinstance(raw, dict) else ():
        rel = _safe_rel(v)
        if str(k).isdigit() and rel and rel.startswith(ARCHIVED_DIR + "/"):
            external[int(k)] = rel
    conn = sqlite3.connect(str(work / store.DB_FILENAME))
    try:
        conn.execute("PRAGMA trusted_schema=OFF")
        rows = conn.execute("select id, sha256, path, root, rel_path, status from images").fetchall()
        updates = []
        for image_id, sha, path, img_root, rel_path, status in rows:
            if not isinstance(sha, str) or not _SHA_RE.match(sha):
                raise InvalidInputError(
                    f"image {image_id} in the archive's database has no valid sha256: nothing was imported"
                )
            rel = external.get(image_id) or _below(path, old_root)
            ok = rel is not None and rel.startswith("files/") and _regular_in(work, rel)
            new_path = f"{new_root}/{rel}" if ok else f"{new_root}/{MISSING_DIR}/{image_id}"
            root_rel = ARCHIVED_DIR if image_id in external else _below(img_root, old_root)
            new_img_root = f"{new_root}/{root_rel}" if root_rel else f"{new_root}/files"
            clean_rel = _safe_rel(rel_path) or _safe_rel(os.path.basename(str(rel_path or ""))) or Path(new_path).name
            new_status = status if status in ("ok", "missing", "excluded") else "missing"
            if not ok and new_status == "ok":
                new_status = "missing"
            updates.append((new_path, new_img_root, clean_rel, new_status, image_id))
        with conn:
            conn.executemany("update images set path = ?, root = ?, rel_path = ?, status = ? where id = ?", updates)
            conn.execute("update runs set status = 'interrupted' where status = 'running'")  # none runs here
        prefix = new_root + "/"
        for (path,) in conn.execute("select path from images"):  # what the checks above promise
            if not (isinstance(path, str) and path.startswith(prefix) and ".." not in path.split("/")):
                raise InvalidInputError(f"an image path in the archive could not be made safe: {path!r}")
    finally:
        conn.close()
