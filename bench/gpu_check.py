"""Check the GPU fast paths end to end: feature precisions agree, AMP training runs and learns, a killed run resumes.

On a CUDA machine, on a small project of generated class images (tests/synth.py) it builds itself:

1. features: the same weights in fp32, bf16 and fp16 give the same image features (min cosine >= 0.999 to fp32),
   with the bare-forward throughput of each; then ``compute_features`` with ``--precision auto`` (CLIP + DINO)
   and a zero-shot run;
2. training: NoLA with ``--precision auto`` (bf16 autocast where the GPU has it) and LaFTer with fp16 autocast
   + GradScaler, ``--epochs`` each (default 2): each runs, its loss stays finite, and the loss falls (mean
   per-step loss of the last third of the steps below that of the first third); images/s per epoch;
3. resume: ``labeler train`` in a subprocess, killed (SIGKILL) after its first checkpoint; rerunning the same
   command continues that run (same run id, ``resumed_from_epoch`` >= 1);
4. LatteCLIP ``--recipe paper`` (preset ``full``: both towers, AMP, gradient checkpointing on a GPU, AdamW
   (0.9, 0.98), warmup + cosine) for one epoch on captions written from the folder names (no LMM here): it runs,
   its loss is finite, the text tower's weights moved, the prototypes stay unit-norm; seconds and peak memory;
5. CDUL with a fine-tuned backbone for one epoch on a multi-label project of the same images (the paper recipe's
   ResNet-101 on a GPU, started from a random state dict file; the CLIP tower on the CPU dry run): it runs, its
   loss is finite, the backbone's weights moved; seconds, images/s and peak memory;

then peak GPU memory (``torch.cuda.max_memory_allocated``; peak RSS on CPU). Exit status 0 when every check
passed, 1 otherwise. Without CUDA it prints ``no CUDA device: skipped`` and exits 0; ``--cpu`` dry-runs the
same steps on the CPU (fp16 is skipped there: it needs a GPU; LaFTer runs in auto), which is how it is tested
without a GPU.

Models: ``tiny-random`` CLIP and DINO by default (no downloads); ``--clip ViT-B-32 --pretrained TAG`` and
``--dino facebook/dinov2-small`` for real weights (they must be cached: nothing is downloaded here).

Usage::

    python bench/gpu_check.py                       # on a GPU machine
    python bench/gpu_check.py --cpu --images 40     # dry run on the CPU
    python bench/gpu_check.py --clip ViT-B-32 --pretrained laion2b_s34b_b79k --dino facebook/dinov2-small
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

COSINE_MIN = 0.999
CLASSES = ["airplane", "automobile", "bird", "cat"]


class Checks:
    """PASS/FAIL lines, collected for the exit status."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        print(f"  {'PASS' if ok else 'FAIL'}: {what}", flush=True)
        if not ok:
            self.failed.append(what)
        return ok


def build_project(root: Path, per_class: int):
    """A project of ``per_class`` generated 64 px JPEGs per class in :data:`CLASSES`."""
    from labeler.ingest import import_sources
    from labeler.project import Project
    from tests.synth import image_folder

    src = image_folder(root / "imgs", per_class, classes=CLASSES, size=(64, 64))
    project = Project.create(root / "proj", CLASSES)
    import_sources(project, [str(src)])
    return project


