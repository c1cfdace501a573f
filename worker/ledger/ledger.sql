-- The background-task ledger (worker/ledger/).
-- A row moves pending -> processing -> completed | failed. A message may act only on a row
-- it claims; every write after the claim names the claim (celery_task_id and the attempt
-- number it took, a fencing token), so a run that lost its claim (to a rescue, a retry or
-- a redelivery) can never overwrite what the newer claim does.

-- name: enqueue
-- Duplicates of an active (pending or processing) row collapse into it: nothing returned.
INSERT INTO background_tasks (task_type, track_id, priority, enqueued_at, celery_task_id)
VALUES (:task_type, :track_id, :priority, now(), :celery_task_id)
ON CONFLICT (task_type, track_id) WHERE status IN ('pending', 'processing') DO NOTHING
RETURNING id

-- name: enqueue_many
-- The same for many tracks in one statement; each new row gets its message's id here.
INSERT INTO background_tasks (task_type, track_id, priority, enqueued_at, celery_task_id)
SELECT :task_type, t.track_id, :priority, now(), gen_random_uuid()::text
FROM unnest(CAST(:track_ids AS bigint[])) WITH ORDINALITY AS t(track_id, n)
ORDER BY t.n
ON CONFLICT (task_type, track_id) WHERE status IN ('pending', 'processing') DO NOTHING
RETURNING id, track_id, celery_task_id

-- name: missing_tracks
SELECT t.id FROM unnest(CAST(:track_ids AS bigint[])) AS t(id)
WHERE NOT EXISTS (SELECT 1 FROM tracks WHERE tracks.id = t.id)
ORDER BY t.id

-- name: active_row
SELECT id FROM background_tasks
WHERE task_type = :task_type AND track_id = :track_id AND status IN ('pending', 'processing')

-- name: claim
-- A pending row is anyone's. A processing row may be taken back only by its own message
-- coming again after the run that held it ended: a retry, or a redelivery after the worker
-- died (``resumable``); any other message finds it busy.
UPDATE background_tasks
SET status = 'processing', attempts = attempts + 1, started_at = now(), completed_at = NULL,
    celery_task_id = :celery_task_id, worker_host = :worker_host
WHERE id = :id
  AND (status = 'pending'
       OR (status = 'processing' AND celery_task_id = :celery_task_id AND :resumable))
RETURNING attempts

-- name: row_state
SELECT status, celery_task_id FROM background_tasks WHERE id = :id

-- name: complete
-- How many rows it completed (0: the claim was lost). With it, in the same statement (one
-- round trip fewer), the run's commit marker that AutomationTask.mark_committed would
-- write (worker/run_journal.py; NULL run_key: no run to mark).
WITH completed AS (
    UPDATE background_tasks
    SET status = 'completed', completed_at = now(), result = CAST(:result AS jsonb),
        error_message = NULL
    WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
      AND attempts = :attempt
    RETURNING id
), marker AS (
    INSERT INTO task_run_commits (run_key, committed_at)
    SELECT CAST(:run_key AS text), now() FROM completed WHERE CAST(:run_key AS text) IS NOT NULL
    ON CONFLICT (run_key) DO NOTHING
)
SELECT count(*) FROM completed

-- name: fail
UPDATE background_tasks
SET status = 'failed', completed_at = now(), error_message = :error
WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
  AND attempts = :attempt

-- name: release_for_retry
-- The retry message (same id) is already on its way back: the row waits for it.
UPDATE background_tasks
SET status = 'pending', error_message = :error, enqueued_at = now()
WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
  AND attempts = :attempt

-- name: release_cut_off
-- The run was stopped from outside (its worker lost the broker connection and cancelled
-- it, or is shutting down); its unacknowledged message comes back and claims the row
-- again. enqueued_at is kept: should the message never come (Redis lost it), the rules
-- for lost messages still see when it was published.
UPDATE background_tasks
SET status = 'pending', error_message = :error
WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
  AND attempts = :attempt

-- name: take_undispatched
-- Rows with no message yet, most urgent first. SKIP LOCKED: two dispatchers (one per
-- analysis worker) split the work instead of publishing a row twice.
UPDATE background_tasks b
SET enqueued_at = now(), celery_task_id = gen_random_uuid()::text
FROM (
    SELECT id FROM background_tasks
    WHERE status = 'pending' AND enqueued_at IS NULL
    ORDER BY priority DESC, id
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
) todo
WHERE b.id = todo.id
RETURNING b.id, b.task_type, b.track_id, b.priority, b.celery_task_id

-- name: fail_unknown_type
UPDATE background_tasks
SET status = 'failed', completed_at = now(), error_message = :error
WHERE id = :id AND status = 'pending'

