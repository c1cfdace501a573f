"""kombu's Redis transport, made to hand over malformed envelopes instead of dying on them.

Anything that can reach Redis can push anything onto a queue. kombu parses what it pops
before Celery sees it, and two shapes never reach Celery at all: an envelope that is not
JSON raises inside the poll and the popped item is gone; an envelope without
``properties`` (or whose body is not valid base64, or that is a list or a number) raises
while it is turned into a message, which either stops the worker or drops the message
with a log line. Here both become a *quarantined* message: a well-formed stand-in that
carries the raw envelope and the reason (``malformed``), is tracked as unacknowledged like
any other, and is kept as a dead letter and acknowledged by ``worker.consumer``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

import redis.exceptions
from kombu.transport import redis as kombu_redis
from kombu.utils.json import loads

# The key of the stand-in's raw envelope: a restore (a worker killed before the ack)
# puts the stand-in back on its queue, original envelope included.
QUARANTINED = "quarantined"


def envelope_problem(payload: Any) -> str | None:  # noqa: PLR0911 (a return per rule)
    """Why ``payload`` is not a message kombu and Celery can handle, or None."""
    if not isinstance(payload, dict):
        return f"envelope is a JSON {type(payload).__name__}, not an object"
    if QUARANTINED in payload:
        return str(payload.get("reason") or "malformed envelope")
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        return "envelope has no properties object"
    if not isinstance(properties.get("delivery_tag"), str):
        return "envelope has no delivery_tag"
    info = properties.get("delivery_info")
    if not (
        isinstance(info, dict)
        and all(isinstance(info.get(k), str) for k in ("exchange", "routing_key"))
    ):
        return "envelope's delivery_info lacks exchange and routing_key"
    if not isinstance(payload.get("headers", {}), dict | None):
        return "envelope's headers are not an object"
    for key in ("content-type", "content-encoding"):
        if not isinstance(payload.get(key), str | None):
            return f"envelope's {key} is not a string"
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        return "envelope's body is not a string"
    if body and properties.get("body_encoding") == "base64":
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return "envelope's body is not valid base64"
    return None


def parse_envelope(item: bytes | str, queue: str) -> Any:
    """The popped item as JSON, or a quarantine record when it is not JSON at all."""
    try:
        text = item.decode("utf-8") if isinstance(item, bytes) else item
        return loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raw = item if isinstance(item, bytes) else item.encode("utf-8", "replace")
        return {
            QUARANTINED: {"base64": base64.b64encode(raw).decode("ascii")},
            "reason": f"envelope is not JSON: {exc}",
            "queue": queue,
        }


class Message(kombu_redis.Channel.Message):  # type: ignore[misc]
    malformed: str | None = None
    raw_envelope: Any = None

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        try:
            problem = envelope_problem(payload)
            if problem is None:
                super().__init__(payload, channel=channel, **kwargs)
                return
        except Exception as exc:  # anything kombu cannot turn into a message
            problem = f"envelope could not be read: {type(exc).__name__}: {exc}"
        self.malformed = problem
        self.raw_envelope = (
            payload.get(QUARANTINED, payload) if isinstance(payload, dict) else payload
        )
        routing_key = _routing_key(payload)
        stand_in = {
            "body": None,
            "headers": {},
            "content-type": None,
            "content-encoding": None,
            "properties": {
                "delivery_tag": str(uuid.uuid4()),
                "delivery_info": {"exchange": "", "routing_key": routing_key},
                "priority": 0,
            },
        }
        super().__init__(stand_in, channel=channel, **kwargs)
        self._raw = {**stand_in, QUARANTINED: self.raw_envelope, "reason": problem}


def _routing_key(payload: Any) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("queue"), str):
        return str(payload["queue"])
    try:
        key = payload["properties"]["delivery_info"]["routing_key"]
    except (KeyError, TypeError, IndexError):
        return ""
    return key if isinstance(key, str) else ""


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    Message = Message
    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        # kombu builds a new redis.Redis for every publish, ack and unacked-index write,
        # and redis-py 8 copies some 170 response callbacks into each one: 65 us a time
        # here, twice per message in the worker and once per send. A client holds no
        # connection of its own (each command checks one out of the pool), so one per
        # pool does for all of them. The asynchronous (BRPOP) client is kombu's own.
        if self.connection.client is None:
            # The broker connection was closed under this channel (Redis went away and the
            # consumer is tearing down to reconnect) while kombu still restores or acks
            # through it. kombu would build a new pool from the closed connection's
            # parameters and fail with AttributeError, which nothing expects: the worker
            # died with "Unrecoverable error" (once in ten Redis restarts here). A
            # connection error is what the teardown ignores, and the worker reconnects.
            raise redis.exceptions.ConnectionError("the broker connection is closed")
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client

    def _brpop_read(self, **options: Any) -> bool:
        # kombu's own read, except that what was popped is never lost to a parse error:
        # it is handed over (quarantined if need be) like every other message.
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not reply:
                raise kombu_redis.Empty()
            dest, item = reply
            queue = (dest.decode() if isinstance(dest, bytes) else dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            self.connection._deliver(parse_envelope(item, queue), queue)
            return True
        finally:
            self._in_poll = None
            flush_reauth = getattr(self, "_flush_brpop_reauth", None)
            if flush_reauth is not None:
                flush_reauth()


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel
