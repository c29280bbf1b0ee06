"""The app's static files (CSS, JS, the logo, example class lists), read from the top-level ``assets/`` folder.

In a checkout they sit in ``assets/`` beside ``labeler/``; an installed package carries the same files as
``labeler/ui/static/`` (pyproject.toml maps that package to ``assets/``). :func:`read` finds them either way.
"""

from __future__ import annotations

import functools
from pathlib import Path

_HERE = Path(__file__).resolve().parent


@functools.cache
def folder() -> Path:
    """The folder holding the assets: ``labeler/ui/static`` when installed, else the checkout's ``assets/``."""
    for candidate in (_HERE / "static", _HERE.parents[1] / "assets"):
        if (candidate / "app.css").is_file():
            return candidate
    raise FileNotFoundError(
        f"Labeler's assets are missing: neither {_HERE / 'static'} nor {_HERE.parents[1] / 'assets'} holds app.css "
        "(reinstall the package, or run from a full checkout)"
    )


def path(name: str) -> Path:
    """The file ``name`` (a path relative to the assets folder, e.g. ``"examples/cifar10.txt"``)."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"asset name must be relative to the assets folder, got {name!r}")
    return folder() / rel


@functools.cache
def read(name: str) -> str:
    """The text of the asset ``name`` (UTF-8), e.g. ``read("app.css")``. Raises FileNotFoundError naming it."""
    file = path(name)
    if not file.is_file():
        raise FileNotFoundError(f"Labeler's asset {name!r} is missing from {folder()}")
    return file.read_text(encoding="utf-8")


def script(name: str) -> str:
    """The JS asset ``name`` as a ``<script>`` element (for the page head)."""
    return f"<script>\n{read(name)}</script>\n"


def examples() -> dict[str, str]:
    """The example class lists: title (the file's first ``# `` line, else its name) → file name under
    ``examples/``, in file-name order."""
    out = {}
    for file in sorted((folder() / "examples").glob("*.txt")):
        first = file.read_text(encoding="utf-8").splitlines()[:1]
        title = first[0][1:].strip() if first and first[0].startswith("#") else file.stem
        out[title] = file.name
    return out


def example_classes(name: str) -> list[str]:
    """The class names of the example list ``name`` (a file name under ``examples/``): its lines, blank lines and
    ``#`` comments left out."""
    lines = read(f"examples/{name}").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
