"""Step 8 · Explore: browse by cluster, map, similarity and near-duplicates; walk the review queue; act in bulk.

The left column holds the views, each of which fills the one gallery on the right:

* **Clusters** — k-means runs (:func:`labeler.clusters.cluster_run`, in the background) summarised per
  cluster, least pure first; click a row to show the cluster.
* **Map** — the 2-D projection (:mod:`labeler.projection` through :func:`labeler.map_frame`: PCA,
  or UMAP when installed; the note says roughly how long each takes) coloured by pseudo-label, your label, final
  label or cluster, drawn by :mod:`labeler.ui.scatter`; drag a box on it to show the images inside, click a point
  for its neighbours.
* **Near-duplicates** — groups above a cosine threshold (:func:`labeler.duplicate_rows`); show a
  group, keep one image of it (or of every group) and exclude the rest; see the excluded images.
* **Review queue** — :func:`labeler.review.review_queue`: lowest confidence, smallest margin, highest
  entropy, or the CLIP label against a k-NN vote on DINO features — the likely mistakes first.

Above the gallery: text search (CLIP). In the gallery: click thumbnails to select them (click again to
unselect), "Select page", "Show similar" (neighbours of the last image clicked) and "Preview" (key ``v``, or a
double-click: one image larger, with its details and neighbours; :mod:`labeler.ui.preview`). The bulk buttons act
on the selection, or — when nothing is selected — on every image of the view (the whole cluster, map box,
group or queue), and say which: label as a class (human labels win everywhere), accept the pseudo-labels,
exclude, include again. The cluster table and the per-class counts update after each action.

Each event's handler is a module-level function ``handler(ctx, *inputs)`` returning a NamedTuple of its outputs
(:class:`Shown` for the gallery, :class:`Acted` after a bulk action, :class:`Dups`, :class:`MapOut`, :class:`View`);
:func:`build` only lays out the components and wires them with :func:`~labeler.ui.common.bind` and
:func:`~labeler.ui.common.wire`. What gradio_client gets back for each is the ``…Api`` NamedTuple (states, rows
and buttons are not part of the API): ``ShownApi._make(client.predict("a cat", api_name="/explore_search"))``.
"""

# No ``from __future__ import annotations`` here: :func:`~labeler.ui.common.bind` resolves a handler's annotations
# in common's namespace, so gradio sees ``evt: gr.SelectData`` only when annotations are objects, not strings.

import functools
from typing import Any, NamedTuple

import gradio as gr

from ...clusters import cluster_members, cluster_run, cluster_summaries, latest_cluster_run
from ...ingest import thumbnail_for
from ...jobs import run_in_background
from ...labels import active_run
from ...project import Project
from ...projection import (
    MAP_COLOURS,
    MAP_INLINE,
    UMAP_MISSING,
    feature_map,
    last_map_timing,
    map_box,
    map_frame,
    map_lasso,
    map_method,
    map_ready,
    umap_available,
)
from ...review import (
    ORDERINGS,
    accept_images,
    edit_label,
    exclude_duplicates,
    exclude_images,
    excluded_images,
    explore_counts,
    explore_items,
    include_images,
    keep_one,
    label_images,
    review_queue,
)
from ...search import duplicate_rows, similar_images, text_search
from .. import preview
from ..common import (
    NO_PROJECT,
    Ctx,
    bind,
    empty_state,
    error_text,
    finished_task,
    guard,
    md_escape,
    pct,
    thumb_caption,
    undo_last,
    wire,
)
from ..scatter import map_pick, parse_box, parse_lasso, scatter, scatter_value

PAGE = 48
HEADERS = ["#", "n", "pseudo", "purity", "conf", "final", "done"]
DUP_HEADERS = ["group", "images", "max sim", "min sim", "labels"]
SIMILAR_K = 24
SEARCH_K = 48
ORDER_NAMES = {
    "confidence": "lowest confidence",
    "margin": "smallest top-1/top-2 margin",
    "entropy": "highest entropy",
    "disagreement": "CLIP label vs. DINO k-NN vote",
}
ORDER_CHOICES = [(ORDER_NAMES.get(o, o), o) for o in ORDERINGS]
MAP_METHODS = ["pca", "umap"] if umap_available() else ["pca"]  # UMAP only where umap-learn is installed
#: How long a map takes, roughly, before this project has drawn one: (seconds to start, seconds per point). PCA:
#: 50,000 × 512 CLIP vectors took 1–9 s here (one pass, idle to busy CPU); UMAP: umap-learn's MNIST benchmark
#: (70,000 points) ~85 s, plus numba's compile the first time. On this project's busy 2-core machine (load 5–7)
#: umap-learn 0.5.12 took 1 s for 500 × 512, 8–11 s for 2,000, 98 s for 10,000 (and 60 s to import the first
#: time), so once a project has drawn a map the estimate scales that one (:func:`map_seconds`).
MAP_COST = {"pca": (0.2, 4e-5), "umap": (10.0, 1.2e-3)}
NO_VIEW = {"kind": "", "title": "", "ids": [], "params": {}}


# --- what the events return (field order = the order of the event's output components) ----------------------
class Stats(NamedTuple):
    """The cluster table and the per-class counts."""

    status: str
    table: Any  # gr.Dataframe update
    counts: str


class Shown(NamedTuple):
    """The gallery: a page of the view, the line saying what it is, the toolbars, the bulk buttons' texts, and the
    view's state (ids only)."""

    gallery: Any  # gr.Gallery update
    info: str
    tools: Any  # gr.Row updates (visible with images)
    actions: Any
    actions2: Any
    label_btn: Any  # gr.Button updates: "Label all 12 as →"
    accept_btn: Any
    exclude_btn: Any
    include_btn: Any
    add_btn: Any  # multi-label only: add / remove one class for the selection (else the view), keeping the others
    remove_btn: Any
    view: dict  # {"kind", "title", "ids", "params"}
    selection: list  # selected image ids
    page: int
    page_ids: list  # ids on the page, in gallery order
    picked: int | None  # the last image clicked


class Dups(NamedTuple):
    """The near-duplicate groups: the table, each group's image ids (state), the note above the table."""

    dup_table: Any  # gr.Dataframe update
    dup_groups: list
    dup_note: str


class MapOut(NamedTuple):
    """The map: the plot, the note above it, the cluster picker, and whether a map is on screen (state)."""

    plot: Any  # gr.HTML update holding :func:`~labeler.ui.scatter.scatter_value`
    map_note: str
    map_cluster: Any  # gr.Dropdown update
    drawn: bool


def combined(name: str, *parts, doc: str = "") -> type:
    """A NamedTuple with the fields of ``parts`` one after another (each a NamedTuple type or ``(field, type)``
    pairs): the outputs of an event that shows several of them."""
    fields = []
    for part in parts:
        fields += list(part.__annotations__.items()) if isinstance(part, type) else list(part)
    out = NamedTuple(name, fields)
    out.__doc__ = doc
    return out


