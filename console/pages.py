"""The status page under ``/console``: sign-in, the whole status report on one page, and
an admin's buttons (trigger, pause and resume a schedule entry, retry a failed ledger row
or workflow execution, pause and resume media ingest and retry its failed jobs).

Server-rendered HTML and plain forms, no script: the page works in any browser and has
nothing to build. Handlers are thin: the session cookie and CSRF checks are
``signed_in``/``acting``, the work is the shared functions of ``tasks.automation`` and
``worker.schedules.store``, the data is ``page_data``.

Cookies. The session cookie holds a page session (an ``api_tokens`` row of kind
"session"); it is HttpOnly (no script reads it), SameSite=Strict (a page on another site
cannot send it) and Secure when ``settings.secure_cookies``. It never authorises the API,
which takes only bearer tokens, and an API token put in this cookie is refused. Every form
also carries a CSRF token derived from the session (``console.auth.csrf_token``); the
sign-in form, before any session exists, uses a double-submit cookie of its own. After an
action the browser is redirected (303) to the page, with the outcome in a flash cookie, so
a reload never repeats the action.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote

import kombu.exceptions
from fastapi import APIRouter, Form, Request, status
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from console import accounts
from console.auth import SESSION_COOKIE, ConsoleDep, address, csrf_token, csrf_valid
from console.context import Console
from db.models import BackgroundTask, DeadLetter, TaskRun, Workflow, WorkflowExecution
from db.session import session_scope
from tasks.automation import operations
from tasks.automation.status import (
    TRIGGER_ALIASES,
    UnknownTriggerError,
    collect_status,
    send_trigger,
    valid_triggers,
)
from tasks.ingest import control as ingest_control
from worker.errors import PermanentError
from worker.schedules.store import set_paused

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", tags=["status page"], include_in_schema=False)

# The sign-in form's double-submit cookie: a random value the form must echo (as its
# CSRF token), which a page on another site can neither read nor set.
LOGIN_COOKIE = "automation_login"
FLASH_COOKIE = "automation_flash"
# How many rows each list on the page shows.
RECENT_RUNS = 20
RECENT_FAILURES = 10
FAILED_LEDGER_ROWS = 10
DEAD_LETTERS = 5
FAILED_EXECUTIONS = 10
# Failed executions are looked for this far back: the window keeps the query on the
# created_at index however rare failures are among the executions.
FAILED_EXECUTIONS_WINDOW = dt.timedelta(days=7)
RUN_FAILURES = ("failure", "lost", "refused")
INGEST_HOURS = 12  # the ingest panel's table of hours
FAILED_INGEST_JOBS = 10
MAX_USERNAME = 64  # as accounts.create_admin allows
MAX_PASSWORD = 1024


# ---------------------------------------------------------------------------------------
# What the page shows, beyond collect_status: plain functions over a session.


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def _run(row: TaskRun) -> dict[str, Any]:
    return {
        "task_id": row.task_id,
        "task_name": row.task_name,
        "status": row.status,
        "queue": row.queue,
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "runtime_seconds": row.runtime_seconds,
        "worker": row.worker_host,
        "error": (row.error or "")[:300] or None,
    }


def recent_runs(session: Session, n: int = RECENT_RUNS) -> list[dict[str, Any]]:
    """The newest ``n`` task runs, newest first: an operator sees a triggered task finish."""
    rows = session.scalars(
        select(TaskRun).order_by(TaskRun.started_at.desc(), TaskRun.id.desc()).limit(n)
    )
    return [_run(row) for row in rows]


def recent_failures(session: Session, n: int = RECENT_FAILURES) -> list[dict[str, Any]]:
    """The newest ``n`` runs that failed, were lost with their worker or were refused."""
    rows = session.scalars(
        select(TaskRun)
        .where(TaskRun.status.in_(RUN_FAILURES))
        .order_by(TaskRun.started_at.desc(), TaskRun.id.desc())
        .limit(n)
    )
    return [_run(row) for row in rows]


def failed_ledger_rows(session: Session, n: int = FAILED_LEDGER_ROWS) -> list[dict[str, Any]]:
    """The newest ``n`` failed ledger rows: each can be retried from the page."""
    rows = session.scalars(
        select(BackgroundTask)
        .where(BackgroundTask.status == "failed")
        .order_by(BackgroundTask.completed_at.desc().nulls_last(), BackgroundTask.id.desc())
        .limit(n)
    )
    return [
        {
            "id": row.id,
            "task_type": row.task_type,
            "track_id": row.track_id,
            "attempts": row.attempts,
            "completed_at": _iso(row.completed_at),
            "error": (row.error_message or "")[:300] or None,
        }
        for row in rows
    ]


def failed_workflow_executions(
    session: Session, now: dt.datetime, n: int = FAILED_EXECUTIONS
) -> list[dict[str, Any]]:
    """The newest ``n`` workflow executions that failed in the last week, with their
    workflow's name: each can be retried from the page."""
    rows = session.execute(
        select(WorkflowExecution, Workflow.name)
        .join(Workflow, Workflow.id == WorkflowExecution.workflow_id)
        .where(
            WorkflowExecution.status == "failed",
            WorkflowExecution.created_at > now - FAILED_EXECUTIONS_WINDOW,
        )
        .order_by(WorkflowExecution.created_at.desc(), WorkflowExecution.id.desc())
        .limit(n)
    )
    return [
        {
            "id": row.id,
            "workflow_id": row.workflow_id,
            "workflow": name,
            "source": row.source,
            "job_id": row.job_id,
            "new_status": row.new_status,
            "attempts": row.attempts,
            "finished_at": _iso(row.finished_at),
            "error": (row.error or "")[:300] or None,
        }
        for row, name in rows
    ]


