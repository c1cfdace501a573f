"""The HTTP API under ``/api/automation``: status and triggers, trending, smart
playlists, schedules, runs, dead letters, the audit log, event workflows and media ingest.
Bearer tokens only (``console.auth``); every change is recorded in the audit log with who
and from where.

Handlers are plain ``def``: FastAPI runs them in its thread pool, where the synchronous
session and the Celery client belong. The one exception is the upload, which reads its
body as it arrives (``console.uploads``) and does its database work in the pool. Each
opens its own transaction, and a message is sent only after the transaction that records
its reason has committed.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy import select
from sqlalchemy.orm import Session

from console import uploads
from console.accounts import Principal, audit
from console.auth import ConsoleDep, address, require
from console.context import Console
from db.models import INGEST_STATUSES, PLAYLIST_TYPES, AdminAudit, DeadLetter, IngestJob, TaskRun
from db.queries import queries
from db.session import session_scope
from tasks.automation.operations import (
    NoSuchRowError,
    RetryError,
    change_entry,
    retry,
    run_entry_now,
)
from tasks.automation.status import (
    UnknownTriggerError,
    collect_status,
    public_task_names,
    resolve_trigger,
    send_trigger,
    valid_triggers,
)
from tasks.ingest import control
from tasks.ingest.jobs import SubmissionError, check_owner, pair, submit_files
from tasks.ingest.storage import StorageUnavailableError, open_bucket
from tasks.workflows import store as workflow_store
from tasks.workflows.definition import DefinitionError
from worker.arguments import validate_arguments
from worker.errors import InvalidArgumentsError
from worker.schedules.store import (
    UnknownEntryError,
    delete_entry,
    entry_changes,
    entry_runs,
    schedule_view,
    set_paused,
)
from worker.schedules.timing import MissedPolicy, ScheduleError, Timing
from worker.secrets import SecretCipher, SecretKeyError

router = APIRouter(prefix="/api/automation", tags=["automation"])
SQL = queries("console", "console")

Reader = Annotated[Principal, Depends(require("read"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Triggerer = Annotated[Principal, Depends(require("trigger"))]
Caller = Annotated[Principal, Depends(require("any"))]
Regenerator = Annotated[Principal, Depends(require("regenerate"))]
WorkflowEditor = Annotated[Principal, Depends(require("workflows"))]
PlaylistType = Literal["daily_mix", "discovery_weekly", "new_for_you", "forgotten_favorites"]
assert set(get_args(PlaylistType)) == set(PLAYLIST_TYPES)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _bad_request(message: str, **extra: Any) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, {"error": message, **extra})


def _record(
    request: Request, who: Principal, action: str, target: str, detail: dict[str, Any]
) -> None:
    with session_scope() as session:
        audit(session, who.name, action, target, detail, address(request))


class Sent(BaseModel):
    task: str
    task_id: str


class SentTasks(BaseModel):
    triggered: list[Sent]


# Status and triggers


class TriggerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(
        description="`all`, a short name (smart_playlists, trending, listening_stats, "
        "cleanup, enrichment, ...) or a public task name; GET lists them."
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="The task's arguments.")


@router.get("/trigger", summary="The status report and the triggerable tasks")
def status_and_triggers(ctx: ConsoleDep, _: Reader) -> dict[str, Any]:
    with session_scope() as session:
        report = collect_status(session, ctx.celery, _now(), ctx.settings.redis_url)
    return {"status": report, "tasks": valid_triggers(ctx.celery)}


def _check_trigger(celery_app: Any, name: str, kwargs: dict[str, Any]) -> list[str]:
    """The task names ``name`` stands for, once the name and arguments are known good."""
    try:
        names = resolve_trigger(celery_app, name)
    except UnknownTriggerError as exc:
        raise _bad_request(str(exc), valid=valid_triggers(celery_app)) from None
    if kwargs and len(names) > 1:
        raise _bad_request(f"{name!r} stands for several tasks: it takes no kwargs")
    for task in names:
        try:
            validate_arguments(task, celery_app.tasks[task].run, (), kwargs)
        except InvalidArgumentsError as exc:
            raise _bad_request(str(exc)) from None
    return names


@router.post(
    "/trigger",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Enqueue a task now (admin or service token)",
    responses={400: {"description": "Unknown task (the valid names are listed) or bad kwargs"}},
)
def trigger(body: TriggerRequest, request: Request, ctx: ConsoleDep, who: Triggerer) -> SentTasks:
    _check_trigger(ctx.celery, body.task, body.kwargs)
    sent = send_trigger(ctx.celery, body.task, body.kwargs)
    _record(request, who, "trigger", body.task, {"kwargs": body.kwargs, "sent": sent})
    return SentTasks(triggered=[Sent(**item) for item in sent])


# Trending


@router.get("/trending", summary="The trending tracks, hottest first")
def trending(_: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    with session_scope() as session:
        rows = session.execute(SQL["trending"], {"limit": limit}).mappings().all()
    return {
        "calculated_at": rows[0]["calculated_at"].isoformat() if rows else None,
        "tracks": [
            {
                "rank": row["rank"],
                "track": {
                    "id": row["track_id"],
                    "title": row["title"],
                    "genre": row["genre"],
                    "artist": {"id": row["artist_id"], "name": row["artist_name"]},
                    "album": None
                    if row["album_id"] is None
                    else {"id": row["album_id"], "title": row["album_title"]},
                },
                "trend_score": row["trend_score"],
                "play_count_24h": row["play_count_24h"],
                "play_count_7d": row["play_count_7d"],
                "unique_listeners_24h": row["unique_listeners_24h"],
                "unique_listeners_7d": row["unique_listeners_7d"],
            }
            for row in rows
        ],
    }


@router.post(
    "/trending", status_code=status.HTTP_202_ACCEPTED, summary="Recalculate trending (admin)"
)
def recalculate_trending(request: Request, ctx: ConsoleDep, who: Admin) -> SentTasks:
    sent = send_trigger(ctx.celery, "trending")
    _record(request, who, "trigger", "trending", {"sent": sent})
    return SentTasks(triggered=[Sent(**item) for item in sent])


# Smart playlists


def _whose(who: Principal, user_id: int | None) -> int:
    """The user whose playlists the caller may see: a listener's own; anyone's for an
    admin or viewer, who must say which."""
    if who.role == "user":
        assert who.user_id is not None
        if user_id is not None and user_id != who.user_id:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "a user token sees only its user")
        return who.user_id
    if not who.may("read"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {who.role!r} may not read")
    if user_id is None:
        raise _bad_request("give user_id: whose playlists?")
    return user_id


def _playlists(session: Session, user_id: int, kind: str | None) -> list[dict[str, Any]]:
    playlists: dict[int, dict[str, Any]] = {}
    for row in session.execute(
        SQL["user_playlists"], {"user_id": user_id, "type": kind, "now": _now()}
    ).mappings():
        playlist = playlists.setdefault(
            row["playlist_id"],
            {
                "id": row["playlist_id"],
                "type": row["playlist_type"],
                "generated_at": row["generated_at"].isoformat(),
                "expires_at": row["expires_at"].isoformat(),
                "cold_start": row["cold_start"],
                "tracks": [],
            },
        )
        if row["track_id"] is not None:
            playlist["tracks"].append(
                {
                    "position": row["position"],
                    "id": row["track_id"],
                    "title": row["title"],
                    "artist": row["artist_name"],
                }
            )
    return list(playlists.values())


@router.get("/smart-playlists", summary="A user's current smart playlists, with their tracks")
def smart_playlists(
    who: Caller,
    playlist_type: Annotated[PlaylistType | None, Query(alias="type")] = None,
    user_id: int | None = None,
) -> dict[str, Any]:
    owner = _whose(who, user_id)
    with session_scope() as session:
        return {"user_id": owner, "playlists": _playlists(session, owner, playlist_type)}


class RegenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    playlist_type: PlaylistType = Field(alias="playlistType")
    user_id: int | None = Field(default=None, alias="userId", description="Admins only.")


@router.post(
    "/smart-playlists",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Regenerate one of the caller's playlists (a user token, or an admin for userId)",
)
def regenerate_playlist(
    body: RegenerateRequest, request: Request, ctx: ConsoleDep, who: Regenerator
) -> SentTasks:
    owner = _whose(who, body.user_id)
    with session_scope() as session:
        exists = session.scalar(SQL["user_exists"], {"user_id": owner})
    if not exists:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user with id {owner}")
    kwargs = {"user_id": owner, "playlist_type": body.playlist_type}
    result = ctx.celery.send_task("playlists.generate", kwargs=kwargs)
    sent = [{"task": "playlists.generate", "task_id": result.id}]
    _record(request, who, "regenerate_playlist", f"user:{owner}", {**kwargs, "sent": sent})
    return SentTasks(triggered=[Sent(**item) for item in sent])


# Schedules


def _schedule_call(fn: Any) -> Any:
    try:
        return fn()
    except UnknownEntryError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except (ScheduleError, InvalidArgumentsError) as exc:
        raise _bad_request(str(exc)) from None


@router.get("/schedules", summary="Every entry: task, timing, paused, last and next run")
def schedules(_: Reader) -> list[dict[str, Any]]:
    with session_scope() as session:
        return schedule_view(session, _now())


class EntryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    cron: str | None = Field(default=None, description='"minute hour dom month dow"')
    every_seconds: int | None = Field(default=None, ge=1)
    timezone: str | None = Field(default=None, description="Default: TIMEZONE.")
    missed: MissedPolicy | None = None


def _entry(session: Session, name: str) -> dict[str, Any]:
    return next(e for e in schedule_view(session, _now()) if e["entry"] == name)


@router.put("/schedules/{name}", summary="Add or change an entry (admin)")
def set_schedule(
    name: str, body: EntryRequest, request: Request, ctx: ConsoleDep, who: Admin
) -> dict[str, Any]:
    if (body.cron is None) == (body.every_seconds is None):
        raise _bad_request("give exactly one of cron and every_seconds")

    def change() -> dict[str, Any]:
        timing = Timing(
            cron=body.cron,
            every_seconds=body.every_seconds,
            timezone=body.timezone or ctx.settings.timezone,
        )
        with session_scope() as session:
            change_entry(
                session,
                ctx.celery,
                name,
                task=body.task,
                timing=timing,
                actor=who.name,
                now=_now(),
                kwargs=body.kwargs,
                missed=body.missed,
            )
            audit(session, who.name, "schedule.set", name, body.model_dump(), address(request))
            return _entry(session, name)

    result: dict[str, Any] = _schedule_call(change)
    return result


def _pause(name: str, paused: bool, request: Request, who: Principal) -> dict[str, Any]:
    def change() -> dict[str, Any]:
        with session_scope() as session:
            set_paused(session, name, paused, who.name, _now())
            action = "schedule.pause" if paused else "schedule.resume"
            audit(session, who.name, action, name, {}, address(request))
            return _entry(session, name)

    result: dict[str, Any] = _schedule_call(change)
    return result


@router.post("/schedules/{name}/pause", summary="Stop an entry firing (admin)")
def pause_schedule(name: str, request: Request, who: Admin) -> dict[str, Any]:
    return _pause(name, True, request, who)


@router.post("/schedules/{name}/resume", summary="Fire an entry again from its next slot (admin)")
def resume_schedule(name: str, request: Request, who: Admin) -> dict[str, Any]:
    return _pause(name, False, request, who)


@router.post(
    "/schedules/{name}/run",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Run an entry's task now (admin)",
)
def run_schedule(name: str, request: Request, ctx: ConsoleDep, who: Admin) -> SentTasks:
    task, result = _schedule_call(
        lambda: run_entry_now(session_scope, ctx.celery, name, who.name, _now())
    )
    _record(request, who, "schedule.run", name, {"task_id": result.id})
    return SentTasks(triggered=[Sent(task=task, task_id=result.id)])


@router.delete("/schedules/{name}", summary="Delete an operator's entry (admin)")
def delete_schedule(name: str, request: Request, who: Admin) -> dict[str, str]:
    def change() -> None:
        with session_scope() as session:
            delete_entry(session, name, who.name, _now())
            audit(session, who.name, "schedule.delete", name, {}, address(request))

    _schedule_call(change)
    return {"deleted": name}


@router.get("/schedules/{name}/history", summary="An entry's last runs and changes")
def schedule_history(
    name: str,
    _: Reader,
    runs: Annotated[int, Query(ge=1, le=500)] = 20,
    changes: Annotated[int, Query(ge=1, le=500)] = 20,
) -> dict[str, Any]:
    with session_scope() as session:
        trail = entry_changes(session, name, changes)
        try:
            history = entry_runs(session, name, runs)
        except UnknownEntryError:
            if not trail:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no entry {name!r}") from None
            history = []  # deleted: its trail remains
    return {"runs": history, "changes": trail}


# Runs, dead letters, retries, the audit log: newest first, a page at a time (``before``
# is the last id of the previous page; ids only grow, so pages never shift or repeat).

Limit = Annotated[int, Query(ge=1, le=500)]


def _newest_first(model: Any, limit: int, before: int | None, *where: Any) -> Any:
    """A page of ``model``'s rows, newest id first, below ``before`` when given."""
    if before is not None:
        where = (*where, model.id < before)
    return select(model).where(*where).order_by(model.id.desc()).limit(limit)


