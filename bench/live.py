"""From production back to the game, measured: a tracker trained on one population is served
traffic from a shifted one; the drift warning is read; one review round of live traffic is played;
F1 on held-out shifted traffic is compared before and after that round.

Two cases, each over ``--repeats`` repeats (10 by default):

- ``sms_spam→spamassassin``: a spam tracker learns from SMS messages, then is served emails (the
  first 400 characters: subject and opening, as a mail filter's preview would send);
- ``banking77 card_arrival, tracking phrasing held out``: "card arrival" learns from Banking77
  without the questions that ask about tracking or delivery (track, deliver, mail, courier, sent…),
  then is served traffic in which those questions make up a third.

Per repeat, through the app's own requests (the Django test client calls the WSGI handler, as a
browser or an integration would): a tracker with five example sentences; three rounds of the game
answered from the data's labels (``/api/trackers/…/cards`` and ``/labels``), training and publishing
in-process exactly as a worker would (``CELERY_TASK_ALWAYS_EAGER``); keeping every live text on;
``drift_false_alarm``: 150 texts from the training population's held-out part are served and the
drift warning read; ``drift_detected``: 200 texts of shifted traffic are served and the warning
read; the review round is started from the tracker page's button (``/t/…/live/review/``) and its
25 cards answered; F1 before and after: the version live before the round and the version trained
by it score 250 held-out shifted texts through ``/api/v1/trackers/…/predict``.

Writes bench/results/live.json and prints a table.

    python bench/live.py [--repeats 10] [--database postgres://…]

Without ``--database`` a scratch SQLite file is used; with it, that (empty, scratch) PostgreSQL
database.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "bench" / "results" / "live.json"
POOL_SIZE = 1500  # training pool texts per case
ROUNDS = 3
ROUND_SIZE = 25
IN_DISTRIBUTION = 150
TRAFFIC = 200
HELD_OUT = 250
PHRASING = re.compile(r"track|deliver|mail|courier|ship|post|sent|send|route|transit", re.I)


def _rows(name: str) -> list[dict[str, str]]:
    path = DATA / name / "dev.csv"
    if not path.exists():
        sys.exit(f"{path} is absent: the shared data folder is needed for this benchmark")
    csv.field_size_limit(10**7)
    return list(csv.DictReader(open(path, newline="", encoding="utf-8")))


def cases(rng: np.random.Generator) -> list[dict]:
    """Each case's training pool, in-distribution traffic, shifted traffic and shifted held-out set,
    as (text, is positive) lists."""
    sms = [(r["text"], r["label"] == "spam") for r in _rows("sms_spam")]
    mails = [(r["text"][:400], r["label"] == "spam") for r in _rows("spamassassin")]
    order = rng.permutation(len(sms))
    pool = [sms[i] for i in order[:POOL_SIZE]]
    same = [sms[i] for i in order[POOL_SIZE : POOL_SIZE + 2000]]
    shifted = [mails[i] for i in rng.permutation(len(mails))[:2000]]
    bank = _rows("banking77")
    card = [(r["text"], True) for r in bank if r["label"] == "card_arrival"]
    phrasing = [c for c in card if PHRASING.search(c[0])]
    usual = [c for c in card if not PHRASING.search(c[0])]
    other = [(r["text"], False) for r in bank if r["label"] != "card_arrival"]
    other = [other[i] for i in rng.permutation(len(other))]
    bank_pool = usual + other[: POOL_SIZE - len(usual)]
    rest = other[POOL_SIZE - len(usual) :]
    return [
        {"name": "sms_spam→spamassassin", "pool": pool, "same": same, "shifted": shifted, "share": None},
        {
            "name": "banking77 card_arrival, tracking phrasing held out",
            "pool": bank_pool,
            "same": rest[:1500],
            "shifted": {"phrasing": phrasing, "other": rest[1500:]},
            "share": 1 / 3,
        },
    ]


def _draw(case: dict, rng: np.random.Generator, n: int, *, phrasing: list, other: list) -> list:
    k = round(n * case["share"])
    return [phrasing[i] for i in rng.choice(len(phrasing), k)] + [
        other[i] for i in rng.choice(len(other), n - k, replace=False)
    ]


def split_shifted(case: dict, rng: np.random.Generator) -> tuple[list, list]:
    """Traffic to serve and held-out texts to score, from the shifted population (disjoint)."""
    shifted = case["shifted"]
    if isinstance(shifted, list):
        order = rng.permutation(len(shifted))
        return [shifted[i] for i in order[:TRAFFIC]], [
            shifted[i] for i in order[TRAFFIC : TRAFFIC + HELD_OUT]
        ]
    phrasing = [shifted["phrasing"][i] for i in rng.permutation(len(shifted["phrasing"]))]
    half = len(phrasing) // 2
    other = [shifted["other"][i] for i in rng.permutation(len(shifted["other"]))]
    traffic = _draw(case, rng, TRAFFIC, phrasing=phrasing[:half], other=other[: len(other) // 2])
    held = _draw(case, rng, HELD_OUT, phrasing=phrasing[half:], other=other[len(other) // 2 :])
    return traffic, held


def plain(text: str) -> str:
    return " ".join(text.split())


def f1(truth: list[bool], said: list[bool]) -> float:
    tp = sum(t and s for t, s in zip(truth, said, strict=True))
    fp = sum(s and not t for t, s in zip(truth, said, strict=True))
    fn = sum(t and not s for t, s in zip(truth, said, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


class App:
    """The app, driven through its WSGI handler as a signed-in owner and with the owner's API key."""

    def __init__(self) -> None:
        from django.contrib.auth import get_user_model
        from django.test import Client

        from serving.models import ApiKey
        from trackers import services

        self.user = get_user_model().objects.create_user("bench-owner", password="x")
        self.workspace = services.create_workspace(name="live bench", owner=self.user)
        _, raw = ApiKey.issue(workspace=self.workspace, name="bench", created_by=self.user)
        self.key = {"Authorization": f"Bearer {raw}"}
        self.client = Client()
        self.client.force_login(self.user)

    def dataset(self, name: str, rows: list[tuple[str, bool]]):
        from trackers import imports, services
        from trackers.models import Dataset

        dataset = services.create_dataset(workspace=self.workspace, name=name)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["text"])
        writer.writerows([t] for t, _ in rows)
        imports.start_import(
            dataset=dataset, user=self.user, filename="pool.csv", data=out.getvalue().encode()
        )
        return Dataset.objects.get(pk=dataset.pk)

    def tracker(self, dataset, name: str, seeds: list[str]):
        from labeling import services as learning

        return learning.create_tracker(
            workspace=self.workspace,
            user=self.user,
            name=name,
            datasets=[dataset],
            seeds=seeds,
            round_size=ROUND_SIZE,
        )

    def play_round(self, tracker, truth: dict[str, bool]) -> int:
        """Answer every card of the open round through the labeling API, from the data's labels."""
        from labeling import game

        round_no = game.current_round(tracker)
        answered = 0
        while True:
            got = self.client.post(f"/api/trackers/{tracker.code}/cards?n=5")
            assert got.status_code == 200, (got.status_code, got.content[:300])
            cards = got.json()
            cards = [c for c in cards if c["round"] == round_no]
            if not cards:
                return answered
            for card in cards:
                answer = "yes" if truth.get(plain(card["text"]), False) else "no"
                r = self.client.post(
                    f"/api/trackers/{tracker.code}/labels",
                    {"card": card["id"], "answer": answer},
                    content_type="application/json",
                )
                assert r.status_code in (200, 201), r.content
                answered += 1

    def predict(self, tracker, texts: list[str], version: int | None = None) -> list[bool]:
        said: list[bool] = []
        for i in range(0, len(texts), 50):
            body: dict = {"texts": texts[i : i + 50]}
            if version is not None:
                body["version"] = version
            r = self.client.post(
                f"/api/v1/trackers/{tracker.code}/predict",
                body,
                content_type="application/json",
                headers=self.key,
            )
            assert r.status_code == 200, r.content
            said += [bool(x["match"]) for x in r.json()["results"]]
        return said


