"""SQL helpers shared by the store and the library: one way to bind a long list in ``IN (...)``.

SQLite caps the bound variables of one statement (999 before 3.32, 32766 since), so a query over an
arbitrary list of ids runs once per chunk of :data:`CHUNK` values:

>>> rows = []
>>> for chunk, marks in in_chunks(image_ids):                              # doctest: +SKIP
...     rows += db.execute(f"select id, sha256 from images where id in ({marks})", chunk).fetchall()
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: Values bound per ``IN (...)`` query: below the oldest SQLite limit (999) with room for a few more arguments.
CHUNK = 900


def in_chunks(values: Iterable[T]) -> Iterator[tuple[list[T], str]]:
    """Split ``values`` into chunks of at most :data:`CHUNK`, each with its ``?,?,…`` placeholders.

    Parameters
    ----------
    values : iterable
        The values to bind (read once, in order; duplicates are kept).

    Yields
    ------
    (list, str)
        A chunk of the values and the placeholders for them (``"?,?,?"``): put the placeholders in the
        statement's ``in (...)`` and bind the chunk after any arguments that come before it. An empty
        ``values`` yields nothing (``in ()`` is never built).
    """
    items = values if isinstance(values, list) else list(values)
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        yield chunk, ",".join("?" * len(chunk))