def _page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    return {"items": items, "next_before": items[-1]["id"] if len(items) == limit else None}


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@router.get("/runs", summary="Task runs, newest first, optionally of one task or status")
def runs(
    _: Reader,
    task: str | None = None,
    run_status: Annotated[str | None, Query(alias="status")] = None,
    limit: Limit = 50,
    before: int | None = None,
) -> dict[str, Any]:
    where = [
        *([TaskRun.task_name == task] if task is not None else []),
        *([TaskRun.status == run_status] if run_status is not None else []),
    ]
    query = _newest_first(TaskRun, limit, before, *where)
    with session_scope() as session:
        items = [
            {
                "id": run.id,
                "task_id": run.task_id,
                "task": run.task_name,
                "status": run.status,
                "queue": run.queue,
                "worker": run.worker_host,
                "started_at": _iso(run.started_at),
                "finished_at": _iso(run.finished_at),
                "runtime_seconds": run.runtime_seconds,
                "retries": run.retries,
                "error": run.error,
                "result": run.result_summary,
            }
            for run in session.scalars(query)
        ]
    return _page(items, limit)


@router.get("/dead-letters", summary="Messages no worker could run, newest first")
def dead_letters(_: Reader, limit: Limit = 50, before: int | None = None) -> dict[str, Any]:
    query = _newest_first(DeadLetter, limit, before)
    with session_scope() as session:
        items = [
            {
                "id": letter.id,
                "received_at": _iso(letter.received_at),
                "reason": letter.reason,
                "task_id": letter.task_id,
                "task": letter.task_name,
                "queue": letter.queue,
                "worker": letter.worker_host,
                "body": letter.body,
            }
            for letter in session.scalars(query)
        ]
    return _page(items, limit)


