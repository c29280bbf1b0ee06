"""The Explore map: a 2-D scatter plot on a ``<canvas>`` in a gr.HTML, with box selection and point clicks.

Gradio 6.31's gr.ScatterPlot brushes an x interval only and keeps the colour domain it was first drawn with,
so the map draws itself: :func:`scatter_value` turns :func:`labeler.map_frame` columns into the
component's value, and :data:`SCATTER_JS` draws it (axes, points coloured by the legend, a tooltip with the
thumbnail of the point under the mouse). In box mode a drag fires the component's ``select`` event with
``{"box": [x0, x1, y0, y1]}`` in map coordinates, in lasso mode with ``{"lasso": [[x, y], ...]}`` (the outline
drawn, at least 3 vertices); a click on a point fires it with ``{"image_id": id}``. Nothing is sent while
the mouse only moves. :func:`map_pick` reads that payload; :func:`parse_box` and :func:`parse_lasso` read the same
selections typed as text (the step's API for scripts).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import gradio as gr

from . import assets

#: Colours of the legend's entries, most frequent first (Tableau 20 order, the light shades last).
PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#1f77b4",
    "#17becf",
    "#bcbd22",
    "#8c564b",
    "#e377c2",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#ff7f0e",
    "#393b79",
    "#637939",
]
#: Points whose colour has no legend entry: "not labeled", "no cluster", the rare classes past the legend.
MUTED = "#b8bcc4"
#: Texts of "no value" colours (drawn muted, listed last).
NONE_TEXTS = ("no pseudo-label", "not labeled by you", "unlabeled", "no cluster")

#: Room around the plot area, in CSS pixels (axis labels left and below); points fill the area with a 4 % margin.
PAD = {"l": 46, "r": 12, "t": 10, "b": 24}
MARGIN = 0.04

#: The component's HTML (assets/scatter.html), its styles (assets/scatter.css).
TEMPLATE = assets.read("scatter.html")

CSS = assets.read("scatter.css")

#: assets/scatter.js, with the layout constants filled in.
SCATTER_JS = assets.read("scatter.js").replace("__PAD__", json.dumps(PAD)).replace("__MARGIN__", str(MARGIN))


def scatter(elem_id: str, visible: bool = True) -> gr.HTML:
    """The map component (empty until :func:`scatter_value` gives it points)."""
    return gr.HTML(
        scatter_value(None),
        html_template=TEMPLATE,
        css_template=CSS,
        js_on_load=SCATTER_JS,
        elem_id=elem_id,
        visible=visible,
    )


def scatter_value(
    cols: dict | None, title: str = "", legend_size: int = len(PALETTE), thumbs: str | Path | None = None
) -> dict:
    """The component's value for :func:`labeler.map_frame` columns.

    ``thumbs``: the project's thumbnail folder (``<sha[:2]>/<sha>.jpg`` files; gradio must be allowed to serve
    it): the tooltip then shows the image. Returns ``{"x", "y", "colour", "image_id", "sha256", "label"}``
    (one entry per point), ``thumb_base`` (the folder's URL relative to the page, "" without ``thumbs``), ``legend``
    (:func:`legend_entries`), ``muted`` (the colour of points with no legend entry) and ``title``.
    """
    cols = cols or {}
    names = [str(c) for c in cols.get("colour", [])]
    return {
        "x": list(cols.get("x", [])),
        "y": list(cols.get("y", [])),
        "colour": names,
        "image_id": [int(i) for i in cols.get("image_id", [])],
        "sha256": [str(v) for v in cols.get("sha256", [])],
        "label": [str(v) for v in cols.get("label", [])],
        "thumb_base": f"gradio_api/file={quote(Path(thumbs).resolve().as_posix(), safe='/:')}/" if thumbs else "",
        "legend": legend_entries(names, legend_size),
        "muted": MUTED,
        "title": title,
    }


def legend_entries(names: list[str], legend_size: int = len(PALETTE)) -> list[dict]:
    """The legend of points coloured ``names`` (N,): ``[{"name", "color", "n"}]``, the ``legend_size`` most frequent
    names (sorted, one palette colour each), then "K more" for the rest and the "no value" names, both muted."""
    counts = Counter(names)
    every = [(c, n) for c, n in counts.most_common() if c not in NONE_TEXTS]
    size = min(legend_size, len(PALETTE))
    named, rest = every[:size], every[size:]
    legend = [{"name": c, "color": PALETTE[k], "n": n} for k, (c, n) in enumerate(sorted(named))]
    if rest:  # drawn muted, counted in one entry
        legend.append({"name": f"{len(rest)} more", "color": MUTED, "n": sum(n for _, n in rest)})
    return legend + [{"name": c, "color": MUTED, "n": counts[c]} for c in NONE_TEXTS if c in counts]


class MapPick(NamedTuple):
    """What one ``select`` event of the map says: at most one of a point clicked, a box dragged, a lasso drawn."""

    image_id: int | None = None
    box: tuple[float, float, float, float] | None = None  # x0, x1, y0, y1 in map coordinates
    lasso: list | None = None  # [[x, y], ...] in map coordinates, as drawn


def map_pick(data: dict | None) -> MapPick:
    """The map's ``select`` payload (``{"image_id"}``, ``{"lasso"}`` or ``{"box"}``) as a :class:`MapPick`; an
    empty one when it holds none of them (or a box that is not four numbers)."""
    data = data or {}
    if data.get("image_id") is not None:
        return MapPick(image_id=int(data["image_id"]))
    if data.get("lasso") is not None:
        return MapPick(lasso=data["lasso"])
    box = data.get("box")
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return MapPick()
    x0, x1, y0, y1 = (float(v) for v in box)
    return MapPick(box=(x0, x1, y0, y1))


BOX_FORMAT = "Give the box as x0,x1 or x0,x1,y0,y1."
LASSO_FORMAT = 'Give the lasso as "x,y; x,y; x,y" (3 corners or more).'


def parse_box(text: str | None) -> tuple[float | None, float | None, float | None, float | None]:
    """A box typed as ``"x0,x1[,y0,y1]"`` → ``(x0, x1, y0, y1)``; an empty end (or no y range) is None, open.
    gr.Error saying the format for anything else."""
    parts = [p.strip() for p in str(text or "").split(",")]
    try:
        vals = [float(p) if p else None for p in parts]
    except ValueError:
        raise gr.Error(BOX_FORMAT) from None
    if len(vals) not in (2, 4):
        raise gr.Error(BOX_FORMAT)
    x0, x1, y0, y1 = vals if len(vals) == 4 else (*vals, None, None)
    return x0, x1, y0, y1


def parse_lasso(text: str | None) -> list[list[float]]:
    """A lasso typed as ``"x,y; x,y; x,y; ..."`` → its corners (P, 2), P ≥ 3; gr.Error saying the format else."""
    try:
        polygon = [[float(v) for v in corner.split(",")] for corner in str(text or "").split(";") if corner.strip()]
    except ValueError:
        raise gr.Error(LASSO_FORMAT) from None
    if len(polygon) < 3 or any(len(c) != 2 for c in polygon):
        raise gr.Error(LASSO_FORMAT)
    return polygon
