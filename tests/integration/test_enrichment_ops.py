"""Operating enrichment: connecting users, progress, status, what a stall is, the chain.

The stall's alert (posted once, then its recovery) is tested with the other alerts, in
``test_alerts.py``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import SpotifyToken
from tasks.enrichment.monitoring import enrichment_progress, find_stall
from tasks.enrichment.scheduling import BATON_KEY, Baton, dispatch_completed_uploads
from tasks.enrichment.tasks import enrich_pending, enrich_upload
from tests.enrichment_support import (
    NOW,
    TOKEN_KEY,
    add_listens,
    cipher,
    new_user,
    upload,
)
from tests.support import purge_queue, take_message
from worker.cli import main, render_status
from worker.settings import get_settings


@pytest.fixture
def with_token_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI reads TOKEN_ENCRYPTION_KEY from the environment, as in production."""
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def with_spotify_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", "test-client")
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", "test-secret")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _no_chain_state(redis_client: redis.Redis) -> Iterator[None]:
    redis_client.delete(BATON_KEY)
    yield
    redis_client.delete(BATON_KEY)


def set_statuses(session: Session, user_id: int, **counts: int) -> None:
    for status, n in counts.items():
        add_listens(session, user_id, [("Band", f"{status} {i}") for i in range(n)])
        session.execute(
            text(
                "UPDATE listens SET enrichment_status = :s, "
                "enriched_at = CASE WHEN :s = 'pending' THEN NULL ELSE :at END "
                "WHERE track_name LIKE :prefix AND user_id = :u"
            ),
            {"s": status, "at": NOW, "prefix": f"{status} %", "u": user_id},
        )


# -- connecting users from the command line ---------------------------------------------


@pytest.mark.committed
@pytest.mark.usefixtures("with_token_key")
@pytest.mark.broker_independent
def test_spotify_connect_stores_the_refresh_token_encrypted(session: Session) -> None:
    user_id = new_user(session)
    session.commit()

    outcome = CliRunner().invoke(main, ["spotify", "connect", str(user_id)], input="secret-rt\n")

    assert outcome.exit_code == 0, outcome.output
    token = session.scalars(select(SpotifyToken)).one()
    assert token.refresh_token_encrypted is not None
    assert "secret-rt" not in token.refresh_token_encrypted
    assert cipher().decrypt(token.refresh_token_encrypted) == "secret-rt"
    assert token.revoked_at is None


@pytest.mark.broker_independent
def test_spotify_connect_without_a_key_says_how_to_make_one(session: Session) -> None:
    user_id = new_user(session)
    session.commit()

    outcome = CliRunner().invoke(main, ["spotify", "connect", str(user_id)], input="rt\n")

    assert outcome.exit_code == 1
    assert "TOKEN_ENCRYPTION_KEY is not set" in outcome.output
    assert "automation spotify new-key" in outcome.output


@pytest.mark.usefixtures("with_token_key")
@pytest.mark.broker_independent
def test_spotify_connect_for_an_unknown_user_fails_in_one_line() -> None:
    outcome = CliRunner().invoke(main, ["spotify", "connect", "999999"], input="rt\n")

    assert outcome.exit_code == 1
    assert outcome.output.strip() == "Error: no user 999999"


@pytest.mark.committed
@pytest.mark.usefixtures("with_token_key")
@pytest.mark.broker_independent
def test_spotify_disconnect_revokes_the_connection_and_wipes_its_tokens(
    session: Session,
) -> None:
    user_id = new_user(session)
    session.commit()
    CliRunner().invoke(main, ["spotify", "connect", str(user_id)], input="rt\n")

    outcome = CliRunner().invoke(main, ["spotify", "disconnect", str(user_id)])
    again = CliRunner().invoke(main, ["spotify", "disconnect", str(user_id)])

    assert outcome.exit_code == 0, outcome.output
    token = session.scalars(select(SpotifyToken)).one()
    assert token.revoked_at is not None
    assert token.revoked_reason == "disconnected by an operator"
    assert token.refresh_token_encrypted is None
    assert again.exit_code == 1
    assert "no live Spotify connection" in again.output


@pytest.mark.committed
@pytest.mark.usefixtures("with_token_key")
@pytest.mark.broker_independent
def test_connecting_again_after_a_revocation_starts_a_new_connection(session: Session) -> None:
    user_id = new_user(session)
    session.commit()
    CliRunner().invoke(main, ["spotify", "connect", str(user_id)], input="old\n")
    CliRunner().invoke(main, ["spotify", "disconnect", str(user_id)])

    CliRunner().invoke(main, ["spotify", "connect", str(user_id)], input="new\n")

    token = session.scalars(select(SpotifyToken)).one()
    assert token.revoked_at is None and token.revoked_reason is None
    assert token.refresh_token_encrypted is not None
    assert cipher().decrypt(token.refresh_token_encrypted) == "new"


# -- progress and status ---------------------------------------------------------------------


@pytest.mark.broker_independent
def test_progress_counts_listens_by_status_overall_and_per_user(session: Session) -> None:
    alice, bob = new_user(session), new_user(session)
    set_statuses(session, alice, matched=6, not_found=1, failed=1, pending=2)
    set_statuses(session, bob, pending=10)

    overall = enrichment_progress(session)
    alices = enrichment_progress(session, alice)

    assert (overall["total"], overall["enriched"], overall["percentage"]) == (20, 8, 40.0)
    assert overall["largest_backlogs"] == [
        {"user_id": bob, "pending": 10, "connected": False},
        {"user_id": alice, "pending": 2, "connected": False},
    ]
    assert {k: alices[k] for k in ("total", "enriched", "percentage", "pending")} == {
        "total": 10,
        "enriched": 8,
        "percentage": 80.0,
        "pending": 2,
    }
    assert (alices["matched"], alices["not_found"], alices["failed"]) == (6, 1, 1)


