"""The worker's message consumer: every message runs, goes home, or becomes a dead letter.

Celery trusts the messages it is given. One whose body is ``42`` raises inside the
delivery callback and stops the worker (and, requeued, every worker after it); others are
logged and discarded. Anything that can reach the broker can send anything, so before a
message reaches Celery's handling this consumer checks its shape and its task name. A
message that is not a task message we can run is kept in the run journal as a dead letter
(reason, headers, raw body), and only then acknowledged. If even that record cannot be
written, the message is left unacknowledged, to come back.

A well-formed message on a queue that is not its task's home queue (a by-name sender
that knows nothing of our routing publishes to Celery's default queue ``celery``) runs
here if this worker also consumes that home queue: it is the right kind of worker.
Otherwise it is republished to its home queue as it is, same task id and body, and
acknowledged: no run of its own, no pool slot, so the hop costs one publish.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from celery.exceptions import NotRegistered
from celery.utils.log import get_logger
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed, DecodeError

from worker import run_journal
from worker.queues import arrival_queue, home_queue

log = get_logger(__name__)

_OPTIONAL_STR_HEADERS = (
    "root_id",
    "parent_id",
    "group",
    "origin",
    "argsrepr",
    "kwargsrepr",
    "shadow",
    "forwarded_from",
)
_COUNT_HEADERS = ("retries", "replaced_task_nesting", "group_index")
_EMBED_LISTS = ("callbacks", "errbacks", "chain")
MAX_COUNT = 1_000_000


def _is_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_count(value: Any) -> bool:
    # Bounded: these end up in integer columns and are counted with.
    return type(value) is int and 0 <= value <= MAX_COUNT


def _is_time_limits(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in value
        )
    )


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# Optional protocol-2 headers that Celery reads: if present and not null, what they must be.
_HEADER_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    *((key, lambda v: isinstance(v, str), "a string") for key in _OPTIONAL_STR_HEADERS),
    *((key, _is_count, f"an integer from 0 to {MAX_COUNT}") for key in _COUNT_HEADERS),
    *((key, _is_time, "an ISO 8601 time") for key in ("eta", "expires")),
    ("timelimit", _is_time_limits, "[hard, soft] seconds"),
    ("ignore_result", lambda v: isinstance(v, bool), "true or false"),
    ("stamped_headers", _is_string_list, "a list of strings"),
    ("groups", _is_string_list, "a list of strings"),
    ("stamps", lambda v: isinstance(v, dict), "an object"),
)


def header_problem(headers: dict[str, Any]) -> str | None:
    """What in a protocol-2 message's headers would break Celery later, or None."""
    name, task_id = headers.get("task"), headers.get("id")
    if not isinstance(name, str) or not name or len(name) > 200:
        return "header 'task' must be a task name"
    if not isinstance(task_id, str) or not task_id or len(task_id) > 255:
        return "header 'id' must be a task id (a string)"
    return optional_header_problem(headers)


def optional_header_problem(headers: dict[str, Any], where: str = "header") -> str | None:
    """What in the optional fields Celery reads (headers, or a protocol-1 body) is wrong."""
    for key, rule, what in _HEADER_RULES:
        value = headers.get(key)
        if value is not None and not rule(value):
            return f"{where} {key!r} must be {what} or null"
    return None


def body_problem(body: Any) -> str | None:  # noqa: PLR0911 (a return per rule)
    """What in a protocol-2 body (``[args, kwargs, embed]``) is not as Celery expects, or None."""
    if not isinstance(body, list | tuple) or len(body) != 3:
        return "body must be a JSON list [args, kwargs, embed]"
    args, kwargs, embed = body
    if not isinstance(args, list | tuple):
        return "args must be a JSON list"
    if not isinstance(kwargs, dict):
        return "kwargs must be a JSON object"
    if embed is None:
        return None
    if not isinstance(embed, dict):
        return "embed (the body's third item) must be a JSON object or null"
    for key in _EMBED_LISTS:
        if not isinstance(embed.get(key), list | None):
            return f"embed {key!r} must be a list or null"
    if not isinstance(embed.get("chord"), dict | None):
        return "embed 'chord' must be an object or null"
    return None


def v1_problem(body: Any) -> str | None:
    """A protocol-1 message carries everything in its body."""
    if not isinstance(body, dict) or not isinstance(body.get("task"), str):
        return "not a task message (no task name in its headers or body)"
    if not isinstance(body.get("id"), str):
        return "body 'id' must be a task id (a string)"
    if not isinstance(body.get("args", []), list | tuple):
        return "args must be a JSON list"
    if not isinstance(body.get("kwargs", {}), dict):
        return "kwargs must be a JSON object"
    return None


