"""The operators' console: who may use it (admin users and their roles), the credentials
they hold (API tokens, page sessions, users' own tokens), what they did (the audit log),
and the alerts raised for them (one open incident per condition).

Credentials are kept only as SHA-256 digests: a token is 32 random bytes, so a digest
cannot be reversed by guessing, and a stolen table grants nothing. Passwords, which people
choose, get a slow hash instead (argon2, ``console.accounts``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt

# viewer reads; admin also triggers, retries and changes schedules; service may only
# trigger (the spec's worker secret, for other services).
ROLES = ("admin", "viewer", "service")
# api: a bearer token an admin user was given; session: the page's login cookie; user: a
# listener's own token, which sees only that user's playlists.
TOKEN_KINDS = ("api", "session", "user")


class AdminUser(Base):
    __tablename__ = "admin_users"

    id: Mapped[BigId]
    username: Mapped[str] = mapped_column(Text, unique=True)
    role: Mapped[str] = mapped_column(Text)
    # NULL: no password set, so no page login (tokens still work).
    password_hash: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[CreatedAt]
    disabled_at: Mapped[dt.datetime | None]

    __table_args__ = (CheckConstraint("role IN ('admin', 'viewer', 'service')", name="role"),)


class ApiToken(Base):
    """A credential: its digest, whose it is, and its life (expiry, last use, revocation)."""

    __tablename__ = "api_tokens"

    id: Mapped[BigId]
    kind: Mapped[str] = mapped_column(Text)
    admin_user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("admin_users.id", ondelete="CASCADE")
    )
    user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE")
    )
    digest: Mapped[str] = mapped_column(Text, unique=True)
    # The token's first characters, to tell tokens apart in a listing.
    prefix: Mapped[str] = mapped_column(Text)
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]

    __table_args__ = (
        CheckConstraint("kind IN ('api', 'session', 'user')", name="kind"),
        CheckConstraint(
            "(kind = 'user') = (user_id IS NOT NULL) AND (kind = 'user') = (admin_user_id IS NULL)",
            name="owner",
        ),
        Index("ix_api_tokens_admin_user_id", "admin_user_id"),
        Index("ix_api_tokens_user_id", "user_id"),
    )


class AdminAudit(Base):
    """Every admin action, from the API, the page or the CLI: who, what, on what, from
    where."""

    __tablename__ = "admin_audit"

    id: Mapped[BigId]
    at: Mapped[CreatedAt] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    remote: Mapped[str | None] = mapped_column(Text)


class AlertIncident(Base):
    """One stretch of time an alert's condition held. ``alert`` names the condition and
    what it is about (``schedule_failing:calculate-trending``); at most one incident per
    name is open, so a condition that lasts is one incident, notified once."""

    __tablename__ = "alert_incidents"

    id: Mapped[BigId]
    alert: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[dt.datetime]
    resolved_at: Mapped[dt.datetime | None]
    summary: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # When the webhook took the opening and the recovery notices; NULL: not yet (it is
    # tried again on the next check, so a webhook down for a while loses nothing).
    notified_open_at: Mapped[dt.datetime | None]
    notified_resolved_at: Mapped[dt.datetime | None]

    __table_args__ = (
        Index(
            "uq_alert_incidents_open",
            "alert",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
        ),
        Index("ix_alert_incidents_opened_at", "opened_at"),
    )
