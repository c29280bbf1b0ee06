// Keyboard shortcuts of the review gallery (step 5), installed with the page head by labeler/ui/assets.py;
// ignored while typing. Also keeps the shift state of the last click (gr.SelectData carries no modifier keys).
document.addEventListener('click', (e) => { window.lbShiftClick = e.shiftKey; }, true);
document.addEventListener('keydown', (e) => {
  const t = e.target; const tag = (t && t.tagName || '').toLowerCase();
  if (e.ctrlKey || e.metaKey || e.altKey || tag === 'input' || tag === 'textarea' || (t && t.isContentEditable)) return;
  const gal = document.getElementById('review-gallery');
  if (!gal || gal.offsetParent === null) return;  // only while the review step is on screen
  const ids = {a: 'review-accept', u: 'review-unsure', n: 'review-next', p: 'review-prev', z: 'review-undo'};
  let id = ids[e.key];
  if (!id && /^[1-9]$/.test(e.key)) id = 'review-digit-' + e.key;
  const el = id && document.getElementById(id);
  if (el) { e.preventDefault(); el.click(); }
});
