"""Enrichment through real worker processes: the shared limit, the shared pause, the triggers.

Two ``celery worker`` subprocesses consume the enrichment queue, configured through the
environment as in production and pointed at the Spotify stand-in in this process. The
limit is set low (8 requests per 2-s window, i.e. 240 a minute) so a few dozen requests
exercise it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import Listen, TaskRun
from standins.spotify import RecordedRequest, SpotifyStandIn
from tasks.enrichment.scheduling import BATON_KEY
from tasks.enrichment.spotify import APP_TOKEN_KEY
from tests.enrichment_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    TOKEN_KEY,
    add_listens,
    add_song,
    busiest_window,
    connected_user,
    upload,
)
from tests.support import wait_for, worker_process

BUDGET = 8
WINDOW = 2.0


@pytest.fixture(scope="module")
def standin() -> Iterator[SpotifyStandIn]:
    with SpotifyStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def workers(app: Any, standin: SpotifyStandIn) -> Iterator[list[subprocess.Popen[bytes]]]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SPOTIFY_CLIENT_ID", CLIENT_ID)
        env.setenv("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET)
        env.setenv("SPOTIFY_API_URL", standin.api_url)
        env.setenv("SPOTIFY_TOKEN_URL", standin.token_url)
        env.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
        env.setenv("SPOTIFY_REQUESTS_PER_MINUTE", str(int(BUDGET * 60 / WINDOW)))
        env.setenv("SPOTIFY_RATE_WINDOW_SECONDS", str(WINDOW))
        env.setenv("BACKGROUND_DISPATCH_INTERVAL_SECONDS", "1")
        with (
            worker_process(app, "enrichment") as first,
            worker_process(app, "enrichment") as second,
        ):
            yield [first, second]


@pytest.fixture(autouse=True)
def _fresh(standin: SpotifyStandIn, redis_client: redis.Redis) -> Iterator[None]:
    for key in redis_client.scan_iter("ratelimit:spotify*"):
        redis_client.delete(key)
    redis_client.delete(APP_TOKEN_KEY, BATON_KEY)
    standin.reset_log()
    yield


def api_requests(standin: SpotifyStandIn) -> list[RecordedRequest]:
    return standin.recorded("/v1/")


def all_enriched(session: Session, count: int) -> bool:
    session.rollback()  # a fresh snapshot on each poll
    done = session.scalar(
        select(text("count(*)")).select_from(Listen).where(Listen.enrichment_status != "pending")
    )
    return done == count


def two_uploads(session: Session, standin: SpotifyStandIn, songs: int, tag: str) -> list[int]:
    uploads = []
    for who in ("alice", "bob"):
        user = connected_user(session, standin, f"{who}-{tag}-refresh")
        upload_id = upload(session, user, status="processing")
        names = [
            (s.artist, s.title)
            for s in (add_song(standin, f"{tag} {who} {i % 3}", f"{tag} {i}") for i in range(songs))
        ]
        add_listens(session, user, names * 3, upload_id=upload_id)
        uploads.append(upload_id)
    session.commit()
    return uploads


def complete(session: Session, upload_ids: list[int]) -> None:
    # Plain SQL, as the upload service would: no message of ours is involved.
    session.execute(
        text(
            "UPDATE upload_jobs SET status = 'completed', completed_at = now() WHERE id = ANY(:ids)"
        ),
        {"ids": upload_ids},
    )
    session.commit()


@pytest.mark.usefixtures("workers")
def test_the_limit_holds_with_two_workers_asking_at_once(
    session: Session, standin: SpotifyStandIn
) -> None:
    uploads = two_uploads(session, standin, songs=16, tag="limit")

    complete(session, uploads)
    wait_for(lambda: all_enriched(session, 2 * 16 * 3), timeout=90, interval=0.5)

    times = [r.at for r in api_requests(standin)]
    assert len(times) >= 32
    # Arrival times carry a few ms of network jitter on top of the limiter's admissions:
    # windows 50 ms shorter than the limiter's cannot gain a request from it.
    assert busiest_window(times, WINDOW - 0.05) <= BUDGET
    assert busiest_window(times, 60.0) <= BUDGET * 60 / WINDOW
    runs = session.scalars(
        select(TaskRun).where(TaskRun.task_name == "enrichment.enrich_upload")
    ).all()
    assert {run.worker_host for run in runs} and len({run.worker_host for run in runs}) == 2
    first, second = sorted(runs, key=lambda run: run.started_at)
    assert first.finished_at is not None and second.started_at < first.finished_at  # overlapped


@pytest.mark.usefixtures("workers")
def test_a_429_pauses_every_worker_for_its_retry_after(
    session: Session, standin: SpotifyStandIn
) -> None:
    uploads = two_uploads(session, standin, songs=10, tag="pause")
    complete(session, uploads)
    wait_for(lambda: standin.count("/v1/search") >= 4, timeout=30, interval=0.05)

    standin.rate_limit_next(4)
    wait_for(lambda: all_enriched(session, 2 * 10 * 3), timeout=90, interval=0.5)

    log = api_requests(standin)
    limited = next(r for r in log if r.status == 429)
    after = [r.at - limited.at for r in log if r.at > limited.at]
    # Requests already on their way when the 429 came back may still land just after it;
    # from then on nothing, from either worker, until Retry-After has passed.
    assert not [gap for gap in after if 0.25 < gap < 3.95]
    assert any(gap >= 3.95 for gap in after)


@pytest.mark.usefixtures("workers")
def test_a_completed_upload_is_enriched_without_waiting_for_beat(
    session: Session, standin: SpotifyStandIn
) -> None:
    song = add_song(standin, "Trigger Band", "Trigger Song")
    user = connected_user(session, standin, "trigger-refresh")
    upload_id = upload(session, user, status="processing")
    add_listens(session, user, [(song.artist, song.title)], upload_id=upload_id)
    session.commit()

    complete(session, [upload_id])

    wait_for(lambda: all_enriched(session, 1), timeout=30, interval=0.2)
    listen = session.scalars(select(Listen)).one()
    assert listen.spotify_track_id == song.track_id


@pytest.mark.usefixtures("workers")
def test_enrich_pending_goes_on_batch_after_batch_while_a_backlog_remains(
    session: Session, standin: SpotifyStandIn, app: Any
) -> None:
    user = connected_user(session, standin, "chain-refresh")
    songs = [add_song(standin, "Chain Band", f"Chain {i}") for i in range(7)]
    add_listens(session, user, [(s.artist, s.title) for s in songs])
    session.commit()

    app.send_task("enrichment.enrich_pending", kwargs={"batch_size": 3})

    def successful_links() -> int:
        session.rollback()
        statuses = session.scalars(
            select(TaskRun.status).where(TaskRun.task_name == "enrichment.enrich_pending")
        ).all()
        return statuses.count("success")

    wait_for(lambda: all_enriched(session, 7), timeout=60, interval=0.2)
    # 3 + 3 + 1 songs: one link each, the next published by the one before.
    wait_for(lambda: successful_links() >= 3, timeout=10)
    assert standin.count("/v1/search") == 7
