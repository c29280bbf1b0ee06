"""Start-up: the app's first page needs no model code (torch, open_clip, transformers: seconds of imports).

Timing is bench/startup.py's job (``--app-only`` prints the first page vs a bare ``import gradio``); this checks what
makes it fast — the module graph ``python app.py`` loads before it serves — without timing anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .conftest import REPO

#: Imported by a handler when its work needs them, never to build or serve the page.
HEAVY = ("torch", "torchvision", "open_clip", "transformers", "faiss", "umap", "numba")

BUILD = """
import json, sys
import app  # the entry point, and the CLI it runs (`serve`)
import labeler.cli
import labeler.ui as ui

demo = ui.build_demo(sys.argv[1])
ui.launch_options(demo)
print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
"""


def test_the_app_builds_its_page_without_importing_model_code(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "LABELER_DATA_DIR": str(tmp_path / "data")}
    code = f"HEAVY = {HEAVY!r}\n{BUILD}"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "data")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"building the app imported {loaded}: import them inside the handlers that need them"


def test_resolving_a_device_still_works_when_torch_is_imported_lazily():
    from labeler.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