@router.post(
    "/retry/{kind}/{row_id}",
    summary="Retry a failed row (admin); kind: ledger (a background task) or workflow (an "
    "execution: actions that had succeeded are not run again)",
)
def retry_row(kind: str, row_id: int, request: Request, who: Admin) -> dict[str, Any]:
    try:
        with session_scope() as session:
            done = retry(session, kind, row_id)
            audit(session, who.name, "retry", f"{kind}:{row_id}", done, address(request))
    except NoSuchRowError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except RetryError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return done


@router.get("/audit", summary="The audit log, newest first (admin)")
def audit_log(_: Admin, limit: Limit = 50, before: int | None = None) -> dict[str, Any]:
    query = _newest_first(AdminAudit, limit, before)
    with session_scope() as session:
        items = [
            {
                "id": row.id,
                "at": _iso(row.at),
                "actor": row.actor,
                "action": row.action,
                "target": row.target,
                "detail": row.detail,
                "remote": row.remote,
            }
            for row in session.scalars(query)
        ]
    return _page(items, limit)


# Workflows (``tasks.workflows``): an admin or a viewer sees every one, a user token only its
# user's. Someone else's workflow is "not found" to a user token, never "forbidden", which
# would tell that it exists.


def _owner(who: Principal) -> int | None:
    """Whose workflows the caller may see and change: a user token its user's; an admin or a
    viewer anyone's (None). What a role may do at all is the route's ``require``."""
    if who.role == "user":
        assert who.user_id is not None
        return who.user_id
    if not who.may("read"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {who.role!r} may not read")
    return None


def _workflow_call(fn: Any) -> Any:
    try:
        return fn()
    except workflow_store.UnknownWorkflowError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except DefinitionError as exc:
        raise _bad_request(str(exc)) from None
    except SecretKeyError as exc:  # TOKEN_ENCRYPTION_KEY missing or replaced: ours to fix
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None


def _cipher(ctx: Console) -> SecretCipher:
    result: SecretCipher = _workflow_call(lambda: SecretCipher.from_settings(ctx.settings))
    return result


@router.get("/workflows", summary="Workflows (a user token: its user's)")
def workflows(who: Caller) -> dict[str, Any]:
    owner = _owner(who)
    with session_scope() as session:
        return {"workflows": workflow_store.listing(session, user_id=owner)}


@router.post(
    "/workflows",
    status_code=status.HTTP_201_CREATED,
    summary="Add a workflow (admin, or a user token for its own user); answers its signing "
    "secret, this once",
    responses={
        400: {"description": "The workflow file is not valid; the error names the bad part"},
        403: {"description": "A user token naming another user"},
    },
)
def create_workflow(
    body: Annotated[
        dict[str, Any],
        Body(description="The workflow file (tasks/workflows/definition.py shows one)."),
    ],
    request: Request,
    ctx: ConsoleDep,
    who: WorkflowEditor,
) -> dict[str, Any]:
    data = dict(body)
    if who.role == "user":
        if data.get("user_id") not in (None, who.user_id):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "a user token makes workflows only for its own user"
            )
        data["user_id"] = who.user_id
    cipher = _cipher(ctx)

    def change() -> dict[str, Any]:
        with session_scope() as session:
            workflow_id, secret = workflow_store.create(
                session,
                data,
                created_by=who.name,
                known_tasks=public_task_names(ctx.celery),
                allowed_hosts=ctx.settings.webhook_hosts,
                cipher=cipher,
                self_service=who.role == "user",
            )
            workflow = workflow_store.get(session, workflow_id)
            # The stored definition: the secret, if the file gave one, is not in it.
            audit(
                session,
                who.name,
                "workflow.create",
                f"workflow:{workflow_id}",
                workflow.definition,
                address(request),
            )
            return {
                "workflow": workflow_store.describe(session, workflow, _now()),
                "secret": secret,
            }

    result: dict[str, Any] = _workflow_call(change)
    return result


