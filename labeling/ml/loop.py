"""One round of the learning loop on arrays: the app's services and ``simulate_labeling`` both run this.

A tracker's loop, given its pool (one entry per distinct text, or per document), its answers,
its example sentences and its keyword matches:

1. ``train``: fit a head on the answers (plus unlabeled background rows as weak 'no', and for
   concept trackers the example sentences that are not in the data as 'yes' rows, see
   ``TYPED_EXAMPLES_TRAIN``), or say in words why the answers cannot train one yet;
2. ``plan_round``: choose the next round's cards: from the head when there is one (uncertain,
   predicted matches at or above the threshold in use, random), otherwise the fallback that never
   runs dry while unshown texts remain: more neighbours of the examples and of the 'yes' answers,
   keyword matches, random texts;
3. ``evidence``: what the estimates over the whole pool need (``labeling.ml.estimates``).

Examples found in the data are answers ('yes', or their label) from the start, never cards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import sparse

from labeling.ml.estimates import ConceptEvidence, TopicEvidence
from labeling.ml.selection import Pick, check_round, cold_start, next_round, review_round, topic_round
from labeling.ml.training import (
    Head,
    LinearScorer,
    Tokens,
    TopicHead,
    background_sample,
    scorer_of,
    topic_scorer_of,
    train_binary,
    train_topic,
)
from trackers.ml.documents import document_vectors, line_sums
from trackers.ml.ngrams import Ngrams

NONE = "none"  # a topic tracker's answer "none of these labels"; trains an implicit class of its own
EXAMPLE = "example"  # the strategy recorded for examples found in the data
# Example sentences that are not in the data train as 'yes' rows of concept trackers (see the
# simulation's typed-examples comparison in bench/results/simulation.json).
TYPED_EXAMPLES_TRAIN = True
# Random cards in a concept tracker's first round and in every fallback round. Neighbours of the
# examples find the rare matches, random texts show what ordinary ones look like and place the
# threshold: with 0.2 the first round trailed random selection on SpamAssassin by 0.06 F1 (a common,
# varied concept); 0.6 closes that and keeps the rare intents' gain (bench/results/simulation.json).
COLD_START_RANDOM_SHARE = 0.6


@dataclass
class Pool:
    """A tracker's candidates as arrays. Document pools keep their lines' vectors too, so that a
    document is as near an example as its nearest line."""

    vectors: np.ndarray
    member_of: np.ndarray | None = None
    member_vectors: np.ndarray | None = None
    # Segment pools: every entry's token n-gram features under ``ngrams``, the pool's vocabulary
    # (``with_tokens``); concept heads may then read them (``training.FEATURIZERS``).
    ngrams: Ngrams | None = None
    tokens: sparse.csr_matrix | None = None
    token_ids: Sequence[Sequence[int]] | None = None

    def with_tokens(self, token_ids: Sequence[Sequence[int]]) -> Pool:
        """This pool with n-gram features from each entry's token ids (a vocabulary of the pool's own)."""
        ngrams = Ngrams.build(token_ids)
        if ngrams is None:
            return replace(self, token_ids=token_ids)
        return replace(self, ngrams=ngrams, tokens=ngrams.features(token_ids), token_ids=token_ids)

    def scores(self, scorer: LinearScorer) -> np.ndarray:
        """``scorer``'s scores of every entry (concepts: P(yes); topics: (entries × classes)), with
        the n-gram features of its own vocabulary where it reads them."""
        tokens = None
        if scorer.reads_tokens:
            if scorer.ngrams is None or self.token_ids is None:
                raise ValueError("this head reads token n-grams: the pool needs its texts' token ids")
            tokens = self.tokens if scorer.ngrams is self.ngrams else scorer.ngrams.features(self.token_ids)
        if scorer.is_topic:
            return scorer.probabilities(self.vectors, tokens)
        return scorer.score(self.vectors, tokens)

    def __len__(self) -> int:
        return len(self.vectors)

    def nearness(self, queries: np.ndarray) -> np.ndarray | None:
        """(entries × queries) cosine, for documents through their closest line; None if plain."""
        if self.member_of is None or self.member_vectors is None or not len(queries):
            return None
        sims = self.member_vectors @ np.asarray(queries, dtype=np.float32).T
        out = np.full((len(self.vectors), sims.shape[1]), -np.inf, dtype=np.float32)
        np.maximum.at(out, self.member_of, sims)
        return out


def document_pool(member_vectors: np.ndarray, member_of: np.ndarray, n_documents: int) -> Pool:
    """A pool of whole documents from their lines: a document's vector is the normalised mean of
    its lines' vectors; its nearness to a sentence is that of its closest line."""
    member_vectors = np.asarray(member_vectors, dtype=np.float32)
    vectors = document_vectors(line_sums(member_vectors, member_of, n_documents))  # as serving builds them
    return Pool(vectors, np.asarray(member_of, dtype=np.int64), member_vectors)


