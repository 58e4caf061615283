"""The automatic promotion rule, shared by serving and the simulation, and what the simulation
reports about it (``labeling.ml.promotion``)."""

from __future__ import annotations

from labeling.ml.promotion import goes_live, promotion_report


def point(f1: float, estimate: float | None, head: bool = True) -> dict:
    return {"head": head, "f1": f1, "estimate": {"f1": {"value": estimate}}}


def test_a_new_version_goes_live_when_its_estimate_is_at_least_the_live_ones():
    assert goes_live(0.8, 0.8) and goes_live(0.8, None)
    assert not goes_live(0.79, 0.8) and not goes_live(None, 0.5)


def test_the_report_counts_rounds_that_held_a_better_version_back_and_worse_promotions():
    # v1 0.70 live; v2 (truly 0.80) estimated lower: held back, a regret round; v3 (truly 0.60)
    # estimated higher: promoted although worse, and the best (0.80) is still held back.
    run = [point(0.0, None, head=False), point(0.70, 0.75), point(0.80, 0.70), point(0.60, 0.90)]
    report = promotion_report([run], "f1")
    assert report == {
        "rounds": 2,
        "promotions": 1,
        "held_back": 1,
        "regret_share": 1.0,
        "worse_promoted_share": 1.0,
    }
    steady = [point(0.70, 0.70), point(0.75, 0.75), point(0.80, 0.80)]
    assert promotion_report([steady], "f1")["regret_share"] == 0.0
