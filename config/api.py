"""The JSON APIs: the app's (OpenAPI at /api/docs) and the prediction API (/api/v1/docs); each
app's router, API key or session auth, one error shape (``{"detail": ...}``)."""

from __future__ import annotations

import threading

import orjson
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django_ratelimit.core import get_usage
from ninja import NinjaAPI
from ninja.renderers import BaseRenderer
from ninja.responses import NinjaJSONEncoder
from ninja.throttling import BaseThrottle

from labeling.api import router as labeling_router
from serving.api import router as serving_router
from serving.auth import BearerKey, BrowserSession, HeaderKey
from serving.ml.artifacts import ArtifactMismatch
from serving.scoring_api import router as scoring_router
from serving.webhooks_api import router as webhooks_router
from trackers.access import KeyPrincipal
from trackers.api import router as trackers_router
from trackers.encoders import EncoderMismatch

api = NinjaAPI(
    title="Trackers API",
    version="1",
    description="Import corpora, follow jobs, search by meaning, and train trackers. Authenticate with "
    "`Authorization: Bearer <key>` or `X-API-Key: <key>` (keys are made on a workspace's API keys page or with `POST /api/v1/workspaces/{code}/keys`), "
    "or with a browser session.",
    auth=[BearerKey(), HeaderKey(), BrowserSession()],
    urls_namespace="api",
)


class PerKeyRate(BaseThrottle):
    """Requests per API key (or signed-in user, else address) in a fixed window,
    ``TRACKERS_API_V1_RATE``: one atomic increment of a counter in the cache per request
    (django-ratelimit), shared by every web process when the cache is Redis. Over it, 429 with
    Retry-After, the seconds until the window ends."""

    def __init__(self) -> None:
        self._waits = threading.local()  # one instance serves every thread of the process

    def allow_request(self, request) -> bool:
        usage = get_usage(
            request, group="api-v1", key=self._caller, rate=settings.API_V1_RATE, increment=True
        )
        if usage is None:
            return True
        self._waits.value = usage["time_left"] + 1  # its window includes its last second
        return not usage["should_limit"]

    def wait(self) -> float | None:
        return getattr(self._waits, "value", None)

    def _caller(self, group: str, request) -> str:
        auth = getattr(request, "auth", None)
        if isinstance(auth, KeyPrincipal):
            return f"key:{auth.key_id}"
        if auth is not None and getattr(auth, "pk", None) is not None:
            return f"user:{auth.pk}"
        return f"address:{self.get_ident(request)}"


class FastJSON(BaseRenderer):
    """The prediction API's JSON, written by orjson; anything it does not know (and datetimes, so
    that they read as in the rest of the API) goes through ninja's encoder."""

    media_type = "application/json"
    _fallback = NinjaJSONEncoder().default

    def render(self, request, data, *, response_status):
        return orjson.dumps(data, default=self._fallback, option=orjson.OPT_PASSTHROUGH_DATETIME)


api_v1 = NinjaAPI(
    title="Trackers prediction API",
    version="1",
    description="Score texts with a tracker's live model version (or a pinned one), list its versions, "
    "promote and roll back, score a stored dataset in bulk, and send matches to webhook endpoints. Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`, or "
    'with a browser session. Errors are `{"detail": "..."}`.',
    auth=[BearerKey(), HeaderKey(), BrowserSession()],
    throttle=[PerKeyRate()],
    renderer=FastJSON(),
    urls_namespace="api-v1",
)

for one in (api, api_v1):

    @one.exception_handler(PermissionDenied)
    def permission_denied(request, exc, one=one):
        return one.create_response(request, {"detail": str(exc) or "not allowed"}, status=403)


@api_v1.exception_handler(ArtifactMismatch)
@api_v1.exception_handler(EncoderMismatch)
def cannot_serve(request, exc):
    """A version whose files or encoder do not match is refused, saying why: the install needs fixing."""
    return api_v1.create_response(request, {"detail": f"this model version cannot serve: {exc}"}, status=503)


api.add_router("", trackers_router)
api.add_router("", labeling_router)
api_v1.add_router("", serving_router)
api_v1.add_router("", scoring_router)
api_v1.add_router("", webhooks_router)


def not_found(request: HttpRequest) -> JsonResponse:
    """Any other path under /api/: a JSON 404 in the API's error shape, not Django's HTML page."""
    return JsonResponse({"detail": "Not Found: no API endpoint at this path (see /api/docs)"}, status=404)
