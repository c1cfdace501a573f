"""Admin users, their credentials, and the audit log: plain functions over a session, used
by the CLI (``automation admin``), the API and the page alike.

A token is ``mat_`` and 32 random bytes. Only its SHA-256 digest is stored: with that much
entropy a fast digest cannot be reversed, and a lookup is one indexed equality. The prefix
(the first characters) is kept to tell tokens apart in a listing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import ROLES, AdminAudit, AdminUser, ApiToken, User
from worker.errors import PermanentError

# Marks a string as one of our tokens (secret scanners and people can tell); not a secret.
TOKEN_PREFIX = "mat_"  # nosec B105
SHOWN_PREFIX = 12
# A token's use is written back at most this often: a busy dashboard polling every second
# would otherwise be a row update per request.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)

_hasher = PasswordHasher()
# Checked when the name is unknown, so a wrong name costs as long as a wrong password and
# the time taken does not tell which names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(PermanentError):
    """A bad admin request: unknown user, name taken, bad role. The message says which."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin user (by a token or a page session) or a listener."""

    name: str  # for the audit log: the admin's username, or "user:<id>"
    role: str  # admin, viewer, service; "user" for a listener's token
    token_id: int
    kind: str  # api, session, user
    admin_user_id: int | None = None
    user_id: int | None = None

    def may(self, need: str) -> bool:
        """``read``: the reports; ``admin``: change things; ``trigger``: enqueue tasks;
        ``regenerate``: rebuild a playlist (a listener their own); ``workflows``: make
        and change workflows (a listener their own); ``ingest``: upload media (a listener
        as themselves); ``any``: any valid credential (the route then decides, as for whose
        playlists)."""
        allowed = {
            "any": {"admin", "viewer", "service", "user"},
            "ingest": {"admin", "service", "user"},
            "regenerate": {"admin", "user"},
            "workflows": {"admin", "user"},
            "read": {"admin", "viewer"},
            "admin": {"admin"},
            "trigger": {"admin", "service"},
        }
        return self.role in allowed[need]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _admin(session: Session, username: str) -> AdminUser:
    admin = session.scalar(select(AdminUser).where(AdminUser.username == username))
    if admin is None:
        raise AccountError(f"no admin user {username!r} (`automation admin create` adds one)")
    return admin


def create_admin(session: Session, username: str, role: str) -> AdminUser:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    if not username or not username.isprintable() or len(username) > 64:
        raise AccountError("a username is 1 to 64 printable characters")
    if session.scalar(select(AdminUser.id).where(AdminUser.username == username)):
        raise AccountError(f"admin user {username!r} exists already")
    admin = AdminUser(username=username, role=role)
    session.add(admin)
    session.flush()
    return admin


