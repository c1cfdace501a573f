-- The run journal's writes (worker/run_journal.py). Each takes a whole batch as one JSON
-- parameter: one statement whatever the batch size, planned once, no per-row round trip.

-- name: upsert_runs
-- Entries of one run may come in any order and more than once: a status only moves
-- forward (started, then lost, then an outcome), the outcome's fields come with the
-- entry that carries a finish time, and what a start knows fills what is missing. The
-- commit marker the task's own transaction wrote (task_run_commits) is copied on; it
-- commits before the finish entry is written, so the finish always finds it.
INSERT INTO task_runs AS r (
    run_key, task_id, task_name, retries, delivery, args_summary, status, queue,
    forwarded_from, worker_host, started_at, finished_at, runtime_seconds,
    result_summary, error, committed_at
)
SELECT x.run_key, task_id, task_name, coalesce(retries, 0), coalesce(delivery, 1),
       args_summary, status, queue, forwarded_from, worker_host, started_at, finished_at,
       runtime_seconds, result_summary, error,
       -- Per row, by primary key: never a scan of the whole marker table, whatever
       -- the planner's statistics say.
       coalesce(x.committed_at,
                (SELECT c.committed_at FROM task_run_commits AS c WHERE c.run_key = x.run_key))
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
    run_key text, task_id text, task_name text, retries int, delivery int,
    args_summary text, status text, queue text, forwarded_from text, worker_host text,
    started_at timestamptz, finished_at timestamptz, runtime_seconds float8,
    result_summary text, error text, committed_at timestamptz
)
ON CONFLICT (run_key) DO UPDATE SET
    status = CASE WHEN (CASE EXCLUDED.status WHEN 'started' THEN 0 WHEN 'lost' THEN 1 ELSE 2 END) >= (CASE r.status WHEN 'started' THEN 0 WHEN 'lost' THEN 1 ELSE 2 END)
                  THEN EXCLUDED.status ELSE r.status END,
    started_at = least(r.started_at, EXCLUDED.started_at),
    delivery = greatest(r.delivery, EXCLUDED.delivery),
    committed_at = coalesce(r.committed_at, EXCLUDED.committed_at),
    task_name = coalesce(EXCLUDED.task_name, r.task_name),
    args_summary = coalesce(EXCLUDED.args_summary, r.args_summary),
    queue = coalesce(EXCLUDED.queue, r.queue),
    forwarded_from = coalesce(EXCLUDED.forwarded_from, r.forwarded_from),
    worker_host = coalesce(EXCLUDED.worker_host, r.worker_host),
    finished_at = CASE WHEN EXCLUDED.finished_at IS NOT NULL
                        AND (CASE EXCLUDED.status WHEN 'started' THEN 0 WHEN 'lost' THEN 1 ELSE 2 END) >= (CASE r.status WHEN 'started' THEN 0 WHEN 'lost' THEN 1 ELSE 2 END)
                       THEN EXCLUDED.finished_at ELSE r.finished_at END,
    runtime_seconds = CASE WHEN EXCLUDED.finished_at IS NOT NULL
                            AND (CASE EXCLUDED.status WHEN 'started' THEN 0 WHEN 'lost' THEN 1 ELSE 2 END) >= (CASE r.status WHEN 'started' THEN 0 WHEN 'lost' THEN 1 ELSE 2 END)
                           THEN EXCLUDED.runtime_seconds ELSE r.runtime_seconds END,
    result_summary = CASE WHEN EXCLUDED.finished_at IS NOT NULL
                           AND (CASE EXCLUDED.status WHEN 'started' THEN 0 WHEN 'lost' THEN 1 ELSE 2 END) >= (CASE r.status WHEN 'started' THEN 0 WHEN 'lost' THEN 1 ELSE 2 END)
                          THEN EXCLUDED.result_summary ELSE r.result_summary END,
    error = CASE WHEN EXCLUDED.finished_at IS NOT NULL
                  AND (CASE EXCLUDED.status WHEN 'started' THEN 0 WHEN 'lost' THEN 1 ELSE 2 END) >= (CASE r.status WHEN 'started' THEN 0 WHEN 'lost' THEN 1 ELSE 2 END)
                 THEN EXCLUDED.error ELSE r.error END