def bare_ips(model, x: torch.Tensor, batch: int, device: torch.device) -> float:
    model.encode_images(x[:batch])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        model.encode_images(x[i : i + batch])
    sync(device)
    return len(x) / (time.perf_counter() - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_features(project, args, device: torch.device, checks: Checks) -> dict:
    """fp32 / bf16 / fp16 features of the same weights agree; auto features and a zero-shot run."""
    from labeler.features import compute_features
    from labeler.ingest import load_rgb
    from labeler.methods import get_method
    from labeler.models import load_clip, load_dino
    from labeler.precision import choose_encoder, min_cosine

    out: dict = {}
    precisions = ["bf16", "fp16"] if device.type == "cuda" else ["bf16"]
    encoders = [("clip", load_clip(args.clip, args.pretrained, device=device, precision="fp32"))]
    if args.dino:
        encoders.append(("dino", load_dino(args.dino, device=device, precision="fp32")))
    for kind, ref in encoders:
        paths = [im["path"] for im in project.images()]
        x = torch.stack([ref.preprocess(load_rgb(p)) for p in paths])
        f32 = ref.encode_images(x)
        row = {"fp32": {"images_per_s": round(bare_ips(ref, x, args.batch_size, device), 1)}}
        for prec in precisions:
            low = ref.converted(prec)
            cos = min_cosine(f32, low.encode_images(x))
            row[prec] = {
                "cosine_min": round(cos, 6),
                "images_per_s": round(bare_ips(low, x, args.batch_size, device), 1),
            }
            checks.check(cos >= COSINE_MIN, f"{kind} {ref.name} {prec} features match fp32 (min cosine {cos:.5f})")
            del low
        print(
            f"  {kind} {ref.name} bare forward img/s: " + ", ".join(f"{p} {r['images_per_s']}" for p, r in row.items()),
            flush=True,
        )
        model, choice = choose_encoder(project, ref, "auto")
        res = compute_features(project, model, batch_size=args.batch_size)
        row["auto"] = {
            "precision": model.precision,
            "reason": choice["reason"],
            "pipeline_images_per_s": res["images_per_s"],
        }
        checks.check(
            res["computed"] == len(paths) and res["failed"] == 0,
            f"{kind} features with --precision auto ({model.precision}: {choice['reason']}): "
            f"{res['computed']} images, {res['images_per_s']} img/s",
        )
        out[kind] = row
        del ref, model, f32, x
    zs = get_method("zeroshot")
    result = zs.run(project, zs.params_from({"device": str(device)}))
    checks.check(result.metrics["n"] == project.image_count(), f"zero-shot labeled {result.metrics['n']} images")
    return out


def step_losses(messages: list[str]) -> list[float]:
    """Per-step losses from the progress messages (``epoch E/N loss M``: M is epoch E's running mean so far).

    Batches are (nearly) equal, so step k's loss is ``k * M_k - (k - 1) * M_(k-1)`` (the messages round M to
    4 decimals: good enough to compare thirds of a run).
    """
    losses: list[float] = []
    epoch, k, prev = None, 0, 0.0
    for m in messages:
        hit = re.match(r"epoch (\d+)/\d+ loss (\S+)$", m)
        if not hit:
            continue
        if hit.group(1) != epoch:
            epoch, k, prev = hit.group(1), 0, 0.0
        mean = float(hit.group(2))
        k += 1
        losses.append(k * mean - (k - 1) * prev)
        prev = mean
    return losses


def smoothing_floor(classes: int, eps: float) -> float:
    """The smallest label-smoothed cross-entropy: the entropy of (1 - eps + eps/C, eps/C, ...)."""
    hi, lo = 1 - eps + eps / classes, eps / classes
    return -(hi * math.log(hi) + (classes - 1) * lo * math.log(lo)) if eps > 0 else 0.0


def check_training(project, args, device: torch.device, checks: Checks) -> dict:
    """One short NoLA and one LaFTer run with AMP: they run, the loss is finite and falls."""
    from labeler.jobs import get_run
    from labeler.methods import get_method
    from labeler.train import train

    out = {}
    lafter_precision = "fp16" if device.type == "cuda" else "auto"
    for method, precision in (("nola", "auto"), ("lafter", lafter_precision)):
        if method == "nola" and not args.dino:
            print("  nola skipped: it needs DINO features (--dino)", flush=True)
            continue
        options = {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "tokens": 4,
            "device": str(device),
            "precision": precision,
            "patience": 1000,
        }
        messages: list[str] = []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        res = train(
            project,
            method,
            get_method(method).params_from(options),
            resume=None,
            on_progress=lambda d, t, m, _seen=messages: _seen.append(m),
        )
        seconds = time.perf_counter() - t0
        epochs = res.metrics.get("epochs", [])
        losses = step_losses(messages)
        third = max(1, len(losses) // 3)
        first, last = sum(losses[:third]) / third, sum(losses[-third:]) / third
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        out[method] = {
            "amp": res.metrics.get("amp"),
            "epochs": [{k: e.get(k) for k in ("epoch", "loss", "images_per_s", "seconds")} for e in epochs],
            "steps": len(losses),
            "loss_first_third": round(first, 4),
            "loss_last_third": round(last, 4),
            "seconds": round(seconds, 1),
            "peak_gpu_mb": None if peak is None else round(peak, 1),
        }
        print(f"  {method}: {json.dumps(out[method])}", flush=True)
        checks.check(
            len(epochs) == args.epochs, f"{method} ran {len(epochs)} epoch(s) with amp {res.metrics.get('amp')}"
        )
        checks.check(bool(losses) and all(math.isfinite(v) for v in losses), f"{method} loss finite")
        # With label smoothing the loss cannot go below the entropy of the smoothed targets: a run that starts
        # there (tiny random models and easy targets) has nothing left to fall.
        floor = smoothing_floor(len(CLASSES), float(get_run(project, res.run_id)["params"].get("label_smoothing", 0.1)))
        out[method]["loss_floor"] = round(floor, 4)
        checks.check(
            last < first or last - floor < 0.05,
            f"{method} loss falls ({first:.4f} over the first third of steps, {last:.4f} over the last; "
            f"floor {floor:.4f})",
        )
    return out


def check_resume(project, args, device: torch.device, checks: Checks) -> dict:
    """``labeler train`` killed after its first checkpoint; the same command again continues that run."""
    from labeler.jobs import JobCancelled, get_run, list_runs, request_cancel
    from labeler.methods import get_method
    from labeler.train import train

    method = "nola" if args.dino else "lafter"
    options = {"epochs": 200, "batch_size": args.batch_size, "tokens": 4, "patience": 1000, "precision": "auto"}
    cmd = [
        sys.executable,
        "-m",
        "labeler",
        "train",
        str(project.root),
        "--method",
        method,
        "--no-label",
        "--quiet",
        "--device",
        str(device),
    ]
    cmd += [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    before = {r["id"] for r in list_runs(project, kind="train")}
    child = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = None
    try:
        deadline = time.time() + args.timeout
        while time.time() < deadline and child.poll() is None:
            runs = [r for r in list_runs(project, kind="train") if r["id"] not in before]
            if runs and (project.runs_dir / str(runs[0]["id"]) / "checkpoint.pt").exists():
                run = runs[0]
                break
            time.sleep(0.2)
        if run is not None:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
        _, err = child.communicate()
    if not checks.check(run is not None, f"{method} subprocess reached its first checkpoint"):
        print(err[-2000:], flush=True)
        return {}
    killed = get_run(project, run["id"])
    done = len(killed["metrics"].get("epochs", []))
    checks.check(
        killed["status"] == "interrupted" and done >= 1,
        f"killed run {run['id']} reads interrupted after {done} epoch(s)",
    )

    def stop_after_one_more_epoch(d, t, message):
        if message.startswith("epoch ") and " done" in message:
            request_cancel(project, run["id"])

    try:
        train(
            project,
            method,
            get_method(method).params_from({**options, "device": str(device)}),
            on_progress=stop_after_one_more_epoch,
        )
    except JobCancelled:
        pass
    again = get_run(project, run["id"])
    new = [r for r in list_runs(project, kind="train") if r["id"] not in before and r["id"] != run["id"]]
    resumed_from = again["metrics"].get("resumed_from_epoch")
    checks.check(
        not new and resumed_from is not None and resumed_from >= done >= 1,
        f"the rerun continued run {run['id']} from epoch {resumed_from} (no new run)",
    )
    return {"run": run["id"], "killed_after_epochs": done, "resumed_from_epoch": resumed_from}


def write_captions(project) -> int:
    """A caption and a group description per image from its folder name (stands in for an LMM); returns the count."""
    from store import now

    rows = []
    for im in project.images():
        c = im.get("folder_label") or Path(im["path"]).parent.name
        rows.append(
            (im["id"], "image", None, f"a photo showing a {c}, seen up close", "bench", "bench", "bench", now())
        )
        rows.append((im["id"], "group", c, f"several pictures of a {c}", "bench", "bench", "bench", now()))
    with project.db.conn:
        project.db.execute("delete from captions")
        project.db.conn.executemany(
            "insert into captions (image_id, kind, group_key, text, backend, model, prompt, created_at) "
            "values (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return len(rows) // 2


def check_latteclip(project, args, device: torch.device, checks: Checks) -> dict:
    """One epoch of LatteCLIP with ``--recipe paper`` (both towers): it runs, stays finite, moves the text tower."""
    from labeler.methods import get_method
    from labeler.models import load_clip
    from labeler.train import train
    from labeler.train.loop import CHECKPOINT, load
    from labeler.train.runs import run_dir

    n = write_captions(project)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    options = {"recipe": "paper", "epochs": 1, "device": str(device), "patience": 1000}
    t0 = time.perf_counter()
    res = train(project, "latteclip", get_method("latteclip").params_from(options), resume=None)
    seconds = time.perf_counter() - t0
    epochs = res.metrics.get("epochs", [])
    setup = res.metrics.get("setup", {})
    state = load(run_dir(project, res.run_id) / CHECKPOINT)["trainable"]
    base = load_clip(args.clip, args.pretrained, device="cpu", precision="fp32").model
    moved = float((state["clip.token_embedding.weight"] - base.token_embedding.weight.detach()).abs().max())
    protos = state["__prototypes__"]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    out = {
        "captioned": n,
        "amp": res.metrics.get("amp"),
        "preset": setup.get("preset"),
        "trainable_parameters": setup.get("trainable_parameters"),
        "epochs": [{k: e.get(k) for k in ("epoch", "loss", "images_per_s", "seconds")} for e in epochs],
        "text_tower_max_change": moved,
        "seconds": round(seconds, 1),
        "peak_gpu_mb": None if peak is None else round(peak, 1),
    }
    print(f"  latteclip: {json.dumps(out)}", flush=True)
    checks.check(len(epochs) == 1 and setup.get("preset") == "full", "latteclip --recipe paper ran 1 epoch (full)")
    checks.check(all(math.isfinite(e["loss"]) for e in epochs), "latteclip loss finite")
    checks.check(moved > 0, f"latteclip text tower trained (max weight change {moved:.3g})")
    checks.check(bool(torch.allclose(protos.norm(dim=1), torch.ones(len(protos)), atol=1e-3)), "prototypes unit-norm")
    return out


def check_cdul(root: Path, args, device: torch.device, checks: Checks) -> dict:
    """One epoch of CDUL with a fine-tuned backbone on a multi-label project of the same generated images.

    On a GPU the paper recipe's ResNet-101 (AMP, batch 8, Adam 1e-5, softmax + KL), started from a state dict
    written here (random weights: the ImageNet file cannot be downloaded; same loading path); on the CPU dry run
    the CLIP image tower (``--cdul-backbone``). It runs, its loss is finite, the backbone's weights moved.
    """
    from labeler.features import compute_features, compute_snippet_features
    from labeler.ingest import import_sources
    from labeler.methods import get_method
    from labeler.models import load_clip
    from labeler.project import Project
    from labeler.train import train
    from labeler.train.loop import CHECKPOINT, load
    from labeler.train.runs import run_dir

    backbone = args.cdul_backbone or ("resnet101" if device.type == "cuda" else "clip")
    project = Project.create(root / "multi", CLASSES, multi_label=True)
    try:
        import_sources(project, [str(root / "imgs")])
        clip = load_clip(args.clip, args.pretrained, device=device, precision="fp32")
        compute_features(project, clip, batch_size=args.batch_size)
        compute_snippet_features(project, clip, batch_size=args.batch_size)
        options: dict = {"backbone": backbone, "epochs": 1, "device": str(device), "patience": 1000}
        start: dict[str, torch.Tensor] = {}
        if backbone == "resnet101":
            from torchvision.models import resnet101

            weights = root / "resnet101-random.pth"
            state = resnet101(weights=None).state_dict()
            torch.save(state, weights)
            start = {f"backbone.{k}": v for k, v in state.items() if k.startswith("conv1.")}
            options.update(recipe="paper", backbone_weights=str(weights))
        else:
            start = {f"backbone.visual.{k}": v.detach().cpu() for k, v in clip.model.visual.named_parameters()}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        res = train(project, "cdul", get_method("cdul").params_from(options), resume=None)
        seconds = time.perf_counter() - t0
        epochs = res.metrics.get("epochs", [])
        state = load(run_dir(project, res.run_id) / CHECKPOINT)["trainable"]
        moved = max(float((state[k] - v).abs().max()) for k, v in start.items() if k in state)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        run_params = get_method("cdul").resolve(project, get_method("cdul").params_from(options))
        out = {
            "backbone": backbone,
            "images": len(project.images()),
            "amp": res.metrics.get("amp"),
            "batch_size": run_params["batch_size"],
            "lr": run_params["lr"],
            "epochs": [{k: e.get(k) for k in ("epoch", "loss", "images_per_s", "seconds")} for e in epochs],
            "backbone_max_change": moved,
            "seconds": round(seconds, 1),
            "peak_gpu_mb": None if peak is None else round(peak, 1),
        }
        print(f"  cdul: {json.dumps(out)}", flush=True)
        checks.check(len(epochs) == 1, f"cdul --backbone {backbone} ran 1 epoch")
        checks.check(all(math.isfinite(e["loss"]) for e in epochs), "cdul loss finite")
        checks.check(moved > 0, f"cdul {backbone} backbone trained (max weight change {moved:.3g})")
        return out
    finally:
        project.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="dry-run the same steps on the CPU (no CUDA needed)")
    ap.add_argument("--clip", default="tiny-random", help="CLIP model (default tiny-random)")
    ap.add_argument("--pretrained", default=None, help="open_clip pretrained tag or checkpoint file for --clip")
    ap.add_argument("--dino", default="tiny-random", help="DINO model (default tiny-random; '' for none: no NoLA)")
    ap.add_argument("--images", type=int, default=64, help="generated images in the project (default 64)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of each training run (default 2)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=300, help="seconds to wait for the subprocess's first checkpoint")
    ap.add_argument(
        "--cdul-backbone",
        choices=["resnet101", "clip"],
        help="CDUL's fine-tuned backbone (default: resnet101, the paper recipe, on a GPU; clip on the CPU dry run)",
    )
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)

    if torch.cuda.is_available() and not args.cpu:
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(device)
    elif args.cpu:
        device, name = torch.device("cpu"), f"CPU ({torch.backends.cpu.get_cpu_capability()})"
    else:
        print("no CUDA device: skipped (pass --cpu to dry-run the same steps on the CPU)")
        return 0
    checks = Checks()
    t0 = time.perf_counter()
    report: dict = {
        "device": name,
        "torch": torch.__version__,
        "clip": args.clip,
        "pretrained": args.pretrained,
        "dino": args.dino,
        "images": args.images,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(
        f"gpu_check on {name}: torch {torch.__version__}, CLIP {args.clip} ({args.pretrained or 'no tag'}), "
        f"DINO {args.dino or 'none'}, {args.images} generated images",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        project = build_project(Path(tmp), -(-args.images // len(CLASSES)))
        try:
            print("features", flush=True)
            report["features"] = check_features(project, args, device, checks)
            print("training", flush=True)
            report["training"] = check_training(project, args, device, checks)
            print("resume", flush=True)
            report["resume"] = check_resume(project, args, device, checks)
            print("latteclip", flush=True)
            report["latteclip"] = check_latteclip(project, args, device, checks)
            print("cdul", flush=True)
            report["cdul"] = check_cdul(Path(tmp), args, device, checks)
        finally:
            project.close()
    if device.type == "cuda":
        report["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["failed"] = checks.failed
    print(
        f"peak GPU memory {report.get('peak_gpu_mb', 'n/a')} MB, peak RSS {report['peak_rss_mb']} MB, "
        f"{report['seconds']} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print("all checks passed" if not checks.failed else f"{len(checks.failed)} check(s) failed: {checks.failed}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
