"""HTTP helpers of the web layer: the request type page views get, and the request body limit."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_htmx.middleware import HtmxDetails


class PageRequest(HttpRequest):
    """A request to a ``@login_required`` page: a signed-in user, and ``request.htmx`` from django-htmx."""

    user: User
    htmx: HtmxDetails


class RequestBodyLimit:
    """Refuse a request whose declared body is over the limit before any of it is read: the upload
    limit, or the prediction API's (``/api/v1/``), which takes JSON only.

    Django reads a multipart upload to disk before a view can check its size; this answers 413 from
    the Content-Length header alone. A proxy in front should refuse such bodies first (see README).
    """

    OVERHEAD = 1024 * 1024  # multipart boundaries and the form's other fields

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if request.path.startswith("/api/v1/"):
            what, limit, slack = "a prediction request", settings.API_V1_MAX_BODY_BYTES, 0
        else:
            what, limit, slack = "an upload", settings.UPLOAD_MAX_BYTES, self.OVERHEAD
        if length > limit + slack:
            from trackers.services import format_size

            message = (
                f"the request body is {format_size(length)}; the limit for {what} is {format_size(limit)}"
            )
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": message}, status=413)
            return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


def bad_request(message: str, status: int = 400) -> HttpResponse:
    """A refusal in words, as plain text: whatever of the input it quotes is never rendered as HTML."""
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def form_id(value: str | None) -> int | None:
    """A row id posted by a form, or None when it is not a whole number."""
    text = (value or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None
