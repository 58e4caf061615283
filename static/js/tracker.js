// The tracker page: the threshold slider reads out the precision and recall at each threshold.
(() => {
  const slider = document.getElementById("threshold");
  if (!slider) return;
  const points = JSON.parse(document.getElementById("pr-points").textContent);
  const out = document.getElementById("threshold-readout");
  const hidden = document.getElementById("threshold-value");
  // The slider moves over thresholds, lined up with the chart above it: read the nearest point.
  const nearest = (value) => points.reduce((best, p) =>
    (Math.abs(p.threshold - value) < Math.abs(best.threshold - value) ? p : best), points[0]);
  const show = () => { const p = points.length ? nearest(Number(slider.value)) : null; if (!p) return;
    out.textContent = `threshold ${p.threshold.toFixed(3)} → precision ${p.precision.toFixed(2)}, recall ${p.recall.toFixed(2)} (cross-validated)`;
    if (hidden) hidden.value = Math.min(0.999, Math.max(0.001, p.threshold)).toFixed(4); };
  slider.addEventListener("input", show); show();
})();
