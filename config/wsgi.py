"""The WSGI application: Django's, with a lean path for the prediction API's calls that carry no
cookie (an API key's, from a program). Those need none of a browser's middleware (sessions, CSRF,
messages, htmx, login lockouts, static files), so they skip it; security headers, the body limit and
URL normalization still apply. Any call with a cookie, and every other path, goes through it all."""

import os

from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
full = get_wsgi_application()

from django.conf import settings  # noqa: E402  (after the app is set up)

from trackers import encoders  # noqa: E402

encoders.limit_threads(settings.WEB_ENCODER_THREADS)  # a web process's encoder: see the setting


class LeanHandler(WSGIHandler):
    """Django's handler with only the middleware of ``settings.API_LEAN_MIDDLEWARE``."""

    def load_middleware(self, is_async: bool = False) -> None:
        chosen = settings.MIDDLEWARE
        settings.MIDDLEWARE = [m for m in chosen if m in settings.API_LEAN_MIDDLEWARE]
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = chosen


lean = LeanHandler()


def application(environ, start_response):
    if environ.get("PATH_INFO", "").startswith("/api/v1/") and not environ.get("HTTP_COOKIE"):
        return lean(environ, start_response)
    return full(environ, start_response)