def workflows_summary(report: dict[str, Any]) -> dict[str, Any] | None:
    """The report's workflows section with every part the page shows present, or None
    without one (a report from before workflows, or one whose section failed)."""
    section = report.get("workflows")
    if not isinstance(section, dict):
        return None
    workflows = section.get("workflows")
    return {
        "executions_24h": section.get("executions_24h") or {},
        "oldest_pending": section.get("oldest_pending"),
        "oldest_pending_age_seconds": section.get("oldest_pending_age_seconds"),
        "unmatched_changes": section.get("unmatched_changes"),
        "oldest_unmatched": section.get("oldest_unmatched"),
        "active": workflows.get("active") if isinstance(workflows, dict) else None,
        "inactive": workflows.get("inactive") if isinstance(workflows, dict) else None,
    }


def latest_dead_letters(session: Session, n: int = DEAD_LETTERS) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(DeadLetter).order_by(DeadLetter.received_at.desc(), DeadLetter.id.desc()).limit(n)
    )
    return [
        {
            "received_at": _iso(row.received_at),
            "task_name": row.task_name,
            "queue": row.queue,
            "reason": row.reason[:300],
        }
        for row in rows
    ]


def age(seconds: float | None) -> str | None:
    """A wait as people read it: 45 s, 12 min 5 s, 3 h 07 min."""
    if seconds is None:
        return None
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def ingest_panel(session: Session, now: dt.datetime, settings: Any) -> dict[str, Any]:
    """Media ingest as Immich's job page has it: jobs per state (waiting is queued, active
    is processing), paused or running, the last hour, the oldest waiting job, the last
    ``INGEST_HOURS`` hours, and the newest failed jobs with their reasons."""
    stats = ingest_control.statistics(session, now, settings, hours=INGEST_HOURS)
    oldest = stats.oldest_queued
    return {
        "counts": {
            "waiting": stats.counts["queued"],
            "active": stats.counts["processing"],
            "done": stats.counts["done"],
            "failed": stats.counts["failed"],
        },
        "paused": stats.paused,
        "paused_at": _iso(stats.paused_at),
        "paused_by": stats.paused_by,
        "done_last_hour": stats.done_last_hour,
        "failed_last_hour": stats.failed_last_hour,
        "queued_last_hour": stats.queued_last_hour,
        "jobs_per_minute": stats.jobs_per_minute,
        "oldest_queued": None
        if oldest is None
        else {
            "id": oldest["id"],
            "object_path": oldest["object_path"],
            "age": age(oldest["waiting_seconds"]),
        },
        # Newest hour first, as the other lists run.
        "per_hour": [
            {**hour, "hour": hour["hour"].strftime("%Y-%m-%d %H:00")}
            for hour in reversed(stats.per_hour)
        ],
        "failed_jobs": [
            {
                **job,
                "finished_at": job["finished_at"] and job["finished_at"][:19],
                "error": (job["error"] or "")[:300] or None,
            }
            for job in ingest_control.list_jobs(session, status="failed", limit=FAILED_INGEST_JOBS)
        ],
        "controls": stats.controls,
    }


