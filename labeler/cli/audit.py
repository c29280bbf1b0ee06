"""CLI command ``audit``: draw a random sample, check it, and read the audited accuracy (:mod:`labeler.audit`).

One command, one action per call::

    audit PROJECT --sample N [--stratify] [--seed S]   make the sample N images large; list the next to check
    audit PROJECT                                      list the next images to check (--limit, default 10)
    audit PROJECT --confirm IMAGE                      the current label of IMAGE is right
    audit PROJECT --check IMAGE CLASS [CLASS ...]      IMAGE is truly CLASS (several: multi-label)
    audit PROJECT --skip IMAGE                         cannot tell (left out of the estimate, counted)
    audit PROJECT --report [--run RUN | --runs]        the estimate with its 95 % Wilson interval
    audit PROJECT --reset                              delete the sample and its checks
"""

from __future__ import annotations

import argparse

from ..errors import InvalidInputError
from ._common import PROG, emit, json_arg, open_project, project_arg, sub


def _next_lines(items: list[dict], progress: dict) -> list[str]:
    lines = [
        f"audit sample: {progress['sampled']} images, {progress['checked']} checked"
        + (f" ({progress['skipped']} skipped)" if progress["skipped"] else "")
        + f", {progress['unchecked']} to check"
    ]
    for it in items:
        label = ", ".join(it["classes"]) or "(unlabeled)"
        lines.append(f"  image {it['image_id']:>6}  {label:<20} {it['rel_path']}")
    if items:
        first = items[0]["image_id"]
        lines.append(f"check with: {PROG} audit PROJECT --confirm {first}   or   --check {first} CLASS")
    return lines


def _report_text(rep: dict) -> str:
    from ..audit import interval_text

    what = "exact-set accuracy" if rep.get("multi_label") else "accuracy"
    lines = [
        f"audited {what} of the {rep['labels']}: {interval_text(rep['overall'])}",
        f"  {rep['design']['mode']} sample of {rep['sampled']} images (seed {rep['design']['seed']}): "
        f"{rep['used']} checked, {rep['skipped']} skipped, {rep['unchecked']} to check",
    ]
    if rep.get("micro"):
        m = rep["micro"]
        lines.append(
            f"  all labels pooled: precision {interval_text(m['precision'])}, recall {interval_text(m['recall'])}"
        )
    if rep["per_class"]:
        lines.append(f"  {'class':>20}  precision (labeled as it)          recall (truly it)")
        for c, m in rep["per_class"].items():
            lines.append(
                f"  {c:>20}  {interval_text(m['precision']):<34} {interval_text(m['recall'])}"
                + ("  (few)" if m["few"] else "")
            )
    lines += [f"warning: {w}" for w in rep["warnings"]]
    return "\n".join(lines)


