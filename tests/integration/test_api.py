"""The console's HTTP API, over real HTTP to a real uvicorn: who may call what, what each
route answers, and that what it enqueues runs on the real worker."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from pydantic import SecretStr
from sqlalchemy import func, select

from console.accounts import create_admin, issue_token, issue_user_token, token_digest
from db.models import (
    AdminAudit,
    ApiToken,
    BackgroundTask,
    JobStatusChange,
    SmartPlaylist,
    TaskRun,
    TrendingTrack,
    Workflow,
    WorkflowExecution,
)
from db.session import session_scope
from tests import factories
from tests.enrichment_support import TOKEN_KEY
from tests.integration.test_workflows import HOOK, workflow
from tests.support import serve_console
from worker import app as celery_app
from worker import liveness
from worker.cli import main
from worker.queues import QUEUE_NAMES
from worker.redis_client import get_redis
from worker.settings import get_settings

pytestmark = pytest.mark.committed
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    # Workflows keep their signing secrets encrypted, and post only to listed local hosts.
    settings = get_settings().model_copy(
        update={"token_encryption_key": SecretStr(TOKEN_KEY), "webhook_allowed_hosts": "127.0.0.1"}
    )
    with serve_console(settings) as url:
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
            url = (
                path.replace("{name}", "x")
                .replace("{kind}", "ledger")
                .replace("{row_id}", "1")
                .replace("{workflow_id}", "1")
                .replace("{job_id}", "1")
            )
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


# Workflows


def workflow_file(**fields: Any) -> dict[str, Any]:
    return {
        "name": "tell the importer",
        "trigger": {"type": "job_status_changed", "source": "upload_jobs"},
        "conditions": {"all": [{"field": "new_status", "op": "eq", "value": "completed"}]},
        "actions": [{"type": "webhook", "url": HOOK}],
    } | fields


def listener() -> tuple[int, str]:
    """A user and their own token."""
    with session_scope() as session:
        user = factories.user(session)
        token, _ = issue_user_token(session, user.id)
        return user.id, token


def stored_workflow(user_id: int | None = None) -> int:
    with session_scope() as session:
        return workflow(session, celery_app, user_id=user_id)


def upload(user_id: int, status: str = "completed") -> int:
    with session_scope() as session:
        return factories.upload(session, user_id, status).id


def execution(workflow_id: int, job_id: int, status: str) -> int:
    with session_scope() as session:
        row = factories.execution(session, workflow_id, status, NOW, job_id=job_id)
        return row.id


def audited(action: str) -> list[tuple[str, str | None]]:
    with session_scope() as session:
        rows = session.execute(
            select(AdminAudit.actor, AdminAudit.target)
            .where(AdminAudit.action == action)
            .order_by(AdminAudit.id)
        ).all()
        return [tuple(row) for row in rows]  # type: ignore[misc]


@pytest.mark.broker_independent
def test_an_admin_creates_a_workflow_and_is_shown_its_secret_only_then(base_url: str) -> None:
    admin = client(base_url, token_for("admin", "alice"))

    created = admin.post("/api/automation/workflows", json=workflow_file())

    assert created.status_code == 201, created.json()
    body = created.json()
    assert len(body["secret"]) >= 32
    assert body["workflow"]["name"] == "tell the importer"
    assert body["workflow"]["active"] is True
    shown = admin.get(f"/api/automation/workflows/{body['workflow']['id']}").json()
    assert body["secret"] not in str(shown) and "secret" not in shown
    assert audited("workflow.create") == [("alice", f"workflow:{body['workflow']['id']}")]


@pytest.mark.broker_independent
def test_the_secret_given_in_the_file_is_not_written_to_the_audit_log(base_url: str) -> None:
    admin = client(base_url, token_for("admin"))

    admin.post("/api/automation/workflows", json=workflow_file(secret="the-receiver-s-own-key"))

    with session_scope() as session:
        [detail] = session.scalars(
            select(AdminAudit.detail).where(AdminAudit.action == "workflow.create")
        ).all()
    assert "the-receiver-s-own-key" not in str(detail)


@pytest.mark.broker_independent
def test_a_bad_workflow_file_is_refused_naming_the_bad_part_and_nothing_is_stored(
    base_url: str,
) -> None:
    bad = workflow_file(conditions={"all": [{"field": "job.usr_id", "op": "eq", "value": 1}]})

    answer = client(base_url, token_for("admin")).post("/api/automation/workflows", json=bad)

    assert answer.status_code == 400
    assert "conditions.all[0].field" in answer.json()["detail"]["error"]
    with session_scope() as session:
        assert session.scalars(select(Workflow)).all() == []


@pytest.mark.broker_independent
def test_a_webhook_to_a_host_outside_the_allow_list_is_refused(base_url: str) -> None:
    inside = workflow_file(actions=[{"type": "webhook", "url": "http://10.0.0.5/hook"}])

    answer = client(base_url, token_for("admin")).post("/api/automation/workflows", json=inside)

    assert answer.status_code == 400
    assert "actions[0].url" in answer.json()["detail"]["error"]


@pytest.mark.broker_independent
def test_a_user_token_creates_a_workflow_for_its_own_user(base_url: str) -> None:
    user_id, token = listener()

    answer = client(base_url, token).post("/api/automation/workflows", json=workflow_file())

    assert answer.status_code == 201, answer.json()
    assert answer.json()["workflow"]["user_id"] == user_id
    assert answer.json()["workflow"]["created_by"] == f"user:{user_id}"


@pytest.mark.broker_independent
def test_a_user_token_may_not_create_a_workflow_for_another_user(base_url: str) -> None:
    other, _ = listener()
    _, token = listener()

    answer = client(base_url, token).post(
        "/api/automation/workflows", json=workflow_file(user_id=other)
    )

    assert answer.status_code == 403
    with session_scope() as session:
        assert session.scalars(select(Workflow)).all() == []


@pytest.mark.broker_independent
def test_a_user_token_may_not_make_a_workflow_that_runs_a_task(base_url: str) -> None:
    _, token = listener()
    # Its arguments could name any user: the token may act only on its own.
    task = {"type": "task", "task": "playlists.generate", "kwargs": {"user_id": 1}}

    answer = client(base_url, token).post(
        "/api/automation/workflows", json=workflow_file(actions=[task])
    )

    assert answer.status_code == 400
    assert "may not run tasks" in answer.json()["detail"]["error"]


@pytest.mark.broker_independent
def test_a_user_token_may_not_make_a_workflow_notifying_someone_else(base_url: str) -> None:
    other, _ = listener()
    _, token = listener()
    note = {"type": "notification", "title": "hello", "user_id": other}

    answer = client(base_url, token).post(
        "/api/automation/workflows", json=workflow_file(actions=[note])
    )

    assert answer.status_code == 400
    assert "actions[0].user_id" in answer.json()["detail"]["error"]


@pytest.mark.broker_independent
def test_a_user_token_lists_only_its_own_users_workflows(base_url: str) -> None:
    me, token = listener()
    other, _ = listener()
    mine = stored_workflow(me)
    stored_workflow(other)
    stored_workflow(None)

    listed = client(base_url, token).get("/api/automation/workflows").json()["workflows"]

    assert [w["id"] for w in listed] == [mine]


@pytest.mark.broker_independent
def test_a_viewer_lists_every_workflow(base_url: str) -> None:
    me, _ = listener()
    ids = [stored_workflow(me), stored_workflow(None)]

    listed = client(base_url, token_for("viewer")).get("/api/automation/workflows").json()

    assert [w["id"] for w in listed["workflows"]] == ids


@pytest.mark.broker_independent
def test_someone_else_s_workflow_is_not_found_for_a_user_token(base_url: str) -> None:
    other, _ = listener()
    me, token = listener()
    theirs = stored_workflow(other)
    job = upload(me)
    listener_client = client(base_url, token)
    base = f"/api/automation/workflows/{theirs}"

    answers = [
        listener_client.get(base).status_code,
        listener_client.get(f"{base}/logs").status_code,
        listener_client.post(f"{base}/disable").status_code,
        listener_client.post(f"{base}/enable").status_code,
        listener_client.post(f"{base}/test", json={"job_id": job}).status_code,
    ]

    assert answers == [404] * 5
    with session_scope() as session:
        assert session.get(Workflow, theirs).active  # type: ignore[union-attr]


@pytest.mark.broker_independent
def test_the_owner_disables_and_enables_their_workflow_and_both_are_audited(
    base_url: str,
) -> None:
    me, token = listener()
    workflow_id = stored_workflow(me)
    owner = client(base_url, token)

    disabled = owner.post(f"/api/automation/workflows/{workflow_id}/disable")
    enabled = owner.post(f"/api/automation/workflows/{workflow_id}/enable")

    assert (disabled.json()["active"], enabled.json()["active"]) == (False, True)
    target = f"workflow:{workflow_id}"
    assert audited("workflow.disable") == [(f"user:{me}", target)]
    assert audited("workflow.enable") == [(f"user:{me}", target)]


@pytest.mark.broker_independent
def test_a_disabled_workflow_records_no_status_change(base_url: str) -> None:
    me, _ = listener()
    workflow_id = stored_workflow(me)

    client(base_url, token_for("admin")).post(f"/api/automation/workflows/{workflow_id}/disable")
    upload(me)

    with session_scope() as session:
        assert session.get(Workflow, workflow_id).active is False  # type: ignore[union-attr]
        assert session.scalar(select(func.count()).select_from(JobStatusChange)) == 0


@pytest.mark.broker_independent
def test_the_dry_run_shows_what_would_be_sent_and_sends_nothing(base_url: str) -> None:
    me, token = listener()
    workflow_id = stored_workflow(me)
    job = upload(me)

    answer = client(base_url, token).post(
        f"/api/automation/workflows/{workflow_id}/test", json={"job_id": job}
    )

    assert answer.status_code == 200, answer.json()
    report = answer.json()
    assert report["conditions_hold"] is True and report["sent"] is False
    [hook] = report["actions"]
    assert hook["url"] == HOOK and hook["body"]["job_id"] == job
    assert hook["signature"].startswith("sha256=")
    with session_scope() as session:
        assert session.scalars(select(WorkflowExecution)).all() == []


@pytest.mark.broker_independent
def test_a_user_s_dry_run_on_another_user_s_job_is_not_found(base_url: str) -> None:
    me, token = listener()
    other, _ = listener()
    workflow_id = stored_workflow(me)
    their_job = upload(other)

    answer = client(base_url, token).post(
        f"/api/automation/workflows/{workflow_id}/test", json={"job_id": their_job}
    )

    assert answer.status_code == 404
    assert str(other) not in answer.text


@pytest.mark.broker_independent
def test_workflow_logs_come_newest_first_a_page_at_a_time(base_url: str) -> None:
    me, token = listener()
    workflow_id = stored_workflow(me)
    job = upload(me)
    ids = [execution(workflow_id, job, "completed") for _ in range(3)]
    owner = client(base_url, token)
    logs = f"/api/automation/workflows/{workflow_id}/logs"

    first = owner.get(f"{logs}?limit=2").json()
    last = owner.get(f"{logs}?limit=2&before={first['next_before']}").json()

    assert [e["id"] for e in first["items"]] == [ids[2], ids[1]]
    assert [e["id"] for e in last["items"]] == [ids[0]]
    assert last["next_before"] is None


@pytest.mark.broker_independent
def test_retry_puts_a_failed_workflow_execution_back_to_pending(base_url: str) -> None:
    me, _ = listener()
    workflow_id = stored_workflow(me)
    failed = execution(workflow_id, upload(me), "failed")

    answer = client(base_url, token_for("admin")).post(f"/api/automation/retry/workflow/{failed}")

    assert answer.status_code == 200, answer.json()
    assert answer.json()["workflow_id"] == workflow_id
    with session_scope() as session:
        row = session.get(WorkflowExecution, failed)
        assert row is not None and (row.status, row.attempts) == ("pending", 0)
    assert ("admin-user", f"workflow:{failed}") in audited("retry")


@pytest.mark.broker_independent
def test_retry_of_a_workflow_execution_that_has_not_failed_is_a_conflict(base_url: str) -> None:
    me, _ = listener()
    done = execution(stored_workflow(me), upload(me), "completed")

    answer = client(base_url, token_for("admin")).post(f"/api/automation/retry/workflow/{done}")

    assert answer.status_code == 409


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
    # A user token: its own user's workflows only (someone else's answer 404).
    ("GET", "/api/automation/workflows"): {"admin", "viewer", "user"},
    ("POST", "/api/automation/workflows"): {"admin", "user"},
    ("GET", "/api/automation/workflows/{workflow_id}"): {"admin", "viewer", "user"},
    ("POST", "/api/automation/workflows/{workflow_id}/enable"): {"admin", "user"},
    ("POST", "/api/automation/workflows/{workflow_id}/disable"): {"admin", "user"},
    ("POST", "/api/automation/workflows/{workflow_id}/test"): {"admin", "user"},
    ("GET", "/api/automation/workflows/{workflow_id}/logs"): {"admin", "viewer", "user"},
    # Media ingest: a user token uploads as its own user and reads only its own jobs.
    ("POST", "/api/automation/ingest"): {"admin", "service", "user"},
    ("GET", "/api/automation/ingest"): {"admin", "viewer"},
    ("GET", "/api/automation/ingest/jobs"): {"admin", "viewer", "user"},
    ("GET", "/api/automation/ingest/jobs/{job_id}"): {"admin", "viewer", "user"},
    ("POST", "/api/automation/ingest/pause"): {"admin"},
    ("POST", "/api/automation/ingest/resume"): {"admin"},
    ("POST", "/api/automation/ingest/retry-failed"): {"admin"},
    ("POST", "/api/automation/ingest/clear-failed"): {"admin"},
    ("PUT", "/api/automation/ingest/config"): {"admin"},
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
        url = path.format(name="no-such-entry", kind="ledger", row_id=0, workflow_id=0, job_id=0)
        for role, token in tokens.items():
            answer = client(base_url, token).request(
                method, url, json={} if method in ("POST", "PUT") else None
            )
            if (answer.status_code == 403) == (role in allowed):
                refused[(method, path, role)] = answer.status_code
    assert refused == {}