@pytest.mark.committed
@pytest.mark.broker_independent
def test_status_shows_enrichment_progress_and_a_spotify_pause(session: Session) -> None:
    alice = new_user(session)
    set_statuses(session, alice, matched=3, pending=1)
    session.commit()
    report = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)
    report["enrichment"]["spotify_paused"] = {"seconds": 3512.0, "reason": "429 QUOTA_EXCEEDED"}

    printed = render_status(report)

    assert "enrichment:       3 of 4 listens enriched (75.0%)" in printed
    assert "Spotify requests paused for 3512 s (429 QUOTA_EXCEEDED)" in printed
    assert f"largest backlogs: user {alice} 1 (not connected)" in printed


# -- what a stall is -------------------------------------------------------------------------


def stalled_backlog(session: Session) -> None:
    alice = new_user(session)
    session.execute(
        text("INSERT INTO spotify_tokens (user_id, refresh_token_encrypted) VALUES (:u, 'x')"),
        {"u": alice},
    )
    set_statuses(session, alice, matched=1, pending=5)  # the match was enriched at NOW


@pytest.mark.broker_independent
def test_a_backlog_without_progress_for_two_hours_is_a_stall(session: Session) -> None:
    stalled_backlog(session)

    stall = find_stall(session, NOW + dt.timedelta(hours=2, minutes=1), dt.timedelta(hours=2))

    assert stall is not None
    assert stall.backlog == 5
    assert stall.last_progress == NOW
    assert "none enriched for 2.0 h" in stall.message(NOW + dt.timedelta(hours=2, minutes=1))


@pytest.mark.broker_independent
def test_recent_progress_is_no_stall(session: Session) -> None:
    stalled_backlog(session)

    assert (
        find_stall(session, NOW + dt.timedelta(hours=1, minutes=59), dt.timedelta(hours=2)) is None
    )


@pytest.mark.broker_independent
def test_a_backlog_of_users_without_a_live_connection_is_no_stall(session: Session) -> None:
    alice = new_user(session)  # never connected to Spotify: nothing could be enriched
    set_statuses(session, alice, matched=1, pending=5)

    assert find_stall(session, NOW + dt.timedelta(hours=5), dt.timedelta(hours=2)) is None


# -- the chain and the upload trigger ---------------------------------------------------------


@pytest.mark.broker_independent
def test_the_baton_admits_one_chain_and_passes_to_its_successor(
    redis_client: redis.Redis,
) -> None:
    baton = Baton(redis_client)

    assert baton.take("link-1", 60)
    assert not baton.take("beat-run", 60)
    assert baton.hand_over("link-1", "link-2", 60)
    assert not baton.release("link-1")  # no longer the holder
    assert baton.take("link-2", 60)
    assert baton.release("link-2")
    assert baton.take("beat-run", 60)


@pytest.mark.usefixtures("with_spotify_app")
@pytest.mark.broker_independent
def test_enrich_pending_steps_aside_while_another_chain_holds_the_baton(
    redis_client: redis.Redis,
) -> None:
    Baton(redis_client).take("a-running-chain", 60)

    result = enrich_pending(batch_size=10)

    assert result == {"status": "skipped", "reason": "an enrich_pending chain is already running"}


@pytest.mark.committed
@pytest.mark.broker_independent
def test_without_a_spotify_app_enrichment_is_skipped_saying_why(session: Session) -> None:
    upload_id = upload(session, new_user(session))
    session.commit()

    assert (
        enrich_pending(batch_size=10)["reason"] == "Spotify is not configured (SPOTIFY_CLIENT_ID)"
    )
    assert enrich_upload(upload_id)["status"] == "skipped"


@pytest.mark.committed
def test_a_completed_upload_is_published_once(session: Session, app: Any) -> None:
    alice = new_user(session)
    done, busy = upload(session, alice), upload(session, alice, status="processing")
    session.commit()
    purge_queue(app, "enrichment")

    first = dispatch_completed_uploads(app)
    second = dispatch_completed_uploads(app)

    assert (first, second) == (1, 0)
    message = take_message(app, "enrichment")
    assert message is not None
    headers, (args, _kwargs, _embed) = message
    assert headers["task"] == "enrichment.enrich_upload"
    assert args == [done]
    queued = dict(
        session.execute(text("SELECT id, enrichment_queued_at IS NOT NULL FROM upload_jobs")).all()
    )
    assert queued == {done: True, busy: False}


@pytest.mark.broker_independent
def test_enrichment_without_spotify_credentials_fails_saying_which(
    redis_client: redis.Redis,
) -> None:
    from tasks.enrichment.spotify import SpotifyCatalog
    from worker.errors import PermanentError

    unset = get_settings().model_copy(update={"spotify_client_id": None})

    with pytest.raises(PermanentError, match="SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET"):
        SpotifyCatalog(unset, redis_client)


@pytest.mark.broker_independent
def test_an_unknown_upload_fails_at_once_naming_it() -> None:
    from tasks.enrichment.scheduling import UnknownUploadError

    with pytest.raises(UnknownUploadError, match="no upload_jobs row 424242"):
        enrich_upload(424242)
