"""The simulation replays the app's loop (labeling.ml.loop) round by round and measures it honestly."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from labeling.ml import loop
from labeling.ml.simulation import (
    SimulationSpec,
    behind_random,
    best_f1,
    coverage,
    one_run,
    simulate,
    summarize,
    typed_examples_train,
)


def clustered(rng, *, k: int, n: int, noise: float = 0.3, d: int = 16):
    """Unit vectors around ``k`` random centres: (cluster of each row, vectors)."""
    centres = rng.standard_normal((k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, k, n)
    v = centres[cluster] + noise * rng.standard_normal((n, d))
    return cluster, (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


SPEC = SimulationSpec(repeats=1, rounds=3, round_size=10)


def test_every_round_trains_and_plans_through_the_loop():
    cluster, v = clustered(np.random.default_rng(0), k=6, n=300)
    y = (cluster == 2).astype(int)
    with (
        mock.patch.object(loop, "train", wraps=loop.train) as train,
        mock.patch.object(loop, "plan_round", wraps=loop.plan_round) as plan,
        mock.patch.object(loop, "plan_check", wraps=loop.plan_check) as check,
    ):
        points = one_run(v, y, SPEC, "ours", 0)
    # every round, then the tracker page's check round after the last one, as the app runs them
    assert train.call_count == 4 and plan.call_count == 3 and check.call_count == 1
    assert check.call_args.kwargs["threshold"] == points[-1]["threshold"]  # the last head's, in use
    after = points[-1]["check"]
    assert 0 < after["cards"] <= 20 and after["head"] and "recall" in after["estimate"]
    first = plan.call_args_list[0].kwargs
    assert first["trained"] is None and first["keyword_hits"] is None  # the app's create_tracker round
    assert len(first["example_vectors"]) == 5
    later = plan.call_args_list[1].kwargs
    assert later["threshold"] == later["trained"].threshold  # the head's own threshold, in use
    assert len(later["shown"]) == 10
    found = train.call_args_list[0].args[1]
    assert list(found.strategies).count(loop.EXAMPLE) == 5  # examples found in the data are answers
    assert [p["labels"] for p in points] == [15, 25, 35]


def test_random_baseline_trains_the_same_way_but_draws_cards_uniformly():
    cluster, v = clustered(np.random.default_rng(0), k=6, n=300)
    y = (cluster == 2).astype(int)
    with (
        mock.patch.object(loop, "train", wraps=loop.train) as train,
        mock.patch.object(loop, "plan_round", wraps=loop.plan_round) as plan,
    ):
        points = one_run(v, y, SPEC, "random", 0)
    assert train.call_count == 3 and plan.call_count == 0
    assert all(p["strategies"] == ["random"] for p in points)


def test_one_class_answers_get_the_apps_fallback_round():
    _, v = clustered(np.random.default_rng(1), k=4, n=120)
    y = np.ones(120, dtype=int)  # every answer is 'yes': no head can train
    with mock.patch.object(loop, "plan_round", wraps=loop.plan_round) as plan:
        points = one_run(v, y, SPEC, "ours", 0)
    assert [p["head"] for p in points] == [False, False, False]
    assert all("training needs at least one 'no'" in p["reason"] for p in points)
    assert all(p["f1"] == 0.0 and "estimate" not in p for p in points)
    for call in plan.call_args_list[1:]:
        assert call.kwargs["trained"].head is None  # train's own answer, passed on as the app does
    assert all(set(p["strategies"]) <= {"seed_neighbour", "random"} for p in points)


def test_typed_examples_leave_the_pool_and_train_as_yes_rows():
    cluster, v = clustered(np.random.default_rng(2), k=5, n=300)
    y = (cluster == 1).astype(int)
    spec = SimulationSpec(repeats=1, rounds=2, round_size=20, typed_examples=True)
    with mock.patch.object(loop, "train", wraps=loop.train) as train, typed_examples_train(True):
        points = one_run(v, y, spec, "ours", 0)
    pool, answers = train.call_args_list[0].args[:2]
    assert len(pool) == 300 - 100 - 5 and loop.EXAMPLE not in answers.strategies
    assert len(train.call_args_list[0].kwargs["example_vectors"]) == 5
    assert points[0]["labels"] == 20 and points[-1]["examples_trained"] == 5
    with typed_examples_train(False):
        assert loop.TYPED_EXAMPLES_TRAIN is False
        points = one_run(v, y, spec, "ours", 0)
    assert points[-1]["examples_trained"] == 0


def test_typed_examples_train_is_restored():
    before = loop.TYPED_EXAMPLES_TRAIN
    with pytest.raises(RuntimeError), typed_examples_train(not before):
        raise RuntimeError
    assert loop.TYPED_EXAMPLES_TRAIN is before


def test_topic_with_none_answers_and_scores_the_none_class():
    cluster, v = clustered(np.random.default_rng(3), k=4, n=400, noise=0.2)
    labels = ["a", "b", "c"]  # cluster 3 is every other label: 'none'
    with mock.patch.object(loop, "train", wraps=loop.train) as train:
        result = simulate(v, cluster, SPEC, "ours", topic_labels=labels)
    answers = train.call_args_list[-1].args[1]
    assert 3 in answers.classes  # answered 'none'
    spec = train.call_args_list[-1].args[2]
    assert spec.kind == "topic" and spec.classes == ["a", "b", "c", "none"]
    point = result["runs"][0][-1]
    assert point["f1"] > 0.8 and set(point["estimate"]) == {"accuracy"}
    assert result["shown_metric"] == "accuracy" and result["coverage"]["accuracy"]["points"] == 3


def test_document_topics_go_through_the_document_pool():
    rng = np.random.default_rng(4)
    cluster, lines = clustered(rng, k=3, n=900, noise=0.5)
    member_of = np.repeat(np.arange(150), 6)
    y = np.array([np.bincount(cluster[member_of == d], minlength=3).argmax() for d in range(150)])
    with mock.patch.object(loop, "document_pool", wraps=loop.document_pool) as pool:
        result = simulate(lines, y, SPEC, "ours", topic_labels=["x", "y", "z"], member_of=member_of)
    assert pool.call_count == 2  # the pool and the held-out documents, per run
    assert result["curve"][-1]["labels"] == 30  # examples of a document tracker are never answers


def test_best_f1_takes_the_best_cut_between_distinct_scores():
    y = np.array([1, 0, 1, 0, 0])
    assert best_f1(y, np.array([0.9, 0.8, 0.7, 0.1, 0.1])) == pytest.approx(0.8)  # cut at 0.7
    assert best_f1(y, np.array([0.5, 0.5, 0.5, 0.5, 0.5])) == pytest.approx(4 / 7)
    assert best_f1(np.zeros(3), np.array([0.1, 0.2, 0.3])) == 0.0


def point(f1, best, est, lo, hi, truth):
    return {
        "labels": 10,
        "head": True,
        "f1": f1,
        "f1_best": best,
        "estimate": {"f1": {"value": est, "ci": [lo, hi]}},
        "truth": {"f1": truth},
        "pool_truth": {"f1": est},
    }


def test_coverage_and_gaps_on_a_tiny_case():
    runs = [
        [point(0.5, 0.6, 0.55, 0.4, 0.7, 0.5), point(0.7, 0.7, 0.9, 0.85, 0.95, 0.7)],
        [
            point(0.6, 0.65, 0.6, 0.5, 0.7, 0.6),
            {"labels": 10, "head": False, "f1": 0.0, "reason": "one class"},
        ],
    ]
    summary = summarize(runs)
    assert summary["coverage"]["f1"] == {"points": 3, "covered": 2, "no_interval": 0, "share": 0.6667}
    assert coverage(runs, "pool_truth")["f1"]["share"] == 1.0
    assert summary["shown_gap_mean"] == pytest.approx((0.05 + 0.2 + 0.0) / 3, abs=1e-4)
    assert summary["threshold_gap_mean"] == pytest.approx((0.1 + 0.0 + 0.05) / 3, abs=1e-4)
    assert summary["threshold_gap_final"] == pytest.approx(0.0)  # the second run has no head at the end
    assert [p["f1_mean"] for p in summary["curve"]] == [0.55, 0.35]
    assert [p["heads"] for p in summary["curve"]] == [2, 1]
    ours = {"curve": [{"labels": 10, "f1_mean": 0.5}, {"labels": 20, "f1_mean": 0.7}]}
    rand = {"curve": [{"labels": 10, "f1_mean": 0.51}, {"labels": 20, "f1_mean": 0.75}]}
    assert behind_random(ours, rand) == [{"round": 2, "labels": 20, "ours": 0.7, "random": 0.75}]


def test_forked_workers_give_the_same_runs():
    cluster, v = clustered(np.random.default_rng(5), k=6, n=300)
    y = (cluster == 2).astype(int)
    spec = SimulationSpec(repeats=2, rounds=2, round_size=10)
    assert simulate(v, y, spec, "ours", workers=2)["runs"] == simulate(v, y, spec, "ours")["runs"]


def test_a_flag_behind_random_carries_the_paired_standard_error():
    def runs(values):
        return [[{"f1": v}] for v in values]

    ours = {"curve": [{"labels": 30, "f1_mean": 0.5}], "runs": runs([0.4, 0.6])}
    rand = {"curve": [{"labels": 30, "f1_mean": 0.6}], "runs": runs([0.6, 0.6])}
    assert behind_random(ours, rand) == [
        {"round": 1, "labels": 30, "ours": 0.5, "random": 0.6, "paired_se": pytest.approx(0.1)}
    ]


def test_results_file_keeps_one_line_per_round_and_reads_back():
    import json

    from labeling.management.commands.simulate_labeling import dump

    point = {"round": 1, "labels": 30, "f1": 0.123456789}
    results = [{"task": "t", "ours": {"runs": [[point, point]]}, "random": {"runs": [[point]]}}]
    text = dump(results)
    assert json.loads(text)[0]["ours"]["runs"][0][1] == {"round": 1, "labels": 30, "f1": 0.1235}
    assert text.count('{"round": 1, "labels": 30, "f1": 0.1235}') == 3


def test_the_command_writes_results_and_reports_them(tmp_path):
    import io
    import json

    from django.core.management import call_command

    rng = np.random.default_rng(0)
    rows = ["text,label"]
    for i in range(240):
        if i % 6 == 0:
            rows.append(f"please cancel my plan {rng.integers(99)} today,cancel")
        else:
            rows.append(f"the weather {rng.integers(99)} looks {['fine', 'grey', 'warm'][i % 3]},other")
    data = tmp_path / "calls.csv"
    data.write_text("\n".join(rows) + "\n")
    output = tmp_path / "results.json"
    args = ["--file", str(data), "--positive", "cancel", "--rounds", "2", "--round-size", "10"]
    call_command(
        "simulate_labeling",
        *args,
        "--repeats",
        "2",
        "--workers",
        "1",
        "--output",
        str(output),
        stdout=io.StringIO(),
    )
    (task,) = json.loads(output.read_text())
    assert task["task"] == "calls · cancel" and task["loop"] == "labeling.ml.loop"
    assert [p["labels"] for p in task["ours"]["curve"]] == [15, 25]  # 5 examples found, then 2 rounds of 10
    assert len(task["ours"]["runs"]) == 2 and set(task["ours"]["coverage"]) == {"precision", "recall", "f1"}
    report = io.StringIO()
    call_command("simulate_labeling", "--report", str(output), stdout=report)
    line = next(x for x in report.getvalue().splitlines() if x.startswith("calls · cancel"))
    assert f"{task['ours']['f1_mean']:.3f}" in line and f"{task['random']['f1_mean']:.3f}" in line
