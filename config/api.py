"""The JSON APIs: the app's (OpenAPI at /api/docs) and the prediction API (/api/v1/docs); each
app's router, API key or session auth, one error shape (``{"detail": ...}``)."""

from __future__ import annotations

import json
import math

import orjson
from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from ninja import NinjaAPI
from ninja.errors import HttpError, ValidationError
from ninja.parser import Parser
from ninja.renderers import BaseRenderer
from ninja.responses import NinjaJSONEncoder

from labeling.api import router as labeling_router
from serving.auth import BearerKey, BrowserSession, HeaderKey
from serving.keys.api import router as keys_router
from serving.live.api import router as feedback_router
from serving.ml.artifacts import ArtifactMismatch
from serving.predict.api import router as predict_router
from serving.scoring.api import router as scoring_router
from serving.versions.api import router as versions_router
from serving.webhooks.api import router as webhooks_router
from trackers.api import router as trackers_router
from trackers.encoders import EncoderMismatch
from trackers.errors import Refused
from trackers.http import PerKeyRate
from trackers.imports import format_size
from trackers.text import nonfinite_problem


class StrictJSON(Parser):
    """Request bodies as JSON, refusing what JSON has no room for before any view sees it: NaN,
    Infinity and numbers too large for a float (Python's parser takes them; PostgreSQL refuses them)
    and nesting deeper than the parser goes, each said with where it is."""

    def parse_body(self, request):
        try:
            return json.loads(request.body, parse_constant=_not_finite, parse_float=_finite_float)
        except _NotFinite:
            why = nonfinite_problem(json.loads(request.body))
            raise BodyRefused(why or "the request body holds a number that is not finite") from None
        except RecursionError:
            raise BodyRefused("the request body nests too deeply") from None


class BodyRefused(ValueError):
    """A request body the API cannot take, and why."""


class _NotFinite(ValueError):
    pass


def _not_finite(name: str) -> float:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


api = NinjaAPI(
    title="Trackers API",
    version="1",
    description="Import corpora, follow jobs, search by meaning, and train trackers. Authenticate with "
    "`Authorization: Bearer <key>` or `X-API-Key: <key>` (keys are made on a workspace's API keys page or with `POST /api/v1/workspaces/{code}/keys`), "
    "or with a browser session.",
    auth=[BearerKey(), HeaderKey(), BrowserSession()],
    throttle=[PerKeyRate("api", "API_RATE")],
    parser=StrictJSON(),
    urls_namespace="api",
)


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
    throttle=[PerKeyRate("api-v1", "API_V1_RATE")],
    renderer=FastJSON(),
    parser=StrictJSON(),
    urls_namespace="api-v1",
)

for one in (api, api_v1):

    @one.exception_handler(Refused)
    def refused(request, exc, one=one):
        """Every refusal of a service, with the status its kind maps to (``trackers.errors``)."""
        body = {"detail": str(exc), **({"field": exc.field} if exc.field else {})}
        return one.create_response(request, body, status=exc.status)

    @one.exception_handler(PermissionDenied)
    def permission_denied(request, exc, one=one):
        return one.create_response(request, {"detail": str(exc) or "not allowed"}, status=403)

    @one.exception_handler(HttpError)
    def http_error(request, exc, one=one):
        """ninja's refusal of a body it could not parse says why (which number, line, column)."""
        detail, cause = str(exc), exc.__cause__
        if isinstance(cause, BodyRefused):
            detail = str(cause)
        elif isinstance(cause, json.JSONDecodeError):
            detail = f"the request body is not JSON: {cause.msg} (line {cause.lineno}, column {cause.colno})"
        elif isinstance(cause, UnicodeDecodeError):
            detail = f"the request body is not UTF-8 (byte {cause.start + 1})"
        return one.create_response(request, {"detail": detail}, status=exc.status_code)

    @one.exception_handler(ValidationError)
    def invalid(request, exc, one=one):
        """A 422 that names where: ``["body", "texts", 0]``, not the view's own parameter name
        (``["body", "body", "texts", 0]``)."""
        errors = []
        for error in exc.errors:
            loc = list(error.get("loc", ()))
            if len(loc) > 2 and loc[0] in ("body", "query", "path", "form", "file"):
                del loc[1]
            errors.append({**error, "loc": loc})
        return one.create_response(request, {"detail": errors}, status=422)

    @one.exception_handler(RequestDataTooBig)
    def too_big(request, exc, one=one):
        limit = format_size(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        return one.create_response(
            request,
            {
                "detail": f"the request body is over {limit}, the limit for a JSON body (send files as uploads)"
            },
            status=413,
        )


@api_v1.exception_handler(ArtifactMismatch)
@api_v1.exception_handler(EncoderMismatch)
def cannot_serve(request, exc):
    """A version whose files or encoder do not match is refused, saying why: the install needs fixing."""
    return api_v1.create_response(request, {"detail": f"this model version cannot serve: {exc}"}, status=503)


api.add_router("", trackers_router)
api.add_router("", labeling_router)
api_v1.add_router("", predict_router)
api_v1.add_router("", versions_router)
api_v1.add_router("", keys_router)
api_v1.add_router("", scoring_router)
api_v1.add_router("", webhooks_router)
api_v1.add_router("", feedback_router)
