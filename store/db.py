"""SQLite database of one project: schema, migrations, connection settings.

The database is a single ``labeler.db`` file in the project directory, opened in
WAL mode so that a background job can write while the UI or CLI reads. The
schema version lives in ``PRAGMA user_version``; :data:`MIGRATIONS` holds one
function per version step, applied in order inside a transaction.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlite_utils

DB_FILENAME = "labeler.db"


def now() -> float:
    """Current time as a UNIX timestamp (seconds, float)."""
    return time.time()


def _migrate_1(db: sqlite_utils.Database) -> None:
    """Initial schema."""
    db["meta"].create(if_not_exists=True, columns={"key": str, "value": str}, pk="key")
    db["images"].create(
        if_not_exists=True,
        columns={
            "id": int,
            "sha256": str,
            "path": str,  # absolute path of the file Labeler reads
            "rel_path": str,  # path relative to the import root (what exports show)
            "root": str,  # the import root (folder, zip archive or file's folder)
            "folder_label": str,  # name of the parent folder below the root, if any
            "width": int,
            "height": int,
            "format": str,
            "bytes": int,
            "status": str,  # ok | missing | excluded (_migrate_3)
            "added_at": float,
        },
        pk="id",
        not_null={"sha256", "path", "rel_path", "status"},
    )
    db["images"].create_index(["sha256"], unique=True, if_not_exists=True)
    db["images"].create_index(["status"], if_not_exists=True)
    db["skipped_files"].create(
        if_not_exists=True,
        columns={"id": int, "path": str, "root": str, "reason": str, "time": float},
        pk="id",
        not_null={"path", "reason"},
    )
    db["skipped_files"].create_index(["path"], unique=True, if_not_exists=True)
    db["classes"].create(
        if_not_exists=True, columns={"id": int, "idx": int, "name": str}, pk="id", not_null={"idx", "name"}
    )
    db["classes"].create_index(["name"], unique=True, if_not_exists=True)
    db["classes"].create_index(["idx"], unique=True, if_not_exists=True)
    db["descriptions"].create(
        if_not_exists=True,
        columns={
            "id": int,
            "class_id": int,
            "text": str,
            "source": str,  # template | llm | user | file
            "backend": str,
            "model": str,
            "prompt": str,
            "enabled": int,
            "edited": int,
            "created_at": float,
        },
        pk="id",
        foreign_keys=[("class_id", "classes", "id")],
        not_null={"class_id", "text"},
    )
    db["descriptions"].create_index(["class_id"], if_not_exists=True)
    db["feature_sets"].create(
        if_not_exists=True,
        columns={
            "id": int,
            "key": str,  # e.g. clip:ViT-B-32:laion2b_s34b_b79k
            "kind": str,  # clip | dino
            "model": str,
            "pretrained": str,
            "dim": int,
            "params": str,  # JSON
            "created_at": float,
        },
        pk="id",
        not_null={"key", "kind", "dim"},
    )
    db["feature_sets"].create_index(["key"], unique=True, if_not_exists=True)
    db["feature_rows"].create(
        if_not_exists=True,
        columns={"feature_set_id": int, "sha256": str, "row": int},
        pk=("feature_set_id", "sha256"),
        foreign_keys=[("feature_set_id", "feature_sets", "id")],
    )
    db["feature_rows"].create_index(["feature_set_id", "row"], unique=True, if_not_exists=True)
    db["runs"].create(
        if_not_exists=True,
        columns={
            "id": int,
            "kind": str,  # import | features | label | train | describe | caption
            "method": str,
            "params": str,  # JSON
            "status": str,  # pending | running | done | failed | cancelled
            "progress": float,  # 0..1
            "message": str,
            "metrics": str,  # JSON
            "error": str,
            "cancel_requested": int,
            "created_at": float,
            "started_at": float,
            "finished_at": float,
            "heartbeat": float,
        },
        pk="id",
        not_null={"kind", "status"},
    )
    db["predictions"].create(
        if_not_exists=True,
        columns={
            "run_id": int,
            "image_id": int,
            "class_idx": int,  # top-1 class index
            "score": float,  # top-1 probability
            "labels": str,  # JSON list of class indices (multi-label); null for single-label
            "probs": bytes,  # float32 vector of length C
        },
        pk=("run_id", "image_id"),
        foreign_keys=[("run_id", "runs", "id"), ("image_id", "images", "id")],
    )
    db["labels"].create(
        if_not_exists=True,
        columns={
            "image_id": int,
            "classes": str,  # JSON list of class names (one for single-label)
            "source": str,  # human | accepted
            "score": float,
            "run_id": int,
            "time": float,
        },
        pk="image_id",
        foreign_keys=[("image_id", "images", "id")],
    )


def _migrate_2(db: sqlite_utils.Database) -> None:
    """LLM/LMM responses cache, image captions, and the original text of edited descriptions."""
    db["llm_cache"].create(
        if_not_exists=True,
        columns={
            "key": str,  # sha256 of backend | model | messages | subject (class or image sha256s) | sample index
            "backend": str,
            "model": str,
            "response": str,  # JSON list of the returned texts
            "created_at": float,
        },
        pk="key",
        not_null={"response"},
    )
    db["captions"].create(
        if_not_exists=True,
        columns={
            "id": int,
            "image_id": int,
            "kind": str,  # image (one per image) | group (shared by the images of one group)
            "group_key": str,  # groups only: identifies the group (hash of its images' sha256)
            "text": str,
            "backend": str,
            "model": str,
            "prompt": str,
            "created_at": float,
        },
        pk="id",  # no foreign key to images: removing images must not trip over their captions
        not_null={"image_id", "kind", "text"},
    )
    db["captions"].create_index(["image_id", "kind"], unique=True, if_not_exists=True)
    db["captions"].create_index(["group_key"], if_not_exists=True)
    # What a user-edited description said before the edit, so regeneration does not bring it back.
    if "original" not in db["descriptions"].columns_dict:
        db["descriptions"].add_column("original", str)


def _migrate_3(db: sqlite_utils.Database) -> None:
    """k-means cluster assignments per clustering run (images.status may now also be ``excluded``)."""
    db["clusters"].create(
        if_not_exists=True,
        columns={
            "run_id": int,  # the runs row (kind cluster) that computed them
            "image_id": int,
            "cluster": int,  # 0..k-1
            "similarity": float,  # cosine similarity to the cluster centroid
        },
        pk=("run_id", "image_id"),
        foreign_keys=[("run_id", "runs", "id"), ("image_id", "images", "id")],
        not_null={"cluster"},
    )
    db["clusters"].create_index(["run_id", "cluster"], if_not_exists=True)


def _migrate_4(db: sqlite_utils.Database) -> None:
    """The undo log of label and exclusion changes (:mod:`labeler.history`)."""
    db["undo_log"].create(
        if_not_exists=True,
        columns={
            "id": int,
            "time": float,
            "action": str,  # what was done, in words ("label 12 images as cat")
            "n": int,  # images it changed
            "snapshot": str,  # JSON: the labels rows and statuses of those images before the change
        },
        pk="id",
    )


def _migrate_5(db: sqlite_utils.Database) -> None:
    """Which process runs a job: ``runs.pid`` and ``runs.host`` (a running row whose process is gone is
    interrupted at once, see :mod:`labeler.jobs`). Older rows keep NULL and the heartbeat rule."""
    columns = db["runs"].columns_dict
    if "pid" not in columns:
        db["runs"].add_column("pid", int)
    if "host" not in columns:
        db["runs"].add_column("host", str)


def _migrate_6(db: sqlite_utils.Database) -> None:
    """The audit sample (:mod:`labeler.audit`): images drawn at random for a person to check, and their truth."""
    db["audit"].create(
        if_not_exists=True,
        columns={
            "image_id": int,
            "position": int,  # order of the sample (checked in this order)
            "seed": int,  # the seed it was drawn with
            "stratum": str,  # stratified samples: the image's primary final label when drawn ("" unlabeled)
            "drawn_at": float,
            "verdict": str,  # confirm | correct | skip; null: not checked yet
            "truth": str,  # JSON list of the true class names (null when skipped or unchecked)
            "label_at_check": str,  # JSON list: the final label the person saw when checking
            "checked_at": float,
        },
        pk="image_id",  # no foreign key to images (like captions): removing images must not trip over it
        not_null={"position", "seed"},
    )
    db["audit"].create_index(["position"], unique=True, if_not_exists=True)


def _migrate_7(db: sqlite_utils.Database) -> None:
    """Import roots (:mod:`labeler.ingest`): one row per folder that images' ``rel_path`` is relative to, with a
    stable id, and ``images.root_id`` pointing at it (exports use it to keep ``path`` unique, see
    :mod:`labeler.export`). Existing images get one root per distinct ``images.root``, in import order."""
    db["import_roots"].create(
        if_not_exists=True,
        columns={
            "id": int,
            "path": str,  # the folder, absolute, as it was when imported (images.root follows later moves)
            "kind": str,  # folder | zip | uploads; null for roots recorded by this migration
            "source": str,  # what the import was given: the folder, the image file's folder, the .zip archive
            "run_id": int,  # the import run that recorded it first (null: this migration)
            "created_at": float,
        },
        pk="id",
        not_null={"path"},
    )
    db["import_roots"].create_index(["path"], unique=True, if_not_exists=True)
    if "root_id" not in db["images"].columns_dict:
        db["images"].add_column("root_id", int)
    db.execute(
        "insert or ignore into import_roots (path, created_at) "
        "select root, min(added_at) from images where root is not null and root_id is null "
        "group by root order by min(id)"
    )
    db.execute(
        "update images set root_id = (select r.id from import_roots r where r.path = images.root) "
        "where root_id is null and root is not null"
    )
    db["images"].create_index(["root_id"], if_not_exists=True)


def _migrate_8(db: sqlite_utils.Database) -> None:
    """Editable captions and set-valued ground truth.

    ``captions`` gains ``enabled`` (0: a person disabled it, e.g. a hallucinated caption; it drops out of
    LatteCLIP's text fusion) and ``original`` (the model's text before a person edited it; null: not edited).
    ``ground_truth`` holds an image's true classes where they are a set (multi-label projects), imported from
    a CSV/JSON file of image → labels or parsed from folder names; ``images.folder_label`` stays the
    single-label truth. Both are for evaluation only and never train a model.
    """
    cols = db["captions"].columns_dict
    if "enabled" not in cols:
        db["captions"].add_column("enabled", int, not_null_default=1)
    if "original" not in cols:
        db["captions"].add_column("original", str)
    db["ground_truth"].create(
        if_not_exists=True,
        columns={
            "image_id": int,
            "labels": str,  # JSON list of class names (may be empty: an image with none of the classes)
            "source": str,  # folder | file
            "file": str,  # the CSV/JSON it came from (file only)
            "created_at": float,
        },
        pk="image_id",  # no foreign key to images (like captions): removing images must not trip over it
        not_null={"labels", "source"},
    )


#: One migration per schema version; ``MIGRATIONS[i]`` brings version ``i`` to ``i + 1``.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migrate_1,
    _migrate_2,
    _migrate_3,
    _migrate_4,
    _migrate_5,
    _migrate_6,
    _migrate_7,
    _migrate_8,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer Labeler than this one."""


