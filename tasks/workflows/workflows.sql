-- Event workflows (tasks/workflows/): matching changes, publishing and running executions.
-- An execution moves pending -> processing -> completed | failed, or is written skipped.
-- Every write after the claim names the claim (celery_task_id and the attempt it took),
-- so a run that lost its claim to a rescue never overwrites what the newer one does.

-- name: lock_matcher
-- One matcher at a time across all workers: rate limits and duplicates are then decided
-- against everything committed before, never against a twin deciding in parallel. A
-- second dispatcher waits its turn (matching a batch takes milliseconds).
SELECT pg_advisory_xact_lock(hashtext('automation_workflows.match'))

-- name: take_changes
SELECT id, source, job_id, user_id, old_status, new_status, job, origin, changed_at
FROM job_status_changes
WHERE matched_at IS NULL
ORDER BY id
LIMIT :batch

-- name: candidates
-- Every active workflow whose trigger a change meets: its source, its owner (a user's
-- workflow sees only that user's jobs) and the statuses its conditions can hold for.
SELECT c.id AS change_id, w.id AS workflow_id, w.definition
FROM job_status_changes c
JOIN automation_workflows w
  ON w.source = c.source AND w.active
 AND (w.user_id IS NULL OR w.user_id = c.user_id)
 AND (w.on_statuses IS NULL OR c.new_status = ANY (w.on_statuses))
WHERE c.id = ANY (CAST(:change_ids AS bigint[]))
ORDER BY c.id, w.id

-- name: recent_for_job_status
-- Executions that count against the per job and status limit: in flight, or finished
-- (completed) since the window began.
SELECT e.workflow_id, e.job_id, e.new_status, coalesce(e.finished_at, e.created_at) AS at
FROM automation_execution_logs e
JOIN unnest(CAST(:workflow_ids AS bigint[]), CAST(:job_ids AS bigint[]),
            CAST(:statuses AS text[])) AS k(workflow_id, job_id, new_status)
  ON e.workflow_id = k.workflow_id AND e.job_id = k.job_id AND e.new_status = k.new_status
WHERE e.status IN ('pending', 'processing', 'completed')
  AND (e.status <> 'completed' OR e.finished_at > :since)

-- name: recent_per_workflow
-- Executions each workflow made since its window began (its per-workflow limit).
SELECT k.workflow_id, count(e.id) AS made
FROM unnest(CAST(:workflow_ids AS bigint[]), CAST(:since AS timestamptz[])) AS k(workflow_id, since)
LEFT JOIN automation_execution_logs e
  ON e.workflow_id = k.workflow_id AND e.created_at > k.since AND e.status <> 'skipped'
GROUP BY k.workflow_id

-- name: existing_keys
SELECT e.workflow_id, e.idempotency_key
FROM automation_execution_logs e
JOIN unnest(CAST(:workflow_ids AS bigint[]), CAST(:keys AS text[])) AS k(workflow_id, key)
  ON e.workflow_id = k.workflow_id AND e.idempotency_key = k.key
WHERE e.status <> 'skipped'

-- name: supersede_debounced
-- A debounced execution not yet started gives way to the newer change for its key.
UPDATE automation_execution_logs
SET status = 'skipped', finished_at = now(),
    skip_reason = 'debounced: superseded by change ' || CAST(:change_id AS text)
WHERE workflow_id = :workflow_id AND debounce_key = :debounce_key
  AND status = 'pending' AND attempts = 0
RETURNING id

-- name: insert_executions
INSERT INTO automation_execution_logs (
    workflow_id, change_id, source, job_id, user_id, old_status, new_status, trigger_data,
    status, skip_reason, idempotency_key, chain, debounce_key, concurrency_key,
    max_attempts, run_after, finished_at
)
SELECT r.workflow_id, r.change_id, r.source, r.job_id, r.user_id, r.old_status, r.new_status,
       r.trigger_data, r.status, r.skip_reason, r.idempotency_key,
       ARRAY(SELECT jsonb_array_elements_text(r.chain))::bigint[], r.debounce_key,
       r.concurrency_key, r.max_attempts, r.run_after,
       CASE WHEN r.status = 'skipped' THEN now() END
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
    workflow_id bigint, change_id bigint, source text, job_id bigint, user_id bigint,
    old_status text, new_status text, trigger_data jsonb, status text, skip_reason text,
    idempotency_key text, chain jsonb, debounce_key text, concurrency_key text,
    max_attempts int, run_after timestamptz
)
ON CONFLICT DO NOTHING
RETURNING id, status

-- name: mark_matched
UPDATE job_status_changes SET matched_at = :now WHERE id = ANY (CAST(:change_ids AS bigint[]))

-- name: take_unpublished
-- Pending executions without a message; each gets its message's id here.
UPDATE automation_execution_logs e
SET enqueued_at = now(), celery_task_id = gen_random_uuid()::text
FROM (
    SELECT id FROM automation_execution_logs
    WHERE status = 'pending' AND enqueued_at IS NULL
    ORDER BY run_after, id
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
) AS t
WHERE e.id = t.id
RETURNING e.id, e.celery_task_id, greatest(0, extract(epoch FROM e.run_after - now())) AS delay

-- name: execution_state
SELECT e.status, e.run_after, now() AS now, e.celery_task_id, e.concurrency_key, e.workflow_id,
       (w.definition -> 'concurrency' ->> 'limit')::int AS concurrency_limit
FROM automation_execution_logs e
JOIN automation_workflows w ON w.id = e.workflow_id
WHERE e.id = :id

