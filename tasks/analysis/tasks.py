"""The analysis family's tasks (ledger tasks, on the ``analysis`` queue):
``analysis.energy_analysis``, ``analysis.mood_detection``, ``analysis.genre_classification``.
The work is in ``tasks.analysis.analyse``.
"""

from __future__ import annotations

from typing import Any

from tasks.analysis.analyse import analyse_energy, classify_genre, detect_mood
from worker.arguments import Id, OptionalId
from worker.celery_app import app
from worker.ledger import LedgerTask
from worker.settings import get_settings


@app.task(name="analysis.energy_analysis", bind=True, base=LedgerTask)
def energy_analysis(
    self: LedgerTask, track_id: Id, background_task_id: OptionalId = None
) -> dict[str, Any]:
    return analyse_energy(self.session, track_id, get_settings())


@app.task(name="analysis.mood_detection", bind=True, base=LedgerTask)
def mood_detection(
    self: LedgerTask, track_id: Id, background_task_id: OptionalId = None
) -> dict[str, Any]:
    return detect_mood(self.session, track_id, get_settings())


@app.task(name="analysis.genre_classification", bind=True, base=LedgerTask)
def genre_classification(
    self: LedgerTask, track_id: Id, background_task_id: OptionalId = None
) -> dict[str, Any]:
    return classify_genre(self.session, track_id)
