"""The HTTP API under ``/api/automation``: status and triggers, trending, smart
playlists, schedules, runs and dead letters. Bearer tokens only (``console.auth``)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/automation", tags=["automation"])