def page_data(session: Session, ctx: Console, now: dt.datetime) -> dict[str, Any]:
    """Everything the page shows: the status report and the lists beside it."""
    triggers = valid_triggers(ctx.celery)
    report = collect_status(session, ctx.celery, now, ctx.settings.redis_url)
    return {
        "report": report,
        "workflows": workflows_summary(report),
        "recent_runs": recent_runs(session),
        "recent_failures": recent_failures(session),
        "failed_ledger": failed_ledger_rows(session),
        "failed_executions": failed_workflow_executions(session, now),
        "dead_letters": latest_dead_letters(session),
        "ingest": ingest_panel(session, now, ctx.settings),
        # Buttons for "all" and the short names; every task name in a list beside them.
        "trigger_buttons": [name for name in triggers if name in TRIGGER_ALIASES],
        "trigger_names": triggers,
        "flower": ctx.settings.flower_link,
    }


# ---------------------------------------------------------------------------------------
# Cookies, sessions and CSRF.


def _set_cookie(ctx: Console, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=ctx.settings.secure_cookies,
    )


def _clear_cookie(ctx: Console, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path="/console", httponly=True, samesite="strict", secure=ctx.settings.secure_cookies
    )


def _to_login(ctx: Console) -> RedirectResponse:
    response = RedirectResponse("/console/login", status.HTTP_303_SEE_OTHER)
    _clear_cookie(ctx, response, SESSION_COOKIE)
    return response


def _back(ctx: Console, message: str, ok: bool = True) -> RedirectResponse:
    """To the page, with ``message`` shown once there."""
    response = RedirectResponse("/console", status.HTTP_303_SEE_OTHER)
    # Quoted: a cookie value may not hold spaces, commas or quotes as they stand.
    flash = quote(("ok:" if ok else "error:") + message[:500])
    _set_cookie(ctx, response, FLASH_COOKIE, flash, 60)
    return response


@dataclass(frozen=True)
class SignedIn:
    principal: accounts.Principal
    token: str  # the session cookie's value: the CSRF token derives from it


