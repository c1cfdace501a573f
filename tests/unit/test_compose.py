"""docker-compose.yml agrees with the routing table (it cannot be run on this machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.queues import INBOX_QUEUE, QUEUE_NAMES, worker_queues

COMPOSE = Path(__file__).parents[2] / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return loaded


def consumed_queues(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command[command.index("--queues") + 1].split(",")


def test_every_queue_has_a_worker_service_consuming_what_the_routing_says(
    services: dict[str, Any],
) -> None:
    workers = {name: s for name, s in services.items() if name.startswith("worker-")}
    assert {name.removeprefix("worker-") for name in workers} == set(QUEUE_NAMES)
    for name, service in workers.items():
        assert consumed_queues(service) == worker_queues(name.removeprefix("worker-"))


def test_the_inbox_is_drained_by_exactly_one_worker_service(services: dict[str, Any]) -> None:
    drainers = [
        n
        for n, s in services.items()
        if n.startswith("worker-") and INBOX_QUEUE in consumed_queues(s)
    ]
    assert drainers == ["worker-default"]


def test_every_app_service_gets_the_shared_production_environment(
    services: dict[str, Any],
) -> None:
    app_services = [n for n, s in services.items() if s.get("image") == "music-automation:latest"]
    assert len(app_services) == len(QUEUE_NAMES) + 3  # workers, migrate, beat, flower
    for name in app_services:
        environment = services[name]["environment"]
        assert {"ENVIRONMENT", "DATABASE_URL", "REDIS_URL", "FLOWER_BASIC_AUTH"} <= set(
            environment
        ), name


def test_workers_wait_for_the_migration_and_healthy_services(services: dict[str, Any]) -> None:
    for name in (n for n in services if n.startswith("worker-") or n == "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name


def test_redis_keeps_its_queues_in_an_append_only_file(services: dict[str, Any]) -> None:
    assert "--appendonly" in services["redis"]["command"]


def test_beat_runs_two_replicas_with_the_scheduler_the_app_names(
    services: dict[str, Any],
) -> None:
    # No --scheduler on the command line: the app's configuration names it, so a beat
    # started by hand is the same beat.
    beat = services["beat"]
    assert beat["command"] == ["celery", "-A", "worker", "beat", "--loglevel", "INFO"]
    assert beat["deploy"]["replicas"] == 2