@dataclass
class Answers:
    """One row per answered pool entry: its index, its class, how its card was chosen and the chance
    it had of being drawn (NaN for answers without a drawn card: examples, feedback)."""

    rows: np.ndarray
    classes: np.ndarray
    strategies: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if len(self.probabilities) != len(self.rows):
            self.probabilities = np.full(len(self.rows), np.nan)

    @classmethod
    def empty(cls) -> Answers:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype="<U16"))

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class Spec:
    kind: str = "concept"  # or "topic"
    labels: tuple[str, ...] = ()  # topic labels, without "none"
    round_size: int = 25
    target_precision: float = 0.8

    @property
    def classes(self) -> list[str]:
        """Concept: index 0 'no', 1 'yes'. Topic: the labels, then 'none'."""
        return ["no", "yes"] if self.kind == "concept" else [*self.labels, NONE]

    def class_of(self, answer: str) -> int | None:
        names = self.classes
        return names.index(answer) if answer in names else None


@dataclass
class Trained:
    """A head and its scores of the whole pool, or the reason there is none yet."""

    head: Head | TopicHead | None = None
    scorer: LinearScorer | None = None
    scores: np.ndarray | None = None  # concept: P(yes) per entry; topic: (entries × classes)
    reason: str = ""

    @property
    def threshold(self) -> float | None:
        return self.head.threshold if isinstance(self.head, Head) else None


def why_not_trainable(answers: Answers, spec: Spec) -> str:
    """What answers are missing before a head can train, in words; "" when it can."""
    counts = np.bincount(answers.classes, minlength=len(spec.classes)) if len(answers) else np.zeros(2, int)
    if spec.kind == "concept":
        yes, no = int(counts[1]), int(counts[0])
        if yes and no:
            return ""
        if not yes and not no:
            return "no answers yet: training needs at least one 'yes' and one 'no'"
        have, need = ("yes", "no") if yes else ("no", "yes")
        return f"all {yes + no} answers so far are '{have}': training needs at least one '{need}'"
    answered = [name for name, n in zip(spec.classes, counts, strict=False) if n]
    if len(answered) >= 2:
        return ""
    if not answered:
        return "no answers yet: training needs answers of at least two labels (or 'none')"
    return f"every answer so far is '{answered[0]}': training needs answers of a second label (or 'none')"


def train(
    pool: Pool,
    answers: Answers,
    spec: Spec,
    *,
    example_vectors: np.ndarray | None = None,
    example_token_ids: Sequence[Sequence[int]] | None = None,
    not_background: np.ndarray | None = None,
) -> Trained:
    """Fit the head on the answers and score the whole pool; or say why it cannot train yet.

    ``example_vectors``: concept trackers' example sentences that are not in the data, and
    ``example_token_ids`` their token ids (for the n-gram features, where the pool has them).
    ``not_background``: entries never taken as weak 'no' rows (live traffic, whose share of matches
    may be anything: it teaches only through its answers).
    """
    reason = why_not_trainable(answers, spec)
    if reason:
        return Trained(reason=reason)
    rows, y = answers.rows, answers.classes
    if spec.kind == "topic":
        topic = train_topic(pool.vectors[rows], y, spec.classes)
        scorer = topic_scorer_of(topic)
        return Trained(topic, scorer, pool.scores(scorer))
    # Unlabeled entries as weak 'no' rows.
    background = background_sample(
        len(pool),
        rows if not_background is None or not len(not_background) else np.union1d(rows, not_background),
    )
    use_examples = TYPED_EXAMPLES_TRAIN and example_vectors is not None and len(example_vectors)
    tokens = None
    if pool.ngrams is not None and pool.tokens is not None:
        examples = None
        if use_examples and example_vectors is not None:
            examples = (
                pool.ngrams.features(example_token_ids)
                if example_token_ids is not None and len(example_token_ids) == len(example_vectors)
                else sparse.csr_matrix((len(example_vectors), len(pool.ngrams)), dtype=np.float32)
            )
        tokens = Tokens(pool.ngrams, pool.tokens[rows], pool.tokens[background], examples)
    head = train_binary(
        pool.vectors[rows],
        y,
        target_precision=spec.target_precision,
        background_vectors=pool.vectors[background],
        example_vectors=example_vectors if use_examples else None,
        tokens=tokens,
    )
    scorer = scorer_of(head)
    return Trained(head, scorer, pool.scores(scorer))


