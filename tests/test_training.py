"""Training a head on frozen vectors: features chosen by CV, threshold for a target precision, estimates."""

from __future__ import annotations

import numpy as np
import pytest

from labeling.ml.simulation import SimulationSpec, simulate
from labeling.ml.training import FEATURIZERS, choose_threshold, prf, train_binary, wilson


def separable(rng, n=200, d=16, margin=1.0):
    y = (rng.random(n) < 0.3).astype(int)
    w = rng.standard_normal(d)
    x = rng.standard_normal((n, d)) + np.outer(np.where(y == 1, margin, -margin), w / np.linalg.norm(w))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def worded(rng, y, vocab: int = 60) -> list[list[int]]:
    """Token ids per row, as the encoder gives them: ordinary words for every row, and two of five
    'surface' words that only the positive rows use (the sentence vectors of these tests do not know
    them)."""
    ids = []
    for label in y:
        words = rng.integers(2000, 2000 + vocab, 6).tolist()
        if label:
            words += rng.integers(5000, 5005, 2).tolist()
        ids.append([101, *words, 102])
    return ids


def tokens_for(ids):
    from labeling.ml.training import Tokens
    from trackers.ml.ngrams import Ngrams

    ngrams = Ngrams.build(ids)
    return Tokens(ngrams, ngrams.features(ids))


def test_head_learns_a_separable_concept():
    rng = np.random.default_rng(0)
    x, y = separable(rng, margin=2.0)
    head = train_binary(x[:150], y[:150])
    assert head.featurizer == "embedding" and head.labels == 150 and head.positives == y[:150].sum()
    assert prf(y[150:], head.score(x[150:]) >= head.threshold)[2] >= 0.9
    assert head.cv["precision"] >= 0.8 and 0 < head.threshold < 1
    assert len(head.pr_curve) == 21


def test_training_needs_both_answers():
    with pytest.raises(ValueError, match="at least one 'yes' and one 'no'"):
        train_binary(np.ones((4, 3), np.float32), np.ones(4))


def test_threshold_meets_the_target_precision_when_it_can():
    y = np.array([1, 1, 1, 0, 1, 0, 0, 1, 0, 0])
    s = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    t, rule = choose_threshold(y, s, 0.75)
    p, r, _ = prf(y, s >= t)
    assert rule == "meets target precision" and p >= 0.75
    assert 0.6 < t < 0.7  # keeps the 0.7 positive (precision 0.8), stops before 0.6
    t_strict, rule_strict = choose_threshold(y, s, 1.0)
    assert rule_strict == "meets target precision" and prf(y, s >= t_strict)[0] == 1.0
    _, rule_impossible = choose_threshold(np.array([1, 0]), np.array([0.2, 0.9]), 0.9)
    assert rule_impossible == "target precision not reached"


def test_wilson_interval():
    lo, hi = wilson(8, 10)
    assert 0.49 < lo < 0.5 and 0.94 < hi < 0.95
    assert wilson(0, 0) == (0.0, 1.0)


