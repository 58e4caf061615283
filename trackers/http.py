"""The request a page view gets, as the type checker should see it."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class PageRequest(HttpRequest):
    """A request to a ``@login_required`` page: a signed-in user, and ``request.htmx`` from django-htmx."""

    user: User
    htmx: HtmxDetails
