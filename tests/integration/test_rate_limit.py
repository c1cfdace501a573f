"""The shared rate limiter against the real Redis, including two competing OS processes."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_lib

from worker.rate_limit import (
    RATE_LIMIT_REASON,
    RateLimitWaitTooLong,
    SharedRateLimiter,
)

# Nothing here goes through the broker: CI's RabbitMQ pass leaves it out.
pytestmark = pytest.mark.broker_independent

MakeLimiter = Callable[[int, float], SharedRateLimiter]


@pytest.fixture
def make_limiter(redis_client: redis_lib.Redis) -> Iterator[MakeLimiter]:
    """Limiters with names of their own, so no two tests share keys; cleared afterwards."""
    made: list[SharedRateLimiter] = []

    def make(limit: int, window_seconds: float) -> SharedRateLimiter:
        limiter = SharedRateLimiter(redis_client, f"test-{uuid.uuid4().hex}", limit, window_seconds)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        limiter.clear()


class RecordingSleep:
    def __init__(self, really: bool) -> None:
        self.calls: list[float] = []
        self.really = really

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.really:
            time.sleep(seconds)


def test_admits_limit_at_once_then_answers_a_wait_within_the_window(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(3, 1.0)

    assert [limiter.try_acquire() for _ in range(3)] == [None, None, None]
    wait = limiter.try_acquire()

    assert wait is not None
    assert wait.reason == RATE_LIMIT_REASON
    assert 0 < wait.seconds <= 1.0


def test_a_slot_frees_only_when_the_oldest_admission_leaves_the_window(
    make_limiter: MakeLimiter,
) -> None:
    # Bursts (as in the two-process test) cannot tell a sliding log from one that forgets
    # admissions early; admissions spread across the window can.
    limiter = make_limiter(2, 0.4)
    assert limiter.try_acquire() is None
    time.sleep(0.2)
    assert limiter.try_acquire() is None

    first_leaves = limiter.try_acquire()
    assert first_leaves is not None
    assert 0.1 < first_leaves.seconds <= 0.2
    time.sleep(first_leaves.seconds)
    assert limiter.try_acquire() is None

    second_leaves = limiter.try_acquire()
    assert second_leaves is not None
    assert 0.1 < second_leaves.seconds <= 0.25


def _admit_in_a_loop(
    name: str, limit: int, window: float, count: int, start: Any, results: Any
) -> None:
    """Child process: its own client, ``count`` admissions, the time after each."""
    client = redis_lib.Redis.from_url(os.environ["REDIS_URL"])
    try:
        limiter = SharedRateLimiter(client, name, limit, window)
        start.wait(timeout=30)
        began = time.time()
        admitted: list[float] = []
        for _ in range(count):
            limiter.acquire(max_wait=10 * window)
            admitted.append(time.time())
        results.put((began, admitted, None))
    except Exception as exc:  # handed to the parent, which fails the test with it
        results.put((0.0, [], repr(exc)))
    finally:
        client.close()


def test_two_processes_together_never_exceed_the_limit_in_any_window(
    make_limiter: MakeLimiter,
) -> None:
    limit, window, per_process = 5, 0.5, 15
    name = make_limiter(limit, window).name
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    results = context.Queue()
    processes = [
        context.Process(
            target=_admit_in_a_loop, args=(name, limit, window, per_process, start, results)
        )
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=30) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    assert [error for _, _, error in outcomes] == [None, None]

    times = sorted(t for _, admitted, _ in outcomes for t in admitted)
    assert len(times) == 2 * per_process
    # Times are taken just after each admission, so a late first one could make a real
    # window look shorter: checking slightly shorter windows keeps the test strict.
    span = window - 0.01
    for i in range(len(times) - limit):
        assert times[i + limit] - times[i] >= span, (i, times[i : i + limit + 1])
    began = min(began for began, _, _ in outcomes)
    assert times[-1] - began >= (2 * per_process / limit - 1) * window


def test_pause_blocks_admissions_for_its_length_and_reports_its_reason(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(10, 1.0)
    limiter.pause(0.3, "429 QUOTA_EXCEEDED")

    wait = limiter.try_acquire()
    assert wait is not None
    assert wait.reason == "429 QUOTA_EXCEEDED"
    assert 0 < wait.seconds <= 0.3
    status = limiter.paused()
    assert status is not None
    assert status.reason == "429 QUOTA_EXCEEDED"
    assert 0 < status.seconds <= 0.3

    sleep = RecordingSleep(really=False)
    with pytest.raises(RateLimitWaitTooLong) as raised:
        limiter.acquire(max_wait=0.1, sleep=sleep)
    assert sleep.calls == []
    assert raised.value.wait.reason == "429 QUOTA_EXCEEDED"
    assert 0.1 < raised.value.wait.seconds <= 0.3
    assert "429 QUOTA_EXCEEDED" in str(raised.value)

    time.sleep(status.seconds + 0.02)
    assert limiter.paused() is None
    # Attempts refused during the pause took no slots: the whole limit is still there.
    assert [limiter.try_acquire() for _ in range(10)] == [None] * 10


def test_a_shorter_pause_never_shortens_a_longer_one_and_a_longer_one_extends(
    make_limiter: MakeLimiter,
) -> None:
    hour = make_limiter(1, 1.0)
    hour.pause(3600, "429 daily quota")
    hour.pause(5, "429 burst")
    status = hour.paused()
    assert status is not None
    assert status.reason == "429 daily quota"
    assert status.seconds > 3590

    minute = make_limiter(1, 1.0)
    minute.pause(1, "429 burst")
    minute.pause(60, "429 longer")
    status = minute.paused()
    assert status is not None
    assert status.reason == "429 longer"
    assert status.seconds > 55


def test_acquire_sleeps_through_a_short_wait_and_then_admits(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(1, 0.2)
    assert limiter.try_acquire() is None

    sleep = RecordingSleep(really=True)
    limiter.acquire(max_wait=1.0, sleep=sleep)

    assert sleep.calls
    assert all(0 < seconds <= 0.2 for seconds in sleep.calls)
    # The admission was taken: the log is full again.
    assert limiter.try_acquire() is not None


@pytest.mark.parametrize(
    ("limit", "window", "message"),
    [
        (0, 1.0, "limit"),
        (-1, 1.0, "limit"),
        (1, 0.0, "window_seconds"),
        (1, -1.0, "window_seconds"),
        (1, float("nan"), "window_seconds"),
        (1, float("inf"), "window_seconds"),
    ],
)
def test_bad_arguments_raise_value_error(
    redis_client: redis_lib.Redis, limit: int, window: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SharedRateLimiter(redis_client, f"test-{uuid.uuid4().hex}", limit, window)