def signed_in(request: Request) -> SignedIn | None:
    """The page session the cookie names, if it is live: only kind "session" (an API
    token in the cookie is refused), unrevoked, unexpired, of an enabled user."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    with session_scope() as session:
        principal = accounts.authenticate(session, token, dt.datetime.now(dt.UTC))
    if principal is None or principal.kind != "session":
        return None
    return SignedIn(principal, token)


# Every page: no script, style or form target but our own; never inside another site's
# frame (a framed page could trick an admin into clicking its buttons); not cached, since
# it holds the status and the session's CSRF token.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}


def render(
    request: Request, name: str, context: dict[str, Any], code: int = status.HTTP_200_OK
) -> Response:
    return templates.TemplateResponse(
        request, name, context, status_code=code, headers=PAGE_HEADERS
    )


def _forbidden(request: Request, message: str) -> Response:
    return render(request, "forbidden.html", {"message": message}, status.HTTP_403_FORBIDDEN)


def acting(request: Request, ctx: Console, submitted: str) -> SignedIn | Response:
    """The admin behind a POST, or the response refusing it: the sign-in page when there is
    no live session; 403 when the CSRF token is missing or wrong, or the role may not act."""
    who = signed_in(request)
    if who is None:
        return _to_login(ctx)
    if not submitted or not csrf_valid(who.token, submitted):
        return _forbidden(request, "The form's CSRF token is missing or wrong: nothing was done.")
    if not who.principal.may("admin"):
        return _forbidden(request, f"Role {who.principal.role!r} may only look: nothing was done.")
    return who


# ---------------------------------------------------------------------------------------
# Sign-in and sign-out.


def _login_page(
    request: Request, ctx: Console, nonce: str, error: str | None, code: int
) -> Response:
    response = render(request, "login.html", {"csrf": csrf_token(nonce), "error": error}, code)
    _set_cookie(ctx, response, LOGIN_COOKIE, nonce, 3600)
    return response


@router.get("/login")
def login_form(request: Request, ctx: ConsoleDep) -> Response:
    if signed_in(request) is not None:
        return RedirectResponse("/console", status.HTTP_303_SEE_OTHER)
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    return _login_page(request, ctx, nonce, None, status.HTTP_200_OK)


@router.post("/login")
def login(
    request: Request,
    ctx: ConsoleDep,
    username: Annotated[str | None, Form()] = None,
    password: Annotated[str | None, Form()] = None,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    # Optional fields, so that a form missing one is a failed sign-in rather than a 422.
    username, password = username or "", password or ""
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not nonce or not csrf or not csrf_valid(nonce, csrf):
        # A fresh form (and cookie): this one came from elsewhere, or its cookie expired.
        return _login_page(
            request,
            ctx,
            secrets.token_urlsafe(32),
            "The form expired or did not come from this page; please sign in again.",
            status.HTTP_403_FORBIDDEN,
        )
    remote = address(request)
    username = username[: MAX_USERNAME + 1]  # a Redis key of the throttle: kept short
    wait = ctx.throttle.locked_for(remote, username)
    if wait:
        response = _login_page(
            request,
            ctx,
            nonce,
            f"Too many failed sign-ins; try again in {wait} s.",
            status.HTTP_429_TOO_MANY_REQUESTS,
        )
        response.headers["Retry-After"] = str(wait)
        return response
    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        # Over-long input is wrong without hashing it: argon2's cost grows with its length.
        fits = len(username) <= MAX_USERNAME and len(password) <= MAX_PASSWORD
        admin = accounts.check_password(session, username, password) if fits else None
        token = None
        if admin is not None:
            previous = request.cookies.get(SESSION_COOKIE)
            if previous:  # signing in again ends the session the browser had
                accounts.close_session(session, previous, now)
            token = accounts.open_session(session, admin, now, ctx.settings.api_session_hours)
            accounts.audit(session, admin.username, "login", admin.username, remote=remote)
    if token is None:
        ctx.throttle.failed(remote, username)
        return _login_page(
            request,
            ctx,
            nonce,
            "Wrong name or password.",
            status.HTTP_401_UNAUTHORIZED,
        )
    ctx.throttle.succeeded(username)
    response = RedirectResponse("/console", status.HTTP_303_SEE_OTHER)
    _set_cookie(ctx, response, SESSION_COOKIE, token, int(ctx.settings.api_session_hours * 3600))
    _clear_cookie(ctx, response, LOGIN_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, ctx: ConsoleDep, csrf: Annotated[str, Form()] = "") -> Response:
    who = signed_in(request)
    if who is None:
        return _to_login(ctx)
    if not csrf or not csrf_valid(who.token, csrf):
        return _forbidden(request, "The form's CSRF token is missing or wrong: nothing was done.")
    with session_scope() as session:
        accounts.close_session(session, who.token, dt.datetime.now(dt.UTC))
        accounts.audit(session, who.principal.name, "logout", remote=address(request))
    return _to_login(ctx)


# ---------------------------------------------------------------------------------------
# The page.


@router.get("")
def status_page(request: Request, ctx: ConsoleDep) -> Response:
    who = signed_in(request)
    if who is None:
        return _to_login(ctx)
    if not who.principal.may("read"):
        return _forbidden(request, f"Role {who.principal.role!r} may not read the status page.")
    with session_scope() as session:
        data = page_data(session, ctx, dt.datetime.now(dt.UTC))
    flash = request.cookies.get(FLASH_COOKIE)
    kind, _, message = unquote(flash or "").partition(":")
    response = render(
        request,
        "status.html",
        {
            **data,
            "user": who.principal,
            "admin": who.principal.may("admin"),
            "csrf": csrf_token(who.token),
            "flash": {"ok": kind == "ok", "message": message} if flash else None,
        },
    )
    if flash:
        _clear_cookie(ctx, response, FLASH_COOKIE)
    return response


@router.get("/console.css")
def stylesheet() -> FileResponse:
    return FileResponse(HERE / "static" / "console.css", media_type="text/css")


# ---------------------------------------------------------------------------------------
# An admin's actions: each recorded in the audit log, in the transaction that does it.


@router.post("/trigger")
def trigger(
    request: Request,
    ctx: ConsoleDep,
    task: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    who = acting(request, ctx, csrf)
    if isinstance(who, Response):
        return who
    if task not in valid_triggers(ctx.celery):
        return _back(ctx, f"Unknown task {task!r}.", ok=False)
    # On record first: the messages go only once the audit row has committed.
    with session_scope() as session:
        accounts.audit(session, who.principal.name, "trigger", task, remote=address(request))
    try:
        sent = send_trigger(ctx.celery, task)
    except UnknownTriggerError as exc:
        return _back(ctx, str(exc), ok=False)
    except kombu.exceptions.OperationalError as exc:
        return _back(ctx, f"The broker is unavailable, nothing was sent: {exc}", ok=False)
    names = ", ".join(f"{s['task']} ({s['task_id']})" for s in sent)
    return _back(ctx, f"Sent {names}.")


@router.post("/schedule/{entry}/{action}")
def pause_or_resume(
    request: Request,
    ctx: ConsoleDep,
    entry: str,
    action: str,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    who = acting(request, ctx, csrf)
    if isinstance(who, Response):
        return who
    if action not in ("pause", "resume"):
        return _back(ctx, f"Unknown action {action!r}.", ok=False)
    try:
        with session_scope() as session:
            set_paused(
                session, entry, action == "pause", who.principal.name, dt.datetime.now(dt.UTC)
            )
            accounts.audit(
                session, who.principal.name, f"schedule.{action}", entry, remote=address(request)
            )
    except PermanentError as exc:
        return _back(ctx, str(exc), ok=False)
    return _back(ctx, f"{entry}: {'paused' if action == 'pause' else 'resumed'}.")


@router.post("/retry/{kind}/{row_id}")
def retry(
    request: Request,
    ctx: ConsoleDep,
    kind: str,
    row_id: int,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Retry a failed ledger row or workflow execution (``operations.RETRY_KINDS``)."""
    who = acting(request, ctx, csrf)
    if isinstance(who, Response):
        return who
    try:
        # The dispatcher publishes the row once this transaction commits.
        with session_scope() as session:
            done = operations.retry(session, kind, row_id)
            accounts.audit(
                session,
                who.principal.name,
                "retry",
                f"{kind}:{row_id}",
                done,
                remote=address(request),
            )
    except PermanentError as exc:
        return _back(ctx, str(exc), ok=False)
    if kind == "workflow":
        return _back(
            ctx, f"Workflow execution {row_id} (workflow {done['workflow_id']}): pending again."
        )
    if kind == "ledger":
        return _back(ctx, f"Ledger row {row_id} ({done['task_type']}): pending again.")
    if kind == "ingest":
        step = done.get("resumes_at")
        return _back(
            ctx, f"Ingest job {row_id}: queued again" + (f", resuming at {step}." if step else ".")
        )
    # A kind added to operations.RETRY_KINDS later: its own answer, said plainly.
    return _back(ctx, f"{kind} {row_id}: {done.get('status', 'retried')} again.")


