"""The console's ASGI app: the API (``/api/automation/...``), health checks, ``/metrics``
and the status page, one process. ``automation api`` serves it with uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from console import api, health, metrics
from console.context import Console
from worker.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from worker import app as celery_app

        app.state.console = Console.build(settings, celery_app)
        try:
            yield
        finally:
            app.state.console.close()

    app = FastAPI(
        title="Music automation console",
        summary="Status, triggers, trending, smart playlists and schedules of the "
        "automation backend.",
        version="1",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(api.router)
    app.include_router(metrics.router)
    return app