@router.get("/workflows/{workflow_id}", summary="A workflow and its last day's executions")
def workflow(workflow_id: int, who: Caller) -> dict[str, Any]:
    owner = _owner(who)

    def read() -> dict[str, Any]:
        with session_scope() as session:
            found = workflow_store.get(session, workflow_id, user_id=owner)
            return workflow_store.describe(session, found, _now())

    result: dict[str, Any] = _workflow_call(read)
    return result


def _set_active(workflow_id: int, active: bool, request: Request, who: Principal) -> dict[str, Any]:
    owner = _owner(who)

    def change() -> dict[str, Any]:
        with session_scope() as session:
            workflow_store.get(session, workflow_id, user_id=owner)
            changed = workflow_store.set_active(session, workflow_id, active)
            action = "workflow.enable" if active else "workflow.disable"
            audit(session, who.name, action, f"workflow:{workflow_id}", {}, address(request))
            return workflow_store.describe(session, changed, _now())

    result: dict[str, Any] = _workflow_call(change)
    return result


@router.post(
    "/workflows/{workflow_id}/enable",
    summary="Let a workflow fire again (admin, or the owner's user token)",
)
def enable_workflow(workflow_id: int, request: Request, who: WorkflowEditor) -> dict[str, Any]:
    return _set_active(workflow_id, True, request, who)


