"""What the console shows: traffic and alerts per tracker over a period, queues and workers, failed
work to retry, storage, and the health of each part."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Length
from django.utils import timezone

from labeling import charts
from labeling.models import TrainingRun
from serving import traffic
from serving.models import ModelVersion, ScoringJob, WebhookDelivery
from serving.versions import runtime
from serving.versions.services import versions_root
from trackers import bucket, health, services, work
from trackers.models import Dataset, Job, Segment, Tracker, Workspace, WorkState


@dataclass(frozen=True)
class Period:
    name: str
    label: str
    step: timedelta
    steps: int
    tick: str  # strftime of a column's label
    ticks_every: int


PERIODS = {
    "1d": Period("1d", "the last 24 hours, by hour", timedelta(hours=1), 24, "%H:00", 6),
    "7d": Period("7d", "the last 7 days, by day", timedelta(days=1), 7, "%a %d", 1),
    "30d": Period("30d", "the last 30 days, by day", timedelta(days=1), 30, "%d %b", 7),
}


def _window(period: Period, now: datetime) -> datetime:
    """The start of the first column: columns end with the current hour (or day)."""
    local = timezone.localtime(now)
    if period.step == timedelta(hours=1):
        current = local.replace(minute=0, second=0, microsecond=0)
    else:
        current = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return current - period.step * (period.steps - 1)


def traffic_rows(trackers: list[Tracker], period: Period, now: datetime | None = None) -> dict[str, Any]:
    """Per tracker: predictions, matches, match rate, p50/p99 latency, alerts delivered and failed
    over the period, with a chart of its traffic; and the period's latency and alerts overall."""
    now = now or timezone.now()
    start = _window(period, now)
    ids = [t.pk for t in trackers]
    per = traffic.series(ids, start=start, step=period.step, steps=period.steps)
    alerts = _alerts(ids, start, period)
    live = dict(
        ModelVersion.objects.filter(tracker_id__in=ids, is_live=True).values_list("tracker_id", "number")
    )
    labels = [(start + period.step * i) for i in range(period.steps)]
    ticks = [timezone.localtime(at).strftime(period.tick) for at in labels]
    rows = []
    all_latency: list[list[dict[str, int]]] = [[] for _ in labels]
    for t in trackers:
        cells = per[t.pk]
        predictions = sum(c["predictions"] for c in cells)
        matched = sum(c["matches"] for c in cells)
        merged = traffic._merged([c["latency"] for c in cells])
        for i, c in enumerate(cells):
            all_latency[i].append(c["latency"])
        ok, failed = alerts["per_tracker"].get(t.pk, (0, 0))
        rows.append(
            {
                "tracker": t,
                "live": live.get(t.pk),
                "predictions": predictions,
                "matches": matched,
                "match_rate": matched / predictions if predictions else None,
                "p50_ms": traffic.percentile(merged, 0.5),
                "p99_ms": traffic.percentile(merged, 0.99),
                "alerts_ok": ok,
                "alerts_failed": failed,
                "chart": charts.stacked_bars(
                    [
                        (
                            tick,
                            [c["matches"], c["predictions"] - c["matches"]],
                            f"{tick}: {c['predictions']:,} scored, {c['matches']:,} matched",
                        )
                        for tick, c in zip(ticks, cells, strict=True)
                    ],
                    classes=["bar-match", "bar-rest"],
                    ticks_every=period.ticks_every,
                ),
            }
        )
    merged_by_column = [traffic._merged(hs) for hs in all_latency]
    latency_chart = charts.scaled_lines(
        ticks,
        {
            "p50": [traffic.percentile(m, 0.5) for m in merged_by_column],
            "p99": [traffic.percentile(m, 0.99) for m in merged_by_column],
        },
    )
    alerts_chart = charts.stacked_bars(
        [
            (tick, [ok, bad], f"{tick}: {ok} delivered, {bad} failed")
            for tick, (ok, bad) in zip(ticks, alerts["per_column"], strict=True)
        ],
        classes=["bar-ok", "bar-bad"],
        ticks_every=period.ticks_every,
    )
    return {
        "rows": rows,
        "latency_chart": latency_chart,
        "alerts_chart": alerts_chart,
        "totals": {
            "predictions": sum(r["predictions"] for r in rows),
            "matches": sum(r["matches"] for r in rows),
            "alerts_ok": sum(r["alerts_ok"] for r in rows),
            "alerts_failed": sum(r["alerts_failed"] for r in rows),
        },
    }


def _alerts(tracker_ids: list[int], start: datetime, period: Period) -> dict[str, Any]:
    """Deliveries that ended in the period, delivered or failed: per tracker and per column."""
    per_tracker: dict[int, tuple[int, int]] = {}
    per_column = [[0, 0] for _ in range(period.steps)]
    ended = WebhookDelivery.objects.filter(
        endpoint__tracker_id__in=tracker_ids,
        finished_at__gte=start,
        state__in=[WorkState.SUCCEEDED, WorkState.FAILED],
    )
    for tracker_id, ok, bad in (
        ended.values("endpoint__tracker_id")
        .annotate(
            ok=Count("pk", filter=Q(state=WorkState.SUCCEEDED)),
            bad=Count("pk", filter=Q(state=WorkState.FAILED)),
        )
        .values_list("endpoint__tracker_id", "ok", "bad")
    ):
        per_tracker[tracker_id] = (ok, bad)
    for finished, state in ended.values_list("finished_at", "state"):
        if finished is None:
            continue
        i = int((finished - start) / period.step)
        if 0 <= i < period.steps:
            per_column[i][0 if state == WorkState.SUCCEEDED else 1] += 1
    return {"per_tracker": per_tracker, "per_column": per_column}


