"""Redis lost its data: republish what the ledger knows, and keep the loss on record."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import BrokerReset
from db.queries import queries
from worker.ledger.rescue import republish_after_broker_reset

JOURNAL = queries("worker", "run_journal")


def epoch_began(epoch: str) -> dt.datetime:
    """When an epoch (``worker.liveness.new_epoch``) was created: when the loss was noticed."""
    return dt.datetime.fromtimestamp(float(epoch.split(":", maxsplit=1)[0]), dt.UTC)


def recover_from_broker_reset(
    session: Session, epoch: str, detected_by: str | None, now: dt.datetime
) -> dict[str, int]:
    """Fresh messages for the ledger's rows published or claimed before ``epoch`` began,
    and runs started before it that never finished marked ``lost``.

    Messages of other tasks that were waiting in Redis are gone without a trace: only
    their senders (beat's next slot, another service) can send them again. Idempotent: a
    second run finds the rows already published afresh, and the epoch already recorded.
    """
    noticed_at = epoch_began(epoch)
    republished = republish_after_broker_reset(session, noticed_at)
    runs_lost = len(
        session.execute(JOURNAL["mark_runs_lost_with_broker"], {"noticed_at": noticed_at}).all()
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
    return {"ledger_republished": republished, "runs_lost": runs_lost}