@router.post(
    "/workflows/{workflow_id}/disable",
    summary="Stop a workflow firing (admin, or the owner's user token)",
)
def disable_workflow(workflow_id: int, request: Request, who: WorkflowEditor) -> dict[str, Any]:
    return _set_active(workflow_id, False, request, who)


class DryRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: int = Field(description="A job of the workflow's source (and of its user, if any).")


@router.post(
    "/workflows/{workflow_id}/test",
    summary="What the workflow would do if the job changed to its status now: which "
    "conditions hold, what each action would send. Nothing is sent or written. (admin, or "
    "the owner's user token)",
)
def try_workflow(
    workflow_id: int, body: DryRunRequest, ctx: ConsoleDep, who: WorkflowEditor
) -> dict[str, Any]:
    owner = _owner(who)
    cipher = _cipher(ctx)

    def dry_run() -> dict[str, Any]:
        with session_scope() as session:
            found = workflow_store.get(session, workflow_id, user_id=owner)
            secret = cipher.decrypt(found.secret_encrypted)
            return workflow_store.dry_run(session, found, body.job_id, _now(), secret)

    result: dict[str, Any] = _workflow_call(dry_run)
    return result


@router.get(
    "/workflows/{workflow_id}/logs",
    summary="A workflow's executions, skips with their reasons included, newest first",
)
def workflow_logs(
    workflow_id: int, who: Caller, limit: Limit = 50, before: int | None = None
) -> dict[str, Any]:
    owner = _owner(who)

    def read() -> dict[str, Any]:
        with session_scope() as session:
            workflow_store.get(session, workflow_id, user_id=owner)
            items = workflow_store.logs(session, workflow_id, limit=limit, before=before)
        return _page(items, limit)

    result: dict[str, Any] = _workflow_call(read)
    return result


