"""CLI command ``run``: init (or reuse) + import + features + label + export in one go, through
:func:`labeler.pipeline.run_pipeline`; it prints what ``import``, ``features``, ``label`` and ``export`` print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InvalidInputError
from ._common import PROG, TqdmProgress, classes_from, device_arg, sub
from .features import clip_pretrained, features_text, label_text
from .project import export_text, import_text


def cmd_run(args: argparse.Namespace) -> int:
    """init (or reuse) + import + features + label + export, in one go."""
    from ..pipeline import run_pipeline

    folder = Path(args.folder)
    if not folder.exists():
        raise InvalidInputError(f"{folder} does not exist: give a folder of images (or a zip)")
    names = classes_from(args)
    if not names:
        raise InvalidInputError("give the classes: --classes 'cat,dog,car' or --classes-file FILE")
    descs = {"import": ("import", "file"), "features": ("clip features", "img"), "label": (f"label ({args.method})",)}
    bars: dict[str, TqdmProgress] = {}

    def progress(step: str) -> TqdmProgress | None:
        if args.quiet or step not in descs:
            return None
        bars[step] = TqdmProgress(*descs[step])
        return bars[step]

    def on_step(step: str, res) -> None:
        bar = bars.pop(step, None)
        bar and bar.close()
        if step == "project" and res.classes_updated:
            print(f"note: class list of project {res.project.name!r} updated", file=sys.stderr)
        elif step == "import":
            print(import_text(res.imported))
        elif step == "features":
            print(features_text(res.features))
        elif step == "label":
            print(label_text(res.label))
        elif step == "export":
            print(export_text(res.export, args.format))

    clip = args.clip or "ViT-B-32"
    try:
        run_pipeline(
            folder,
            names,
            args.output,
            project=args.project,
            multi_label=args.multi_label,
            clip=clip,
            pretrained=clip_pretrained(clip, args.pretrained or None),
            method=args.method,
            format=args.format,
            device=args.device,
            progress=progress,
            on_step=on_step,
        )
    finally:
        for bar in bars.values():
            bar.close()
    return 0


def register(subs) -> None:
    """Add ``run`` to the CLI's subparsers."""
    p = sub(
        subs,
        "run",
        cmd_run,
        "one shot: init + import + features + label + export",
        f'{PROG} run ~/Pictures/pets --classes "cat,dog" -o labels.csv --clip tiny-random',
    )
    p.add_argument("folder", help="folder (or zip) of images")
    p.add_argument("--classes")
    p.add_argument("--classes-file")
    p.add_argument("--multi-label", action="store_true")
    p.add_argument("--project", help="project name or path (default: the folder's name)")
    p.add_argument("--clip", default="ViT-B-32")
    p.add_argument("--pretrained")
    p.add_argument("--method", default="zeroshot")
    p.add_argument("--format", default="csv")
    p.add_argument("-o", "--output", required=True)
    device_arg(p)
    p.add_argument("--quiet", action="store_true")
