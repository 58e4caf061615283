"""Webhook alerts: secrets and Standard Webhooks signatures (with rotation), the outbox written with
what caused it, the retry schedule on a controlled clock, Retry-After, 410, 3xx and 4xx against 5xx,
endpoint disabling, grouping and once-per-version alerting, and SSRF refusals at save and at send,
including a DNS answer that changes between the check and the connection."""

from __future__ import annotations

import base64
import json
import socket
from datetime import timedelta

import pytest
import urllib3.util.connection
from django.utils import timezone
from standardwebhooks import Webhook

from serving import matches, tasks
from serving.models import ApiKey, DeliveryAttempt, Grouping, WebhookDelivery, WebhookEndpoint, WebhookEvent
from serving.scoring import services as scoring
from serving.versions import services
from serving.webhooks import fanout, outbound, sending
from serving.webhooks import services as webhooks
from tests.receiver import Answer, receiving
from trackers.models import Role, Segment, WorkState

pytestmark = pytest.mark.django_db


class Clock:
    """The delivery machinery's clock, moved by hand."""

    def __init__(self):
        self.at = timezone.now()

    def __call__(self):
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(webhooks, "now", c)
    return c


@pytest.fixture
def private_ok(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True  # the receiver listens on loopback
    settings.WEBHOOK_JITTER = 0.0
    settings.WEBHOOK_TIMEOUT_SECONDS = 5


def endpoint_for(tracker, url, **kw):
    endpoint, secret = webhooks.create_endpoint(tracker=tracker, url=url, user=None, **kw)
    return endpoint, secret


def deliver(delivery) -> WebhookDelivery:
    tasks.deliver_webhook.apply(kwargs={"work_id": delivery.pk})
    delivery.refresh_from_db()
    return delivery


def one_alert(tracker, text="please cancel my plan", score=0.97):
    version = services.live_version(tracker)
    return fanout.alert(version, [matches.Hit(score=score, label="yes", text=text)], source="any")


# --- secrets and signatures ---------------------------------------------------------------------


def test_secrets_are_whsec_base64_of_random_bytes_and_malformed_ones_are_refused():
    secret = outbound.new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert outbound.new_secret() != secret
    assert outbound.check_secret(secret) == base64.b64decode(secret[6:])
    short = "whsec_" + base64.b64encode(b"x" * 8).decode()
    Webhook(short)  # the library takes it ...
    for bad, why in [
        (short, "holds 24 to 64 random bytes; this one holds 8"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "this one holds 65"),
        ("sk_" + secret[6:], "starts with 'whsec_'"),
        ("whsec_not*base64!", "'whsec_' and then base64"),
    ]:
        with pytest.raises(ValueError, match=why):  # ... the app does not
            outbound.check_secret(bad)


def test_signatures_verify_with_standardwebhooks_and_a_rotated_secret_signs_beside_the_new_one(
    two_live, settings, clock
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    endpoint, old = endpoint_for(two_live[0], "http://127.0.0.1:9/hook")
    body = b'{"type":"tracker.match"}'
    headers = outbound.signed_headers("msg_1", body, webhooks.signing_secrets(endpoint, clock()), clock())
    assert Webhook(old).verify(body, headers) == {"type": "tracker.match"}
    new = webhooks.rotate_secret(endpoint)
    assert new != old and endpoint.previous_secret == old
    during = outbound.signed_headers("msg_1", body, webhooks.signing_secrets(endpoint, clock()), clock())
    assert len(during["webhook-signature"].split(" ")) == 2
    assert all(s.startswith("v1,") for s in during["webhook-signature"].split(" "))
    Webhook(old).verify(body, during)  # receivers not yet on the new secret still verify
    Webhook(new).verify(body, during)
    clock.advance(settings.WEBHOOK_SECRET_GRACE_SECONDS + 1)
    after = outbound.signed_headers(
        "msg_1", body, webhooks.signing_secrets(endpoint, clock()), timezone.now()
    )
    Webhook(new).verify(body, after)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(old).verify(body, after)


# --- the outbox and a real receiver ---------------------------------------------------------------


def test_a_match_is_written_with_its_cause_and_delivered_signed_with_the_same_id_on_every_attempt(
    two_live, private_ok, clock, django_capture_on_commit_callbacks
):
    tracker = two_live[0]
    with receiving(Answer(503), Answer(200)) as r:
        endpoint, secret = endpoint_for(tracker, r.url, from_api=True)
        with django_capture_on_commit_callbacks() as queued:
            (delivery,) = one_alert(tracker)
        assert len(queued) == 1  # the task is sent once the transaction commits, not before
        event = delivery.event
        assert event.type == "tracker.match" and delivery.state == WorkState.QUEUED
        deliver(delivery)
        assert delivery.state == WorkState.QUEUED and delivery.tries == 1 and delivery.last_status == 503
        clock.advance(6)
        deliver(delivery)
        assert delivery.state == WorkState.SUCCEEDED and delivery.delivered_at is not None
    first, second = r.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event.webhook_id
    assert first.body == second.body == sending.body_of(event)
    assert int(second.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"])
    payload = Webhook(secret).verify(second.body, second.headers)
    data = payload["data"]
    version = services.live_version(tracker)
    assert (
        payload["type"] == "tracker.match" and payload["id"] == event.webhook_id and payload["version"] == 1
    )
    assert data["tracker"]["id"] == str(tracker.code) and data["model_version"] == version.number
    assert data["threshold"] == services.threshold_of(version)[0] and data["source"] == "any"
    assert data["matches"] == [
        {"score": 0.97, "label": "yes", "text": "please cancel my plan", "position": None, "speaker": ""}
    ]
    attempts = list(DeliveryAttempt.objects.filter(delivery=delivery))
    assert [(a.number, a.status_code, a.outcome) for a in attempts] == [
        (1, 503, "retry"),
        (2, 200, "succeeded"),
    ]
    assert all(a.duration_ms > 0 for a in attempts) and attempts[1].response_excerpt == "ok"


def test_the_retry_schedule_waits_as_set_honours_retry_after_and_gives_up_at_its_end(
    two_live, private_ok, settings, clock
):
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 5, 300, 1800, 7200]
    answers = [
        Answer(500),
        Answer(429, {"Retry-After": "120"}),
        Answer(503, {"Retry-After": "4000"}),
        Answer(502),
        Answer(500),
    ]
    with receiving(*answers) as r:
        endpoint_for(two_live[0], r.url)
        (delivery,) = one_alert(two_live[0])
        deliver(delivery)
        waits = []
        for _ in range(4):
            wait = (delivery.next_attempt_at - clock()).total_seconds()
            waits.append(wait)
            clock.advance(wait - 1)
            deliver(delivery)  # a second early: not due, not tried
            assert delivery.tries == len(waits)
            clock.advance(1)
            deliver(delivery)
        assert waits == [5, 300, 4000, 7200]  # 429's Retry-After 120 < 300; 503's 4000 > 1800
        assert len(r.received) == 5
    assert delivery.state == WorkState.FAILED and "gave up after 5 attempts" in delivery.error
    assert [a.outcome for a in delivery.attempt_rows.all()] == ["retry"] * 4 + ["failed"]
    with receiving(Answer(500)) as r:
        delivery.endpoint.url = r.url
        delivery.endpoint.save()
        sending.resend(delivery)  # a resend starts the schedule again
        deliver(delivery)
    assert delivery.state == WorkState.QUEUED and delivery.tries == 6
    assert (delivery.next_attempt_at - clock()).total_seconds() == 5


def test_jitter_adds_up_to_its_share_of_each_delay(settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 100, 1000]
    settings.WEBHOOK_JITTER = 0.1
    delays = [sending.delay_before(1, None) for _ in range(200)]
    assert all(100 <= d <= 110 for d in delays) and len(set(delays)) > 150
    assert sending.delay_before(3, None) is None


@pytest.mark.parametrize(
    ("status", "outcome", "tries_again"),
    [
        (400, "failed", False),
        (404, "failed", False),
        (422, "failed", False),
        (408, "retry", True),
        (409, "retry", True),
        (425, "retry", True),
        (429, "retry", True),
        (500, "retry", True),
        (502, "retry", True),
    ],
)
def test_4xx_is_permanent_but_408_409_425_429_and_5xx_are_tried_again(
    two_live, private_ok, clock, status, outcome, tries_again
):
    with receiving(Answer(status, body=b"nope")) as r:
        endpoint, _ = endpoint_for(two_live[0], r.url)
        (delivery,) = one_alert(two_live[0])
        deliver(delivery)
    (attempt,) = delivery.attempt_rows.all()
    assert attempt.outcome == outcome and attempt.status_code == status and attempt.response_excerpt == "nope"
    assert (delivery.state == WorkState.QUEUED) == tries_again
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.failing_since is not None


def test_redirects_are_not_followed(two_live, private_ok, clock):
    with receiving() as target, receiving(Answer(301, {"Location": "TARGET"})) as r:
        r.answers = [Answer(301, {"Location": target.url})]
        endpoint_for(two_live[0], r.url)
        (delivery,) = one_alert(two_live[0])
        deliver(delivery)
    assert delivery.state == WorkState.FAILED and "redirects are not followed" in delivery.error
    assert target.url in delivery.error and target.received == []


def test_410_disables_the_endpoint_and_its_owner_sees_why(two_live, private_ok, clock, owner_client):
    with receiving(Answer(410)) as r:
        endpoint, _ = endpoint_for(two_live[0], r.url)
        first, second = one_alert(two_live[0])[0], one_alert(two_live[0], text="cancel it all")[0]
        deliver(first)
        deliver(second)
    endpoint.refresh_from_db()
    assert not endpoint.enabled and "410 Gone" in endpoint.disabled_reason
    assert first.state == second.state == WorkState.FAILED
    assert "endpoint is disabled" in second.error and len(r.received) == 1
    assert one_alert(two_live[0]) == []  # a disabled endpoint gets no new events


def test_an_endpoint_failing_for_a_day_is_disabled_and_a_success_ends_a_streak(
    two_live, private_ok, settings, clock
):
    settings.WEBHOOK_RETRY_SCHEDULE = [0] + [3600] * 30
    settings.WEBHOOK_DISABLE_AFTER_SECONDS = 24 * 3600
    with receiving(Answer(500), Answer(200), Answer(500)) as r:
        endpoint, _ = endpoint_for(two_live[0], r.url)
        (delivery,) = one_alert(two_live[0])
        deliver(delivery)
        clock.advance(3600)
        deliver(delivery)  # 200: the streak ends
        endpoint.refresh_from_db()
        assert endpoint.failing_since is None and endpoint.enabled
        (failing,) = one_alert(two_live[0], text="end the contract")
        for _ in range(26):
            deliver(failing)
            clock.advance(3600)
            endpoint.refresh_from_db()
            if not endpoint.enabled:
                break
    assert not endpoint.enabled and "every delivery has failed since" in endpoint.disabled_reason
    assert 24 <= failing.tries <= 25


def test_a_network_error_is_tried_again_and_says_what_happened(two_live, private_ok, clock):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    endpoint_for(two_live[0], f"http://127.0.0.1:{port}/hook")
    (delivery,) = one_alert(two_live[0])
    deliver(delivery)
    (attempt,) = delivery.attempt_rows.all()
    assert attempt.outcome == "retry" and attempt.status_code is None and "could not connect" in attempt.error
    assert delivery.state == WorkState.QUEUED


def test_a_resend_delivers_the_same_event_again(two_live, private_ok, clock):
    with receiving(Answer(200)) as r:
        endpoint_for(two_live[0], r.url)
        (delivery,) = one_alert(two_live[0])
        deliver(delivery)
        sending.resend(delivery)
        assert delivery.state == WorkState.QUEUED
        deliver(delivery)
    assert delivery.state == WorkState.SUCCEEDED and delivery.tries == 2
    assert r.ids() == [delivery.event.webhook_id] * 2


# --- conditions, grouping, sources, once per version ---------------------------------------------


def test_bulk_scoring_alerts_each_match_once_per_version_however_often_it_is_scored(
    two_live, embedded, owner, private_ok, django_capture_on_commit_callbacks
):
    wants = two_live[0]
    per_text, _ = endpoint_for(wants, "http://127.0.0.1:9/a")
    per_doc, _ = endpoint_for(wants, "http://127.0.0.1:9/b", grouping=Grouping.DOCUMENT, min_score=0.9)
    not_bulk, _ = endpoint_for(wants, "http://127.0.0.1:9/c", from_bulk=False)
    with django_capture_on_commit_callbacks(execute=True):
        job = scoring.start_scoring(dataset=embedded, user=owner, trackers=[wants])
    job.refresh_from_db()
    assert job.state == WorkState.SUCCEEDED, job.error
    matched = job.results.filter(match=True)
    assert matched.count() == job.result["trackers"][str(services.live_version(wants).pk)]["matches"] > 0
    texts = WebhookDelivery.objects.filter(endpoint=per_text)
    assert texts.count() == matched.count()
    events = [d.event.payload["data"] for d in texts]
    assert all(e["source"] == "bulk" and len(e["matches"]) == 1 for e in events)
    assert {e["matches"][0]["text"] for e in events} == set(
        Segment.objects.filter(pk__in=matched.values("segment")).values_list("text", flat=True)
    )
    assert all(e["document"]["dataset"] == str(embedded.code) for e in events)
    strong = matched.filter(score__gte=0.9)
    docs = WebhookDelivery.objects.filter(endpoint=per_doc)
    assert docs.count() == strong.values("segment__document").distinct().count()
    assert sum(len(d.event.payload["data"]["matches"]) for d in docs) == strong.count()
    assert not WebhookDelivery.objects.filter(endpoint=not_bulk).exists()
    before = WebhookDelivery.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        again = scoring.start_scoring(dataset=embedded, user=owner, trackers=[wants])
    again.refresh_from_db()
    assert again.state == WorkState.SUCCEEDED and again.results.filter(match=True).count() == matched.count()
    assert WebhookDelivery.objects.count() == before  # already alerted for this version


def test_speaker_and_metadata_filters_choose_what_an_endpoint_hears(two_live, private_ok):
    version = services.live_version(two_live[0])
    seg = Segment.objects.filter(dataset__trackers=two_live[0]).first()
    seg.speaker = "Customer"
    seg.save()
    seg.document.metadata = {"region": "EU"}
    seg.document.save()
    hit = matches.Hit(
        score=0.99,
        label="yes",
        text=seg.text,
        segment_id=seg.pk,
        position=seg.position,
        speaker="Customer",
        document_id=seg.document_id,
    )
    customer, _ = endpoint_for(two_live[0], "http://127.0.0.1:9/a", speaker_filter="customer")
    agent, _ = endpoint_for(two_live[0], "http://127.0.0.1:9/b", speaker_filter="agent")
    eu, _ = endpoint_for(two_live[0], "http://127.0.0.1:9/c", metadata_filter={"region": "EU"})
    us, _ = endpoint_for(two_live[0], "http://127.0.0.1:9/d", metadata_filter={"region": "US"})
    strict, _ = endpoint_for(two_live[0], "http://127.0.0.1:9/e", min_score=0.995)
    made = fanout.alert(version, [hit], source="bulk")
    assert {d.endpoint_id for d in made} == {customer.pk, eu.pk}
    assert len({d.event_id for d in made}) == 1  # the same body for both: one event
    assert fanout.alert(version, [hit], source="bulk") == []  # alerted once for this version


def test_prediction_api_matches_alert_only_the_endpoints_that_opted_in_and_only_owners_and_admins_ask(
    two_live, private_ok, client, key, workspace, owner, django_capture_on_commit_callbacks
):
    wants = two_live[0]
    opted, _ = endpoint_for(wants, "http://127.0.0.1:9/a", from_api=True)
    quiet, _ = endpoint_for(wants, "http://127.0.0.1:9/b")
    url = f"/api/v1/trackers/{wants.code}/predict"
    texts = ["I want to cancel my subscription", "the weather is nice today", "our team loves the dashboard"]

    def predict(status=200, headers=key, **extra):
        with django_capture_on_commit_callbacks() as queued:
            r = client.post(url, {"texts": texts, **extra}, content_type="application/json", headers=headers)
        assert r.status_code == status, r.content
        return r.json(), len(queued)

    body, queued = predict()
    matched = [t for t, a in zip(texts, body["results"], strict=True) if a["match"]]
    assert "I want to cancel my subscription" in matched  # one event per matching text, none for the rest
    assert queued == 1  # the request's deliveries are sent once it commits
    assert {d.endpoint_id for d in WebhookDelivery.objects.all()} == {opted.pk}
    events = list(WebhookEvent.objects.all())
    assert len(events) == WebhookDelivery.objects.count() == len(matched)
    assert sorted(e.payload["data"]["matches"][0]["text"] for e in events) == sorted(matched)
    assert all(e.payload["data"]["source"] == "api" for e in events)
    predict(alert=True)  # an owner's key asks: the opted-in endpoint again, never the one that opted out
    assert WebhookDelivery.objects.filter(endpoint=quiet).count() == 0
    assert WebhookDelivery.objects.filter(endpoint=opted).count() == 2 * len(matched)
    predict(alert=False)
    assert WebhookDelivery.objects.count() == 2 * len(matched)
    for role, predict_only in ((Role.VIEWER, False), (Role.LABELER, False), (Role.ADMIN, True)):
        _, raw = ApiKey.issue(
            workspace=workspace, name=role, created_by=owner, role=role, predict_only=predict_only
        )
        refused, _ = predict(403, {"Authorization": f"Bearer {raw}"}, alert=True)
        assert refused["detail"].startswith("alert: only owners and admins (not prediction-only keys)")
        predict(200, {"Authorization": f"Bearer {raw}"})  # without asking, the opted-in endpoint hears it
    assert WebhookDelivery.objects.filter(endpoint=quiet).count() == 0
    assert WebhookDelivery.objects.count() == 5 * len(matched)
    many = client.post(
        f"/api/v1/workspaces/{wants.workspace.code}/predict",
        {
            "transcript": {
                "title": "Call 7",
                "turns": [{"speaker": "Customer", "text": "I want to cancel my plan"}],
            },
            "trackers": [str(wants.code)],
        },
        content_type="application/json",
        headers=key,
    )
    assert many.status_code == 200 and many.json()["segments"][0]["matches"]
    latest = WebhookDelivery.objects.filter(endpoint=opted).latest("id").event.payload["data"]
    assert latest["document"] == {"title": "Call 7"} and latest["matches"][0]["speaker"] == "Customer"
    assert latest["matches"][0]["position"] == 0


def test_secrets_never_appear_in_the_admin_or_logs(two_live, private_ok, admin_client, caplog, clock):
    endpoint, secret = endpoint_for(two_live[0], "http://127.0.0.1:9/a")
    change = admin_client.get(f"/admin/serving/webhookendpoint/{endpoint.pk}/change/")
    listing = admin_client.get("/admin/serving/webhookendpoint/")
    assert change.status_code == listing.status_code == 200
    assert secret not in change.content.decode() and secret[6:20] not in listing.content.decode()
    (delivery,) = one_alert(two_live[0])
    deliver(delivery)
    assert secret not in caplog.text and secret[6:] not in caplog.text


# --- SSRF -----------------------------------------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:{port}/",
    "http://127.1:{port}/",
    "http://0x7f.1:{port}/",
    "http://0x7f000001:{port}/",
    "http://2130706433:{port}/",
    "http://017700000001:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://127.000.000.001:{port}/",
    "http://localhost:{port}/",
    "http://LOCALHOST:{port}/",
    "http://localhost.:{port}/",
    "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:{port}/",
    "http://127。0。0。1:{port}/",
    "http://[::1]:{port}/",
    "http://[0:0:0:0:0:0:0:1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/",
    "http://[::127.0.0.1]:{port}/",
    "http://[2002:7f00:1::]:{port}/",
    "http://0:{port}/",
    "http://0.0.0.0:{port}/",
    "http://[::]:{port}/",
    "https://127.0.0.1:{port}/",
    "http://127.0.0.1.:{port}/",
    "http://127.255.255.254:{port}/",
]
OTHER_FORBIDDEN = [
    "http://10.0.0.1/",
    "http://10.255.255.255/",
    "http://172.16.0.1/",
    "http://172.31.255.1/",
    "http://192.168.1.1/",
    "http://0300.0250.0.1/",
    "http://3232235777/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[fe80::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",
    "http://100.64.0.1/",
    "http://100.127.255.254/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://198.18.0.1/",
    "http://192.0.0.8/",
    "http://[64:ff9b::10.0.0.1]/",
    "http://[2001:db8::1]/",
    "http://192.0.2.1/",
]
NOT_A_TARGET = [
    "ftp://8.8.8.8/",
    "file:///etc/passwd",
    "http://user:pw@8.8.8.8/",
    "gopher://8.8.8.8/",
    "http:///nohost",
]


def test_forty_and_more_spellings_of_non_public_targets_are_refused_when_saved(two_live, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    urls = [u.format(port=8080) for u in LOOPBACK_SPELLINGS] + OTHER_FORBIDDEN
    assert len(urls) >= 40
    for url in urls + NOT_A_TARGET:
        with pytest.raises(webhooks.EndpointInvalid, match="url: ") as refused:
            webhooks.create_endpoint(tracker=two_live[0], url=url, user=None)
        assert "non-public" in str(refused.value) or url in NOT_A_TARGET, url
    assert not WebhookEndpoint.objects.exists()
    ok, _ = webhooks.create_endpoint(tracker=two_live[0], url="https://8.8.8.8/hooks", user=None)
    assert ok.url == "https://8.8.8.8/hooks"


def test_non_public_targets_are_refused_again_at_send_time_and_nothing_is_sent(two_live, settings, clock):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    with receiving() as r:
        for spelling in LOOPBACK_SPELLINGS:
            sent = outbound.post(spelling.format(port=r.port), b"{}", {}, allow_private=False, timeout=2)
            assert sent.refused and sent.status is None and "non-public" in sent.error, spelling
        # An endpoint saved while private targets were allowed (or whose name moved since) is refused too.
        endpoint = WebhookEndpoint.objects.create(
            tracker=two_live[0], url=r.url, secret=outbound.new_secret()
        )
        (delivery,) = fanout.alert(
            services.live_version(two_live[0]), [matches.Hit(0.99, "yes", "cancel")], source="bulk"
        )
        deliver(delivery)
    assert r.received == []
    assert delivery.state == WorkState.FAILED and "127.0.0.1 is a loopback address" in delivery.error
    assert endpoint.deliveries.get().attempt_rows.get().outcome == "failed"


def test_a_dns_answer_that_changes_between_check_and_connect_cannot_switch_the_address(
    two_live, settings, monkeypatch
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    real = socket.getaddrinfo
    answers = []

    def rebinding(host, port, *args, **kwargs):
        if host == "hooks.rebind.test":  # public at first, loopback from then on
            ip = "93.184.216.34" if not answers else "127.0.0.1"
            answers.append(ip)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *args, **kwargs)

    connected = []

    def connect(address, *args, **kwargs):
        connected.append(address)
        raise ConnectionRefusedError("recorded, not connected")

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", connect)
    monkeypatch.setattr("urllib3.connection.connection.create_connection", connect)
    with receiving() as r:
        endpoint, _ = webhooks.create_endpoint(
            tracker=two_live[0], url=f"http://hooks.rebind.test:{r.port}/h", user=None
        )
        assert answers == ["93.184.216.34"]  # checked when saved
        answers.clear()
        sent = outbound.post(endpoint.url, b"{}", {}, allow_private=False, timeout=2)
        assert answers == ["93.184.216.34"]  # resolved once at send time ...
        assert connected == [("93.184.216.34", r.port)]  # ... and connected to that very address
        assert sent.status is None and "could not connect" in sent.error
        assert not sent.refused
        sent = outbound.post(endpoint.url, b"{}", {}, allow_private=False, timeout=2)  # now it says loopback
        assert sent.refused and "127.0.0.1 is a loopback address" in sent.error
        assert connected == [("93.184.216.34", r.port)] and r.received == []


def test_endpoints_are_checked_when_changed_too(two_live, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    endpoint, _ = webhooks.create_endpoint(tracker=two_live[0], url="https://8.8.8.8/h", user=None)
    with pytest.raises(webhooks.EndpointInvalid, match="non-public"):
        webhooks.update_endpoint(endpoint, url="http://0x7f.1/")
    with pytest.raises(webhooks.EndpointInvalid, match="min_score"):
        webhooks.update_endpoint(endpoint, min_score=1.5)
    with pytest.raises(webhooks.EndpointInvalid, match="metadata_filter"):
        webhooks.update_endpoint(endpoint, metadata_filter=["region"])
    endpoint.refresh_from_db()
    assert endpoint.url == "https://8.8.8.8/h" and endpoint.min_score is None


def test_event_bodies_are_json_with_stable_bytes(two_live, private_ok):
    endpoint_for(two_live[0], "http://127.0.0.1:9/a")
    (delivery,) = one_alert(two_live[0])
    event = WebhookEvent.objects.get(pk=delivery.event_id)
    assert sending.body_of(event) == sending.body_of(delivery.event)
    assert json.loads(sending.body_of(event))["id"] == event.webhook_id


# --- pages ----------------------------------------------------------------------------------------


def test_the_alerts_page_adds_an_endpoint_shows_its_secret_once_its_health_and_its_delivery_log(
    two_live, private_ok, settings, owner_client, clock, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    tracker = two_live[0]
    page = reverse("tracker-alerts", args=[tracker.code])
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    refused = owner_client.post(page, {"url": "http://0x7f.1/x", "grouping": "text"})
    assert refused.status_code == 400 and "127.0.0.1 is a loopback address" in refused.content.decode()
    assert not WebhookEndpoint.objects.exists()
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    with receiving(Answer(200), Answer(500, body=b"boom")) as r:
        made = owner_client.post(
            page, {"url": r.url, "description": "CRM", "grouping": "document", "from_bulk": "on"}
        )
        assert made.status_code == 200
        endpoint = WebhookEndpoint.objects.get(tracker=tracker)
        html = made.content.decode()
        assert endpoint.secret in html and 'id="new-secret"' in html
        again = owner_client.get(page).content.decode()
        assert endpoint.secret not in again and "CRM" in again and "no attempts yet" in again
        assert endpoint.grouping == "document" and endpoint.from_bulk and not endpoint.from_import
        with django_capture_on_commit_callbacks(execute=True):
            owner_client.post(reverse("alert-action", args=[endpoint.code, "test"]))
        with django_capture_on_commit_callbacks(execute=True):
            (delivery,) = one_alert(tracker)
        assert [json.loads(x.body)["type"] for x in r.received] == ["webhook.test", "tracker.match"]
        listing = owner_client.get(page).content.decode()
        assert "50%" in listing and "of 2 attempts succeeded" in listing and "boom" in listing
        log = owner_client.get(reverse("alert-endpoint", args=[endpoint.code])).content.decode()
        assert "webhook.test" in log and delivery.event.webhook_id in log and "HTTP 500" in log
        with django_capture_on_commit_callbacks(execute=True):
            assert owner_client.post(reverse("delivery-resend", args=[delivery.pk])).status_code == 302
        assert len(r.received) == 3
    rotated = owner_client.post(reverse("alert-action", args=[endpoint.code, "rotate"])).content.decode()
    endpoint.refresh_from_db()
    assert endpoint.secret in rotated and endpoint.previous_secret not in rotated
    owner_client.post(reverse("alert-action", args=[endpoint.code, "enable"]), {"on": "0"})
    endpoint.refresh_from_db()
    assert not endpoint.enabled
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False  # its loopback target may no longer be enabled
    again = owner_client.post(reverse("alert-action", args=[endpoint.code, "enable"]), {"on": "1"})
    assert again.status_code == 422 and "loopback" in again.content.decode()
    endpoint.refresh_from_db()
    assert not endpoint.enabled


def test_alerts_pages_are_for_the_workspaces_managers_only(two_live, private_ok, client, viewer, stranger):
    from django.urls import reverse

    endpoint, _ = endpoint_for(two_live[0], "http://127.0.0.1:9/a")
    for user, status in ((viewer, 403), (stranger, 404)):
        client.force_login(user)
        assert client.get(reverse("tracker-alerts", args=[two_live[0].code])).status_code == status
        assert client.get(reverse("alert-endpoint", args=[endpoint.code])).status_code in (403, 404)
        assert client.post(reverse("alert-action", args=[endpoint.code, "delete"])).status_code in (403, 404)
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()


def test_the_events_api_makes_endpoints_shows_their_log_and_resends(
    two_live,
    private_ok,
    settings,
    client,
    key,
    workspace,
    owner,
    stranger,
    clock,
    django_capture_on_commit_callbacks,
):
    from serving.models import ApiKey

    tracker = two_live[0]
    base = f"/api/v1/trackers/{tracker.code}"

    def call(method, url, body=None, headers=key):
        kwargs = {"content_type": "application/json", "data": body} if body is not None else {}
        return getattr(client, method)(url, headers=headers, **kwargs)

    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    refused = call("post", f"{base}/webhooks", {"url": "http://[::ffff:127.0.0.1]/h"})
    assert refused.status_code == 422 and "127.0.0.1 is a loopback address" in refused.json()["detail"]
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    with receiving(Answer(500), Answer(200)) as r:
        made = call("post", f"{base}/webhooks", {"url": r.url, "description": "CRM", "from_api": True})
        assert made.status_code == 201, made.content
        secret, code = made.json()["secret"], made.json()["code"]
        assert secret.startswith("whsec_")
        listed = call("get", f"{base}/webhooks")
        assert listed.status_code == 200 and secret not in listed.content.decode()
        assert listed.json()[0]["health"]["attempts"] == 0
        with django_capture_on_commit_callbacks(execute=True):
            test = call("post", f"/api/v1/webhooks/{code}/test")
        assert test.status_code == 202 and test.json()["type"] == "webhook.test"
        assert test.json()["state"] == "queued"  # 500 first: tried again later
        with django_capture_on_commit_callbacks(execute=True):
            again = call("post", f"/api/v1/deliveries/{test.json()['id']}/resend")
        assert again.status_code == 202
        log = call("get", f"/api/v1/webhooks/{code}/deliveries").json()
        (row,) = log["items"]
        assert row["state"] == "succeeded" and [a["status_code"] for a in row["attempts"]] == [500, 200]
        Webhook(secret).verify(r.received[-1].body, r.received[-1].headers)
    events = call("get", f"{base}/events?type=webhook.test").json()
    assert events["count"] == 1 and events["items"][0]["deliveries"][0]["state"] == "succeeded"
    assert call("get", f"{base}/events?source=bulk").json()["count"] == 0
    assert call("get", f"{base}/events?source=%00").status_code == 422  # one of the sources, or 422
    for url in (f"{base}/events", f"/api/v1/webhooks/{code}/deliveries"):  # past bigint: 422, not 500
        too_far = call("get", f"{url}?offset=18446744073709551616")
        assert too_far.status_code == 422 and too_far.json()["detail"][0]["loc"][-1] == "offset"
    patched = call("patch", f"/api/v1/webhooks/{code}", {"min_score": 0.9, "enabled": False})
    assert patched.status_code == 200 and patched.json()["min_score"] == 0.9 and not patched.json()["enabled"]
    rotated = call("post", f"/api/v1/webhooks/{code}/rotate").json()
    assert rotated["secret"] != secret and rotated["previous_valid_until"]
    _, predict_only = ApiKey.issue(workspace=workspace, name="p", created_by=owner, predict_only=True)
    assert (
        call("get", f"{base}/webhooks", headers={"Authorization": f"Bearer {predict_only}"}).status_code
        == 403
    )
    _, theirs = ApiKey.issue(workspace=stranger.workspaces.get(), name="s", created_by=stranger)
    for method, url in [
        ("get", f"{base}/webhooks"),
        ("get", f"/api/v1/webhooks/{code}"),
        ("delete", f"/api/v1/webhooks/{code}"),
    ]:
        assert call(method, url, headers={"Authorization": f"Bearer {theirs}"}).status_code == 404
    assert call("delete", f"/api/v1/webhooks/{code}").status_code == 204
    assert not WebhookEndpoint.objects.exists()
