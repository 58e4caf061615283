// Reviewing scored results with the keyboard: J / K (or arrows) move between results, Y marks the
// focused one right and N wrong; after a mark the focus stays on it (J moves on), so Y, J, Y marks
// the first two results.
(() => {
  const results = () => Array.from(document.querySelectorAll("[data-result]"));
  const focused = () => document.activeElement?.closest("[data-result]");
  const move = (step) => {
    const all = results();
    if (!all.length) return;
    const at = all.indexOf(focused());
    all[Math.max(0, Math.min(all.length - 1, at < 0 ? 0 : at + step))].focus();
  };
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select") || event.metaKey || event.ctrlKey || event.altKey) return;
    const key = event.key.toLowerCase();
    if (key === "j" || key === "arrowdown") { event.preventDefault(); move(1); return; }
    if (key === "k" || key === "arrowup") { event.preventDefault(); move(-1); return; }
    if (key !== "y" && key !== "n") return;
    const row = focused() || results()[0];
    const button = row?.querySelector(`[data-key="${key}"]`);
    if (!button) return;
    event.preventDefault();
    button.click();
  });
  // The marked row is swapped for its new state: the focus stays on it.
  document.body.addEventListener("htmx:afterSwap", (event) => {
    const row = event.detail.target?.id ? document.getElementById(event.detail.target.id) : null;
    const swapped = row || event.detail.elt;
    if (swapped?.matches?.("[data-result]")) swapped.focus();
  });
  results()[0]?.focus();
})();
