"""The Django admin: branded, the records the system makes read-only, and staff's actions going
through the app's own services (and into the audit log)."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.test import RequestFactory
from django.urls import reverse

from labeling.models import TrainingRun
from serving.models import ApiKey, ModelVersion
from tests.test_versions import play
from trackers.models import AuditAction, AuditEntry, WorkState

pytestmark = pytest.mark.django_db

SYSTEM_RECORDS = [
    "serving.ModelVersion",
    "labeling.TrainingRun",
    "serving.WebhookEvent",
    "serving.WebhookDelivery",
    "serving.DeliveryAttempt",
    "serving.ApiKey",
    "serving.ScoringJob",
    "trackers.Job",
    "trackers.AuditEntry",
    "trackers.Membership",
    "trackers.Invitation",
    "labeling.Annotation",
    "labeling.Card",
]


def test_the_admin_is_branded_and_speaks_proper_plurals(admin_client):
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert "Trackers administration" in page and "Django administration" not in page
    assert "Webhook deliveries" in page and "deliverys" not in page and "Promotion policies" in page
    assert "API keys" in page


@pytest.mark.parametrize("label", SYSTEM_RECORDS)
def test_system_records_cannot_be_added_changed_or_deleted_by_hand(admin_client, label):
    from django.contrib import admin

    model = apps.get_model(label)
    model_admin = admin.site._registry[model]

    request = RequestFactory().get("/")
    request.user = User.objects.get(username="admin")
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    meta = model._meta
    assert admin_client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_add")).status_code == 403


def test_staff_roll_back_and_promote_through_the_service(
    admin_client,
    trained,
    owner,
    django_capture_on_commit_callbacks,
):
    play(trained, owner, django_capture_on_commit_callbacks)
    v1, v2 = ModelVersion.objects.filter(tracker=trained).order_by("number")
    url = reverse("admin:serving_modelversion_changelist")
    response = admin_client.post(url, {"action": "make_live", "_selected_action": [v1.pk]}, follow=True)
    assert b"v1 is live" in response.content
    assert ModelVersion.objects.get(is_live=True, tracker=trained).number == 1
    entry = AuditEntry.objects.filter(action=AuditAction.VERSION_ROLLED_BACK).get()
    assert entry.actor_name == "admin" and entry.via == "page"
    two = admin_client.post(url, {"action": "make_live", "_selected_action": [v1.pk, v2.pk]}, follow=True)
    assert b"Choose exactly one version" in two.content
    # The change page shows the version without a form to save it.
    change = admin_client.get(reverse("admin:serving_modelversion_change", args=[v1.pk]))
    assert change.status_code == 200 and b'name="_save"' not in change.content


def test_staff_retry_a_failed_run_and_revoke_keys(admin_client, trained, owner, workspace):
    run = TrainingRun.objects.filter(tracker=trained).first()
    TrainingRun.objects.filter(pk=run.pk).update(state=WorkState.FAILED, error="out of memory")
    admin_client.post(
        reverse("admin:labeling_trainingrun_changelist"), {"action": "retry", "_selected_action": [run.pk]}
    )
    run.refresh_from_db()
    assert run.state in (WorkState.QUEUED, WorkState.SUCCEEDED) and run.error == ""  # eager: ran again
    assert AuditEntry.objects.filter(action=AuditAction.JOB_RETRIED, target_code=str(run.code)).count() == 1
    refused = admin_client.post(
        reverse("admin:labeling_trainingrun_changelist"),
        {"action": "retry", "_selected_action": [run.pk]},
        follow=True,
    )
    assert b"only failed work is retried" in refused.content

    key, _ = ApiKey.issue(workspace=workspace, name="ci", created_by=owner)
    admin_client.post(
        reverse("admin:serving_apikey_changelist"), {"action": "revoke", "_selected_action": [key.pk]}
    )
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEntry.objects.filter(action=AuditAction.KEY_REVOKED, target_code=key.prefix).count() == 1
