"""``automation ingest``: the operators' command line for the ingest pipeline, against the
real database and a bucket in a temporary directory (each command commits through its own
session, so every test here is ``committed``), ``automation retry ingest``, and the ingest
section of ``automation status``."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import AdminAudit, IngestJob, IngestPipeline, Track
from tasks.ingest.pipeline import Pipeline, Verdict
from tasks.ingest.storage import Bucket, open_bucket
from tests import audio
from tests import factories as f
from tests.support import take_message
from worker.cli import main
from worker.settings import get_settings

pytestmark = pytest.mark.committed


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    """The CLI's bucket, named by INGEST_URL as in production (the settings are cached:
    cleared on the way in and out)."""
    url = (tmp_path / "bucket").as_uri()
    monkeypatch.setenv("INGEST_URL", url)
    monkeypatch.setenv("INGEST_THUMBNAIL_SIZES", "64")
    get_settings.cache_clear()
    yield Bucket(url)
    monkeypatch.undo()
    get_settings.cache_clear()


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def wav(tmp_path: Path, name: str = "a.wav", seconds: float = 2.0) -> Path:
    return audio.write(tmp_path / name, audio.sine(440, 0.3, seconds))


def png(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(audio.image_bytes("PNG", (120, 120), (200, 30, 30)))
    return path


def ids_printed(outcome: Result) -> list[int]:
    """Each job id alone on its own line of standard output, nothing else there."""
    assert outcome.exit_code == 0, outcome.output
    lines = outcome.stdout.splitlines()
    assert all(line.isdigit() for line in lines), lines
    return [int(line) for line in lines]


def committed_user(session: Session) -> int:
    user = f.user(session)
    session.commit()
    return user.id


def add_job(session: Session, status: str, **fields: Any) -> int:
    job = IngestJob(object_path=f"uploads/x/{status}.wav", status=status, **fields)
    session.add(job)
    session.commit()
    return job.id


def job(session: Session, job_id: int) -> IngestJob | None:
    session.expire_all()
    return session.get(IngestJob, job_id)


def run(job_id: int, message: str) -> Verdict:
    settings = get_settings()
    pipeline = Pipeline(
        settings,
        open_bucket(settings),
        celery_task_id=message,
        hostname="test@host",
        resumable=False,
        sleep=lambda seconds: None,
    )
    return pipeline.run(job_id)


def audit_actions(session: Session) -> list[tuple[str, str | None]]:
    session.expire_all()
    return [
        (row.action, row.target)
        for row in session.scalars(select(AdminAudit).order_by(AdminAudit.id))
    ]


# -- sending files ----------------------------------------------------------------------


def test_ingest_prints_each_job_id_alone_on_its_line_and_puts_the_files_in_the_bucket(
    session: Session, bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INGEST_MAX_ATTEMPTS", "3")
    get_settings.cache_clear()
    user_id = committed_user(session)
    first = wav(tmp_path, "a.wav")
    second = audio.write(tmp_path / "b.flac", audio.sine(220, 0.3, 2.0))

    outcome = cli("ingest", str(first), str(second), "--user", str(user_id))

    ids = ids_printed(outcome)
    assert len(ids) == 2
    jobs = [job(session, job_id) for job_id in ids]
    for row, source in zip(jobs, (first, second), strict=True):
        assert row is not None
        assert (row.status, row.user_id, row.submitted_via, row.max_attempts) == (
            "queued",
            user_id,
            "cli",
            3,
        )
        assert row.object_path.endswith(f"/{source.name}")
        assert bucket.read_bytes(row.object_path) == source.read_bytes()


def test_ingest_add_is_the_same_command(session: Session, bucket: Bucket, tmp_path: Path) -> None:
    [job_id] = ids_printed(cli("ingest", "add", str(wav(tmp_path))))

    row = job(session, job_id)
    assert row is not None and bucket.exists(row.object_path)


def test_an_audio_file_and_an_image_of_the_same_name_become_one_job_with_its_cover(
    session: Session, bucket: Bucket, tmp_path: Path
) -> None:
    song, cover = wav(tmp_path, "song.wav"), png(tmp_path, "song.png")

    [job_id] = ids_printed(cli("ingest", str(song), str(cover)))

    row = job(session, job_id)
    assert row is not None and row.cover_path is not None
    assert row.cover_path.endswith("/song.png")
    assert bucket.read_bytes(row.cover_path) == cover.read_bytes()


def test_an_unknown_user_is_refused_in_one_line_and_makes_no_job(
    session: Session, bucket: Bucket, tmp_path: Path
) -> None:
    outcome = cli("ingest", str(wav(tmp_path)), "--user", "424242")

    assert outcome.exit_code == 1
    assert outcome.output.splitlines() == ["Error: there is no user 424242"]
    assert session.scalar(text("SELECT count(*) FROM ingest_jobs")) == 0


def test_a_missing_file_is_refused_in_one_line_and_makes_no_job(
    session: Session, bucket: Bucket, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.wav"

    outcome = cli("ingest", str(wav(tmp_path)), str(missing))

    assert outcome.exit_code == 1
    assert outcome.output.splitlines() == [f"Error: no such file: {missing}"]
    assert session.scalar(text("SELECT count(*) FROM ingest_jobs")) == 0


def test_a_file_named_like_a_subcommand_is_sent_as_dot_slash_name(
    session: Session, bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wav(tmp_path, "status.wav").rename(tmp_path / "status")
    monkeypatch.chdir(tmp_path)

    as_command = cli("ingest", "status")
    [job_id] = ids_printed(cli("ingest", "./status"))

    assert as_command.exit_code == 0 and as_command.stdout.startswith("ingest at ")
    row = job(session, job_id)
    assert row is not None and row.object_path.endswith("/status")


# -- pause, resume, status ----------------------------------------------------------------


def test_pause_says_how_many_jobs_wait_and_resume_starts_them(session: Session) -> None:
    add_job(session, "queued")
    add_job(session, "queued")

    paused = cli("ingest", "pause")
    status = cli("ingest", "status")
    resumed = cli("ingest", "resume")

    assert paused.exit_code == 0, paused.output
    assert "ingest paused" in paused.output and "2 queued job(s) wait" in paused.output
    first = status.output.splitlines()[0]
    assert ": PAUSED since " in first
    assert first.endswith(f" by {getpass.getuser()}@{socket.gethostname()}")
    assert resumed.output.strip() == "ingest resumed: queued jobs start now"
    session.expire_all()
    assert session.scalar(select(IngestPipeline.paused_at)) is None


def test_pausing_twice_says_it_was_already_paused(session: Session) -> None:
    cli("ingest", "pause")

    again = cli("ingest", "pause")

    assert again.exit_code == 0
    assert again.output.startswith("ingest was already paused (since ")
    assert again.output.rstrip().endswith("nothing changed")


def test_status_text_shows_the_state_the_counts_and_the_oldest_queued_job(
    session: Session,
) -> None:
    now = dt.datetime.now(dt.UTC)
    oldest = add_job(session, "queued", created_at=now - dt.timedelta(hours=2))
    add_job(session, "failed", started_at=now - dt.timedelta(minutes=5), finished_at=now)

    outcome = cli("ingest", "status", "--hours", "2")

    assert outcome.exit_code == 0, outcome.output
    lines = outcome.output.splitlines()
    assert lines[0].endswith(": running")
    assert "  jobs:          waiting 1, active 0, done 0, failed 1" in lines
    assert any(
        line.startswith(f"  oldest queued: job {oldest}, waiting 2 h 0 min") for line in lines
    )
    assert len([line for line in lines if line.startswith("    20")]) == 2  # two hours' rows


def test_status_json_has_the_counts_the_last_hour_the_oldest_job_and_the_controls(
    session: Session,
) -> None:
    now = dt.datetime.now(dt.UTC)
    oldest = add_job(session, "queued", created_at=now - dt.timedelta(hours=3))
    add_job(session, "processing", started_at=now)
    for seconds in (10, 30):
        add_job(
            session,
            "done",
            started_at=now - dt.timedelta(minutes=5, seconds=seconds),
            finished_at=now - dt.timedelta(minutes=5),
        )
    cli("ingest", "config", "--batch-size", "4")

    outcome = cli("ingest", "status", "--json", "--hours", "3")

    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.output)
    assert report["paused"] is False
    assert report["counts"] == {"queued": 1, "processing": 1, "done": 2, "failed": 0}
    assert (report["done_last_hour"], report["failed_last_hour"]) == (2, 0)
    assert report["queued_last_hour"] == 0
    assert report["jobs_per_minute"] == pytest.approx(2 / 60, abs=0.01)
    assert report["median_seconds_last_hour"] == 20
    assert report["oldest_queued"]["id"] == oldest
    assert 3 * 3600 <= report["oldest_queued"]["waiting_seconds"] < 3 * 3600 + 60
    assert report["controls"]["batch_size"] == 4
    assert [hour["done"] for hour in report["per_hour"]][-1] == 2
    assert len(report["per_hour"]) == 3


# -- config ---------------------------------------------------------------------------------


def test_config_sets_a_live_control_and_default_puts_the_setting_back(session: Session) -> None:
    settings = get_settings()

    set_live = cli("ingest", "config", "--batch-size", "3", "--concurrency", "analysis=2")
    reset = cli("ingest", "config", "--batch-size", "default", "--concurrency", "analysis=default")

    assert set_live.exit_code == 0, set_live.output
    assert "  batch size:  3 (live)" in set_live.output.splitlines()
    assert "analysis 2 (live)" in set_live.output
    assert f"  batch size:  {settings.ingest_batch_size} (setting)" in reset.output.splitlines()
    session.expire_all()
    row = session.scalars(select(IngestPipeline)).one()
    assert (row.batch_size, row.step_concurrency) == (None, {})


def test_config_refuses_an_unknown_step_in_one_line_and_changes_nothing(session: Session) -> None:
    outcome = cli("ingest", "config", "--batch-size", "3", "--concurrency", "thumbnails=2")

    assert outcome.exit_code == 1
    assert outcome.output.splitlines() == [
        "Error: concurrency: no step 'thumbnails'; the steps are probe, analysis, images, publish"
    ]
    assert session.scalar(select(IngestPipeline.batch_size)) is None
    assert audit_actions(session) == []


def test_config_refuses_a_value_that_is_not_a_number_or_default(session: Session) -> None:
    outcome = cli("ingest", "config", "--rate", "fast")

    assert outcome.exit_code == 1
    assert outcome.output.splitlines() == [
        "Error: rate: 'fast' is not a number of at least 1, nor 'default'"
    ]


# -- failed jobs ------------------------------------------------------------------------------


def test_retry_failed_resumes_at_the_failed_step_keeping_the_finished_steps(
    session: Session, bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INGEST_MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    [job_id] = ids_printed(cli("ingest", str(wav(tmp_path, "click.wav"))))
    # A file where the job's media folder goes: the images step cannot write there.
    blocker = Path(bucket.path(f"media/{job_id}"))
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")
    assert run(job_id, "message-1").status == "failed"
    # Marks the finished probe's output: a probe run again would write the file's own title.
    session.execute(
        text(
            "UPDATE ingest_jobs SET outputs = jsonb_set(outputs, '{probe,title}', "
            "'\"Kept From Before\"') WHERE id = :id"
        ),
        {"id": job_id},
    )
    session.commit()
    blocker.unlink()

    outcome = cli("ingest", "retry-failed")
    done = run(job_id, "message-2")

    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.strip().endswith(f"failed: {job_id}")
    assert done.status == "done", done.detail
    row = job(session, job_id)
    assert row is not None
    assert set(row.outputs) == {"probe", "analysis", "images", "publish"}
    assert session.get(Track, row.track_id).title == "Kept From Before"


def test_retry_failed_of_a_named_job_that_is_not_failed_says_why(session: Session) -> None:
    failed = add_job(session, "failed", error="boom", step="images")
    done = add_job(session, "done")

    outcome = cli("ingest", "retry-failed", str(failed), str(done), "999999")

    assert outcome.exit_code == 1
    assert outcome.stdout.splitlines() == [
        f"1 failed job(s) queued again, each resuming at the step that failed: {failed}"
    ]
    assert outcome.stderr.splitlines() == [
        f"Error: job {done}: not retried: it is done, not failed; "
        "job 999999: not retried: no such job"
    ]
    assert [job(session, failed).status, job(session, done).status] == ["queued", "done"]


def test_clear_failed_deletes_the_named_failed_jobs_without_asking(session: Session) -> None:
    first, second = add_job(session, "failed"), add_job(session, "failed")

    outcome = cli("ingest", "clear-failed", str(first))

    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.strip() == f"1 failed job(s) deleted: {first}"
    assert job(session, first) is None
    assert job(session, second) is not None


def test_clear_failed_of_every_job_asks_first_and_keeps_them_on_no(session: Session) -> None:
    failed = add_job(session, "failed")

    outcome = cli("ingest", "clear-failed", input="n\n")

    assert outcome.exit_code == 1
    assert "delete 1 failed job(s)? their uploads stay in the bucket" in outcome.output
    assert job(session, failed) is not None
    assert audit_actions(session) == []


def test_clear_failed_yes_deletes_every_failed_job_and_only_those(session: Session) -> None:
    failed = [add_job(session, "failed"), add_job(session, "failed")]
    kept = add_job(session, "queued")

    outcome = cli("ingest", "clear-failed", "--yes")

    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.strip() == f"2 failed job(s) deleted: {failed[0]}, {failed[1]}"
    assert [job(session, job_id) for job_id in failed] == [None, None]
    assert job(session, kept) is not None


def test_automation_retry_ingest_requeues_a_failed_job_at_its_step(session: Session) -> None:
    failed = add_job(session, "failed", error="boom", step="analysis", attempts=5)

    outcome = cli("retry", "ingest", str(failed))

    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.strip() == (
        f"ingest job {failed}: queued again; it resumes at step analysis"
    )
    row = job(session, failed)
    assert row is not None and (row.status, row.attempts) == ("queued", 0)
    assert audit_actions(session) == [("retry", f"ingest:{failed}")]


def test_automation_retry_ingest_of_a_job_not_failed_is_refused_in_one_line(
    session: Session,
) -> None:
    done = add_job(session, "done")

    refused = cli("retry", "ingest", str(done))
    unknown = cli("retry", "ingest", "999999")

    assert refused.exit_code == 1
    assert refused.output.splitlines() == [
        f"Error: ingest job {done} is done, not failed: nothing to retry"
    ]
    assert unknown.output.splitlines() == ["Error: no ingest job 999999"]
    assert audit_actions(session) == []


# -- jobs ---------------------------------------------------------------------------------------


def test_show_gives_each_finished_step_with_its_attempt_and_a_summary_not_the_peaks(
    session: Session, bucket: Bucket, tmp_path: Path
) -> None:
    source = audio.tag(
        audio.write(tmp_path / "click.wav", audio.click_track(120, duration=8.0)),
        title="Click",
        artist="Metro",
    )
    [job_id] = ids_printed(cli("ingest", str(source)))
    assert run(job_id, "message-1").status == "done"
    track_id = job(session, job_id).track_id  # type: ignore[union-attr]

    shown = cli("ingest", "show", str(job_id))
    as_json = json.loads(cli("ingest", "show", str(job_id), "--json").output)

    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"ingest job {job_id}: done (audio), step publish, attempts 1/5"
    assert f"  track:    {track_id}" in lines
    probe, analysis, images, publish = lines[-4:]
    assert probe.startswith("    probe     attempt 1  kind audio, format WAV, duration_seconds")
    assert "title Click, artist Metro" in probe
    assert analysis.startswith("    analysis  attempt 1  tempo 1")
    assert analysis.endswith("peaks 1800")
    assert "thumbnails 64, waveform media/" in images
    assert publish.split() == ["publish", "track_id", str(track_id)]
    assert [step["step"] for step in as_json["steps"]] == ["probe", "analysis", "images", "publish"]
    assert as_json["steps"][1]["summary"]["peaks"] == 1800
    assert as_json["steps"][1]["summary"]["tempo"] == pytest.approx(120, abs=2)
    assert (as_json["attempts"], as_json["max_attempts"], as_json["error"]) == (1, 5, None)


def test_show_of_an_unknown_job_is_one_line(session: Session) -> None:
    outcome = cli("ingest", "show", "999999")

    assert outcome.exit_code == 1
    assert outcome.output.splitlines() == ["Error: no ingest job 999999"]


def test_list_gives_recent_jobs_newest_first_and_filters_by_status(session: Session) -> None:
    first = add_job(session, "failed", error="not audio")
    second = add_job(session, "done")
    third = add_job(session, "failed", error="truncated")

    everything = cli("ingest", "list").output.splitlines()
    failed = json.loads(cli("ingest", "list", "--status", "failed", "--json").output)
    paged = cli("ingest", "list", "--limit", "1").output.splitlines()

    assert [int(line.split()[0]) for line in everything[1:]] == [third, second, first]
    assert everything[1].endswith("truncated")
    assert [row["id"] for row in failed] == [third, first]
    assert paged[-1] == f"older: --before {third}"


# -- backfill and the audit ---------------------------------------------------------------------


def test_backfill_sends_the_task_by_name_and_prints_its_id(session: Session, app: Any) -> None:
    outcome = cli("ingest", "backfill", "images")

    assert outcome.exit_code == 0, outcome.output
    [task_id] = outcome.stdout.splitlines()
    message = take_message(app, "ingest")
    assert message is not None
    headers, (_, kwargs, _) = message
    assert (headers["task"], headers["id"], kwargs) == (
        "ingest.backfill",
        task_id,
        {"step": "images"},
    )


def test_every_change_made_through_the_cli_is_kept_in_the_audit_log(
    session: Session, app: Any
) -> None:
    failed = add_job(session, "failed")
    cleared = add_job(session, "failed")

    for args in (
        ("pause",),
        ("pause",),  # already paused: nothing changed, nothing kept
        ("config", "--rate", "30"),
        ("resume",),
        ("retry-failed", str(failed)),
        ("clear-failed", str(cleared)),
        ("backfill", "analysis"),
    ):
        outcome = cli("ingest", *args)
        assert outcome.exit_code == 0, outcome.output

    assert audit_actions(session) == [
        ("ingest.pause", "ingest"),
        ("ingest.config", "ingest"),
        ("ingest.resume", "ingest"),
        ("ingest.retry_failed", "ingest"),
        ("ingest.clear_failed", "ingest"),
        ("ingest.backfill", "ingest"),
    ]
    rows = session.scalars(select(AdminAudit).order_by(AdminAudit.id)).all()
    assert all(row.actor.startswith("cli:") for row in rows)
    assert [rows[1].detail, rows[3].detail, rows[4].detail] == [
        {"rate_per_minute": 30},
        {"ids": [failed]},
        {"ids": [cleared]},
    ]


# -- automation status ------------------------------------------------------------------------


def test_automation_status_has_the_ingest_section_in_json_and_text(session: Session) -> None:
    now = dt.datetime.now(dt.UTC)
    oldest = add_job(session, "queued", created_at=now - dt.timedelta(minutes=90))
    add_job(session, "failed", started_at=now, finished_at=now)
    cli("ingest", "pause")

    as_json = cli("status", "--json")
    as_text = cli("status")

    assert as_json.exit_code == 0, as_json.output
    section = json.loads(as_json.output)["ingest"]
    assert section["paused"] is True
    assert section["counts"] == {"queued": 1, "processing": 0, "done": 0, "failed": 1}
    assert section["failed_last_hour"] == 1
    assert section["oldest_queued"]["id"] == oldest
    assert "per_hour" not in section
    lines = as_text.output.splitlines()
    [head] = [line for line in lines if line.startswith("ingest:")]
    assert "PAUSED since" in head and head.endswith("waiting 1, active 0, done 0, failed 1")
    assert any(
        line.startswith(f"  oldest queued: job {oldest}, waiting 1 h 30 min") for line in lines
    )