def one_repeat(
    app: App, case: dict, dataset, truth: dict[str, bool], rng: np.random.Generator, rep: int
) -> dict:
    from django.urls import reverse

    from serving.live import production
    from serving.live import services as live
    from serving.models import KeepMode, LiveText
    from serving.versions import services as versions

    positives = [t for t, y in case["pool"] if y]
    seeds = [positives[i] for i in rng.choice(len(positives), 5, replace=False)]
    tracker = app.tracker(dataset, f"{case['name'][:60]} {rep}", seeds)
    for _ in range(ROUNDS):
        app.play_round(tracker, truth)
    before = versions.live_version(tracker)
    if before is None:
        return {"skipped": "no version went live after the rounds"}
    live.set_keeping(tracker, mode=KeepMode.ALL, per_day=1000, by=app.user)
    same = [case["same"][i] for i in rng.choice(len(case["same"]), IN_DISTRIBUTION, replace=False)]
    app.predict(tracker, [t for t, _ in same])
    control = production.drift_of(before)
    LiveText.objects.filter(tracker=tracker).delete()  # the control's texts leave before the shift
    traffic, held = split_shifted(case, rng)
    for t, y in traffic:
        truth[plain(t)] = y
    app.predict(tracker, [t for t, _ in traffic])
    shifted = production.drift_of(before)
    held_truth = [y for _, y in held]
    f1_before = f1(held_truth, app.predict(tracker, [t for t, _ in held], version=before.number))
    response = app.client.post(reverse("tracker-live-review", args=[tracker.code]))
    assert response.status_code == 302 and response["Location"].endswith("/play/"), "the review did not start"
    reviewed = app.play_round(tracker, truth)
    newest = tracker.versions.order_by("-number").first()
    f1_after = f1(held_truth, app.predict(tracker, [t for t, _ in held], version=newest.number))
    return {
        "f1_before": round(f1_before, 4),
        "f1_after": round(f1_after, 4),
        "reviewed": reviewed,
        "version_before": before.number,
        "version_after": newest.number,
        "psi_shifted": round(shifted.psi, 4) if shifted and shifted.psi is not None else None,
        "psi_in_distribution": round(control.psi, 4) if control and control.psi is not None else None,
        "drift_detected": bool(shifted and shifted.drifted),
        "drift_false_alarm": bool(control and control.drifted),
        "what_changed": shifted.message if shifted else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--database", help="an empty scratch database URL (default: a scratch SQLite file)")
    parser.add_argument("--only", help="run only the cases whose name contains this (results not written)")
    opts = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="trackers-live-bench-")
    os.environ["TRACKERS_ENCODER_DIR"] = os.environ.get(
        "TRACKERS_ENCODER_DIR", str(REPO / "var" / "artifacts" / "encoders" / "all-MiniLM-L6-v2")
    )
    for var in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        os.environ.pop(var, None)
    if opts.database:
        os.environ["DATABASE_URL"] = opts.database
    os.environ["TRACKERS_DATA_DIR"] = scratch
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    settings.ALLOWED_HOSTS = ["*"]
    settings.SECURE_SSL_REDIRECT = False  # the test client speaks plain HTTP to the WSGI handler
    call_command("migrate", verbosity=0)
    rng = np.random.default_rng(22)
    app = App()
    results = []
    started = time.perf_counter()
    for case in cases(rng):
        if opts.only and opts.only not in case["name"]:
            continue
        dataset = app.dataset(case["name"][:40], case["pool"])
        truth = {plain(t): y for t, y in case["pool"]}
        runs = [
            one_repeat(app, case, dataset, truth, np.random.default_rng([22, rep]), rep)
            for rep in range(opts.repeats)
        ]
        done = [r for r in runs if "skipped" not in r]
        results.append(
            {
                "name": case["name"],
                "repeats": len(done),
                "skipped": len(runs) - len(done),
                "f1_before": round(statistics.mean(r["f1_before"] for r in done), 4),
                "f1_after": round(statistics.mean(r["f1_after"] for r in done), 4),
                "f1_gain_min": round(min(r["f1_after"] - r["f1_before"] for r in done), 4),
                "drift_detected_share": round(sum(r["drift_detected"] for r in done) / len(done), 3),
                "drift_false_alarm_share": round(sum(r["drift_false_alarm"] for r in done) / len(done), 3),
                "psi_shifted_median": statistics.median(
                    r["psi_shifted"] for r in done if r["psi_shifted"] is not None
                ),
                "psi_in_distribution_median": statistics.median(
                    r["psi_in_distribution"] for r in done if r["psi_in_distribution"] is not None
                ),
                "runs": runs,
            }
        )
    report = {
        "database": connection.vendor,
        "repeats": opts.repeats,
        "pool_size": POOL_SIZE,
        "rounds_before_review": ROUNDS,
        "round_size": ROUND_SIZE,
        "served": {"in_distribution": IN_DISTRIBUTION, "shifted": TRAFFIC, "held_out": HELD_OUT},
        "seconds": round(time.perf_counter() - started, 1),
        "cases": results,
    }
    if not opts.only:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(
        f"| case | F1 before | F1 after | drift detected | false alarms | PSI shifted / same |  ({connection.vendor}, {opts.repeats} repeats)"
    )
    print("|---|---|---|---|---|---|")
    for c in results:
        print(
            f"| {c['name']} | {c['f1_before']:.3f} | {c['f1_after']:.3f} | {c['drift_detected_share']:.0%} | "
            f"{c['drift_false_alarm_share']:.0%} | {c['psi_shifted_median']:.2f} / {c['psi_in_distribution_median']:.2f} |"
        )
    print(f"written to {RESULTS.relative_to(REPO)}" if not opts.only else "(one case: not written)")


if __name__ == "__main__":
    main()
