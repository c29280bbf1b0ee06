"""The app as a public Space: one folder of projects per visitor (a random id kept in the browser).

The id comes from the browser, so it is checked (32 hex digits) before it names a folder, and a
session may open only projects directly inside its own folder (:func:`owns`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from ..errors import InvalidInputError
from ..project import data_dir

#: Sub-folder of the data dir that holds one folder of projects per visitor when the app runs as a Space.
VISITORS_DIRNAME = "visitors"


#: Keys the visitor id a new browser session gets (:func:`session_visitor_id`); made once per server process.
_SESSION_KEY = secrets.token_bytes(32)


def new_visitor_id() -> str:
    """A fresh random visitor id (32 hex digits): the name of that visitor's project folder on a Space."""
    return secrets.token_hex(16)


def is_visitor_id(vid: object) -> bool:
    """True for a well-formed visitor id: a str of 32 lowercase hex digits."""
    return isinstance(vid, str) and len(vid) == 32 and all(c in "0123456789abcdef" for c in vid)


def session_visitor_id(session_hash: str | None) -> str:
    """The visitor id of a browser session that has none yet (32 hex digits).

    Derived from gradio's session hash with a key made at start-up (HMAC-SHA256), so every event of one session
    that needs an id before one is stored (the page's load handler, a Create clicked while it is still queued)
    gets the same one, however they interleave; without a session hash, a fresh random id.
    """
    if not session_hash:
        return new_visitor_id()
    return hmac.new(_SESSION_KEY, str(session_hash).encode(), hashlib.sha256).hexdigest()[:32]


def resolve_visitor(current: str | None, kept: str | None, session_hash: str | None) -> str:
    """This session's visitor id: the one the browser kept, else the one the session already has, else
    :func:`session_visitor_id` (the same for every event of the session)."""
    for vid in (kept, current):
        if is_visitor_id(vid):
            return vid
    return session_visitor_id(session_hash)


def visitor_root(visitor_id: str | None) -> Path:
    """The folder a visitor's projects live in: ``<data dir>/visitors/<id>/`` (made if missing).

    Raises InvalidInputError unless the id is 32 hex digits (it comes from the browser: never a path).
    """
    vid = str(visitor_id or "")
    if not is_visitor_id(vid):
        raise InvalidInputError("this browser session has no valid visitor id: reload the page")
    root = data_dir() / VISITORS_DIRNAME / vid
    root.mkdir(parents=True, exist_ok=True)
    return root


def owns(root: str | os.PathLike, project_path: str | os.PathLike) -> bool:
    """True when ``project_path`` is a folder directly inside ``root`` (the visitor's own project)."""
    try:
        return Path(project_path).resolve().parent == Path(root).resolve()
    except (OSError, ValueError):
        return False