Acted = combined("Acted", Stats, Shown, doc="After a bulk action: :class:`Stats`, then :class:`Shown`.")
DupActed = combined(
    "DupActed", Acted, Dups, doc="After keeping one image of near-duplicates: :class:`Acted`, then :class:`Dups`."
)
View = combined(
    "View",
    Stats,
    [("target", Any)],  # gr.Dropdown update: the project's classes
    Dups,
    MapOut,
    Shown,
    doc="The whole step as opening it shows it: :class:`Stats`, the class picker (``target``), :class:`Dups`, "
    ":class:`MapOut`, :class:`Shown`.",
)


#: Outputs that gradio's API leaves out (states, rows and buttons): gradio_client returns the others, in order.
NOT_IN_API = frozenset(
    {"tools", "actions", "actions2", "label_btn", "accept_btn", "exclude_btn", "include_btn", "add_btn", "remove_btn"}
    | {"view", "selection", "page", "page_ids", "picked", "dup_groups", "drawn"}
)


def api_type(outputs_type: type) -> type:
    """The NamedTuple of what gradio_client returns for an event whose handler returns ``outputs_type``: its
    fields without :data:`NOT_IN_API`, named ``<outputs_type>Api``."""
    fields = [(f, t) for f, t in outputs_type.__annotations__.items() if f not in NOT_IN_API]
    name = outputs_type.__name__
    return combined(f"{name}Api", fields, doc=f"What gradio_client returns for an event with :class:`{name}` outputs.")


ShownApi = api_type(Shown)  # gallery, info
ActedApi = api_type(Acted)  # status, table, counts, gallery, info
DupsApi = api_type(Dups)  # dup_table, dup_note
DupActedApi = api_type(DupActed)
MapApi = api_type(MapOut)  # plot, map_note, map_cluster
ViewApi = api_type(View)

#: What each of the step's api_names returns through gradio_client (``/explore_cluster``: the status text).
API_OUTPUTS = {
    "explore_view": ViewApi,
    "explore_cluster": str,
    "explore_open_cluster": ShownApi,
    "explore_search": ShownApi,
    "explore_similar": ShownApi,
    "explore_queue": ShownApi,
    "explore_select_ids": ShownApi,
    "explore_select_page": ShownApi,
    "explore_clear": ShownApi,
    "explore_next_page": ShownApi,
    "explore_label": ActedApi,
    "explore_accept": ActedApi,
    "explore_exclude": ActedApi,
    "explore_include": ActedApi,
    "explore_undo": ActedApi,
    "explore_duplicates": DupsApi,
    "explore_open_group": ShownApi,
    "explore_keep_one": DupActedApi,
    "explore_keep_one_each": DupActedApi,
    "explore_excluded": ShownApi,
    "explore_map": MapApi,
    "explore_map_cluster": ShownApi,
    "explore_map_box": ShownApi,
    "explore_map_lasso": ShownApi,
}


def skipped(outputs_type: type):
    """An ``outputs_type`` that changes nothing (every field ``gr.skip()``)."""
    return outputs_type._make([gr.skip()] * len(outputs_type._fields))


def joined(outputs_type: type, *parts: tuple, **fields):
    """An ``outputs_type`` from the fields of the NamedTuples ``parts`` and ``fields``, by name."""
    values = {k: v for part in parts for k, v in part._asdict().items()}
    return outputs_type(**{**values, **fields})


# --- pure helpers: views, texts ---------------------------------------------------------------------------------
def map_seconds(n: int, how: str, measured: tuple[int, float] | None = None) -> float:
    """Roughly how long computing the ``how`` map (pca or umap) of ``n`` points takes, in seconds: scaled linearly
    from ``measured`` (``(points, seconds)`` of a map this project computed the same way) when given, else from
    :data:`MAP_COST`."""
    start, per_point = MAP_COST[map_method(how)]
    if measured is not None and measured[0] > 0 and measured[1] > 0:
        points, secs = measured
        per_point = max(0.0, secs - start) / points
        start = min(start, secs)
    return start + per_point * max(0, int(n))


def _words(secs: float) -> str:
    if secs < 1:
        return "under a second"
    if secs < 90:
        return f"about {int(round(secs, -1)) if secs >= 15 else max(1, round(secs))} s"
    return f"about {round(secs / 60)} min"


def took(secs: float) -> str:
    """ "4.1 s", "2 min 5 s": a measured duration."""
    return f"{secs:.1f} s" if secs < 60 else f"{int(secs // 60)} min {round(secs % 60)} s"


def map_estimate(n: int, how: str, measured: tuple[int, float] | None = None) -> str:
    """ "under a second", "about 20 s", "about 3 min": :func:`map_seconds` in words; with ``measured``, what it
    is scaled from ("about 50 s, from the last UMAP here: 2,000 points in 10.2 s")."""
    text = _words(map_seconds(n, how, measured))
    if measured is not None and measured[0] > 0 and measured[1] > 0:
        text += f", from the last {map_method(how).upper()} here: {measured[0]:,} points in {took(measured[1])}"
    return text


def map_estimates(n: int) -> str:
    """How long the map of ``n`` images takes with each method offered: "PCA under a second, UMAP about 10 s"
    (and how to get UMAP where umap-learn is not installed)."""
    text = ", ".join(f"{how.upper()} {map_estimate(n, how)}" for how in MAP_METHODS)
    return text if "umap" in MAP_METHODS else f"{text}; for UMAP too: `pip install umap-learn`, then restart"


def _view(kind: str, title: str, ids, **params) -> dict:
    """What the gallery shows: ids (all of the view, in order), a title, and how to read it again."""
    return {"kind": kind, "title": title, "ids": [int(i) for i in ids], "params": params}


def _span(name: str, scores) -> str:
    """ "similarity 0.99 → 0.93": a view's scores, first to last, for its title."""
    scores = [float(s) for s in scores if s is not None]
    return f"{name} {scores[0]:.2f} → {scores[-1]:.2f}" if scores else ""


def _need_features(project: Project, feats: str | None) -> None:
    if not project.features.sets(feats or "clip"):
        raise gr.Error(f"There are no {feats or 'clip'} features yet: compute them in step 5 (①) first.")


def _counts_text(project: Project) -> str:
    c = explore_counts(project)
    if not c["total"] and not c["excluded"]:
        return ""
    per = " · ".join(
        f"{md_escape(r['class'])} **{r['images']}**" + (f" ({r['reviewed']} reviewed)" if r["reviewed"] else "")
        for r in c["classes"]
        if r["images"]
    )
    excl = f" · {c['excluded']} excluded" if c["excluded"] else ""
    return f"**{c['total']} images**, {c['reviewed']} reviewed{excl}. Per class: {per or 'no labels yet'}"


def _cluster_rows(rows: list[dict]) -> list[list]:
    """The cluster table's rows (:data:`HEADERS`) for :func:`labeler.clusters.cluster_summaries` rows."""
    return [
        [
            r["cluster"],
            r["size"],
            r.get("majority") or "–",
            pct(r.get("majority_share")),
            pct(r.get("mean_confidence")),
            r.get("final_majority") or "–",
            (r.get("n_human") or 0) + (r.get("n_accepted") or 0),
        ]
        for r in rows
    ]


