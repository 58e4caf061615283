// Keyboard-first labeling: Y / N (or 1-9 for topic labels, 0 for none of them) / S answer, U or Backspace undo,
// Enter next round, ? help.
(() => {
  const keys = { y: "y", n: "n", s: "s", u: "u", backspace: "u", enter: "enter" };
  for (let i = 0; i <= 9; i++) keys[String(i)] = String(i);
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select") || event.metaKey || event.ctrlKey || event.altKey) return;
    if (event.key === "?") { document.getElementById("keys-help")?.showModal(); return; }
    const want = keys[event.key.toLowerCase()];
    if (!want) return;
    const target = document.querySelector(`#game [data-key="${want}"]`);
    if (!target || target.disabled) return;
    event.preventDefault();
    target.click();
  });
  document.body.addEventListener("label-recorded", (event) => {
    // An answer that corrected the model earns more: the points say so.
    const points = document.getElementById("points");
    if (points && event.detail.corrected) {
      points.classList.remove("pulse"); void points.offsetWidth; points.classList.add("pulse");
    }
  });
  document.body.addEventListener("round-complete", () => {
    const box = document.getElementById("celebrate");
    if (!box) return;
    box.replaceChildren(...Array.from({ length: 40 }, (_, i) => {
      const bit = document.createElement("i");
      bit.style.left = `${(i * 37) % 100}%`;
      bit.style.animationDelay = `${(i % 10) * 40}ms`;
      bit.style.background = `hsl(${(i * 47) % 360} 80% 60%)`;
      return bit;
    }));
    setTimeout(() => box.replaceChildren(), 1800);
  });
  // Touch: swipe a card right for yes, left for no (concept trackers; topics use their buttons).
  const SWIPE = 80;
  let start = null;
  document.addEventListener("pointerdown", (event) => {
    const card = event.target.closest(".game-card");
    if (!card || event.pointerType === "mouse" || event.target.closest("button, a, summary")) return;
    start = { x: event.clientX, y: event.clientY, card };
  });
  document.addEventListener("pointermove", (event) => {
    if (!start) return;
    const dx = event.clientX - start.x;
    start.card.style.transform = `translateX(${dx}px) rotate(${dx / 40}deg)`;
  });
  const finish = (event) => {
    if (!start) return;
    const { card } = start;
    const dx = event.clientX - start.x;
    const dy = event.clientY - start.y;
    start = null;
    card.style.transform = "";
    if (Math.abs(dx) < SWIPE || Math.abs(dy) > Math.abs(dx)) return;
    const target = card.querySelector(`[data-key="${dx > 0 ? "y" : "n"}"]`);
    if (target && !target.disabled) target.click();
  };
  document.addEventListener("pointerup", finish);
  document.addEventListener("pointercancel", () => {
    if (start) start.card.style.transform = "";
    start = null;
  });
})();