# Media ingest (``tasks.ingest``): uploads become jobs, which the ingest workers turn into
# tracks; an admin pauses, resumes and tunes the pipeline. A user token uploads as its own
# user and sees only its own jobs (someone else's is "not found", as with workflows).

Submitter = Annotated[Principal, Depends(require("ingest"))]
IngestStatus = Literal["queued", "processing", "done", "failed"]
assert set(get_args(IngestStatus)) == set(INGEST_STATUSES)
MAX_UPLOAD_FILES = 100
UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Audio files (and covers named as they are: "
                            "song.flac with song.jpg), or an image with track_id.",
                        },
                        "cover": {
                            "type": "string",
                            "format": "binary",
                            "description": "A cover for the one audio file sent.",
                        },
                        "user_id": {
                            "type": "integer",
                            "description": "Whose upload (admin and service tokens; a user "
                            "token uploads as its user).",
                        },
                        "track_id": {
                            "type": "integer",
                            "description": "With an image: the track it is the new cover of.",
                        },
                    },
                }
            }
        },
    }
}


@dataclass(frozen=True)
class _Submission:
    files: list[Path]
    cover: Path | None
    user_id: int | None
    track_id: int | None
    total_bytes: int


def _whole_number(fields: dict[str, str], name: str) -> int | None:
    value = fields.get(name)
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise _bad_request(f"{name}: a whole number, not {value!r}") from None


def _submission(who: Principal, received: uploads.Received) -> _Submission:
    """What was sent, once the caller may send it as it stands."""
    files = received.files.get("files", [])
    covers = received.files.get("cover", [])
    if not files:
        raise _bad_request("send one or more files as the multipart field `files`")
    if len(covers) > 1:
        raise _bad_request("one cover at most")
    if covers and len(pair([p.name for p in files])) != 1:
        raise _bad_request("cover goes with exactly one audio file")
    user_id = _whole_number(received.fields, "user_id")
    if who.role == "user":
        if user_id not in (None, who.user_id):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "a user token uploads only as its own user"
            )
        user_id = who.user_id
    return _Submission(
        files=files,
        cover=covers[0] if covers else None,
        user_id=user_id,
        track_id=_whole_number(received.fields, "track_id"),
        total_bytes=received.total_bytes,
    )


def _listener_s_track(session: Session, user_id: int, track_id: int) -> bool:
    """Whether the track came from one of the user's own uploads: a listener may give a
    new cover only to such a track, not to anyone's in the catalogue."""
    return (
        session.scalar(
            select(IngestJob.id)
            .where(
                IngestJob.track_id == track_id,
                IngestJob.user_id == user_id,
                IngestJob.kind == "audio",
                IngestJob.status == "done",
            )
            .limit(1)
        )
        is not None
    )


