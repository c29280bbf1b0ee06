"""The app as a public Space: one folder of projects per visitor (a random id kept in the browser).

The id comes from the browser, so it is checked (32 hex digits) before it names a folder, and a
session may open only projects directly inside its own folder (:func:`owns`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidInputError
from ..project import data_dir

#: Sub-folder of the data dir that holds one folder of projects per visitor when the app runs as a Space.
VISITORS_DIRNAME = "visitors"


def new_visitor_id() -> str:
    """A fresh random visitor id (32 hex digits): the name of that visitor's project folder on a Space."""
    import secrets

    return secrets.token_hex(16)


def visitor_root(visitor_id: str | None) -> Path:
    """The folder a visitor's projects live in: ``<data dir>/visitors/<id>/`` (made if missing).

    Raises InvalidInputError unless the id is 32 hex digits (it comes from the browser: never a path).
    """
    vid = str(visitor_id or "")
    if len(vid) != 32 or any(c not in "0123456789abcdef" for c in vid):
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