def clusters_view(project: Project | None) -> tuple[str, list[list]]:
    """The status line above the cluster table and its rows (none before the first clustering)."""
    if project is None:
        return empty_state(NO_PROJECT), []
    if not project.features.sets():
        return empty_state("Explore needs features: compute them first (step 5, ①)."), []
    run = latest_cluster_run(project)
    if run is None:
        return empty_state(
            "No clusters yet: press <b>Cluster images</b> (k-means over the features) to group similar images, "
            "then click a cluster to see it — or search by text, draw the map, or walk the review queue."
        ), []
    rows = cluster_summaries(project, run["id"])
    return (
        f"**{len(rows)} clusters** (run {run['id']}, {md_escape(run['params'].get('features', ''))}). "
        "Low purity = the pseudo-labels disagree inside the cluster: look there first."
    ), _cluster_rows(rows)


def stats(project: Project | None) -> Stats:
    """The cluster table and the counts, read again."""
    text, rows = clusters_view(project)
    return Stats(
        status=text,
        table=gr.Dataframe(value=rows, visible=bool(rows)),
        counts=_counts_text(project) if project else "",
    )


def scope(v: dict, chosen: list) -> tuple[list[int], str]:
    """The images a bulk button acts on, and how to say it."""
    if chosen:
        return [int(i) for i in chosen], f"{len(chosen)} selected"
    n = len(v["ids"])
    return list(v["ids"]), (f"all {n}" if n != 1 else "the 1 image")


def _thumbs(project: Project, items: list[dict], chosen: set[int]) -> tuple[list[tuple[str, str]], list[int]]:
    """``(thumbnail, caption)`` pairs of the items whose thumbnail is cached, and their ids (gallery order)."""
    pics, shown_ids = [], []
    for it in items:
        thumb = thumbnail_for(project, it["id"], it["sha256"], it["path"])
        if thumb:
            pics.append((thumb, thumb_caption(it, chosen)))
            shown_ids.append(it["id"])
    return pics, shown_ids


def _info_text(project: Project | None, v: dict, chosen: list[int], page_no: int, pages: int) -> str:
    """The line above the gallery: what the view is, how many images, the page, what the buttons act on."""
    ids = v["ids"]
    if not v["kind"]:
        if project is None or not project.features.sets():
            return ""
        return empty_state(
            "Open a cluster, drag across the map, show a near-duplicate group or the review queue on the left, "
            "or search by text: the images show here, ready to label in bulk."
        )
    if not ids:
        return empty_state(f"{v['title']}: no images.")
    where = f" · page {page_no + 1}/{pages}" if pages > 1 else ""
    sel = (
        f"**{len(chosen)} selected** — the buttons below act on them."
        if chosen
        else "Click thumbnails to select some; with none selected the buttons act on all of them."
    )
    note = f" ({v['params']['note'].rstrip('.')})" if v["params"].get("note") else ""
    return f"**{v['title']}: {len(ids)} image{'' if len(ids) == 1 else 's'}**{where}{note}. {sel}"


