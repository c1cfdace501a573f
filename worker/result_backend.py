"""Celery's Redis result backend, with a run's result written in its journal round trip.

Stock, a run's end costs the child two round trips for the result alone (a GET, so that a
duplicate delivery never overwrites a success, then SET and PUBLISH) and one more for the
run journal's finish. Here the result a run ends with (success, failure, retry) is held on
the request and written by the journal's finish, in one Lua call that makes the same
"never overwrite a success" check in Redis (``worker.run_journal``). Everything else (a
state stored outside a run, progress updates, reading results, waiting for them) is
Celery's own code, unchanged.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

from worker.run_journal import PendingResult

# The states a run ends in, whose result can wait for the run's finish entry.
_RUN_END_STATES = frozenset({states.SUCCESS, states.FAILURE, states.RETRY})


class RunResultBackend(RedisBackend):  # type: ignore[misc]  # Celery ships no type hints
    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        if state not in _RUN_END_STATES or getattr(request, "run", None) is None:
            return super()._store_result(
                task_id, result, state, traceback=traceback, request=request, **kwargs
            )
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError(
                "value too large for Redis backend", state=state, task_id=task_id
            )
        expires = self.failure_expires if state == states.FAILURE else self.expires
        request.pending_result = PendingResult(
            key=self.get_key_for_task(task_id),
            value=value,
            expires_seconds=int(expires or 0),
        )
        return result