def topics(rng, *, k: int, n: int, noise: float, d: int = 24):
    """Unit vectors around ``k`` random topic centres: (centres, topic of each row, vectors)."""
    centres = rng.standard_normal((k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, k, n)
    v = centres[cluster] + noise * rng.standard_normal((n, d))
    return centres, cluster, (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_simulation_beats_random_on_a_rare_clustered_concept():
    _, cluster, v = topics(np.random.default_rng(3), k=40, n=4000, noise=0.3)
    y = (cluster == 7).astype(int)  # about 2.5% positives
    spec = SimulationSpec(repeats=4)
    ours = simulate(v, y, spec, "ours")
    rand = simulate(v, y, spec, "random")
    assert [p["labels"] for p in ours["curve"]] == [30, 55, 80, 105]
    assert ours["f1_mean"] > rand["f1_mean"] + 0.05, (ours["f1_mean"], rand["f1_mean"])


def test_stored_scorer_matches_the_trained_model():
    from labeling.ml.training import load_scorer, save_scorer, scorer_of

    rng = np.random.default_rng(8)
    x, y = separable(rng, n=120)
    tokens = tokens_for(worded(rng, y))
    for feats in [(f,) for f in FEATURIZERS]:
        head = train_binary(x, y, featurizers=feats, tokens=tokens)
        rows = tokens.labeled if head.featurizer == "ngrams" else None
        expected = head.score(x, rows)
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            save_scorer(scorer_of(head), Path(tmp) / "h.npz")
            loaded = load_scorer(Path(tmp) / "h.npz")
        assert loaded.featurizer == feats[0] and not hasattr(loaded, "threshold")
        assert np.allclose(loaded.score(x, rows), expected, atol=1e-5)
        assert (loaded.ngrams is not None) == (feats[0] == "ngrams")


def test_token_ngrams_are_chosen_only_where_cross_validation_prefers_them():
    from labeling.ml.training import RICHER_MARGIN, train_binary

    rng = np.random.default_rng(9)
    x, y = separable(rng, n=300, margin=0.15)  # the vectors barely tell the classes apart
    ids = worded(rng, y)
    tokens = tokens_for(ids)
    head = train_binary(x[:200], y[:200], tokens=tokens_for(ids[:200]))
    assert (
        head.featurizer == "ngrams"
        and head.candidates["ngrams"] > head.candidates["embedding"] + RICHER_MARGIN
    )
    held = head.ngrams.features(ids[200:])  # new texts, under the head's own vocabulary
    assert prf(y[200:], head.score(x[200:], held) >= head.threshold)[2] >= 0.9
    plain = train_binary(x[:200], y[:200], featurizers=("embedding",))
    assert prf(y[200:], plain.score(x[200:]) >= plain.threshold)[2] < 0.8
    # words that say nothing: the plainer features stay
    for seed in range(3):
        noise = tokens_for(worded(np.random.default_rng(10 + seed), np.zeros(300, dtype=int)))
        x2, y2 = separable(np.random.default_rng(seed), n=300, margin=1.0)
        plainer = train_binary(x2, y2, tokens=noise)
        assert plainer.featurizer == "embedding" and plainer.ngrams is None, plainer.candidates
    assert tokens.labeled.shape[0] == 300


def test_ngram_features_count_each_word_and_pair_once_and_never_special_ids():
    from trackers.ml.ngrams import Ngrams

    texts = [[101, 2000, 2001, 2000, 102], [101, 2000, 2001, 102, 0, 0], [101, 2002, 102]]
    ngrams = Ngrams.build(texts)
    grams = ngrams.index()
    assert set(grams) == {(2000,), (2001,), (2000, 2001)}  # in two texts or more; no markers, no padding
    features = ngrams.features(texts).toarray()
    assert np.allclose(np.linalg.norm(features[:2], axis=1), 1.0) and not features[2].any()
    assert np.allclose(features[0], features[1])  # twice 2000 weighs as once; padding counts nothing


def test_unlabeled_background_trains_as_no_except_what_the_answers_call_yes():
    rng = np.random.default_rng(11)
    centres, cluster, v = topics(rng, k=30, n=6000, noise=0.35)
    y_all = (cluster == 0).astype(int)
    # answers as active learning gathers them: matches and near-misses from the two closest topics
    near = np.argsort(-(centres @ centres[0]))[1:3]
    pos = np.flatnonzero(cluster == 0)[:25]
    neg = np.flatnonzero(np.isin(cluster, near))[:50]
    rows = np.concatenate([pos, neg])
    y = y_all[rows]
    background = np.setdiff1d(rng.choice(6000, 500, replace=False), rows)
    plain = train_binary(v[rows], y)
    helped = train_binary(v[rows], y, background_vectors=v[background])
    assert plain.background == 0
    # background rows of the concept itself are recognised by the answers-only model and left out
    assert helped.background < len(background) - int(y_all[background].sum()) // 2
    rest = np.setdiff1d(np.arange(6000), np.concatenate([rows, background]))
    f1 = [prf(y_all[rest], h.score(v[rest]) >= h.threshold)[2] for h in (plain, helped)]
    assert f1[1] > f1[0], f1