-- name: fail_exhausted_orphans
-- A processing row has no live run once its worker stopped renewing its lease (one of
-- :dead_hosts, claimed before :claimed_before), or once it is older than its task's hard
-- time limit (the limit kills any run that reaches it; this covers a worker that never
-- kept a heartbeat). Out of attempts: failed, with the reason. A row locked by an open
-- transaction is skipped, not waited for: its holder is completing it, or is a worker cut
-- off mid-commit whose session the server ends (idle_in_transaction_session_timeout,
-- db/session.py), and the next rescue takes it then. Waiting would stall every rescue.
UPDATE background_tasks
SET status = 'failed', completed_at = :now,
    error_message = format('worker lost during attempt %s of %s (claimed by %s at %s); '
                           'no attempts left', attempts, :max_attempts,
                           coalesce(worker_host, 'an unknown worker'), started_at)
WHERE id IN (
    SELECT id FROM background_tasks
    WHERE status = 'processing' AND attempts >= :max_attempts
      AND (started_at < :now - make_interval(
             secs => coalesce((CAST(:limits AS jsonb) ->> task_type)::int, :default_limit))
           OR (worker_host = ANY(CAST(:dead_hosts AS text[])) AND started_at < :claimed_before))
    FOR UPDATE SKIP LOCKED
)
RETURNING id

-- name: requeue_orphans
-- Otherwise back to pending, without a message: the dispatch that follows publishes it.
-- (If the dead worker's own message comes back too, whichever claims first runs the row;
-- the other finds it taken.) Locked rows are skipped, as above.
UPDATE background_tasks
SET status = 'pending', enqueued_at = NULL,
    error_message = format('worker lost during attempt %s (claimed by %s at %s); requeued',
                           attempts, coalesce(worker_host, 'an unknown worker'), started_at)
WHERE id IN (
    SELECT id FROM background_tasks
    WHERE status = 'processing' AND attempts < :max_attempts
      AND (started_at < :now - make_interval(
             secs => coalesce((CAST(:limits AS jsonb) ->> task_type)::int, :default_limit))
           OR (worker_host = ANY(CAST(:dead_hosts AS text[])) AND started_at < :claimed_before))
    FOR UPDATE SKIP LOCKED
)
RETURNING id

-- name: republish_unheld
-- Pending rows whose message, published before :before, is not among the message ids
-- Redis holds (:held, the census in worker/recovery): a fresh one, from the dispatcher.
UPDATE background_tasks SET enqueued_at = NULL
WHERE status = 'pending' AND enqueued_at < :before
  AND (celery_task_id IS NULL OR NOT (celery_task_id = ANY(CAST(:held AS text[]))))
RETURNING id

-- name: processing_hosts
-- The workers holding rows: the rescue asks which of them are still alive.
SELECT DISTINCT worker_host FROM background_tasks
WHERE status = 'processing' AND worker_host IS NOT NULL

-- name: republish_after_broker_reset
-- Redis lost its data: every message published before the loss was noticed is gone.
-- Pending rows get fresh messages (the NOTIFY at commit wakes the dispatcher); a message
-- that did survive finds its row claimed by the fresh one, or the other way round. Rows
-- claimed before then lost their message too, and their runs were cut off when the
-- connection dropped: requeued. (Were Redis only flushed, a run still going would find
-- its claim taken at completion and its work discarded: done again, never twice.)
UPDATE background_tasks
SET status = 'pending', enqueued_at = NULL,
    error_message = CASE WHEN status = 'processing'
        THEN format('its message was lost with Redis''s data during attempt %s; requeued',
                    attempts)
        ELSE error_message END
WHERE (status = 'pending' AND enqueued_at < :noticed_at)
   OR (status = 'processing' AND started_at < :noticed_at)
RETURNING id

-- name: requeue_lost_messages
-- Pending long after its message was published: the message is presumed lost (a Redis
-- restart without persistence, a publish that never arrived). A fresh message is cheap if
-- the old one does turn up: whichever comes second finds the row claimed and does nothing.
UPDATE background_tasks SET enqueued_at = NULL
WHERE status = 'pending' AND enqueued_at < :lost_before
RETURNING id

-- name: delete_finished_batch
-- A batch per statement and per transaction: row locks are few and brief.
DELETE FROM background_tasks
WHERE id IN (
    SELECT id FROM background_tasks
    -- created_at is indexed and never later than completed_at, which decides.
    WHERE status = :status AND created_at < :before AND completed_at < :before
    LIMIT :batch
)

-- name: summary
-- The operators' view: oldest pending age and rows that need a rescue.
SELECT
    extract(epoch FROM :now - min(created_at) FILTER (WHERE status = 'pending'))
        AS oldest_pending_seconds,
    count(*) FILTER (
        WHERE status = 'processing' AND started_at < :now - make_interval(
            secs => coalesce((CAST(:limits AS jsonb) ->> task_type)::int, :default_limit))
    ) AS stuck_processing,
    count(*) FILTER (WHERE status = 'pending' AND enqueued_at < :lost_before)
        AS lost_pending,
    count(*) FILTER (WHERE status = 'pending' AND enqueued_at IS NULL) AS undispatched
FROM background_tasks
WHERE status IN ('pending', 'processing')
