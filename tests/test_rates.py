"""The API's request rate (``trackers.rates``): one counter in Redis for every web process, taken in
leases; never more than the rate passes, and a lease held unspent by another process is all a caller
can be refused early."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import caches

from trackers import rates
from trackers.rates import Counters, Rate


@pytest.fixture
def redis_client():
    client = caches["default"]._cache.get_client(write=True)
    return lambda: client


@pytest.fixture
def clock(monkeypatch):
    now = [1_800_000_000.0]
    monkeypatch.setattr(rates, "clock", lambda: now[0])
    return now


def name() -> str:
    return caches["default"].make_key(f"rate:test:{uuid.uuid4().hex}")


def test_rates_read_as_requests_per_period_and_a_wrong_one_says_how_to_write_it():
    assert Rate.parse("1200/m") == Rate(1200, 60)
    assert Rate.parse("5/10s") == Rate(5, 10)
    assert Rate.parse("100/h").lease == 1 and Rate.parse("1200/m").lease == 12
    with pytest.raises(ValueError, match="write it as requests/period, as in 600/m"):
        Rate.parse("lots")


def test_two_processes_together_pass_exactly_the_rate_and_count_one_number_in_redis(redis_client, clock):
    rate, counter = Rate(250, 60), name()
    processes = [Counters(), Counters()]
    passed = refused = 0
    for i in range(300):
        verdict = processes[i % 2].take(redis_client, counter, rate)
        passed += verdict.allowed
        refused += not verdict.allowed
    assert (passed, refused) == (250, 50)
    keys = list(redis_client().scan_iter(match=f"{counter}:*"))
    assert (
        len(keys) == 1 and int(redis_client().get(keys[0])) == 250 + 2 * 2
    )  # each process asked once past it


def test_a_lease_another_process_holds_is_all_a_caller_is_refused_early(redis_client, clock):
    rate, counter = Rate(250, 60), name()
    holder, busy = Counters(), Counters()
    assert holder.take(redis_client, counter, rate).allowed  # leases 2, spends 1
    answers = [busy.take(redis_client, counter, rate).allowed for _ in range(250)]
    assert answers.count(True) == 248 and answers[-1] is False
    assert holder.take(redis_client, counter, rate).allowed  # its leased request still passes
    assert not holder.take(redis_client, counter, rate).allowed


def test_a_spent_window_is_refused_without_asking_redis_until_it_ends(redis_client, clock, monkeypatch):
    rate, counter, process = Rate(3, 60), name(), Counters()
    assert [process.take(redis_client, counter, rate).allowed for _ in range(4)] == [True] * 3 + [False]
    refused = process.take(redis_client, counter, rate)
    assert not refused.allowed and 1 <= refused.wait_s <= 60

    def no_redis():
        raise AssertionError("a spent window asked Redis again")

    clock[0] += refused.wait_s - 1
    assert not process.take(no_redis, counter, rate).allowed  # still the same window
    clock[0] += 1
    assert [process.take(redis_client, counter, rate).allowed for _ in range(4)] == [True] * 3 + [False]


def test_windows_of_different_callers_end_at_different_times(redis_client, clock):
    process, rate = Counters(), Rate(1, 3600)
    waits = {process.take(redis_client, name(), rate).wait_s for _ in range(20)}
    assert len(waits) > 10 and all(1 <= w <= 3600 for w in waits)
