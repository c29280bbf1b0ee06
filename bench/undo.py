"""Benchmark the undo log: bulk label changes with their undo snapshot vs the same changes without it.

In one process, on a fresh project of N image rows and a zero-shot run over them (random probabilities):

(a) with undo: ``accept_pseudo_labels`` of every image, then ``set_human_labels`` of a tenth of them, then
    ``exclude_images`` of a tenth — each keeps its :mod:`labeler.history` snapshot; then, timed apart, the
    three ``undo`` calls that take them back;
(b) bare: the same three calls with ``history.snapshot`` / ``history.record`` replaced by no-ops, on a copy of
    the same project (so both start from the same rows).

Rounds alternate bare and with-undo on fresh copies; the best time of each is kept.

Prints the seconds of each, the size of the undo log, the undo time, and last the with/bare ratio.

Usage::

    python bench/undo.py --images 100000
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _make(root: Path, n: int, classes: int):
    from labeler.jobs import Job
    from labeler.labels import write_predictions
    from labeler.project import Project

    project = Project.create(root, [f"class{k}" for k in range(classes)])
    with project.db.conn:
        project.db["images"].insert_all(
            {
                "sha256": hashlib.sha256(str(i).encode()).hexdigest(),
                "path": f"/x/{i}.jpg",
                "rel_path": f"{i}.jpg",
                "root": "/x",
                "status": "ok",
            }
            for i in range(n)
        )
    ids = [r[0] for r in project.db.execute("select id from images order by id")]
    probs = np.random.default_rng(0).dirichlet(np.ones(classes), size=n).astype(np.float32)
    params = {"classes": project.classes, "multi_label": False}
    with Job.start(project, "label", method="zeroshot", params=params) as job:
        write_predictions(project, job.id, ids, probs)
    project.close()
    return ids


def _changes(root: Path, ids: list[int], undo: bool) -> tuple[float, float, int]:
    from labeler import history
    from labeler.labels import accept_pseudo_labels, set_human_labels
    from labeler.project import Project
    from labeler.review import exclude_images

    project = Project(root)
    tenth = ids[: max(1, len(ids) // 10)]
    t = time.perf_counter()
    accept_pseudo_labels(project)
    set_human_labels(project, tenth, "class1")
    exclude_images(project, ids[-len(tenth) :])
    seconds = time.perf_counter() - t
    log_bytes = project.db.execute("select coalesce(sum(length(snapshot)), 0) from undo_log").fetchone()[0]
    t = time.perf_counter()
    while undo and history.undo(project) is not None:
        pass
    undo_seconds = time.perf_counter() - t
    left = project.db.execute("select count(*) from labels").fetchone()[0]
    project.close()
    if undo and left:
        raise SystemExit(f"undo left {left} labels rows: it should have taken every change back")
    return seconds, undo_seconds, log_bytes


def _bare(run):
    """``run()`` with :mod:`labeler.history` recording nothing (snapshot and record are no-ops)."""
    import labeler.labels as labels_mod
    from labeler import history

    real = history.snapshot, history.record
    fake = (
        (lambda project, image_ids: {"ids": [], "labels": []}),
        (lambda project, action, before: None),
    )
    history.snapshot, history.record = labels_mod.snapshot, labels_mod.record = fake
    try:
        return run()
    finally:
        history.snapshot, history.record = labels_mod.snapshot, labels_mod.record = real


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is kept")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        ids = _make(base, args.images, args.classes)
        with_s = bare_s = undo_s = float("inf")
        for r in range(args.rounds):  # each round on fresh copies, bare and with in turn: no warm-up favours one
            with_root, bare_root = Path(tmp) / f"with{r}", Path(tmp) / f"bare{r}"
            shutil.copytree(base, with_root)
            shutil.copytree(base, bare_root)
            b, _, _ = _bare(lambda root=bare_root: _changes(root, ids, undo=False))
            w, u, log_bytes = _changes(with_root, ids, undo=True)
            bare_s, with_s, undo_s = min(bare_s, b), min(with_s, w), min(undo_s, u)
            shutil.rmtree(with_root)
            shutil.rmtree(bare_root)
    print(f"{args.images} images: accept all + label a tenth + exclude a tenth (best of {args.rounds})")
    print(f"with undo log: {with_s:.2f} s (undo log {log_bytes / 1e6:.1f} MB); the three undos: {undo_s:.2f} s")
    print(f"bare:          {bare_s:.2f} s")
    print(f"ratio with/bare: {with_s / bare_s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
