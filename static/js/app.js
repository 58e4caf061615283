// Behaviour every page shares, kept out of the HTML so that the Content-Security-Policy allows no
// inline script: a form with data-confirm asks before it submits; an htmx form with
// data-reset-on-success empties itself once its request succeeded.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
}, true);

document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (form instanceof HTMLFormElement && form.hasAttribute("data-reset-on-success") && event.detail.successful) {
    form.reset();
  }
});
