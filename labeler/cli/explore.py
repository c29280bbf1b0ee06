"""CLI commands to explore a project: cluster, similar, search, duplicates, queue.

Registered into ``python -m labeler`` by :func:`register` (called from :func:`labeler.cli.build_parser`).
Each command calls one library function and prints text, or one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse

from ._common import PROG, emit, json_arg, open_project, project_arg, sub


def _features_arg(p: argparse.ArgumentParser, default: str | None = "clip", what: str = "") -> None:
    p.add_argument(
        "--features",
        default=default,
        help=f"clip, dino or a feature-set key{what} (default: {default or 'dino, else clip'})",
    )


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _hit_lines(hits: list[dict]) -> list[str]:
    out = []
    for h in hits:
        label = (h["label"] or "unlabeled") + (f" {h['source']}" if h["source"] else "")
        out.append(f"{h['score']:.4f}  {h['rel_path']}  [{label}]  id {h['image_id']}")
    return out


def cmd_cluster(args: argparse.Namespace) -> int:
    from ..clusters import cluster_run, cluster_summaries

    project = open_project(args)
    res = cluster_run(project, k=args.k, features=args.features)
    if args.sort != "purity":
        res["clusters"] = cluster_summaries(project, res["run_id"], sort=args.sort)
    lines = [
        f"run {res['run_id']}: {res['k']} clusters of {res['n']} images ({res['features']}, "
        f"{res['seconds']:.2f} s); sorted by {args.sort}"
    ]
    lines.append(f"{'cluster':>7} {'size':>6}  {'purity':>6}  {'conf':>5}  majority pseudo-label")
    for c in res["clusters"]:
        lines.append(
            f"{c['cluster']:>7} {c['size']:>6}  {_fmt(c['majority_share'], 2):>6}  "
            f"{_fmt(c['mean_confidence'], 2):>5}  {c['majority'] or '-'}"
            + (f"  ({c['n_human']} human)" if c["n_human"] else "")
        )
    emit(args, res, "\n".join(lines))
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from ..search import resolve_image, similar_images

    project = open_project(args)
    query = resolve_image(project, args.image)
    hits = similar_images(project, query["id"], k=args.k, features=args.features)
    text = "\n".join([f"most similar to {query['rel_path']} (id {query['id']}):", *_hit_lines(hits)])
    emit(
        args,
        {
            "query": {"image_id": query["id"], "sha256": query["sha256"], "rel_path": query["rel_path"]},
            "features": args.features,
            "results": hits,
        },
        text,
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from ..search import text_search

    project = open_project(args)
    hits = text_search(project, args.text, k=args.k, features=args.features, device=args.device)
    emit(args, {"query": args.text, "results": hits}, "\n".join([f"images matching {args.text!r}:", *_hit_lines(hits)]))
    return 0


def cmd_duplicates(args: argparse.Namespace) -> int:
    from ..search import near_duplicates

    project = open_project(args)
    groups = near_duplicates(project, threshold=args.threshold, features=args.features)
    lines = [f"{len(groups)} groups of near-duplicates (cosine similarity >= {args.threshold}):"]
    for n, g in enumerate(groups[: args.limit]):
        lines.append(
            f"group {n + 1}: {len(g['images'])} images, similarity {g['min_similarity']:.4f}..{g['max_similarity']:.4f}"
        )
        lines += [f"  {im['rel_path']}  id {im['image_id']}" for im in g["images"]]
    if len(groups) > args.limit:
        lines.append(f"... and {len(groups) - args.limit} more groups (--limit, or --json for all)")
    emit(args, {"threshold": args.threshold, "groups": groups}, "\n".join(lines))
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    from ..review import review_queue

    project = open_project(args)
    q = review_queue(
        project,
        by=args.by,
        limit=args.limit,
        include_labeled=args.include_labeled,
        features=args.features,
        neighbours=args.neighbours,
        view=args.view,
        threshold=args.threshold,
        offset=args.offset,
    )
    shown = f"{q.offset + 1}–{q.offset + len(q.items)}" if q.offset and q.items else str(len(q.items))
    where = f", view {q.view!r}" if q.view else ""
    lines = [f"review queue by {q.by} (run {q.run_id}{where}): {shown} of {q.total} images"]
    if q.note:
        lines.append(f"note: {q.note}")
    for it in q.items:
        extra = f"  knn {it['knn_label']} {_fmt(it['knn_share'], 2)}" if q.by == "disagreement" else ""
        lines.append(
            f"{_fmt(it['score'], 4)}  {it['rel_path']}  [{it['label'] or 'unlabeled'}] conf "
            f"{_fmt(it['confidence'])} margin {_fmt(it['margin'])}{extra}  id {it['image_id']}"
        )
    emit(args, q.to_dict(), "\n".join(lines))
    return 0


def register(subs) -> None:
    """Add ``cluster``, ``similar``, ``search``, ``duplicates`` and ``queue`` to the CLI's subparsers.

    Parameters
    ----------
    subs : argparse._SubParsersAction
        From ``parser.add_subparsers`` in :func:`labeler.cli.build_parser`.
    """
    _add_neighbour_commands(subs)
    _add_review_commands(subs)


def _add_neighbour_commands(subs) -> None:
    """``cluster``, ``similar`` and ``search``."""
    p = sub(
        subs,
        "cluster",
        cmd_cluster,
        "k-means clusters of the images, with majority label and purity",
        f"{PROG} cluster pets --k 20\n{PROG} cluster pets --k 8 --features dino --json",
    )
    project_arg(p)
    p.add_argument("--k", type=int, default=None, help="number of clusters (default: 2 x classes, at most 200)")
    _features_arg(p)
    p.add_argument(
        "--sort",
        default="purity",
        choices=["purity", "size", "confidence", "cluster"],
        help="purity (default): least pure first, to find confused clusters",
    )
    json_arg(p)

    p = sub(
        subs,
        "similar",
        cmd_similar,
        "images most similar to one image",
        f"{PROG} similar pets photos/cat1.jpg --k 12\n{PROG} similar pets 3fa2c1d9 --features dino --json",
    )
    project_arg(p)
    p.add_argument("image", help="an imported image: its path, sha256 (or first 6+ hex digits) or id")
    p.add_argument("--k", type=int, default=12, help="how many (default 12)")
    _features_arg(p)
    json_arg(p)

    p = sub(
        subs,
        "search",
        cmd_search,
        "images matching a text, through the CLIP text encoder",
        f'{PROG} search pets "a red car at night" --k 20',
    )
    project_arg(p)
    p.add_argument("text", help="what to look for, in words")
    p.add_argument("--k", type=int, default=12, help="how many (default 12)")
    p.add_argument("--features", default="clip", help="CLIP feature-set key (default: the newest CLIP set)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    json_arg(p)


def _add_review_commands(subs) -> None:
    """``duplicates`` and ``queue``."""
    from ..review import DEFAULT_NEIGHBOURS, ORDERINGS, VIEW_ALL, VIEW_REVIEW, VIEW_UNLABELED
    from ..search import DUPLICATE_THRESHOLD

    p = sub(
        subs,
        "duplicates",
        cmd_duplicates,
        "groups of near-duplicate images",
        f"{PROG} duplicates pets --threshold 0.97",
    )
    project_arg(p)
    p.add_argument(
        "--threshold",
        type=float,
        default=DUPLICATE_THRESHOLD,
        help=f"cosine similarity at or above which two images are near-duplicates (default {DUPLICATE_THRESHOLD})",
    )
    _features_arg(p)
    p.add_argument("--limit", type=int, default=50, help="groups printed as text (default 50)")
    json_arg(p)

    p = sub(
        subs,
        "queue",
        cmd_queue,
        "review queue: the likely mislabeled images first",
        f"{PROG} queue pets --by margin --limit 50\n{PROG} queue pets --by disagreement --json\n"
        f"{PROG} queue pets --by confidence --view '{VIEW_REVIEW}' --threshold 0.6 --offset 36 --limit 36",
    )
    project_arg(p)
    p.add_argument(
        "--by",
        default="margin",
        choices=list(ORDERINGS),
        help="margin (top-1 minus top-2), entropy, confidence, or disagreement (k-NN vote on DINO "
        "features vs the label)",
    )
    p.add_argument("--limit", type=int, default=50, help="images listed (default 50)")
    p.add_argument("--include-labeled", action="store_true", help="also list images a person already labeled")
    p.add_argument(
        "--view",
        default=None,
        help=f"only these images (as the app's Review step): '{VIEW_REVIEW}' (no human or accepted label, and "
        f"marked unsure, unpredicted or under --threshold), '{VIEW_ALL}', '{VIEW_UNLABELED}' or a class name "
        "(default: every image with a prediction)",
    )
    p.add_argument(
        "--threshold", type=float, default=0.5, help=f"'{VIEW_REVIEW}': confidence under which a label needs review"
    )
    p.add_argument("--offset", type=int, default=0, help="images of the queue to skip first (paging; default 0)")
    _features_arg(p, default=None, what=" for the disagreement vote")
    p.add_argument(
        "--neighbours",
        type=int,
        default=DEFAULT_NEIGHBOURS,
        help=f"disagreement: neighbours in the vote (default {DEFAULT_NEIGHBOURS})",
    )
    json_arg(p)