def set_role(session: Session, username: str, role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    _admin(session, username).role = role


def set_password(session: Session, username: str, password: str) -> None:
    if len(password) < 12:
        raise AccountError("a password is at least 12 characters")
    _admin(session, username).password_hash = _hasher.hash(password)


def disable_admin(session: Session, username: str, now: dt.datetime) -> int:
    """Disable ``username`` and revoke every credential it holds; how many were revoked."""
    admin = _admin(session, username)
    admin.disabled_at = now
    return _revoke(session, ApiToken.admin_user_id == admin.id, now)


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _store(session: Session, token: str, **owner: Any) -> ApiToken:
    row = ApiToken(digest=token_digest(token), prefix=token[:SHOWN_PREFIX], **owner)
    session.add(row)
    session.flush()
    return row


def issue_token(session: Session, username: str) -> tuple[str, ApiToken]:
    """A new API token for ``username``: the token (shown once, never stored) and its row."""
    admin = _admin(session, username)
    if admin.disabled_at is not None:
        raise AccountError(f"admin user {username!r} is disabled")
    token = _new_token()
    return token, _store(session, token, kind="api", admin_user_id=admin.id)


def issue_user_token(session: Session, user_id: int) -> tuple[str, ApiToken]:
    """A listener's own token: it reads and regenerates only that user's playlists."""
    if session.get(User, user_id) is None:
        raise AccountError(f"no user with id {user_id}")
    token = _new_token()
    return token, _store(session, token, kind="user", user_id=user_id)


def _revoke(session: Session, where: Any, now: dt.datetime) -> int:
    result = session.execute(
        update(ApiToken).where(where, ApiToken.revoked_at.is_(None)).values(revoked_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def revoke_token(session: Session, given: str, now: dt.datetime) -> int:
    """Revoke the token ``given`` whole, or the token(s) whose shown prefix starts with
    ``given``; how many."""
    if len(given) < len(TOKEN_PREFIX) + 4:
        raise AccountError("give at least the first 8 characters of the token")
    if len(given) > SHOWN_PREFIX:
        # More than the prefix: the whole token, or a pasted stretch of one.
        return _revoke(
            session,
            (ApiToken.digest == token_digest(given)) | (ApiToken.prefix == given[:SHOWN_PREFIX]),
            now,
        )
    return _revoke(session, ApiToken.prefix.startswith(given, autoescape=True), now)


def revoke_all(session: Session, username: str, now: dt.datetime) -> int:
    return _revoke(session, ApiToken.admin_user_id == _admin(session, username).id, now)


def authenticate(session: Session, token: str, now: dt.datetime) -> Principal | None:
    """The principal ``token`` stands for, or None (unknown, revoked, expired, disabled)."""
    row = session.execute(
        select(ApiToken, AdminUser)
        .outerjoin(AdminUser, AdminUser.id == ApiToken.admin_user_id)
        .where(ApiToken.digest == token_digest(token), ApiToken.revoked_at.is_(None))
    ).one_or_none()
    if row is None:
        return None
    credential, admin = row
    if credential.expires_at is not None and credential.expires_at <= now:
        return None
    if admin is not None and admin.disabled_at is not None:
        return None
    if credential.last_used_at is None or now - credential.last_used_at > LAST_USED_RESOLUTION:
        credential.last_used_at = now
    if admin is None:
        return Principal(
            name=f"user:{credential.user_id}",
            role="user",
            token_id=credential.id,
            kind=credential.kind,
            user_id=credential.user_id,
        )
    return Principal(
        name=admin.username,
        role=admin.role,
        token_id=credential.id,
        kind=credential.kind,
        admin_user_id=admin.id,
    )


def check_password(session: Session, username: str, password: str) -> AdminUser | None:
    admin = session.scalar(select(AdminUser).where(AdminUser.username == username))
    stored = admin.password_hash if admin is not None and admin.password_hash else None
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if admin is None or stored is None or admin.disabled_at is not None:
        return None
    if _hasher.check_needs_rehash(stored):
        admin.password_hash = _hasher.hash(password)
    return admin


def open_session(session: Session, admin: AdminUser, now: dt.datetime, hours: float) -> str:
    """A page session for ``admin``: the cookie's value."""
    token = _new_token()
    _store(
        session,
        token,
        kind="session",
        admin_user_id=admin.id,
        expires_at=now + dt.timedelta(hours=hours),
    )
    return token


def close_session(session: Session, token: str, now: dt.datetime) -> None:
    # Only a page session: a cookie's value is not to revoke an API token by.
    _revoke(session, (ApiToken.digest == token_digest(token)) & (ApiToken.kind == "session"), now)


def audit(
    session: Session,
    actor: str,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    remote: str | None = None,
) -> None:
    session.add(
        AdminAudit(actor=actor, action=action, target=target, detail=detail or {}, remote=remote)
    )


def list_admins(session: Session) -> list[dict[str, Any]]:
    live = (
        select(ApiToken.admin_user_id, func.count().label("tokens"))
        .where(ApiToken.revoked_at.is_(None), ApiToken.kind == "api")
        .group_by(ApiToken.admin_user_id)
        .subquery()
    )
    rows = session.execute(
        select(AdminUser, func.coalesce(live.c.tokens, 0))
        .outerjoin(live, live.c.admin_user_id == AdminUser.id)
        .order_by(AdminUser.username)
    )
    return [
        {
            "username": admin.username,
            "role": admin.role,
            "password": admin.password_hash is not None,
            "disabled": admin.disabled_at is not None,
            "live_tokens": tokens,
        }
        for admin, tokens in rows
    ]


def list_tokens(session: Session, username: str) -> list[dict[str, Any]]:
    admin = _admin(session, username)
    rows = session.scalars(
        select(ApiToken)
        .where(ApiToken.admin_user_id == admin.id, ApiToken.kind == "api")
        .order_by(ApiToken.created_at)
    )
    return [
        {
            "prefix": row.prefix,
            "created_at": row.created_at.isoformat(),
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        }
        for row in rows
    ]
