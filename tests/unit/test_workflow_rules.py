"""Workflows without services: the conditions language, templates, the workflow file,
backoff, and where a webhook may go."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from tasks.workflows import conditions, templates
from tasks.workflows.definition import DefinitionError, parse
from tasks.workflows.webhooks import WebhookRefusedError, check_url, sign
from worker.backoff import backoff, whole_seconds

CHANGE = {
    "source": "upload_jobs",
    "job_id": 7,
    "old_status": "processing",
    "new_status": "completed",
    "job": {"id": 7, "user_id": 42, "status": "completed", "completed_at": "2026-11-25T10:00:00"},
}


def leaf(field: str, op: str, value: Any) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


@pytest.mark.parametrize(
    ("condition", "holds"),
    [
        (leaf("new_status", "eq", "completed"), True),
        (leaf("new_status", "eq", "failed"), False),
        (leaf("old_status", "ne", "processing"), False),
        (leaf("new_status", "in", ["completed", "failed"]), True),
        (leaf("new_status", "not_in", ["completed", "failed"]), False),
        (leaf("job.user_id", "eq", 42), True),
        (leaf("user_id", "eq", 42), True),  # a bare column is the job's
        (leaf("job.user_id", "gt", 41), True),
        (leaf("job.user_id", "lte", 41), False),
        (leaf("job.user_id", "gt", "41"), False),  # a number and a string never compare
        (leaf("job.completed_at", "gte", "2026-11-25"), True),  # ISO times as strings
        (leaf("job.completed_at", "exists", True), True),
        (leaf("job.enrichment_queued_at", "exists", False), True),  # absent
        (leaf("old_status", "eq", None), False),
        ({"all": []}, True),
        ({"any": []}, False),
        ({"all": [leaf("new_status", "eq", "completed"), leaf("job.user_id", "eq", 1)]}, False),
        ({"any": [leaf("new_status", "eq", "failed"), leaf("job.user_id", "eq", 42)]}, True),
        ({"not": leaf("new_status", "eq", "failed")}, True),
    ],
)
def test_a_condition_holds_as_the_language_says(condition: dict[str, Any], holds: bool) -> None:
    conditions.validate(condition)

    assert conditions.evaluate(condition, CHANGE) is holds


@pytest.mark.parametrize(
    ("condition", "error"),
    [
        ([], "conditions: must be an object, got list"),
        (
            {"field": "new_status", "op": "equals", "value": 1},
            "conditions.op: unknown operator 'equals'",
        ),
        (
            {"all": [{"field": "new_status", "op": "in", "value": "x"}]},
            r"conditions.all\[0\].value: in takes a list",
        ),
        ({"field": "job.user_id", "op": "exists", "value": 1}, "exists takes true or false"),
        ({"field": "job.user_id", "op": "lt", "value": [1]}, "lt compares a number or a string"),
        ({"field": "new_status", "op": "eq"}, "conditions.value: missing"),
        ({"all": [], "any": []}, "a group has one key"),
        ({"any": {"field": "x"}}, "conditions.any: must be a list"),
        ({"not": {"all": [{"op": "eq"}]}}, r"conditions.not.all\[0\]: a condition is"),
    ],
)
def test_a_bad_condition_is_refused_naming_the_part(condition: Any, error: str) -> None:
    with pytest.raises(conditions.ConditionError, match=error):
        conditions.validate(condition)


def test_a_status_the_source_does_not_have_is_refused_listing_its_statuses() -> None:
    with pytest.raises(conditions.ConditionError, match="'complete' is not a status"):
        conditions.validate(leaf("new_status", "eq", "complete"), statuses=("pending", "completed"))


def test_the_statuses_a_condition_can_hold_for_are_read_off_its_top_level() -> None:
    pinned = {
        "all": [leaf("new_status", "in", ["completed", "failed"]), leaf("job.user_id", "eq", 1)]
    }

    assert conditions.required_statuses(pinned) == ["completed", "failed"]
    assert conditions.required_statuses(leaf("new_status", "eq", "failed")) == ["failed"]
    assert conditions.required_statuses({"any": [leaf("new_status", "eq", "failed")]}) is None
    assert conditions.required_statuses({"all": []}) is None


def test_the_dry_run_account_names_each_leaf_and_what_it_saw() -> None:
    condition = {"all": [leaf("new_status", "eq", "completed"), leaf("job.user_id", "eq", 1)]}

    lines = conditions.explain(condition, CHANGE)

    assert [(line["path"], line["actual"], line["holds"]) for line in lines] == [
        ("conditions.all[0]", "completed", True),
        ("conditions.all[1]", 42, False),
    ]


def test_a_template_that_is_one_placeholder_keeps_the_fields_type() -> None:
    assert templates.render({"user_id": "{job.user_id}"}, CHANGE) == {"user_id": 42}


def test_a_placeholder_inside_text_is_written_out_and_braces_escape() -> None:
    rendered = templates.render("upload {job_id} is {new_status} {{literally}}", CHANGE)

    assert rendered == "upload 7 is completed {literally}"


def test_a_template_naming_a_missing_field_fails_with_its_name_and_place() -> None:
    with pytest.raises(
        templates.TemplateError,
        match=r"actions\[1\].kwargs.x: the change has no field 'job.track_id'",
    ):
        templates.render("{job.track_id}", CHANGE, "actions[1].kwargs.x")


def test_backoff_doubles_from_its_base_up_to_the_cap_drawn_from_the_upper_half() -> None:
    assert [backoff(n, 10, 3600, 0.0) for n in (1, 2, 3)] == [5, 10, 20]
    assert [backoff(n, 10, 3600, 0.999999) for n in (1, 2)] == pytest.approx([10, 20])
    assert backoff(30, 10, 3600, 0.0) == 1800


def test_the_signature_is_hmac_sha256_of_the_body_bytes() -> None:
    expected = hmac.new(b"key", b'{"a":1}', hashlib.sha256).hexdigest()

    assert sign("key", b'{"a":1}') == f"sha256={expected}"


@pytest.mark.parametrize(
    ("url", "allowed", "error"),
    [
        ("ftp://example.com/x", (), "not an http"),
        ("http://127.0.0.1:9000/hook", (), "private, loopback or reserved"),
        ("http://localhost/hook", (), "private, loopback or reserved"),
        ("http://10.1.2.3/hook", (), "private, loopback or reserved"),
        ("http://169.254.169.254/latest", (), "private, loopback or reserved"),
        ("https://hooks.example.com/x", ("other.example.com",), "not in WEBHOOK_ALLOWED_HOSTS"),
    ],
)
def test_a_webhook_url_outside_what_is_allowed_is_refused(
    url: str, allowed: tuple[str, ...], error: str
) -> None:
    with pytest.raises(WebhookRefusedError, match=error):
        check_url(url, frozenset(allowed), resolve=False)


def test_a_private_address_is_allowed_when_its_host_is_listed() -> None:
    check_url("http://127.0.0.1:9000/hook", frozenset({"127.0.0.1"}), resolve=False)
    check_url("https://8.8.8.8/hook", frozenset(), resolve=False)  # public: allowed


def workflow_file(**fields: Any) -> dict[str, Any]:
    return {
        "name": "n",
        "trigger": {"type": "job_status_changed", "source": "upload_jobs"},
        "actions": [
            {
                "type": "task",
                "task": "listening.aggregate_user",
                "kwargs": {"user_id": "{job.user_id}"},
            }
        ],
    } | fields


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (
            {"trigger": {"type": "job_status_changed", "source": "tracks"}},
            "trigger.source: 'tracks' is not a source",
        ),
        ({"actions": []}, "actions: a non-empty list"),
        (
            {"actions": [{"type": "email"}]},
            r"actions\[0\].type: one of webhook, task, notification",
        ),
        ({"actions": [{"type": "task", "task": "nope.nothing"}]}, "is not a public task name"),
        (
            {"actions": [{"type": "task", "task": "workflows.execute"}]},
            "a workflow may not run workflows.execute",
        ),
        (
            {
                "actions": [
                    {
                        "type": "task",
                        "task": "listening.aggregate_user",
                        "kwargs": {"u": "{job.usr}"},
                    }
                ]
            },
            r"\{job.usr\} names no field",
        ),
        (
            {"actions": [{"type": "webhook", "url": "http://10.0.0.1/x"}]},
            "private, loopback or reserved",
        ),
        (
            {"rate_limit": {"per_job_status": "1 per hour"}},
            "rate_limit.per_job_status: a rate is N/s",
        ),
        ({"max_attempts": 0}, "max_attempts: a whole number from 1 to 20"),
        ({"debounce": {"seconds": -1}}, "debounce.seconds: more than 0"),
        ({"concurrency": {"limit": 0}}, "concurrency.limit: a whole number, at least 1"),
        ({"colour": "red"}, "unknown key"),
        ({"secret": "short"}, "secret: at least 16 characters"),
    ],
)
def test_a_bad_workflow_file_is_refused_naming_the_part(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(DefinitionError, match=error):
        parse(
            workflow_file(**fields),
            known_tasks={"listening.aggregate_user", "workflows.execute"},
            allowed_hosts=frozenset(),
        )


def test_a_workflow_file_gets_the_specs_defaults() -> None:
    definition = parse(
        workflow_file(), known_tasks={"listening.aggregate_user"}, allowed_hosts=frozenset()
    )

    assert definition.document["rate_limit"] == {"per_job_status": "1/h", "per_workflow": None}
    assert definition.idempotency_key == "{job_id}-{new_status}-{workflow_id}-{date}"
    assert (definition.max_attempts, definition.active, definition.on_statuses) == (5, True, None)


def test_a_countdown_goes_to_the_broker_in_whole_seconds_rounded_up() -> None:
    # RabbitMQ's delayed delivery refuses a countdown under a second.
    assert [whole_seconds(s) for s in (0.0, -1.0, 0.3, 2.0, 2.01)] == [None, None, 1, 2, 3]
