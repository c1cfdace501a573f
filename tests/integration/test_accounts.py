"""Console users and credentials (``console.accounts``, ``automation admin``): what is
stored, what is refused, and when a credential stops working."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from console.accounts import (
    authenticate,
    check_password,
    create_admin,
    issue_token,
    open_session,
    set_role,
)
from db.models import AdminAudit, AdminUser
from db.session import session_scope
from tests import factories
from worker.cli import main

# Nothing here sends a message: CI's RabbitMQ pass leaves it out.
pytestmark = pytest.mark.broker_independent
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


@pytest.mark.committed
def test_a_password_read_from_standard_input_is_stored_as_an_argon2_hash(session: Any) -> None:
    with session_scope() as setup:
        create_admin(setup, "ops", "admin")

    result = CliRunner().invoke(main, ["admin", "password", "ops"], input="correct horse battery\n")

    assert result.exit_code == 0, result.output
    session.expire_all()
    stored = session.scalars(select(AdminUser.password_hash)).one()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert check_password(session, "ops", "correct horse battery") is not None
    assert check_password(session, "ops", "correct horse battery!") is None
    assert session.scalars(select(AdminAudit.action)).all() == ["admin.password"]


@pytest.mark.committed
def test_a_short_password_is_refused_saying_why() -> None:
    with session_scope() as setup:
        create_admin(setup, "ops", "admin")

    result = CliRunner().invoke(main, ["admin", "password", "ops"], input="short\n")

    assert result.exit_code == 1
    assert "at least 12 characters" in result.output


def test_an_unknown_user_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["admin", "token", "nobody"])

    assert result.exit_code == 1
    assert "no admin user 'nobody'" in result.output


def test_a_user_without_a_password_cannot_sign_in(session: Any) -> None:
    create_admin(session, "robot", "service")

    assert check_password(session, "robot", "") is None
    assert check_password(session, "nobody", "whatever password") is None


def test_a_page_session_expires_after_its_hours(session: Any) -> None:
    admin = create_admin(session, "ops", "admin")

    cookie = open_session(session, admin, NOW, hours=12)

    assert authenticate(session, cookie, NOW + dt.timedelta(hours=11)) is not None
    assert authenticate(session, cookie, NOW + dt.timedelta(hours=12)) is None


def test_a_role_change_applies_to_tokens_already_issued(session: Any) -> None:
    create_admin(session, "ops", "viewer")
    token, _ = issue_token(session, "ops")

    set_role(session, "ops", "admin")

    principal = authenticate(session, token, NOW)
    assert principal is not None and principal.may("admin")


def test_a_token_s_use_is_recorded_at_most_once_a_minute(session: Any) -> None:
    create_admin(session, "ops", "viewer")
    token, row = issue_token(session, "ops")

    authenticate(session, token, NOW)
    authenticate(session, token, NOW + dt.timedelta(seconds=30))
    first = row.last_used_at
    authenticate(session, token, NOW + dt.timedelta(seconds=90))

    assert first == NOW
    assert row.last_used_at == NOW + dt.timedelta(seconds=90)


@pytest.mark.committed
def test_a_user_token_needs_an_existing_user() -> None:
    with session_scope() as setup:
        listener = factories.user(setup)

    made = CliRunner().invoke(main, ["admin", "user-token", str(listener.id)])
    refused = CliRunner().invoke(main, ["admin", "user-token", str(listener.id + 1000)])

    assert made.exit_code == 0 and made.stdout.strip().splitlines()[-1].startswith("mat_")
    assert refused.exit_code == 1 and "no user with id" in refused.output