def cmd_audit(args: argparse.Namespace) -> int:
    from .. import audit

    actions = [
        a for a in ("sample", "confirm", "check", "skip", "report", "reset") if getattr(args, a) not in (None, False)
    ]
    if len(actions) > 1:
        raise InvalidInputError(f"give one of --sample, --confirm, --check, --skip, --report, --reset, not {actions}")
    if (args.run is not None or args.runs) and actions != ["report"]:
        raise InvalidInputError("--run and --runs go with --report")
    if (args.stratify or args.seed is not None) and actions != ["sample"]:
        raise InvalidInputError("--stratify and --seed go with --sample N")
    project = open_project(args)
    action = actions[0] if actions else None
    if action == "reset":
        n = audit.reset_audit(project)
        emit(args, {"deleted": n}, f"deleted the audit sample ({n} images); they can be trained on again")
        return 0
    if action == "report":
        if args.runs:
            rows = audit.compare_runs(project)
            text = "\n".join(
                f"{r['labels']:<28} "
                + audit.interval_text({"accuracy": r["accuracy"], "low": r["low"], "high": r["high"], "n": r["used"]})
                for r in rows
            )
            emit(args, {"runs": rows}, text)
            return 0
        rep = audit.audit_report(project, run_id=args.run)
        emit(args, rep, _report_text(rep))
        return 0
    if action in ("confirm", "check", "skip"):
        if action == "check":
            if len(args.check) < 2:
                raise InvalidInputError("--check takes an image id and its true class, e.g. --check 12 dog")
            image, classes = args.check[0], args.check[1:]
            if classes == ["-"]:
                classes = []  # multi-label: the image has none of the classes
            verdict = "correct"
        else:
            image, classes, verdict = getattr(args, action), None, action
        try:
            image_id = int(image)
        except ValueError:
            raise InvalidInputError(f"{image!r} is not an image id: give the number the audit list shows") from None
        item = audit.record_verdict(
            project, image_id, verdict, None if classes is None else (classes[0] if len(classes) == 1 else classes)
        )
        what = "exact-set accuracy" if project.multi_label else "accuracy"
        rep = audit.audit_report(project)
        text = (
            f"image {image_id}: {verdict}"
            + (f" (truth: {', '.join(item['truth']) or 'none of the classes'})" if item["truth"] is not None else "")
            + f"\naudited {what} of the final labels: {audit.interval_text(rep['overall'])}"
        )
        emit(args, {"item": item, "overall": rep["overall"], "progress": audit.audit_progress(project)}, text)
        return 0
    added = None
    if action == "sample":
        res = audit.draw_sample(project, args.sample, stratify=args.stratify, seed=args.seed)
        added = res["added"]
    elif audit.design(project) is None:
        raise InvalidInputError(
            f"there is no audit sample yet: draw one with `{PROG} audit {args.project} --sample 100`"
        )
    items = audit.audit_items(project, unchecked=True, limit=args.limit)
    progress = audit.audit_progress(project)
    lines = _next_lines(items, progress)
    if added is not None:
        lines.insert(0, f"drew {added} new images")
    emit(args, {"added": added, "progress": progress, "next": items, "design": audit.design(project)}, "\n".join(lines))
    return 0


def register(subs) -> None:
    """Add ``audit`` to the CLI's subparsers."""
    p = sub(
        subs,
        "audit",
        cmd_audit,
        "check a random sample by hand: the estimated accuracy of the labels, with a 95%% interval",
        f"{PROG} audit pets --sample 100            # draw (or grow to) 100 images, list the next to check\n"
        f"{PROG} audit pets --confirm 12            # image 12's label is right\n"
        f"{PROG} audit pets --check 13 dog          # image 13 is truly a dog\n"
        f"{PROG} audit photos --check 14 cat dog    # multi-label: the true set ('-' for none of the classes)\n"
        f"{PROG} audit pets --report                # accuracy of the final labels (overall, per class)\n"
        f"{PROG} audit pets --report --run 4        # ... of run 4's predictions\n"
        f"{PROG} audit pets --report --runs         # every labeling run side by side",
    )
    project_arg(p)
    p.add_argument(
        "--sample", type=int, metavar="N", help="make the sample N images large (draws the missing ones; seeded)"
    )
    p.add_argument("--stratify", action="store_true", help="with --sample: stratify by the current final label")
    p.add_argument("--seed", type=int, help="with --sample: the seed of a new sample (default 0)")
    p.add_argument("--confirm", metavar="IMAGE", help="the current label of this image is right")
    p.add_argument(
        "--check",
        nargs="+",
        metavar=("IMAGE", "CLASS"),
        help="this image is truly CLASS (multi-label: every class it has, or - for none)",
    )
    p.add_argument("--skip", metavar="IMAGE", help="cannot tell: leave this image out of the estimate")
    p.add_argument("--report", action="store_true", help="the audited accuracy, overall and per class")
    p.add_argument("--run", type=int, help="with --report: of this labeling run's predictions")
    p.add_argument("--runs", action="store_true", help="with --report: the final labels and every labeling run")
    p.add_argument("--reset", action="store_true", help="delete the sample and its checks")
    p.add_argument("--limit", type=int, default=10, help="how many of the next images to list (default 10)")
    json_arg(p)
