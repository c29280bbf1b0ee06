"""CLI commands for training: ``train``, ``label --run`` (relabel with a trained model), ``apply``."""

from __future__ import annotations

import argparse
import sys

from ..errors import InvalidInputError
from ..train.params import CPU_BATCH, CPU_EPOCHS, GPU_BATCH, GPU_EPOCHS, TrainParams
from ._common import PROG, emit, json_arg, open_project, progress, project_arg, sub

TRAINING_METHODS = ("nola", "lafter", "latteclip", "cdul")


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _comparison_lines(comp: dict | None) -> list[str]:
    if not comp:
        return []
    acc = comp.get("accuracy") or {}
    lines = [
        f"  vs run {comp['old_run']}: agreement {_pct(comp['agreement'])} on {comp['n_common']} images, "
        f"{comp['changed']} changed"
    ]
    if acc.get("old") is not None or acc.get("new") is not None:
        lines.append(
            f"  accuracy (folder ground truth): run {comp['old_run']} {_pct(acc.get('old'))} → "
            f"run {comp['new_run']} {_pct(acc.get('new'))}"
        )
    lines += [f"    {t['from']} → {t['to']}: {t['n']}" for t in comp.get("transitions", [])[:5]]
    return lines


def _label_lines(run_id: int, metrics: dict) -> list[str]:
    lines = [
        f"label run {run_id}: labeled {metrics.get('n', 0)} images with the trained model"
        + (f" ({metrics['failed']} unreadable)" if metrics.get("failed") else "")
        + " — now the active run"
    ]
    return lines + _comparison_lines(metrics.get("comparison"))


def _train_params(args: argparse.Namespace):
    """The method (default nola) and its params from the command line, for a new train run."""
    from ..methods import get_method

    method = get_method(args.method or "nola")
    if not hasattr(method, "load_predictor"):
        raise InvalidInputError(f"method {method.name!r} does not train; choose one of {', '.join(TRAINING_METHODS)}")
    options = {
        "recipe": args.recipe,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "tokens": args.tokens,
        "seed": args.seed,
        "device": args.device,
        "precision": args.precision,
        "workers": args.workers,
        "patience": args.patience,
        "descriptions": args.descriptions,
    }
    if args.templates:
        options["templates"] = args.templates.split("|") if "{" in args.templates else args.templates
    latte = {"groups": args.groups, "preset": args.preset, "alpha": args.alpha}
    if method.name == "latteclip":
        options.update(latte)
        options.pop("tokens")
        if args.tokens is not None:
            raise InvalidInputError("latteclip has no prompt tokens (--tokens is for nola and lafter)")
    else:
        given = sorted(f"--{k}" for k, v in latte.items() if v is not None)
        if given:
            raise InvalidInputError(f"{', '.join(given)} only apply to --method latteclip")
    for name in ("loss", "head_features", "backbone", "backbone_weights"):  # cdul's options (None: not given)
        options[name] = getattr(args, name, None)
    return method, method.params_from(options)


def _train_lines(run: dict, resumed: bool) -> list[str]:
    """What ``train`` prints about a finished train run: the summary, setup notes, one line per epoch."""
    m = run["metrics"]
    best = m.get("best_epoch")
    lines = [
        f"train run {run['id']} ({run['method']}, recipe {run['params'].get('recipe', 'labeler')})"
        f"{' resumed' if resumed else ''}: "
        f"{m.get('epochs_run', 0)} epochs on {m.get('device')} ({m.get('amp')}), best epoch "
        f"{'0 (the untrained model)' if best == 0 else best} by {m.get('selection')}"
        + (f" ({m['best_score']:.3f})" if isinstance(m.get("best_score"), float) else "")
        + (", stopped early" if m.get("stopped_early") else "")
    ]
    setup = m.get("setup", {})
    if m.get("selection_reason"):
        lines.append(f"  selection: {m['selection_reason']}")
    if setup.get("val_reason"):
        lines.append(f"  note: {setup['val_reason']}")
    if setup.get("preset"):
        caps = setup.get("captions", {})
        lines.append(
            f"  preset {setup['preset']}: trains {setup.get('trainable_parameters', 0):,} parameters "
            f"({setup.get('trains')}); per step: {setup.get('forwards_per_step')}"
        )
        lines.append(
            f"  captions ({caps.get('groups')} groups, ≈ {caps.get('lmm_calls_per_image')} LMM calls per image): "
            f"{caps.get('with_caption', 0)} of {setup.get('images', 0)} images captioned, "
            f"{caps.get('with_group_text', 0)} with a group description, {caps.get('label_text_only', 0)} on the "
            "label text only"
        )
    for note in setup.get("notes", []):
        lines.append(f"  note: {note}")
    if m.get("quality") or setup.get("quality"):  # CDUL: global-only vs aggregated (vs refined) pseudo-labels
        lines.append(f"  pseudo-labels: {m.get('quality') or setup['quality']}")
    for warning in [*setup.get("warnings", []), *m.get("warnings", [])]:
        lines.append(f"  warning: {warning}")
    untrained = m.get("untrained") or {}
    if untrained.get("score") is not None:
        lines.append(
            f"  epoch   0 (untrained): {untrained.get('metric')} {_pct(untrained['score'])}"
            + (" *" if best == 0 else "")
        )
    for e in m.get("epochs", []):
        lines.append(
            f"  epoch {e['epoch']:>3}: loss {e['loss']:.4f}, train agreement {_pct(e.get('train_agreement'))}, "
            f"held-out teacher agreement {_pct(e.get('teacher_agreement'))}, churn {_pct(e.get('churn'))}"
            + (f", val accuracy {_pct(e.get('val_accuracy'))}" if e.get("val_accuracy") is not None else "")
            + (" *" if e.get("selected") else "")
        )
    return lines