def _submit(request: Request, ctx: Console, who: Principal, sent: _Submission) -> list[int]:
    """The jobs, created in one transaction with their audit row."""
    settings = ctx.settings
    now = _now()
    with session_scope() as session:
        try:
            check_owner(session, sent.user_id, sent.track_id)
        except SubmissionError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        if (
            who.role == "user"
            and sent.track_id is not None
            and not _listener_s_track(session, sent.user_id or 0, sent.track_id)
        ):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"track {sent.track_id} is not from this user's uploads: a user token gives a "
                "cover only to its own tracks",
            )
        try:
            ids = submit_files(
                session,
                open_bucket(settings),
                sent.files,
                today=now.date(),
                user_id=sent.user_id,
                track_id=sent.track_id,
                cover=sent.cover,
                via="api",
                max_attempts=settings.ingest_max_attempts,
            )
        except SubmissionError as exc:
            raise _bad_request(str(exc)) from None
        except StorageUnavailableError as exc:  # ours to fix, not the caller's
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
        audit(
            session,
            who.name,
            "ingest.submit",
            "ingest" if sent.user_id is None else f"user:{sent.user_id}",
            {
                "job_ids": ids,
                "files": [p.name for p in sent.files],
                "cover": sent.cover.name if sent.cover else None,
                "bytes": sent.total_bytes,
                "user_id": sent.user_id,
                "track_id": sent.track_id,
            },
            address(request),
        )
    return ids


@router.post(
    "/ingest",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload media for ingest (multipart: files, cover, user_id, track_id); answers "
    "the jobs' ids. Admin or service for any user, a user token as its own user.",
    openapi_extra=UPLOAD_FORM,
    responses={
        400: {"description": "No files, a malformed body, an unknown field or a bad id"},
        403: {"description": "A user token naming another user, or a track not its own"},
        404: {"description": "No such user or track"},
        413: {"description": "A file over INGEST_MAX_BYTES, or too many files: nothing kept"},
        415: {"description": "Not multipart/form-data"},
    },
)
async def submit_ingest(request: Request, ctx: ConsoleDep, who: Submitter) -> dict[str, Any]:
    # Streamed to a scratch folder beside the data (not the system's /tmp, which may be a
    # small tmpfs), then copied into the bucket; the folder goes whatever happens.
    scratch_root = ctx.settings.data_dir / "ingest-uploads"
    scratch_root.mkdir(parents=True, exist_ok=True)
    limits = uploads.Limits(
        max_file_bytes=ctx.settings.ingest_max_bytes,
        max_files=MAX_UPLOAD_FILES,
        file_fields=("files", "cover"),
        text_fields=("user_id", "track_id"),
    )
    scratch = Path(tempfile.mkdtemp(prefix="upload-", dir=scratch_root))
    try:
        try:
            received = await uploads.receive(
                request.stream(), request.headers.get("content-type", ""), scratch, limits
            )
        except uploads.UploadRefusedError as exc:
            detail: Any = {"error": str(exc)} if exc.status == 400 else str(exc)
            raise HTTPException(exc.status, detail) from None
        sent = _submission(who, received)
        ids = await run_in_threadpool(_submit, request, ctx, who, sent)
    finally:
        # In the pool: removing a hundred large files is no work for the event loop.
        await run_in_threadpool(shutil.rmtree, scratch, ignore_errors=True)
    return {"job_ids": ids, "user_id": sent.user_id}


def _controls_json(session: Session, ctx: Console) -> dict[str, Any]:
    live = control.effective(session, ctx.settings)
    return {k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in live.items()}


def _ingest_control(
    request: Request, ctx: Console, who: Principal, action: str, change: Any
) -> dict[str, Any]:
    """An admin's change to the pipeline, in one transaction with its audit row; the
    change's own result is what is audited, and answered with the controls as they now
    are."""
    try:
        with session_scope() as session:
            done: dict[str, Any] = change(session)
            audit(session, who.name, f"ingest.{action}", "ingest", done, address(request))
            return {**done, "controls": _controls_json(session, ctx)}
    except control.ControlError as exc:
        raise _bad_request(str(exc)) from None


