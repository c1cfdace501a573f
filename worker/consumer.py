"""The worker's message consumer, extended so that no message is dropped unrecorded.

Celery logs and then discards a message it cannot run: undecodable or of a forbidden
content type (pickle), naming a task this worker does not know, or malformed. Each such
message is first kept whole in ``dead_letters``, where an operator can read it (and see
it counted in ``automation status``), then Celery's own handling goes on unchanged.
"""

from __future__ import annotations

from typing import Any

from celery.utils.log import get_logger
from celery.worker.consumer import Consumer

from db.session import get_engine
from worker import run_history

log = get_logger(__name__)


class RecordingConsumer(Consumer):  # type: ignore[misc]  # Celery ships no type hints
    def _keep(self, message: Any, reason: str) -> None:
        try:
            dead_letter_id = run_history.record_dead_letter(
                get_engine(),
                reason=reason,
                headers=getattr(message, "headers", None),
                body=getattr(message, "body", None),
                content_type=getattr(message, "content_type", None),
                queue=(getattr(message, "delivery_info", None) or {}).get("routing_key"),
                worker_host=self.hostname,
            )
        except Exception:
            log.error("could not keep a dead letter (%s); see the log above", reason, exc_info=True)
        else:
            log.error("message kept as dead letter %s: %s", dead_letter_id, reason)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._keep(message, f"undecodable message: {type(exc).__name__}: {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._keep(message, "not a task message (no task name in its headers)")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = (getattr(message, "headers", None) or {}).get("task")
        self._keep(message, f"unknown task name {name!r}: no task of that name is registered")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._keep(message, f"invalid task message: {type(exc).__name__}: {exc}")
        super().on_invalid_task(body, message, exc)
