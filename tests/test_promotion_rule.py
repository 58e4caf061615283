"""The automatic promotion rule, shared by serving and the simulation, and what the simulation
reports about it (``labeling.ml.promotion``)."""

from __future__ import annotations

from labeling.ml.promotion import goes_live, promotion_report


def point(
    f1: float, estimate: float | None, head: bool = True, width: float = 0.1, pool: float | None = None
) -> dict:
    ci = [estimate - width / 2, estimate + width / 2] if estimate is not None else None
    out = {"head": head, "f1": f1, "estimate": {"f1": {"value": estimate, "ci": ci}}}
    if pool is not None:
        out["pool_truth"] = {"f1": pool}
    return out


def test_a_new_version_goes_live_unless_its_interval_lies_below_the_live_estimate():
    assert goes_live(0.8, 0.9, 0.8) and goes_live(0.8, 0.9, None)
    assert goes_live(0.7, 0.85, 0.8)  # lower, but within its uncertainty: the newer one is trusted
    assert not goes_live(0.6, 0.79, 0.8)  # clearly worse: it waits
    assert not goes_live(None, None, 0.5) and goes_live(0.8, None, 0.8) and not goes_live(0.79, None, 0.8)


def test_the_report_counts_rounds_that_held_a_better_version_back_and_worse_promotions():
    # v1 0.70 live; v2 (truly 0.80) estimated clearly lower: held back, a regret round; v3 (truly
    # 0.60) estimated higher: promoted although worse, and the best (0.80) is still not live.
    run = [
        point(0.0, None, head=False),
        point(0.70, 0.75, pool=0.70),
        point(0.80, 0.60, pool=0.81),
        point(0.60, 0.90, pool=0.62),
    ]
    report = promotion_report([run], "f1")
    assert report == {
        "rounds": 2,
        "promotions": 1,
        "held_back": 1,
        "regret_share": 1.0,
        "worse_promoted_share": 1.0,
        # knowing the pool, v2 goes live and v3 waits: no regret, no worse promotion
        "pool_oracle": {"regret_share": 0.0, "worse_promoted_share": 0.0},
    }
    steady = [point(0.70, 0.70), point(0.75, 0.75), point(0.80, 0.80)]
    assert promotion_report([steady], "f1")["regret_share"] == 0.0
