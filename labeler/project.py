"""A labeling project: one folder with a database, feature files, thumbnails, runs and exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import platformdirs
import sqlite_utils

import store

from .errors import Hint, InvalidInputError, ProjectExistsError, ProjectNotFoundError

MAX_CLASSES = 10_000
MAX_CLASS_NAME_LENGTH = 200
#: Project meta key: what the feature-file repairs on open dropped (``labeler status`` shows it).
FEATURE_REPAIRS_KEY = "feature_repairs"
# Projects (real paths) whose feature sets this process has checked on open already.
_checked: set[str] = set()
_checked_lock = threading.Lock()
MAX_PROJECT_NAME_LENGTH = 100
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
#: Names Windows reserves for devices (with any extension): a folder named so cannot be created or copied there.
_RESERVED_NAMES = frozenset(
    ["con", "prn", "aux", "nul"] + [f"com{i}" for i in range(1, 10)] + [f"lpt{i}" for i in range(1, 10)]
)
_MAX_COMPONENT_BYTES = 255  # NAME_MAX on Linux and macOS
_MAX_PATH_BYTES = 4000  # under PATH_MAX (4096), leaving room for the files inside the project


def _is_reserved(name: str) -> bool:
    return name in (".", "..") or name.split(".", 1)[0].strip().casefold() in _RESERVED_NAMES


def validate_project_name(name: str) -> str:
    """Check a project *name* (not a path) and return it stripped; raise InvalidInputError naming the problem.

    A name is 1–100 characters of letters, digits, ``.``, ``_``, ``-`` and spaces, starting with a
    letter or digit and not ending in ``.`` or a space; no path separators; not a name Windows
    reserves (``con``, ``nul``, ``com1``, ...) or ``.``/``..``.
    """
    text = str(name).strip()
    if not text:
        raise InvalidInputError("the project name is empty: give a name like 'pets'")
    if "\x00" in text or any(ord(ch) < 32 for ch in text):
        raise InvalidInputError(f"project name {text!r} contains control characters (e.g. NUL): type a plain name")
    if "/" in text or "\\" in text or os.sep in text:
        raise InvalidInputError(
            f"{text!r} is not a project name: it contains a path separator; give a plain name like 'pets' "
            "(or, on the command line, a folder path to put the project elsewhere)"
        )
    if text in (".", ".."):
        raise InvalidInputError(f"{text!r} is not a project name: give a name like 'pets'")
    if len(text) > MAX_PROJECT_NAME_LENGTH:
        raise InvalidInputError(
            f"project name {text[:30]!r}... is {len(text)} characters long: use at most {MAX_PROJECT_NAME_LENGTH}"
        )
    if _is_reserved(text):
        raise InvalidInputError(f"project name {text!r} is reserved on Windows (like con, nul, com1): pick another")
    if not _NAME_RE.match(text) or text.endswith((".", " ")):
        raise InvalidInputError(
            f"project name {text!r} is not valid: use letters, digits, '.', '_', '-' or spaces, starting with a "
            "letter or digit and not ending in '.' or a space (or give a folder path)"
        )
    return text


def _check_path_text(text: str) -> None:
    if "\x00" in text:
        raise InvalidInputError(f"the project path {text!r} contains a NUL character: type the path again")
    if len(os.fsencode(text)) > _MAX_PATH_BYTES:
        raise InvalidInputError(f"the project path is {len(text)} characters long: use a shorter path")
    for part in Path(text).parts:
        if len(os.fsencode(part)) > _MAX_COMPONENT_BYTES:
            raise InvalidInputError(
                f"the folder name {part[:30]!r}... in the project path is {len(part)} characters long: folder names "
                f"can have at most {_MAX_COMPONENT_BYTES} bytes; use a shorter name"
            )


def data_dir() -> Path:
    """Folder that holds projects given by name: ``$LABELER_DATA_DIR`` or a per-user data dir."""
    env = os.environ.get("LABELER_DATA_DIR")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("labeler")) / "projects"


def resolve_project_path(name_or_path: str | os.PathLike) -> Path:
    """Map a project name (under :func:`data_dir`) or a path to its folder.

    Anything with a path separator, starting with ``.`` or ``~``, or naming an
    existing folder is a path; anything else is a name under the data dir
    (checked by :func:`validate_project_name`).

    Raises
    ------
    InvalidInputError
        An empty or invalid name, a NUL character, or a path or folder name too long for the file system.
    """
    text = os.fspath(name_or_path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise InvalidInputError("project name is empty: give a name like 'pets' or a folder path")
    pathlike = os.sep in text or "/" in text or text.startswith((".", "~"))
    if not pathlike and "\x00" not in text and len(os.fsencode(text)) > _MAX_COMPONENT_BYTES:
        validate_project_name(text)  # says the name is too long
    _check_path_text(text)
    if pathlike or Path(text).is_dir():
        return Path(text).expanduser().resolve()
    return data_dir() / validate_project_name(text)


def parse_class_list(text: str) -> list[str]:
    """Split user text into class names: one per line if there are newlines, else comma-separated.

    Blank lines are skipped; an empty name between commas (``"a,,b"``, ``"a,b,"``) is refused,
    naming its position, rather than silently dropped.

    Raises
    ------
    InvalidInputError
        An empty comma-separated name.
    """
    if "\n" in text.strip():
        return [p.strip() for p in text.splitlines() if p.strip()]
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        return []
    for pos, part in enumerate(parts, start=1):
        if not part:
            raise InvalidInputError(
                f"class name {pos} of {len(parts)} in {text.strip()!r} is empty (two commas in a row, or a comma at "
                "the start or end): remove the extra comma"
            )
    return parts


def validate_class_names(names: Iterable[str]) -> list[str]:
    """Strip and check class names; raise InvalidInputError naming the first problem.

    Rejects an empty list, empty names, names longer than 200 characters, names
    with control characters, duplicates (ignoring case) and more than 10,000 classes.
    """
    out: list[str] = []
    seen: dict[str, str] = {}
    for raw in names:
        if not isinstance(raw, str):
            raise InvalidInputError(f"class name {raw!r} is not text")
        name = " ".join(raw.split())
        if not name:
            raise InvalidInputError("a class name is empty: remove the empty entry")
        if len(name) > MAX_CLASS_NAME_LENGTH:
            raise InvalidInputError(
                f"class name {name[:40]!r}... is {len(name)} characters long; keep it under {MAX_CLASS_NAME_LENGTH}"
            )
        if any(ord(ch) < 32 for ch in name):
            raise InvalidInputError(f"class name {name!r} contains control characters")
        key = name.casefold()
        if key in seen:
            raise InvalidInputError(f"class {name!r} is listed twice (as {seen[key]!r} too): remove the duplicate")
        seen[key] = name
        out.append(name)
    if not out:
        raise InvalidInputError(
            "no class names given: give at least two, e.g. 'cat,dog,car'", hint=Hint(option="classes")
        )
    if len(out) > MAX_CLASSES:
        raise InvalidInputError(f"{len(out)} classes is too many; Labeler supports up to {MAX_CLASSES}")
    if len(out) < 2:
        raise InvalidInputError(f"only one class ({out[0]!r}) given: labeling needs at least two classes")
    return out


class Project:
    """An open project folder.

    Use :meth:`create` or :meth:`open`. The database connection is per thread,
    so a background job and the UI may use the same Project object.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not (self.root / store.DB_FILENAME).exists():
            raise ProjectNotFoundError(f"no Labeler project at {self.root}", hint=Hint("init"))
        self._local = threading.local()
        _ = self.db  # open (and migrate) now, so errors surface here
        self._check_features()

    # --- lifecycle --------------------------------------------------------------
    @classmethod
    def create(cls, name_or_path: str | os.PathLike, classes: Sequence[str] = (), multi_label: bool = False) -> Project:
        """Create a new project folder (classes may be set now or later)."""
        given = os.fsdecode(os.fspath(name_or_path))
        root = resolve_project_path(given)
        last = given.strip().replace(os.sep, "/").rstrip("/").rsplit("/", 1)[-1]
        if last in ("", ".", "..", "~"):
            raise InvalidInputError(
                f"{given!r} would turn an existing folder into the project: give a new folder name, e.g. ./pets"
            )
        if _is_reserved(root.name):
            raise InvalidInputError(
                f"the folder name {root.name!r} is reserved on Windows (like con, nul, com1): pick another name"
            )
        if (root / store.DB_FILENAME).exists():
            raise ProjectExistsError(f"a project already exists at {root}: open it, or pick another name")
        names = validate_class_names(classes) if classes else []
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("features", "thumbs", "runs", "exports", "files"):
            (root / sub).mkdir(exist_ok=True)
        db = store.connect(root / store.DB_FILENAME)
        with db.conn:
            db["meta"].insert_all(
                [
                    {"key": "name", "value": root.name},
                    {"key": "multi_label", "value": json.dumps(bool(multi_label))},
                    {"key": "created_at", "value": json.dumps(store.now())},
                ],
                replace=True,
            )
        db.conn.close()
        project = cls(root)
        if names:
            project.set_classes(names)
        return project

    @classmethod
    def open(cls, name_or_path: str | os.PathLike) -> Project:
        """Open an existing project by name or path."""
        return cls(resolve_project_path(name_or_path))

    @classmethod
    def open_or_create(
        cls, name_or_path: str | os.PathLike, classes: Sequence[str] = (), multi_label: bool = False
    ) -> Project:
        """Open the project, creating it first if it does not exist."""
        root = resolve_project_path(name_or_path)
        if (root / store.DB_FILENAME).exists():
            return cls(root)
        return cls.create(root, classes, multi_label)

    def delete(self) -> None:
        """Remove the project folder and everything in it (imported images outside it stay)."""
        self.close()
        shutil.rmtree(self.root)

    def close(self) -> None:
        """Close this thread's database connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection to the project database."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = store.connect(self.root / store.DB_FILENAME)
        return db

    @property
    def features(self) -> store.FeatureStore:
        """The project's feature sets, on this thread's connection."""
        return store.FeatureStore(self.db, self.root / "features")

    def _check_features(self) -> None:
        """Once per process: drop feature rows the vector files cannot back (``FeatureStore.repair``) and
        remember what was dropped under the meta key ``feature_repairs`` (cleared by the next complete
        ``features`` run of that set)."""
        key = os.path.realpath(self.root)
        with _checked_lock:
            if key in _checked:
                return
            _checked.add(key)
        reports = self.features.repair_all()
        if reports:
            t = store.now()
            kept = [r for r in self.get_meta(FEATURE_REPAIRS_KEY, []) or [] if isinstance(r, dict)]
            by_key = {r.get("key"): r for r in kept}
            for r in reports:
                old = by_key.get(r["key"], {})
                by_key[r["key"]] = {
                    "key": r["key"],
                    "past_end": int(old.get("past_end", 0)) + r["past_end"],
                    "zeroed": int(old.get("zeroed", 0)) + r["zeroed"],
                    "time": t,
                }
            self.set_meta(FEATURE_REPAIRS_KEY, list(by_key.values()))

    def feature_repairs(self) -> list[dict]:
        """Feature sets repaired on open whose dropped rows are not recomputed yet:
        ``[{"key", "past_end", "zeroed", "time"}]``."""
        return [r for r in self.get_meta(FEATURE_REPAIRS_KEY, []) or [] if isinstance(r, dict)]

    def clear_feature_repair(self, key: str) -> None:
        """Forget the repair record of one feature set (its dropped rows were recomputed)."""
        kept = [r for r in self.feature_repairs() if r.get("key") != key]
        if len(kept) != len(self.feature_repairs()):
            self.set_meta(FEATURE_REPAIRS_KEY, kept or None)

    # --- folders ------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.get_meta("name", self.root.name)

    @property
    def thumbs_dir(self) -> Path:
        return self.root / "thumbs"

    @property
    def files_dir(self) -> Path:
        """Where uploaded files and zip contents are copied."""
        return self.root / "files"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    # --- meta -------------------------------------------------------------------
    def get_meta(self, key: str, default=None):
        """A JSON value from the ``meta`` table (plain strings are returned as they are)."""
        row = self.db.execute("select value from meta where key = ?", [key]).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except (TypeError, ValueError):
            return row[0]

    def set_meta(self, key: str, value) -> None:
        with self.db.conn:
            self.db["meta"].insert({"key": key, "value": json.dumps(value)}, replace=True)

    def bump_images_version(self) -> None:
        """Say that image statuses changed (indexes and caches keyed on the ok images read it); call it inside
        the transaction that changed them."""
        version = self.get_meta("images_version", 0) or 0
        self.db["meta"].insert({"key": "images_version", "value": str(int(version) + 1)}, replace=True)

    @property
    def multi_label(self) -> bool:
        return bool(self.get_meta("multi_label", False))

    # --- multi-label thresholds ---------------------------------------------------
    def thresholds(self) -> dict[str, float]:
        """Per-class score thresholds a person set for multi-label pseudo-labels (class → value in [0, 1]).

        Empty until one is set: then each labeling run's own label sets stand. Classes no longer in the
        class list are dropped.
        """
        saved = self.get_meta("thresholds", {}) or {}
        names = set(self.classes)
        return {str(k): float(v) for k, v in saved.items() if k in names and isinstance(v, (int, float))}

    def set_thresholds(self, values: Mapping[str, float], *, replace: bool = False) -> dict[str, float]:
        """Save per-class thresholds (merged into the saved ones unless ``replace``); returns all saved.

        Raises
        ------
        InvalidInputError
            An unknown class name, or a value that is not a number in [0, 1].
        """
        names = set(self.classes)
        clean = {}
        for name, value in dict(values).items():
            if name not in names:
                raise InvalidInputError(f"threshold for unknown class {name!r}; the classes are {sorted(names)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise InvalidInputError(f"threshold of {name!r} must be a number in [0, 1], got {value!r}")
            clean[str(name)] = float(value)
        merged = clean if replace else {**self.thresholds(), **clean}
        self.set_meta("thresholds", merged)
        return merged

    # --- classes ----------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Class names in index order."""
        return [r[0] for r in self.db.execute("select name from classes order by idx")]

    def class_ids(self) -> dict[str, int]:
        """Class name → row id in the ``classes`` table."""
        return {name: cid for cid, name in self.db.execute("select id, name from classes")}

    def set_classes(self, names: Sequence[str]) -> list[str]:
        """Set the class list (validated). Existing classes keep their ids and descriptions.

        Runs keep the class list they were computed with, so earlier predictions stay readable.
        """
        names = validate_class_names(names)
        existing = self.class_ids()
        with self.db.conn:
            # Move every index out of the way first: idx is unique.
            self.db.execute("update classes set idx = -1 - id")
            for idx, name in enumerate(names):
                if name in existing:
                    self.db.execute("update classes set idx = ? where id = ?", [idx, existing[name]])
                else:
                    self.db["classes"].insert({"idx": idx, "name": name})
            removed = [cid for name, cid in existing.items() if name not in names]
            for cid in removed:
                self.db.execute("delete from descriptions where class_id = ?", [cid])
                self.db.execute("delete from classes where id = ?", [cid])
        return names

    # --- images -----------------------------------------------------------------
    def image_count(self, status: str = "ok") -> int:
        return int(self.db.execute("select count(*) from images where status = ?", [status]).fetchone()[0])

    def images(self, status: str = "ok") -> list[dict]:
        """Image rows in id order (id, sha256, path, rel_path, root, folder_label, width, height, ...)."""
        return list(self.db["images"].rows_where("status = ?", [status], order_by="id"))

    def skipped(self) -> list[dict]:
        """Files that import skipped: ``[{"path", "reason"}]`` in the order they were met."""
        return [
            {"path": p, "reason": r} for p, r in self.db.execute("select path, reason from skipped_files order by id")
        ]

    def __repr__(self) -> str:
        return f"Project({str(self.root)!r})"


