"""Who is calling, and may they: FastAPI dependencies over ``console.accounts``.

The API takes only ``Authorization: Bearer``; the page takes only its session cookie, and
its forms carry a CSRF token. Keeping the two apart means no cookie ever authorises an API
call, so a page on another site cannot make a browser call the API on an admin's behalf.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from console.accounts import Principal, authenticate
from console.context import Console
from db.session import session_scope

SESSION_COOKIE = "automation_session"


def console(request: Request) -> Console:
    context: Console = request.app.state.console
    return context


ConsoleDep = Annotated[Console, Depends(console)]


def address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _refuse_locked(ctx: Console, remote: str | None, name: str | None = None) -> None:
    wait = ctx.throttle.locked_for(remote, name)
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed sign-ins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def bearer_principal(request: Request, ctx: ConsoleDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorised("send Authorization: Bearer <token> (`automation admin token`)")
    remote = address(request)
    _refuse_locked(ctx, remote)
    with session_scope() as session:
        principal = authenticate(session, token.strip(), dt.datetime.now(dt.UTC))
    if principal is None or principal.kind == "session":
        ctx.throttle.failed(remote)
        raise _unauthorised("the token is unknown, revoked or expired")
    return principal


def require(need: str) -> Callable[..., Principal]:
    """A dependency: the caller, if its role may ``need`` (read, admin, trigger)."""

    def check(principal: Annotated[Principal, Depends(bearer_principal)]) -> Principal:
        if not principal.may(need):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {principal.role!r} may not {need} (needs "
                + {
                    "read": "viewer or admin",
                    "admin": "admin",
                    "trigger": "admin or service",
                    "any": "a token",
                    "regenerate": "admin or a user token",
                    "workflows": "admin or a user token",
                    "ingest": "admin, service or a user token",
                }[need]
                + ")",
            )
        return principal

    return check


def csrf_token(session_token: str) -> str:
    """The CSRF token of a page session: derived from the session's secret, so it needs no
    storage, and a page on another site, which cannot read the cookie, cannot make it."""
    return hmac.new(session_token.encode(), b"csrf", hashlib.sha256).hexdigest()


def csrf_valid(session_token: str, submitted: str) -> bool:
    return hmac.compare_digest(csrf_token(session_token), submitted)
