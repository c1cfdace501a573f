"""The live schedule: entries in PostgreSQL, one fenced beat that fires them, the operators'
commands over them.

- ``timing``: when an entry's slots fall (cron in its timezone, or a fixed interval) and
  which are due, under its missed-run policy; pure functions of the clock they are given.
- ``store``: the entries, their audit trail, reconciling the code's defaults
  (``beat_schedule.py``) into them, and the views (list, history).
- ``lease``: the beat leader's lease and fencing token, held in PostgreSQL.
- ``scheduler``: the Celery beat scheduler the app names (``beat_scheduler``).
"""
