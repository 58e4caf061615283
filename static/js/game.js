// Keyboard-first labeling: Y / N (or 1-9 for topic labels) / S answer, U or Backspace undo,
// Enter next round, ? help.
(() => {
  const keys = { y: "y", n: "n", s: "s", u: "u", backspace: "u", enter: "enter" };
  for (let i = 1; i <= 9; i++) keys[String(i)] = String(i);
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
    const streak = document.getElementById("streak");
    if (streak && event.detail.streak && event.detail.streak % 5 === 0) {
      streak.classList.remove("pulse"); void streak.offsetWidth; streak.classList.add("pulse");
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
})();
