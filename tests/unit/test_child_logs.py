"""Each process of `automation up` has its log file, and `automation logs` shows them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support import wait_for
from worker import child_logs
from worker.cli import main
from worker.settings import get_settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def write_log(data_dir: Path, name: str, *lines: str) -> Path:
    with child_logs.open_for_start(data_dir, name, ["celery", "beat"], pid=4242) as out:
        for line in lines:
            out.write(line + "\n")
    return child_logs.log_path(data_dir, name)


def test_each_start_appends_to_the_log_under_a_line_that_marks_it(data_dir: Path) -> None:
    path = write_log(data_dir, "beat", "first run")
    write_log(data_dir, "beat", "second run")

    assert path == data_dir / "logs" / "beat.log"
    lines = path.read_text().splitlines()
    assert [line.split(" (pid")[0].split(" started ")[0] for line in lines] == [
        "===== beat",
        "first run",
        "===== beat",
        "second run",
    ]
    assert lines[0].endswith("(pid 4242): celery beat")


def test_last_lines_reads_only_the_end_of_a_long_log(data_dir: Path) -> None:
    path = write_log(data_dir, "worker-stats", *(f"line {n}" for n in range(50_000)))

    assert child_logs.last_lines(path, 3) == ["line 49997", "line 49998", "line 49999"]
    assert child_logs.last_lines(path, 0) == []


def test_following_a_log_shows_its_end_then_each_line_appended(data_dir: Path) -> None:
    path = write_log(data_dir, "api", "old", "recent")
    shown: list[str] = []
    done = threading.Event()
    follower = threading.Thread(
        target=child_logs.follow, args=(path, 1, shown.append, done.is_set, 0.01)
    )
    follower.start()
    try:
        wait_for(lambda: shown == ["recent\n"], timeout=10)
        with path.open("a") as out:
            out.write("new one\n")
        wait_for(lambda: shown == ["recent\n", "new one\n"], timeout=10)
    finally:
        done.set()
        follower.join(timeout=10)


def test_automation_logs_lists_each_log_with_its_size_and_the_name_to_pass(
    data_dir: Path,
) -> None:
    write_log(data_dir, "beat", "x" * 3000)
    write_log(data_dir, "worker-default", "ready")

    outcome = CliRunner().invoke(main, ["logs"])

    assert outcome.exit_code == 0, outcome.output
    lines = outcome.output.splitlines()
    assert lines[0] == f"logs in {data_dir / 'logs'}:"
    assert lines[1].split()[:3] == ["beat", "3.0", "KiB"]
    assert lines[2].split()[0] == "worker-default"
    assert "automation logs NAME" in lines[-1]


def test_automation_logs_of_an_unknown_name_fails_listing_the_valid_ones(
    data_dir: Path,
) -> None:
    write_log(data_dir, "beat", "ready")
    write_log(data_dir, "api", "ready")

    outcome = CliRunner().invoke(main, ["logs", "worker-nope"])

    assert outcome.exit_code == 1
    assert outcome.output.strip() == (
        f"Error: no log named 'worker-nope' in {data_dir / 'logs'}; valid names: api, beat"
    )


def test_automation_logs_with_no_logs_yet_says_who_writes_them(data_dir: Path) -> None:
    outcome = CliRunner().invoke(main, ["logs"])

    assert outcome.exit_code == 0
    assert "`automation up` writes them" in outcome.output


def test_automation_logs_lines_shows_that_much_history(data_dir: Path) -> None:
    write_log(data_dir, "beat", "one", "two", "three")

    outcome = CliRunner().invoke(main, ["logs", "beat", "--lines", "2", "--no-follow"])

    assert (outcome.exit_code, outcome.output) == (0, "two\nthree\n")
