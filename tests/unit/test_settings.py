"""Configuration: one typed object; a bad value is one clear line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from worker.settings import EMBEDDED_DATABASE_URL, SettingsError, load_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "DATABASE_URL",
        "REDIS_URL",
        "BROKER_URL",
        "ENVIRONMENT",
        "TIMEZONE",
        "FLOWER_BASIC_AUTH",
        "FLOWER_ADDRESS",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_unset_urls_mean_the_embedded_services(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.database_url == EMBEDDED_DATABASE_URL
    assert settings.uses_embedded_services


def test_setting_a_url_turns_the_embedded_services_off(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", "postgresql+psycopg://u@db:5432/app")
    assert not load_settings().uses_embedded_services


def test_the_broker_is_redis_unless_broker_url_names_rabbitmq(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("REDIS_URL", "redis://cache:6379/2")
    settings = load_settings()
    assert (settings.broker_url, settings.broker_is_amqp) == ("redis://cache:6379/2", False)
    for url in ("amqp://u:p@mq:5672/prod", "pyamqp://mq//"):
        clean_env.setenv("BROKER_URL", url)
        settings = load_settings()
        assert (settings.broker_url, settings.broker_is_amqp) == (url, True)
        assert settings.redis_url == "redis://cache:6379/2"  # still results and shared state


def test_a_broker_url_that_is_neither_redis_nor_amqp_is_one_line(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("BROKER_URL", "sqs://queue")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert str(raised.value) == "configuration error: BROKER_URL: must be a redis:// or amqp:// URL"


def test_postgres_urls_are_normalised_to_psycopg(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", "postgres://u:p@db:5432/app")
    assert load_settings().database_url == "postgresql+psycopg://u:p@db:5432/app"


def test_a_non_postgres_database_url_names_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", "mysql://u@db/app")
    with pytest.raises(SettingsError, match=r"^configuration error: DATABASE_URL: must be a"):
        load_settings()


def test_an_unknown_timezone_names_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TIMEZONE", "Mars/Olympus")
    with pytest.raises(SettingsError, match="TIMEZONE: unknown timezone 'Mars/Olympus'"):
        load_settings()


def test_a_number_setting_that_is_not_a_number_names_the_variable(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("TRENDING_TOP_N", "lots")
    with pytest.raises(SettingsError, match="TRENDING_TOP_N"):
        load_settings()


def test_production_requires_explicit_services_and_flower_credentials(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("ENVIRONMENT", "production")
    clean_env.setenv("DATABASE_URL", "postgresql://u@db/app")
    with pytest.raises(SettingsError, match="REDIS_URL: required when ENVIRONMENT=production"):
        load_settings()


def test_flower_credentials_must_be_user_colon_password(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLOWER_BASIC_AUTH", "justapassword")
    with pytest.raises(SettingsError, match="FLOWER_BASIC_AUTH: must be user:password"):
        load_settings()


def test_flower_served_beyond_this_machine_requires_credentials(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("FLOWER_ADDRESS", "0.0.0.0")
    with pytest.raises(SettingsError, match="FLOWER_BASIC_AUTH: required when FLOWER_ADDRESS"):
        load_settings()


def test_flower_beyond_this_machine_with_credentials_is_accepted(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("FLOWER_ADDRESS", "0.0.0.0")
    clean_env.setenv("FLOWER_BASIC_AUTH", "ops:secret")
    assert load_settings().flower_address == "0.0.0.0"


def test_flower_on_loopback_may_run_without_credentials(clean_env: pytest.MonkeyPatch) -> None:
    for address in ("127.0.0.1", "::1", "localhost"):
        clean_env.setenv("FLOWER_ADDRESS", address)
        assert load_settings().flower_basic_auth is None


def test_celery_refuses_to_start_with_one_line_naming_the_bad_variable() -> None:
    env = {**os.environ, "REDIS_URL": "http://not-redis"}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "inspect", "ping"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.strip() == "configuration error: REDIS_URL: must be a redis:// URL"


def test_unset_urls_follow_the_embedded_services_ports(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("EMBEDDED_POSTGRES_PORT", "55999")
    clean_env.setenv("EMBEDDED_REDIS_PORT", "56999")
    settings = load_settings()
    assert settings.database_url == "postgresql+psycopg://postgres@127.0.0.1:55999/automation"
    assert (settings.redis_url, settings.broker_url) == ("redis://127.0.0.1:56999/0",) * 2
    assert settings.uses_embedded_services


def test_the_ingest_steps_settings_know_are_the_pipelines_steps() -> None:
    from db.models.ingest import INGEST_STEPS
    from worker.settings import INGEST_STEP_NAMES

    assert INGEST_STEP_NAMES == INGEST_STEPS


def test_a_step_concurrency_naming_an_unknown_step_names_the_variable(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("INGEST_STEP_CONCURRENCY", "analysis=2,thumbnails=3")
    with pytest.raises(SettingsError, match=r"INGEST_STEP_CONCURRENCY: 'thumbnails=3'"):
        load_settings()


def test_step_concurrency_and_thumbnail_sizes_are_read_as_numbers(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("INGEST_STEP_CONCURRENCY", " analysis=2, images=4 ")
    clean_env.setenv("INGEST_THUMBNAIL_SIZES", "512,64,256,64")
    settings = load_settings()
    assert settings.step_concurrency == {"analysis": 2, "images": 4}
    assert settings.thumbnail_sizes == (64, 256, 512)


def test_a_thumbnail_size_that_is_not_a_number_names_the_variable(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("INGEST_THUMBNAIL_SIZES", "64,big")
    with pytest.raises(SettingsError, match="INGEST_THUMBNAIL_SIZES: must be pixel sizes"):
        load_settings()
