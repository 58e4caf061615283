"""HTTP helpers of the web layer: the request type page views get, each request's id and log line,
the request body limit, and the APIs' per-caller request rate."""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers
from django_htmx.middleware import HtmxDetails
from ninja.throttling import BaseThrottle

from trackers import context, metrics, rates
from trackers.access import KeyPrincipal


class PageRequest(HttpRequest):
    """A request to a ``@login_required`` page: a signed-in user, and ``request.htmx`` from django-htmx."""

    user: User
    htmx: HtmxDetails


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
request_log = logging.getLogger("trackers.requests")


def _route(request: HttpRequest) -> str:
    """The URL pattern the request matched ("api/v1/trackers/<code>/predict"), or "unmatched" (so
    that unknown paths add no series to the metrics)."""
    match = request.resolver_match
    return (match.route or match.view_name) if match is not None else "unmatched"


class RequestContext:
    """Give each request an id (the caller's ``X-Request-ID`` when it is a plain token of at most 64
    characters, else a new one), answer with it, hand it to the audit log, the log lines and the tasks
    the request enqueues (``trackers.context``), count it (``trackers.metrics``), and log one line when
    it is answered: method, route, status, milliseconds, and who called."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        rid = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        request.request_id = rid  # type: ignore[attr-defined]
        start = time.perf_counter()
        with context.acting(context.Caller(rid, request)):
            response = self.get_response(request)
        seconds = time.perf_counter() - start
        response["X-Request-ID"] = rid
        route = _route(request)
        metrics.request_answered(request.method or "", route, response.status_code, seconds)
        if request_log.isEnabledFor(logging.INFO):
            request_log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "request_id": rid,
                    "method": request.method,
                    "path": request.path,
                    "route": route,
                    "status": response.status_code,
                    "ms": round(seconds * 1000, 2),
                    **_caller_fields(request),
                },
            )
        return response


def _caller_fields(request: HttpRequest) -> dict[str, Any]:
    """Who made the request, without a query: an API key's prefix, or the user the view loaded."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, KeyPrincipal):
        return {"key": auth.prefix}
    user = getattr(request, "_cached_user", None)  # set once something asked for request.user
    if user is not None and user.is_authenticated:
        return {"user": user.get_username()}
    return {}


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
            from trackers.imports import format_size

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


log = logging.getLogger(__name__)
_redis_down_said = -60.0


class PerKeyRate(BaseThrottle):
    """Requests per API key (or signed-in user, else address) at the rate of the setting
    ``rate_setting`` ("600/m"), counted in Redis for every web process at once (``trackers.rates``:
    a process takes requests in leases, so most calls make no round trip). Over it, 429 with
    Retry-After, the seconds until the caller's window ends. Each ``group`` counts apart. If Redis does
    not answer, the request passes (the count fails open) and the process says so once a minute."""

    counters = rates.Counters()  # one per process: every instance's leases

    def __init__(self, group: str, rate_setting: str) -> None:
        self.group = group
        self.rate_setting = rate_setting
        self._waits = threading.local()  # one instance serves every thread of the process

    def allow_request(self, request) -> bool:
        text = getattr(settings, self.rate_setting)
        if not text:
            return True
        rate = _rate(text)
        name = f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:rate:{self.group}:{self._caller(request)}"
        try:
            verdict = self.counters.take(_redis, name, rate)
        except redis.RedisError as exc:
            global _redis_down_said
            now = time.monotonic()
            if now - _redis_down_said >= 60:  # said once a minute per process, not once per request
                _redis_down_said = now
                log.warning("the API's rate is not counted: Redis does not answer (%s)", exc)
            return True
        self._waits.value = verdict.wait_s
        return verdict.allowed

    def wait(self) -> float | None:
        return getattr(self._waits, "value", None)

    def _caller(self, request) -> str:
        auth = getattr(request, "auth", None)
        if isinstance(auth, KeyPrincipal):
            return f"key:{auth.key_id}"
        if auth is not None and getattr(auth, "pk", None) is not None:
            return f"user:{auth.pk}"
        return f"address:{self.get_ident(request)}"


def _redis():
    """The cache's Redis client (its shared pool): asked only when a process needs a new lease."""
    return caches["default"]._cache.get_client(write=True)  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=64)
def _rate(text: str) -> rates.Rate:
    return rates.Rate.parse(text)


class ApiAnswersJson:
    """Every answer under /api/ is JSON in the API's error shape: a refusal made outside the API's own
    views (an unsupported method's 405, a middleware's refusal) is rewritten from text to
    ``{"detail": ...}``, keeping its status and headers."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code < 400
            or not request.path.startswith("/api/")
            or response.get("Content-Type", "").startswith("application/json")
            or response.streaming
        ):
            return response
        text = response.content.decode("utf-8", "replace").strip()
        if response.get("Content-Type", "").startswith("text/html") or not text:
            text = response.reason_phrase
        answer = JsonResponse({"detail": text[:1000]}, status=response.status_code)
        for header, value in response.items():
            if header.lower() not in ("content-type", "content-length"):
                answer[header] = value
        return answer


class NoStorePrivate:
    """``Cache-Control: no-store`` (and private) on every API answer and every page a signed-in user
    gets: what one person saw must not be kept by a shared cache or shown again from the browser's
    history after they log out. Static files are served before this runs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "no-store" in response.get("Cache-Control", ""):
            return response
        user = getattr(request, "user", None)
        if request.path.startswith("/api/") or (user is not None and user.is_authenticated):
            add_never_cache_headers(response)
        return response


class SharedPool:
    """A connection pool per Redis URL for the whole process (``CACHES``' ``pool_class``). Django keeps
    a cache object per context, and a server may run each request in a fresh one: with a pool per
    cache object, every request would open (and greet) a new connection for its rate counter."""

    _pools: ClassVar[dict[tuple[str, str], redis.ConnectionPool]] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.ConnectionPool:
        key = (url, repr(sorted(kwargs.items())))
        with cls._lock:
            pool = cls._pools.get(key)
            if pool is None:
                pool = cls._pools[key] = redis.ConnectionPool.from_url(url, **kwargs)
        return pool
