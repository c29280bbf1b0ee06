"""Labeler's browser app: ``python app.py [--host H] [--port P] [--data-dir DIR] [--uploads-only]``.

Also the entry point of the Hugging Face Space. Thin on purpose: the same as ``labeler serve`` (same flags;
host and port default to ``LABELER_HOST``/``LABELER_PORT``, then Gradio's ``GRADIO_SERVER_NAME``/
``GRADIO_SERVER_PORT``); the app is built by :func:`labeler.ui.build_demo`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``labeler serve`` with ``argv`` (default: this script's arguments); returns the exit code."""
    from labeler.cli import main as cli_main

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
