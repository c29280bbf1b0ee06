"""Benchmark CDUL's fine-tuned backbone (``--backbone resnet101 | clip``): the full training step vs a bare step.

In one process, on a fresh multi-label project of N generated 2×2 mosaics (tiny-random CLIP features and 3×3
snippets for the pseudo-labels; nothing downloaded):

(a) full: :func:`labeler.train.train` with ``--method cdul --backbone B`` for ``--epochs`` epochs — DataLoader
    decode + the backbone's input transform + forward/backward of the network + the soft-target loss + the
    refinement of the batch's pseudo-labels + AdamW + ``job.progress`` (the cancel check). Throughput: images/s of
    the last epoch's training loop (its held-out evaluation and checkpoint excluded; the first epoch warms up);
(b) bare: the same network on one preprocessed batch held in memory: forward + BCE + backward + AdamW step.

The ResNet-101 starts from a random state dict written to a temp file (the ImageNet file is not downloadable
here; the speed is the same). The last line is the full/bare ratio.

Usage::

    python bench/cdul_net.py --backbone resnet101 --images 48 --batch-size 8 --epochs 2
    python bench/cdul_net.py --backbone clip --clip ViT-B-32 --images 48
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

CLASSES = ["cat", "dog", "ship", "truck"]


def make_project(root: Path, n: int, clip_name: str):
    """A multi-label project of ``n`` 2×2 mosaics (64 px cells) with CLIP + snippet features of ``clip_name``."""
    from labeler.features import compute_features, compute_snippet_features
    from labeler.ingest import import_sources
    from labeler.models import load_clip
    from labeler.project import Project
    from tests.test_cdul_train import mosaics

    mosaics(root / "imgs", n, classes=CLASSES, cell=64)
    project = Project.create(root / "proj", CLASSES, multi_label=True)
    import_sources(project, [str(root / "imgs")])
    clip = load_clip(clip_name, None, device="cpu", precision="fp32")
    compute_features(project, clip)
    compute_snippet_features(project, clip)
    return project


def bare(net, transform, paths: list[str], batch: int, steps: int, device: torch.device) -> float:
    """images/s of forward + BCE + backward + AdamW on one in-memory batch of the same network."""
    from labeler.ingest import load_rgb

    net = net.to(device).train()
    x = torch.stack([transform(load_rgb(p)) for p in paths[:batch]]).to(device)
    y = torch.rand(len(x), len(CLASSES), device=device)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.0)
    amp = torch.bfloat16 if device.type == "cuda" else None

    def step():
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - t0)


def main() -> None:
    from labeler.device import resolve_device
    from labeler.methods import get_method
    from labeler.models import load_clip
    from labeler.train import train
    from labeler.train.cdul_net import build_net

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", choices=["resnet101", "clip"], default="resnet101")
    ap.add_argument("--clip", default="tiny-random", help="the project's CLIP (the clip backbone), random init")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--bare-steps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {os.cpu_count()}, device {device}, "
        f"{args.images} mosaics, backbone {args.backbone}, batch {args.batch_size}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp), args.images, args.clip)
        options: dict = {
            "backbone": args.backbone,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "device": str(device),
            "workers": args.workers,
            "patience": 1000,
            "refine_warmup": 0,
            "refine_every": 1,
        }
        clip = None
        if args.backbone == "resnet101":
            from torchvision.models import resnet101

            weights = Path(tmp) / "resnet101-random.pth"
            torch.save(resnet101(weights=None).state_dict(), weights)
            options["backbone_weights"] = str(weights)
        else:
            clip = load_clip(args.clip, None, device=device, precision="fp32")
        res = train(project, "cdul", get_method("cdul").params_from(options), resume=None)
        last = res.metrics["epochs"][-1]
        net, transform, _ = build_net(args.backbone, len(CLASSES), clip=clip, weights=options.get("backbone_weights"))
        paths = [im["path"] for im in project.images()]
        bare_ips = bare(net, transform, paths, args.batch_size, args.bare_steps, device)
        project.close()
    ratio = last["images_per_s"] / bare_ips
    print(
        f"{args.backbone}: {res.metrics['device']} ({res.metrics['amp']}); full CDUL step {last['images_per_s']:.1f} "
        f"img/s (epoch {last['epoch']}, {last['seconds']:.2f} s for {res.metrics['setup']['train']} images); bare "
        f"forward+backward {bare_ips:.1f} img/s"
    )
    print(f"ratio full/bare: {ratio:.2f}")


if __name__ == "__main__":
    main()
