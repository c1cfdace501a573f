"""The console's HTTP API, over real HTTP to a real uvicorn: who may call what, what each
route answers, and that what it enqueues runs on the real worker."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from console.accounts import create_admin, issue_token, issue_user_token, token_digest
from db.models import AdminAudit, ApiToken, BackgroundTask, SmartPlaylist, TaskRun, TrendingTrack
from db.session import session_scope
from tests import factories
from tests.support import serve_console
from worker import liveness
from worker.cli import main
from worker.queues import QUEUE_NAMES
from worker.redis_client import get_redis

pytestmark = pytest.mark.committed
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_console() as url:
        yield url


def token_for(role: str, username: str | None = None) -> str:
    with session_scope() as session:
        name = username or f"{role}-user"
        create_admin(session, name, role)
        token, _ = issue_token(session, name)
    return token


_clients: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def client(base_url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    _clients.append(httpx.Client(base_url=base_url, headers=headers, timeout=30))
    return _clients[-1]


# Health and credentials


@pytest.mark.broker_independent
def test_health_answers_without_credentials(base_url: str) -> None:
    assert client(base_url).get("/healthz").json() == {"status": "ok"}


@pytest.mark.broker_independent
def test_ready_only_once_every_queue_has_a_live_worker(base_url: str) -> None:
    redis = get_redis()
    for key in redis.scan_iter(match=liveness.HEARTBEAT_PREFIX + "*"):
        redis.delete(key)
    liveness.beat_heart(redis, "stats@test", 30, {"queues": ["stats"]})

    not_ready = client(base_url).get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["database"] is True
    assert "no live worker for default" in not_ready.json()["checks"]["workers"]
    assert "stats," not in not_ready.json()["checks"]["workers"]

    liveness.beat_heart(redis, "all@test", 30, {"queues": list(QUEUE_NAMES)})
    try:
        ready = client(base_url).get("/readyz")
    finally:  # other tests count live workers
        redis.delete(*(liveness.HEARTBEAT_PREFIX + name for name in ("stats@test", "all@test")))
    assert ready.status_code == 200, ready.json()


@pytest.mark.broker_independent
def test_every_other_route_refuses_a_request_without_a_token(base_url: str) -> None:
    viewer = client(base_url, token_for("viewer"))
    paths = viewer.get("/api/openapi.json").json()["paths"]
    assert len(paths) >= 10
    anonymous = client(base_url)
    for path, methods in paths.items():
        if path in ("/healthz", "/readyz"):
            continue
        for method in methods:
            url = path.replace("{name}", "x").replace("{kind}", "ledger").replace("{row_id}", "1")
            answer = anonymous.request(method.upper(), url)
            assert answer.status_code == 401, (method, path, answer.status_code)
            assert answer.headers["www-authenticate"] == "Bearer"
    assert anonymous.get("/api/openapi.json").status_code == 401
    assert anonymous.get("/docs").status_code == 404


@pytest.mark.broker_independent
def test_a_made_up_token_is_refused(base_url: str) -> None:
    answer = client(base_url, "mat_not-a-real-token").get("/api/automation/trigger")
    assert answer.status_code == 401


@pytest.mark.broker_independent
def test_a_token_revoked_mid_session_is_refused_at_its_next_request(base_url: str) -> None:
    token = token_for("viewer")
    viewer = client(base_url, token)
    assert viewer.get("/api/automation/schedules").status_code == 200

    revoked = CliRunner().invoke(main, ["admin", "revoke", token[:14]])
    assert revoked.exit_code == 0, revoked.output

    assert viewer.get("/api/automation/schedules").status_code == 401


@pytest.mark.broker_independent
def test_a_disabled_admin_s_tokens_stop_working(base_url: str) -> None:
    admin = client(base_url, token_for("admin", "leaving"))
    assert admin.get("/api/automation/schedules").status_code == 200

    assert CliRunner().invoke(main, ["admin", "disable", "leaving"]).exit_code == 0

    assert admin.get("/api/automation/schedules").status_code == 401


@pytest.mark.broker_independent
def test_an_address_sending_bad_tokens_is_locked_out_even_with_a_good_one(
    base_url: str,
) -> None:
    good = token_for("viewer")
    for _ in range(5):  # API_LOGIN_MAX_FAILURES
        assert client(base_url, "mat_guess").get("/api/automation/runs").status_code == 401

    locked = client(base_url, good).get("/api/automation/runs")

    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0


@pytest.mark.broker_independent
def test_the_cli_prints_a_token_alone_on_its_last_line_and_keeps_only_its_digest() -> None:
    assert CliRunner().invoke(main, ["admin", "create", "ops", "--role", "admin"]).exit_code == 0

    result = CliRunner().invoke(main, ["admin", "token", "ops"])

    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("mat_") and len(token) > 40
    with session_scope() as session:
        stored = session.scalars(select(ApiToken)).one()
        assert stored.digest == token_digest(token)
        assert token not in (stored.digest, stored.prefix)


# Roles


@pytest.mark.broker_independent
def test_a_viewer_reads_the_status_but_may_not_trigger(base_url: str) -> None:
    viewer = client(base_url, token_for("viewer"))

    report = viewer.get("/api/automation/trigger").json()
    refused = viewer.post("/api/automation/trigger", json={"task": "ping"})

    assert "background_tasks" in report["status"] and "ping" in report["tasks"]
    assert refused.status_code == 403
    assert "admin or service" in refused.json()["detail"]


@pytest.mark.broker_independent
def test_a_service_token_may_trigger_and_read_nothing(base_url: str) -> None:
    service = client(base_url, token_for("service"))

    assert service.post("/api/automation/trigger", json={"task": "ping"}).status_code == 202
    assert service.get("/api/automation/trigger").status_code == 403
    assert service.get("/api/automation/runs").status_code == 403
    assert service.post("/api/automation/schedules/x/pause").status_code == 403


def test_an_admin_trigger_runs_the_task_and_is_in_the_audit_log(
    base_url: str, app: Any, celery_worker: Any
) -> None:
    admin = client(base_url, token_for("admin", "alice"))

    answer = admin.post("/api/automation/trigger", json={"task": "ping"})

    assert answer.status_code == 202
    [sent] = answer.json()["triggered"]
    assert sent["task"] == "automation.ping"
    assert app.AsyncResult(sent["task_id"]).get(timeout=30)["worker"]
    with session_scope() as session:
        entry = session.scalars(select(AdminAudit).where(AdminAudit.action == "trigger")).one()
        assert (entry.actor, entry.target, entry.remote) == ("alice", "ping", "127.0.0.1")
        assert entry.detail["sent"] == [sent]


@pytest.mark.broker_independent
def test_an_unknown_task_is_refused_with_the_valid_names(base_url: str) -> None:
    answer = client(base_url, token_for("admin")).post(
        "/api/automation/trigger", json={"task": "nope"}
    )

    assert answer.status_code == 400
    assert "unknown task 'nope'" in answer.json()["detail"]["error"]
    assert {"all", "trending", "smart_playlists"} <= set(answer.json()["detail"]["valid"])


@pytest.mark.broker_independent
def test_bad_arguments_are_refused_naming_the_argument_and_nothing_is_sent(
    base_url: str,
) -> None:
    admin = client(base_url, token_for("admin"))

    answer = admin.post(
        "/api/automation/trigger",
        json={"task": "playlists.generate", "kwargs": {"user_id": "abc"}},
    )

    assert answer.status_code == 400
    assert "user_id" in answer.json()["detail"]["error"]
    assert admin.get("/api/automation/audit").json()["items"] == []


# Trending and playlists


@pytest.mark.broker_independent
def test_trending_lists_tracks_with_their_artist_album_and_figures(base_url: str) -> None:
    with session_scope() as session:
        band = factories.artist(session, "Band")
        hot = factories.track(session, band, "Hot")
        warm = factories.track(session, band, "Warm")
        for rank, (song, score) in enumerate([(hot, 9.5), (warm, 2.0)], start=1):
            session.add(
                TrendingTrack(
                    track_id=song.id,
                    trend_score=score,
                    play_count_24h=10 * (3 - rank),
                    play_count_7d=50,
                    unique_listeners_24h=4,
                    unique_listeners_7d=9,
                    calculated_at=NOW,
                    rank=rank,
                )
            )

    answer = client(base_url, token_for("viewer")).get("/api/automation/trending?limit=1")

    [top] = answer.json()["tracks"]
    assert top["rank"] == 1 and top["trend_score"] == 9.5 and top["play_count_24h"] == 20
    assert top["track"]["title"] == "Hot" and top["track"]["artist"]["name"] == "Band"
    assert top["track"]["album"] is None


def _playlist(session: Any, owner: int, kind: str, track_ids: list[int]) -> None:
    session.add(
        SmartPlaylist(
            user_id=owner,
            playlist_type=kind,
            track_ids=track_ids,
            expires_at=NOW + dt.timedelta(days=1),
        )
    )


@pytest.mark.broker_independent
def test_a_user_token_sees_its_own_playlists_and_no_one_else_s(base_url: str) -> None:
    with session_scope() as session:
        band = factories.artist(session, "Band")
        first, second = factories.track(session, band, "One"), factories.track(session, band, "Two")
        me, other = factories.user(session), factories.user(session)
        _playlist(session, me.id, "daily_mix", [second.id, first.id])
        _playlist(session, other.id, "daily_mix", [first.id])
        token, _ = issue_user_token(session, me.id)
    listener = client(base_url, token)

    mine = listener.get("/api/automation/smart-playlists").json()
    theirs = listener.get(f"/api/automation/smart-playlists?user_id={other.id}")

    assert mine["user_id"] == me.id
    [playlist] = mine["playlists"]
    assert [t["title"] for t in playlist["tracks"]] == ["Two", "One"]
    assert theirs.status_code == 403
    assert listener.get("/api/automation/trending").status_code == 403


@pytest.mark.broker_independent
def test_a_viewer_reads_any_user_s_playlists_by_id_filtered_by_type(base_url: str) -> None:
    with session_scope() as session:
        band = factories.artist(session)
        song = factories.track(session, band)
        listener = factories.user(session)
        _playlist(session, listener.id, "daily_mix", [song.id])
        _playlist(session, listener.id, "new_for_you", [song.id])
    viewer = client(base_url, token_for("viewer"))

    answer = viewer.get(f"/api/automation/smart-playlists?user_id={listener.id}&type=new_for_you")

    assert [p["type"] for p in answer.json()["playlists"]] == ["new_for_you"]
    assert viewer.get("/api/automation/smart-playlists").status_code == 400


def test_a_user_regenerates_their_own_playlist_on_the_worker(
    base_url: str, app: Any, celery_worker: Any
) -> None:
    with session_scope() as session:
        me = factories.user(session)
        token, _ = issue_user_token(session, me.id)

    answer = client(base_url, token).post(
        "/api/automation/smart-playlists", json={"playlistType": "daily_mix"}
    )

    assert answer.status_code == 202
    [sent] = answer.json()["triggered"]
    assert sent["task"] == "playlists.generate"
    app.AsyncResult(sent["task_id"]).get(timeout=60)


@pytest.mark.broker_independent
def test_a_viewer_may_not_regenerate_playlists(base_url: str) -> None:
    answer = client(base_url, token_for("viewer")).post(
        "/api/automation/smart-playlists", json={"playlistType": "daily_mix", "userId": 1}
    )
    assert answer.status_code == 403


# Schedules, runs, retries


def _entry(admin: httpx.Client) -> None:
    answer = admin.put(
        "/api/automation/schedules/status-check",
        json={"task": "automation.status", "every_seconds": 300},
    )
    assert answer.status_code == 200, answer.json()


@pytest.mark.broker_independent
def test_an_admin_pauses_and_resumes_an_entry_and_both_are_in_its_trail(base_url: str) -> None:
    admin = client(base_url, token_for("admin", "bob"))
    _entry(admin)

    paused = admin.post("/api/automation/schedules/status-check/pause").json()
    resumed = admin.post("/api/automation/schedules/status-check/resume").json()

    assert paused["paused"] is True and resumed["paused"] is False
    trail = admin.get("/api/automation/schedules/status-check/history").json()["changes"]
    assert [(c["action"], c["actor"]) for c in trail][:3] == [
        ("resume", "bob"),
        ("pause", "bob"),
        ("add", "bob"),
    ]


@pytest.mark.broker_independent
def test_a_bad_cron_is_refused_with_the_reason(base_url: str) -> None:
    answer = client(base_url, token_for("admin")).put(
        "/api/automation/schedules/broken", json={"task": "automation.status", "cron": "61 * * *"}
    )
    assert answer.status_code == 400
    assert "cron" in answer.json()["detail"]["error"].lower()


@pytest.mark.broker_independent
def test_an_unknown_entry_is_404(base_url: str) -> None:
    admin = client(base_url, token_for("admin"))
    assert admin.post("/api/automation/schedules/nothing/pause").status_code == 404


def test_run_now_sends_the_entry_s_task_which_runs(
    base_url: str, app: Any, celery_worker: Any
) -> None:
    admin = client(base_url, token_for("admin"))
    _entry(admin)

    answer = admin.post("/api/automation/schedules/status-check/run")

    [sent] = answer.json()["triggered"]
    assert sent["task"] == "automation.status"
    assert app.AsyncResult(sent["task_id"]).get(timeout=30)["generated_at"]


@pytest.mark.broker_independent
def test_runs_come_newest_first_a_page_at_a_time(base_url: str) -> None:
    with session_scope() as session:
        for n in range(5):
            session.add(
                TaskRun(
                    run_key=f"k{n}",
                    task_id=f"t{n}",
                    task_name="trending.calculate",
                    status="success",
                    started_at=NOW + dt.timedelta(seconds=n),
                )
            )
    viewer = client(base_url, token_for("viewer"))

    first = viewer.get("/api/automation/runs?limit=2").json()
    second = viewer.get(f"/api/automation/runs?limit=2&before={first['next_before']}").json()
    last = viewer.get(f"/api/automation/runs?limit=2&before={second['next_before']}").json()

    pages = [[run["task_id"] for run in page["items"]] for page in (first, second, last)]
    assert pages == [["t4", "t3"], ["t2", "t1"], ["t0"]]
    assert last["next_before"] is None


def _ledger_row(status: str) -> int:
    with session_scope() as session:
        song = factories.track(session, factories.artist(session))
        row = BackgroundTask(
            task_type="mood_detection", track_id=song.id, status=status, attempts=3
        )
        session.add(row)
        session.flush()
        return row.id


@pytest.mark.broker_independent
def test_retry_puts_a_failed_ledger_row_back_to_pending_with_fresh_attempts(
    base_url: str,
) -> None:
    row_id = _ledger_row("failed")

    answer = client(base_url, token_for("admin")).post(f"/api/automation/retry/ledger/{row_id}")

    assert answer.status_code == 200
    with session_scope() as session:
        row = session.get(BackgroundTask, row_id)
        assert row is not None and (row.status, row.attempts) == ("pending", 0)


@pytest.mark.broker_independent
def test_retry_of_a_row_that_has_not_failed_is_a_conflict_and_changes_nothing(
    base_url: str,
) -> None:
    row_id = _ledger_row("completed")
    admin = client(base_url, token_for("admin"))

    assert admin.post(f"/api/automation/retry/ledger/{row_id}").status_code == 409
    assert admin.post("/api/automation/retry/ledger/999999").status_code == 404
    with session_scope() as session:
        assert session.get(BackgroundTask, row_id).status == "completed"  # type: ignore[union-attr]


@pytest.mark.broker_independent
def test_the_cli_retries_a_failed_ledger_row() -> None:
    row_id = _ledger_row("failed")

    result = CliRunner().invoke(main, ["retry", "ledger", str(row_id)])

    assert result.exit_code == 0, result.output
    with session_scope() as session:
        assert session.get(BackgroundTask, row_id).status == "pending"  # type: ignore[union-attr]
        assert session.scalars(select(AdminAudit.action)).all() == ["retry"]


# Who may call each route. A route missing here fails the test below: a new route must say.
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("GET", "/api/automation/trigger"): {"admin", "viewer"},
    ("POST", "/api/automation/trigger"): {"admin", "service"},
    ("GET", "/api/automation/trending"): {"admin", "viewer"},
    ("POST", "/api/automation/trending"): {"admin"},
    ("GET", "/api/automation/smart-playlists"): {"admin", "viewer", "user"},
    ("POST", "/api/automation/smart-playlists"): {"admin", "user"},
    ("GET", "/api/automation/schedules"): {"admin", "viewer"},
    ("PUT", "/api/automation/schedules/{name}"): {"admin"},
    ("DELETE", "/api/automation/schedules/{name}"): {"admin"},
    ("POST", "/api/automation/schedules/{name}/pause"): {"admin"},
    ("POST", "/api/automation/schedules/{name}/resume"): {"admin"},
    ("POST", "/api/automation/schedules/{name}/run"): {"admin"},
    ("GET", "/api/automation/schedules/{name}/history"): {"admin", "viewer"},
    ("GET", "/api/automation/runs"): {"admin", "viewer"},
    ("GET", "/api/automation/dead-letters"): {"admin", "viewer"},
    ("POST", "/api/automation/retry/{kind}/{row_id}"): {"admin"},
    ("GET", "/api/automation/audit"): {"admin"},
}


@pytest.mark.broker_independent
def test_each_route_answers_exactly_the_roles_it_names(base_url: str) -> None:
    with session_scope() as session:
        listener = factories.user(session)
        user_token, _ = issue_user_token(session, listener.id)
    tokens = {role: token_for(role) for role in ("admin", "viewer", "service")}
    tokens["user"] = user_token
    paths = client(base_url, tokens["viewer"]).get("/api/openapi.json").json()["paths"]
    routes = {
        (method.upper(), path)
        for path, methods in paths.items()
        if path.startswith("/api/")
        for method in methods
    }
    assert routes == set(ALLOWED)

    refused = {}
    for (method, path), allowed in ALLOWED.items():
        # Arguments that are wrong on purpose: an allowed caller gets 400, 404 or 422, and
        # nothing changes; a refused one gets 403 before any of that is looked at.
        url = path.format(name="no-such-entry", kind="ledger", row_id=0)
        for role, token in tokens.items():
            answer = client(base_url, token).request(
                method, url, json={} if method in ("POST", "PUT") else None
            )
            if (answer.status_code == 403) == (role in allowed):
                refused[(method, path, role)] = answer.status_code
    assert refused == {}
