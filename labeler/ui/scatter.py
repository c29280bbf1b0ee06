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

TEMPLATE = """
<div class="lb-scatter">
  <div class="lb-scatter-modes" role="group" aria-label="how a drag selects">
    <button type="button" data-mode="box" aria-pressed="true">▭ Box</button>
    <button type="button" data-mode="lasso" aria-pressed="false">◌ Lasso</button>
  </div>
  <div class="lb-scatter-plot">
    <canvas class="lb-scatter-canvas" tabindex="0" aria-label="map of the images"></canvas>
    <div class="lb-scatter-tip" hidden></div>
  </div>
  <div class="lb-scatter-legend"></div>
</div>
"""

CSS = """
.lb-scatter-plot { position: relative; height: 320px; }
.lb-scatter-canvas { width: 100%; height: 100%; display: block; cursor: crosshair; outline: none; }
.lb-scatter-tip { position: absolute; pointer-events: none; background: rgba(20, 20, 30, 0.85); color: #fff;
  font-size: 12px; padding: 4px 6px; border-radius: 4px; white-space: nowrap; z-index: 5; }
.lb-scatter-tip img { display: block; width: 96px; height: 96px; object-fit: cover; border-radius: 3px;
  margin-bottom: 3px; }
.lb-scatter-modes { display: flex; gap: 4px; padding: 0 0 4px 0; }
.lb-scatter-modes button { font-size: 12px; padding: 1px 8px; border: 1px solid #d1d5db; border-radius: 4px;
  background: transparent; color: inherit; cursor: pointer; }
.lb-scatter-modes button[aria-pressed="true"] { background: #3b82f6; border-color: #3b82f6; color: #fff; }
.lb-scatter-legend { display: flex; flex-wrap: wrap; gap: 2px 12px; font-size: 12px; padding: 4px 8px; }
.lb-scatter-legend b { margin-right: 4px; }
.lb-scatter-legend span { display: inline-flex; align-items: center; gap: 4px; }
.lb-scatter-legend i { width: 10px; height: 10px; border-radius: 50%; display: inline-block; }
"""