def _stopped_text(project, args: argparse.Namespace) -> str:
    """How to continue the train run a Ctrl-C or a cancel just stopped (rerunning with ``--fresh`` starts anew)."""
    from ..jobs import list_runs
    from ..train.runner import run_dir

    runs = [r for r in list_runs(project, kind="train") if r["status"] in ("cancelled", "interrupted")]
    if not runs:
        return "nothing was saved: run the command again"
    run = runs[0]
    if not (run_dir(project, run["id"]) / "setup.pt").exists():
        return f"run {run['id']} stopped before its setup was saved: run the command again to start anew"
    resume = f"`{PROG} train {args.project} --resume {run['id']}`"
    if args.fresh:
        return (
            f"run {run['id']} keeps its finished epochs: continue it with {resume} (rerunning with --fresh starts anew)"
        )
    return f"run {run['id']} keeps its finished epochs: rerun the same command (or {resume}) to continue it"


def _relabel_text(args: argparse.Namespace, train_run_id: int) -> str:
    """What to do after the relabel that follows training stopped (the training itself finished)."""
    return (
        f"train run {train_run_id} finished; label the images with its model: "
        f"`{PROG} label {args.project} --run {train_run_id}`"
    )


def cmd_train(args: argparse.Namespace) -> int:
    from ..errors import JobCancelled
    from ..jobs import get_run
    from ..train.apply import relabel
    from ..train.runner import train

    project = open_project(args)
    if args.resume is not None and args.fresh:
        raise InvalidInputError("--resume and --fresh exclude each other")
    bar = progress(args, "train", "batch")  # a training step is one batch
    try:
        if args.resume is not None:
            overrides = {
                "device": None if args.device == "auto" else args.device,
                "precision": args.precision,
                "workers": args.workers,
            }
            res = train(project, args.method, None, resume=args.resume, overrides=overrides, on_progress=bar)
        else:
            method, params = _train_params(args)
            res = train(project, method, params, resume=None if args.fresh else "auto", on_progress=bar)
    except KeyboardInterrupt:
        bar and bar.close()
        print(f"interrupted: {_stopped_text(project, args)}", file=sys.stderr)
        return 130
    except JobCancelled as exc:
        raise JobCancelled(f"{str(exc).split(';')[0]}; {_stopped_text(project, args)}") from None
    finally:
        bar and bar.close()
    label_result = None
    if not args.no_label:
        bar = progress(args, "label (trained model)", "img")
        try:
            label_result = relabel(project, res.run_id, device=args.device, on_progress=bar)
        except KeyboardInterrupt:
            bar and bar.close()
            print(f"interrupted: {_relabel_text(args, res.run_id)}", file=sys.stderr)
            return 130
        except JobCancelled as exc:
            raise JobCancelled(f"{str(exc).split(';')[0]}; {_relabel_text(args, res.run_id)}") from None
        finally:
            bar and bar.close()
    run = get_run(project, res.run_id)
    lines = _train_lines(run, res.resumed)
    data = {
        "train_run_id": run["id"],
        "method": run["method"],
        "params": run["params"],
        "metrics": run["metrics"],
        "resumed": res.resumed,
    }
    if label_result is not None:
        lines += _label_lines(label_result.run_id, label_result.metrics)
        data["label_run_id"] = label_result.run_id
        data["label"] = label_result.metrics
    emit(args, data, "\n".join(lines))
    return 0