class RecordingConsumer(Consumer):  # type: ignore[misc]  # Celery ships no type hints
    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)
        fatal = tuple(self.connection_errors) + tuple(self.channel_errors)

        def on_task_received(message: Any) -> Any:
            try:
                reason = self._problem(message)
                if reason is not None:
                    return self._dead_letter(message, reason)
                if self._forwarded_home(message):
                    return None
                return handle(message)
            except fatal:
                raise
            except Exception as exc:
                return self._dead_letter(
                    message, f"message could not be handled: {type(exc).__name__}: {exc}"
                )

        return on_task_received

    def _problem(self, message: Any) -> str | None:
        malformed = getattr(message, "malformed", None)
        if malformed:
            return str(malformed)
        headers = message.headers
        if not isinstance(headers, dict):
            return "message headers are not an object"
        try:
            body = message.decode()
        except (ContentDisallowed, DecodeError, ValueError, TypeError) as exc:
            return f"undecodable message: {type(exc).__name__}: {exc}"
        if "task" in headers:
            problem = header_problem(headers) or body_problem(body)
            fields = headers
        else:  # protocol 1: the body carries what protocol 2 puts in headers
            problem = (
                v1_problem(body)
                or optional_header_problem(body, "body")
                or optional_header_problem(headers)
            )
            fields = body
        if problem is None and fields["task"] not in self.app.tasks:
            problem = f"unknown task name {fields['task']!r}: no task of that name is registered"
            self._tell_sender(fields["id"], NotRegistered(fields["task"]))
        return problem

    def _tell_sender(self, task_id: str, exc: Exception) -> None:
        # A by-name sender waiting on the result learns at once, as Celery would tell it.
        try:
            self.app.backend.mark_as_failure(task_id, exc)
        except Exception:
            log.warning("could not store the failure of %s for its sender", task_id, exc_info=True)

    def _forwarded_home(self, message: Any) -> bool:
        name = message.headers.get("task")
        arrived_on = arrival_queue(message.delivery_info)
        if name is None or not arrived_on:
            return False
        home = home_queue(name)
        if arrived_on == home or home in self._consumed_queues():
            # This worker serves the task's home queue: it is the right kind of worker.
            return False
        queue = self.app.amqp.queues[home]
        properties = message.properties or {}
        with self.app.producer_pool.acquire(block=True) as producer:
            producer.publish(
                message.body,
                exchange=queue.exchange,
                routing_key=queue.routing_key,
                declare=[queue],
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                headers={**message.headers, "forwarded_from": arrived_on},
                priority=properties.get("priority"),
                correlation_id=properties.get("correlation_id"),
                reply_to=properties.get("reply_to"),
                retry=True,
            )
        message.ack()
        log.debug(
            "%s[%s] arrived on %r, forwarded to %r",
            name,
            message.headers.get("id"),
            arrived_on,
            home,
        )
        return True

    def _consumed_queues(self) -> set[str]:
        # Read each time: an operator may add or cancel a queue at runtime (Flower, CLI).
        return {queue.name for queue in self.task_consumer.queues}

    def _dead_letter(self, message: Any, reason: str) -> None:
        """Keep the message in the journal; acknowledge it only once that record exists."""
        raw = getattr(message, "raw_envelope", None)
        if raw is None:
            headers, body = getattr(message, "headers", None), getattr(message, "body", None)
        else:  # the envelope itself was malformed: keep all of it
            headers = raw.get("headers") if isinstance(raw, dict) else None
            body = raw
        fields = run_journal.dead_letter_fields(
            reason=reason,
            headers=headers,
            body=body,
            content_type=getattr(message, "content_type", None),
            queue=arrival_queue(getattr(message, "delivery_info", None)),
            worker_host=self.hostname,
        )
        if not run_journal.record("dead", fields):
            log.error("dead letter not recorded; message left unacknowledged: %s", reason)
            return
        log.error("message kept as a dead letter: %s", reason)
        message.ack()

    # Celery's own hooks, should a message get past the checks above.
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"undecodable message: {type(exc).__name__}: {exc}")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._dead_letter(message, "not a task message (no task name in its headers)")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = (getattr(message, "headers", None) or {}).get("task")
        self._dead_letter(
            message, f"unknown task name {name!r}: no task of that name is registered"
        )

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"invalid task message: {type(exc).__name__}: {exc}")
