"""Command line: ``python -m labeler COMMAND PROJECT ...``. Thin: every command calls the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import InvalidInputError, LabelerError

PROG = "python -m labeler"


# --- progress --------------------------------------------------------------------------
class TqdmProgress:
    """A ProgressCallback that drives one tqdm bar on stderr (recreated when the total changes)."""

    def __init__(self, desc: str, unit: str = "img"):
        self.desc, self.unit, self.bar = desc, unit, None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        if self.bar is None or self.bar.total != total:
            self.close()
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        self.bar.n = done
        if message:
            self.bar.set_postfix_str(message, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _progress(args: argparse.Namespace, desc: str, unit: str = "img") -> TqdmProgress | None:
    return None if getattr(args, "quiet", False) else TqdmProgress(desc, unit)


def _emit(args: argparse.Namespace, data: dict, text: str) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str) if getattr(args, "json", False) else text)


def _open(args: argparse.Namespace):
    from .project import Project

    return Project.open(args.project)


def _classes_from(args: argparse.Namespace) -> list[str]:
    from .project import parse_class_list

    names: list[str] = []
    if args.classes:
        names += parse_class_list(args.classes)
    if args.classes_file:
        path = Path(args.classes_file)
        if not path.is_file():
            raise InvalidInputError(f"classes file {path} does not exist: give a text file with one class per line")
        names += [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    return names


# --- commands ----------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    from .project import Project

    names = _classes_from(args)
    if not names:
        raise InvalidInputError("give the classes: --classes 'cat,dog,car' or --classes-file FILE (one per line)")
    project = Project.create(args.project, names, multi_label=args.multi_label)
    kind = "multi-label" if project.multi_label else "single-label"
    print(f"created {kind} project {project.name!r} at {project.root} with {len(project.classes)} classes")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .ingest import import_sources

    project = _open(args)
    progress = _progress(args, "import", "file")
    try:
        report = import_sources(project, args.sources, on_progress=progress, copy=args.copy)
    finally:
        progress and progress.close()
    data = report.to_dict()
    lines = [f"added {report.added} images, {report.duplicates} already in the project, {len(report.skipped)} skipped"]
    if report.restored:
        lines.append(f"  {report.restored} images marked missing were found again at their new path")
    lines += [f"  skipped {s['path']}: {s['reason']}" for s in report.skipped[:20]]
    if len(report.skipped) > 20:
        lines.append(f"  ... and {len(report.skipped) - 20} more (see `status`)")
    _emit(args, data, "\n".join(lines))
    return 0


def _feature_jobs(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    jobs: list[tuple[str, str, str | None]] = []
    if args.clip or not args.dino:
        name = args.clip or "ViT-B-32"
        pretrained = args.pretrained
        if pretrained is None:
            pretrained = None if name.startswith("tiny-") or name.startswith("hf-hub:") else "laion2b_s34b_b79k"
        jobs.append(("clip", name, None if pretrained in (None, "none", "") else pretrained))
    if args.dino:
        jobs.append(("dino", args.dino, None))
    return jobs


def cmd_features(args: argparse.Namespace) -> int:
    from .features import compute_features
    from .models import load_encoder

    project = _open(args)
    results = []
    for kind, name, pretrained in _feature_jobs(args):
        model = load_encoder(kind, name, pretrained, device=args.device, precision=args.precision)
        progress = _progress(args, f"{kind} features")
        try:
            res = compute_features(
                project, model, batch_size=args.batch_size, num_workers=args.workers, on_progress=progress
            )
        finally:
            progress and progress.close()
        results.append(res)
    text = "\n".join(
        f"{r['key']}: computed {r['computed']}, cached {r['cached']}, failed {r['failed']}" for r in results
    )
    _emit(args, {"feature_sets": results}, text)
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from .methods import get_method

    if getattr(args, "run", None) is not None:  # relabel with a trained model (labeler/cli_train.py)
        from .cli_train import cmd_label_run

        return cmd_label_run(args)
    project = _open(args)
    method = get_method(args.method)
    options = {"device": args.device, "features": args.features}
    if args.templates:
        options["templates"] = args.templates.split("|") if "{" in args.templates else args.templates
    if args.threshold is not None:
        options["threshold"] = args.threshold
    if args.descriptions:
        options["descriptions"] = args.descriptions
    params = method.params_from(options)
    progress = _progress(args, f"label ({args.method})")
    try:
        result = method.run(project, params, on_progress=progress)
    finally:
        progress and progress.close()
    if args.descriptions and result.metrics.get("texts"):
        print(f"note: {result.metrics['texts']}", file=sys.stderr)
    counts = result.metrics.get("class_counts", {})
    text = f"run {result.run_id}: labeled {result.metrics.get('n', 0)} images\n" + "\n".join(
        f"  {c}: {n}" for c, n in counts.items()
    )
    _emit(args, {"run_id": result.run_id, **result.metrics}, text)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_report

    project = _open(args)
    options = {}
    if args.link:
        options["link"] = True
    if args.one_hot:
        options["one_hot"] = True
    rep = export_report(project, args.format, args.output, **options)
    if rep.format == "model":
        x = rep.extra
        print(
            f"wrote the {x.get('method')} model of train run {x.get('train_run')} (epoch {x.get('epoch')}, "
            f"{x.get('classes')} classes, base {x.get('base')}) to {rep.path}"
        )
        return 0
    print(
        f"wrote {args.format} export of {rep.n_images} images ({rep.n_labeled} labeled, {rep.n_unlabeled} unlabeled"
        + (f", {rep.n_missing} files missing" if rep.n_missing else "")
        + f") to {rep.path}"
    )
    return 0


def status_dict(project) -> dict:
    """Everything ``status --json`` prints (also used by the UI)."""
    from .jobs import list_runs
    from .labels import active_run, label_counts

    counts = label_counts(project)
    active = active_run(project)
    return {
        "project": project.name,
        "path": str(project.root),
        "multi_label": project.multi_label,
        "classes": project.classes,
        "images_ok": project.image_count("ok"),
        "images_missing": project.image_count("missing"),
        "images_excluded": project.image_count("excluded"),
        "images_skipped": project.skipped(),
        "labels": {k: counts[k] for k in ("human", "accepted", "pseudo", "unlabeled")},
        "per_class": counts.get("per_class", {}),
        "feature_sets": [
            {"key": s["key"], "kind": s["kind"], "dim": s["dim"], "count": project.features.count(s["id"])}
            for s in project.features.sets()
        ],
        "feature_repairs": project.feature_repairs(),
        "active_run": active["id"] if active else None,
        "runs": [
            {k: r.get(k) for k in ("id", "kind", "method", "status", "progress", "message", "error")}
            for r in list_runs(project)[:20]
        ],
    }


def cmd_status(args: argparse.Namespace) -> int:
    data = status_dict(_open(args))
    lab = data["labels"]
    lines = [
        f"project {data['project']} ({data['path']}), {'multi' if data['multi_label'] else 'single'}-label",
        f"classes ({len(data['classes'])}): {', '.join(data['classes'])}",
        f"images: {data['images_ok']} ok, {len(data['images_skipped'])} skipped, {data['images_missing']} missing, "
        f"{data['images_excluded']} excluded",
        f"labels: {lab['human']} human, {lab['accepted']} accepted, {lab['pseudo']} pseudo, "
        f"{lab['unlabeled']} unlabeled",
    ]
    lines += [f"features {s['key']}: {s['count']} vectors (dim {s['dim']})" for s in data["feature_sets"]]
    lines += [
        f"features {r['key']}: repaired on open — dropped {r['past_end']} rows past the end of the vector file "
        f"and {r['zeroed']} zeroed vectors; run `labeler features` to recompute those images"
        for r in data["feature_repairs"]
    ]
    lines += [
        f"run {r['id']}: {r['kind']} {r['method'] or ''} {r['status']} {100 * (r['progress'] or 0):.0f}%"
        + (f" — {r['error']}" if r["error"] else "")
        for r in data["runs"][:5]
    ]
    lines += [f"skipped {s['path']}: {s['reason']}" for s in data["images_skipped"][:20]]
    _emit(args, data, "\n".join(lines))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    res = evaluate(_open(args), run_id=args.run)
    lines = [
        f"accuracy {res['accuracy']:.4f} on {res['n']} labeled images with ground truth "
        f"({res['n_ground_truth']} have ground truth)"
    ]
    lines += [
        f"  {c:>20}: precision {m['precision']:.3f} recall {m['recall']:.3f} (n={m['support']})"
        for c, m in res["per_class"].items()
    ]
    _emit(args, res, "\n".join(lines))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .jobs import list_runs

    runs = list_runs(_open(args))
    text = "\n".join(
        f"{r['id']:>4} {r['kind']:<9} {r['method'] or '':<10} {r['status']:<11} {100 * (r['progress'] or 0):5.1f}%"
        + (f"  {r['error']}" if r["error"] else "")
        for r in runs
    )
    _emit(args, {"runs": runs}, text or "no runs yet")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    import sqlite_utils

    from .jobs import get_run, request_cancel

    project = _open(args)
    try:
        run = get_run(project, args.run)
    except sqlite_utils.db.NotFoundError:
        raise InvalidInputError(
            f"project {project.name!r} has no run {args.run}: list its runs with `{PROG} runs {args.project}`"
        ) from None
    request_cancel(project, args.run)
    print(f"asked run {args.run} ({run['kind']}, {run['status']}) to stop after its current batch")
    return 0


def cmd_undo(args: argparse.Namespace) -> int:
    from .history import history, undo

    project = _open(args)
    if args.list:
        entries = history(project, limit=args.limit)
        text = "\n".join(f"{e['id']:>4}  {e['action']}" for e in entries)
        _emit(args, {"history": entries}, text or "nothing to undo")
        return 0
    done = undo(project)
    _emit(args, {"undone": done}, f"undid: {done['action']}" if done else "nothing to undo")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .methods import list_methods

    methods = list_methods()
    text = "\n".join(f"{m['name']:<10} {'ready' if m['available'] else 'later'}  {m['summary']}" for m in methods)
    _emit(args, {"methods": methods}, text)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """init (or reuse) + import + features + label + export, in one go."""
    from .project import Project, resolve_project_path

    folder = Path(args.folder)
    if not folder.exists():
        raise InvalidInputError(f"{folder} does not exist: give a folder of images (or a zip)")
    names = _classes_from(args)
    if not names:
        raise InvalidInputError("give the classes: --classes 'cat,dog,car' or --classes-file FILE")
    project_name = args.project or (folder.resolve().stem or "images")
    root = resolve_project_path(project_name)
    project = Project.open_or_create(root, names, multi_label=args.multi_label)
    if project.classes != names:
        project.set_classes(names)
        print(f"note: class list of project {project.name!r} updated", file=sys.stderr)
    base = ["--quiet"] if args.quiet else []
    device = ["--device", args.device]
    steps: list[Sequence[str]] = [
        ["import", str(root), str(folder), *base],
        [
            "features",
            str(root),
            "--clip",
            args.clip,
            *(["--pretrained", args.pretrained] if args.pretrained else []),
            *device,
            *base,
        ],
        ["label", str(root), "--method", args.method, *device, *base],
        ["export", str(root), "--format", args.format, "-o", args.output],
    ]
    for argv in steps:
        code = main(argv)
        if code:
            return code
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .ui.app import launch

    launch(host=args.host, port=args.port)
    return 0


# --- parser -----------------------------------------------------------------------------
def _sub(subs, name: str, func: Callable, help: str, example: str) -> argparse.ArgumentParser:
    p = subs.add_parser(
        name,
        help=help,
        description=help,
        epilog="example:\n" + textwrap.indent(example, "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=func)
    return p


def _project_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", help="project name (under $LABELER_DATA_DIR) or folder path")


def _json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Labeler: label a folder of images from class names alone, review, export.",
        epilog=textwrap.dedent(
            f"""\
            a whole run, with tiny offline models:
              {PROG} init pets --classes "cat,dog"
              {PROG} import pets ~/Pictures/pets
              {PROG} features pets --clip tiny-random
              {PROG} label pets --method zeroshot
              {PROG} export pets --format csv -o labels.csv
            projects given by name live in $LABELER_DATA_DIR (now: {{data_dir}})"""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _sub(
        subs,
        "init",
        cmd_init,
        "create a project with its class names",
        f'{PROG} init pets --classes "cat,dog,car"\n{PROG} init ./birds --classes-file birds.txt',
    )
    _project_arg(p)
    p.add_argument("--classes", help="comma-separated class names (or one per line)")
    p.add_argument("--classes-file", help="text file with one class name per line")
    p.add_argument("--multi-label", action="store_true", help="an image may have several classes")

    p = _sub(
        subs,
        "import",
        cmd_import,
        "import images from folders (recursive), files and .zip archives",
        f"{PROG} import pets ~/Pictures/pets extra/cat1.jpg more.zip",
    )
    _project_arg(p)
    p.add_argument("sources", nargs="+", help="folders, image files or .zip archives")
    p.add_argument("--copy", action="store_true", help="copy files into the project instead of referencing them")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _json_arg(p)

    p = _sub(
        subs,
        "features",
        cmd_features,
        "compute and cache CLIP (and DINO) image features",
        f"{PROG} features pets --clip ViT-B-32 --pretrained laion2b_s34b_b79k --dino facebook/dinov2-small\n"
        f"{PROG} features pets --clip ViT-B-32 --pretrained /models/open_clip_pytorch_model.bin\n"
        f"{PROG} features pets --clip tiny-random --dino tiny-random   # offline test models",
    )
    _project_arg(p)
    p.add_argument("--clip", help="open_clip model name, hf-hub:ORG/REPO, or tiny-random (default ViT-B-32)")
    p.add_argument(
        "--pretrained",
        help="open_clip pretrained tag or local checkpoint file "
        "(default laion2b_s34b_b79k for ViT-B-32; 'none' for random init)",
    )
    p.add_argument("--dino", help="DINOv2 hub id (facebook/dinov2-small), local folder, or tiny-random")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="image decoding workers (default: by image count)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="model weights: fp32 (default); bf16 pays off only on a GPU or a CPU with native bfloat16 "
        "(AVX512-BF16/AMX); fp16 needs a GPU",
    )
    _device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _json_arg(p)

    p = _sub(
        subs,
        "label",
        cmd_label,
        "pseudo-label every image with a method (a new run)",
        f"{PROG} label pets --method zeroshot\n{PROG} label pets --method zeroshot --templates openai\n"
        f"{PROG} label pets --method zeroshot --descriptions llm",
    )
    _project_arg(p)
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
    p.add_argument("--threshold", type=float, help="multi-label: keep classes with p >= threshold * max p")
    p.add_argument("--run", type=int, help="relabel with the trained model of this train run (see `train`)")
    _device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _json_arg(p)

    p = _sub(
        subs,
        "export",
        cmd_export,
        "export the final labels (human > accepted > pseudo)",
        f"{PROG} export pets --format csv -o labels.csv\n{PROG} export pets --format imagefolder -o out/ --link\n"
        f"{PROG} export pets --format model -o pets.pt   # a trained model, for `apply`",
    )
    _project_arg(p)
    p.add_argument(
        "--format",
        default="csv",
        help="csv (default), imagefolder, jsonl, model (the trained model of the newest train run)",
    )
    p.add_argument("-o", "--output", required=True, help="output file (csv, jsonl) or folder (imagefolder)")
    p.add_argument("--link", action="store_true", help="imagefolder: symlink instead of copying")
    p.add_argument("--one-hot", action="store_true", help="csv: add one 0/1 column per class")

    p = _sub(
        subs,
        "status",
        cmd_status,
        "show images, skipped files, classes, labels, features and runs",
        f"{PROG} status pets --json",
    )
    _project_arg(p)
    _json_arg(p)

    p = _sub(
        subs,
        "eval",
        cmd_eval,
        "accuracy against folder-name ground truth (class-named subfolders)",
        f"{PROG} eval pets --json",
    )
    _project_arg(p)
    p.add_argument("--run", type=int, help="evaluate this run's predictions instead of the final labels")
    _json_arg(p)

    p = _sub(subs, "runs", cmd_runs, "list the project's runs (jobs)", f"{PROG} runs pets")
    _project_arg(p)
    _json_arg(p)

    p = _sub(
        subs, "cancel", cmd_cancel, "ask a running job to stop (rerun its command to resume)", f"{PROG} cancel pets 3"
    )
    _project_arg(p)
    p.add_argument("run", type=int, help="run id (see `runs`)")

    p = _sub(
        subs,
        "undo",
        cmd_undo,
        "undo the newest label or exclusion change (from the CLI, the app or the library)",
        f"{PROG} undo pets\n{PROG} undo pets --list",
    )
    _project_arg(p)
    p.add_argument("--list", action="store_true", help="list the changes that can be undone, newest first")
    p.add_argument("--limit", type=int, default=20, help="with --list: how many (default 20)")
    _json_arg(p)

    p = _sub(subs, "methods", cmd_methods, "list labeling methods", f"{PROG} methods")
    _json_arg(p)

    p = _sub(
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
    _device_arg(p)
    p.add_argument("--quiet", action="store_true")

    from . import cli_archive, cli_describe, cli_explore, cli_train

    cli_describe.register(subs)
    cli_train.register(subs)
    cli_explore.register(subs)
    cli_archive.register(subs)

    p = _sub(subs, "serve", cmd_serve, "start the browser app", f"{PROG} serve --port 7860")
    p.add_argument("--host", default=os.environ.get("LABELER_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("LABELER_PORT", "7860")))
    return parser


def _error_text(exc: BaseException) -> str | None:
    """The one-line ``error: ...`` for an exception a user can act on, or None for a bug (keeps its traceback)."""
    import sqlite_utils

    from store.db import SchemaTooNewError

    if isinstance(exc, LabelerError):
        return str(exc)
    if isinstance(exc, SchemaTooNewError):
        return str(exc)  # names the database and says to upgrade
    if isinstance(exc, FloatingPointError):  # a non-finite loss in training; the message says what to change
        return f"{exc}" if str(exc) else "a computation gave NaN or infinity: lower the learning rate (--lr)"
    if isinstance(exc, sqlite_utils.db.NotFoundError):
        return "a run, image or class the command refers to does not exist: check the id (see `runs` and `status`)"
    if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"{exc.strerror or exc}{where}: check the path, its permissions and the free disk space"
    return None


def _stdout_closed() -> int:
    """stdout's reader went away (``| head``): stop quietly, as Python's docs advise ("Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the flush at exit must not fail again
    except (OSError, ValueError):  # no real file descriptor (tests capture stdout)
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, also when the reader of stdout closed it early; 2 an error
    the user can act on, printed as one ``error: ...`` line; 130 interrupted).

    ``LABELER_DEBUG=1`` re-raises errors with their traceback.
    """
    from .project import data_dir

    parser = build_parser()
    parser.epilog = (parser.epilog or "").replace("{data_dir}", str(data_dir()))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, not at exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print("interrupted: finished batches are saved; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        text = _error_text(exc)
        if text is None or os.environ.get("LABELER_DEBUG"):
            raise
        print(f"error: {text}", file=sys.stderr)
        return 2