def cmd_label_run(args: argparse.Namespace) -> int:
    """``label PROJECT --run RUN``: relabel every image with the trained model of a train run."""
    from ..train.apply import relabel

    project = open_project(args)
    bar = progress(args, f"label (run {args.run})")
    try:
        result = relabel(project, args.run, device=args.device, on_progress=bar)
    finally:
        bar and bar.close()
    emit(args, {"run_id": result.run_id, **result.metrics}, "\n".join(_label_lines(result.run_id, result.metrics)))
    return 0


def _set_line(row: dict) -> str:
    """``path<TAB>cat;dog<TAB>0.9100;0.7700``: a multi-label image's set and the scores of its labels."""
    scores = ";".join(f"{row['scores'][c]:.4f}" for c in row["labels"])
    return f"{row['path']}\t{';'.join(row['labels'])}\t{scores}"


def cmd_apply(args: argparse.Namespace) -> int:
    """Label image files and folders; a file that cannot be read is skipped and reported, not fatal."""
    from ..train.apply import apply_to_files

    res = apply_to_files(args.model, args.images, device=args.device, batch_size=args.batch_size)
    rows = [
        {"path": p, "label": res.classes[int(row.argmax())], "score": float(row.max())}
        for p, row in zip(res.paths, res.probs, strict=True)
    ]
    for r, row, labels in zip(rows, res.probs, res.labels, strict=False):  # multi-label: the set by threshold
        r["labels"] = labels
        r["scores"] = {c: float(v) for c, v in zip(res.classes, row, strict=True)}
    if args.json:
        data = {"classes": res.classes, "predictions": rows, "skipped": res.skipped}
        if res.multi_label:
            data.update(multi_label=True, thresholds=dict(zip(res.classes, res.thresholds or [], strict=True)))
        emit(args, data, "")
    else:
        if rows and res.multi_label:  # path, the ;-joined label set, the scores of those labels (same order)
            print("\n".join(_set_line(r) for r in rows))
        elif rows:
            print("\n".join(f"{r['path']}\t{r['label']}\t{r['score']:.4f}" for r in rows))
        for s in res.skipped:
            print(f"skipped {s['path']}: {s['reason']}", file=sys.stderr)
        if res.skipped:
            print(f"labeled {len(rows)} images, skipped {len(res.skipped)} (listed above)", file=sys.stderr)
    if not rows:
        print("error: no image could be labeled: give image files or folders of images", file=sys.stderr)
        return 2
    return 0


