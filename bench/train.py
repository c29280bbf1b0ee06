"""Benchmark a NoLA training step: the full step vs a bare forward + backward of the same trainable set.

For each CLIP model, in one process, on a fresh project of N CIFAR-10 images (CLIP features of that
model and tiny-random DINO features computed first; the teacher only reads cached DINO features):

(a) full NoLA step: :func:`labeler.train.train` for ``--epochs`` epochs — DataLoader decode + strong view
    (RandomResizedCrop, flip, jitter, perspective, blur) + teacher labels + verified-label override +
    forward/backward of the prompted student + AdamW + cosine schedule + ``job.progress`` (a database
    read for the cancel check every step). Throughput: images/s of the last epoch's training loop (the
    epoch's held-out evaluation and checkpoint excluded; the first epoch is warm-up);
(b) bare: the same student (same prompts, LayerNorms, head trainable) on one preprocessed batch held
    in memory: forward + cross-entropy + backward + AdamW step, nothing else.

The last line is the full/bare ratio of the last model.

Usage::

    python bench/train.py --models tiny-random,ViT-B-32 --images 64 --batch-size 16
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.features import cifar_files  # noqa: E402
from labeler.features import compute_features  # noqa: E402
from labeler.ingest import load_rgb  # noqa: E402
from labeler.models import load_clip, load_dino  # noqa: E402
from labeler.project import Project  # noqa: E402


def make_project(root: Path, files: list[Path], clip_name: str, device: str) -> Project:
    classes = sorted({f.parent.name for f in files})
    project = Project.create(root / "proj", classes)
    src = root / "imgs"
    for f in files:
        (src / f.parent.name).mkdir(parents=True, exist_ok=True)
        (src / f.parent.name / f.name).symlink_to(f)
    from labeler.ingest import import_sources

    import_sources(project, [str(src)])
    compute_features(project, load_clip(clip_name, None, device=device), batch_size=64)
    compute_features(project, load_dino("tiny-random", device=device), batch_size=64)
    return project


def bare(clip_name: str, files: list[Path], batch: int, tokens: int, steps: int, device: str) -> float:
    from labeler.train.prompt import student_from_clip

    clip = load_clip(clip_name, None, device=device)
    classes = len({f.parent.name for f in files})
    student = student_from_clip(clip, classes, tokens).to(clip.device)
    x = torch.stack([clip.preprocess(load_rgb(str(f))) for f in files[:batch]]).to(clip.device)
    y = torch.arange(batch, device=clip.device) % classes
    opt = torch.optim.AdamW([p for _, p in student.named_trainable()], lr=0.004, weight_decay=0.01)
    amp = torch.bfloat16 if clip.device.type == "cuda" else None

    def step():
        with torch.autocast(clip.device.type, dtype=amp, enabled=amp is not None):
            loss = torch.nn.functional.cross_entropy(student(x).float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if clip.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if clip.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def data_only(project: Project, clip_name: str, batch: int, device: str) -> float:
    """images/s of the training DataLoader alone (decode + strong view), no model."""
    from labeler.train.views import Views, image_loader, strong_transform

    clip = load_clip(clip_name, None, device=device)
    paths = [im["path"] for im in project.images()]
    loader = image_loader(
        paths,
        Views(strong_transform(clip.model.visual.preprocess_cfg)),
        batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        device=clip.device,
        min_side=2 * clip.image_size,
    )
    t0 = time.perf_counter()
    n = sum(len(rows) for rows, _views, _bad in loader)
    return n / (time.perf_counter() - t0)


def full(project: Project, batch: int, tokens: int, epochs: int, device: str, workers: int | None) -> dict:
    from labeler.methods import get_method
    from labeler.train import train

    params = get_method("nola").params_from(
        {
            "epochs": epochs,
            "batch_size": batch,
            "tokens": tokens,
            "device": device,
            "workers": workers,
            "holdout": 0.1,
            "align_epochs": 10,
        }
    )
    res = train(project, "nola", params, resume=None)
    return res.metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny-random,ViT-B-32", help="CLIP models, random init")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--bare-steps", type=int, default=4)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10-test"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    files = cifar_files(Path(args.data), args.images)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
        f"{args.images} CIFAR images, batch {args.batch_size}, {args.tokens} prompt tokens"
    )
    ratio = None
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            project = make_project(Path(tmp), files, name, args.device)
            prep = time.perf_counter() - t0
            metrics = full(project, args.batch_size, args.tokens, args.epochs, args.device, args.workers)
            last = metrics["epochs"][-1]
            # Bare before and after the data-only pass; the best counts (the machine may be shared).
            bare_ips = bare(name, files, args.batch_size, args.tokens, args.bare_steps, args.device)
            data_ips = data_only(project, name, args.batch_size, args.device)
            bare_ips = max(bare_ips, bare(name, files, args.batch_size, args.tokens, args.bare_steps, args.device))
            ratio = last["images_per_s"] / bare_ips
            print(
                f"{name}: device {metrics['device']} ({metrics['amp']}), features {prep:.1f} s; "
                f"full NoLA step {last['images_per_s']:.1f} img/s (epoch {last['epoch']}, "
                f"{last['seconds']:.2f} s for {metrics['setup']['train']} images); "
                f"bare forward+backward {bare_ips:.1f} img/s; data only {data_ips:.1f} img/s; full/bare {ratio:.2f}"
            )
    print(f"ratio full/bare (last model): {ratio:.2f}")


if __name__ == "__main__":
    main()
