"""Faults under load: no ledger row lost, none applied twice, workers up, work back soon.

Small loads of ``bench.chaos``'s scenarios on a stack of their own (an embedded
PostgreSQL, a Redis that keeps nothing on disk, real ``celery worker`` processes), with a
lease of a few seconds so that "one lease" is short enough to wait for. The long runs,
with figures (rates before and after, times to recover), are ``python -m bench.chaos``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench import chaos, network

LEASE = 5.0
SETTLE = 240.0


@pytest.fixture(scope="module")
def stack() -> Iterator[chaos.Stack]:
    with chaos.stack(lease=LEASE) as made:
        yield made


@pytest.fixture
def fresh(stack: chaos.Stack) -> Iterator[chaos.Stack]:
    stack.reset()
    yield stack
    stack.stop_workers()


def assert_ledger_whole(result: chaos.Result, stack: chaos.Stack) -> None:
    counts = result.counts
    assert (counts["lost"], counts["failed"], counts["applied twice"]) == (0, 0, 0), counts
    assert counts["completed"] == counts["rows"]
    # A dead worker's last words are the only clue CI keeps once the stack is torn down.
    assert result.workers_alive, "\n\n".join(
        f"{w.hostname} exited {w.process.poll() if w.process else None}:\n{w.tail(40000)}"
        for w in stack.workers
        if not w.alive
    )


def test_workers_killed_whole_or_by_child_lose_no_row_and_apply_none_twice(
    fresh: chaos.Stack,
) -> None:
    result = chaos.scenario_kill(fresh, total=400, window=1.0, settle_timeout=SETTLE)

    assert_ledger_whole(result, fresh)
    # What a killed worker held came back one lease after it died, not hours later.
    if result.in_flight_done_after is not None:
        assert result.in_flight_done_after < LEASE + 60
    # The aggregation and the fan-out sent beside the ledger's load finished, each once.
    counts = result.counts
    assert counts["users with stats"] == counts["listeners"] > 0
    assert counts["playlists"] > 0
    assert counts["playlists twice"] == 0


def test_redis_restarted_empty_loses_no_ledger_row_and_records_the_reset(
    fresh: chaos.Stack,
) -> None:
    result = chaos.scenario_redis(fresh, total=400, window=1.0, settle_timeout=SETTLE)

    assert_ledger_whole(result, fresh)
    # One reset when the workers first met this Redis, one after the restart.
    assert result.counts["broker resets recorded"] == 2
    assert (
        result.counts["echo run"] + result.counts["echo lost with Redis"]
        == (result.counts["echo sent"])
    )


def test_postgres_stopped_mid_run_loses_no_row_and_applies_none_twice(
    fresh: chaos.Stack,
) -> None:
    result = chaos.scenario_postgres(
        fresh, total=400, window=1.0, outage=8.0, settle_timeout=SETTLE
    )

    assert_ledger_whole(result, fresh)
    assert result.resumed_after is not None


def test_a_flood_with_malformed_messages_runs_every_good_one_and_keeps_the_rest(
    fresh: chaos.Stack,
) -> None:
    result = chaos.scenario_flood(fresh, count=2000, settle_timeout=SETTLE)

    counts = result.counts
    assert counts["good run"] == counts["good sent"]
    malformed = counts["dead letters"] + counts["refused (bad arguments, failed once)"]
    assert malformed == counts["malformed"] > 0
    assert counts["dead letters"] > 0
    assert result.workers_alive


@pytest.fixture(scope="module")
def hosts() -> Iterator[chaos.Stack]:
    reason = network.unavailable()
    if reason is not None:
        pytest.skip(f"no virtual hosts on this machine: {reason}")
    with chaos.stack(lease=LEASE, hosts=True) as made:
        made.reset()
        yield made


def test_a_host_cut_off_and_back_loses_nothing_doubles_nothing_and_keeps_spotifys_limits(
    hosts: chaos.Stack,
) -> None:
    cut = 3 * LEASE
    result = chaos.scenario_partition(
        hosts, total=1500, window=1.0, cut=cut, settle_timeout=SETTLE, calls=40
    )

    assert_ledger_whole(result, fresh)
    counts = result.counts
    # Its rows were done by the others while it was away, and it worked again once back.
    if counts["rows the cut host held"]:
        assert result.in_flight_done_after is not None and result.in_flight_done_after < cut
    assert counts["rows it completed after it came back"] > 0
    assert result.back_at_work_after is not None and result.back_at_work_after < 60
    # Spotify, as the stand-in saw it from all three hosts, storms included.
    assert counts["spotify calls done"] == counts["spotify calls"]
    assert counts["429s"] > 0
    assert counts["most requests in one window"] <= counts["budget per window"]
    assert counts["requests inside a Retry-After"] == 0
