"""Benchmark feature computation: fp32 vs ``--precision auto``, and bare model forward vs the full pipeline.

For each model, in one process, with the same weights:

(0) what ``--precision auto`` picks here (:func:`labeler.precision.choose_encoder`: bf16 on a CPU with native
    bfloat16 once its one-time probe passes, bf16/fp16 on a GPU, fp32 elsewhere), the probe's min cosine, and
    the min cosine between the fp32 and the auto features of every bare-forward image;
(a) bare forward, fp32 and auto: images decoded and preprocessed beforehand, tensors in memory,
    ``model.encode_images`` in batches (measured before each round and after the last; the best is
    reported); ``auto/fp32`` is their ratio (the speed-up of auto);
(b) pipeline (auto precision): :func:`labeler.features.compute_features` on a fresh project of N images
    (decode + DataLoader + forward + float16 store + per-batch commits), for each --workers value and, without
    workers, each --prefetch value (batches decoded ahead in a thread while the model runs; 0: in turn);
    ``pipe/bare`` = pipeline / bare forward of the same encoder (1.0: decoding and storing cost nothing);

plus peak RSS (``ru_maxrss``) and the RSS growth between N/2 and N images encoded (flat = no leak).

Images: the CIFAR-10 test folder under ``../shared/data`` when present, else generated class images
(tests/synth.py; photo-like JPEGs of 256-500 px, :data:`SYNTH_SIZES`). Models: CLIP by open_clip name with
random init (``--pretrained TAG`` for real weights when they are cached), ``tiny-random``; DINO with ``--dino``:
``tiny-random``, ``dinov2-small-random`` (a random-init model of DINOv2-small's size: 12 layers, 384 wide,
patch 14, 224 px) or a hub id / folder.
The first line says what ran. Ratios are within this process (the machine's speed drifts between runs).

Usage::

    python bench/features.py --images 256 --models tiny-random,ViT-B-32 --dino dinov2-small-random
    python bench/features.py --images 1000 --models ViT-B-32 --workers 0,1 --precision fp32   # pipeline only
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

from labeler import features as lfeatures  # noqa: E402
from labeler.features import compute_features  # noqa: E402
from labeler.ingest import load_rgb  # noqa: E402
from labeler.models import load_clip, load_dino, register_model  # noqa: E402
from labeler.precision import choose_encoder, cpu_flags, min_cosine, native_bf16  # noqa: E402
from labeler.project import Project  # noqa: E402

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@register_model("dino", "dinov2-small-random")
def dinov2_small_random(pretrained, device, precision):
    """Random-init DINOv2 of DINOv2-small's size (the timing of facebook/dinov2-small without its weights)."""
    from transformers import Dinov2Config, Dinov2Model

    from labeler.models.base import seeded
    from labeler.models.dino import IMAGENET_MEAN, IMAGENET_STD, _wrap

    config = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14, image_size=224)
    with seeded():
        model = Dinov2Model(config)
    proc = {
        "size": {"shortest_edge": 256},
        "crop_size": {"height": 224, "width": 224},
        "resample": 3,
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
    }
    return _wrap(model, "dino:dinov2-small-random", "dinov2-small-random", device, precision, proc)


#: Generated images' sizes (w, h), in turn: photo-like 256-500 px, so decoding costs what it costs on real images.
SYNTH_SIZES = ((500, 375), (375, 500), (480, 320), (320, 256), (400, 400))


def synth_files(dst: Path, n: int, sizes: tuple[tuple[int, int], ...] = SYNTH_SIZES) -> list[Path]:
    """N generated class images (tests/synth.py), JPEG quality 90, sizes cycling through ``sizes``."""
    from tests.synth import CLASSES, make_image

    files = []
    for i in range(n):
        cls = CLASSES[i % len(CLASSES)]
        (dst / cls).mkdir(parents=True, exist_ok=True)
        path = dst / cls / f"{i:05d}.jpg"
        w, h = sizes[i % len(sizes)]
        make_image(cls, i, size=(h, w)).save(path, "JPEG", quality=90)
        files.append(path)
    return files


def cifar_files(data: Path, n: int) -> list[Path]:
    """N files, round-robin over the class folders."""
    if not data.is_dir():
        sys.exit(f"no image folder {data}")
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


