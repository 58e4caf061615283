// Behaviour every page shares, kept out of the HTML so that the Content-Security-Policy allows no
// inline script: a form with data-confirm asks before it submits; an htmx form with
// data-reset-on-success empties itself once its request succeeded.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
}, true);

// A button with data-copy="#id" copies that element's text, and says so.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  const source = button && document.querySelector(button.dataset.copy);
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    button.textContent = "Copied";
  });
});

document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (form instanceof HTMLFormElement && form.hasAttribute("data-reset-on-success") && event.detail.successful) {
    form.reset();
  }
});

// A form with a kind choice (the new tracker form) shows the fields of the chosen kind only.
(() => {
  const kinds = document.querySelectorAll('input[name="kind"]');
  if (!kinds.length) return;
  const show = () => {
    const chosen = document.querySelector('input[name="kind"]:checked')?.value;
    document.querySelectorAll("[data-only-kind]").forEach((field) => {
      field.hidden = field.dataset.onlyKind !== chosen;
    });
  };
  kinds.forEach((input) => input.addEventListener("change", show));
  show();
})();