SCATTER_JS = r"""
const PAD = __PAD__, MARGIN = __MARGIN__;
const st = {drag: null, box: null, lasso: null, hover: -1, sc: null, mode: 'box'};
const q = (s) => element.querySelector(s);

function data() {
  const v = props.value || {};
  const x = v.x || [], y = v.y || [], names = v.colour || [];
  const colours = {};
  for (const e of (v.legend || [])) colours[e.name] = e.color;
  return {v, x, y, names, colours, muted: v.muted || '#b8bcc4'};
}

function scales(d, w, h) {
  let x0 = Math.min(...d.x), x1 = Math.max(...d.x), y0 = Math.min(...d.y), y1 = Math.max(...d.y);
  if (!isFinite(x0)) { x0 = -1; x1 = 1; y0 = -1; y1 = 1; }
  if (x1 - x0 < 1e-9) { x0 -= 1; x1 += 1; }
  if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
  const mx = (x1 - x0) * MARGIN, my = (y1 - y0) * MARGIN;
  x0 -= mx; x1 += mx; y0 -= my; y1 += my;
  const W = w - PAD.l - PAD.r, H = h - PAD.t - PAD.b;
  return {
    x0, x1, y0, y1,
    fx: (x) => PAD.l + (x - x0) / (x1 - x0) * W,
    fy: (y) => PAD.t + (1 - (y - y0) / (y1 - y0)) * H,
    ix: (px) => x0 + (px - PAD.l) / W * (x1 - x0),
    iy: (py) => y0 + (1 - (py - PAD.t) / H) * (y1 - y0),
  };
}

function ticks(a, b) {
  const step0 = (b - a) / 5, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let t = Math.ceil(a / step) * step; t <= b + 1e-12; t += step) out.push(Math.abs(t) < step / 1e6 ? 0 : t);
  return out;
}

function legend(d) {
  const box = q('.lb-scatter-legend');
  box.replaceChildren();
  if (!d.x.length) return;
  const title = document.createElement('b');
  title.textContent = d.v.title || '';
  box.appendChild(title);
  for (const e of (d.v.legend || [])) {
    const item = document.createElement('span');
    const dot = document.createElement('i');
    dot.style.background = e.color;
    item.append(dot, document.createTextNode(`${e.name} (${e.n})`));
    box.appendChild(item);
  }
}

function draw() {
  const c = q('.lb-scatter-canvas');
  if (!c) return;
  const d = data();
  const dpr = window.devicePixelRatio || 1, w = c.clientWidth, h = c.clientHeight;
  if (!w || !h) return;
  c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
  const g = c.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const s = st.sc = scales(d, w, h);
  g.font = '11px sans-serif'; g.fillStyle = '#666'; g.strokeStyle = '#e5e7eb'; g.lineWidth = 1;
  g.textAlign = 'center'; g.textBaseline = 'top';
  for (const t of ticks(s.x0, s.x1)) {
    const px = Math.round(s.fx(t)) + 0.5;
    g.beginPath(); g.moveTo(px, PAD.t); g.lineTo(px, h - PAD.b); g.stroke();
    g.fillText(+t.toPrecision(3), px, h - PAD.b + 4);
  }
  g.textAlign = 'right'; g.textBaseline = 'middle';
  for (const t of ticks(s.y0, s.y1)) {
    const py = Math.round(s.fy(t)) + 0.5;
    g.beginPath(); g.moveTo(PAD.l, py); g.lineTo(w - PAD.r, py); g.stroke();
    g.fillText(+t.toPrecision(3), PAD.l - 4, py);
  }
  g.strokeStyle = '#9ca3af'; g.strokeRect(PAD.l + 0.5, PAD.t + 0.5, w - PAD.l - PAD.r, h - PAD.t - PAD.b);
  g.globalAlpha = 0.8;
  for (const muted of [true, false]) {  // muted points underneath
    for (let i = 0; i < d.x.length; i++) {
      const col = d.colours[d.names[i]];
      if ((col === undefined || col === d.muted) !== muted) continue;
      g.fillStyle = col || d.muted;
      g.beginPath(); g.arc(s.fx(d.x[i]), s.fy(d.y[i]), i === st.hover ? 5 : 3, 0, 2 * Math.PI); g.fill();
    }
  }
  g.globalAlpha = 1;
  g.fillStyle = 'rgba(59, 130, 246, 0.12)'; g.strokeStyle = '#3b82f6';
  const line = st.drag && st.drag.path ? st.drag.path : st.lasso && st.lasso.map((p) => [s.fx(p[0]), s.fy(p[1])]);
  if (line && line.length > 1) {
    g.beginPath(); g.moveTo(line[0][0], line[0][1]);
    for (const p of line.slice(1)) g.lineTo(p[0], p[1]);
    g.closePath(); g.fill(); g.stroke();
  }
  const kept = st.box && {a: [s.fx(st.box[0]), s.fy(st.box[2])], b: [s.fx(st.box[1]), s.fy(st.box[3])]};
  const b = (st.drag && !st.drag.path && st.drag) || kept;
  if (b) {
    g.fillStyle = 'rgba(59, 130, 246, 0.12)'; g.strokeStyle = '#3b82f6';
    const x = Math.min(b.a[0], b.b[0]), y = Math.min(b.a[1], b.b[1]);
    g.fillRect(x, y, Math.abs(b.b[0] - b.a[0]), Math.abs(b.b[1] - b.a[1]));
    g.strokeRect(x, y, Math.abs(b.b[0] - b.a[0]), Math.abs(b.b[1] - b.a[1]));
  }
}

function at(e, clamp) {
  const r = q('.lb-scatter-canvas').getBoundingClientRect();
  const p = [e.clientX - r.left, e.clientY - r.top];
  if (!clamp) return p;  // a box stays inside the plot area
  return [Math.min(Math.max(p[0], PAD.l), r.width - PAD.r), Math.min(Math.max(p[1], PAD.t), r.height - PAD.b)];
}

function nearest(p) {
  const d = data(), s = st.sc;
  if (!s) return -1;
  let best = -1, bd = 36;  // within 6 px
  for (let i = 0; i < d.x.length; i++) {
    const dx = s.fx(d.x[i]) - p[0], dy = s.fy(d.y[i]) - p[1], dd = dx * dx + dy * dy;
    if (dd < bd) { bd = dd; best = i; }
  }
  return best;
}

function tip(i, p) {
  const t = q('.lb-scatter-tip'), d = data();
  if (i < 0) { t.hidden = true; return; }
  if (t.dataset.index !== String(i)) {  // rebuild only when the point changes (the image loads once)
    t.dataset.index = String(i);
    t.replaceChildren();
    const sha = (d.v.sha256 || [])[i];
    if (d.v.thumb_base && sha) {
      const img = document.createElement('img');
      img.alt = `image ${d.v.image_id[i]}`;
      img.src = `${d.v.thumb_base}${sha.slice(0, 2)}/${sha}.jpg`;
      t.appendChild(img);
    }
    const extra = d.names[i] !== d.v.label[i] ? ` · ${d.names[i]}` : '';
    t.appendChild(document.createTextNode(`image ${d.v.image_id[i]} · ${d.v.label[i]}${extra}`));
  }
  t.hidden = false;  // shown before it is measured (a hidden box has no size)
  const c = q('.lb-scatter-canvas'), w = Math.max(t.offsetWidth, 110), h = Math.max(t.offsetHeight, 120);
  const right = p[0] + 12 + w > c.clientWidth, low = p[1] + 8 + h > c.clientHeight;
  t.style.left = `${right ? p[0] - 12 - w : p[0] + 12}px`;
  t.style.top = `${low ? p[1] - 8 - h : p[1] + 8}px`;
}

element.addEventListener('click', (e) => {
  const btn = e.target.closest('.lb-scatter-modes button');
  if (!btn) return;
  st.mode = btn.dataset.mode;
  for (const b of element.querySelectorAll('.lb-scatter-modes button')) b.setAttribute('aria-pressed', b === btn);
});
element.addEventListener('mousedown', (e) => {
  if (!e.target.classList.contains('lb-scatter-canvas') || e.button !== 0) return;
  const p = at(e, true);
  st.drag = {a: p, b: p, path: st.mode === 'lasso' ? [p] : null};
  e.preventDefault();
});
element.addEventListener('mousemove', (e) => {
  if (!e.target.classList.contains('lb-scatter-canvas') && !st.drag) return;
  const p = at(e, !!st.drag);
  if (st.drag) {
    st.drag.b = p;
    const path = st.drag.path, last = path && path[path.length - 1];
    if (last && Math.hypot(p[0] - last[0], p[1] - last[1]) >= 3) path.push(p);  // an outline, not every pixel
    q('.lb-scatter-tip').hidden = true; draw(); return;
  }
  const i = nearest(p);
  if (i !== st.hover) { st.hover = i; draw(); }
  tip(i, p);
});
element.addEventListener('mouseleave', () => { st.hover = -1; q('.lb-scatter-tip').hidden = true; draw(); });
window.addEventListener('mouseup', (e) => {
  if (!st.drag) return;
  const {a, b, path} = st.drag, s = st.sc;
  st.drag = null;
  if (path) {
    const xs = path.map((p) => p[0]), ys = path.map((p) => p[1]);
    const big = Math.max(...xs) - Math.min(...xs) >= 4 || Math.max(...ys) - Math.min(...ys) >= 4;
    if (path.length >= 3 && big) {
      st.box = null;
      st.lasso = path.map((p) => [s.ix(p[0]), s.iy(p[1])]);
      draw();
      trigger('select', {lasso: st.lasso});
      return;
    }
  }
  if (Math.abs(b[0] - a[0]) < 4 && Math.abs(b[1] - a[1]) < 4) {  // a click: the point under it, if any
    const i = nearest(a);
    draw();
    if (i >= 0) trigger('select', {image_id: data().v.image_id[i]});
    return;
  }
  if (path) { draw(); return; }  // a lasso too small to hold anything
  const x0 = s.ix(Math.min(a[0], b[0])), x1 = s.ix(Math.max(a[0], b[0]));
  const y0 = s.iy(Math.max(a[1], b[1])), y1 = s.iy(Math.min(a[1], b[1]));
  st.box = [x0, x1, y0, y1];
  st.lasso = null;
  draw();
  trigger('select', {box: st.box});
});
new ResizeObserver(() => draw()).observe(element);
watch('value', () => {
  st.box = null; st.lasso = null; st.hover = -1;
  q('.lb-scatter-tip').dataset.index = '';
  legend(data()); draw();
});
legend(data());
draw();
""".replace("__PAD__", json.dumps(PAD)).replace("__MARGIN__", str(MARGIN))


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