def pipeline(model, root: Path, files: list[Path], batch_size: int, workers: int, prefetch: int) -> dict:
    """One :func:`compute_features` run on a fresh project; ``prefetch``: batches decoded ahead (workers=0)."""
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
    saved, lfeatures.PREFETCH_BATCHES = lfeatures.PREFETCH_BATCHES, prefetch
    try:
        t0 = time.perf_counter()
        res = compute_features(project, model, batch_size=batch_size, num_workers=workers, on_progress=progress)
        dt = time.perf_counter() - t0
    finally:
        del model.encode_images  # back to the class method
        lfeatures.PREFETCH_BATCHES = saved
    end = rss_mb()
    project.close()
    assert res["computed"] == n, res
    return {"ips": n / dt, "fwd_share": fwd[0] / dt, "rss_growth": end - marks.get("half", end), "rss_end": end}


def load(kind: str, name: str, pretrained: str | None, device: str, precision: str):
    if kind == "dino":
        return load_dino(name, device=device, precision=precision)
    return load_clip(name, pretrained=pretrained or "none", device=device, precision=precision)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=256, help="images in the pipeline's project (default 256)")
    ap.add_argument("--models", default="tiny-random,ViT-B-32", help="comma-separated CLIP models ('' for none)")
    ap.add_argument("--pretrained", default=None, help="open_clip pretrained tag or file for the CLIP models")
    ap.add_argument("--dino", default="", help="comma-separated DINO models (tiny-random, dinov2-small-random, ...)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", default="0", help="comma-separated DataLoader worker counts to compare (default 0)")
    ap.add_argument(
        "--prefetch",
        default="1",
        help="workers=0: comma-separated batches decoded ahead in a thread (0: decode in turn; default 1)",
    )
    ap.add_argument("--bare-images", type=int, default=128, help="images for the bare forward (default 128)")
    ap.add_argument(
        "--rounds", type=int, default=1, help="repeat bare + pipeline; the best of each is kept (noisy machines)"
    )
    ap.add_argument(
        "--precision", default="auto", help="auto (default: compare fp32 with what auto picks) | fp32 | bf16 | fp16"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10-test"))
    args = ap.parse_args()

    prefetch = [int(v) for v in args.prefetch.split(",")]
    # (workers, prefetch) pairs: prefetching applies without worker processes only.
    configs = [(w, pf) for w in (int(v) for v in args.workers.split(",")) for pf in (prefetch if w == 0 else [0])]
    jobs = [("clip", m) for m in args.models.split(",") if m] + [("dino", m) for m in args.dino.split(",") if m]
    flags = cpu_flags()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data)
        source = (
            f"CIFAR-10 images from {data}"
            if data.is_dir()
            else "generated JPEGs of " + ", ".join(f"{w}x{h}" for w, h in SYNTH_SIZES) + " px (tests/synth.py)"
        )
        files = cifar_files(data, args.images) if data.is_dir() else synth_files(Path(tmp) / "imgs", args.images)
        weights = f"pretrained {args.pretrained}" if args.pretrained else "random init (same seed for fp32 and auto)"
        print(
            f"ran: {len(files)} {source}; models {', '.join(f'{k}:{m}' for k, m in jobs)}, {weights}; batch "
            f"{args.batch_size}, precision {args.precision}, device {args.device}; torch {torch.__version__}, "
            f"threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {'yes' if native_bf16(flags) else 'no'} "
            f"({' '.join(sorted(f for f in flags if 'bf16' in f)) or 'no bf16 flag'}), load average "
            f"{os.getloadavg()[0]:.2f}",
            flush=True,
        )
        rows, comparisons = [], []
        for kind, name in jobs:
            pre = args.pretrained if kind == "clip" else None
            if args.precision == "auto":
                ref = load(kind, name, pre, args.device, "fp32")
                probe_project = make_project(Path(tmp) / f"{kind}-{name}-probe", files[:16])
                model, choice = choose_encoder(probe_project, ref, "auto")
                probe_project.close()
            else:
                ref, model = None, load(kind, name, pre, args.device, args.precision)
                choice = {"precision": model.precision, "reason": "asked for", "probe": None}
            k = min(args.bare_images, len(files))
            tensors = torch.stack([model.preprocess(load_rgb(str(p))) for p in files[:k]])
            if ref is not None:
                cos = min_cosine(
                    torch.cat([ref.encode_images(tensors[i : i + 64]) for i in range(0, k, 64)]),
                    torch.cat([model.encode_images(tensors[i : i + 64]) for i in range(0, k, 64)]),
                )
                fp32_ips = max(bare_forward(ref, tensors, args.batch_size) for _ in range(max(1, args.rounds)))
            bares: list[float] = []
            results: dict[tuple[int, int], list[dict]] = {c: [] for c in configs}
            for rnd in range(args.rounds):
                bares.append(bare_forward(model, tensors, args.batch_size))
                print(f"  {kind}:{name} round {rnd + 1}: bare {model.precision} {bares[-1]:.1f} img/s", flush=True)
                for w, pf in configs:
                    root = Path(tmp) / f"{kind}-{name}-w{w}-p{pf}-r{rnd}"
                    r = pipeline(model, root, files, args.batch_size, w, pf)
                    before = bares[-1]
                    bares.append(bare_forward(model, tensors, args.batch_size))
                    # The bare forwards just before and after this run: the machine's speed drifts (shared CPUs).
                    r["ratio"] = r["ips"] / ((before + bares[-1]) / 2)
                    results[(w, pf)].append(r)
                    print(
                        f"  {kind}:{name} round {rnd + 1} workers={w} prefetch={pf}: pipeline {r['ips']:.1f} img/s, "
                        f"bare after {bares[-1]:.1f}: pipeline/bare {r['ratio']:.2f}, forward "
                        f"{100 * r['fwd_share']:.1f}% of it",
                        flush=True,
                    )
            if ref is not None:
                fp32_ips = max(fp32_ips, bare_forward(ref, tensors, args.batch_size))
                comparisons.append((f"{kind}:{name}", choice, fp32_ips, max(bares), cos))
                print(f"  {kind}:{name}: auto = {model.precision} ({choice['reason']})", flush=True)
            del tensors, ref
            bare = max(bares)
            for w, pf in configs:
                best = max(results[(w, pf)], key=lambda r: r["ips"])
                share = max(r["fwd_share"] for r in results[(w, pf)])
                ratios = sorted(r["ratio"] for r in results[(w, pf)])
                rows.append(
                    (
                        f"{kind}:{name}",
                        model.precision,
                        model.image_size,
                        f"{w}/{pf}",
                        bare,
                        best["ips"],
                        ratios[len(ratios) // 2],
                        share,
                        best["rss_growth"],
                    )
                )
    print()
    if comparisons:
        print(f"{'model':<28}{'auto':>6}{'fp32 img/s':>12}{'auto img/s':>12}{'auto/fp32':>11}{'min cosine':>12}")
        for name, choice, fp32_ips, auto_ips, cos in comparisons:
            print(
                f"{name:<28}{choice['precision']:>6}{fp32_ips:>12.1f}{auto_ips:>12.1f}{auto_ips / fp32_ips:>11.2f}"
                f"{cos:>12.5f}"
            )
        print("auto/fp32: bare forward of the auto encoder / fp32, same weights; min cosine over the bare images")
        print()
    print(
        f"{'model':<28}{'prec':>6}{'px':>5}{'wk/pref':>9}{'bare img/s':>12}{'pipeline img/s':>16}"
        f"{'pipe/bare':>10}"
        f"{'fwd share':>11}{'RSS growth N/2..N':>20}"
    )
    for name, prec, px, w, bare, ips, ratio, share, growth in rows:
        print(
            f"{name:<28}{prec:>6}{px:>5}{w:>9}{bare:>12.1f}{ips:>16.1f}{ratio:>10.2f}{share:>11.2f}{growth:>17.1f} MB"
        )
    print(f"peak RSS {peak_rss_mb():.0f} MB (main process)")
    print(
        "bare, pipeline: best of the rounds; pipe/bare = median over rounds of pipeline / the mean of the bare "
        "forwards "
        "(same encoder) just before and after it; wk/pref = "
        "DataLoader workers / batches decoded ahead in a thread; fwd share = time in the forward / pipeline wall time"
    )


if __name__ == "__main__":
    main()