def list_projects(root: str | os.PathLike | None = None) -> list[dict]:
    """Projects under ``root`` (default :func:`data_dir`): ``[{"name", "path", "images", "classes",
    "multi_label"}]`` by name."""
    root = Path(root) if root is not None else data_dir()
    out = []
    if not root.is_dir():
        return out
    for child in sorted(root.iterdir()):
        if not (child / store.DB_FILENAME).exists():
            continue
        try:
            p = Project(child)
            out.append(
                {
                    "name": p.name,
                    "path": str(child),
                    "images": p.image_count(),
                    "classes": len(p.classes),
                    "multi_label": p.multi_label,
                }
            )
            p.close()
        except Exception as exc:  # a broken project must not hide the others
            out.append({"name": child.name, "path": str(child), "error": str(exc)})
    return out


def rename_project(project: Project, new_name: str, root: str | os.PathLike | None = None) -> Project:
    """Rename a project under the data dir (or ``root``): its folder moves and stored paths inside it follow.

    Returns the project opened at its new folder (the old object is closed).

    Raises
    ------
    InvalidInputError
        The new name is not valid, is taken, or the project does not live in the data dir.
    """
    if not (new_name or "").strip():
        raise InvalidInputError("type the new project name first")
    new_name = validate_project_name(new_name)
    home = Path(root) if root is not None else data_dir()
    new_root = home / new_name if root is not None else resolve_project_path(new_name)
    old_root = project.root.resolve()
    if new_root.resolve() == old_root:
        return project
    if old_root.parent != home.resolve():
        raise InvalidInputError(f"only projects in the data dir ({home}) can be renamed here; {old_root} is not")
    if new_root.exists():
        raise InvalidInputError(f"a project or folder named {new_name!r} already exists: pick another name")
    from .jobs import list_runs

    if any(r["status"] == "running" for r in list_runs(project, status="running")):
        raise InvalidInputError("a job is running in this project: wait for it (or cancel it) before renaming")
    project.close()
    os.rename(old_root, new_root)
    renamed = Project(new_root)
    old_prefix, new_prefix = str(old_root) + os.sep, str(new_root) + os.sep
    rows = renamed.db.execute("select id, path, root from images").fetchall()
    updates = []
    for image_id, path, root in rows:
        new_path = new_prefix + path[len(old_prefix) :] if path and path.startswith(old_prefix) else path
        if root and (root == str(old_root) or root.startswith(old_prefix)):
            new_img_root = str(new_root) + root[len(str(old_root)) :]
        else:
            new_img_root = root
        if (new_path, new_img_root) != (path, root):
            updates.append((new_path, new_img_root, image_id))
    with renamed.db.conn:
        renamed.db.conn.executemany("update images set path = ?, root = ? where id = ?", updates)
    renamed.set_meta("name", new_root.name)
    return renamed


def set_multi_label(project: Project, multi_label: bool) -> None:
    """Switch the project between single- and multi-label (runs keep the mode they ran with)."""
    project.set_meta("multi_label", bool(multi_label))


def folder_class_names(project: Project) -> list[str]:
    """Distinct parent-folder names of the ok images (candidates for the class list), sorted."""
    rows = project.db.execute(
        "select distinct folder_label from images where status = 'ok' and folder_label is not null "
        "and folder_label != '' order by folder_label"
    ).fetchall()
    return [r[0] for r in rows]


def image_page(project: Project, offset: int = 0, limit: int = 60) -> list[dict]:
    """One page of ok image rows in id order (``id``, ``sha256``, ``rel_path``, ``folder_label``)."""
    rows = project.db.execute(
        "select id, sha256, rel_path, folder_label from images where status = 'ok' order by id limit ? offset ?",
        [int(limit), max(0, int(offset))],
    ).fetchall()
    return [{"id": r[0], "sha256": r[1], "rel_path": r[2], "folder_label": r[3]} for r in rows]
