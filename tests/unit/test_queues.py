"""Routing and limits: each family has its queue and time limits, all from one table."""

from __future__ import annotations

from typing import Any

from worker.queues import (
    DEFAULT_QUEUE,
    FAMILIES,
    INBOX_QUEUE,
    all_queue_names,
    arrival_queue,
    celery_queues,
    home_queue,
    route_task,
    worker_queues,
)


def test_each_family_routes_to_its_own_queue() -> None:
    assert route_task("trending.calculate", (), {}, {}) == {"queue": "stats"}
    assert route_task("listening.aggregate", (), {}, {}) == {"queue": "stats"}
    assert route_task("playlists.generate", (), {}, {}) == {"queue": "playlists"}
    assert route_task("enrichment.enrich_pending", (), {}, {}) == {"queue": "enrichment"}
    assert route_task("analysis.mood_detection", (), {}, {}) == {"queue": "analysis"}
    assert route_task("automation.status", (), {}, {}) == {"queue": DEFAULT_QUEUE}


def test_celery_builtins_and_unknown_families_go_to_the_default_queue() -> None:
    assert home_queue("celery.backend_cleanup") == DEFAULT_QUEUE
    assert home_queue("something.else") == DEFAULT_QUEUE


def test_only_the_default_workers_drain_the_inbox() -> None:
    assert worker_queues(DEFAULT_QUEUE) == [DEFAULT_QUEUE, INBOX_QUEUE]
    assert worker_queues("playlists") == ["playlists"]


def test_the_workers_of_a_renamed_queue_also_drain_its_old_name() -> None:
    # Messages published to "analytics" before the deploy still run, on the stats workers.
    assert worker_queues("stats") == ["stats", "analytics"]
    assert "analytics" in all_queue_names()


def test_a_dead_workers_messages_become_visible_one_lease_after_its_last_renewal(
    app: Any,
) -> None:
    options = app.conf.broker_transport_options
    assert options["visibility_timeout"] == 60
    # Swept several times a lease, every sweep scanning: back within seconds of expiry.
    assert options["unacked_restore_interval"] <= 10
    assert options["unacked_restore_throttle"] == 1


def test_soft_limit_comes_before_the_hard_limit_in_every_family() -> None:
    assert all(f.soft_time_limit < f.time_limit for f in FAMILIES.values())


def test_registered_tasks_carry_their_familys_time_limits(app: Any) -> None:
    status = app.tasks["automation.status"]
    assert (status.soft_time_limit, status.time_limit) == (60, 120)


def test_celery_accepts_json_only(app: Any) -> None:
    assert app.conf.accept_content == ["json"]
    assert app.conf.result_accept_content == ["json"]
    assert app.conf.task_serializer == "json"


def test_tasks_are_acknowledged_late_and_requeued_if_their_worker_dies(app: Any) -> None:
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_on_rabbitmq_our_queues_are_quorum_queues_and_the_inbox_is_plain_celerys() -> None:
    queues = {q.name: q for q in celery_queues(amqp=True)}
    assert set(queues) == set(all_queue_names())
    for name, queue in queues.items():
        if name == INBOX_QUEUE:
            # What a sender with Celery's defaults declares: any other declaration is refused.
            assert (queue.exchange.name, queue.exchange.type) == (INBOX_QUEUE, "direct")
            assert not queue.queue_arguments
        else:
            assert queue.queue_arguments == {"x-queue-type": "quorum"}
            # Native delayed delivery binds topic exchanges only.
            assert queue.exchange.type == "topic"
            assert queue.routing_key == name


def test_the_arrival_queue_is_the_routing_key_without_a_delay_prefix() -> None:
    delayed = "0." * 27 + "1.stats"
    assert arrival_queue({"routing_key": delayed}) == "stats"
    assert arrival_queue({"routing_key": "celery"}) == "celery"
    assert arrival_queue({}) is None
    assert arrival_queue(None) is None