INGEST_ACTIONS = ("pause", "resume", "retry-failed")


@router.post("/ingest/{action}")
def ingest_action(
    request: Request,
    ctx: ConsoleDep,
    action: str,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Pause or resume media ingest, or put its failed jobs back in the queue."""
    who = acting(request, ctx, csrf)
    if isinstance(who, Response):
        return who
    if action not in INGEST_ACTIONS:
        return _back(ctx, f"Unknown action {action!r}.", ok=False)
    now = dt.datetime.now(dt.UTC)
    name = who.principal.name
    with session_scope() as session:
        if action == "pause":
            changed = ingest_control.pause(session, name, now)
            detail: dict[str, Any] = {"changed": changed}
            message = "Ingest paused." if changed else "Ingest was paused already."
        elif action == "resume":
            changed = ingest_control.resume(session, now)
            detail = {"changed": changed}
            message = "Ingest resumed." if changed else "Ingest was running already."
        else:
            requeued = ingest_control.retry_failed(session)
            detail = {"requeued": requeued}
            message = f"{len(requeued)} failed ingest job(s) queued again."
        # The same audit actions as the API's routes.
        action_name = "ingest." + action.replace("-", "_")
        accounts.audit(session, name, action_name, "ingest", detail, remote=address(request))
    return _back(ctx, message)
