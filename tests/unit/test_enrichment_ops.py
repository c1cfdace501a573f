"""Operating enrichment without services: the token encryption key and how it is read."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from worker.cli import main
from worker.settings import Settings, SettingsError, load_settings


def test_a_new_key_is_a_usable_fernet_key() -> None:
    outcome = CliRunner().invoke(main, ["spotify", "new-key"])

    assert outcome.exit_code == 0
    Settings(token_encryption_key=outcome.output.strip())  # validates


def test_a_malformed_key_is_refused_at_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", "not-a-key")

    with pytest.raises(SettingsError, match="TOKEN_ENCRYPTION_KEY: must be Fernet keys"):
        load_settings()


def test_an_empty_key_variable_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", "")  # compose's ${TOKEN_ENCRYPTION_KEY:-}

    assert load_settings().token_encryption_key is None
