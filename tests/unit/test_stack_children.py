"""`automation up`'s processes (what each is started with), and what it prints."""

from __future__ import annotations

import os
import sys

import pytest

from worker.settings import Settings, load_settings
from worker.stack import Output, _where_to_look, children


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


def test_a_console_listening_on_every_address_is_shown_at_a_loopback_url() -> None:
    shown = {
        address: _where_to_look(Settings(api_address=address, api_port=8123), True, False)[0]
        for address in ("0.0.0.0", "::", "10.1.2.3")
    }

    assert shown == {
        "0.0.0.0": "status page  http://127.0.0.1:8123/console",
        "::": "status page  http://[::1]:8123/console",
        "10.1.2.3": "status page  http://10.1.2.3:8123/console",
    }


def test_writing_to_a_pipe_whose_reader_is_gone_raises_nothing_then_or_later() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `automation up | tee`, and tee died first
    stream = os.fdopen(write_end, "w")
    out = Output(stream)

    out.line("stopping embedded Redis and PostgreSQL")
    out.line("stopped")

    assert out.broken
    stream.write("what the interpreter flushes on its way out\n")
    stream.close()  # flushes into /dev/null now: no BrokenPipeError
