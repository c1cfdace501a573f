"""Public task arguments are checked at the boundary, against each task's declared types.

Pure checks of ``worker.arguments.validate_arguments`` on the registered tasks' ``run``
(what the base task passes it); no worker runs. The table of valid calls doubles as the
list of public tasks: a new task without an entry, or with an unannotated parameter,
fails here until its arguments are declared.
"""

from __future__ import annotations

import inspect
from typing import Any, get_args

import pytest

from db.models import PLAYLIST_TYPES
from tasks.playlists.generation import KINDS
from worker.arguments import PlaylistKind, _checker, validate_arguments
from worker.errors import InvalidArgumentsError, PermanentError

NOW = "2026-05-11T03:00:00+00:00"

# One valid call per public task, as a sender would make it: (args, kwargs), JSON values.
VALID_CALLS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "analysis.energy_analysis": ((1,), {"background_task_id": 2}),
    "analysis.genre_classification": ((), {"track_id": 1}),
    "analysis.mood_detection": ((1, None), {}),
    "automation.ping": ((), {}),
    "automation.status": ((), {}),
    "automation.trigger": ((), {"task": "smart_playlists", "kwargs": {"force": True}}),
    "cleanup.background_tasks": ((), {}),
    "cleanup.broker_reset": ((), {"epoch": "1764028800.123:0a1b2c3d4e5f", "detected_by": "w@h"}),
    "cleanup.expired_playlists": ((), {}),
    "cleanup.stuck_tasks": ((), {}),
    "cleanup.workflow_logs": ((), {}),
    "cleanup.task_runs": ((), {}),
    "enrichment.enrich_pending": ((), {"batch_size": 500}),
    "monitoring.check_alerts": ((), {}),
    "enrichment.enrich_upload": ((7,), {}),
    "enrichment.progress": ((), {"user_id": None}),
    "listening.aggregate": ((), {}),
    "listening.aggregate_user": ((42,), {}),
    "playlists.add_up": (([{"daily_mix": 3, "cold_start": 1}, {"daily_mix": 2}],), {}),
    "playlists.generate": ((42, "daily_mix"), {}),
    "playlists.generate_all": ((), {"playlist_type": "new_for_you", "force": True}),
    "playlists.generate_chunk": ((1, 1001, ["daily_mix", "new_for_you"], NOW), {}),
    "trending.calculate": ((), {}),
    "workflows.execute": ((7,), {}),
    "ingest.process": ((7,), {}),
    "ingest.backfill": (("images",), {}),
}


def public_tasks(app: Any) -> dict[str, Any]:
    return {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}


def refusal(app: Any, name: str, *args: Any, **kwargs: Any) -> str:
    """The message ``name`` is refused with, called with these arguments."""
    with pytest.raises(InvalidArgumentsError) as caught:
        validate_arguments(name, app.tasks[name].run, args, kwargs)
    return str(caught.value)


def test_every_public_task_has_a_valid_example_call(app: Any) -> None:
    assert sorted(VALID_CALLS) == sorted(public_tasks(app))


@pytest.mark.parametrize("name", sorted(VALID_CALLS))
def test_the_valid_call_of_each_public_task_passes(app: Any, name: str) -> None:
    args, kwargs = VALID_CALLS[name]
    validate_arguments(name, app.tasks[name].run, args, kwargs)