def register(subs) -> None:
    """Add ``train`` and ``apply`` to the CLI."""
    p = sub(
        subs,
        "train",
        cmd_train,
        "train a labeling model (NoLA, LaFTer, LatteCLIP; CDUL for multi-label), then relabel every image with it "
        "(a new, active run)",
        f"{PROG} train pets --method nola\n{PROG} train pets --method nola --epochs 10 --batch-size 64\n"
        f"{PROG} train pets --method lafter --recipe paper   # the official LaFTer settings\n"
        f"{PROG} caption pets --backend openai --model llava --base-url URL --groups   # LatteCLIP's captions\n"
        f"{PROG} train pets --method latteclip   # preset head on a CPU: a linear adapter on cached features\n"
        f"{PROG} train pets --method latteclip --recipe paper --device cuda   # the whole CLIP, official settings\n"
        f"{PROG} train tags --method cdul   # multi-label (after `features --snippets`): a head on cached features\n"
        f"{PROG} train tags --method cdul --recipe paper --device cuda   # the reproduction's fine-tuned ResNet-101\n"
        f"{PROG} train pets --method lafter --device cuda\n{PROG} train pets --resume 7   # continue run 7",
    )
    project_arg(p)
    p.add_argument(
        "--method",
        choices=TRAINING_METHODS,
        help="nola (default: CLIP + DINO), lafter (CLIP only), latteclip (CLIP + LMM captions: caption first) "
        "or cdul (multi-label; needs `features --snippets`)",
    )
    cdul = p.add_argument_group("cdul")
    cdul.add_argument("--loss", choices=["bce", "kl"], help="bce (labeler recipe: sigmoid + BCE) or kl (paper)")
    cdul.add_argument("--head-features", help="what the head reads: clip (default), dino, or a feature-set key")
    cdul.add_argument(
        "--backbone",
        choices=["head", "resnet101", "clip"],
        help="head (labeler recipe): a head on the cached features, minutes on a CPU; resnet101 (paper recipe): "
        "torchvision's ImageNet ResNet-101 fine-tuned end to end on the images (a GPU); clip: the project's CLIP "
        "image tower fine-tuned end to end",
    )
    cdul.add_argument(
        "--backbone-weights",
        metavar="PATH",
        help="resnet101: a local ImageNet ResNet-101 state dict (default: resnet101-63fe2227.pth or "
        "resnet101-cd907fc2.pth in $TORCH_HOME/hub/checkpoints; nothing is downloaded)",
    )
    p.add_argument(
        "--recipe",
        choices=["labeler", "paper"],
        help="labeler (default): our settings; paper: the official code's (constant lr, its batch, epochs, "
        "augmentations, text head, DINO v1 ViT-B/16 teacher for NoLA, a fine-tuned ResNet-101 for CDUL); explicit "
        "options below override either. "
        "Every difference: docs/methods.md",
    )
    p.add_argument(
        "--epochs",
        type=int,
        help=f"epochs (labeler: {GPU_EPOCHS} on a GPU, {CPU_EPOCHS} on CPU, latteclip head 30; paper: 50)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help=f"images per step (labeler: {GPU_BATCH} on a GPU, {CPU_BATCH} on CPU, latteclip head 256; paper: nola and "
        "latteclip 512, lafter 50)",
    )
    p.add_argument(
        "--lr",
        type=float,
        help="AdamW learning rate (default: nola 0.004, lafter 0.0005, latteclip by preset: head 1e-4 … paper 1e-7)",
    )
    p.add_argument("--tokens", type=int, help="prompt tokens (default: nola 16, lafter 50)")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--preset",
        choices=["head", "vision", "ln-last", "full"],
        help="latteclip: what trains — head (default on a CPU: a linear adapter on cached features, minutes), "
        "vision (the vision tower; default on a GPU), ln-last (LayerNorms + last blocks), full (both towers: "
        "--recipe paper's, a 24 GB+ GPU)",
    )
    p.add_argument(
        "--groups",
        choices=["shared", "per-image"],
        help="latteclip: group descriptions shared by each group of ~4 images (default, ≈ 1.25 LMM calls per "
        "image) or one per image as the official code (≈ 2 calls per image)",
    )
    p.add_argument("--alpha", type=float, help="latteclip: prototype smoothing of the targets (default 0.01)")
    p.add_argument(
        "--patience",
        type=int,
        help=f"epochs without improvement before stopping early (default {TrainParams.patience})",
    )
    p.add_argument("--templates", help="prompt template set (photo, simple, openai) or '|'-separated templates")
    p.add_argument("--descriptions", choices=["none", "llm", "both"], help="class texts, as for zero-shot")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto (default): bf16/fp16 autocast on a GPU; on a CPU with native bfloat16 bf16 autocast once "
        "`features` probed the CLIP model's bf16 features to match fp32, else fp32",
    )
    p.add_argument("--workers", type=int, help="image decoding workers (default: by image count)")
    p.add_argument("--resume", type=int, metavar="RUN", help="continue this interrupted or cancelled train run")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start a new run even if an interrupted run with the same options could be continued",
    )
    p.add_argument("--no-label", action="store_true", help="train only; relabel later with `label --run RUN`")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    json_arg(p)

    p = sub(
        subs,
        "apply",
        cmd_apply,
        "label new image files with an exported model (export --format model); a multi-label (CDUL) model prints "
        "each image's ;-joined label set (the classes reaching the thresholds saved in the file) and their scores",
        f"{PROG} apply model.pt new/1.jpg new/2.jpg --json\n{PROG} apply model.pt new/   # every image in the folder",
    )
    p.add_argument("model", help="model file written by `export PROJECT --format model -o model.pt`")
    p.add_argument(
        "images",
        nargs="+",
        help="image files, or folders (their image files by extension, recursively); a file that cannot be "
        "read is skipped and listed (--json: 'skipped'), the others are labeled; exit code 2 if none could be",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    json_arg(p)