def plan_round(
    pool: Pool,
    answers: Answers,
    spec: Spec,
    *,
    shown: np.ndarray,
    trained: Trained | None,
    threshold: float | None,
    example_vectors: np.ndarray,
    keyword_hits: np.ndarray | None,
    rng: np.random.Generator,
    example_classes: np.ndarray | None = None,
) -> list[Pick]:
    """The next round's cards: from the head at the threshold in use, or the fallback without one.

    ``shown``: entries already on a card (answered or not); answered entries are never shown again.
    ``example_classes``: each example's class (a topic tracker's first round asks around each label).
    """
    exclude = np.union1d(np.asarray(shown, dtype=np.int64), answers.rows)
    if trained is not None and trained.scores is not None:
        if spec.kind == "topic":
            return topic_round(pool.vectors, trained.scores, size=spec.round_size, rng=rng, exclude=exclude)
        assert threshold is not None
        return next_round(
            pool.vectors, trained.scores, threshold, size=spec.round_size, rng=rng, exclude=exclude
        )
    if spec.kind == "topic" and not len(shown) and example_classes is not None:
        first = _topic_first_round(pool, spec, example_vectors, example_classes, exclude, keyword_hits, rng)
        if first is not None:
            return first
    # No head yet: neighbours of the examples and of every positive answer, keywords, random texts.
    positive = answers.rows[answers.classes != spec.class_of("no" if spec.kind == "concept" else NONE)]
    queries = np.vstack(
        [
            np.asarray(example_vectors, dtype=np.float32).reshape(-1, pool.vectors.shape[1]),
            pool.vectors[positive],
        ]
    )
    return cold_start(
        pool.vectors,
        queries,
        size=spec.round_size,
        rng=rng,
        exclude=exclude,
        keyword_hits=keyword_hits,
        seed_sims=pool.nearness(queries),
        random_share=_cold_start_random_share(spec, answers, len(example_vectors), len(shown)),
    )


CHECK_ROUND_SIZE = 20  # cards of a round that checks what a concept tracker misses


def plan_check(
    answers: Answers,
    *,
    shown: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    rng: np.random.Generator,
    size: int = CHECK_ROUND_SIZE,
) -> list[Pick]:
    """A check round for a concept tracker: texts below ``threshold`` by ``scores`` (the model being
    checked), drawn with known probabilities, mostly just below it (``selection.check_round``)."""
    exclude = np.union1d(np.asarray(shown, dtype=np.int64), answers.rows)
    return check_round(scores, threshold, size=size, rng=rng, exclude=exclude)


def plan_review(
    answers: Answers,
    *,
    shown: np.ndarray,
    within: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    size: int,
    rng: np.random.Generator,
) -> list[Pick]:
    """A round of live traffic for a concept tracker: only entries ``within`` (its "live traffic"
    dataset), drawn with known probabilities (``selection.review_round``)."""
    exclude = np.union1d(np.union1d(np.asarray(shown, dtype=np.int64), answers.rows), np.flatnonzero(~within))
    return review_round(scores, threshold, size=size, rng=rng, exclude=exclude)


PER_LABEL_FIRST = 3  # a topic tracker's first round: cards near each label's examples...
FIRST_NEAR_SHARE = 0.2  # ...in at most this share of the round (random cards train topics better)


