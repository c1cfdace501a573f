"""Which counter fields a finished run adds to (worker.run_journal.RunCount)."""

from __future__ import annotations

from worker.run_journal import RunCount


def test_a_run_is_counted_by_task_and_outcome_in_the_first_bucket_that_holds_it() -> None:
    count = RunCount.of("trending.calculate", {"status": "success", "runtime_seconds": 0.07})

    assert count.count_field == "trending.calculate|success"
    assert count.bucket_field == "trending.calculate|0.1"
    assert count.sum_field == "trending.calculate|sum"
    assert count.seconds == 0.07


def test_a_run_exactly_on_a_bound_falls_in_that_bucket() -> None:
    assert RunCount.of("t", {"status": "success", "runtime_seconds": 0.05}).bucket_field == "t|0.05"


def test_a_run_longer_than_every_bound_falls_in_the_inf_bucket() -> None:
    count = RunCount.of("t", {"status": "failure", "runtime_seconds": 7200.0})

    assert count.bucket_field == "t|+Inf"


def test_a_run_without_a_duration_is_counted_but_not_timed() -> None:
    count = RunCount.of("t", {"status": "revoked"})

    assert (count.count_field, count.bucket_field) == ("t|revoked", "")
