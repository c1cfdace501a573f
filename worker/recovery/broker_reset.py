"""Redis lost its data: republish what the ledger knows, and keep the loss on record."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from celery import Celery
from sqlalchemy import Row
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import BrokerReset
from db.queries import queries
from tasks.ingest import rescue as ingest_rescue
from tasks.workflows import rescue as workflows_rescue
from worker.ledger.rescue import republish_after_broker_reset
from worker.publishing import publish_after_commit

log = logging.getLogger(__name__)
JOURNAL = queries("worker", "run_journal")
SCHEDULES = queries("worker.schedules", "schedules")
# A fan-out older than this is not restarted: its slot has passed (a daily job's next
# run covers it).
FAN_OUT_RESTART_WINDOW = dt.timedelta(hours=12)


def epoch_began(epoch: str) -> dt.datetime:
    """When an epoch (``worker.liveness.new_epoch``) was created: when the loss was noticed."""
    return dt.datetime.fromtimestamp(float(epoch.split(":", maxsplit=1)[0]), dt.UTC)


def fan_outs_cut_short(
    session: Session, noticed_at: dt.datetime
) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """(task name, args, kwargs) of every run whose fan-out Redis lost before it finished:
    replaced by a chord in the last ``FAN_OUT_RESTART_WINDOW`` and never followed by its
    fan-in's success."""
    calls = []
    for run in session.execute(
        JOURNAL["fan_outs_cut_short"],
        {"noticed_at": noticed_at, "since": noticed_at - FAN_OUT_RESTART_WINDOW},
    ):
        try:
            call = json.loads(run.args_summary or "")
            calls.append((run.task_name, list(call["args"]), dict(call["kwargs"])))
        except (ValueError, KeyError, TypeError):
            # Cut to the summary's length: its arguments cannot be known again.
            log.error(
                "fan-out %s[%s] was lost with Redis's data and cannot be restarted: its "
                "arguments were not recorded whole; send it again by hand",
                run.task_name,
                run.task_id,
            )
    return calls


def restart_fan_outs(session: Session, celery_app: Celery, noticed_at: dt.datetime) -> int:
    """Send again, by name and with the same arguments, every fan-out cut short; how many.
    Its parts are idempotent (each writes its share with an upsert), so parts that did
    finish are only done again."""
    calls = fan_outs_cut_short(session, noticed_at)
    for name, args, kwargs in calls:
        publish_after_commit(session, celery_app.signature(name, args, kwargs))
        log.warning("fan-out %s lost with Redis's data: sent again", name)
    return len(calls)


def scheduled_runs_lost(session: Session, noticed_at: dt.datetime) -> list[Row[Any]]:
    """Each run_once entry's newest fire whose message Redis lost before it ran."""
    return list(
        session.execute(
            SCHEDULES["fires_lost_with_the_broker"],
            {"noticed_at": noticed_at, "since": noticed_at - FAN_OUT_RESTART_WINDOW},
        ).all()
    )


def refire_lost_slots(session: Session, celery_app: Celery, noticed_at: dt.datetime) -> int:
    """Publish again, with the same task id and slot, each of ``scheduled_runs_lost`` (the
    schedule's missed-run policy, applied to a loss beat could not see); how many."""
    lost = scheduled_runs_lost(session, noticed_at)
    for fire in lost:
        publish_after_commit(
            session,
            celery_app.signature(
                fire.task,
                fire.args,
                fire.kwargs,
                task_id=fire.task_id,
                headers={"schedule_entry": fire.entry, "schedule_slot": fire.slot.isoformat()},
            ),
        )
        log.warning(
            "%s's fire for %s was lost with Redis's data: sent again", fire.entry, fire.slot
        )
    return len(lost)


def recover_from_broker_reset(
    session: Session, celery_app: Celery, epoch: str, detected_by: str | None, now: dt.datetime
) -> dict[str, int]:
    """Fresh messages for the ledger's rows, workflow executions and ingest jobs published
    or claimed before ``epoch`` began,
    runs started before it that never finished marked ``lost``, fan-outs cut short (a
    chord whose state was in Redis) started again, and scheduled runs whose message was
    lost fired again by their entry's missed-run policy.

    Messages other services sent by name that were waiting in Redis are gone without a
    trace: only their senders can send them again. Idempotent: a
    second run finds the rows already published afresh, and the epoch already recorded.
    """
    noticed_at = epoch_began(epoch)
    republished = republish_after_broker_reset(session, noticed_at)
    executions = workflows_rescue.republish_after_broker_reset(session, noticed_at)
    ingest_jobs = ingest_rescue.republish_after_broker_reset(session, noticed_at)
    fan_outs = restart_fan_outs(session, celery_app, noticed_at)
    slots = refire_lost_slots(session, celery_app, noticed_at)
    runs_lost = len(
        session.execute(
            JOURNAL["mark_unfinished_runs_lost"],
            {
                "hosts": None,
                "started_before": noticed_at,
                "reason": "its record was lost with Redis's data (broker reset)",
            },
        ).all()
    )
    session.execute(
        insert(BrokerReset)
        .values(
            epoch=epoch,
            detected_at=noticed_at,
            detected_by=detected_by,
            recovered_at=now,
            ledger_republished=republished,
        )
        .on_conflict_do_nothing(index_elements=["epoch"])
    )
    return {
        "ledger_republished": republished,
        "executions_republished": executions,
        "ingest_republished": ingest_jobs,
        "runs_lost": runs_lost,
        "fan_outs_restarted": fan_outs,
        "scheduled_runs_refired": slots,
    }
