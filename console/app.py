"""The console's ASGI app: the API (``/api/automation/...``), health checks, ``/metrics``
and the status page, one process. ``automation api`` serves it with uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import RedirectResponse

from console import api, health, metrics, pages
from console.accounts import Principal
from console.auth import require
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
        # Only the health checks answer without credentials: the OpenAPI document is served
        # below behind a token, and no docs page (it would fetch its scripts from a CDN).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(health.router)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(metrics.router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/console", status_code=303)

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(_: Annotated[Principal, Depends(require("read"))]) -> dict[str, Any]:
        return app.openapi()

    return app
