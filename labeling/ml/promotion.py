"""Whether a new model version goes live by itself: the one rule, for the app (``serving``'s
automatic promotion) and for the simulation, which measures what it costs (``promotion_report``)."""

from __future__ import annotations

from typing import Any

REGRET_MARGIN = 0.02  # a live version this far below the best so far holds a better one back


def goes_live(new_estimate: float | None, live_estimate: float | None) -> bool:
    """A new version goes live when its estimate over all texts (F1; topics: accuracy) is at least
    the live version's; without an estimate of its own it waits."""
    if new_estimate is None:
        return False
    return live_estimate is None or new_estimate >= live_estimate


def promotion_report(runs: list[list[dict[str, Any]]], shown_metric: str) -> dict[str, Any]:
    """The rule replayed on simulated runs, a version per round that trained a head: which version is
    live after each round, and against the held-out truth (``f1``):

    - ``regret_share``: the share of rounds after a run's first version in which the live version's
      held-out F1 is more than ``REGRET_MARGIN`` below the best version published so far;
    - ``worse_promoted_share``: the share of promotions whose new version's held-out F1 is more than
      ``REGRET_MARGIN`` below the one it replaced.
    """
    rounds = regrets = promotions = worse = held_back = 0
    for run in runs:
        live: dict[str, Any] | None = None
        best = None
        for point in run:
            if not point.get("head"):
                continue
            estimate = (point.get("estimate", {}).get(shown_metric) or {}).get("value")
            if live is None:
                live, best = {"f1": point["f1"], "estimate": estimate}, point["f1"]
                continue
            best = max(best, point["f1"]) if best is not None else point["f1"]
            if goes_live(estimate, live["estimate"]):
                promotions += 1
                worse += int(point["f1"] < live["f1"] - REGRET_MARGIN)
                live = {"f1": point["f1"], "estimate": estimate}
            else:
                held_back += 1
            rounds += 1
            regrets += int(live["f1"] < best - REGRET_MARGIN)
    return {
        "rounds": rounds,
        "promotions": promotions,
        "held_back": held_back,
        "regret_share": round(regrets / rounds, 4) if rounds else None,
        "worse_promoted_share": round(worse / promotions, 4) if promotions else None,
    }
