"""Django's own error answers (the URL conf's handlers): JSON in the API's error shape under /api/, the
usual pages elsewhere, so that a client of the API never has to read HTML, whatever failed."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults


def not_found(request: HttpRequest) -> JsonResponse:
    """Any other path under /api/: a JSON 404 in the API's error shape, not Django's HTML page."""
    return JsonResponse({"detail": "Not Found: no API endpoint at this path (see /api/docs)"}, status=404)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Bad Request: the request could not be read"}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": str(exception) or "not allowed"}, status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return not_found(request)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"detail": "Internal Server Error: the details are in the server's log"},
            status=500,
        )
    return defaults.server_error(request)
