"""Issue 12, review speed: ``bench/load.py`` runs end to end with tiny numbers — a generated project, the app on a
free port, gradio_client users reviewing, every acknowledged edit found in the export — and its last line has the
fixed format. Not a timing test: the figures belong in the README, measured on a quiet machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import REPO, wait_until

pytest.importorskip("gradio_client")

LAST = re.compile(r"^p95 (\d+) ms, errors (\d+), lost (\d+)$")


def test_load_bench_reviews_without_errors_or_lost_edits(tmp_path):
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path),
        "NO_PROXY": "localhost,127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    proc = subprocess.run(
        [sys.executable, "bench/load.py", "--users", "2", "--seconds", "3", "--images", "60"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout.strip().splitlines()
    assert out, proc.stderr[-3000:]
    m = LAST.match(out[-1])
    assert m, f"last line {out[-1]!r}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (int(m.group(2)), int(m.group(3))) == (0, 0), proc.stdout[-3000:]
    assert proc.returncode == 0
    table = "\n".join(out)
    for action in ("open class", "select"):
        assert re.search(rf"^{action} +[1-9]", table, re.M), table  # the users did review
    assert not list(tmp_path.glob("labeler-load-*")), "the temporary project was left behind"


def test_load_bench_stops_the_app_when_interrupted(tmp_path):
    """Ctrl-C (SIGINT) during the run: the app's process group is gone afterwards."""
    import signal

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "bench/load.py", "--users", "1", "--seconds", "120", "--images", "30", "--build", "synthetic"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        while "built a" not in line:  # the app is started by then (readline blocks until a line or the end)
            line = proc.stdout.readline()
            if not line:
                break
        assert "built a" in line, line
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert children, "no app process"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=150)  # the app gets 20 s for SIGTERM, then SIGKILL; a loaded 2-core machine is slow
    finally:
        if proc.poll() is None:
            proc.kill()  # the app dies with it (PR_SET_PDEATHSIG): no orphan even when this test fails
    for pid in children:
        wait_until(lambda pid=pid: not os.path.exists(f"/proc/{pid}") or "zombie" in _state(pid), f"app {pid} to end")


def _state(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/status") as fp:
            return next((ln for ln in fp if ln.startswith("State:")), "").lower()
    except OSError:
        return "zombie"
