from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path, re_path
from django.views.generic import RedirectView, TemplateView

from config.api import api, api_v1
from config.errors import not_found
from labeling import views as labeling_views
from serving.console import views as console_views
from serving.keys import views as keys_views
from serving.live import views as live_views
from serving.scoring import views as scoring_views
from serving.versions import views as versions_views
from serving.webhooks import views as webhooks_views
from trackers import team_views, views

# Django's own error answers: JSON under /api/, the usual pages elsewhere.
handler400 = "config.errors.bad_request"
handler403 = "config.errors.permission_denied"
handler404 = "config.errors.page_not_found"
handler500 = "config.errors.server_error"

urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("api-reference/", TemplateView.as_view(template_name="api_reference.html"), name="api-reference"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("metrics", views.metrics, name="metrics"),
    path("api/v1/", api_v1.urls),
    path("api/", api.urls),
    re_path(r"^api/", not_found),
    path("w/<uuid:code>/", views.workspace_detail, name="workspace"),
    path("w/<uuid:code>/datasets/", views.dataset_create, name="dataset-create"),
    path("w/<uuid:code>/members/", team_views.members_page, name="members"),
    path("w/<uuid:code>/members/invite/", team_views.invite, name="member-invite"),
    path("w/<uuid:code>/members/<int:user_id>/role/", team_views.change_member_role, name="member-role"),
    path("w/<uuid:code>/members/<int:user_id>/remove/", team_views.remove_member, name="member-remove"),
    path(
        "w/<uuid:code>/invitations/<int:invitation_id>/revoke/",
        team_views.revoke_invitation,
        name="invitation-revoke",
    ),
    path("w/<uuid:code>/audit/", team_views.audit_page, name="audit"),
    path("w/<uuid:code>/delete/", views.delete_page, {"kind": "workspace"}, name="workspace-delete"),
    path("d/<uuid:code>/delete/", views.delete_page, {"kind": "dataset"}, name="dataset-delete"),
    path("t/<uuid:code>/delete/", views.delete_page, {"kind": "tracker"}, name="tracker-delete"),
    path("w/<uuid:code>/console/", console_views.workspace_console, name="workspace-console"),
    path("console/", console_views.install_console, name="install-console"),
    path("console/retry/<uuid:code>/", console_views.retry, name="console-retry"),
    path("invite/<str:token>/", team_views.invitation, name="invitation"),
    path("d/<uuid:code>/", views.dataset_detail, name="dataset"),
    path("d/<uuid:code>/upload/", views.dataset_upload, name="dataset-upload"),
    path("d/<uuid:code>/activity/", views.dataset_activity, name="dataset-activity"),
    path("d/<uuid:code>/search/", views.search_page, name="search"),
    path("w/<uuid:code>/trackers/", labeling_views.tracker_list, name="trackers"),
    path("w/<uuid:code>/trackers/new/", labeling_views.tracker_create, name="tracker-create"),
    path("t/<uuid:code>/", labeling_views.tracker_detail, name="tracker"),
    path("t/<uuid:code>/train/", labeling_views.tracker_train, name="tracker-train"),
    path("t/<uuid:code>/settings/", labeling_views.tracker_settings, name="tracker-settings"),
    path("t/<uuid:code>/check/", labeling_views.tracker_check, name="tracker-check"),
    path("t/<uuid:code>/threshold/", versions_views.threshold, name="tracker-threshold"),
    path("t/<uuid:code>/play/", labeling_views.play, name="play"),
    path("t/<uuid:code>/answer/", labeling_views.answer, name="answer"),
    path("t/<uuid:code>/undo/", labeling_views.undo, name="undo"),
    path("t/<uuid:code>/summary/", labeling_views.summary, name="round-summary"),
    path("t/<uuid:code>/labels/", labeling_views.labels, name="labels"),
    path("w/<uuid:code>/keys/", keys_views.keys_page, name="api-keys"),
    path("w/<uuid:code>/keys/<int:key_id>/revoke/", keys_views.revoke_key, name="api-key-revoke"),
    path("t/<uuid:code>/versions/", versions_views.versions, name="tracker-versions"),
    path("t/<uuid:code>/live/", live_views.panel, name="tracker-live"),
    path("t/<uuid:code>/live/keeping/", live_views.keeping, name="tracker-live-keeping"),
    path("t/<uuid:code>/live/review/", live_views.review, name="tracker-live-review"),
    path("t/<uuid:code>/versions/automatic/", versions_views.automatic, name="tracker-versions-automatic"),
    path(
        "t/<uuid:code>/versions/<int:number>/promote/", versions_views.promote, name="tracker-version-promote"
    ),
    path(
        "t/<uuid:code>/versions/<int:number>/download/",
        versions_views.download,
        name="tracker-version-download",
    ),
    path("t/<uuid:code>/alerts/", webhooks_views.alerts, name="tracker-alerts"),
    path("alerts/<uuid:code>/", webhooks_views.alert_endpoint, name="alert-endpoint"),
    path("alerts/<uuid:code>/<slug:action>/", webhooks_views.alert_action, name="alert-action"),
    path("deliveries/<int:pk>/resend/", webhooks_views.resend_delivery, name="delivery-resend"),
    path("d/<uuid:code>/scoring/", scoring_views.dataset_scoring, name="dataset-scoring"),
    path("scoring/<uuid:code>/", scoring_views.scoring_job, name="scoring-job"),
    path("scoring/<uuid:code>/progress/", scoring_views.scoring_progress, name="scoring-progress"),
    path(
        "scoring/<uuid:code>/download.<str:fmt>",
        scoring_views.scoring_download,
        name="scoring-download",
    ),
    path(
        "scoring/<uuid:code>/results/<int:result_id>/feedback/",
        scoring_views.scoring_feedback,
        name="scoring-feedback",
    ),
    path("doc/<uuid:code>/", views.document_detail, name="document"),
    path("jobs/<uuid:code>/", views.job_detail, name="job"),
    path("jobs/<uuid:code>/progress/", views.job_progress, name="job-progress"),
]
