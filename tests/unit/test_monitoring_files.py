"""monitoring/: the Prometheus rules and the Grafana dashboard are well formed, and name only
metrics ``/metrics`` exposes (that the scrape really has each is checked against a live
console in tests/integration/test_metrics.py). promtool checks the rules when installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

MONITORING = Path(__file__).parents[2] / "monitoring"
METRIC = re.compile(r"\bautomation_[a-z_]+\b")


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana/dashboards/automation.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC.findall(expr)}


def exposed_names() -> set[str]:
    """What console/metrics.py declares: gauges are ``automation_`` + the name given to
    ``gauge()`` or ``single()``, the counter and histogram carry their full names, plus
    their suffixes."""
    source = (MONITORING.parent / "console/metrics.py").read_text()
    names = {f"automation_{n}" for n in re.findall(r'(?:gauge|single)\(\s*"([a-z_]+)"', source)}
    names |= set(re.findall(r'MetricFamily\(\s*"(automation_[a-z_]+)"', source))
    suffixed = {
        "automation_task_runs_total",
        *(f"automation_task_run_duration_seconds_{s}" for s in ("bucket", "sum", "count")),
    }
    return names | suffixed


def test_every_rule_is_an_alert_with_a_severity_and_a_summary() -> None:
    for rule in rules():
        assert rule["alert"].startswith("Automation"), rule
        assert rule["labels"]["severity"] in {"page", "warning"}, rule
        assert rule["annotations"]["summary"], rule


def test_the_rules_cover_every_condition_of_the_alert_check() -> None:
    exprs = " ".join(rule["expr"] for rule in rules())
    for metric in (
        "automation_ledger_stale_pending",
        "automation_schedule_due_slot_timestamp_seconds",
        "automation_schedule_failed_runs_in_a_row",
        "automation_enrichment_last_progress_timestamp_seconds",
        "automation_dead_letters",
        "automation_queue_workers",
        "automation_ingest_stale_queued",
    ):
        assert metric in exprs


def test_rules_and_dashboard_name_only_metrics_the_collector_exposes() -> None:
    used = metric_names([rule["expr"] for rule in rules()] + dashboard_exprs())
    assert used, "no metric found: the pattern or the files changed"
    assert used <= exposed_names(), used - exposed_names()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    subprocess.run(["promtool", "check", "rules", str(MONITORING / "alerts.yml")], check=True)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_each_rule_fires_on_its_condition_and_not_just_short_of_it() -> None:
    result = subprocess.run(
        ["promtool", "test", "rules", str(MONITORING / "alerts_test.yml")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