def _topic_first_round(
    pool: Pool,
    spec: Spec,
    example_vectors: np.ndarray,
    example_classes: np.ndarray,
    exclude: np.ndarray,
    keyword_hits: np.ndarray | None,
    rng: np.random.Generator,
) -> list[Pick] | None:
    """A topic tracker's first round: ``PER_LABEL_FIRST`` texts nearest each label's examples (their
    centre), taken in turn from each label so that every label with examples is asked about, then
    random texts, which show each label's spread and the texts of none of them. None without a
    label's example (the fallback round then)."""
    classes = np.asarray(example_classes, dtype=np.int64)
    none = spec.class_of(NONE)
    labels = [c for c in np.unique(classes).tolist() if c >= 0 and c != none]
    if not labels:
        return None
    vectors = np.asarray(example_vectors, dtype=np.float32)
    centres = np.vstack([vectors[classes == c].mean(axis=0) for c in labels])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    size = spec.round_size
    near = min(PER_LABEL_FIRST * len(labels), round(FIRST_NEAR_SHARE * size))
    return cold_start(
        pool.vectors,
        centres,
        size=size,
        rng=rng,
        exclude=exclude,
        keyword_hits=keyword_hits,
        seed_sims=pool.nearness(centres),
        random_share=1.0 - near / size if size else 1.0,
    )


def _cold_start_random_share(spec: Spec, answers: Answers, n_examples: int, n_shown: int) -> float:
    """A topic tracker's first round: one neighbour per example not yet answered, the rest random.

    Its examples found in the data already answer for their labels; their neighbours would ask the
    same again, where random texts show each label's spread and the texts of none of them (the
    simulation measured a first round of mostly neighbours up to 0.2 macro-F1 below a random one).
    """
    if spec.kind != "topic" or n_shown:
        return COLD_START_RANDOM_SHARE
    unanswered = max(0, n_examples - int(np.sum(answers.strategies == EXAMPLE)))
    return 1.0 - min(unanswered, spec.round_size) / spec.round_size


def evidence(
    trained: Trained, answers: Answers, n_pool: int, within: np.ndarray | None = None
) -> ConceptEvidence | TopicEvidence:
    """The arrays the estimates over the pool are computed from (at any threshold); ``within``: only
    these entries (a population: the training pool, or live traffic)."""
    assert trained.scores is not None and trained.head is not None
    if within is not None:
        return _evidence_within(trained, answers, n_pool, np.asarray(within, dtype=bool))
    unanswered = np.setdiff1d(np.arange(n_pool), answers.rows)
    if isinstance(trained.head, TopicHead):
        predicted = np.argmax(trained.scores, axis=1)
        oof = trained.head.oof if trained.head.oof is not None else np.full(len(answers), -1)
        return TopicEvidence(
            answered_predicted=predicted[answers.rows],
            answered_oof=np.asarray(oof, dtype=np.int64),
            answered_y=answers.classes,
            answered_strategy=answers.strategies,
            unanswered_predicted=predicted[unanswered],
        )
    oof = trained.head.oof if trained.head.oof is not None else np.full(len(answers), np.nan)
    return ConceptEvidence(
        answered_scores=trained.scores[answers.rows],
        answered_oof=np.asarray(oof, dtype=np.float64),
        answered_y=answers.classes,
        answered_strategy=answers.strategies,
        unanswered_scores=trained.scores[unanswered],
        answered_probability=np.asarray(answers.probabilities, dtype=np.float64),
    )


def _evidence_within(
    trained: Trained, answers: Answers, n_pool: int, within: np.ndarray
) -> ConceptEvidence | TopicEvidence:
    whole = evidence(trained, answers, n_pool)
    keep = within[answers.rows]
    unanswered = np.setdiff1d(np.arange(n_pool), answers.rows)
    outside = within[unanswered]
    if isinstance(whole, TopicEvidence):
        return TopicEvidence(
            answered_predicted=whole.answered_predicted[keep],
            answered_oof=whole.answered_oof[keep],
            answered_y=whole.answered_y[keep],
            answered_strategy=whole.answered_strategy[keep],
            unanswered_predicted=whole.unanswered_predicted[outside],
        )
    return ConceptEvidence(
        answered_scores=whole.answered_scores[keep],
        answered_oof=whole.answered_oof[keep],
        answered_y=whole.answered_y[keep],
        answered_strategy=whole.answered_strategy[keep],
        unanswered_scores=whole.unanswered_scores[outside],
        answered_probability=whole.answered_probability[keep],
    )
