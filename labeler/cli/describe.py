"""CLI commands for descriptions and captions: ``describe``, ``caption``, ``captions``, ``descriptions``."""

from __future__ import annotations

import argparse
import functools
import sys

from ..describe import CONFIRM_ABOVE
from ..errors import InvalidInputError
from ._common import PROG, emit, json_arg, open_project, progress, project_arg, sub


def _backend(args: argparse.Namespace):
    from ..describe import get_backend

    options = {
        "model": args.model,
        "base_url": args.base_url,
        "api_key": args.api_key,
        "device": args.device,
        "max_workers": args.workers,
        "timeout": args.timeout,
        "max_retries": args.retries,
        "path": getattr(args, "file", None),
    }
    return get_backend(args.backend, **options)


def _confirm(args: argparse.Namespace, preview: dict, what: str) -> bool:
    new = int(preview.get("new", preview.get("requests", 0)))
    print(
        f"{what}: {preview.get('requests', 0)} requests, {preview.get('cached', 0)} cached, {new} new", file=sys.stderr
    )
    if args.dry_run:
        return False
    if new > CONFIRM_ABOVE and not args.yes:
        raise InvalidInputError(f"{new} new requests to the backend: rerun with --yes to send them (or --dry-run)")
    return True


def _preview_then_run(args: argparse.Namespace, backend, job, what: str, unit: str, options: dict) -> dict | None:
    """Count the requests (dry run), confirm a large run, then run ``job`` with a progress bar; None: not sent.

    ``job``: :func:`~labeler.describe.generate_descriptions` or :func:`~labeler.describe.caption_images`,
    called with the project bound; the backend is closed at the end either way.
    """
    try:
        preview = job(backend, dry_run=True, **options)
        if not _confirm(args, preview, what):
            emit(args, preview, "dry run: nothing sent")
            return None
        bar = progress(args, what, unit)
        try:
            return job(backend, on_progress=bar, deadline=args.deadline, **options)
        finally:
            bar and bar.close()
    finally:
        backend.close()


def cmd_describe(args: argparse.Namespace) -> int:
    from ..describe import generate_descriptions
    from ..project import parse_class_list

    project = open_project(args)
    classes = parse_class_list(args.classes) if args.classes else None
    backend = _backend(args)
    options = {"classes": classes, "domain": args.domain, "refresh": args.refresh}
    if args.samples is not None:
        options["samples_per_prompt"] = args.samples
    if args.max_per_class is not None:
        options["max_per_class"] = args.max_per_class
    res = _preview_then_run(
        args, backend, functools.partial(generate_descriptions, project), "describe", "request", options
    )
    if res is None:
        return 0
    text = f"run {res['run_id']}: {res['summary']}"
    if res.get("warning"):
        print(f"warning: {res['warning']}", file=sys.stderr)
    emit(args, res, text)
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from ..describe import caption_images, import_captions, pseudo_classes, set_caption_prompts

    project = open_project(args)
    if args.backend == "file":  # captions written elsewhere: read them, no model
        if not args.file:
            raise InvalidInputError("the file backend imports captions: give the file with --file captions.csv")
        res = import_captions(project, args.file)
        emit(args, res, f"{res['path']}: {res['summary']}")
        return 0
    groups = args.groups or ("shared" if args.groups_only else None)
    class_of = pseudo_classes(project)
    if groups and not class_of:
        raise InvalidInputError("--groups needs pseudo-labels to group by: run `labeler label PROJECT` first")
    if args.save_prompts:
        set_caption_prompts(project, caption=args.prompt, group=args.group_prompt)
    backend = _backend(args)
    options = {
        "per_image": not args.groups_only,
        "groups": groups is not None,
        "group_mode": groups or "shared",
        "group_size": args.group_size,
        "class_of": class_of or None,
        "refresh": args.refresh,
        "per_image_prompt": args.prompt,  # None: the project's saved prompt
        "group_prompt": args.group_prompt,
    }
    res = _preview_then_run(args, backend, functools.partial(caption_images, project), "caption", "request", options)
    if res is None:
        return 0
    if res.get("warning"):
        print(f"warning: {res['warning']}", file=sys.stderr)
    emit(args, res, "\n".join(f"{k}: {v}" for k, v in res.items() if not isinstance(v, (dict, list))))
    return 0


