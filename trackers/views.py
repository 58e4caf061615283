"""Pages for workspaces, datasets, documents, jobs and search."""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import reswap, retarget

from trackers import deletion, errors, imports, search, services
from trackers import metrics as metrics_module
from trackers.access import (
    Scope,
    get_dataset_for_user,
    get_document_for_user,
    get_job_for_user,
    get_workspace_for_user,
    require_role,
    role_in,
    workspaces_for,
)
from trackers.forms import DatasetForm, SearchForm, UploadForm
from trackers.http import PageRequest, bad_request
from trackers.models import CAN_IMPORT, Dataset, Role, Tracker


@login_required
def home(request: PageRequest) -> HttpResponse:
    """The user's workspaces; straight into the only one if there is one."""
    workspaces = list(workspaces_for(request.user).annotate(n_datasets=Count("datasets")))
    if len(workspaces) == 1:
        return redirect("workspace", code=workspaces[0].code)
    return TemplateResponse(request, "trackers/home.html", {"workspaces": workspaces})


@login_required
def workspace_detail(request: PageRequest, code) -> HttpResponse:
    """Datasets, members and recent jobs of one workspace."""
    ws = get_workspace_for_user(request.user, code)
    datasets = ws.datasets.annotate(
        n_documents=Count("documents", distinct=True),
    )
    return TemplateResponse(
        request,
        "trackers/workspace.html",
        {
            "workspace": ws,
            "datasets": datasets,
            "memberships": ws.memberships.select_related("user").order_by("user__username"),
            "jobs": ws.jobs.select_related("dataset")[:10],
            "role": role_in(request.user, ws),
            "can_import": role_in(request.user, ws) in CAN_IMPORT,
            "form": DatasetForm(),
        },
    )


