"""Step 7 · Explore: the place the FAISS cluster browser plugs in.

Built on :mod:`labeler.clusters` (k-means runs and their summaries), :mod:`labeler.search`
(text search) and :mod:`labeler.review` (bulk actions on a selection) when they are importable;
otherwise the step says so. What is shown here is a first cut — clusters sorted by purity (the
confused ones first), a cluster's members, text search, and labeling the shown set — and the
cluster-browser work extends it (map, similar images, near-duplicates, review queue orderings).
"""

from __future__ import annotations

import importlib

import gradio as gr

from ..jobs import run_in_background
from ..labels import accept_pseudo_labels, set_human_labels
from ..project import Project
from .common import NO_PROJECT, Ctx, empty_state, finished_task, guard, md_escape, pct

SHOWN = 96
HEADERS = ["#", "n", "pseudo", "purity", "conf", "final", "done"]


def _modules():
    """(clusters, search) modules, or None where the cluster browser is not part of this build."""
    try:
        return importlib.import_module("labeler.clusters"), importlib.import_module("labeler.search")
    except ImportError:
        return None


def build(ctx: Ctx) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            status = gr.Markdown(elem_id="explore-status")
            with gr.Row():
                features = gr.Radio(["clip", "dino"], value="clip", label="Features", scale=1)
                k = gr.Number(value=0, precision=0, minimum=0, label="Clusters (0 = auto)", scale=1)
                cluster_btn = gr.Button("Cluster images", variant="primary", scale=1, elem_id="explore-cluster")
            table = gr.Dataframe(
                headers=HEADERS,
                interactive=False,
                max_height=330,
                elem_id="explore-clusters",
                label="Clusters, least pure first (click one)",
                wrap=True,
                visible=False,
                column_widths=["8%", "10%", "22%", "15%", "13%", "20%", "12%"],
            )
        with gr.Column(scale=1):
            with gr.Row():
                query = gr.Textbox(
                    label="Search by text (CLIP)", placeholder="a red car at night", scale=4, elem_id="explore-query"
                )
                search_btn = gr.Button("Search", scale=1, elem_id="explore-search")
            shown_text = gr.Markdown(elem_id="explore-shown")
            gallery = gr.Gallery(
                columns=5,
                height=330,
                allow_preview=True,
                object_fit="cover",
                show_label=False,
                elem_id="explore-gallery",
                buttons=[],
                visible=False,
            )
            with gr.Row(visible=False) as actions:
                accept_btn = gr.Button("Accept their pseudo-labels", size="sm", scale=1, elem_id="explore-accept")
                label_btn = gr.Button("Label all shown as →", size="sm", scale=1, elem_id="explore-label")
                target = gr.Dropdown(
                    label="Label every image shown as",
                    choices=[],
                    scale=1,
                    container=False,
                    show_label=False,
                    elem_id="explore-target",
                )
    shown = gr.State([])  # image ids in the gallery

    def clusters_view(project):
        mods = _modules()
        if project is None:
            return empty_state(NO_PROJECT), []
        if mods is None:
            return empty_state("The cluster browser is not part of this build."), []
        clusters, _ = mods
        if not project.features.sets():
            return empty_state("Cluster browser: compute features first (step 5, ①)."), []
        run = clusters.latest_cluster_run(project)
        if run is None:
            return empty_state(
                "No clusters yet: press <b>Cluster images</b> (k-means over the features) to group "
                "similar images, then click a cluster to see it. Or search by text."
            ), []
        rows = clusters.cluster_summaries(project, run["id"])
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

    def gallery_for(project, ids, title):
        from ..search import describe

        items = describe(project, ids[:SHOWN]) if ids else []
        pics = []
        from ..app_api import thumbnail_for

        for it in items:
            thumb = thumbnail_for(project, it["image_id"], it["sha256"], it["path"])
            if thumb:
                cap = (it["label"] or "unlabeled") + (
                    f" {100 * it['score']:.0f}%" if it.get("score") is not None else ""
                )
                pics.append((thumb, cap))
        more = f" (first {SHOWN} shown)" if len(ids) > SHOWN else ""
        text = f"{title}: {len(ids)} images{more}" if ids else f"{title}: no images."
        return (
            gr.Gallery(value=pics, visible=bool(pics)),
            [it["image_id"] for it in items],
            text,
            gr.Row(visible=bool(pics)),
        )

    outs = [status, table, target, gallery, shown, shown_text, actions]

    @guard
    def refresh(key):
        project = ctx.open(key, required=False)
        text, rows = clusters_view(project)
        classes = project.classes if project is not None else []
        return (
            text,
            gr.Dataframe(value=rows, visible=bool(rows)),
            gr.Dropdown(choices=classes, value=None, multiselect=bool(project and project.multi_label)),
            gr.Gallery(value=[], visible=False),
            [],
            "",
            gr.Row(visible=False),
        )

    @guard
    def start_clusters(key, feats, k_value):
        project = ctx.open(key)
        mods = _modules()
        if mods is None:
            raise gr.Error("The cluster browser is not part of this build.")
        if not project.features.sets(feats):
            raise gr.Error(f"There are no {feats} features: compute them in step 5 first.")
        root = str(project.root)
        k_int = int(k_value or 0) or None

        def work():
            p = Project(root)
            try:
                return mods[0].cluster_run(p, k=k_int, features=feats)
            finally:
                p.close()

        run_in_background(root, "cluster", work, label=f"clusters ({feats})")
        return "Clustering… progress is in the jobs panel."

    @guard
    def open_cluster(key, evt: gr.SelectData):
        project = ctx.open(key)
        row = evt.row_value or []
        if not row:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        clusters, _ = _modules()
        ids = clusters.cluster_members(project, int(row[0]))
        return gallery_for(project, ids, f"Cluster {int(row[0])}")

    @guard
    def search(key, text):
        project = ctx.open(key)
        mods = _modules()
        if mods is None:
            raise gr.Error("Search is not part of this build.")
        results = mods[1].text_search(project, text, k=48)
        ids = [r["image_id"] for r in results]
        return gallery_for(project, ids, f"Best matches for “{md_escape(text)}”")

    @guard
    def label_shown(key, ids, cls):
        project = ctx.open(key)
        if not ids:
            raise gr.Error("Nothing is shown: click a cluster or search first.")
        if not cls:
            raise gr.Error("Pick the class in 'Label every image shown as' first.")
        n = set_human_labels(project, ids, cls)
        gr.Info(f"Labeled {n} images.")
        return refresh(key)[:2]

    @guard
    def accept_shown(key, ids):
        project = ctx.open(key)
        if not ids:
            raise gr.Error("Nothing is shown: click a cluster or search first.")
        n = accept_pseudo_labels(project, ids)
        gr.Info(f"Accepted {n} pseudo-labels.")
        return refresh(key)[:2]

    @guard
    def finished(key, marker):
        task = finished_task(key, marker, {"cluster", "features", "label"})
        if task is None:
            return (gr.skip(),) * len(outs)
        out = list(refresh(key))
        if task.status != "done":
            out[0] = f"**{task.label} {task.status}:** {md_escape(task.error or '')}"
        return tuple(out)

    cluster_btn.click(start_clusters, [ctx.project, features, k], [status], api_name="explore_cluster")
    table.select(open_cluster, [ctx.project], [gallery, shown, shown_text, actions], api_visibility="private")
    search_btn.click(search, [ctx.project, query], [gallery, shown, shown_text, actions], api_name="explore_search")
    query.submit(search, [ctx.project, query], [gallery, shown, shown_text, actions], api_visibility="private")
    label_btn.click(label_shown, [ctx.project, shown, target], [status, table], api_name="explore_label")
    accept_btn.click(accept_shown, [ctx.project, shown], [status, table], api_name="explore_accept")
    ctx.finished.change(finished, [ctx.project, ctx.finished], outs, api_visibility="private")
    return {"refresh": refresh, "outputs": outs, "api_name": "explore_view"}
