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
    # workers, migrate, beat, flower, api, prometheus-token
    assert len(app_services) == len(QUEUE_NAMES) + 5
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


def test_the_api_serves_the_console_on_8000_and_is_checked_on_healthz(
    services: dict[str, Any],
) -> None:
    api = services["api"]
    assert api["command"] == ["automation", "api", "--host", "0.0.0.0"]
    assert api["ports"] == ["8000:8000"]
    assert "http://127.0.0.1:8000/healthz" in " ".join(api["healthcheck"]["test"])


def test_prometheus_scrapes_with_a_viewer_token_the_one_shot_service_writes(
    services: dict[str, Any],
) -> None:
    maker = services["prometheus-token"]
    script = maker["command"][-1]
    assert "automation admin create prometheus --role viewer" in script
    assert "exists already" in script  # a second `up` finds the user there
    assert "automation admin token prometheus" in script and "tail -n 1" in script
    assert maker["restart"] == "no"
    written = "/var/lib/automation/token"
    assert f"mv {written}.new {written}" in script
    volume = next(v for v in maker["volumes"] if v.startswith("prometheus-token:"))
    assert volume.split(":")[1] == str(Path(written).parent)

    prometheus = services["prometheus"]
    assert prometheus["depends_on"]["prometheus-token"]["condition"] == (
        "service_completed_successfully"
    )
    assert prometheus["depends_on"]["api"]["condition"] == "service_healthy"
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"]}
    config = yaml.safe_load((COMPOSE.parent / "monitoring" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["api:8000"]}]
    credentials = job["authorization"]["credentials_file"]
    assert credentials == f"{mounts['prometheus-token']}/token"
    assert mounts["./monitoring/alerts.yml"] in config["rule_files"]
    assert mounts["./monitoring/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_grafana_is_provisioned_from_monitoring_with_the_prometheus_datasource(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load(
        (COMPOSE.parent / "monitoring/grafana/provisioning/dashboards/automation.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == mounts["./monitoring/grafana/dashboards"]
    sources = yaml.safe_load(
        (COMPOSE.parent / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"
    assert "GF_SECURITY_ADMIN_PASSWORD" in grafana["environment"]
