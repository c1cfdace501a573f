"""The exceptions that decide how a failed run ends, importable without Celery or a database.

A task that raises ``PermanentError`` (or a subclass) fails once, clearly, and is never
retried: no later attempt can fix an unknown id or a bad argument.
"""

from __future__ import annotations


class PermanentError(Exception):
    """Input that no retry can fix (unknown id, bad argument): fail at once, clearly."""


class DeliveryLimitExceededError(PermanentError):
    """The message came back more often than MAX_DELIVERIES: its runs keep killing workers."""


class InvalidArgumentsError(PermanentError):
    """A task's arguments break its declared types or bounds; the message names each one."""


class DeferredError(Exception):
    """Not a failure: the run waits for something (the day's aggregation) and runs again
    later (``AutomationTask.defer``); the message says what it waits for."""