def render(project: Project | None, v: dict, chosen, page_no, pick) -> Shown:
    """The gallery for view ``v``: page ``page_no`` (clamped), ``chosen`` ids selected, ``pick`` the last click."""
    chosen = [int(i) for i in chosen or []]
    ids = v["ids"]
    pages = max(1, -(-len(ids) // PAGE))
    page_no = min(max(0, int(page_no or 0)), pages - 1)
    start = page_no * PAGE
    items = explore_items(project, ids[start : start + PAGE]) if project is not None else []
    pics, shown_ids = _thumbs(project, items, set(chosen))
    has = bool(pics)
    text = _info_text(project, v, chosen, page_no, pages)
    if pick is not None and pick in shown_ids:
        text += f" **Show similar** finds the images most like image {pick}, the last one clicked."
    ids_scope, what = scope(v, chosen)
    excluded_here = v["kind"] == "excluded" or any(it["status"] == "excluded" for it in items)
    multi = bool(project is not None and project.multi_label)
    return Shown(
        gallery=gr.Gallery(
            value=pics, visible=has, selected_index=shown_ids.index(pick) if pick in shown_ids else None
        ),
        info=text,
        tools=gr.Row(visible=has),
        actions=gr.Row(visible=has),
        actions2=gr.Row(visible=has),
        label_btn=gr.Button(value=f"Label {what} as →"),
        accept_btn=gr.Button(value=f"Accept {what} pseudo-label" + ("s" if len(ids_scope) != 1 else "")),
        exclude_btn=gr.Button(value=f"Exclude {what}"),
        include_btn=gr.Button(value=f"Include {what} again", visible=excluded_here),
        add_btn=gr.Button(value=f"Add class to {what}", visible=multi),
        remove_btn=gr.Button(value=f"Remove class from {what}", visible=multi),
        view=v,
        selection=chosen,
        page=page_no,
        page_ids=shown_ids,
        picked=pick,
    )


def queue_view(project: Project, by: str | None, n) -> dict:
    """The review queue (:func:`labeler.review.review_queue`) as a gallery view, likely mistakes first."""
    q = review_queue(project, by=by or "margin", limit=int(n or 240))
    name = ORDER_NAMES.get(q.by, q.by)
    more = f" (first {len(q.items)} of {q.total})" if q.total > len(q.items) else ""
    notes = [_span(q.by, [it["score"] for it in q.items]), md_escape(q.note) if q.note else ""]
    return _view(
        "queue",
        f"Review queue, {name}{more}",
        [it["image_id"] for it in q.items],
        by=q.by,
        limit=int(n or 240),
        note="; ".join(t for t in notes if t),
    )


def redo(project: Project, v: dict) -> dict:
    """Views that change with labels and exclusions (queue, excluded) are read again after an action."""
    if v["kind"] == "queue":
        return queue_view(project, v["params"]["by"], v["params"]["limit"])
    if v["kind"] == "excluded":
        return _view("excluded", "Excluded images", excluded_images(project))
    return v


def dup_outputs(rows: list[dict], threshold_value) -> Dups:
    """The near-duplicate table, groups and note for :func:`labeler.search.duplicate_rows` rows."""
    table_rows = [
        [r["group"], r["size"], f"{r['max_similarity']:.3f}", f"{r['min_similarity']:.3f}", r["labels"]] for r in rows
    ]
    n_img = sum(r["size"] for r in rows)
    note = (
        f"**{len(rows)} group{'s' if len(rows) != 1 else ''}** ({n_img} images) at similarity "
        f"≥ {float(threshold_value):.3f}. Click a group to "
        "show it, then keep one image of it (the one you selected, else one you labeled, else the first)."
        if rows
        else empty_state(f"No near-duplicates at similarity ≥ {float(threshold_value):.3f}.")
    )
    return Dups(
        dup_table=gr.Dataframe(value=table_rows, visible=bool(rows)),
        dup_groups=[r["images"] for r in rows],
        dup_note=note,
    )


def _span_text(lo: float | None, hi: float | None) -> str:
    """ "0.10…0.52" for a box side (in order), an open end empty."""
    lo, hi = (lo, hi) if lo is None or hi is None else sorted((lo, hi))
    return f"{'' if lo is None else f'{lo:.2f}'}…{'' if hi is None else f'{hi:.2f}'}"


def _box_view(project: Project, feats: str, how: str, x0, x1, y0, y1) -> dict:
    """The images whose map point lies in the box (None: that side open), as a gallery view."""
    ids = map_box(project, feats, how, (x0, x1), (y0, y1))
    return _view("map", f"Map box x {_span_text(x0, x1)}, y {_span_text(y0, y1)}", ids)


def _lasso_view(project: Project, feats: str, how: str, polygon) -> dict:
    """The images whose map point lies inside the lasso outline, as a gallery view."""
    ids = map_lasso(project, feats, how, polygon)
    return _view("map", f"Map lasso ({len(polygon)} corners)", ids)


def _task_failed(task) -> str:
    return f"**{task.label} {task.status}:** {error_text(task.error, task.hint)}"


# --- background work (each opens its own Project: connections are per thread) ---------------------------------
def _cluster_task(root: str, k: int | None, feats: str):
    p = Project(root)
    try:
        return cluster_run(p, k=k, features=feats)
    finally:
        p.close()


def _map_task(root: str, feats: str, how: str):
    p = Project(root)
    try:
        return feature_map(p, feats, map_method(how))
    finally:
        p.close()


# --- events: the step, clusters, search ----------------------------------------------------------------------
@guard
def refresh(ctx: Ctx, key: str) -> View:
    """The step as opening it shows it: table, counts, classes, empty duplicates, map and gallery."""
    project = ctx.open(key, required=False)
    classes = project.classes if project is not None else []
    multi = bool(project and project.multi_label)
    ready = project is not None and bool(project.features.sets())
    n = project.image_count() if ready else 0
    return joined(
        View,
        stats(project),
        render(project, NO_VIEW, [], 0, None),
        target=gr.Dropdown(choices=classes, value=[] if multi else None, multiselect=multi),
        dup_table=gr.Dataframe(value=[], visible=False),
        dup_groups=[],
        dup_note="Set the threshold and press **Find groups**." if ready else "",
        plot=gr.HTML(scatter_value(None), visible=False),
        map_note=f"Press **Redraw** to draw the map of the {n} images ({map_estimates(n)})." if ready else "",
        map_cluster=gr.Dropdown(choices=[], value=None, visible=False),
        drawn=False,
    )


@guard
def finished(ctx: Ctx, key: str, marker: str) -> View:
    """A clustering, features or zero-shot task of this project ended: the step read again (and why it failed)."""
    task = finished_task(key, marker, {"cluster", "features", "label"})
    if task is None:
        return skipped(View)
    out = refresh(ctx, key)
    return out if task.status == "done" else out._replace(status=_task_failed(task))


@guard
def start_clusters(ctx: Ctx, key: str, feats: str, k_value) -> str:
    """Start k-means over ``feats`` in the background (``k_value`` 0: chosen automatically); the status line."""
    project = ctx.open(key)
    if not project.features.sets(feats):
        raise gr.Error(f"There are no {feats} features: compute them in step 5 first.")
    root = str(project.root)
    work = functools.partial(_cluster_task, root, int(k_value or 0) or None, feats)
    run_in_background(root, "cluster", work, label=f"clusters ({feats})")
    return "Clustering… progress is in the jobs panel."


def _show(ctx: Ctx, key: str, v: dict) -> Shown:
    return render(ctx.open(key), v, [], 0, None)


@guard
def open_cluster(ctx: Ctx, key: str, evt: gr.SelectData) -> Shown:
    """A click on a row of the cluster table: that cluster in the gallery."""
    row = evt.row_value or []
    if not row:
        return skipped(Shown)
    return open_cluster_number(ctx, key, row[0])


@guard
def open_cluster_number(ctx: Ctx, key: str, number) -> Shown:
    """Cluster ``number`` of the newest clustering in the gallery."""
    project = ctx.open(key)
    try:
        cl = int(str(number).strip())
    except ValueError:
        raise gr.Error("Give a cluster number (the # column).") from None
    ids = cluster_members(project, cl)
    return _show(ctx, key, _view("cluster", f"Cluster {cl}", ids))


@guard
def search(ctx: Ctx, key: str, text: str) -> Shown:
    """The images best matching ``text`` (CLIP), best first."""
    project = ctx.open(key)
    if not (text or "").strip():
        raise gr.Error('Type what to look for first, e.g. "a red car at night".')
    _need_features(project, "clip")
    results = text_search(project, text, k=SEARCH_K)
    ids = [r["image_id"] for r in results]
    title = f"Best matches for “{md_escape(text.strip())}”"
    return _show(ctx, key, _view("search", title, ids, note=_span("similarity", [r["score"] for r in results])))


@guard
def similar(ctx: Ctx, key: str, feats: str, pick, chosen) -> Shown:
    """The image last clicked (else the last selected) and its nearest neighbours on ``feats``."""
    project = ctx.open(key)
    ref = pick if pick is not None else (chosen[-1] if chosen else None)
    if ref is None:
        raise gr.Error("Click a thumbnail first: Show similar finds the images most like the one you clicked.")
    ref = int(ref)
    _need_features(project, feats)
    results = similar_images(project, ref, k=SIMILAR_K, features=feats or "clip")
    ids = [ref, *(r["image_id"] for r in results)]  # the picked image first, then its neighbours
    title = f"Image {ref} and its {len(results)} nearest neighbours ({feats})"
    note = _span("similarity", [r["score"] for r in results])
    return render(project, _view("similar", title, ids, note=note), [], 0, ref)


@guard
def show_queue(ctx: Ctx, key: str, by: str, n) -> Shown:
    """The review queue ordered ``by``, its first ``n`` images."""
    project = ctx.open(key)
    if active_run(project) is None:
        raise gr.Error("The review queue orders pseudo-labels: run zero-shot first (step 5, ②).")
    return _show(ctx, key, queue_view(project, by, n))


# --- events: the gallery's selection and pages ----------------------------------------------------------------
@guard
def click(ctx: Ctx, key: str, v: dict, chosen, page_no, ids, evt: gr.SelectData) -> Shown:
    """A click on a thumbnail: select it (or unselect it), and it becomes the picked image."""
    chosen = list(chosen or [])
    idx = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else None)
    if idx is None or idx >= len(ids or []):
        return skipped(Shown)
    image_id = int(ids[idx])
    chosen = [i for i in chosen if i != image_id] if image_id in chosen else [*chosen, image_id]
    return render(ctx.open(key), v, chosen, page_no, image_id)


@guard
def select_ids(ctx: Ctx, key: str, v: dict, page_no, text: str) -> Shown:
    """Select images by id (comma-separated; the last one is also the picked one) — for scripts and the API."""
    try:
        chosen = [int(t) for t in str(text or "").replace(" ", "").split(",") if t]
    except ValueError:
        raise gr.Error("Give image ids separated by commas, e.g. 3,7,12.") from None
    return render(ctx.open(key), v, chosen, page_no, chosen[-1] if chosen else None)


@guard
def select_page(ctx: Ctx, key: str, v: dict, chosen, page_no, ids, pick) -> Shown:
    """Add every image of the page to the selection."""
    merged = list(dict.fromkeys([*(chosen or []), *(ids or [])]))
    return render(ctx.open(key), v, merged, page_no, pick)


@guard
def clear(ctx: Ctx, key: str, v: dict, page_no) -> Shown:
    """Select nothing."""
    return render(ctx.open(key), v, [], page_no, None)


@guard
def prev_page(ctx: Ctx, key: str, v: dict, chosen, page_no, pick) -> Shown:
    """The page before (the selection kept)."""
    return render(ctx.open(key), v, chosen, int(page_no or 0) - 1, pick)


@guard
def next_page(ctx: Ctx, key: str, v: dict, chosen, page_no, pick) -> Shown:
    """The page after (the selection kept)."""
    return render(ctx.open(key), v, chosen, int(page_no or 0) + 1, pick)


# --- events: bulk actions on the selection, or on the whole view -----------------------------------------------
def _targets(v: dict, chosen) -> list[int]:
    ids, _ = scope(v, chosen)
    if not ids:
        raise gr.Error("Nothing is shown: open a cluster, search, draw the map or show the queue first.")
    return ids


def _acted(project: Project, v: dict, page_no) -> Acted:
    """Table, counts and the view read again after an action (the selection cleared)."""
    return joined(Acted, stats(project), render(project, redo(project, v), [], page_no, None))


def _after(project: Project, v: dict, page_no, message: str) -> Acted:
    gr.Info(message, duration=5)
    return _acted(project, v, page_no)


@guard
def label(ctx: Ctx, key: str, v: dict, chosen, page_no, cls) -> Acted:
    """Label the selection (else the whole view) as ``cls`` (a list in multi-label projects)."""
    project = ctx.open(key)
    ids = _targets(v, chosen)
    if not cls:
        raise gr.Error("Pick the class first (the box left of the Label button).")
    n = label_images(project, ids, cls)
    shown = ", ".join(cls) if isinstance(cls, list) else cls
    return _after(project, v, page_no, f"Labeled {n} image(s) as {shown}.")


def _edit_one(ctx: Ctx, key: str, v: dict, chosen, page_no, cls, mode: str) -> Acted:
    project = ctx.open(key)
    ids = _targets(v, chosen)
    names = [cls] if isinstance(cls, str) else list(cls or [])
    if len(names) != 1:
        raise gr.Error("Pick exactly one class (the box left of the Label button) to add or remove.")
    res = edit_label(project, ids, names[0], mode)
    skipped = res["selected"] - res["changed"]
    done = f"Added {res['class']} to" if mode == "add" else f"Removed {res['class']} from"
    note = f"; {skipped} did not have it" if skipped else ""  # (add writes every selected image)
    return _after(project, v, page_no, f"{done} {res['changed']} image(s){note} (their other classes kept).")


@guard
def add_label(ctx: Ctx, key: str, v: dict, chosen, page_no, cls) -> Acted:
    """Multi-label: add one class to the selection (else the whole view, e.g. a cluster) — one undoable action."""
    return _edit_one(ctx, key, v, chosen, page_no, cls, "add")


@guard
def remove_label(ctx: Ctx, key: str, v: dict, chosen, page_no, cls) -> Acted:
    """Multi-label: remove one class from the selection (else the whole view) where it is — one undoable action."""
    return _edit_one(ctx, key, v, chosen, page_no, cls, "remove")


@guard
def accept(ctx: Ctx, key: str, v: dict, chosen, page_no) -> Acted:
    """Accept the pseudo-labels of the selection (else the whole view); a person's labels stay."""
    project = ctx.open(key)
    ids = _targets(v, chosen)
    n = accept_images(project, ids)
    kept = len(ids) - n
    message = f"Accepted {n} pseudo-label(s)" + (f"; {kept} kept your label or had none" if kept else "") + "."
    return _after(project, v, page_no, message)


@guard
def exclude(ctx: Ctx, key: str, v: dict, chosen, page_no) -> Acted:
    """Exclude the selection (else the whole view) from labels, counts, search and exports."""
    project = ctx.open(key)
    n = exclude_images(project, _targets(v, chosen))
    return _after(project, v, page_no, f"Excluded {n} image(s): they leave labels, counts, search and exports.")


@guard
def include(ctx: Ctx, key: str, v: dict, chosen, page_no) -> Acted:
    """Include the selection (else the whole view) again."""
    project = ctx.open(key)
    n = include_images(project, _targets(v, chosen))
    return _after(project, v, page_no, f"Included {n} image(s) again, with their labels.")


@guard
def undo(ctx: Ctx, key: str, v: dict, chosen, page_no) -> Acted:
    """Undo the project's newest label or exclusion change."""
    project = ctx.open(key)
    undo_last(project)
    return _acted(project, v, page_no)


@guard
def redrawn(ctx: Ctx, key: str, v: dict, chosen, page_no, pick) -> Acted:
    """After a label change in the preview: the table, counts and the view read again (the selection kept)."""
    project = ctx.open(key)
    return joined(Acted, stats(project), render(project, redo(project, v), chosen, page_no, pick))


# --- events: near-duplicates ----------------------------------------------------------------------------------
@guard
def find_dups(ctx: Ctx, key: str, feats: str, threshold_value) -> Dups:
    """The groups of images at cosine similarity ≥ ``threshold_value`` on ``feats``."""
    project = ctx.open(key)
    _need_features(project, feats)
    return dup_outputs(duplicate_rows(project, float(threshold_value), feats or "clip"), threshold_value)


@guard
def first_dups(ctx: Ctx, key: str, feats: str, threshold_value, groups) -> Dups:
    """Opening the tab finds the groups once in small projects (the Find button finds them again)."""
    project = ctx.open(key, required=False)
    if project is None or groups:
        return skipped(Dups)
    if not project.features.sets(feats or "clip"):
        note = empty_state(f"Near-duplicates need {feats} features: compute them in step 5.")
        return Dups(dup_table=gr.skip(), dup_groups=gr.skip(), dup_note=note)
    if project.image_count() > MAP_INLINE:
        return Dups(
            dup_table=gr.skip(),
            dup_groups=gr.skip(),
            dup_note=empty_state("Set the threshold and press <b>Find groups</b>."),
        )
    return find_dups(ctx, key, feats, threshold_value)


@guard
def open_group(ctx: Ctx, key: str, groups, evt: gr.SelectData) -> Shown:
    """A click on a row of the groups table: that group in the gallery."""
    row = evt.row_value or []
    if not row:
        return skipped(Shown)
    return open_group_number(ctx, key, groups, row[0])


@guard
def open_group_number(ctx: Ctx, key: str, groups, number) -> Shown:
    """Near-duplicate group ``number`` (1-based, the table's order) in the gallery."""
    try:
        g = int(str(number).strip())
    except ValueError:
        raise gr.Error("Give a group number (the first column).") from None
    if not 1 <= g <= len(groups or []):
        raise gr.Error("There is no such group: find the near-duplicates again.")
    return _show(ctx, key, _view("duplicates", f"Near-duplicate group {g}", groups[g - 1], group=g))


@guard
def keep_shown(ctx: Ctx, key: str, feats: str, threshold_value, v: dict, chosen, page_no) -> DupActed:
    """Keep one image of the group shown (the one selected, else one you labeled, else the first), exclude the rest."""
    project = ctx.open(key)
    if v["kind"] != "duplicates":
        raise gr.Error("Show a near-duplicate group first (click a row of the table).")
    keep = int(chosen[0]) if chosen and len(chosen) == 1 else None
    res = keep_one(project, v["ids"], keep=keep)
    out = _after(project, v, page_no, f"Kept image {res['kept']}; excluded {res['excluded']}.")
    return joined(DupActed, out, find_dups(ctx, key, feats, threshold_value))


@guard
def keep_every(ctx: Ctx, key: str, feats: str, threshold_value, groups, v: dict, page_no) -> DupActed:
    """Keep one image of every group, exclude the rest."""
    project = ctx.open(key)
    res = exclude_duplicates(project, groups)
    message = f"Kept one image in each of {res['groups']} groups; excluded {res['excluded']}."
    out = _after(project, v, page_no, message)
    return joined(DupActed, out, find_dups(ctx, key, feats, threshold_value))


@guard
def show_excluded(ctx: Ctx, key: str) -> Shown:
    """The excluded images in the gallery."""
    project = ctx.open(key)
    return _show(ctx, key, _view("excluded", "Excluded images", excluded_images(project)))


# --- events: the map ------------------------------------------------------------------------------------------
def _drawn_map(project: Project, feats: str, how: str, colour_by: str) -> MapOut:
    """The map of a project whose map can be drawn at once (:func:`labeler.projection.map_ready`)."""
    cols = map_frame(project, feats, how, colour_by)
    sample = f" ({cols['shown']} drawn)" if cols["shown"] < cols["n"] else ""
    secs = cols.get("seconds")
    timing = f" {cols['method'].upper()} of {cols['n']:,} points took {took(secs)}." if secs is not None else ""
    note = (
        f"{cols['method'].upper()} of {md_escape(cols['features'])}: {cols['n']} images{sample}.{timing} "
        "**Drag a box** (or a lasso) on the map to show the images inside it; **click a point** for that "
        "image and its nearest neighbours."
    )
    clusters = cluster_summaries(project, cols["cluster_run"], sort="cluster") if cols["cluster_run"] else []
    pick = gr.Dropdown(
        choices=[(f"Show cluster {c['cluster']} ({c['size']} images)", c["cluster"]) for c in clusters],
        value=None,
        visible=bool(clusters),
    )
    value = scatter_value(cols, title=colour_by, thumbs=project.thumbs_dir)
    return MapOut(plot=gr.HTML(value, visible=True), map_note=note, map_cluster=pick, drawn=True)


@guard
def draw_map(ctx: Ctx, key: str, feats: str, how: str, colour_by: str) -> MapOut:
    """Draw the map (``how``: pca or umap) coloured by ``colour_by``, or start computing it in the background."""
    project = ctx.open(key, required=False)
    if project is None:
        return MapOut(plot=gr.skip(), map_note=empty_state(NO_PROJECT), map_cluster=gr.skip(), drawn=gr.skip())
    if not project.features.sets(feats or "clip"):
        note = empty_state(f"The map needs {feats} features: compute them in step 5.")
        return MapOut(plot=gr.HTML(visible=False), map_note=note, map_cluster=gr.Dropdown(visible=False), drawn=False)
    if map_method(how) == "umap" and not umap_available():
        return MapOut(plot=gr.skip(), map_note=f"**{UMAP_MISSING}.**", map_cluster=gr.skip(), drawn=gr.skip())
    if not map_ready(project, feats, how):
        root = str(project.root)
        measured = last_map_timing(project, feats, how)  # before the job replaces it
        run_in_background(root, "map", functools.partial(_map_task, root, feats, how), label=f"map ({how}, {feats})")
        n = project.image_count()
        note = (
            f"Computing the {how.upper()} map of {n} images ({map_estimate(n, how, measured)})… "
            "it shows here when done."
        )
        return MapOut(plot=gr.skip(), map_note=note, map_cluster=gr.skip(), drawn=gr.skip())
    return _drawn_map(project, feats, how, colour_by)


@guard
def redraw_drawn(ctx: Ctx, key: str, feats: str, how: str, colour_by: str, is_drawn: bool) -> MapOut:
    """After a bulk action: draw a map that is on screen again (labels and exclusions change its points)."""
    if not is_drawn:  # no map drawn yet: nothing to keep up to date
        return skipped(MapOut)
    return draw_map(ctx, key, feats, how, colour_by)


@guard
def map_finished(ctx: Ctx, key: str, marker: str, feats: str, how: str, colour_by: str) -> MapOut:
    """A map computed in the background is done: draw it (or say why it failed)."""
    task = finished_task(key, marker, {"map"})
    if task is None:
        return skipped(MapOut)
    if task.status != "done":
        return skipped(MapOut)._replace(map_note=_task_failed(task))
    return draw_map(ctx, key, feats, how, colour_by)


@guard
def map_cluster_pick(ctx: Ctx, key: str, feats: str, number) -> Shown:
    """A cluster of the run the map is coloured with, in the gallery."""
    if number is None or number == "":
        return skipped(Shown)
    project = ctx.open(key)
    run = latest_cluster_run(project, feats or "clip")
    if run is None:
        raise gr.Error(f"No clusters of the {feats} features yet: make them in the Clusters tab.")
    ids = cluster_members(project, int(number), run_id=run["id"])
    return render(project, _view("cluster", f"Cluster {int(number)}", ids), [], 0, None)


@guard
def map_select(ctx: Ctx, key: str, feats: str, how: str, evt: gr.EventData) -> Shown:
    """A drag on the map (a box or a lasso: the images inside) or a click on a point (it and its neighbours)."""
    sel = map_pick(getattr(evt, "_data", None))
    project = ctx.open(key)
    if sel.image_id is not None:
        return similar(ctx, key, feats, sel.image_id, [])
    if sel.lasso is not None:
        return render(project, _lasso_view(project, feats, how, sel.lasso), [], 0, None)
    if sel.box is None:
        return skipped(Shown)
    return render(project, _box_view(project, feats, how, *sel.box), [], 0, None)


@guard
def box_api(ctx: Ctx, key: str, feats: str, how: str, text: str) -> Shown:
    """Show the images in a box given as "x0,x1[,y0,y1]" (empty ends stay open) — for scripts and the API."""
    x0, x1, y0, y1 = parse_box(text)
    project = ctx.open(key)
    return render(project, _box_view(project, feats, how, x0, x1, y0, y1), [], 0, None)


@guard
def lasso_api(ctx: Ctx, key: str, feats: str, how: str, text: str) -> Shown:
    """Show the images inside a lasso given as "x,y; x,y; x,y; ..." (3 corners or more) — for scripts."""
    polygon = parse_lasso(text)
    project = ctx.open(key)
    return render(project, _lasso_view(project, feats, how, polygon), [], 0, None)


# --- layout -----------------------------------------------------------------------------------------------------
def _clusters_tab(c: dict) -> None:
    with gr.Row(equal_height=False):
        c["k"] = gr.Number(value=0, precision=0, minimum=0, label="Clusters (0 = auto)", scale=1, elem_id="explore-k")
        c["cluster_btn"] = gr.Button(
            "Cluster images", variant="primary", scale=1, elem_id="explore-cluster", elem_classes=["lb-center"]
        )
    c["table"] = gr.Dataframe(
        headers=HEADERS,
        interactive=False,
        max_height=330,
        elem_id="explore-clusters",
        label="Clusters, least pure first (click one to show it)",
        wrap=True,
        visible=False,
        column_widths=["8%", "10%", "22%", "15%", "13%", "20%", "12%"],
    )


def _map_tab(c: dict) -> None:
    with gr.Row(equal_height=True):
        c["colour"] = gr.Radio(
            list(MAP_COLOURS), value="pseudo-label", label="Colour by", scale=3, elem_id="map-colour"
        )
        c["method"] = gr.Radio(  # PCA first: instant; UMAP, where offered, on demand (seconds to minutes)
            MAP_METHODS, value="pca", label="Projection", scale=1, elem_id="map-method"
        )
    c["map_note"] = gr.Markdown(elem_id="map-note")
    c["plot"] = scatter("explore-map", visible=False)
    with gr.Row(equal_height=False):
        c["map_cluster"] = gr.Dropdown(
            label="Show a cluster in the gallery", choices=[], value=None, scale=3, elem_id="map-cluster", visible=False
        )
        c["draw_btn"] = gr.Button("Redraw", size="sm", scale=1, min_width=70, elem_id="map-draw")


def _dups_tab(c: dict) -> None:
    with gr.Row(equal_height=False):
        c["threshold"] = gr.Slider(
            0.8, 1.0, value=0.95, step=0.005, label="Cosine similarity ≥", scale=3, elem_id="dup-threshold"
        )
        c["dup_btn"] = gr.Button(
            "Find groups", variant="primary", scale=1, elem_id="dup-find", elem_classes=["lb-center"]
        )
    c["dup_note"] = gr.Markdown(elem_id="dup-note")
    c["dup_table"] = gr.Dataframe(
        headers=DUP_HEADERS,
        interactive=False,
        max_height=260,
        elem_id="dup-groups",
        label="Groups, largest first (click one to show it)",
        wrap=True,
        visible=False,
        column_widths=["12%", "14%", "14%", "14%", "46%"],
    )
    with gr.Row():
        c["keep_btn"] = gr.Button("Keep one of this group", size="sm", elem_id="dup-keep")
        c["keep_all_btn"] = gr.Button("Keep one per group", size="sm", elem_id="dup-keep-all")
        c["excluded_btn"] = gr.Button("Excluded images", size="sm", elem_id="dup-excluded")


def _queue_tab(c: dict) -> None:
    c["order"] = gr.Radio(ORDER_CHOICES, value="margin", label="Likely mistakes first, by", elem_id="queue-order")
    with gr.Row(equal_height=False):
        c["limit"] = gr.Number(
            value=240, precision=0, minimum=1, maximum=100_000, label="Images", scale=1, elem_id="queue-limit"
        )
        c["queue_btn"] = gr.Button(
            "Show queue", variant="primary", scale=1, elem_id="queue-show", elem_classes=["lb-center"]
        )
    gr.Markdown(
        "Images you labeled leave the queue. *Disagreement* compares each image's label with a "
        "similarity-weighted vote of its 10 nearest neighbours on DINO features (CLIP when there are "
        "none): a cheap label-noise detector.",
        elem_classes=["lb-note"],
    )


def _gallery_column(c: dict) -> None:
    with gr.Row(equal_height=True):
        c["query"] = gr.Textbox(
            label="Search by text (CLIP)",
            placeholder="a red car at night",
            scale=4,
            elem_id="explore-query",
            show_label=False,
            container=False,
        )
        c["search_btn"] = gr.Button("Search", scale=1, elem_id="explore-search")
    c["info"] = gr.Markdown(elem_id="explore-shown")
    c["gallery"] = gr.Gallery(
        columns=5,
        height=380,
        allow_preview=False,
        object_fit="cover",
        fit_columns=False,  # a few images keep their size (gradio would stretch them over the row)
        show_label=False,
        elem_id="explore-gallery",
        buttons=[],
        visible=False,
    )
    with gr.Row(visible=False) as c["tools"]:
        c["prev_btn"] = gr.Button("← Prev", size="sm", elem_id="explore-prev", min_width=60)
        c["next_btn"] = gr.Button("Next →", size="sm", elem_id="explore-next", min_width=60)
        c["page_all_btn"] = gr.Button("Select page", size="sm", elem_id="explore-select-page", min_width=60)
        c["clear_btn"] = gr.Button("Clear", size="sm", elem_id="explore-clear", min_width=60)
        c["similar_btn"] = gr.Button("Show similar", size="sm", elem_id="explore-similar", min_width=60)
        c["preview_btn"] = preview.opener("explore")
    with gr.Row(visible=False, equal_height=True) as c["actions"]:
        c["target"] = gr.Dropdown(
            label="Class", choices=[], scale=2, container=False, show_label=False, elem_id="explore-target"
        )
        c["label_btn"] = gr.Button("Label as →", variant="primary", size="sm", scale=2, elem_id="explore-label")
        c["add_btn"] = gr.Button("Add class", size="sm", scale=1, elem_id="explore-add", visible=False)
        c["remove_btn"] = gr.Button("Remove class", size="sm", scale=1, elem_id="explore-remove", visible=False)
    with gr.Row(visible=False) as c["actions2"]:
        c["accept_btn"] = gr.Button("Accept pseudo-labels", size="sm", elem_id="explore-accept")
        c["exclude_btn"] = gr.Button("Exclude", size="sm", elem_id="explore-exclude")
        c["include_btn"] = gr.Button("Include again", size="sm", elem_id="explore-include", visible=False)
        c["undo_btn"] = gr.Button("↶ Undo", size="sm", elem_id="explore-undo")


def _layout(c: dict) -> None:
    """The step's components, into ``c`` by name (the names of the outputs' fields where they are outputs)."""
    with gr.Row(equal_height=True):
        c["status"] = gr.Markdown(elem_id="explore-status", scale=4)
        c["features"] = gr.Radio(
            ["clip", "dino"], value="clip", label="Features for clusters, map, similar", scale=1, elem_id="explore-feat"
        )
    c["counts"] = gr.Markdown(elem_id="explore-counts")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=420), gr.Tabs(elem_id="explore-views"):
            with gr.Tab("Clusters", id="clusters", elem_id="explore-tab-clusters"):
                _clusters_tab(c)
            with gr.Tab("Map", id="map", elem_id="explore-tab-map") as c["map_tab"]:
                _map_tab(c)
            with gr.Tab("Near-duplicates", id="duplicates", elem_id="explore-tab-dups") as c["dup_tab"]:
                _dups_tab(c)
            with gr.Tab("Review queue", id="queue", elem_id="explore-tab-queue"):
                _queue_tab(c)
        with gr.Column(scale=6, min_width=480):
            _gallery_column(c)
    c["view"] = gr.State(NO_VIEW)  # {"kind", "title", "ids", "params"}: ids only
    c["selection"] = gr.State([])  # selected image ids
    c["page"] = gr.State(0)
    c["page_ids"] = gr.State([])  # ids on the gallery page, in gallery order
    c["picked"] = gr.State(None)  # the last image clicked (for "Show similar")
    c["dup_groups"] = gr.State([])  # image ids of each near-duplicate group, in table order
    c["drawn"] = gr.State(False)  # a map is on screen (bulk actions then draw it again)
    # hidden boxes: the API's way to say what a click on a table, the gallery or the map says
    for name in ("cluster_box", "ids_box", "group_box", "box_box", "lasso_box"):
        c[name] = gr.Textbox(visible=False)


