// The tracker page: the threshold slider reads out the precision and recall at each threshold.
(() => {
  const slider = document.getElementById("threshold");
  if (!slider) return;
  const points = JSON.parse(document.getElementById("pr-points").textContent);
  const out = document.getElementById("threshold-readout");
  const hidden = document.getElementById("threshold-value");
  const show = () => { const p = points[slider.value]; if (!p) return;
    out.textContent = `threshold ${p.threshold.toFixed(3)} → precision ${p.precision.toFixed(2)}, recall ${p.recall.toFixed(2)} (cross-validated)`;
    if (hidden) hidden.value = Math.min(0.999, Math.max(0.001, p.threshold)).toFixed(4); };
  slider.addEventListener("input", show); show();
})();