@router.get(
    "/ingest",
    summary="The ingest pipeline: jobs per state, the last hour (done, failed, queued, jobs "
    "per minute), the oldest queued job, per-hour counts, paused or running, the controls",
)
def ingest_statistics(
    ctx: ConsoleDep, _: Reader, hours: Annotated[int, Query(ge=1, le=168)] = 24
) -> dict[str, Any]:
    with session_scope() as session:
        return control.statistics(session, _now(), ctx.settings, hours=hours).as_json()


@router.get("/ingest/jobs", summary="Ingest jobs, newest first (a user token: its own)")
def ingest_jobs(
    who: Caller,
    job_status: Annotated[IngestStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    before: int | None = None,
) -> dict[str, Any]:
    owner = _owner(who)
    with session_scope() as session:
        items = control.list_jobs(
            session, status=job_status, before=before, limit=limit, user_id=owner
        )
    return _page(items, limit)


@router.get(
    "/ingest/jobs/{job_id}",
    summary="One ingest job with what each finished step recorded (a user token: its own)",
)
def ingest_job(job_id: int, who: Caller) -> dict[str, Any]:
    owner = _owner(who)
    with session_scope() as session:
        try:
            job = control.describe_job(session, job_id)
        except LookupError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    if owner is not None and job["user_id"] != owner:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ingest job {job_id}")
    return job


@router.post(
    "/ingest/pause",
    summary="Stop new ingest jobs from starting; running ones finish, queued ones wait (admin)",
)
def pause_ingest(request: Request, ctx: ConsoleDep, who: Admin) -> dict[str, Any]:
    return _ingest_control(
        request,
        ctx,
        who,
        "pause",
        lambda session: {"changed": control.pause(session, who.name, _now())},
    )


@router.post("/ingest/resume", summary="Start queued ingest jobs again (admin)")
def resume_ingest(request: Request, ctx: ConsoleDep, who: Admin) -> dict[str, Any]:
    return _ingest_control(
        request, ctx, who, "resume", lambda session: {"changed": control.resume(session, _now())}
    )


@router.post(
    "/ingest/retry-failed",
    summary="Every failed ingest job back to the queue, resuming at the step that failed "
    "(admin; one job: POST /retry/ingest/{id})",
)
def retry_failed_ingest(request: Request, ctx: ConsoleDep, who: Admin) -> dict[str, Any]:
    return _ingest_control(
        request,
        ctx,
        who,
        "retry_failed",
        lambda session: {"requeued": control.retry_failed(session)},
    )


@router.post(
    "/ingest/clear-failed",
    summary="Delete every failed ingest job (their uploads stay in the bucket) (admin)",
)
def clear_failed_ingest(request: Request, ctx: ConsoleDep, who: Admin) -> dict[str, Any]:
    return _ingest_control(
        request,
        ctx,
        who,
        "clear_failed",
        lambda session: {"cleared": control.clear_failed(session)},
    )


ControlValue = StrictInt | Literal["default"]


class IngestConfigRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: ControlValue | None = Field(
        default=None, description="Jobs in flight at most; 'default': INGEST_BATCH_SIZE."
    )
    rate_per_minute: ControlValue | None = Field(
        default=None, description="Jobs started per minute at most; 'default': the setting."
    )
    concurrency: dict[str, ControlValue] | None = Field(
        default=None,
        description="Per step (probe, analysis, images, publish): jobs in it at once; "
        "'default': the setting.",
    )


@router.put(
    "/ingest/config",
    summary="Change the live batch size, rate or per-step concurrency; every worker takes it "
    "at once (admin)",
    responses={400: {"description": "Nothing to change, an unknown step or a value below 1"}},
)
def configure_ingest(
    body: IngestConfigRequest, request: Request, ctx: ConsoleDep, who: Admin
) -> dict[str, Any]:
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise _bad_request("give batch_size, rate_per_minute or concurrency")

    def change(session: Session) -> dict[str, Any]:
        control.configure(session, _now(), **changes)
        return {"set": changes}

    return _ingest_control(request, ctx, who, "config", change)
