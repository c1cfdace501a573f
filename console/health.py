"""``/healthz`` (the process answers) and ``/readyz`` (it can do its job: PostgreSQL and
Redis answer, and every queue has a live worker). The only routes without credentials:
a load balancer or an orchestrator asks them, and they say nothing an attacker could use
beyond what is up."""

from __future__ import annotations

from typing import Any

import redis
import sqlalchemy.exc
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from console.auth import ConsoleDep
from db.session import session_scope
from worker import liveness
from worker.queues import QUEUE_NAMES

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def readiness(ctx: Any) -> dict[str, Any]:
    """Each check's outcome: True, or why not."""
    checks: dict[str, Any] = {}
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = True
    except sqlalchemy.exc.DBAPIError as exc:
        checks["database"] = f"unavailable: {str(exc.orig or exc).splitlines()[0]}"
    try:
        ctx.redis.ping()
        served = {q for queues in liveness.worker_queues(ctx.redis).values() for q in queues}
        checks["redis"] = True
        missing = [queue for queue in QUEUE_NAMES if queue not in served]
        checks["workers"] = True if not missing else f"no live worker for {', '.join(missing)}"
    except redis.RedisError as exc:
        checks["redis"] = f"unavailable: {exc}"
        checks["workers"] = "unknown (Redis, which holds the heartbeats, is unavailable)"
    return checks


@router.get("/readyz")
def readyz(ctx: ConsoleDep) -> JSONResponse:
    checks = readiness(ctx)
    ready = all(value is True for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