def _outs(outputs_type: type, c: dict) -> list:
    """The components of ``outputs_type``'s fields, in order (:func:`~labeler.ui.common.wire`)."""
    return wire(outputs_type, **{f: c[f] for f in outputs_type._fields})


# --- wiring -----------------------------------------------------------------------------------------------------
def build(ctx: Ctx) -> dict:
    """Lay out the step and wire its events; returns the step's refresh for the wizard."""
    c: dict = {}
    _layout(c)
    key, feats = ctx.project, c["features"]
    shown, acted, dups, mapped = _outs(Shown, c), _outs(Acted, c), _outs(Dups, c), _outs(MapOut, c)
    dup_acted = _outs(DupActed, c)
    nav = [key, c["view"], c["selection"], c["page"]]

    def on(event, handler, inputs, outputs, api_name=None):
        """Wire ``event`` to ``handler`` bound to ``ctx``: public under ``api_name``, private without one."""
        vis = {"api_name": api_name} if api_name else {"api_visibility": "private"}
        return event(bind(handler, ctx), inputs, outputs, **vis)

    # clusters, search, similar, queue
    on(c["cluster_btn"].click, start_clusters, [key, feats, c["k"]], [c["status"]], "explore_cluster")
    on(c["table"].select, open_cluster, [key], shown)
    on(c["cluster_box"].submit, open_cluster_number, [key, c["cluster_box"]], shown, "explore_open_cluster")
    on(c["search_btn"].click, search, [key, c["query"]], shown, "explore_search")
    on(c["query"].submit, search, [key, c["query"]], shown)
    on(c["similar_btn"].click, similar, [key, feats, c["picked"], c["selection"]], shown, "explore_similar")
    on(c["queue_btn"].click, show_queue, [key, c["order"], c["limit"]], shown, "explore_queue")

    # the gallery's selection and pages
    on(c["gallery"].select, click, [*nav, c["page_ids"]], shown)
    on(c["ids_box"].submit, select_ids, [key, c["view"], c["page"], c["ids_box"]], shown, "explore_select_ids")
    on(c["page_all_btn"].click, select_page, [*nav, c["page_ids"], c["picked"]], shown, "explore_select_page")
    on(c["clear_btn"].click, clear, [key, c["view"], c["page"]], shown, "explore_clear")
    on(c["prev_btn"].click, prev_page, [*nav, c["picked"]], shown)
    on(c["next_btn"].click, next_page, [*nav, c["picked"]], shown, "explore_next_page")

    # bulk actions; each then draws a map on screen again (labels and exclusions change it, no Redraw needed)
    map_in = [key, feats, c["method"], c["colour"]]
    then_redraw = [bind(redraw_drawn, ctx), [*map_in, c["drawn"]], mapped]
    on(c["label_btn"].click, label, [*nav, c["target"]], acted, "explore_label").then(
        *then_redraw, api_visibility="private"
    )
    for btn, handler, api in (
        ("add_btn", add_label, "explore_add_label"),
        ("remove_btn", remove_label, "explore_remove_label"),
    ):
        on(c[btn].click, handler, [*nav, c["target"]], acted, api).then(*then_redraw, api_visibility="private")
    for btn, handler, api in (
        ("accept_btn", accept, "explore_accept"),
        ("exclude_btn", exclude, "explore_exclude"),
        ("include_btn", include, "explore_include"),
        ("undo_btn", undo, "explore_undo"),
    ):
        on(c[btn].click, handler, nav, acted, api).then(*then_redraw, api_visibility="private")

    # near-duplicates
    dup_in = [key, feats, c["threshold"]]
    on(c["dup_btn"].click, find_dups, dup_in, dups, "explore_duplicates")
    on(c["dup_tab"].select, first_dups, [*dup_in, c["dup_groups"]], dups)
    on(c["dup_table"].select, open_group, [key, c["dup_groups"]], shown)
    on(c["group_box"].submit, open_group_number, [key, c["dup_groups"], c["group_box"]], shown, "explore_open_group")
    on(c["keep_btn"].click, keep_shown, [*dup_in, *nav[1:]], dup_acted, "explore_keep_one").then(
        *then_redraw, api_visibility="private"
    )
    keep_each_in = [*dup_in, c["dup_groups"], c["view"], c["page"]]
    on(c["keep_all_btn"].click, keep_every, keep_each_in, dup_acted, "explore_keep_one_each").then(
        *then_redraw, api_visibility="private"
    )
    on(c["excluded_btn"].click, show_excluded, [key], shown, "explore_excluded")

    # the map
    for event, api in (
        (c["map_tab"].select, None),
        (c["draw_btn"].click, "explore_map"),
        (c["colour"].input, None),
        (c["method"].input, None),
    ):
        on(event, draw_map, map_in, mapped, api)
    on(c["plot"].select, map_select, [key, feats, c["method"]], shown)
    on(c["map_cluster"].input, map_cluster_pick, [key, feats, c["map_cluster"]], shown, "explore_map_cluster")
    on(c["box_box"].submit, box_api, [key, feats, c["method"], c["box_box"]], shown, "explore_map_box")
    on(c["lasso_box"].submit, lasso_api, [key, feats, c["method"], c["lasso_box"]], shown, "explore_map_lasso")

    # the preview of one image (Preview, the key v, a double-click); a label set in it redraws the step
    after = (bind(redrawn, ctx), [key, c["view"], c["selection"], c["page"], c["picked"]], acted)
    preview.build(ctx, "explore", c["preview_btn"], c["page_ids"], c["picked"], after=after)

    # background tasks that finished
    view = _outs(View, c)
    on(ctx.finished.change, finished, [key, ctx.finished], view)
    on(ctx.finished.change, map_finished, [key, ctx.finished, *map_in[1:]], mapped)
    return {"refresh": bind(refresh, ctx), "outputs": view, "api_name": "explore_view"}
