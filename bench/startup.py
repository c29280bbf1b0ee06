"""Start-up cost: how long ``labeler label`` spends importing vs working, and ``python app.py``'s first page.

    python bench/startup.py [--images 100000] [--classes 10] [--no-app] [--app-only] [--repeat 2]

Builds its own project in a temporary folder: generated images (tests/synth.py) imported and encoded with the
``tiny-random`` CLIP model through the CLI, then grown to ``--images`` rows by copying image rows with new
sha256s and random feature vectors (cheap, and the same work for zero-shot as real ones). One ``label`` run
caches the class-text embeddings; then ``python -X importtime -m labeler label`` is timed: imports (the sum of
top-level import times, lazy imports included) vs the rest (work), and whether torch / open_clip were imported.
Last, ``python app.py`` is started on a free 127.0.0.1 port and its first page polled for (an HTTP 200 for ``/``),
against the floor measured in the same run: a bare ``python -c "import gradio"`` (the app cannot start faster than
its own UI library imports). Both are timed ``--repeat`` times, alternating, best of each reported.

Prints ``app: first page <s> s, bare import gradio <s> s, ratio <r>`` and
``label: total <s> s, imports <s> s, work <s> s, ratio total/work <r>`` (``--app-only``: the app line alone).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _env(data: Path) -> dict:
    return {
        **os.environ,
        "LABELER_DATA_DIR": str(data),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": str(REPO),
        "NO_PROXY": "localhost,127.0.0.1",
    }


def _cli(env: dict, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "labeler", *args], env=env, cwd=REPO, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"labeler {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def build_project(root: Path, env: dict, images: int, classes: int) -> Path:
    """A project at ``root / 'P'`` with ``images`` ok images and tiny-random CLIP features for all of them."""
    from tests.synth import CLASSES, image_folder

    names = [*CLASSES, *(f"class{i}" for i in range(len(CLASSES), classes))][:classes]
    folder = image_folder(root / "imgs", 20, names)
    project_dir = root / "P"
    _cli(env, "init", str(project_dir), "--classes", ",".join(names))
    _cli(env, "import", str(project_dir), str(folder), "--quiet")
    _cli(env, "features", str(project_dir), "--clip", "tiny-random", "--quiet")

    import numpy as np

    from labeler.project import Project

    project = Project.open(str(project_dir))
    fset = project.features.latest("clip")
    db = project.db
    base = [dict(r) for r in db.query("select * from images order by id")]
    have = len(base)
    rng = np.random.default_rng(0)
    chunk = 20000
    for start in range(have, images, chunk):
        stop = min(images, start + chunk)
        rows, shas = [], []
        for i in range(start, stop):
            row = dict(base[i % have])
            row.pop("id")
            row["sha256"] = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
            row["path"] = f"{row['path']}#{i}"
            row["rel_path"] = f"{row['rel_path']}#{i}"
            rows.append(row)
            shas.append(row["sha256"])
        db["images"].insert_all(rows)
        vecs = rng.standard_normal((len(shas), int(fset["dim"]))).astype(np.float32)
        project.features.append(int(fset["id"]), shas, vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    project.close()
    return project_dir


def import_seconds(stderr: str) -> tuple[float, set[str]]:
    """Sum of top-level cumulative import times in a ``-X importtime`` log, and every module named in it."""
    total, names = 0.0, set()
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        names.add(name.strip())
        if not name.startswith("  "):  # depth 0 (the name follows one space)
            total += int(cumulative) / 1e6
    return total, names


def time_label(env: dict, project_dir: Path) -> dict:
    """One timed ``labeler label`` (text embeddings cached by an earlier run)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "labeler", "label", str(project_dir), "--quiet", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"label failed:\n{proc.stderr[-3000:]}")
    imports, names = import_seconds(proc.stderr)
    work = max(total - startup - imports, 1e-9)
    return {
        "total": total,
        "startup": startup,
        "imports": imports,
        "work": work,
        "ratio": total / work,
        "torch": "torch" in names,
        "open_clip": "open_clip" in names,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_app(env: dict, timeout: float = 180.0) -> float:
    """Seconds from starting ``python app.py`` to its first page answering 200."""
    port = _free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"app.py exited with {proc.returncode}:\n{proc.stderr.read().decode()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"app.py served no page within {timeout:.0f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def time_gradio(env: dict) -> float:
    """Seconds a bare ``python -c "import gradio"`` takes: the floor of the app's start."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradio"], env=env, cwd=REPO, check=True)
    return time.perf_counter() - t0


def app_line(env: dict, repeat: int) -> str:
    """``app: first page …, bare import gradio …, ratio …`` (best of ``repeat`` alternating runs of each)."""
    pages, floors = [], []
    for _ in range(max(1, repeat)):
        floors.append(time_gradio(env))
        pages.append(time_app(env))
    page, floor = min(pages), min(floors)
    return f"app: first page {page:.2f} s, bare import gradio {floor:.2f} s, ratio {page / floor:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="timed label runs (the best is reported)")
    parser.add_argument("--no-app", action="store_true", help="skip the app's first-page time")
    parser.add_argument("--app-only", action="store_true", help="only the app's first-page time (no project)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="labeler-startup-") as tmp:
        root = Path(tmp)
        env = _env(root / "data")
        if args.app_only:
            print(app_line(env, args.repeat))
            return
        project_dir = build_project(root, env, args.images, args.classes)
        _cli(env, "label", str(project_dir), "--quiet")  # encodes and caches the class texts
        best = min((time_label(env, project_dir) for _ in range(args.repeat)), key=lambda r: r["total"])
        print(
            f"label on {args.images} cached images: total {best['total']:.2f} s (interpreter {best['startup']:.2f} s, "
            f"imports {best['imports']:.2f} s, work {best['work']:.2f} s); torch imported: {best['torch']}, "
            f"open_clip imported: {best['open_clip']}"
        )
        if not args.no_app:
            print(app_line(env, args.repeat))
        print(
            f"label: total {best['total']:.2f} s, imports {best['imports']:.2f} s, work {best['work']:.2f} s, "
            f"ratio total/work {best['ratio']:.2f}"
        )


if __name__ == "__main__":
    main()
