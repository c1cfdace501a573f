"""`automation up`'s processes: what each is started with."""

from __future__ import annotations

import sys

import pytest

from worker.settings import load_settings
from worker.stack import children


def test_flower_gets_its_credentials_in_its_environment_never_on_its_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Any local user can read a process's arguments (ps, /proc/<pid>/cmdline).
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:recognisable-s3cret")
    procs = children(load_settings(), concurrency=1, beat=True, flower=True, api=True)

    assert not [arg for child in procs for arg in child.argv if "recognisable-s3cret" in arg]
    (flower,) = [child for child in procs if child.name == "flower"]
    assert flower.env == {"FLOWER_BASIC_AUTH": "ops:recognisable-s3cret"}


def test_the_console_runs_as_automation_api_which_reads_its_address_from_the_settings() -> None:
    procs = children(load_settings(), concurrency=1, beat=True, flower=True, api=True)

    (api,) = [child for child in procs if child.name == "api"]
    assert api.argv == [sys.executable, "-m", "worker.cli", "api"]
    assert api.env == {}


def test_no_api_leaves_the_console_out_and_everything_else_in() -> None:
    settings = load_settings()
    with_api = children(settings, concurrency=1, beat=True, flower=True, api=True)
    without = children(settings, concurrency=1, beat=True, flower=True, api=False)

    assert [child.name for child in without] == [
        child.name for child in with_api if child.name != "api"
    ]