-- name: lock_concurrency_key
SELECT pg_advisory_xact_lock(hashtextextended(CAST(:workflow_id AS text) || '/' || :key, 0))

-- name: claim
-- A due pending row is anyone's (a message that comes early waits again: the runner); a processing one only its own message's, coming again
-- after its run ended (a redelivery after the worker died). With a concurrency limit,
-- only while fewer than the limit run for the same key (the caller holds the key's lock).
UPDATE automation_execution_logs e
SET status = 'processing', attempts = attempts + 1, started_at = now(),
    celery_task_id = :celery_task_id, worker_host = :worker_host
WHERE e.id = :id
  AND e.run_after <= now() AND e.attempts < e.max_attempts
  AND (e.status = 'pending'
       OR (e.status = 'processing' AND e.celery_task_id = :celery_task_id AND :resumable))
  AND (CAST(:limit AS int) IS NULL OR (
        SELECT count(*) FROM automation_execution_logs o
        WHERE o.workflow_id = e.workflow_id AND o.concurrency_key = e.concurrency_key
          AND o.status = 'processing' AND o.id <> e.id) < CAST(:limit AS int))
RETURNING e.attempts, e.max_attempts, e.workflow_id, e.trigger_data, e.idempotency_key,
          e.chain, e.action_results, e.user_id

-- name: workflow_for_run
SELECT id, definition, active, secret_encrypted FROM automation_workflows WHERE id = :id

-- name: record_action
UPDATE automation_execution_logs
SET action_results = CAST(:results AS jsonb)
WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
  AND attempts = :attempt
RETURNING id

-- name: settle
-- completed, failed or skipped, fenced by the claim.
UPDATE automation_execution_logs
SET status = :status, finished_at = now(), error = :error, skip_reason = :skip_reason,
    action_results = CAST(:results AS jsonb)
WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
  AND attempts = :attempt
RETURNING id

-- name: release_for_retry
-- The retry message (same id) is on its way with a countdown: the row waits for it.
UPDATE automation_execution_logs
SET status = 'pending', error = :error, action_results = CAST(:results AS jsonb),
    run_after = now() + make_interval(secs => :delay), enqueued_at = now()
WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
  AND attempts = :attempt
RETURNING id

-- name: fail_exhausted_orphans
-- Processing rows whose worker died (or that outlived the task's hard time limit) after
-- their last allowed attempt.
UPDATE automation_execution_logs
SET status = 'failed', finished_at = :now,
    error = 'its worker died during its last allowed attempt (' || attempts || ')'
WHERE status = 'processing' AND attempts >= max_attempts
  AND ((worker_host = ANY (CAST(:dead_hosts AS text[])) AND started_at < :claimed_before)
       OR started_at < :now - make_interval(secs => :time_limit))
RETURNING id

-- name: requeue_orphans
UPDATE automation_execution_logs
SET status = 'pending', enqueued_at = NULL, run_after = now(),
    error = 'its worker died mid-run; run again'
WHERE status = 'processing'
  AND ((worker_host = ANY (CAST(:dead_hosts AS text[])) AND started_at < :claimed_before)
       OR started_at < :now - make_interval(secs => :time_limit))
RETURNING id

-- name: requeue_lost_messages
-- Pending rows whose message should have come long ago (Redis lost it): publish again.
UPDATE automation_execution_logs
SET enqueued_at = NULL
WHERE status = 'pending' AND enqueued_at < :lost_before AND run_after < :lost_before
RETURNING id

-- name: republish_after_broker_reset
-- Redis lost its data: executions published or claimed before the loss was noticed lost
-- their messages. Fresh ones (the NOTIFY at commit wakes the dispatcher); a surviving
-- message finds its execution claimed by the fresh one, or the other way round, and the
-- actions already recorded as done are not run again.
UPDATE automation_execution_logs
SET status = 'pending', enqueued_at = NULL,
    run_after = CASE WHEN status = 'processing' THEN now() ELSE run_after END,
    error = CASE WHEN status = 'processing'
        THEN format('its message was lost with Redis''s data during attempt %s; requeued',
                    attempts)
        ELSE error END
WHERE (status = 'pending' AND enqueued_at < :noticed_at)
   OR (status = 'processing' AND started_at < :noticed_at)
RETURNING id

-- name: processing_hosts
SELECT DISTINCT worker_host FROM automation_execution_logs
WHERE status = 'processing' AND worker_host IS NOT NULL

-- name: prune
-- Finished executions and matched changes past their keep-time, a batch at a time.
WITH gone AS (
    DELETE FROM automation_execution_logs
    WHERE id IN (
        SELECT id FROM automation_execution_logs
        WHERE status IN ('completed', 'failed', 'skipped') AND created_at < :before
        LIMIT :batch
    )
    RETURNING 1
), changes AS (
    DELETE FROM job_status_changes
    WHERE id IN (
        SELECT id FROM job_status_changes
        WHERE matched_at IS NOT NULL AND changed_at < :before
        LIMIT :batch
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS executions, (SELECT count(*) FROM changes) AS changes

-- name: status_summary
-- The status report's last day of executions, by status (ix_automation_execution_logs_created_at).
SELECT status, count(*) AS executions FROM automation_execution_logs
WHERE created_at > :since GROUP BY status

-- name: workflow_counts
SELECT count(*) FILTER (WHERE active) AS active, count(*) FILTER (WHERE NOT active) AS inactive
FROM automation_workflows
