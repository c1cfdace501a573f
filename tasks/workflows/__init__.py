"""Event workflows: rules that act when a job's status changes, once per key, rate
limited, retried.

How a change becomes an action, and why nothing is lost or doubled on the way:

1. A trigger on each source table (``sources``; ``db/triggers/job_status_changes.sql``)
   writes the change to ``job_status_changes`` in the changing transaction and NOTIFYs at
   commit. However the status changed (our code, another service, plain SQL), the change
   is recorded with it or not at all; nothing leaves the database inside the writer's
   transaction, so a dead worker, Redis or receiver delays it and loses nothing.
2. The dispatcher of the workers on the ``workflows`` queue (``worker.ledger.outbox``)
   wakes on the NOTIFY, or within seconds if one was missed or the change was made while
   no worker ran, and matches a batch of changes against the workflows in one query
   (``matching``): conditions (``conditions``), idempotency key, rate limits, debounce and
   the loop guard decide, and every decision is an ``automation_execution_logs`` row, a
   skip with its reason included.
3. Each pending execution gets a ``workflows.execute`` message; the run claims the row,
   performs its actions in order (``execution``: tasks by name, signed webhooks
   (``webhooks``), notifications), recording each, and retries transient failures with
   backoff up to the workflow's ``max_attempts``.

Workflows are kept and tried through ``store`` (the CLI and the API call it) and read
from a workflow file (``definition``). Templates in actions: ``templates``. Old logs go
after ``WORKFLOW_LOG_RETENTION_DAYS`` (``retention``).
"""
