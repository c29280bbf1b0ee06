"""Benchmark feature computation: bare model forward vs. the full compute_features pipeline.

For each model, in one process:

(a) bare forward: images decoded and preprocessed beforehand, tensors in memory, ``model.encode_images``
    in batches (measured before each round and after the last; the best is reported);
(b) pipeline: :func:`labeler.features.compute_features` on a fresh project of N CIFAR-10 images
    (decode + DataLoader + forward + float16 store + per-batch commits), for each --workers value;

plus peak RSS (``ru_maxrss``) and the RSS growth between N/2 and N images encoded (flat = no leak).
The last line is the pipeline/bare ratio for ViT-B-32 (random init, 224 px).

Usage::

    python bench/features.py --images 1000 --models tiny-random,ViT-B-32 --workers 0,1
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from labeler.features import compute_features  # noqa: E402
from labeler.ingest import load_rgb  # noqa: E402
from labeler.models import load_clip  # noqa: E402
from labeler.project import Project  # noqa: E402

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cifar_files(data: Path, n: int) -> list[Path]:
    """N files, round-robin over the class folders."""
    per_class = [sorted(d.glob("*.jpg")) for d in sorted(data.iterdir()) if d.is_dir()]
    if not per_class or not any(per_class):
        sys.exit(f"no CIFAR images under {data}")
    out, i = [], 0
    while len(out) < n:
        cls = per_class[i % len(per_class)]
        k = i // len(per_class)
        if k >= max(len(c) for c in per_class):
            break
        if k < len(cls):
            out.append(cls[k])
        i += 1
    return out


def make_project(root: Path, files: list[Path]) -> Project:
    project = Project.create(root, ["a", "b"])
    rows = []
    for p in files:
        data = p.read_bytes()
        rows.append(
            {
                "sha256": hashlib.sha256(data).hexdigest(),
                "path": str(p.resolve()),
                "rel_path": f"{p.parent.name}/{p.name}",
                "root": str(p.parent.parent),
                "folder_label": p.parent.name,
                "bytes": len(data),
                "status": "ok",
                "added_at": 0.0,
            }
        )
    with project.db.conn:
        project.db["images"].insert_all(rows)
    return project


def bare_forward(model, tensors: torch.Tensor, batch_size: int) -> float:
    """Images/s of ``encode_images`` over tensors already in memory."""
    model.encode_images(tensors[: min(len(tensors), batch_size)])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(tensors), batch_size):
        model.encode_images(tensors[i : i + batch_size])
    return len(tensors) / (time.perf_counter() - t0)


def pipeline(model, root: Path, files: list[Path], batch_size: int, workers: int) -> dict:
    project = make_project(root, files)
    n = len(files)
    marks: dict[str, float] = {}

    def progress(done: int, total: int, msg: str) -> None:
        if done >= n // 2 and "half" not in marks:
            marks["half"] = rss_mb()

    # Warm-up forward at this batch size so both measurements start warm.
    model.encode_images(torch.zeros(batch_size, 3, model.image_size, model.image_size))
    # Time the forward inside the pipeline too: machine speed drifts (shared CPUs), so the share of
    # the wall time spent in the forward is the steadier measure of the pipeline's overhead.
    real, fwd = model.encode_images, [0.0]

    def timed(x):
        t = time.perf_counter()
        out = real(x)
        fwd[0] += time.perf_counter() - t
        return out

    model.encode_images = timed
    try:
        t0 = time.perf_counter()
        res = compute_features(project, model, batch_size=batch_size, num_workers=workers, on_progress=progress)
        dt = time.perf_counter() - t0
    finally:
        del model.encode_images  # back to the class method
    end = rss_mb()
    project.close()
    assert res["computed"] == n, res
    return {"ips": n / dt, "fwd_share": fwd[0] / dt, "rss_growth": end - marks.get("half", end), "rss_end": end}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1000, help="images in the project (default 1000)")
    ap.add_argument("--models", default="tiny-random,ViT-B-32", help="comma-separated CLIP models (random init)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", default="0", help="comma-separated DataLoader worker counts to compare (default 0)")
    ap.add_argument("--bare-images", type=int, default=256, help="images for the bare forward (default 256)")
    ap.add_argument(
        "--rounds", type=int, default=1, help="repeat bare + pipeline; the best of each is kept (noisy machines)"
    )
    ap.add_argument("--precision", default="fp32", help="fp32 | bf16 (fp16 needs a GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10-test"))
    args = ap.parse_args()

    files = cifar_files(Path(args.data), args.images)
    workers = [int(w) for w in args.workers.split(",")]
    print(
        f"{len(files)} CIFAR-10 images, batch {args.batch_size}, {args.precision}, device {args.device}, "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = load_clip(name, pretrained=None, device=args.device, precision=args.precision)
            k = min(args.bare_images, len(files))
            tensors = torch.stack([model.preprocess(load_rgb(str(p))) for p in files[:k]])
            bares: list[float] = []
            results: dict[int, list[dict]] = {w: [] for w in workers}
            for rnd in range(args.rounds):
                bares.append(bare_forward(model, tensors, args.batch_size))
                print(f"  {name} round {rnd + 1}: bare {bares[-1]:.1f} img/s", flush=True)
                for w in workers:
                    r = pipeline(model, Path(tmp) / f"{name}-w{w}-r{rnd}", files, args.batch_size, w)
                    results[w].append(r)
                    print(
                        f"  {name} round {rnd + 1} workers={w}: pipeline {r['ips']:.1f} img/s, "
                        f"forward {100 * r['fwd_share']:.1f}% of it",
                        flush=True,
                    )
            bares.append(bare_forward(model, tensors, args.batch_size))
            print(f"  {name}: bare after {bares[-1]:.1f} img/s (load average {os.getloadavg()[0]:.2f})", flush=True)
            del tensors
            bare = max(bares)
            for w in workers:
                best = max(results[w], key=lambda r: r["ips"])
                share = max(r["fwd_share"] for r in results[w])
                rows.append(
                    (name, model.image_size, w, bare, best["ips"], best["ips"] / bare, share, best["rss_growth"])
                )
    print()
    print(
        f"{'model':<14}{'px':>5}{'workers':>9}{'bare img/s':>12}{'pipeline img/s':>16}{'ratio':>8}"
        f"{'fwd share':>11}{'RSS growth N/2..N':>20}"
    )
    for name, px, w, bare, ips, ratio, share, growth in rows:
        print(f"{name:<14}{px:>5}{w:>9}{bare:>12.1f}{ips:>16.1f}{ratio:>8.2f}{share:>11.2f}{growth:>17.1f} MB")
    print(f"peak RSS {peak_rss_mb():.0f} MB (main process)")
    print(
        "bare, pipeline: best of the rounds; ratio = pipeline / bare; "
        "fwd share = time in the forward / pipeline wall time (steadier when the machine is shared)"
    )
    vit = [r for r in rows if r[0] == "ViT-B-32"]
    if vit:
        best = max(vit, key=lambda r: r[5])
        print(
            f"ViT-B-32 pipeline/bare ratio: {best[5]:.2f} (forward share {best[6]:.2f}, workers={best[2]}, "
            f"{args.precision})"
        )


if __name__ == "__main__":
    main()
