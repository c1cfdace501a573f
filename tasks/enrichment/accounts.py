"""Users' Spotify connections: encrypted refresh tokens, refresh, revocation.

A connection is the user's consent: only listens of users with a live (unrevoked)
connection are enriched. Enrichment itself asks Spotify's catalogue with the app's token
(``tasks.enrichment.spotify``); a user's token is refreshed when it has expired, which is how a
withdrawn consent shows: Spotify answers ``invalid_grant`` (the user removed the app, or
the refresh token reached its six-month end), and the connection is revoked at once, its
tokens wiped, with no retry. Any other refresh failure (5xx, network) leaves the
connection as it is for the next run.

Tokens are encrypted at rest (``worker.secrets``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import requests
import spotipy
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import SpotifyToken, User
from worker.errors import PermanentError
from worker.secrets import SecretCipher
from worker.settings import Settings

log = logging.getLogger(__name__)

# spotipy treats a token as expired a minute early; so do we, so a refresh never races
# the token's last seconds.
EXPIRY_MARGIN = dt.timedelta(seconds=60)


class SpotifyConnectionError(PermanentError):
    """A connection cannot be stored or used as asked (no key, unknown user)."""


class InvalidGrantError(Exception):
    """Spotify refused the refresh token: the user's consent is gone."""


@dataclass(frozen=True)
class RefreshedToken:
    access_token: str
    expires_in: int
    refresh_token: str | None
    scope: str | None


# Takes a refresh token, returns the new access token; raises InvalidGrantError.
Refresher = Callable[[str], RefreshedToken]


def connect(
    session: Session,
    cipher: SecretCipher,
    user_id: int,
    refresh_token: str,
    now: dt.datetime,
    *,
    access_token: str | None = None,
    expires_in: int | None = None,
    scope: str | None = None,
) -> None:
    """Store (or renew) a user's connection: what the web app's OAuth callback calls.

    Connecting again after a revocation starts a new authorization: the six-month clock
    restarts and the revocation is cleared.
    """
    refresh_token = refresh_token.strip()
    if not refresh_token:
        raise SpotifyConnectionError("empty refresh token")
    if session.get(User, user_id) is None:
        raise SpotifyConnectionError(f"no user {user_id}")
    values = {
        "refresh_token_encrypted": cipher.encrypt(refresh_token),
        "access_token_encrypted": cipher.encrypt(access_token) if access_token else None,
        "access_token_expires_at": (
            now + dt.timedelta(seconds=expires_in) if access_token and expires_in else None
        ),
        "scope": scope,
        "authorized_at": now,
        "updated_at": now,
        "revoked_at": None,
        "revoked_reason": None,
    }
    statement = insert(SpotifyToken).values(user_id=user_id, **values)
    session.execute(
        statement.on_conflict_do_update(index_elements=[SpotifyToken.user_id], set_=values)
    )


def revoke(session: Session, user_id: int, now: dt.datetime, reason: str) -> bool:
    """Mark the connection revoked and wipe its tokens; False when there was none live."""
    result = session.execute(
        update(SpotifyToken)
        .where(SpotifyToken.user_id == user_id, SpotifyToken.revoked_at.is_(None))
        .values(
            revoked_at=now,
            revoked_reason=reason,
            refresh_token_encrypted=None,
            access_token_encrypted=None,
            access_token_expires_at=None,
            updated_at=now,
        )
        .returning(SpotifyToken.user_id)
    )
    return result.first() is not None


@dataclass
class RefreshReport:
    refreshed: list[int] = field(default_factory=list)
    revoked: list[int] = field(default_factory=list)


def refresh_expired(
    session: Session,
    cipher: SecretCipher,
    refresher: Refresher,
    user_ids: Sequence[int],
    now: dt.datetime,
) -> RefreshReport:
    """Refresh the expired access tokens of these users' live connections.

    Commits nothing: the caller's transaction holds the new tokens and revocations.
    """
    report = RefreshReport()
    rows = session.scalars(
        select(SpotifyToken)
        .where(
            SpotifyToken.user_id.in_(user_ids),
            SpotifyToken.revoked_at.is_(None),
            (SpotifyToken.access_token_expires_at.is_(None))
            | (SpotifyToken.access_token_expires_at <= now + EXPIRY_MARGIN),
        )
        .order_by(SpotifyToken.user_id)
        # Two runs starting together would refresh every user twice; one takes each.
        .with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        if row.refresh_token_encrypted is None:  # revoked rows are filtered; be safe anyway
            continue
        try:
            token = refresher(cipher.decrypt(row.refresh_token_encrypted))
        except InvalidGrantError as exc:
            revoke(session, row.user_id, now, f"invalid_grant: {exc}")
            log.warning(
                "user %s: Spotify refused the refresh token (%s); revoked", row.user_id, exc
            )
            report.revoked.append(row.user_id)
            continue
        except (requests.RequestException, spotipy.SpotifyOauthError) as exc:
            log.warning(
                "user %s: token refresh failed, kept for the next run: %s", row.user_id, exc
            )
            continue
        row.access_token_encrypted = cipher.encrypt(token.access_token)
        row.access_token_expires_at = now + dt.timedelta(seconds=token.expires_in)
        if token.refresh_token:
            row.refresh_token_encrypted = cipher.encrypt(token.refresh_token)
        row.scope = token.scope or row.scope
        row.updated_at = now
        report.refreshed.append(row.user_id)
    session.flush()
    return report


def spotipy_refresher(settings: Settings) -> Refresher:
    """Refresh through spotipy's OAuth manager, pointed at SPOTIFY_TOKEN_URL."""
    secret = settings.spotify_client_secret
    oauth = spotipy.SpotifyOAuth(
        client_id=settings.spotify_client_id,
        client_secret=secret.get_secret_value() if secret is not None else None,
        # Never used: refreshing needs no redirect, but the manager insists on one.
        redirect_uri="http://127.0.0.1/callback",
        cache_handler=spotipy.MemoryCacheHandler(),
        requests_session=requests.Session(),
        requests_timeout=settings.spotify_request_timeout_seconds,
        open_browser=False,
    )
    oauth.OAUTH_TOKEN_URL = settings.spotify_token_url

    def refresh(refresh_token: str) -> RefreshedToken:
        try:
            info = oauth.refresh_access_token(refresh_token)
        except spotipy.SpotifyOauthError as exc:
            if getattr(exc, "error", None) == "invalid_grant":
                raise InvalidGrantError(
                    getattr(exc, "error_description", None) or "invalid_grant"
                ) from None
            raise
        returned = info.get("refresh_token")
        return RefreshedToken(
            access_token=info["access_token"],
            expires_in=int(info.get("expires_in", 3600)),
            # spotipy copies the old refresh token in when none came back: only a new one
            # is worth re-encrypting.
            refresh_token=returned if returned and returned != refresh_token else None,
            scope=info.get("scope"),
        )

    return refresh
