"""Estimates over all of a tracker's texts, by strata: exact where answered, sampled elsewhere."""

from __future__ import annotations

import numpy as np

from labeling.ml.estimates import ConceptEvidence, concept_estimates


def test_every_positive_answered_gives_exact_precision_of_one():
    rng = np.random.default_rng(0)
    # 40 matches, all answered yes and scored high; 60 answered no, scored low; 1,900 unanswered texts
    # (none a match) all below the threshold: no unanswered text is a predicted match.
    evidence = ConceptEvidence(
        answered_scores=np.concatenate([rng.uniform(0.7, 1.0, 40), rng.uniform(0.0, 0.4, 60)]),
        answered_oof=np.concatenate([rng.uniform(0.6, 1.0, 40), rng.uniform(0.0, 0.45, 60)]),
        answered_y=np.array([1] * 40 + [0] * 60),
        answered_strategy=np.array(["seed_neighbour"] * 40 + ["random"] * 20 + ["uncertain"] * 40),
        unanswered_scores=rng.uniform(0.0, 0.3, 1900),
    )
    est = concept_estimates(evidence, 0.5)
    assert est["precision_exact"] and est["strata"]["unanswered_above"] == 0
    assert est["precision"]["value"] == 1.0 and est["precision"]["ci"] == [1.0, 1.0]
    # recall is still an estimate: 20 random cards below the threshold, none a match
    lo, hi = est["recall"]["ci"]
    assert lo < est["recall"]["value"] <= hi == 1.0 and est["recall"]["value"] > 0.5


def test_unanswered_predicted_matches_make_precision_an_interval():
    evidence = ConceptEvidence(
        answered_scores=np.array([0.9, 0.8, 0.2, 0.7, 0.6, 0.1]),
        answered_oof=np.array([0.85, 0.75, 0.3, 0.65, 0.55, 0.2]),
        answered_y=np.array([1, 1, 0, 1, 0, 0]),
        answered_strategy=np.array(["positive", "positive", "random", "positive", "positive", "random"]),
        unanswered_scores=np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.05]),
    )
    est = concept_estimates(evidence, 0.5)
    assert not est["precision_exact"]
    assert est["strata"]["sampled_above"] == 4 and est["strata"]["sampled_above_yes"] == 3
    assert est["strata"]["unanswered_above"] == 3 and est["strata"]["unanswered_below"] == 4
    lo, hi = est["precision"]["ci"]
    assert 0 < lo < est["precision"]["value"] < hi <= 1
    assert est["predicted_matches"] == 4 + 3


def test_intervals_cover_the_truth_when_strata_are_sampled_uniformly():
    """Sample the way the game does (positive cards among predicted matches, random cards over the
    rest), answer them, and check the 95% intervals against the pool's real precision and recall."""
    rng = np.random.default_rng(1)
    n, threshold = 5000, 0.5
    y = (rng.random(n) < 0.08).astype(int)
    scores = np.clip(0.55 * y + rng.normal(0.15, 0.18, n), 0, 1)  # an imperfect head
    covered = {"precision": 0, "recall": 0, "f1": 0}
    reps = 120
    for rep in range(reps):
        r = np.random.default_rng(100 + rep)
        above = np.flatnonzero(scores >= threshold)
        positive = r.choice(above, 25, replace=False)
        rest = np.setdiff1d(np.arange(n), positive)
        random = r.choice(rest, 20, replace=False)
        answered = np.concatenate([positive, random])
        unanswered = np.setdiff1d(np.arange(n), answered)
        evidence = ConceptEvidence(
            answered_scores=scores[answered],
            answered_oof=scores[answered],  # the head never saw them: its scores are out-of-fold
            answered_y=y[answered],
            answered_strategy=np.array(["positive"] * 25 + ["random"] * 20),
            unanswered_scores=scores[unanswered],
        )
        est = concept_estimates(evidence, threshold, seed=rep, draws=2000)
        predicted = scores >= threshold
        tp, fp, fn = np.sum(predicted & (y == 1)), np.sum(predicted & (y == 0)), np.sum(~predicted & (y == 1))
        truth = {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn)}
        for name, value in truth.items():
            lo, hi = est[name]["ci"]
            covered[name] += lo <= value <= hi
    assert all(c / reps >= 0.9 for c in covered.values()), covered


def _rare_concept(below_yes: int) -> ConceptEvidence:
    """30 answered matches scored high, 50 answered 'no' scored low, 10 random cards below the
    threshold (``below_yes`` of them matches), 3,000 unanswered texts scored very low."""
    rng = np.random.default_rng(3)
    oof = np.concatenate([rng.uniform(0.6, 1.0, 30), rng.uniform(0.0, 0.3, 50), rng.uniform(0.0, 0.05, 10)])
    return ConceptEvidence(
        answered_scores=oof,
        answered_oof=oof,
        answered_y=np.array([1] * 30 + [0] * 50 + [1] * below_yes + [0] * (10 - below_yes)),
        answered_strategy=np.array(["positive"] * 30 + ["uncertain"] * 50 + ["random"] * 10),
        unanswered_scores=np.concatenate([rng.uniform(0.0, 0.02, 3000), rng.uniform(0.6, 0.9, 5)]),
    )


def test_rare_concept_all_no_random_cards_do_not_imply_hundreds_of_missed_matches():
    est = concept_estimates(_rare_concept(below_yes=0), 0.5)
    # A flat prior on 0 of 10 would put ~4.5% of 3,000 texts below the threshold as matches (recall
    # near 0.2); the calibrated scores say such texts are rarely matches.
    assert est["strata"]["sampled_below"] == 10 and est["strata"]["sampled_below_yes"] == 0
    assert est["recall"]["value"] > 0.8, est["recall"]


def test_uniform_cards_that_find_matches_below_the_threshold_still_widen_the_interval():
    none_found = concept_estimates(_rare_concept(below_yes=0), 0.5)
    found = concept_estimates(_rare_concept(below_yes=3), 0.5)
    assert found["strata"]["sampled_below_yes"] == 3
    assert found["recall"]["value"] < 0.3, found["recall"]
    lo, hi = found["recall"]["ci"]
    width_none = none_found["recall"]["ci"][1] - none_found["recall"]["ci"][0]
    assert hi - lo > 0.1 and hi - lo > width_none