def connect(path: str | Path) -> sqlite_utils.Database:
    """Open (and create or migrate) a project database.

    Parameters
    ----------
    path : str or Path
        The ``labeler.db`` file; its folder must exist.

    Returns
    -------
    sqlite_utils.Database
        In WAL mode, with foreign keys on and a 30 s busy timeout, migrated to
        :data:`SCHEMA_VERSION`.
    """
    conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    db = sqlite_utils.Database(conn)
    migrate(db, path)
    return db


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One write transaction: ``BEGIN IMMEDIATE`` (the write lock is taken before the first read, so what
    is read inside stays true until the commit), committed at the end, rolled back on an exception.

    Nested inside another transaction it becomes a savepoint of it (the outermost one commits). Inside,
    ``db.execute`` does not auto-commit; do not use ``with db.conn:`` in it (that would commit early).
    """
    conn = db.conn
    if conn.in_transaction:
        name = f"labeler_{secrets.token_hex(8)}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield db
        except BaseException:
            if conn.in_transaction:
                conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                conn.execute(f"RELEASE SAVEPOINT {name}")
            raise
        conn.execute(f"RELEASE SAVEPOINT {name}")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def schema_version(db: sqlite_utils.Database) -> int:
    """The schema version stored in the database (0 for a new file)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database, path: str | Path = "") -> None:
    """Apply the pending migrations, each in its own transaction."""
    version = schema_version(db)
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{path}: schema version {version} is newer than this Labeler understands "
            f"({SCHEMA_VERSION}); upgrade Labeler (pip install -U -r requirements.txt)."
        )
    # Each migration is idempotent (``if_not_exists``), and the version is bumped
    # only after it finished, so a migration killed half-way is simply re-run.
    for target in range(version, SCHEMA_VERSION):
        MIGRATIONS[target](db)
        db.execute(f"PRAGMA user_version = {target + 1}")
        db.conn.commit()
