"""Labeler's browser app: ``python app.py [--host H] [--port P] [--data-dir DIR]``.

Also the entry point of the Hugging Face Space. Thin on purpose: the app is
built by :func:`labeler.app.build_demo`.
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(description="Start the Labeler browser app.")
    on_space = bool(os.environ.get("SPACE_ID"))
    parser.add_argument(
        "--host",
        default=os.environ.get("LABELER_HOST") or ("0.0.0.0" if on_space else "127.0.0.1"),
        help="interface to listen on (default 127.0.0.1; 0.0.0.0 on a Hugging Face Space)",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("LABELER_PORT", "7860")))
    parser.add_argument("--data-dir", default=None, help="where projects live (sets LABELER_DATA_DIR)")
    parser.add_argument(
        "--uploads-only",
        action="store_true",
        help="no import from folder paths on this machine, and each browser gets its own projects "
        "(on by itself on a Hugging Face Space)",
    )
    args = parser.parse_args()
    if args.data_dir:
        os.environ["LABELER_DATA_DIR"] = args.data_dir
    from labeler.app import launch

    launch(host=args.host, port=args.port, local_mode=False if args.uploads_only else None)


if __name__ == "__main__":
    main()