-- name: mark_lost
-- A later delivery of the same message started: earlier runs that never finished died
-- with their worker. One whose transaction committed did its work: it is a success.
WITH gone AS (
    SELECT r.id, c.committed_at
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(task_id text, retries int, run_key text)
    JOIN task_runs AS r ON r.task_id = x.task_id AND r.retries = x.retries
                       AND r.status = 'started' AND r.run_key <> x.run_key
    LEFT JOIN task_run_commits AS c ON c.run_key = r.run_key
)
UPDATE task_runs AS r
SET status = CASE WHEN gone.committed_at IS NULL THEN 'lost' ELSE 'success' END,
    committed_at = gone.committed_at,
    error = coalesce(r.error, CASE WHEN gone.committed_at IS NULL
                                   THEN 'its worker died; the message was delivered again'
                                   ELSE 'its worker died after its transaction committed'
                              END)
FROM gone
WHERE r.id = gone.id

-- name: mark_committed
-- In the task's own transaction: an insert only, of a key nobody else writes, so it
-- never conflicts with the drainer (even under REPEATABLE READ).
INSERT INTO task_run_commits (run_key, committed_at) VALUES (:run_key, :committed_at)
ON CONFLICT (run_key) DO NOTHING

-- name: mark_killed
-- The worker's parent killed the child at its hard time limit.
UPDATE task_runs AS r
SET status = 'failure', finished_at = x.finished_at, error = x.error,
    runtime_seconds = extract(epoch FROM x.finished_at - r.started_at)
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS x(task_id text, finished_at timestamptz, error text)
WHERE r.task_id = x.task_id AND r.status = 'started'

-- name: insert_dead_letters
INSERT INTO dead_letters (
    journal_id, reason, task_id, task_name, queue, content_type, headers, body,
    worker_host, received_at
)
SELECT journal_id, reason, task_id, task_name, queue, content_type, headers, body,
       worker_host, coalesce(received_at, now())
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
    journal_id text, reason text, task_id text, task_name text, queue text,
    content_type text, headers jsonb, body text, worker_host text, received_at timestamptz
)
ON CONFLICT (journal_id) DO NOTHING

-- name: delete_task_runs_batch
-- A run's commit marker goes with it (it is never read once copied onto the run).
WITH old AS (SELECT id, run_key FROM task_runs WHERE started_at < :before LIMIT :batch),
     markers AS (DELETE FROM task_run_commits WHERE run_key IN (SELECT run_key FROM old))
DELETE FROM task_runs WHERE id IN (SELECT id FROM old)

-- name: running_hosts
-- The workers of runs still going: the rescue asks which of them are still alive.
SELECT DISTINCT worker_host FROM task_runs
WHERE status = 'started' AND worker_host IS NOT NULL

-- name: mark_unfinished_runs_lost
-- Runs started before :started_before that never finished here, on the workers in
-- :hosts (NULL: on any): their worker stopped renewing its lease, or Redis lost its data
-- and with it their records. One whose transaction committed did its work: a success.
-- A finish that turns up later (drained late) still wins, since a finish outranks lost.
-- :reason may name the worker with %s.
WITH gone AS (
    SELECT r.id, c.committed_at
    FROM task_runs AS r
    LEFT JOIN task_run_commits AS c ON c.run_key = r.run_key
    WHERE r.status = 'started' AND r.started_at < :started_before
      AND (CAST(:hosts AS text[]) IS NULL OR r.worker_host = ANY(CAST(:hosts AS text[])))
)
UPDATE task_runs AS r
SET status = CASE WHEN gone.committed_at IS NULL THEN 'lost' ELSE 'success' END,
    committed_at = gone.committed_at,
    error = coalesce(r.error, CASE WHEN gone.committed_at IS NULL
                                   THEN format(CAST(:reason AS text), r.worker_host)
                                   ELSE 'its worker died after its transaction committed'
                              END)
FROM gone
WHERE r.id = gone.id
RETURNING r.id

-- name: fan_outs_cut_short
-- Runs replaced by a fan-out (a chord) before Redis lost its data, whose fan-in never
-- succeeded: the chord's parts and counter were in Redis. The fan-in runs under the
-- replaced run's task id (Celery's replace), so a success with that id means it finished.
SELECT DISTINCT ON (r.task_id) r.task_id, r.task_name, r.args_summary
FROM task_runs AS r
WHERE r.status = 'fanned_out' AND r.started_at < :noticed_at AND r.started_at > :since
  AND NOT EXISTS (
      SELECT 1 FROM task_runs AS s WHERE s.task_id = r.task_id AND s.status = 'success'
  )
ORDER BY r.task_id, r.started_at DESC
