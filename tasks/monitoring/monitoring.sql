-- name: ledger_exact
-- Rows still to do, or failed, by type: the partial and (status, created_at) indexes hold
-- these few; completed rows (most of the table) are estimated (``estimated_rows``).
SELECT task_type, status, count(*) AS n
FROM background_tasks
WHERE status IN ('pending', 'processing', 'failed')
GROUP BY task_type, status

-- name: stale_pending
-- Ledger rows queued for longer than the stuck-jobs alert allows.
SELECT count(*) AS n
FROM background_tasks
WHERE status = 'pending' AND created_at < :before

-- name: estimated_shares
-- A column's common values and their rows, from the planner's statistics (ANALYZE, which
-- autovacuum runs): no scan of the table. Values too rare to be common are left out.
SELECT v.value, round(greatest(c.reltuples, 0) * v.freq)::bigint AS n
FROM pg_class AS c
JOIN pg_stats AS s
  ON s.schemaname = current_schema() AND s.tablename = c.relname AND s.attname = :column
CROSS JOIN LATERAL unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS v (value, freq)
WHERE c.oid = CAST(:table AS regclass)

-- name: estimated_rows
-- A table's rows as the planner counts them (VACUUM and ANALYZE keep it current).
SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = CAST(:table AS regclass)

-- name: enrichment_last_progress
-- When enrichment last moved: the newest enriched listen (index on enriched_at), or,
-- nothing ever enriched, the earliest live connection with listens waiting (as the stall
-- check in tasks/enrichment/enrichment.sql).
SELECT coalesce(
    (SELECT max(enriched_at) FROM listens),
    (SELECT min(c.authorized_at) FROM spotify_tokens AS c
     WHERE c.revoked_at IS NULL
       AND EXISTS (SELECT 1 FROM listens AS l
                   WHERE l.user_id = c.user_id AND l.enrichment_status = 'pending'))
) AS last_progress

-- name: dead_letters
SELECT count(*) AS total, coalesce(max(id), 0) AS last_id, max(received_at) AS latest_at
FROM dead_letters

-- name: dead_letters_after
SELECT count(*) AS n, coalesce(max(id), 0) AS last_id FROM dead_letters WHERE id > :after

-- name: schedule_health
-- Per entry: its newest fired slot (beat's own fires, manual runs aside), its newest
-- success, and how its last runs ended. Each lateral walks one entry's fires newest first
-- on the primary key (entry, slot) and finds each fire's run by task id, stopping at the
-- first success: a few index probes an entry, whatever the history.
SELECT e.name, e.task, e.cron, e.every_seconds, e.timezone, e.paused, e.not_before,
       (SELECT max(f.slot) FROM schedule_fires AS f
        WHERE f.entry = e.name AND NOT f.manual) AS last_slot,
       (SELECT r.finished_at
        FROM (SELECT f.task_id, f.slot FROM schedule_fires AS f
              WHERE f.entry = e.name ORDER BY f.slot DESC LIMIT :success_window) AS f
        JOIN LATERAL (SELECT t.status, t.finished_at FROM task_runs AS t
                      WHERE t.task_id = f.task_id ORDER BY t.started_at DESC LIMIT 1) AS r
          ON r.status = 'success'
        ORDER BY f.slot DESC LIMIT 1) AS last_success_at,
       ARRAY(SELECT coalesce(r.status, 'sent')
             FROM (SELECT f.task_id, f.slot FROM schedule_fires AS f
                   WHERE f.entry = e.name ORDER BY f.slot DESC LIMIT :recent) AS f
             LEFT JOIN LATERAL (SELECT t.status FROM task_runs AS t
                                WHERE t.task_id = f.task_id
                                ORDER BY t.started_at DESC LIMIT 1) AS r ON true
             ORDER BY f.slot DESC) AS recent_statuses
FROM schedule_entries AS e
ORDER BY e.name

-- name: workflow_health
-- Event workflows, each part an index probe or a count over the few rows an index picks:
-- executions still to do (the partial ix_automation_execution_logs_active holds only
-- these; the oldest due one is its first entry past 'pending'), executions of the last day
-- that failed (the created_at index picks the day), and status changes the dispatcher has
-- yet to match (the partial ix_job_status_changes_unmatched; the first recorded is the
-- oldest).
SELECT
    (SELECT count(*) FROM automation_execution_logs WHERE status = 'pending') AS pending,
    (SELECT count(*) FROM automation_execution_logs WHERE status = 'processing') AS processing,
    (SELECT min(run_after) FROM automation_execution_logs
     WHERE status = 'pending' AND run_after <= :now) AS oldest_due_at,
    (SELECT count(*) FROM automation_execution_logs
     WHERE created_at > :since AND status = 'failed') AS failed_24h,
    (SELECT count(*) FROM job_status_changes WHERE matched_at IS NULL) AS unmatched,
    (SELECT changed_at FROM job_status_changes WHERE matched_at IS NULL
     ORDER BY id LIMIT 1) AS oldest_unmatched_at

-- name: ingest_health
-- Media ingest, each part an index probe or a count over the few rows an index picks:
-- jobs waiting or running (the partial ix_ingest_jobs_active), failed jobs (the partial
-- ix_ingest_jobs_failed), the oldest waiting job (ix_ingest_jobs_active's first queued
-- entry), and the jobs that finished in the last hour (ix_ingest_jobs_finished_at). Done
-- jobs, most of the table, are the planner's estimate (``estimated_rows``).
SELECT
    (SELECT count(*) FROM ingest_jobs WHERE status = 'queued') AS queued,
    (SELECT count(*) FROM ingest_jobs WHERE status = 'processing') AS processing,
    (SELECT count(*) FROM ingest_jobs WHERE status = 'failed') AS failed,
    (SELECT min(created_at) FROM ingest_jobs WHERE status = 'queued') AS oldest_queued_at,
    (SELECT count(*) FROM ingest_jobs
     WHERE finished_at > :since AND status = 'done') AS done_last_hour,
    (SELECT count(*) FROM ingest_jobs
     WHERE finished_at > :since AND status = 'failed') AS failed_last_hour,
    EXISTS (SELECT 1 FROM ingest_pipeline WHERE id = 1 AND paused_at IS NOT NULL) AS paused
