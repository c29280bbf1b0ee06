"""Step 7 · Explore: browse by cluster, map, similarity and near-duplicates; walk the review queue; act in bulk.

The left column holds the views, each of which fills the one gallery on the right:

* **Clusters** — k-means runs (:func:`labeler.clusters.cluster_run`, in the background) summarised per
  cluster, least pure first; click a row to show the cluster.
* **Map** — the 2-D projection (:mod:`labeler.projection` through :func:`labeler.map_frame`: PCA,
  or UMAP when installed) coloured by pseudo-label, your label, final label or cluster, drawn by
  :mod:`labeler.app.scatter`; drag a box on it to show the images inside, click a point for its neighbours.
* **Near-duplicates** — groups above a cosine threshold (:func:`labeler.duplicate_rows`); show a
  group, keep one image of it (or of every group) and exclude the rest; see the excluded images.
* **Review queue** — :func:`labeler.review.review_queue`: lowest confidence, smallest margin, highest
  entropy, or the CLIP label against a k-NN vote on DINO features — the likely mistakes first.

Above the gallery: text search (CLIP). In the gallery: click thumbnails to select them (click again to
unselect), "Select page", and "Show similar" (neighbours of the last image clicked). The bulk buttons act
on the selection, or — when nothing is selected — on every image of the view (the whole cluster, map box,
group or queue), and say which: label as a class (human labels win everywhere), accept the pseudo-labels,
exclude, include again. The cluster table and the per-class counts update after each action.
"""

from __future__ import annotations

import gradio as gr

