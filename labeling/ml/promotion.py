"""Whether a new model version goes live by itself: the one rule, for the app (``serving``'s
automatic promotion) and for the simulation, which measures what it costs (``promotion_report``).

A new version is trained on every answer its predecessor saw and more; in ``make simulate`` it is
better on held-out texts far more often than not. Two estimates of F1 are each uncertain by about
as much as versions differ, so comparing them held better versions back in 10–40% of rounds. The
rule trusts the newer version unless its own interval says it is clearly worse: its 95% interval
lies wholly below the live version's estimate.
"""

from __future__ import annotations

from typing import Any

REGRET_MARGIN = 0.02  # a live version this far below the best so far holds a better one back


def goes_live(new_estimate: float | None, new_upper: float | None, live_estimate: float | None) -> bool:
    """A new version goes live unless the top of its estimate's 95% interval (F1; topics: accuracy)
    is below the live version's estimate; without an estimate of its own it waits."""
    if new_estimate is None:
        return False
    if live_estimate is None:
        return True
    top = new_upper if new_upper is not None else new_estimate
    return top >= live_estimate


def promotion_report(runs: list[list[dict[str, Any]]], shown_metric: str) -> dict[str, Any]:
    """The rule replayed on simulated runs, a version per round that trained a head: which version is
    live after each round, and against the held-out truth (``f1``):

    - ``regret_share``: the share of rounds after a run's first version in which the live version's
      held-out F1 is more than ``REGRET_MARGIN`` below the best version published so far;
    - ``worse_promoted_share``: the share of promotions whose new version's held-out F1 is more than
      ``REGRET_MARGIN`` below the one it replaced.
    """

    def rule(new: dict[str, Any], live: dict[str, Any]) -> bool:
        shown = new.get("estimate", {}).get(shown_metric) or {}
        ci = shown.get("ci")
        before = (live.get("estimate", {}).get(shown_metric) or {}).get("value")
        return goes_live(shown.get("value"), ci[1] if ci else None, before)

    def knows_the_pool(new: dict[str, Any], live: dict[str, Any]) -> bool:
        truth = (new.get("pool_truth") or {}).get(shown_metric)
        before = (live.get("pool_truth") or {}).get(shown_metric)
        return truth is not None and (before is None or truth >= before)

    report = _replay(runs, rule)
    # The floor: a rule that knew every answer of the pool (its truth as the estimates define it).
    # Held-out F1 moves by chance between two close versions, so even this rule promotes some that
    # do worse there and holds back some that do better.
    if any(p.get("pool_truth") for run in runs for p in run):
        floor = _replay(runs, knows_the_pool)
        report["pool_oracle"] = {k: floor[k] for k in ("regret_share", "worse_promoted_share")}
    return report


def _replay(runs: list[list[dict[str, Any]]], rule: Any) -> dict[str, Any]:
    rounds = regrets = promotions = worse = held_back = 0
    for run in runs:
        live: dict[str, Any] | None = None
        best = None
        for point in run:
            if not point.get("head"):
                continue
            if live is None:
                live, best = point, point["f1"]
                continue
            best = max(best, point["f1"]) if best is not None else point["f1"]
            if rule(point, live):
                promotions += 1
                worse += int(point["f1"] < live["f1"] - REGRET_MARGIN)
                live = point
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
