"""The similarity search page (also where seed examples for a tracker are picked)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from labeling import services
from trackers.access import get_dataset_for_user
from trackers.forms import SearchForm


@login_required
def search(request: HttpRequest, code) -> HttpResponse:
    """Find the segments of a dataset closest in meaning to a sentence."""
    ds = get_dataset_for_user(request.user, code)
    form = SearchForm(request.GET or None)
    hits, error = [], ""
    if form.is_valid():
        try:
            hits = services.search_segments(ds, form.cleaned_data["q"], k=form.cleaned_data["k"] or 20)
        except services.IndexNotReady as exc:
            error = str(exc)
    context = {"dataset": ds, "workspace": ds.workspace, "form": form, "hits": hits, "error": error}
    template = "labeling/search.html#results" if request.htmx else "labeling/search.html"
    return TemplateResponse(request, template, context)