def test_every_parameter_of_every_public_task_is_annotated(app: Any) -> None:
    bare = [
        f"{name}({parameter.name})"
        for name, task in public_tasks(app).items()
        for parameter in inspect.signature(task.run).parameters.values()
        if parameter.annotation is inspect.Parameter.empty
        or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    assert bare == []


def test_the_playlist_type_names_the_kinds_playlists_generate() -> None:
    assert set(get_args(PlaylistKind)) == set(KINDS) == set(PLAYLIST_TYPES)


def test_a_refusal_is_a_permanent_error() -> None:
    assert issubclass(InvalidArgumentsError, PermanentError)


def test_track_id_none_is_refused_naming_track_id(app: Any) -> None:
    message = refusal(app, "analysis.energy_analysis", None)
    assert message.startswith("analysis.energy_analysis: argument track_id: must be an integer")
    assert message.endswith("(got None)")


def test_a_negative_background_task_id_is_refused(app: Any) -> None:
    message = refusal(app, "analysis.mood_detection", 5, background_task_id=-7)
    assert "argument background_task_id: must be an integer between 1" in message
    assert "(got -7)" in message


def test_a_string_user_id_is_refused(app: Any) -> None:
    message = refusal(app, "listening.aggregate_user", "abc")
    assert "argument user_id: must be an integer" in message
    assert "(got 'abc')" in message


def test_a_string_of_digits_is_not_an_id(app: Any) -> None:
    assert "(got '5')" in refusal(app, "enrichment.enrich_upload", "5")


def test_a_bool_is_not_an_id(app: Any) -> None:
    assert "argument track_id" in refusal(app, "analysis.genre_classification", True)


def test_an_id_beyond_bigint_is_refused(app: Any) -> None:
    assert "argument upload_id" in refusal(app, "enrichment.enrich_upload", 2**63)


def test_a_10_mb_string_is_refused_with_a_short_message(app: Any) -> None:
    huge = "x" * (10 * 1024 * 1024)
    message = refusal(app, "automation.trigger", huge)
    assert len(message) < 600
    assert "argument task: must be a string of 1 to 200 characters" in message
    assert "(10485760 characters)" in message


def test_the_whole_message_is_capped_at_500_characters(app: Any) -> None:
    long = "y" * 1000
    message = refusal(app, "playlists.generate_chunk", long, long, [long], long)
    assert len(message) == 500
    assert message.endswith("…")


def test_an_unknown_keyword_argument_is_refused(app: Any) -> None:
    message = refusal(app, "enrichment.progress", user=3)
    assert message == "enrichment.progress: unexpected argument 'user'"


def test_a_missing_argument_is_refused(app: Any) -> None:
    message = refusal(app, "playlists.generate", 42)
    assert message == "playlists.generate: argument playlist_type: missing"


def test_too_many_positional_arguments_are_refused(app: Any) -> None:
    message = refusal(app, "listening.aggregate_user", 1, 2)
    assert message == "listening.aggregate_user: takes at most 1 positional arguments (got 2)"


def test_an_argument_given_twice_is_refused(app: Any) -> None:
    assert "given both by position and by name" in refusal(
        app, "enrichment.enrich_upload", 1, upload_id=1
    )


def test_a_bad_playlist_type_is_refused_listing_the_valid_ones(app: Any) -> None:
    message = refusal(app, "playlists.generate", 42, "weekly_jams")
    assert message == (
        "playlists.generate: argument playlist_type: must be one of daily_mix, "
        "discovery_weekly, new_for_you, forgotten_favorites (got 'weekly_jams')"
    )


def test_every_bad_argument_is_named_in_one_message(app: Any) -> None:
    message = refusal(app, "playlists.generate", -7, "x")
    assert message == (
        "playlists.generate: argument user_id: must be an integer between 1 and 2**63-1 "
        "(got -7); argument playlist_type: must be one of daily_mix, discovery_weekly, "
        "new_for_you, forgotten_favorites (got 'x')"
    )


def test_a_parameter_with_a_plain_annotation_is_checked_strictly(app: Any) -> None:
    message = refusal(app, "playlists.generate_all", force="yes")
    assert "argument force: input should be a valid boolean (got 'yes')" in message


def test_trigger_kwargs_over_64_kib_are_refused(app: Any) -> None:
    message = refusal(app, "automation.trigger", "status", {"pad": "z" * 70_000})
    assert "argument kwargs: must be a JSON object of at most 64 KiB" in message


def test_trigger_kwargs_must_be_an_object(app: Any) -> None:
    assert "argument kwargs" in refusal(app, "automation.trigger", "status", [1, 2])


def test_a_chunk_time_without_a_time_zone_is_refused(app: Any) -> None:
    message = refusal(app, "playlists.generate_chunk", 1, 2, ["daily_mix"], "2026-05-11T03:00")
    assert "argument now: must be an ISO 8601 date-time with a time zone" in message


def test_repeated_chunk_kinds_are_refused(app: Any) -> None:
    message = refusal(app, "playlists.generate_chunk", 1, 2, ["daily_mix", "daily_mix"], NOW)
    assert "argument kinds: must be a list of 1 to 4 distinct playlist types" in message


def test_an_unknown_chunk_kind_is_refused_naming_its_position(app: Any) -> None:
    message = refusal(app, "playlists.generate_chunk", 1, 2, ["daily_mix", "weekly"], NOW)
    assert "argument kinds[1]: input should be 'daily_mix'" in message


def test_a_batch_size_over_10000_is_refused(app: Any) -> None:
    message = refusal(app, "enrichment.enrich_pending", batch_size=10_001)
    assert "argument batch_size: must be an integer between 1 and 10000, or null" in message


def test_chunk_results_over_100000_items_are_refused(app: Any) -> None:
    message = refusal(app, "playlists.add_up", [{"daily_mix": 1}] * 100_001)
    assert "argument results: must be a list of at most 100000 objects of counts" in message


def test_a_count_that_is_not_an_integer_is_refused_naming_where(app: Any) -> None:
    message = refusal(app, "playlists.add_up", [{"daily_mix": 1}, {"daily_mix": "2"}])
    assert "argument results[1]['daily_mix']: input should be a valid integer" in message


def test_celerys_own_tasks_pass_with_their_usual_arguments(app: Any) -> None:
    # The base task may check every task; Celery's take *args/**kwargs, left unchecked.
    validate_arguments(
        "celery.chord_unlock",
        app.tasks["celery.chord_unlock"].run,
        ("group-id", {"task": "playlists.add_up"}),
        {"interval": 1, "max_retries": None, "result": [["id", None]]},
    )
    validate_arguments("celery.accumulate", app.tasks["celery.accumulate"].run, (1, 2), {"x": 3})


def test_the_check_of_a_task_is_built_once(app: Any) -> None:
    run = app.tasks["listening.aggregate_user"].run
    validate_arguments("listening.aggregate_user", run, (1,), {})
    built = _checker.cache_info().currsize
    validate_arguments(
        "listening.aggregate_user", app.tasks["listening.aggregate_user"].run, (2,), {}
    )
    assert _checker.cache_info().currsize == built
