"""Several labelers answering at once on the embedded default (SQLite): run in a process of its own.

``python -m tests.sqlite_labelers DATA_DIR LABELERS`` migrates a fresh SQLite database under
DATA_DIR, imports a small corpus with the fake encoder, creates a tracker, and has LABELERS threads
claim cards at once, then answer them at once (each answer posted twice, as a double press, and every fourth one
undone and answered again), each through its own connection, as the web server's threads would.
It prints one JSON line: the errors raised and what the database holds afterwards.
"""

from __future__ import annotations

import json
import os
import sys
import threading


def main(data_dir: str, labelers: int) -> dict:
    os.environ.pop("DATABASE_URL", None)
    os.environ["TRACKERS_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    from config.celery import app
    from tests.factories import DatasetFactory, MembershipFactory, UserFactory, WorkspaceFactory
    from tests.fakes import FakeEncoder
    from trackers import encoders, imports

    assert connection.vendor == "sqlite", connection.vendor
    call_command("migrate", verbosity=0)
    app.conf.task_always_eager = True
    fake = FakeEncoder()
    encoders.get_encoder = lambda encoder_id=None: fake  # type: ignore[assignment]

    from labeling import game
    from labeling import services as labeling_services
    from labeling.models import Annotation, Card
    from trackers.models import Role

    workspace = WorkspaceFactory(name="Load")
    users = [
        MembershipFactory(workspace=workspace, user=UserFactory(username=f"l{i}"), role=Role.LABELER).user
        for i in range(labelers)
    ]
    dataset = DatasetFactory(workspace=workspace, name="Calls")
    rows = [f"please cancel my plan number {i}" for i in range(60)] + [
        f"the weather {i} is fine" for i in range(140)
    ]
    imports.start_import(
        dataset=dataset, user=users[0], filename="c.csv", data=("text\n" + "\n".join(rows) + "\n").encode()
    )
    dataset.refresh_from_db()
    tracker = labeling_services.create_tracker(
        workspace=workspace,
        user=users[0],
        name="Wants to cancel",
        datasets=[dataset],
        seeds=["cancel my plan", "I want to cancel", "close my account"],
        round_size=25,
    )
    errors: list[str] = []
    start = threading.Barrier(labelers)
    holding = threading.Barrier(labelers)

    def play(user) -> None:
        try:
            start.wait(60)
            for turn in range(12):
                cards = [c for c in game.claim_cards(tracker, user, n=2) if c.round == 1]
                if turn == 0:
                    holding.wait(60)  # everyone holds cards before anyone answers, so all four answer at once
                if not cards:
                    break
                for k, card in enumerate(cards):
                    answer = "yes" if "cancel" in card.segment.text else "no"
                    labeling_services.answer_card(tracker, user, card, answer)
                    labeling_services.answer_card(tracker, user, card, answer)  # a double press
                    if k == 0 and card.pk % 4 == 0:
                        again = game.undo_last(tracker, user)
                        if again is not None:
                            labeling_services.answer_card(tracker, user, again, answer)
        except Exception as exc:  # counted by the caller
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=play, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    round1 = Card.objects.filter(tracker=tracker, round=1)
    answers = Annotation.objects.filter(tracker=tracker, card__round=1)
    return {
        "errors": errors,
        "cards": round1.count(),
        "answered_cards": round1.filter(answered_at__isnull=False).count(),
        "answers": answers.count(),
        "cards_with_answers": answers.values("card").distinct().count(),
        "labelers_who_answered": answers.values("annotator").distinct().count(),
        "journal_mode": connection.cursor().execute("PRAGMA journal_mode").fetchone()[0],
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
