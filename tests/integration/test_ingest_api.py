"""The ingest routes of the API over real HTTP to a real uvicorn: uploads become queued jobs
(who may upload for whom, the size limit, what is refused and why), the jobs and the
statistics read back, and an admin's pause, resume, retry, clear and live settings, each
in the audit log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from console.accounts import create_admin, issue_token, issue_user_token
from db.models import AdminAudit, IngestJob, IngestPipeline
from db.session import session_scope
from tasks.ingest import control
from tasks.ingest.storage import Bucket
from tests import factories
from tests.audio import image_bytes, sine, write
from tests.support import serve_console
from worker.settings import get_settings

pytestmark = pytest.mark.committed
MAX_BYTES = 1 << 20  # the module's INGEST_MAX_BYTES: a test's files are tens of kilobytes
INGEST = "/api/automation/ingest"


@dataclass(frozen=True)
class Console:
    url: str
    bucket: Bucket
    scratch: Path  # where uploads are streamed before the bucket


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    root = tmp_path_factory.mktemp("ingest-api")
    bucket = Bucket((root / "bucket").as_uri())
    settings = get_settings().model_copy(
        update={"ingest_url": bucket.url, "ingest_max_bytes": MAX_BYTES, "data_dir": root}
    )
    with serve_console(settings) as url:
        yield Console(url, bucket, root / "ingest-uploads")


_clients: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def client(console: Console, token: str) -> httpx.Client:
    _clients.append(
        httpx.Client(base_url=console.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    )
    return _clients[-1]


def token_for(role: str) -> str:
    with session_scope() as session:
        create_admin(session, f"{role}-user", role)
        token, _ = issue_token(session, f"{role}-user")
    return token


def listener() -> tuple[int, str]:
    with session_scope() as session:
        user = factories.user(session)
        token, _ = issue_user_token(session, user.id)
        return user.id, token


def new_user() -> int:
    with session_scope() as session:
        return factories.user(session).id


def wav(tmp_path: Path, name: str = "tone.wav") -> Path:
    return write(tmp_path / name, sine(440, 0.3, duration=1.0))


def upload(
    http: httpx.Client, *paths: Path, cover: Path | None = None, **fields: Any
) -> httpx.Response:
    files = [("files", (p.name, p.read_bytes())) for p in paths]
    if cover is not None:
        files.append(("cover", (cover.name, cover.read_bytes())))
    return http.post(INGEST, files=files, data={k: str(v) for k, v in fields.items()})


def jobs() -> list[IngestJob]:
    with session_scope() as session:
        found = list(session.scalars(select(IngestJob).order_by(IngestJob.id)))
        session.expunge_all()
        return found


def objects(bucket: Bucket) -> list[str]:
    root = Path(bucket.root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def audited(action: str) -> list[AdminAudit]:
    with session_scope() as session:
        rows = list(session.scalars(select(AdminAudit).where(AdminAudit.action == action)))
        session.expunge_all()
        return rows


def add_job(status: str, user_id: int | None = None, **fields: Any) -> int:
    with session_scope() as session:
        job = IngestJob(
            object_path=f"uploads/x/{status}.wav", status=status, user_id=user_id, **fields
        )
        session.add(job)
        session.flush()
        return job.id


# Uploads


def test_an_admin_s_upload_becomes_a_queued_job_for_the_user_it_names(
    console: Console, tmp_path: Path
) -> None:
    user_id = new_user()
    sent = wav(tmp_path)

    answer = upload(client(console, token_for("admin")), sent, user_id=user_id)

    assert answer.status_code == 202, answer.text
    [job] = jobs()
    assert answer.json() == {"job_ids": [job.id], "user_id": user_id}
    assert (job.status, job.user_id, job.kind, job.submitted_via) == (
        "queued",
        user_id,
        "audio",
        "api",
    )
    assert job.object_path.endswith("/tone.wav")
    assert console.bucket.read_bytes(job.object_path) == sent.read_bytes()


def test_an_audio_file_and_the_image_of_its_name_sent_together_are_one_job(
    console: Console, tmp_path: Path
) -> None:
    cover = tmp_path / "tone.png"
    cover.write_bytes(image_bytes("PNG", (300, 300), (200, 30, 30)))

    answer = upload(client(console, token_for("admin")), wav(tmp_path), cover)

    assert answer.status_code == 202, answer.text
    [job] = jobs()
    assert job.cover_path is not None and job.cover_path.endswith("/tone.png")
    assert console.bucket.read_bytes(job.cover_path) == cover.read_bytes()


def test_the_cover_field_is_the_cover_of_the_one_audio_file(
    console: Console, tmp_path: Path
) -> None:
    art = tmp_path / "front.jpg"
    art.write_bytes(image_bytes("JPEG", (300, 300), (30, 30, 200)))

    answer = upload(client(console, token_for("admin")), wav(tmp_path), cover=art)

    assert answer.status_code == 202, answer.text
    [job] = jobs()
    assert job.cover_path is not None and job.cover_path.endswith("/front.jpg")


def test_a_cover_with_two_audio_files_is_refused(console: Console, tmp_path: Path) -> None:
    art = tmp_path / "front.jpg"
    art.write_bytes(image_bytes("JPEG", (64, 64), (30, 30, 200)))

    answer = upload(
        client(console, token_for("admin")),
        wav(tmp_path, "a.wav"),
        wav(tmp_path, "b.wav"),
        cover=art,
    )

    assert answer.status_code == 400
    assert answer.json()["detail"]["error"] == "cover goes with exactly one audio file"
    assert jobs() == []


def test_several_files_make_one_job_each_in_the_order_sent(
    console: Console, tmp_path: Path
) -> None:
    answer = upload(
        client(console, token_for("admin")), wav(tmp_path, "one.wav"), wav(tmp_path, "two.wav")
    )

    assert answer.status_code == 202, answer.text
    assert [job.object_path.rsplit("/", 1)[1] for job in jobs()] == ["one.wav", "two.wav"]
    assert answer.json()["job_ids"] == [job.id for job in jobs()]


def test_a_user_token_uploads_as_its_own_user(console: Console, tmp_path: Path) -> None:
    me, token = listener()

    answer = upload(client(console, token), wav(tmp_path))

    assert answer.status_code == 202, answer.text
    assert [job.user_id for job in jobs()] == [me]


def test_a_user_token_naming_another_user_is_forbidden_and_nothing_is_kept(
    console: Console, tmp_path: Path
) -> None:
    _, token = listener()
    other = new_user()
    before = objects(console.bucket)

    answer = upload(client(console, token), wav(tmp_path), user_id=other)

    assert answer.status_code == 403
    assert answer.json()["detail"] == "a user token uploads only as its own user"
    assert jobs() == []
    assert objects(console.bucket) == before


def test_a_user_token_may_not_give_a_cover_to_a_track_it_did_not_upload(
    console: Console, tmp_path: Path
) -> None:
    _, token = listener()
    with session_scope() as session:
        track_id = factories.track(session, factories.artist(session)).id
    art = tmp_path / "new-cover.png"
    art.write_bytes(image_bytes("PNG", (64, 64), (1, 2, 3)))

    answer = upload(client(console, token), art, track_id=track_id)

    assert answer.status_code == 403
    assert f"track {track_id} is not from this user's uploads" in answer.json()["detail"]
    assert jobs() == []


def test_a_user_token_gives_a_new_cover_to_a_track_it_uploaded(
    console: Console, tmp_path: Path
) -> None:
    me, token = listener()
    with session_scope() as session:
        track_id = factories.track(session, factories.artist(session)).id
    add_job("done", me, kind="audio", track_id=track_id)
    art = tmp_path / "new-cover.png"
    art.write_bytes(image_bytes("PNG", (64, 64), (1, 2, 3)))

    answer = upload(client(console, token), art, track_id=track_id)

    assert answer.status_code == 202, answer.text
    job = jobs()[-1]
    assert (job.kind, job.track_id, job.user_id) == ("image", track_id, me)


def test_a_service_token_uploads_for_any_user(console: Console, tmp_path: Path) -> None:
    user_id = new_user()

    answer = upload(client(console, token_for("service")), wav(tmp_path), user_id=user_id)

    assert answer.status_code == 202, answer.text
    assert [job.user_id for job in jobs()] == [user_id]


def test_a_viewer_may_not_upload(console: Console, tmp_path: Path) -> None:
    answer = upload(client(console, token_for("viewer")), wav(tmp_path))

    assert answer.status_code == 403
    assert answer.json()["detail"] == (
        "role 'viewer' may not ingest (needs admin, service or a user token)"
    )


def test_an_unknown_user_is_not_found_naming_it_and_nothing_is_kept(
    console: Console, tmp_path: Path
) -> None:
    before = objects(console.bucket)

    answer = upload(client(console, token_for("admin")), wav(tmp_path), user_id=987654)

    assert answer.status_code == 404
    assert answer.json()["detail"] == "there is no user 987654"
    assert objects(console.bucket) == before


def test_an_unknown_track_is_not_found_naming_it(console: Console, tmp_path: Path) -> None:
    art = tmp_path / "cover.png"
    art.write_bytes(image_bytes("PNG", (64, 64), (1, 2, 3)))

    answer = upload(client(console, token_for("admin")), art, track_id=987654)

    assert answer.status_code == 404
    assert answer.json()["detail"] == "there is no track 987654"


def test_a_file_over_the_size_limit_is_413_and_nothing_is_left_behind(
    console: Console, tmp_path: Path
) -> None:
    small = wav(tmp_path, "small.wav")
    large = write(tmp_path / "large.wav", np.zeros(MAX_BYTES // 2 + 1000), rate=22_050)
    assert large.stat().st_size > MAX_BYTES  # 16-bit samples: two bytes each
    before = objects(console.bucket)

    answer = upload(client(console, token_for("admin")), small, large)

    assert answer.status_code == 413
    assert answer.json()["detail"] == (
        f"large.wav is larger than INGEST_MAX_BYTES ({MAX_BYTES} bytes): refused, nothing was kept"
    )
    assert jobs() == []
    assert objects(console.bucket) == before
    assert list(console.scratch.iterdir()) == []


def test_a_file_of_exactly_the_limit_is_taken(console: Console, tmp_path: Path) -> None:
    exact = tmp_path / "exact.wav"
    exact.write_bytes(b"\0" * MAX_BYTES)

    answer = upload(client(console, token_for("admin")), exact)

    assert answer.status_code == 202, answer.text


def test_an_upload_without_files_is_refused(console: Console) -> None:
    answer = client(console, token_for("admin")).post(INGEST, files={"user_id": (None, "1")})

    assert answer.status_code == 400
    assert answer.json()["detail"]["error"] == (
        "send one or more files as the multipart field `files`"
    )


def test_a_body_that_is_not_multipart_is_415(console: Console) -> None:
    answer = client(console, token_for("admin")).post(INGEST, json={"files": []})

    assert answer.status_code == 415
    assert answer.json()["detail"] == "send the files as multipart/form-data"


def test_an_unknown_field_is_refused_naming_the_fields(console: Console, tmp_path: Path) -> None:
    answer = client(console, token_for("admin")).post(
        INGEST, files=[("file", ("tone.wav", wav(tmp_path).read_bytes()))]
    )

    assert answer.status_code == 400
    assert answer.json()["detail"]["error"] == (
        "unknown field 'file'; the fields are files, cover, user_id, track_id"
    )
    assert list(console.scratch.iterdir()) == []


def test_a_body_cut_off_before_its_closing_boundary_is_refused_and_nothing_is_kept(
    console: Console,
) -> None:
    body = (
        b"--edge\r\n"
        b'Content-Disposition: form-data; name="files"; filename="cut.wav"\r\n\r\n'
        b"RIFF and the rest never came"
    )

    answer = client(console, token_for("admin")).post(
        INGEST, content=body, headers={"Content-Type": "multipart/form-data; boundary=edge"}
    )

    assert answer.status_code == 400
    assert answer.json()["detail"]["error"] == "the upload ended before its closing boundary"
    assert jobs() == []
    assert list(console.scratch.iterdir()) == []


def test_a_user_id_that_is_not_a_number_is_refused(console: Console, tmp_path: Path) -> None:
    answer = upload(client(console, token_for("admin")), wav(tmp_path), user_id="alice")

    assert answer.status_code == 400
    assert answer.json()["detail"]["error"] == "user_id: a whole number, not 'alice'"


def test_a_file_name_that_climbs_out_keeps_only_its_last_part(
    console: Console, tmp_path: Path
) -> None:
    answer = client(console, token_for("admin")).post(
        INGEST, files=[("files", ("../../etc/tone.wav", wav(tmp_path).read_bytes()))]
    )

    assert answer.status_code == 202, answer.text
    [job] = jobs()
    assert job.object_path.startswith("uploads/")
    assert job.object_path.endswith("/tone.wav")
    assert ".." not in job.object_path


def test_each_upload_is_in_the_audit_log_with_its_jobs(console: Console, tmp_path: Path) -> None:
    user_id = new_user()

    answer = upload(client(console, token_for("service")), wav(tmp_path), user_id=user_id)

    [row] = audited("ingest.submit")
    assert (row.actor, row.target) == ("service-user", f"user:{user_id}")
    assert row.detail["job_ids"] == answer.json()["job_ids"]
    assert row.detail["files"] == ["tone.wav"]
    assert row.detail["bytes"] == (tmp_path / "tone.wav").stat().st_size
    assert row.remote == "127.0.0.1"


# Reading jobs and statistics


def test_jobs_are_listed_newest_first_a_page_at_a_time(console: Console) -> None:
    ids = [add_job("queued") for _ in range(3)]
    viewer = client(console, token_for("viewer"))

    first = viewer.get(f"{INGEST}/jobs", params={"limit": 2}).json()
    second = viewer.get(
        f"{INGEST}/jobs", params={"limit": 2, "before": first["next_before"]}
    ).json()

    assert [j["id"] for j in first["items"]] == [ids[2], ids[1]]
    assert [j["id"] for j in second["items"]] == [ids[0]]
    assert second["next_before"] is None


def test_jobs_are_listed_by_status(console: Console) -> None:
    add_job("queued")
    failed = add_job("failed", error="not audio: a text file")

    answer = client(console, token_for("viewer")).get(f"{INGEST}/jobs?status=failed").json()

    assert [(j["id"], j["error"]) for j in answer["items"]] == [(failed, "not audio: a text file")]


def test_an_unknown_status_is_refused(console: Console) -> None:
    answer = client(console, token_for("viewer")).get(f"{INGEST}/jobs?status=paused")

    assert answer.status_code == 422


def test_a_user_token_lists_only_its_own_jobs(console: Console) -> None:
    me, token = listener()
    mine = add_job("queued", me)
    add_job("queued", new_user())
    add_job("queued")

    answer = client(console, token).get(f"{INGEST}/jobs").json()

    assert [j["id"] for j in answer["items"]] == [mine]


def test_one_job_is_shown_with_what_its_steps_recorded(console: Console) -> None:
    job_id = add_job(
        "failed",
        step="analysis",
        error="the decoder gave up",
        outputs={"probe": {"kind": "audio", "format": "WAV"}},
    )

    answer = client(console, token_for("viewer")).get(f"{INGEST}/jobs/{job_id}")

    assert answer.status_code == 200
    job = answer.json()
    assert (job["id"], job["status"], job["step"]) == (job_id, "failed", "analysis")
    assert job["outputs"] == {"probe": {"kind": "audio", "format": "WAV"}}


def test_an_unknown_job_is_404(console: Console) -> None:
    answer = client(console, token_for("viewer")).get(f"{INGEST}/jobs/987654")

    assert answer.status_code == 404
    assert answer.json()["detail"] == "no ingest job 987654"


def test_someone_else_s_job_is_not_found_for_a_user_token(console: Console) -> None:
    _, token = listener()
    theirs = add_job("done", new_user())

    answer = client(console, token).get(f"{INGEST}/jobs/{theirs}")

    assert answer.status_code == 404
    assert answer.json()["detail"] == f"no ingest job {theirs}"


def test_the_statistics_count_jobs_by_state_and_the_last_hour(console: Console) -> None:
    now = dt.datetime.now(dt.UTC)
    add_job("queued")
    add_job("done", started_at=now - dt.timedelta(minutes=3), finished_at=now)
    add_job("failed", finished_at=now)

    stats = client(console, token_for("viewer")).get(INGEST, params={"hours": 3}).json()

    assert stats["counts"] == {"queued": 1, "processing": 0, "done": 1, "failed": 1}
    assert (stats["done_last_hour"], stats["failed_last_hour"]) == (1, 1)
    assert stats["paused"] is False
    assert len(stats["per_hour"]) == 3
    assert stats["oldest_queued"]["object_path"] == "uploads/x/queued.wav"


# An admin's controls


def test_an_admin_pauses_and_resumes_the_pipeline_and_both_are_audited(console: Console) -> None:
    admin = client(console, token_for("admin"))

    paused = admin.post(f"{INGEST}/pause").json()
    again = admin.post(f"{INGEST}/pause").json()
    stats = admin.get(INGEST).json()
    resumed = admin.post(f"{INGEST}/resume").json()

    assert paused["changed"] is True and again["changed"] is False
    assert (paused["controls"]["paused"], paused["controls"]["paused_by"]) == (True, "admin-user")
    assert (stats["paused"], stats["paused_by"]) == (True, "admin-user")
    assert resumed["changed"] is True and resumed["controls"]["paused"] is False
    assert [r.action for r in audited("ingest.pause") + audited("ingest.resume")] == [
        "ingest.pause",
        "ingest.pause",
        "ingest.resume",
    ]


def test_retry_failed_puts_every_failed_job_back_in_the_queue(console: Console) -> None:
    failed = [add_job("failed", attempts=5, error="gave up") for _ in range(2)]
    done = add_job("done")

    answer = client(console, token_for("admin")).post(f"{INGEST}/retry-failed")

    assert answer.status_code == 200
    assert sorted(answer.json()["requeued"]) == failed
    assert {j.id: j.status for j in jobs()} == {
        failed[0]: "queued",
        failed[1]: "queued",
        done: "done",
    }
    [row] = audited("ingest.retry_failed")
    assert sorted(row.detail["requeued"]) == failed


def test_clear_failed_deletes_the_failed_jobs_only(console: Console) -> None:
    failed = add_job("failed")
    queued = add_job("queued")

    answer = client(console, token_for("admin")).post(f"{INGEST}/clear-failed")

    assert answer.json()["cleared"] == [failed]
    assert [j.id for j in jobs()] == [queued]
    assert audited("ingest.clear_failed")[0].detail == {"cleared": [failed]}


def test_an_admin_sets_the_live_batch_size_and_a_step_s_concurrency(console: Console) -> None:
    answer = client(console, token_for("admin")).put(
        f"{INGEST}/config", json={"batch_size": 3, "concurrency": {"analysis": 2}}
    )

    assert answer.status_code == 200, answer.text
    controls = answer.json()["controls"]
    assert controls["batch_size"] == 3
    assert controls["step_concurrency"]["analysis"] == 2
    with session_scope() as session:
        row = session.get(IngestPipeline, 1)
        assert row is not None and (row.batch_size, row.step_concurrency) == (3, {"analysis": 2})
    assert audited("ingest.config")[0].detail == {
        "set": {"batch_size": 3, "concurrency": {"analysis": 2}}
    }


def test_a_control_set_to_default_goes_back_to_its_setting(console: Console) -> None:
    admin = client(console, token_for("admin"))
    admin.put(f"{INGEST}/config", json={"batch_size": 3})

    answer = admin.put(f"{INGEST}/config", json={"batch_size": "default"})

    assert answer.json()["controls"]["batch_size"] == get_settings().ingest_batch_size


def test_an_unknown_step_is_refused_naming_the_steps_and_nothing_changes(
    console: Console,
) -> None:
    answer = client(console, token_for("admin")).put(
        f"{INGEST}/config", json={"batch_size": 3, "concurrency": {"thumbnails": 2}}
    )

    assert answer.status_code == 400
    assert answer.json()["detail"]["error"] == (
        "concurrency: no step 'thumbnails'; the steps are probe, analysis, images, publish"
    )
    with session_scope() as session:
        assert control.controls(session)["batch_size"] is None
    assert audited("ingest.config") == []


def test_a_batch_size_below_one_is_refused(console: Console) -> None:
    answer = client(console, token_for("admin")).put(f"{INGEST}/config", json={"batch_size": 0})

    assert answer.status_code == 400
    assert answer.json()["detail"]["error"].startswith("batch_size: must be a number of at least 1")


def test_a_config_with_nothing_to_change_is_refused(console: Console) -> None:
    answer = client(console, token_for("admin")).put(f"{INGEST}/config", json={})

    assert answer.status_code == 400
    assert answer.json()["detail"]["error"] == "give batch_size, rate_per_minute or concurrency"
