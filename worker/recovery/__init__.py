"""Recovery: what happens to work whose worker died, or whose messages Redis lost.

Workers renew a lease while they live (``worker.liveness``): their heartbeat, and the
visibility of every message they hold. A dead worker's messages go back to their queues
one lease after its last renewal, by kombu's own sweep; this package handles what the
messages cannot: ledger rows and runs whose worker is gone, and the loss of Redis's data.

- ``rescue``: ``cleanup.stuck_tasks``, every minute: ledger rows and ``task_runs`` of
  workers that stopped renewing their lease (requeued, or ``lost``), and the ledger's
  older rules (rows past their time limit, messages presumed lost);
- ``census``: ledger rows whose message is neither in a queue nor held by a worker (a
  worker killed between taking a message and recording it), published again;
- ``broker_reset``: ``cleanup.broker_reset``, sent by the worker that finds Redis without
  its epoch: the ledger's pending rows get fresh messages, and the reset is recorded in
  ``broker_resets`` for ``automation status``;
- ``tasks``: both tasks.
"""