def cmd_captions(args: argparse.Namespace) -> int:
    from .. import describe as d

    project = open_project(args)
    action = args.action
    if action == "list":
        rows = d.list_captions(project, kind=args.kind, enabled_only=args.enabled)
        text = "\n".join(
            f"{r['image_id']:>6} {r['kind']:<9} {'on ' if r['enabled'] else 'off'}{'*' if r['edited'] else ' '} "
            f"{r['rel_path']}: {r['text']}"
            for r in rows
        )
        emit(args, {"captions": rows}, text or "no captions yet: run `python -m labeler caption PROJECT`")
        return 0
    if action == "prompts":
        prompts = d.set_caption_prompts(project, caption=args.prompt, group=args.group_prompt)
        emit(args, prompts, f"caption: {prompts['caption']}\ngroup:   {prompts['group']}")
        return 0
    usage = f"usage: captions PROJECT {action} IMAGE_ID KIND" + (" 'new text'" if action == "edit" else "")
    want = 3 if action == "edit" else 2
    if len(args.args) != want or not args.args[0].isdigit():
        raise InvalidInputError(usage + " (KIND: image, group or group-own)")
    image_id, kind = int(args.args[0]), args.args[1]
    if action == "edit":
        row = d.set_caption(project, image_id, kind, args.args[2])
    else:
        row = d.set_caption_enabled(project, image_id, kind, action == "enable")
    verb = {"edit": "edited", "enable": "enabled", "disable": "disabled"}[action]
    emit(args, row, f"{verb} the {kind} caption of image {image_id}: {row['text']}")
    return 0


def cmd_descriptions(args: argparse.Namespace) -> int:
    from .. import describe as d

    project = open_project(args)
    action = args.action
    if action == "list":
        rows = d.list_descriptions(project, class_name=args.cls, enabled_only=args.enabled)
        text = "\n".join(
            f"{r['id']:>6} {'on ' if r['enabled'] else 'off'} {r['source']:<8} [{r['class']}] {r['text']}" for r in rows
        )
        emit(args, {"descriptions": rows}, text or "no descriptions yet: run `python -m labeler describe PROJECT`")
        return 0
    if action in ("export", "import"):
        if not args.args:
            raise InvalidInputError(f"`descriptions {action}` needs a FILE (.json or .csv)")
        if action == "export":
            res = d.export_descriptions(project, args.args[0], enabled_only=not args.all)
        else:
            res = d.import_descriptions(project, args.args[0], replace=args.replace)
            emit(args, res, f"{res['path']}: {res['summary']}")
            return 0
        emit(args, res, "\n".join(f"{k}: {v}" for k, v in res.items()))
        return 0
    if action == "add":
        if len(args.args) != 2:
            raise InvalidInputError("usage: descriptions PROJECT add CLASS 'text'")
        new_id = d.add_description(project, args.args[0], args.args[1])
        print(f"added description {new_id}")
        return 0
    if action in ("edit", "enable", "disable", "delete"):
        if not args.args or not args.args[0].isdigit():
            raise InvalidInputError(
                f"usage: descriptions PROJECT {action} ID" + (" 'new text'" if action == "edit" else "")
            )
        did = int(args.args[0])
        if action == "edit":
            if len(args.args) != 2:
                raise InvalidInputError("usage: descriptions PROJECT edit ID 'new text'")
            d.edit_description(project, did, args.args[1])
        elif action == "delete":
            d.delete_description(project, did)
        else:
            d.set_description_enabled(project, did, action == "enable")
        print(f"{action}d description {did}" if action != "edit" else f"edited description {did}")
        return 0
    raise InvalidInputError(f"unknown action {action!r}")


def _backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="template", help="template (offline), openai, transformers, file")
    p.add_argument("--model", help="model name (openai: e.g. llama3.2, gpt-4o-mini) or HF id / local folder")
    p.add_argument(
        "--base-url",
        help="OpenAI-compatible endpoint, e.g. http://localhost:11434/v1 (default $OPENAI_BASE_URL or api.openai.com)",
    )
    p.add_argument("--api-key", help="API key (default $OPENAI_API_KEY)")
    p.add_argument("--device", help="transformers backend: auto, cpu, cuda")
    p.add_argument("--workers", type=int, help="concurrent requests (openai)")
    p.add_argument(
        "--timeout",
        type=float,
        help="openai: seconds one try of a request may take in all (connect + the whole answer, however slowly it "
        "arrives; default 120)",
    )
    p.add_argument("--retries", type=int, help="openai: retries of a request after 429/5xx/timeouts (default 4)")
    p.add_argument(
        "--deadline",
        type=float,
        help="stop the whole job after this many seconds, keeping the answers so far (a rerun continues); exits 2",
    )
    p.add_argument("--refresh", action="store_true", help="ignore cached answers and ask again")
    p.add_argument("--dry-run", action="store_true", help="only count the requests it would send")
    p.add_argument("--yes", action="store_true", help=f"send more than {CONFIRM_ABOVE} new requests without asking")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    json_arg(p)


