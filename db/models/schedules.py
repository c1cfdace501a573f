"""The live schedule: entries, their audit trail, every fire, and the beat leader's lease.

``beat_schedule.py`` is the code's default; these tables are what beat fires from
(``worker.schedules``). PostgreSQL rather than Redis: the schedule, an operator's changes
and the record of what fired must survive a Redis that lost its data, and the database is
also the fencing authority for the leader's token.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, SmallInteger, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt


class ScheduleEntry(Base):
    """One periodic job: a public task, its arguments, and a cron (in a timezone) or an
    interval. ``origin`` says whether the code's defaults brought it (reconciled at every
    beat start) or an operator added it; ``edited`` that an operator changed a default,
    which reconciling then leaves alone."""

    __tablename__ = "schedule_entries"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    task: Mapped[str] = mapped_column(Text)
    args: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    cron: Mapped[str | None] = mapped_column(Text)
    every_seconds: Mapped[int | None]
    timezone: Mapped[str] = mapped_column(Text)
    missed: Mapped[str] = mapped_column(Text)
    paused: Mapped[bool] = mapped_column(server_default=text("false"))
    origin: Mapped[str] = mapped_column(Text)
    edited: Mapped[bool] = mapped_column(server_default=text("false"))
    # The code default last applied (a digest of task, arguments, timing and policy): a
    # default whose digest changed is applied again, unless an operator edited the entry.
    default_fingerprint: Mapped[str | None] = mapped_column(Text)
    # Slots at or before this are not the entry's: it was created, retimed or resumed then.
    not_before: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    updated_by: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("(cron IS NULL) <> (every_seconds IS NULL)", name="one_timing"),
        CheckConstraint("every_seconds IS NULL OR every_seconds >= 1", name="every_positive"),
        CheckConstraint("missed IN ('run_once', 'skip')", name="missed_policy"),
        CheckConstraint("origin IN ('default', 'operator')", name="origin"),
    )


class ScheduleChange(Base):
    """The audit trail: every change to an entry, by whom, when, before and after."""

    __tablename__ = "schedule_changes"

    id: Mapped[BigId]
    entry: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    at: Mapped[CreatedAt]
    action: Mapped[str] = mapped_column(Text)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    __table_args__ = (Index("ix_schedule_changes_entry_at", "entry", text("at DESC")),)


class ScheduleFire(Base):
    """A slot fired: (entry, slot) is the key, so the same slot is never published twice.

    ``token`` is the leader's fencing token at the fire (NULL for an operator's
    ``schedule run``, which is ``manual``); ``published_at`` is set once the message is
    out, so a fire whose leader died before publishing is published by the next leader.
    """

    __tablename__ = "schedule_fires"

    entry: Mapped[str] = mapped_column(Text, primary_key=True)
    slot: Mapped[dt.datetime] = mapped_column(primary_key=True)
    fired_at: Mapped[dt.datetime] = mapped_column(server_default=text("clock_timestamp()"))
    task: Mapped[str] = mapped_column(Text)
    # The call as it was sent (the entry may change afterwards).
    args: Mapped[list[Any]] = mapped_column(JSONB)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONB)
    task_id: Mapped[str] = mapped_column(Text)
    token: Mapped[int | None] = mapped_column(BigInteger)
    manual: Mapped[bool] = mapped_column(server_default=text("false"))
    published_at: Mapped[dt.datetime | None]

    __table_args__ = (
        Index("ix_schedule_fires_task_id", "task_id"),
        Index("ix_schedule_fires_fired_at", "fired_at"),
        Index(
            "ix_schedule_fires_unpublished",
            "fired_at",
            postgresql_where=text("published_at IS NULL"),
        ),
    )


class BeatLeader(Base):
    """The one row of the beat leader's lease: who holds it, until when (the database's
    clock), and the fencing token, which goes up by one each time the lease changes hands."""

    __tablename__ = "beat_leader"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    holder: Mapped[str] = mapped_column(Text)
    token: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)