def failed_work(
    workspaces: QuerySet[Workspace] | None, days: int = 30, limit: int = 50
) -> list[dict[str, Any]]:
    """Work that failed in the last ``days`` days, newest first, with why and whether it can be
    retried: corpus jobs, training runs, scoring jobs."""
    since = timezone.now() - timedelta(days=days)
    found: list[dict[str, Any]] = []

    def scoped(qs: QuerySet[Any], path: str) -> QuerySet[Any]:
        return qs if workspaces is None else qs.filter(**{f"{path}__in": workspaces})

    for job in scoped(
        Job.objects.filter(state=WorkState.FAILED, finished_at__gte=since), "workspace"
    ).select_related("dataset", "workspace")[:limit]:
        found.append(_failed("job", job, f"{job.get_kind_display()} of {job.dataset.name}", job.workspace))
    for run in scoped(
        TrainingRun.objects.filter(state=WorkState.FAILED, finished_at__gte=since), "tracker__workspace"
    ).select_related("tracker__workspace")[:limit]:
        found.append(_failed("run", run, f"training of {run.tracker.name}", run.tracker.workspace))
    for scoring in scoped(
        ScoringJob.objects.filter(state=WorkState.FAILED, finished_at__gte=since), "workspace"
    ).select_related("dataset", "workspace")[:limit]:
        found.append(_failed("scoring", scoring, f"scoring of {scoring.dataset.name}", scoring.workspace))
    found.sort(key=lambda f: f["finished_at"] or since, reverse=True)
    return found[:limit]


def _failed(kind: str, row: Any, what: str, workspace: Workspace) -> dict[str, Any]:
    return {
        "kind": kind,
        "code": row.code,
        "what": what,
        "workspace": workspace,
        "error": row.error,
        "finished_at": row.finished_at,
        "refusal": work.retry_refusal(row),
    }


FAILED_KINDS = {"job": Job, "run": TrainingRun, "scoring": ScoringJob}


def retry_failed(kind: str, code: Any, workspaces: QuerySet[Workspace] | None) -> Any:
    """Queue one failed piece of work again (``work.retry``): it must be of ``workspaces`` (None:
    any, for staff)."""
    model = FAILED_KINDS[kind]
    path = "tracker__workspace" if kind == "run" else "workspace"
    rows = model.objects.filter(code=code)
    if workspaces is not None:
        rows = rows.filter(**{f"{path}__in": workspaces})
    row: Any = rows.first()
    if row is None:
        return None
    found = _failed(kind, row, "", row.tracker.workspace if kind == "run" else row.workspace)
    what = {
        "job": lambda r: f"{r.get_kind_display()} of {r.dataset.name}",
        "run": lambda r: f"training of {r.tracker.name}",
        "scoring": lambda r: f"scoring of {r.dataset.name}",
    }[kind](row)
    return work.retry(row, workspace=found["workspace"], what=what)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


def storage(workspaces: QuerySet[Workspace] | None) -> dict[str, Any]:
    """Bytes used per dataset (its texts in the database, its vectors, its index) and per tracker
    (its model versions' files)."""
    datasets = Dataset.objects.select_related("workspace").order_by("workspace__name", "name")
    trackers = Tracker.objects.select_related("workspace").order_by("workspace__name", "name")
    if workspaces is not None:
        datasets, trackers = (
            datasets.filter(workspace__in=workspaces),
            trackers.filter(workspace__in=workspaces),
        )
    text_bytes = dict(
        Segment.objects.filter(dataset__in=datasets)
        .values("dataset_id")
        .annotate(n=Sum(Length("text")))
        .values_list("dataset_id", "n")
    )
    rows: list[dict[str, Any]] = []
    for ds in datasets:
        vectors = _size(services.vector_store(ds).root)
        index = _size(bucket.local(ds.index_file)) if ds.index_file else 0
        texts = int(text_bytes.get(ds.pk) or 0)
        rows.append(
            {
                "dataset": ds,
                "texts": texts,
                "vectors": vectors,
                "index": index,
                "total": texts + vectors + index,
            }
        )
    model_rows: list[dict[str, Any]] = []
    for t in trackers:
        root = versions_root(t)
        size = _size(root) if root.exists() else 0
        count = ModelVersion.objects.filter(tracker=t).count()
        if count:
            model_rows.append({"tracker": t, "versions": count, "bytes": size})
    return {
        "datasets": rows,
        "models": model_rows,
        "total": sum(r["total"] for r in rows) + sum(r["bytes"] for r in model_rows),
    }


def health_checks() -> dict[str, dict[str, Any]]:
    """Database, Redis, workers and the encoder: each ok or not, with a detail."""
    checks = health.checks()
    found = health.workers()
    if found is None:
        checks["workers"] = {"ok": False, "detail": "unknown: Redis does not answer"}
    else:
        alive = [w for w in found if w["alive"]]
        queues = {q for w in alive for q in w["queues"]}
        missing = [q for q in health.QUEUES if q not in queues]
        checks["workers"] = {
            "ok": bool(alive) and not missing,
            "detail": f"{len(alive)} answering"
            + (f"; no worker takes {', '.join(missing)}" if missing else "")
            + (f"; {len(found) - len(alive)} silent" if len(found) > len(alive) else ""),
        }
    try:
        encoder_id = runtime.embed(["ready"], None)[1]
        checks["encoder"] = {"ok": True, "detail": encoder_id}
    except Exception as exc:
        checks["encoder"] = {"ok": False, "detail": f"cannot be loaded ({type(exc).__name__})"}
    return checks
