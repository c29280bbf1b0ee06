// The Explore map (labeler/ui/scatter.py: gr.HTML js_on_load; `element`, `props`, `trigger`, `watch` are
// gradio's). The two placeholders on the next line are filled in from scatter.PAD and scatter.MARGIN.
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