def register(subs) -> None:
    """Add ``describe``, ``caption``, ``captions`` and ``descriptions`` to the CLI's subparsers."""
    p = sub(
        subs,
        "describe",
        cmd_describe,
        "write class descriptions with an LLM (or templates, or a file)",
        f"{PROG} describe pets --backend openai --model llama3.2 --base-url http://localhost:11434/v1\n"
        f"{PROG} describe pets --backend file --file cifar10-gpt35.json\n"
        f"{PROG} describe pets --backend template --domain 'satellite photo'",
    )
    project_arg(p)
    _backend_args(p)
    p.add_argument("--file", help="file backend: JSON {class: [sentences]} or CSV class,description")
    p.add_argument("--classes", help="only these classes (comma-separated)")
    p.add_argument("--domain", help="domain hint, e.g. 'satellite photo', 'texture'")
    p.add_argument("--samples", type=int, help="answers per question form")
    p.add_argument("--max-per-class", type=int, help="keep at most this many sentences per class")

    p = sub(
        subs,
        "caption",
        cmd_caption,
        "caption images (one each) and/or groups of 4 with a vision model, or import captions from a file",
        f"{PROG} caption pets --backend openai --model llava --base-url http://localhost:11434/v1 --groups\n"
        f"{PROG} caption pets --backend openai --model llava --groups per-image   # the official LatteCLIP groups\n"
        f"{PROG} caption pets --backend file --file captions.csv",
    )
    project_arg(p)
    _backend_args(p)
    p.add_argument(
        "--groups",
        nargs="?",
        const="shared",
        choices=["shared", "per-image"],
        help="also describe groups of 4 images sharing a pseudo-label, tiled 2x2. shared (the default): a class's "
        "images split into groups, one call per group stored for each member (0.25 calls per image; 1.25 with "
        "the per-image captions). per-image (the official LatteCLIP): each image with 3 random others of its "
        "class, one call per image (2 with the captions). Both kinds may coexist",
    )
    p.add_argument(
        "--groups-only", action="store_true", help="only group descriptions (shared unless --groups per-image)"
    )
    p.add_argument("--group-size", type=int, default=4, help="images per group (default 4: a 2x2 grid)")
    p.add_argument("--prompt", help="per-image prompt; {c} is the image's zero-shot class (default: the project's)")
    p.add_argument("--group-prompt", help="group prompt; {c} the group's class, {k} its size (default: the project's)")
    p.add_argument("--save-prompts", action="store_true", help="save --prompt/--group-prompt as the project's")
    p.add_argument("--file", help="file backend: import captions from JSON {image: caption} or CSV image,caption")

    p = sub(
        subs,
        "captions",
        cmd_captions,
        "list, edit, enable/disable captions; show or set the caption prompts",
        f"{PROG} captions pets list --kind image\n{PROG} captions pets edit 12 image 'a tabby cat on a sofa'\n"
        f"{PROG} captions pets disable 12 group-own\n"
        f"{PROG} captions pets prompts --prompt 'Describe the {{c}} in the photo concisely, less than 20 words.'",
    )
    project_arg(p)
    p.add_argument("action", choices=["list", "edit", "enable", "disable", "prompts"])
    p.add_argument("args", nargs="*", help="IMAGE_ID KIND [TEXT] (KIND: image, group, group-own)")
    p.add_argument("--kind", choices=["image", "group", "group-own"], help="list: only this kind")
    p.add_argument("--enabled", action="store_true", help="list: only enabled captions")
    p.add_argument("--prompt", help="prompts: set the per-image prompt ('' restores the default)")
    p.add_argument("--group-prompt", help="prompts: set the group prompt ('' restores the default)")
    json_arg(p)

    p = sub(
        subs,
        "descriptions",
        cmd_descriptions,
        "list, export, import, add, edit, enable/disable, delete",
        f"{PROG} descriptions pets list --class cat\n{PROG} descriptions pets export descs.json\n"
        f"{PROG} descriptions pets import cifar10-gpt35.json\n{PROG} descriptions pets disable 12\n"
        f"{PROG} descriptions pets edit 12 'a small furry pet with pointed ears'",
    )
    project_arg(p)
    p.add_argument("action", choices=["list", "export", "import", "add", "edit", "enable", "disable", "delete"])
    p.add_argument("args", nargs="*", help="FILE for export/import; CLASS TEXT for add; ID [TEXT] otherwise")
    p.add_argument("--class", dest="cls", help="list: only this class")
    p.add_argument("--enabled", action="store_true", help="list: only enabled descriptions")
    p.add_argument("--all", action="store_true", help="export: include disabled descriptions")
    p.add_argument("--replace", action="store_true", help="import: replace the class's non-user descriptions")
    json_arg(p)