@login_required
@require_POST
def dataset_create(request: PageRequest, code) -> HttpResponse:
    """Create an empty dataset to import into."""
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, CAN_IMPORT)
    form = DatasetForm(request.POST)
    if form.is_valid():
        try:
            ds = services.create_dataset(workspace=ws, **form.cleaned_data)
        except IntegrityError:
            messages.error(request, f"A dataset named '{form.cleaned_data['name']}' already exists here.")
        except services.InputInvalid as exc:
            messages.error(request, str(exc))
        else:
            return redirect("dataset", code=ds.code)
    else:
        messages.error(request, "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items()))
    return redirect("workspace", code=ws.code)


def _activity_context(ds: Dataset) -> dict:
    stats = ds.segments.aggregate(total=Count("id"), embedded=Count("id", filter=Q(vector_row__isnull=False)))
    stats["documents"] = ds.documents.count()
    jobs = list(ds.jobs.all()[:10])
    return {"dataset": ds, "stats": stats, "jobs": jobs, "active": any(not j.is_done for j in jobs)}


def _documents_page(request: PageRequest, ds: Dataset) -> Any:
    return Paginator(ds.documents.annotate(n_segments=Count("segments")).order_by("id"), 25).get_page(
        request.GET.get("page")
    )


def _activity_with_documents(request: PageRequest, ds: Dataset) -> dict:
    """The counts and jobs; once no job runs, the documents table too (swapped in beside them)."""
    context = _activity_context(ds)
    if not context["active"]:
        context.update(page=_documents_page(request, ds), documents_oob=True)
    return context


def _dataset_context(request: PageRequest, ds: Dataset, form: UploadForm | None = None) -> dict:
    page = _documents_page(request, ds)
    return {
        **_activity_context(ds),
        "workspace": ds.workspace,
        "page": page,
        "can_import": role_in(request.user, ds.workspace) in CAN_IMPORT,
        "is_owner": role_in(request.user, ds.workspace) == Role.OWNER,
        "form": form or UploadForm(),
    }


@login_required
def dataset_detail(request: PageRequest, code) -> HttpResponse:
    """A dataset's documents, import form and jobs."""
    ds = get_dataset_for_user(request.user, code)
    return TemplateResponse(request, "trackers/dataset.html", _dataset_context(request, ds))


@login_required
@require_POST
def dataset_upload(request: PageRequest, code) -> HttpResponse:
    """Store an uploaded file and queue its import."""
    ds = get_dataset_for_user(request.user, code)
    require_role(request.user, ds.workspace, CAN_IMPORT)
    form = UploadForm(request.POST, request.FILES)
    if form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            imports.check_upload_size(upload.name, upload.size)
            job = imports.start_import(
                dataset=ds,
                user=request.user,
                filename=upload.name,
                data=upload.read(),
                fmt=form.cleaned_data["format"],
                on_error=form.cleaned_data["on_error"],
            )
        except imports.ImportRejected as exc:
            form.add_error("file", str(exc))
        else:
            if request.htmx:
                ds.refresh_from_db()
                return TemplateResponse(
                    request, "trackers/dataset.html#activity", _activity_with_documents(request, ds)
                )
            messages.success(request, f"Importing {upload.name} (job {job.code}).")
            return redirect("dataset", code=ds.code)
    if request.htmx:
        response = TemplateResponse(
            request, "trackers/dataset.html#upload-form", {"form": form, "dataset": ds}, status=422
        )
        return reswap(retarget(response, "#upload-form"), "outerHTML")
    return TemplateResponse(request, "trackers/dataset.html", _dataset_context(request, ds, form), status=422)


@login_required
def dataset_activity(request: PageRequest, code) -> HttpResponse:
    """Counts and jobs of a dataset; answers 286 when no job is running so HTMX stops polling."""
    ds = get_dataset_for_user(request.user, code)
    context = _activity_with_documents(request, ds)
    response = TemplateResponse(request, "trackers/dataset.html#activity", context)
    if not context["active"]:
        response.status_code = 286
    return response


DOCUMENT_PAGE_SEGMENTS = 200  # a call of 100k turns is 500 pages, not one 12 MB page


@login_required
def document_detail(request: PageRequest, code) -> HttpResponse:
    """One document's segments in order, a page at a time (``?at=N`` opens the page of position N)."""
    doc = get_document_for_user(request.user, code)
    pages = Paginator(doc.segments.order_by("position"), DOCUMENT_PAGE_SEGMENTS)
    at = request.GET.get("at", "")
    number = (
        int(at) // DOCUMENT_PAGE_SEGMENTS + 1 if at.isdigit() and len(at) < 10 else request.GET.get("page")
    )
    return TemplateResponse(
        request,
        "trackers/document.html",
        {
            "document": doc,
            "dataset": doc.dataset,
            "workspace": doc.dataset.workspace,
            "page": pages.get_page(number),
        },
    )


@login_required
def job_detail(request: PageRequest, code) -> HttpResponse:
    """A job's progress and every error it recorded."""
    job = get_job_for_user(request.user, code)
    return TemplateResponse(
        request, "trackers/job.html", {"job": job, "dataset": job.dataset, "workspace": job.workspace}
    )


@login_required
def job_progress(request: PageRequest, code) -> HttpResponse:
    """The progress bar fragment; answers 286 once the job is done so HTMX stops polling."""
    job = get_job_for_user(request.user, code)
    response = TemplateResponse(request, "trackers/dataset.html#job-row", {"job": job, "poll_row": True})
    if job.is_done:
        response.status_code = 286
    return response


@login_required
def search_page(request: PageRequest, code) -> HttpResponse:
    """Find the segments of a dataset closest in meaning to a sentence."""
    ds = get_dataset_for_user(request.user, code)
    form = SearchForm(request.GET or None)
    hits, error = [], ""
    if form.is_valid():
        try:
            hits = search.search_segments(ds, form.cleaned_data["q"], k=form.cleaned_data["k"] or 20)
        except search.IndexNotReady as exc:
            error = str(exc)
    context = {
        "dataset": ds,
        "workspace": ds.workspace,
        "form": form,
        "hits": hits,
        "error": error,
        "can_create": role_in(request.user, ds.workspace) in CAN_IMPORT,  # a tracker from ticked hits
    }
    template = "trackers/search.html#results" if request.htmx else "trackers/search.html"
    return TemplateResponse(request, template, context)


def locked_out(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """Too many wrong passwords (django-axes): 429, saying when signing in works again."""
    wait = settings.AXES_COOLOFF_TIME
    response = render(  # rendered now: axes returns it from its middleware
        request,
        "registration/locked_out.html",
        {
            "minutes": max(1, round(wait.total_seconds() / 60)),
            "retry_at": timezone.now() + wait,
            "failure_limit": settings.AXES_FAILURE_LIMIT,
        },
        status=429,
    )
    response["Retry-After"] = str(int(wait.total_seconds()))
    return response


_LOOPBACK = {"127.0.0.1", "::1"}
_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics: for a caller on this host that no proxy forwarded, or one with the token."""
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode()):
        allowed = True
    else:
        allowed = request.META.get("REMOTE_ADDR") in _LOOPBACK and not any(
            request.META.get(h) for h in _PROXY_HEADERS
        )
    if not allowed:
        return bad_request(
            "metrics are served to this host only, or with 'Authorization: Bearer <TRACKERS_METRICS_TOKEN>'",
            status=403,
        )
    body, content_type = metrics_module.exposition()
    return HttpResponse(body, content_type=content_type)


def _deletable(request: PageRequest, kind: str, code) -> tuple[Any, str]:
    """The object to delete (seen through the caller's scope) and where to go once it is gone."""
    scope = Scope.of_user(request.user)
    if kind == "workspace":
        return scope.workspace(code), reverse("home")
    if kind == "dataset":
        ds = scope.dataset(code)
        return ds, reverse("workspace", args=[ds.workspace.code])
    tracker = get_object_or_404(Tracker.objects.filter(workspace__in=scope.workspaces), code=code)
    return tracker, reverse("trackers", args=[tracker.workspace.code])


@login_required
def delete_page(request: PageRequest, kind: str, code) -> HttpResponse:
    """Say what deleting a workspace, dataset or tracker removes; on POST, with its name typed, delete
    it and everything derived from it (owners only)."""
    obj, after = _deletable(request, kind, code)
    workspace = obj if kind == "workspace" else obj.workspace
    require_role(request.user, workspace, {Role.OWNER})
    problem = ""
    status = 200
    if request.method == "POST":
        try:
            gone = deletion.delete(obj, by=request.user, confirm_name=request.POST.get("confirm_name", ""))
        except errors.Refused as exc:
            problem, status = exc.message, exc.status
        else:
            messages.success(request, f"Deleted {kind} '{obj.name}': " + "; ".join(gone) + ".")
            return redirect(after)
    return TemplateResponse(
        request,
        "trackers/delete.html",
        {
            "kind": kind,
            "obj": obj,
            "workspace": workspace,
            "goes": deletion.what_goes(obj),
            "refusal": deletion.refusal(obj),
            "problem": problem,
        },
        status=status,
    )
