"""`automation up`'s processes: what each is started with."""

from __future__ import annotations

import pytest

from worker.settings import load_settings
from worker.stack import children


def test_flower_gets_its_credentials_in_its_environment_never_on_its_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Any local user can read a process's arguments (ps, /proc/<pid>/cmdline).
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:recognisable-s3cret")
    procs = children(load_settings(), concurrency=1, beat=True, flower=True)

    assert not [arg for child in procs for arg in child.argv if "recognisable-s3cret" in arg]
    (flower,) = [child for child in procs if child.name == "flower"]
    assert flower.env == {"FLOWER_BASIC_AUTH": "ops:recognisable-s3cret"}
