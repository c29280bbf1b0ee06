"""CLI commands ``features`` (compute and cache image features) and ``label`` (pseudo-label with a method)."""

from __future__ import annotations

import argparse
import sys

from ._common import PROG, device_arg, emit, json_arg, open_project, progress, project_arg, sub


def clip_pretrained(name: str, pretrained: str | None) -> str | None:
    """The pretrained tag the CLI loads ``--clip NAME`` with: ``--pretrained``, else laion2b_s34b_b79k for an
    open_clip architecture (none for ``tiny-*`` and ``hf-hub:`` models); ``none`` or empty means random init."""
    if pretrained is None:
        pretrained = None if name.startswith("tiny-") or name.startswith("hf-hub:") else "laion2b_s34b_b79k"
    return None if pretrained in (None, "none", "") else pretrained


def feature_jobs(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    """``(kind, name, pretrained)`` for each encoder ``features`` runs (CLIP unless only ``--dino`` is given;
    always with ``--snippets``, whose crops go through the CLIP model)."""
    jobs: list[tuple[str, str, str | None]] = []
    if args.clip or not args.dino or getattr(args, "snippets", False):
        name = args.clip or "ViT-B-32"
        jobs.append(("clip", name, clip_pretrained(name, args.pretrained)))
    if args.dino:
        jobs.append(("dino", args.dino, None))
    return jobs


def features_text(results: list[dict]) -> str:
    """What ``features`` prints for the results of :func:`labeler.features.compute_features` (also ``run``)."""
    lines = []
    for r in results:
        line = f"{r['key']}: computed {r['computed']}, cached {r['cached']}, failed {r['failed']}"
        choice = r.get("precision_choice")
        if choice:
            line += f" ({r.get('precision', choice['precision'])}: {choice['reason']})"
        lines.append(line)
    return "\n".join(lines)


def label_text(result) -> str:
    """What ``label`` prints for a method's result (also ``run``)."""
    counts = result.metrics.get("class_counts", {})
    text = f"run {result.run_id}: labeled {result.metrics.get('n', 0)} images\n" + "\n".join(
        f"  {c}: {n}" for c, n in counts.items()
    )
    if result.metrics.get("quality"):  # CDUL: pseudo-label quality, global-only vs aggregated (vs refined)
        text += f"\npseudo-labels: {result.metrics['quality']}"
    return text


def cmd_features(args: argparse.Namespace) -> int:
    from ..models import check_encoder_available

    project = open_project(args)
    jobs = feature_jobs(args)
    for kind, name, pretrained in jobs:  # every model's weights, before the first one loads (offline: at once)
        check_encoder_available(kind, name, "auto" if pretrained is None and args.pretrained is None else pretrained)

    from ..features import compute_features
    from ..models import load_encoder
    from ..precision import choose_encoder

    snippets = getattr(args, "snippets", False)
    if snippets:
        from ..snippets import snippet_cost

        # said before anything runs: snippets cost grid² forwards per image on top of the whole image's one
        print(f"note: {snippet_cost(project.image_count(), args.grid)}", file=sys.stderr)
    results = []
    for kind, name, pretrained in jobs:
        loaded = "fp32" if args.precision == "auto" else args.precision
        model = load_encoder(kind, name, pretrained, device=args.device, precision=loaded)
        model, choice = choose_encoder(project, model, args.precision)
        bar = progress(args, f"{kind} features")
        try:
            res = compute_features(
                project, model, batch_size=args.batch_size, num_workers=args.workers, on_progress=bar
            )
        finally:
            bar and bar.close()
        results.append({**res, "precision_choice": choice})
        if snippets and kind == "clip":
            from ..features import compute_snippet_features

            bar = progress(args, f"snippets {args.grid}x{args.grid}")
            try:
                res = compute_snippet_features(
                    project,
                    model,
                    grid=args.grid,
                    batch_size=max(1, args.batch_size // (args.grid * args.grid)),
                    num_workers=args.workers,
                    on_progress=bar,
                )
            finally:
                bar and bar.close()
            results.append(res)
    emit(args, {"feature_sets": results}, features_text(results))
    return 0


def _number_or_name(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def cmd_label(args: argparse.Namespace) -> int:
    from ..methods import get_method

    if getattr(args, "run", None) is not None:  # relabel with a trained model (labeler/cli/train.py)
        from .train import cmd_label_run

        return cmd_label_run(args)
    project = open_project(args)
    method = get_method(args.method)
    options = {"device": args.device, "features": args.features}
    if args.templates:
        options["templates"] = args.templates.split("|") if "{" in args.templates else args.templates
    if args.threshold is not None:
        options["threshold"] = args.threshold
    if args.descriptions:
        options["descriptions"] = args.descriptions
    for name in ("grid", "lam", "label_threshold"):  # cdul-init's options (None: not given)
        options[name] = getattr(args, name, None)
    if getattr(args, "temperature", None) is not None:
        options["temperature"] = _number_or_name(args.temperature)
    params = method.params_from(options)
    bar = progress(args, f"label ({args.method})")
    try:
        result = method.run(project, params, on_progress=bar)
    finally:
        bar and bar.close()
    if args.descriptions and result.metrics.get("texts"):
        print(f"note: {result.metrics['texts']}", file=sys.stderr)
    emit(args, {"run_id": result.run_id, **result.metrics}, label_text(result))
    return 0


def register(subs) -> None:
    """Add ``features`` and ``label`` to the CLI's subparsers."""
    p = sub(
        subs,
        "features",
        cmd_features,
        "compute and cache CLIP (and DINO) image features",
        f"{PROG} features pets --clip ViT-B-32 --pretrained laion2b_s34b_b79k --dino facebook/dinov2-small\n"
        f"{PROG} features pets --clip ViT-B-32 --pretrained /models/open_clip_pytorch_model.bin\n"
        f"{PROG} features pets --clip tiny-random --dino tiny-random   # offline test models\n"
        f"{PROG} features pets --clip ViT-B-32 --snippets --grid 3   # + CDUL's 3x3 snippet features",
    )
    project_arg(p)
    p.add_argument("--clip", help="open_clip model name, hf-hub:ORG/REPO, or tiny-random (default ViT-B-32)")
    p.add_argument(
        "--pretrained",
        help="open_clip pretrained tag or local checkpoint file "
        "(default laion2b_s34b_b79k for ViT-B-32; 'none' for random init)",
    )
    p.add_argument("--dino", help="DINOv2 hub id (facebook/dinov2-small), local folder, or tiny-random")
    p.add_argument(
        "--snippets",
        action="store_true",
        help="also the CLIP features of each image's grid x grid snippets (CDUL: grid²+1 forwards per image)",
    )
    p.add_argument("--grid", type=int, default=3, help="snippets per side with --snippets (default 3: 9 crops)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="image decoding workers (default: by image count)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="model weights. auto (default): bf16 on a GPU with bf16 (fp16 on older GPUs); on a CPU with native "
        "bfloat16 (avx512_bf16/amx_bf16) bf16 once a one-time probe shows its features match fp32 (cosine >= "
        "0.999) and it is faster, else fp32. bf16 is slower than fp32 on CPUs without native bfloat16; "
        "fp16 needs a GPU",
    )
    device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    json_arg(p)

    p = sub(
        subs,
        "label",
        cmd_label,
        "pseudo-label every image with a method (a new run)",
        f"{PROG} label pets --method zeroshot\n{PROG} label pets --method zeroshot --templates openai\n"
        f"{PROG} label pets --method zeroshot --descriptions llm\n"
        f"{PROG} label scenes --method cdul-init --grid 3   # multi-label; after features --snippets",
    )
    project_arg(p)
    p.add_argument("--method", default="zeroshot", help="labeling method (see `methods`)")
    p.add_argument(
        "--templates", help="prompt template set: photo, simple (default), openai; or '|'-separated templates with {c}"
    )
    p.add_argument(
        "--descriptions",
        choices=["none", "llm", "both"],
        help="class texts: none = templates only, llm = descriptions only, both (default) = templates "
        "+ enabled descriptions",
    )
    p.add_argument("--features", help="CLIP feature-set key to use (default: the newest)")
    p.add_argument(
        "--threshold",
        type=float,
        help="zeroshot, multi-label: keep classes with p >= threshold * max p; cdul-init: the aggregation threshold "
        "(a class's snippet max where it reaches it, else the min; default 0: always the max)",
    )
    cdul = p.add_argument_group("cdul-init (multi-label; needs `features --snippets`)")
    cdul.add_argument("--grid", type=int, help="snippets per side (default 3)")
    cdul.add_argument(
        "--temperature",
        help="softmax temperature: clip (default: CLIP's logit_scale.exp(), 100), raw (the reproduction's "
        "ln(logit_scale) ≈ 4.6: a nearly flat softmax) or a number",
    )
    cdul.add_argument("--lam", type=float, help="λ, weight of |global − local| in the pseudo-label (default 0)")
    cdul.add_argument(
        "--label-threshold",
        type=float,
        help="classes whose pseudo-label reaches this are in an image's set (default 0.5; per-class thresholds "
        "set in the review win)",
    )
    p.add_argument("--run", type=int, help="relabel with the trained model of this train run (see `train`)")
    device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    json_arg(p)
