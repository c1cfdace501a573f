"""The production worker with one change, to measure a proposed fix before it is made:
``workflows.execute`` posts its webhooks through one ``httpx.Client`` per worker child
instead of building one per post.

Today ``tasks.workflows.tasks.execute`` builds its ``Runner`` without ``http``, so
``tasks.workflows.webhooks.post`` makes an ``httpx.Client()`` for every POST, and a client
builds an SSL context (the CA bundle read and parsed): about 19 ms of CPU here, more than
half of what a worker child spent per execution in py-spy's samples. This module
(bench/workflows.py's ``patched`` kind, and nowhere else) hands every Runner the child's
client; everything else is the production app.

    celery -A bench.workflows_patched worker --queues workflows
"""

from __future__ import annotations

import functools
import os
from typing import Any

import httpx

import tasks.workflows.tasks as workflow_tasks
from worker.celery_app import app

__all__ = ["app"]

_clients: dict[int, httpx.Client] = {}


def _client() -> httpx.Client:
    """This process's client (made after the fork: a pool's connections are not shared)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = httpx.Client()
    return _clients[pid]


_Runner = workflow_tasks.Runner  # type: ignore[attr-defined]


def _runner(*args: Any, **kwargs: Any) -> Any:
    return _Runner(*args, http=_client(), **kwargs)


workflow_tasks.Runner = functools.wraps(_Runner)(_runner)  # type: ignore[attr-defined,assignment]