from ...clusters import cluster_members, cluster_run, cluster_summaries, latest_cluster_run
from ...ingest import thumbnail_for
from ...jobs import run_in_background
from ...labels import active_run
from ...project import Project
from ...projection import (
    MAP_COLOURS,
    MAP_INLINE,
    feature_map,
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
from ..common import (
    NO_PROJECT,
    Ctx,
    empty_state,
    error_text,
    finished_task,
    guard,
    md_escape,
    pct,
    thumb_caption,
    undo_last,
)
from ..scatter import scatter, scatter_value

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
MAP_METHODS = ["pca", "umap"] if umap_available() else ["pca"]
NO_VIEW = {"kind": "", "title": "", "ids": [], "params": {}}


def _view(kind: str, title: str, ids, **params) -> dict:
    """What the gallery shows: ids (all of the view, in order), a title, and how to read it again."""
    return {"kind": kind, "title": title, "ids": [int(i) for i in ids], "params": params}


def _span(name: str, scores) -> str:
    """ "similarity 0.99 → 0.93": a view's scores, first to last, for its title."""
    scores = [float(s) for s in scores if s is not None]
    return f"{name} {scores[0]:.2f} → {scores[-1]:.2f}" if scores else ""


def _need_features(project, feats: str | None) -> None:
    if not project.features.sets(feats or "clip"):
        raise gr.Error(f"There are no {feats or 'clip'} features yet: compute them in step 5 (①) first.")


def _counts_text(project) -> str:
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


def build(ctx: Ctx) -> dict:
    with gr.Row(equal_height=True):
        status = gr.Markdown(elem_id="explore-status", scale=4)
        features = gr.Radio(
            ["clip", "dino"], value="clip", label="Features for clusters, map, similar", scale=1, elem_id="explore-feat"
        )
    counts = gr.Markdown(elem_id="explore-counts")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=420), gr.Tabs(elem_id="explore-views"):
            with gr.Tab("Clusters", id="clusters", elem_id="explore-tab-clusters"):
                with gr.Row(equal_height=False):
                    k = gr.Number(
                        value=0, precision=0, minimum=0, label="Clusters (0 = auto)", scale=1, elem_id="explore-k"
                    )
                    cluster_btn = gr.Button(
                        "Cluster images",
                        variant="primary",
                        scale=1,
                        elem_id="explore-cluster",
                        elem_classes=["lb-center"],
                    )
                table = gr.Dataframe(
                    headers=HEADERS,
                    interactive=False,
                    max_height=330,
                    elem_id="explore-clusters",
                    label="Clusters, least pure first (click one to show it)",
                    wrap=True,
                    visible=False,
                    column_widths=["8%", "10%", "22%", "15%", "13%", "20%", "12%"],
                )
            with gr.Tab("Map", id="map", elem_id="explore-tab-map") as map_tab:
                with gr.Row(equal_height=True):
                    colour = gr.Radio(
                        list(MAP_COLOURS),
                        value="pseudo-label",
                        label="Colour by",
                        scale=3,
                        elem_id="map-colour",
                    )
                    method = gr.Radio(
                        MAP_METHODS, value=MAP_METHODS[-1], label="Projection", scale=1, elem_id="map-method"
                    )
                map_note = gr.Markdown(elem_id="map-note")
                plot = scatter("explore-map", visible=False)
                with gr.Row(equal_height=False):
                    map_cluster = gr.Dropdown(
                        label="Show a cluster in the gallery",
                        choices=[],
                        value=None,
                        scale=3,
                        elem_id="map-cluster",
                        visible=False,
                    )
                    draw_btn = gr.Button("Redraw", size="sm", scale=1, min_width=70, elem_id="map-draw")
            with gr.Tab("Near-duplicates", id="duplicates", elem_id="explore-tab-dups") as dup_tab:
                with gr.Row(equal_height=False):
                    threshold = gr.Slider(
                        0.8, 1.0, value=0.95, step=0.005, label="Cosine similarity ≥", scale=3, elem_id="dup-threshold"
                    )
                    dup_btn = gr.Button(
                        "Find groups", variant="primary", scale=1, elem_id="dup-find", elem_classes=["lb-center"]
                    )
                dup_note = gr.Markdown(elem_id="dup-note")
                dup_table = gr.Dataframe(
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
                    keep_btn = gr.Button("Keep one of this group", size="sm", elem_id="dup-keep")
                    keep_all_btn = gr.Button("Keep one per group", size="sm", elem_id="dup-keep-all")
                    excluded_btn = gr.Button("Excluded images", size="sm", elem_id="dup-excluded")
            with gr.Tab("Review queue", id="queue", elem_id="explore-tab-queue"):
                order = gr.Radio(
                    ORDER_CHOICES, value="margin", label="Likely mistakes first, by", elem_id="queue-order"
                )
                with gr.Row(equal_height=False):
                    limit = gr.Number(
                        value=240,
                        precision=0,
                        minimum=1,
                        maximum=100_000,
                        label="Images",
                        scale=1,
                        elem_id="queue-limit",
                    )
                    queue_btn = gr.Button(
                        "Show queue", variant="primary", scale=1, elem_id="queue-show", elem_classes=["lb-center"]
                    )
                gr.Markdown(
                    "Images you labeled leave the queue. *Disagreement* compares each image's label with a "
                    "similarity-weighted vote of its 10 nearest neighbours on DINO features (CLIP when there are "
                    "none): a cheap label-noise detector.",
                    elem_classes=["lb-note"],
                )
        with gr.Column(scale=6, min_width=480):
            with gr.Row(equal_height=True):
                query = gr.Textbox(
                    label="Search by text (CLIP)",
                    placeholder="a red car at night",
                    scale=4,
                    elem_id="explore-query",
                    show_label=False,
                    container=False,
                )
                search_btn = gr.Button("Search", scale=1, elem_id="explore-search")
            info = gr.Markdown(elem_id="explore-shown")
            gallery = gr.Gallery(
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
            with gr.Row(visible=False) as tools:
                prev_btn = gr.Button("← Prev", size="sm", elem_id="explore-prev", min_width=60)
                next_btn = gr.Button("Next →", size="sm", elem_id="explore-next", min_width=60)
                page_all_btn = gr.Button("Select page", size="sm", elem_id="explore-select-page", min_width=60)
                clear_btn = gr.Button("Clear", size="sm", elem_id="explore-clear", min_width=60)
                similar_btn = gr.Button("Show similar", size="sm", elem_id="explore-similar", min_width=60)
            with gr.Row(visible=False, equal_height=True) as actions:
                target = gr.Dropdown(
                    label="Class",
                    choices=[],
                    scale=2,
                    container=False,
                    show_label=False,
                    elem_id="explore-target",
                )
                label_btn = gr.Button("Label as →", variant="primary", size="sm", scale=2, elem_id="explore-label")
            with gr.Row(visible=False) as actions2:
                accept_btn = gr.Button("Accept pseudo-labels", size="sm", elem_id="explore-accept")
                exclude_btn = gr.Button("Exclude", size="sm", elem_id="explore-exclude")
                include_btn = gr.Button("Include again", size="sm", elem_id="explore-include", visible=False)
                undo_btn = gr.Button("↶ Undo", size="sm", elem_id="explore-undo")

    view = gr.State(NO_VIEW)  # {"kind", "title", "ids", "params"}: ids only
    selection = gr.State([])  # selected image ids
    page = gr.State(0)
    page_ids = gr.State([])  # ids on the gallery page, in gallery order
    picked = gr.State(None)  # the last image clicked (for "Show similar")
    dup_groups = gr.State([])  # image ids of each near-duplicate group, in table order
    drawn = gr.State(False)  # a map is on screen (bulk actions then draw it again)

    # --- rendering -----------------------------------------------------------------------------------------
    def clusters_view(project):
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
        table_rows = [
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
        return (
            f"**{len(rows)} clusters** (run {run['id']}, {md_escape(run['params'].get('features', ''))}). "
            "Low purity = the pseudo-labels disagree inside the cluster: look there first."
        ), table_rows

    def stats(project):
        text, rows = clusters_view(project)
        return text, gr.Dataframe(value=rows, visible=bool(rows)), _counts_text(project) if project else ""

    def scope(v: dict, chosen: list) -> tuple[list[int], str]:
        """The images a bulk button acts on, and how to say it."""
        if chosen:
            return [int(i) for i in chosen], f"{len(chosen)} selected"
        n = len(v["ids"])
        return list(v["ids"]), (f"all {n}" if n != 1 else "the 1 image")

    def render(project, v: dict, chosen, page_no, pick):
        """Gallery outputs for view ``v``: the page, the info line, states and the bulk buttons' texts."""
        chosen = [int(i) for i in chosen or []]
        ids = v["ids"]
        pages = max(1, -(-len(ids) // PAGE))
        page_no = min(max(0, int(page_no or 0)), pages - 1)
        start = page_no * PAGE
        items = explore_items(project, ids[start : start + PAGE]) if project is not None else []
        chosen_set = set(chosen)
        pics, shown_ids = [], []
        for it in items:
            thumb = thumbnail_for(project, it["id"], it["sha256"], it["path"])
            if thumb:
                pics.append((thumb, thumb_caption(it, chosen_set)))
                shown_ids.append(it["id"])
        has = bool(pics)
        if not v["kind"]:
            text = (
                empty_state(
                    "Open a cluster, drag across the map, show a near-duplicate group or the review queue on the left, "
                    "or search by text: the images show here, ready to label in bulk."
                )
                if project is not None and project.features.sets()
                else ""
            )
        elif not ids:
            text = empty_state(f"{v['title']}: no images.")
        else:
            where = f" · page {page_no + 1}/{pages}" if pages > 1 else ""
            sel = (
                f"**{len(chosen)} selected** — the buttons below act on them."
                if chosen
                else "Click thumbnails to select some; with none selected the buttons act on all of them."
            )
            note = f" ({v['params']['note'].rstrip('.')})" if v["params"].get("note") else ""
            text = f"**{v['title']}: {len(ids)} image{'' if len(ids) == 1 else 's'}**{where}{note}. {sel}"
        if pick is not None and pick in shown_ids:
            text += f" **Show similar** finds the images most like image {pick}, the last one clicked."
        ids_scope, what = scope(v, chosen)
        excluded_here = v["kind"] == "excluded" or any(it["status"] == "excluded" for it in items)
        return (
            gr.Gallery(
                value=pics,
                visible=has,
                selected_index=shown_ids.index(pick) if pick in shown_ids else None,
            ),
            text,
            gr.Row(visible=has),
            gr.Row(visible=has),
            gr.Row(visible=has),
            gr.Button(value=f"Label {what} as →"),
            gr.Button(value=f"Accept {what} pseudo-label" + ("s" if len(ids_scope) != 1 else "")),
            gr.Button(value=f"Exclude {what}"),
            gr.Button(value=f"Include {what} again", visible=excluded_here),
            v,
            chosen,
            page_no,
            shown_ids,
            pick,
        )

    gallery_outs = [
        gallery,
        info,
        tools,
        actions,
        actions2,
        label_btn,
        accept_btn,
        exclude_btn,
        include_btn,
        view,
        selection,
        page,
        page_ids,
        picked,
    ]
    stats_outs = [status, table, counts]

    def redo(project, v: dict) -> dict:
        """Views that change with labels and exclusions (queue, excluded) are read again after an action."""
        if v["kind"] == "queue":
            return queue_view(project, v["params"]["by"], v["params"]["limit"])
        if v["kind"] == "excluded":
            return _view("excluded", "Excluded images", excluded_images(project))
        return v

    def queue_view(project, by, n) -> dict:
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

    # --- events --------------------------------------------------------------------------------------------
    @guard
    def refresh(key):
        project = ctx.open(key, required=False)
        classes = project.classes if project is not None else []
        multi = bool(project and project.multi_label)
        ready = project is not None and bool(project.features.sets())
        return (
            *stats(project),
            gr.Dropdown(choices=classes, value=[] if multi else None, multiselect=multi),
            gr.Dataframe(value=[], visible=False),
            [],
            "Set the threshold and press **Find groups**." if ready else "",
            gr.HTML(scatter_value(None), visible=False),
            "Press **Redraw** to draw the map of the images." if ready else "",
            gr.Dropdown(choices=[], value=None, visible=False),
            False,
            *render(project, NO_VIEW, [], 0, None),
        )

    refresh_outs = [
        *stats_outs,
        target,
        dup_table,
        dup_groups,
        dup_note,
        plot,
        map_note,
        map_cluster,
        drawn,
        *gallery_outs,
    ]

    @guard
    def start_clusters(key, feats, k_value):
        project = ctx.open(key)
        if not project.features.sets(feats):
            raise gr.Error(f"There are no {feats} features: compute them in step 5 first.")
        root = str(project.root)
        k_int = int(k_value or 0) or None

        def work():
            p = Project(root)
            try:
                return cluster_run(p, k=k_int, features=feats)
            finally:
                p.close()

        run_in_background(root, "cluster", work, label=f"clusters ({feats})")
        return "Clustering… progress is in the jobs panel."

    def _show(key, v):
        return render(ctx.open(key), v, [], 0, None)

    @guard
    def open_cluster(key, evt: gr.SelectData):
        row = evt.row_value or []
        if not row:
            return (gr.skip(),) * len(gallery_outs)
        return open_cluster_number(key, row[0])

    @guard
    def open_cluster_number(key, number):
        project = ctx.open(key)
        try:
            cl = int(str(number).strip())
        except ValueError:
            raise gr.Error("Give a cluster number (the # column).") from None
        ids = cluster_members(project, cl)
        return _show(key, _view("cluster", f"Cluster {cl}", ids))

    @guard
    def search(key, text):
        project = ctx.open(key)
        if not (text or "").strip():
            raise gr.Error('Type what to look for first, e.g. "a red car at night".')
        _need_features(project, "clip")
        results = text_search(project, text, k=SEARCH_K)
        ids = [r["image_id"] for r in results]
        title = f"Best matches for “{md_escape(text.strip())}”"
        return _show(key, _view("search", title, ids, note=_span("similarity", [r["score"] for r in results])))

    @guard
    def similar(key, feats, pick, chosen):
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
    def show_queue(key, by, n):
        project = ctx.open(key)
        if active_run(project) is None:
            raise gr.Error("The review queue orders pseudo-labels: run zero-shot first (step 5, ②).")
        return _show(key, queue_view(project, by, n))

    @guard
    def click(key, v, chosen, page_no, ids, evt: gr.SelectData):
        chosen = list(chosen or [])
        idx = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else None)
        if idx is None or idx >= len(ids or []):
            return (gr.skip(),) * len(gallery_outs)
        image_id = int(ids[idx])
        chosen = [i for i in chosen if i != image_id] if image_id in chosen else [*chosen, image_id]
        return render(ctx.open(key), v, chosen, page_no, image_id)

    @guard
    def select_ids(key, v, page_no, text):
        """Select images by id (comma-separated; the last one is also the picked one) — for scripts and the API."""
        try:
            chosen = [int(t) for t in str(text or "").replace(" ", "").split(",") if t]
        except ValueError:
            raise gr.Error("Give image ids separated by commas, e.g. 3,7,12.") from None
        return render(ctx.open(key), v, chosen, page_no, chosen[-1] if chosen else None)

    @guard
    def select_page(key, v, chosen, page_no, ids, pick):
        merged = list(dict.fromkeys([*(chosen or []), *(ids or [])]))
        return render(ctx.open(key), v, merged, page_no, pick)

    @guard
    def clear(key, v, page_no):
        return render(ctx.open(key), v, [], page_no, None)

    def turn(delta):
        @guard
        def handler(key, v, chosen, page_no, pick):
            return render(ctx.open(key), v, chosen, int(page_no or 0) + delta, pick)

        return handler

    def _targets(v, chosen) -> list[int]:
        ids, _ = scope(v, chosen)
        if not ids:
            raise gr.Error("Nothing is shown: open a cluster, search, draw the map or show the queue first.")
        return ids

    def _after(project, v, page_no, message):
        gr.Info(message, duration=5)
        return (*stats(project), *render(project, redo(project, v), [], page_no, None))

    @guard
    def label(key, v, chosen, page_no, cls):
        project = ctx.open(key)
        ids = _targets(v, chosen)
        if not cls:
            raise gr.Error("Pick the class first (the box left of the Label button).")
        n = label_images(project, ids, cls)
        shown = ", ".join(cls) if isinstance(cls, list) else cls
        return _after(project, v, page_no, f"Labeled {n} image(s) as {shown}.")

    @guard
    def accept(key, v, chosen, page_no):
        project = ctx.open(key)
        ids = _targets(v, chosen)
        n = accept_images(project, ids)
        kept = len(ids) - n
        return _after(
            project,
            v,
            page_no,
            f"Accepted {n} pseudo-label(s)" + (f"; {kept} kept your label or had none" if kept else "") + ".",
        )

    @guard
    def exclude(key, v, chosen, page_no):
        project = ctx.open(key)
        n = exclude_images(project, _targets(v, chosen))
        return _after(project, v, page_no, f"Excluded {n} image(s): they leave labels, counts, search and exports.")

    @guard
    def undo(key, v, chosen, page_no):
        project = ctx.open(key)
        undo_last(project)
        return (*stats(project), *render(project, redo(project, v), [], page_no, None))

    @guard
    def include(key, v, chosen, page_no):
        project = ctx.open(key)
        n = include_images(project, _targets(v, chosen))
        return _after(project, v, page_no, f"Included {n} image(s) again, with their labels.")

    # near-duplicates
    def dup_outputs(rows, threshold_value):
        table_rows = [
            [r["group"], r["size"], f"{r['max_similarity']:.3f}", f"{r['min_similarity']:.3f}", r["labels"]]
            for r in rows
        ]
        n_img = sum(r["size"] for r in rows)
        note = (
            f"**{len(rows)} group{'s' if len(rows) != 1 else ''}** ({n_img} images) at similarity "
            f"≥ {float(threshold_value):.3f}. Click a group to "
            "show it, then keep one image of it (the one you selected, else one you labeled, else the first)."
            if rows
            else empty_state(f"No near-duplicates at similarity ≥ {float(threshold_value):.3f}.")
        )
        return gr.Dataframe(value=table_rows, visible=bool(rows)), [r["images"] for r in rows], note

    @guard
    def find_dups(key, feats, threshold_value):
        project = ctx.open(key)
        _need_features(project, feats)
        return dup_outputs(duplicate_rows(project, float(threshold_value), feats or "clip"), threshold_value)

    @guard
    def first_dups(key, feats, threshold_value, groups):
        """Opening the tab finds the groups once in small projects (the Find button finds them again)."""
        project = ctx.open(key, required=False)
        if project is None or groups:
            return (gr.skip(),) * 3
        if not project.features.sets(feats or "clip"):
            return gr.skip(), gr.skip(), empty_state(f"Near-duplicates need {feats} features: compute them in step 5.")
        if project.image_count() > MAP_INLINE:
            return gr.skip(), gr.skip(), empty_state("Set the threshold and press <b>Find groups</b>.")
        return find_dups(key, feats, threshold_value)

    @guard
    def open_group(key, groups, evt: gr.SelectData):
        row = evt.row_value or []
        if not row:
            return (gr.skip(),) * len(gallery_outs)
        return open_group_number(key, groups, row[0])

    @guard
    def open_group_number(key, groups, number):
        try:
            g = int(str(number).strip())
        except ValueError:
            raise gr.Error("Give a group number (the first column).") from None
        if not 1 <= g <= len(groups or []):
            raise gr.Error("There is no such group: find the near-duplicates again.")
        return _show(key, _view("duplicates", f"Near-duplicate group {g}", groups[g - 1], group=g))

    @guard
    def keep_shown(key, feats, threshold_value, v, chosen, page_no):
        project = ctx.open(key)
        if v["kind"] != "duplicates":
            raise gr.Error("Show a near-duplicate group first (click a row of the table).")
        keep = int(chosen[0]) if chosen and len(chosen) == 1 else None
        res = keep_one(project, v["ids"], keep=keep)
        out = _after(project, v, page_no, f"Kept image {res['kept']}; excluded {res['excluded']}.")
        return (*out, *find_dups(key, feats, threshold_value))

    @guard
    def keep_every(key, feats, threshold_value, groups, v, page_no):
        project = ctx.open(key)
        res = exclude_duplicates(project, groups)
        out = _after(
            project, v, page_no, f"Kept one image in each of {res['groups']} groups; excluded {res['excluded']}."
        )
        return (*out, *find_dups(key, feats, threshold_value))

    @guard
    def show_excluded(key):
        project = ctx.open(key)
        return _show(key, _view("excluded", "Excluded images", excluded_images(project)))

    # map
    @guard
    def draw_map(key, feats, how, colour_by):
        project = ctx.open(key, required=False)
        if project is None:
            return gr.skip(), empty_state(NO_PROJECT), gr.skip(), gr.skip()
        if not project.features.sets(feats or "clip"):
            note = empty_state(f"The map needs {feats} features: compute them in step 5.")
            return gr.HTML(visible=False), note, gr.Dropdown(visible=False), False
        if not map_ready(project, feats, how):
            root = str(project.root)

            def work():
                p = Project(root)
                try:
                    return feature_map(p, feats, map_method(how))
                finally:
                    p.close()

            run_in_background(root, "map", work, label=f"map ({how}, {feats})")
            return gr.skip(), f"Computing the {how.upper()} map… it shows here when done.", gr.skip(), gr.skip()
        cols = map_frame(project, feats, how, colour_by)
        sample = f" ({cols['shown']} drawn)" if cols["shown"] < cols["n"] else ""
        note = (
            f"{cols['method'].upper()} of {md_escape(cols['features'])}: {cols['n']} images{sample}. "
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
        return gr.HTML(value, visible=True), note, pick, True

    @guard
    def redraw_drawn(key, feats, how, colour_by, is_drawn):
        """After a bulk action: draw a map that is on screen again (labels and exclusions change its points)."""
        if not is_drawn:  # no map drawn yet: nothing to keep up to date
            return (gr.skip(),) * 4
        return draw_map(key, feats, how, colour_by)

    @guard
    def map_cluster_pick(key, feats, number):
        """A cluster of the run the map is coloured with, in the gallery."""
        if number is None or number == "":
            return (gr.skip(),) * len(gallery_outs)
        project = ctx.open(key)
        run = latest_cluster_run(project, feats or "clip")
        if run is None:
            raise gr.Error(f"No clusters of the {feats} features yet: make them in the Clusters tab.")
        ids = cluster_members(project, int(number), run_id=run["id"])
        return render(project, _view("cluster", f"Cluster {int(number)}", ids), [], 0, None)

    def _box_view(project, feats, how, x0, x1, y0, y1):
        """The images whose map point lies in the box (None: that side open), as a gallery view."""
        ids = map_box(project, feats, how, (x0, x1), (y0, y1))

        def span(lo, hi) -> str:
            lo, hi = (lo, hi) if lo is None or hi is None else sorted((lo, hi))
            return f"{'' if lo is None else f'{lo:.2f}'}…{'' if hi is None else f'{hi:.2f}'}"

        return _view("map", f"Map box x {span(x0, x1)}, y {span(y0, y1)}", ids)

    def _lasso_view(project, feats, how, polygon):
        """The images whose map point lies inside the lasso outline, as a gallery view."""
        ids = map_lasso(project, feats, how, polygon)
        return _view("map", f"Map lasso ({len(polygon)} corners)", ids)

    @guard
    def map_select(key, feats, how, evt: gr.EventData):
        """A drag on the map (``{"box": [x0, x1, y0, y1]}`` or ``{"lasso": [[x, y], ...]}``) or a click on a
        point (``{"image_id": id}``)."""
        data = getattr(evt, "_data", None) or {}
        project = ctx.open(key)
        if data.get("image_id") is not None:
            return similar(key, feats, int(data["image_id"]), [])
        if data.get("lasso") is not None:
            return render(project, _lasso_view(project, feats, how, data["lasso"]), [], 0, None)
        box = data.get("box")
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            return (gr.skip(),) * len(gallery_outs)
        x0, x1, y0, y1 = (float(v) for v in box)
        return render(project, _box_view(project, feats, how, x0, x1, y0, y1), [], 0, None)

    @guard
    def box_api(key, feats, how, text):
        """Show the images in a box given as "x0,x1[,y0,y1]" (empty ends stay open) — for scripts and the API."""
        parts = [p.strip() for p in str(text or "").split(",")]
        try:
            vals = [float(p) if p else None for p in parts]
        except ValueError:
            raise gr.Error("Give the box as x0,x1 or x0,x1,y0,y1.") from None
        if len(vals) not in (2, 4):
            raise gr.Error("Give the box as x0,x1 or x0,x1,y0,y1.")
        x0, x1, y0, y1 = vals if len(vals) == 4 else (*vals, None, None)
        project = ctx.open(key)
        return render(project, _box_view(project, feats, how, x0, x1, y0, y1), [], 0, None)

    @guard
    def lasso_api(key, feats, how, text):
        """Show the images inside a lasso given as "x,y; x,y; x,y; ..." (3 corners or more) — for scripts."""
        try:
            polygon = [[float(v) for v in corner.split(",")] for corner in str(text or "").split(";") if corner.strip()]
        except ValueError:
            raise gr.Error('Give the lasso as "x,y; x,y; x,y" (3 corners or more).') from None
        if len(polygon) < 3 or any(len(c) != 2 for c in polygon):
            raise gr.Error('Give the lasso as "x,y; x,y; x,y" (3 corners or more).')
        project = ctx.open(key)
        return render(project, _lasso_view(project, feats, how, polygon), [], 0, None)

    @guard
    def finished(key, marker):
        task = finished_task(key, marker, {"cluster", "features", "label"})
        if task is None:
            return (gr.skip(),) * len(refresh_outs)
        out = list(refresh(key))
        if task.status != "done":
            out[0] = f"**{task.label} {task.status}:** {error_text(task.error, task.hint)}"
        return tuple(out)

    @guard
    def map_finished(key, marker, feats, how, colour_by):
        task = finished_task(key, marker, {"map"})
        if task is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if task.status != "done":
            return (
                gr.skip(),
                f"**{task.label} {task.status}:** {error_text(task.error, task.hint)}",
                gr.skip(),
                gr.skip(),
            )
        return draw_map(key, feats, how, colour_by)

    nav = [ctx.project, view, selection, page]
    cluster_btn.click(start_clusters, [ctx.project, features, k], [status], api_name="explore_cluster")
    table.select(open_cluster, [ctx.project], gallery_outs, api_visibility="private")
    cluster_box = gr.Textbox(visible=False)
    cluster_box.submit(open_cluster_number, [ctx.project, cluster_box], gallery_outs, api_name="explore_open_cluster")
    search_btn.click(search, [ctx.project, query], gallery_outs, api_name="explore_search")
    query.submit(search, [ctx.project, query], gallery_outs, api_visibility="private")
    similar_btn.click(similar, [ctx.project, features, picked, selection], gallery_outs, api_name="explore_similar")
    queue_btn.click(show_queue, [ctx.project, order, limit], gallery_outs, api_name="explore_queue")

    gallery.select(click, [*nav, page_ids], gallery_outs, api_visibility="private")
    ids_box = gr.Textbox(visible=False)
    ids_box.submit(select_ids, [ctx.project, view, page, ids_box], gallery_outs, api_name="explore_select_ids")
    page_all_btn.click(select_page, [*nav, page_ids, picked], gallery_outs, api_name="explore_select_page")
    clear_btn.click(clear, [ctx.project, view, page], gallery_outs, api_name="explore_clear")
    prev_btn.click(turn(-1), [*nav, picked], gallery_outs, api_visibility="private")
    next_btn.click(turn(+1), [*nav, picked], gallery_outs, api_name="explore_next_page")

    acted = [*stats_outs, *gallery_outs]
    map_in = [ctx.project, features, method, colour]
    map_outs = [plot, map_note, map_cluster, drawn]

    def then_redraw(event) -> None:
        """Keep a drawn map true after ``event`` changed labels or exclusions (no Redraw press needed)."""
        event.then(redraw_drawn, [*map_in, drawn], map_outs, api_visibility="private")

    then_redraw(label_btn.click(label, [*nav, target], acted, api_name="explore_label"))
    then_redraw(accept_btn.click(accept, nav, acted, api_name="explore_accept"))
    then_redraw(exclude_btn.click(exclude, nav, acted, api_name="explore_exclude"))
    then_redraw(include_btn.click(include, nav, acted, api_name="explore_include"))
    then_redraw(undo_btn.click(undo, nav, acted, api_name="explore_undo"))

    dup_outs = [dup_table, dup_groups, dup_note]
    dup_btn.click(find_dups, [ctx.project, features, threshold], dup_outs, api_name="explore_duplicates")
    dup_tab.select(first_dups, [ctx.project, features, threshold, dup_groups], dup_outs, api_visibility="private")
    dup_table.select(open_group, [ctx.project, dup_groups], gallery_outs, api_visibility="private")
    group_box = gr.Textbox(visible=False)
    group_box.submit(
        open_group_number, [ctx.project, dup_groups, group_box], gallery_outs, api_name="explore_open_group"
    )
    dup_in, dup_acted = [ctx.project, features, threshold], [*acted, *dup_outs]
    then_redraw(keep_btn.click(keep_shown, [*dup_in, *nav[1:]], dup_acted, api_name="explore_keep_one"))
    keep_each = keep_all_btn.click(
        keep_every, [*dup_in, dup_groups, view, page], dup_acted, api_name="explore_keep_one_each"
    )
    then_redraw(keep_each)
    excluded_btn.click(show_excluded, [ctx.project], gallery_outs, api_name="explore_excluded")

    for event, api in (
        (map_tab.select, None),
        (draw_btn.click, "explore_map"),
        (colour.input, None),
        (method.input, None),
    ):
        event(draw_map, map_in, map_outs, api_name=api, api_visibility="public" if api else "private")
    plot.select(map_select, [ctx.project, features, method], gallery_outs, api_visibility="private")
    map_cluster.input(
        map_cluster_pick, [ctx.project, features, map_cluster], gallery_outs, api_name="explore_map_cluster"
    )
    box_box = gr.Textbox(visible=False)
    box_box.submit(box_api, [ctx.project, features, method, box_box], gallery_outs, api_name="explore_map_box")
    lasso_box = gr.Textbox(visible=False)
    lasso_box.submit(lasso_api, [ctx.project, features, method, lasso_box], gallery_outs, api_name="explore_map_lasso")

    ctx.finished.change(finished, [ctx.project, ctx.finished], refresh_outs, api_visibility="private")
    ctx.finished.change(map_finished, [ctx.project, ctx.finished, *map_in[1:]], map_outs, api_visibility="private")
    return {"refresh": refresh, "outputs": refresh_outs, "api_name": "explore_view"}
