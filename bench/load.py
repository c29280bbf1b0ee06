"""Load test of the Review step: N gradio_client users reviewing one project of M images at once.

What it does:

1. Builds a project of ``--images M`` generated images in a temporary folder (10 CIFAR-like classes):

   * ``--build real`` (the default up to 2000 images): ``tests/synth.py`` JPEGs in class folders, imported,
     tiny-random CLIP/DINO features and a zero-shot run, all through the CLI (``--clip tiny-random``).
   * ``--build synthetic`` (the default above 2000; generating, importing and featurising 100k JPEGs would take
     longer than the test itself): one generated JPEG per class on disk, and M ``images`` rows inserted directly
     in the store, each pointing at its class's JPEG (its ``rel_path`` is its own, ``<class>/NNNNNN.jpg``), each
     with its own thumbnail file (a hard link to its class's thumbnail), and a done ``label`` run whose
     predictions are random (Dirichlet) probability vectors leaning to the image's folder class, written with
     :func:`labeler.labels.write_predictions`. No features: the review actions never read them.

2. Starts the app (``python app.py --concurrency C``) on a free 127.0.0.1 port in a subprocess, and always
   stops it at the end (also on Ctrl-C or a failure).

3. Runs ``--users N`` gradio_client users (threads, one client session each) for ``--seconds S``. Each opens
   the project and the Review step, then repeats: open a class (or "all images"), turn 0–2 pages, select 1–3
   images of its own on the page (user k owns the image ids ≡ k mod N, and touches each image once, so
   every edit's outcome can be checked), accept or relabel them, and now and then undo and reopen the step.

4. Afterwards exports the project as CSV with the core (:func:`labeler.export.export`) and checks every
   acknowledged edit: all its images show it (accepted: source ``accepted``; relabel: source ``human`` and the
   class) or — undone — all show their pseudo-label again. An edit half there, or more edits gone than undos
   were sent (undo takes back the project's newest change, whoever made it), counts as lost.

Prints p50/p95 per action, the errors, the CPU the app and the clients used per call, and last
``p95 <ms> ms, errors <n>, lost <n>`` over all review actions (opening the project in step 1, once per user, is
setup: shown in the table, not in that p95; every error counts).

The users share one TLS context (:data:`TLS`): gradio_client opens an httpx client per call, and each would load
the CA bundle again — about 80 ms of CPU per call, taken from the app on the same cores.

Usage::

    python bench/load.py --users 1 --seconds 30 --images 10000
    python bench/load.py --users 20 --seconds 60 --images 10000 --concurrency 16
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
THRESHOLD = 0.5
#: Timed and shown, but not review actions: left out of the last line's p95 (their errors still count).
SETUP = ("connect", "open project")
SHA = re.compile(r"[0-9a-f]{64}")
ENV = {
    "NO_PROXY": "localhost,127.0.0.1",
    "no_proxy": "localhost,127.0.0.1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
os.environ.update(ENV)
#: One TLS context for every request of every user (see the module docstring). The app is plain http on
#: 127.0.0.1: nothing is verified either way.
TLS = ssl.create_default_context()


# --- the project ----------------------------------------------------------------------------------------
def build_real(root: Path, images: int, work: Path) -> None:
    """Generated JPEGs, imported, tiny-random features and a zero-shot run, through the CLI."""
    from labeler.cli import main
    from tests.synth import image_folder

    per_class = max(1, -(-images // len(CLASSES)))
    src = image_folder(work / "imgs", per_class, CLASSES)
    for args in (
        ["init", str(root), "--classes", ",".join(CLASSES)],
        ["import", str(root), str(src), "--quiet"],
        ["features", str(root), "--clip", "tiny-random", "--dino", "tiny-random", "--quiet"],
        ["label", str(root), "--quiet"],
    ):
        if main(args) != 0:
            raise SystemExit(f"building the project failed at: labeler {' '.join(args[:1])}")


def build_synthetic(root: Path, images: int, work: Path, seed: int = 0) -> None:
    """M image rows and a label run with random predictions, written straight into the store (see the docstring)."""
    from labeler.ingest import thumbnail_path
    from labeler.jobs import Job
    from labeler.labels import write_predictions
    from labeler.project import Project
    from tests.synth import make_image

    project = Project.create(root, CLASSES)
    src = work / "imgs"
    thumbs = work / "thumbs"
    thumbs.mkdir(parents=True)
    files = {}
    for k, cls in enumerate(CLASSES):
        (src / cls).mkdir(parents=True)
        files[cls] = src / cls / "0000.jpg"
        make_image(cls, 0, seed=seed, classes=CLASSES).save(files[cls], "JPEG", quality=95)
        shutil.copy(files[cls], thumbs / f"{k}.jpg")
    db = project.db
    t = time.time()
    with db.conn:
        root_id = db.execute(
            "insert into import_roots (path, kind, source, created_at) values (?, 'folder', ?, ?)",
            [str(src), str(src), t],
        ).lastrowid
        rows = []
        for i in range(images):
            cls = CLASSES[i % len(CLASSES)]
            sha = hashlib.sha256(f"load-bench:{seed}:{i}".encode()).hexdigest()
            rows.append((sha, str(files[cls]), f"{cls}/{i:06d}.jpg", str(src), cls, 32, 32, "JPEG", 900, t, root_id))
        db.conn.executemany(
            "insert into images (sha256, path, rel_path, root, folder_label, width, height, format, bytes, status,"
            " added_at, root_id) values (?, ?, ?, ?, ?, ?, ?, ?, ?, 'ok', ?, ?)",
            rows,
        )
    ids = [r[0] for r in db.execute("select id from images order by id")]
    for (sha, path, *_), _ in zip(rows, ids, strict=True):
        dest = thumbnail_path(project, sha)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(thumbs / f"{CLASSES.index(Path(path).parent.name)}.jpg", dest)
    rng = np.random.default_rng(seed)
    c = len(CLASSES)
    job = Job.start(project, "label", method="zeroshot", params={"classes": CLASSES, "multi_label": False})
    for start in range(0, images, 20_000):
        chunk = ids[start : start + 20_000]
        probs = rng.dirichlet(np.full(c, 0.4), size=len(chunk))
        truth = (np.arange(start, start + len(chunk))) % c
        probs[np.arange(len(chunk)), truth] += rng.uniform(0, 1.5, len(chunk))
        probs /= probs.sum(axis=1, keepdims=True)
        write_predictions(project, job.id, chunk, probs.astype(np.float32))
    job.update_metrics(n=images, mean_confidence=None, texts="synthetic (bench/load.py)")
    job.finish("done")
    project.close()


# --- the server -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python app.py`` on a free local port in its own process group; :meth:`stop` always ends it."""

    def __init__(self, data_dir: Path, work: Path, concurrency: int | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = open(work / "server.log", "w")  # noqa: SIM115 (closed in stop)
        cmd = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(data_dir)]
        if concurrency is not None:
            cmd += ["--concurrency", str(concurrency)]
        env = {**os.environ, **ENV, "GRADIO_TEMP_DIR": str(work / "gradio")}
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the app exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise SystemExit(f"the app did not answer in {timeout:.0f} s:\n{self.logs()}")

    def cpu_seconds(self) -> float:
        """CPU time the app's process has used so far (user + system)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("nan")

    def logs(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


# --- the users ------------------------------------------------------------------------------------------
class Record:
    """What all users did: latencies per action, errors, acknowledged edits, undos sent."""

    def __init__(self):
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.messages: list[str] = []
        self.edits: list[dict] = []  # acknowledged: {"kind", "ids", "target"}
        self.undos = 0  # undo calls sent (answered or not: a failed one may still have undone)

    def call(self, action: str, client, *args, api_name: str):
        t = time.perf_counter()
        try:
            out = client.predict(*args, api_name=api_name)
        except Exception as exc:
            with self.lock:
                self.errors[action] += 1
                if len(self.messages) < 10:
                    self.messages.append(f"{action}: {type(exc).__name__}: {str(exc)[:200]}")
            return None
        with self.lock:
            self.times[action].append(time.perf_counter() - t)
        return out


def page_ids(gallery, sha_to_id: dict[str, int]) -> list[int]:
    """Image ids of a gallery output, in order (thumbnails are named by their sha256)."""
    items = gallery.get("value", gallery) if isinstance(gallery, dict) else gallery
    out = []
    for item in items or []:
        image = item.get("image") if isinstance(item, dict) else None
        name = image.get("orig_name") or image.get("path") if isinstance(image, dict) else json.dumps(item)
        known = [sha for sha in SHA.findall(str(name)) if sha in sha_to_id]
        if known:
            out.append(sha_to_id[known[-1]])
    return out


def user(k: int, n_users: int, url: str, project_dir: str, deadline: float, rec: Record, sha_to_id, seed: int):
    from gradio_client import Client

    rng = random.Random(seed * 1000 + k)
    try:
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False, ssl_verify=TLS)
    except Exception as exc:
        with rec.lock:
            rec.errors["connect"] += 1
            rec.messages.append(f"connect: {exc}")
        return
    used: set[int] = set()
    if rec.call("open project", client, project_dir, api_name="/project_open") is None:
        return
    rec.call("open review", client, api_name="/review_refresh")
    rounds = 0
    while time.time() < deadline:
        rounds += 1
        view = rng.choice([*CLASSES, "all images"])
        out = rec.call("open class", client, view, THRESHOLD, api_name="/review_view")
        if out is None:
            continue
        ids = page_ids(out[0], sha_to_id)
        for _ in range(rng.randint(0, 2)):
            if time.time() >= deadline:
                break
            out = rec.call("page", client, view, THRESHOLD, api_name="/review_next_page")
            if out is not None:
                ids = page_ids(out[0], sha_to_id)
        mine = [i for i in ids if i % n_users == k and i not in used]
        if not mine or time.time() >= deadline:
            continue
        chosen = rng.sample(mine, min(len(mine), rng.randint(1, 3)))
        used.update(chosen)  # touched once only, answered or not
        if (
            rec.call("select", client, view, THRESHOLD, ",".join(map(str, chosen)), api_name="/review_select_ids")
            is None
        ):
            continue
        if rng.random() < 0.5:
            kind, target = "accept", None
            ok = rec.call("accept", client, view, THRESHOLD, api_name="/review_accept") is not None
        else:
            kind, target = "relabel", rng.choice(CLASSES)
            ok = rec.call("relabel", client, view, THRESHOLD, target, api_name="/review_relabel") is not None
        if ok:
            with rec.lock:
                rec.edits.append({"kind": kind, "ids": chosen, "target": target})
        if rng.random() < 0.2:
            with rec.lock:
                rec.undos += 1
            rec.call("undo", client, view, THRESHOLD, api_name="/review_undo")
        if rounds % 8 == 0:
            rec.call("open review", client, api_name="/review_refresh")


# --- the check ------------------------------------------------------------------------------------------
def check(project_dir: Path, rec: Record, work: Path) -> tuple[int, int, int]:
    """(edits there, edits undone, lost) from a CSV export of the project."""
    from labeler.export import export, read_csv
    from labeler.project import Project

    project = Project(project_dir)
    try:
        id_of = dict(project.db.execute("select sha256, id from images"))
        rows = {id_of[r["sha256"]]: r for r in read_csv(export(project, "csv", work / "export.csv"))}
    finally:
        project.close()
    there = undone = partial = 0
    for e in rec.edits:
        got = [rows.get(i, {}) for i in e["ids"]]
        if e["kind"] == "accept":
            applied = [r.get("source") == "accepted" for r in got]
        else:
            applied = [r.get("source") == "human" and r.get("label") == e["target"] for r in got]
        original = [r.get("source") == "pseudo" for r in got]
        if all(applied):
            there += 1
        elif all(original):
            undone += 1
        else:
            partial += 1
    return there, undone, partial + max(0, undone - rec.undos)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    """In the app's process before it starts (Linux): SIGKILL it when this bench process dies, however it dies
    (a SIGKILL of the bench leaves no orphaned app; ``stop`` is the orderly way)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, required=True, help="concurrent gradio_client users")
    ap.add_argument("--seconds", type=float, required=True, help="how long the users review")
    ap.add_argument("--images", type=int, required=True, help="images in the generated project")
    ap.add_argument("--build", choices=["auto", "real", "synthetic"], default="auto", help="auto: real up to 2000")
    ap.add_argument("--concurrency", type=int, default=None, help="the app's --concurrency (default: its own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (project, server log)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # a kill stops the app too (through the finally below)
    if args.users < 1 or args.seconds <= 0 or args.images < 10:
        ap.error("--users ≥ 1, --seconds > 0 and --images ≥ 10")
    build = args.build if args.build != "auto" else ("real" if args.images <= 2000 else "synthetic")
    work = Path(tempfile.mkdtemp(prefix="labeler-load-"))
    server = None
    try:
        data_dir = work / "data"
        project_dir = data_dir / "bench"
        data_dir.mkdir()
        t = time.perf_counter()
        server = Server(data_dir, work, args.concurrency)  # starts while the project is built
        (build_real if build == "real" else build_synthetic)(project_dir, args.images, work)
        from labeler.project import Project

        project = Project(project_dir)
        sha_to_id = dict(project.db.execute("select sha256, id from images where status = 'ok'"))
        project.close()
        print(f"built a {build} project of {len(sha_to_id)} images in {time.perf_counter() - t:.1f} s", flush=True)
        server.wait_ready()
        rec = Record()
        cpu0 = (server.cpu_seconds(), time.process_time())
        deadline = time.time() + args.seconds
        threads = [
            threading.Thread(
                target=user,
                args=(k, args.users, server.url, str(project_dir), deadline, rec, sha_to_id, args.seed),
                daemon=True,
            )
            for k in range(args.users)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        cpu = (server.cpu_seconds() - cpu0[0], time.process_time() - cpu0[1])
        server.stop()
        there, undone, lost = check(project_dir, rec, work)
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'action':<14}{'calls':>7}{'p50 ms':>10}{'p95 ms':>10}{'errors':>8}")
    for action in sorted(set(rec.times) | set(rec.errors), key=lambda a: (a in SETUP, a)):
        ts = rec.times.get(action, [])
        print(
            f"{action:<14}{len(ts):>7}{percentile(ts, 50):>10.0f}{percentile(ts, 95):>10.0f}"
            f"{rec.errors.get(action, 0):>8}" + ("   (setup: not in the p95 below)" if action in SETUP else "")
        )
    for m in rec.messages:
        print("error:", m)
    print(f"users {args.users}, images {len(sha_to_id)}, {args.seconds:g} s: {len(rec.edits)} edits acknowledged, "
          f"{there} in the export, {undone} undone by {rec.undos} undos")  # fmt: skip
    every = [x for action, ts in rec.times.items() if action not in SETUP for x in ts]
    calls = max(1, len(every))
    print(
        f"CPU per call: app {1000 * cpu[0] / calls:.0f} ms, clients {1000 * cpu[1] / calls:.0f} ms "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})"
    )
    errors = sum(rec.errors.values())
    print(f"review actions: {len(every)} calls, p50 {percentile(every, 50):.0f} ms")
    print(f"p95 {percentile(every, 95):.0f} ms, errors {errors}, lost {lost}")
    return 0 if errors == 0 and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
