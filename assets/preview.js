(() => {
  const steps = ['review', 'explore'];
  const on = (el) => !!el && el.getClientRects().length > 0;
  const press = (id) => { const el = document.getElementById(id); if (el) el.click(); return !!el; };
  window.lbPreviewIndex = -1;
  document.addEventListener('dblclick', (e) => {
    // the first click's pending overlay may cover the gallery by now: look under it for the thumbnail
    const thumb = document.elementsFromPoint(e.clientX, e.clientY)
      .map((el) => el.closest && el.closest('button.thumbnail-item')).find(Boolean);
    const gal = thumb && thumb.closest('#review-gallery, #explore-gallery');
    if (!gal) return;
    window.lbPreviewIndex = [...gal.querySelectorAll('button.thumbnail-item')].indexOf(thumb);
    press(gal.id.replace(/-gallery$/, '') + '-preview-open');
  });
  window.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target; const tag = (t && t.tagName || '').toLowerCase();
    const typing = tag === 'input' || tag === 'textarea' || (t && t.isContentEditable);
    const open = steps.find((s) => on(document.getElementById(s + '-preview')));
    if (open) {
      if (typing) return;
      let id = {ArrowLeft: 'prev', ArrowRight: 'next', Escape: 'close', a: 'accept'}[e.key];
      if (!id && /^[1-9]$/.test(e.key)) id = 'digit-' + e.key;
      if (!id && e.key.length !== 1) return;  // Tab, Enter, Space on a focused button: as usual
      e.preventDefault(); e.stopImmediatePropagation();  // the gallery's own keys wait until the preview closes
      if (id) press(open + '-preview-' + id);
      return;
    }
    if (typing || e.key !== 'v') return;
    const gal = steps.find((s) => on(document.getElementById(s + '-gallery')));
    if (gal) { e.preventDefault(); window.lbPreviewIndex = -1; press(gal + '-preview-open'); }
  }, true);
})();
