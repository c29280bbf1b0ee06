// Keyboard shortcuts of the Audit panel (step 7), installed with the page head; ignored while typing and while
// the panel is hidden.
document.addEventListener('keydown', (e) => {
  const t = e.target; const tag = (t && t.tagName || '').toLowerCase();
  if (e.ctrlKey || e.metaKey || e.altKey || tag === 'input' || tag === 'textarea' || (t && t.isContentEditable)) return;
  const panel = document.getElementById('audit-image');
  if (!panel || panel.offsetParent === null) return;  // only while the audit panel is on screen
  let id = {y: 'audit-confirm', s: 'audit-skip'}[e.key];
  if (!id && /^[1-9]$/.test(e.key)) id = 'audit-digit-' + e.key;
  const el = id && document.getElementById(id);
  if (el) { e.preventDefault(); el.click(); }
});
