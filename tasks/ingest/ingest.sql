-- The ingest pipeline's statements (tasks/ingest/). Every write a run makes after its
-- claim is fenced by the claim: the job still processing, under the run's message id and
-- attempt, so a run presumed dead (and replaced) can change nothing.

-- name: lock_dispatch
-- One dispatcher at a time decides how many jobs go out: two would both see room.
SELECT pg_advisory_xact_lock(hashtextextended('ingest dispatch', 0))

-- name: dispatch_room
-- How many more jobs may be published now: the batch less the jobs in flight, and the
-- rate less the jobs published in the last minute; none while paused. No controls row
-- (none was ever set): the settings' defaults, running.
SELECT p.paused_at IS NOT NULL AS paused,
       coalesce(p.batch_size, :default_batch) - (
           SELECT count(*) FROM ingest_jobs
           WHERE status = 'processing' OR (status = 'queued' AND enqueued_at IS NOT NULL)
       ) AS batch_room,
       -- Counted only when a rate is set: the jobs published in the last minute, whatever
       -- became of them since (ix_ingest_jobs_enqueued_at).
       CASE WHEN coalesce(p.rate_per_minute, CAST(:default_rate AS int)) IS NOT NULL THEN
           coalesce(p.rate_per_minute, CAST(:default_rate AS int)) - (
               SELECT count(*) FROM ingest_jobs WHERE enqueued_at > now() - interval '1 minute')
       END AS rate_room
FROM (SELECT 1) AS one LEFT JOIN ingest_pipeline p ON p.id = 1

-- name: take_unpublished
-- Queued jobs without a message, oldest first; each gets its message's id here.
UPDATE ingest_jobs j
SET enqueued_at = now(), celery_task_id = gen_random_uuid()::text
FROM (
    SELECT id FROM ingest_jobs
    WHERE status = 'queued' AND enqueued_at IS NULL AND run_after <= now()
    ORDER BY id
    LIMIT :room
    FOR UPDATE SKIP LOCKED
) AS t
WHERE j.id = t.id
RETURNING j.id, j.celery_task_id

-- name: job_state
SELECT j.status, j.run_after, now() AS now, j.celery_task_id, j.attempts, j.max_attempts,
       (SELECT paused_at FROM ingest_pipeline WHERE id = 1) AS paused_at
FROM ingest_jobs j WHERE j.id = :id

-- name: claim
-- A due queued job is anyone's while the pipeline runs; a processing one only its own
-- message's, coming again after its worker died (that run was started before any pause:
-- it finishes).
UPDATE ingest_jobs j
SET status = 'processing', attempts = attempts + 1, started_at = coalesce(started_at, now()),
    claimed_at = now(), celery_task_id = :celery_task_id, worker_host = :worker_host
WHERE j.id = :id AND j.run_after <= now() AND j.attempts < j.max_attempts
  AND ((j.status = 'queued'
        AND NOT EXISTS (SELECT 1 FROM ingest_pipeline WHERE paused_at IS NOT NULL))
       OR (j.status = 'processing' AND j.celery_task_id = :celery_task_id AND :resumable))
RETURNING j.id, j.attempts, j.max_attempts, j.object_path, j.cover_path, j.kind, j.outputs,
          j.user_id, j.track_id

-- name: leave_for_resume
-- Paused: the message goes, the job stays queued, and the resume publishes it again.
UPDATE ingest_jobs SET enqueued_at = NULL
WHERE id = :id AND status = 'queued' AND celery_task_id = :celery_task_id
RETURNING id

-- name: lock_step
SELECT pg_advisory_xact_lock(hashtextextended('ingest step ' || :step, 0))

-- name: step_limit
SELECT CAST(step_concurrency ->> :step AS int) AS live FROM ingest_pipeline WHERE id = 1

-- name: enter_step
-- The run moves its job to ``step``, while fewer than ``limit`` other jobs are in it.
UPDATE ingest_jobs j SET step = :step
WHERE j.id = :id AND j.status = 'processing' AND j.celery_task_id = :celery_task_id
  AND j.attempts = :attempt
  AND (CAST(:limit AS int) IS NULL OR (
        SELECT count(*) FROM ingest_jobs o
        WHERE o.status = 'processing' AND o.step = :step AND o.id <> j.id
      ) < CAST(:limit AS int))
RETURNING j.id

-- name: holds
SELECT 1 FROM ingest_jobs
WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
  AND attempts = :attempt

-- name: record_step
UPDATE ingest_jobs
SET outputs = outputs || jsonb_build_object(CAST(:step AS text), CAST(:output AS jsonb)),
    kind = coalesce(CAST(:kind AS text), kind)
WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
  AND attempts = :attempt
RETURNING id

-- name: settle_done
UPDATE ingest_jobs
SET status = 'done', finished_at = now(), error = NULL, track_id = :track_id,
    outputs = outputs || jsonb_build_object('publish', CAST(:output AS jsonb))
WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
  AND attempts = :attempt
RETURNING id

-- name: settle_failed
UPDATE ingest_jobs SET status = 'failed', finished_at = now(), error = :error
WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
  AND attempts = :attempt
RETURNING id

-- name: release_for_retry
-- The retry message (same id) is on its way with a countdown: the job waits for it.
UPDATE ingest_jobs
SET status = 'queued', error = :error, run_after = now() + make_interval(secs => :delay),
    enqueued_at = now()
WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
  AND attempts = :attempt
RETURNING id

-- name: release_busy
-- A step's concurrency limit stayed reached: back to the queue for a while, the attempt
-- not counted (nothing failed).
UPDATE ingest_jobs
SET status = 'queued', attempts = attempts - 1, error = :error,
    run_after = now() + make_interval(secs => :delay), enqueued_at = now()
WHERE id = :id AND status = 'processing' AND celery_task_id = :celery_task_id
  AND attempts = :attempt
RETURNING id

-- name: cover_target
-- The track an image job is the cover of, and the waveform of its ingested audio.
SELECT t.title, a.name AS artist, (
    SELECT j.outputs -> 'analysis' -> 'peaks' FROM ingest_jobs j
    WHERE j.track_id = t.id AND j.kind = 'audio' AND j.status = 'done'
    ORDER BY j.id DESC LIMIT 1
) AS peaks
FROM tracks t JOIN artists a ON a.id = t.artist_id
WHERE t.id = :id

-- name: lock_name
-- Artists and albums are found or created by normalised name: one creator per name.
SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))

-- name: find_artist
SELECT id FROM artists
WHERE lower(regexp_replace(btrim(name), '\s+', ' ', 'g')) = :norm
ORDER BY id LIMIT 1

-- name: find_album
SELECT id FROM albums
WHERE artist_id = :artist_id AND lower(regexp_replace(btrim(title), '\s+', ' ', 'g')) = :norm
ORDER BY id LIMIT 1

-- name: processing_hosts
SELECT DISTINCT worker_host FROM ingest_jobs
WHERE status = 'processing' AND worker_host IS NOT NULL

-- name: fail_exhausted_orphans
-- Processing jobs whose worker died (or that outlived the task's hard time limit) during
-- their last allowed attempt.
UPDATE ingest_jobs
SET status = 'failed', finished_at = :now,
    error = coalesce(error || '; then ', '')
        || 'its worker died during its last allowed attempt (' || attempts || ')'
WHERE status = 'processing' AND attempts >= max_attempts
  AND ((worker_host = ANY (CAST(:dead_hosts AS text[])) AND claimed_at < :claimed_before)
       OR claimed_at < :now - make_interval(secs => :time_limit))
RETURNING id

-- name: requeue_orphans
UPDATE ingest_jobs
SET status = 'queued', enqueued_at = NULL, run_after = now(),
    error = 'its worker died during attempt ' || attempts || '; queued again'
WHERE status = 'processing'
  AND ((worker_host = ANY (CAST(:dead_hosts AS text[])) AND claimed_at < :claimed_before)
       OR claimed_at < :now - make_interval(secs => :time_limit))
RETURNING id

-- name: requeue_lost_messages
-- Queued jobs whose message should have come long ago (Redis lost it): publish again.
UPDATE ingest_jobs SET enqueued_at = NULL
WHERE status = 'queued' AND enqueued_at < :lost_before AND run_after < :lost_before
RETURNING id

-- name: republish_after_broker_reset
-- Redis lost its data: jobs published or claimed before the loss was noticed lost their
-- messages. Fresh ones (the trigger wakes the dispatcher); a run that survived finds its
-- job taken and its writes refused, and the finished steps are not run again. A job on
-- its last attempt fails instead, keeping what it had.
UPDATE ingest_jobs
SET status = 'queued', enqueued_at = NULL,
    run_after = CASE WHEN status = 'processing' THEN now() ELSE run_after END,
    error = CASE WHEN status = 'processing'
        THEN format('its message was lost with Redis''s data during attempt %s; queued again',
                    attempts)
        ELSE error END
WHERE (status = 'queued' AND enqueued_at < :noticed_at)
   OR (status = 'processing' AND claimed_at < :noticed_at AND attempts < max_attempts)
RETURNING id

-- name: fail_exhausted_after_broker_reset
UPDATE ingest_jobs
SET status = 'failed', finished_at = now(),
    error = format('its message was lost with Redis''s data during its last allowed attempt (%s)',
                   attempts)
WHERE status = 'processing' AND claimed_at < :noticed_at AND attempts >= max_attempts
RETURNING id

-- name: lacking_images
-- Ingested tracks (an audio job done) missing an image the settings now ask for: a
-- thumbnail size, the kept cover, the waveform or the card. Oldest track first, after
-- the last one a batch did.
SELECT t.id AS track_id, j.id AS job_id, j.object_path, j.cover_path, t.title,
       a.name AS artist, j.outputs -> 'analysis' -> 'peaks' AS peaks,
       cover.path AS cover_key,
       ARRAY(
           SELECT s FROM unnest(CAST(:sizes AS int[])) AS s
           WHERE NOT EXISTS (SELECT 1 FROM track_images i
                             WHERE i.track_id = t.id AND i.kind = 'thumbnail' AND i.size = s)
       ) AS missing_sizes,
       NOT EXISTS (SELECT 1 FROM track_images i
                   WHERE i.track_id = t.id AND i.kind = 'waveform') AS missing_waveform,
       NOT EXISTS (SELECT 1 FROM track_images i
                   WHERE i.track_id = t.id AND i.kind = 'card') AS missing_card
FROM ingest_jobs j
JOIN tracks t ON t.id = j.track_id
JOIN artists a ON a.id = t.artist_id
LEFT JOIN track_images cover ON cover.track_id = t.id AND cover.kind = 'cover'
WHERE j.status = 'done' AND j.kind = 'audio' AND t.id > :after
  AND (cover.path IS NULL
       OR NOT EXISTS (SELECT 1 FROM track_images i WHERE i.track_id = t.id AND i.kind = 'card')
       OR (j.outputs -> 'analysis' -> 'peaks' IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM track_images i
                           WHERE i.track_id = t.id AND i.kind = 'waveform'))
       OR EXISTS (
           SELECT 1 FROM unnest(CAST(:sizes AS int[])) AS s
           WHERE NOT EXISTS (SELECT 1 FROM track_images i
                             WHERE i.track_id = t.id AND i.kind = 'thumbnail' AND i.size = s)))
ORDER BY t.id
LIMIT :batch

-- name: lacking_analysis
-- Ingested tracks whose analysis is missing (cleared, or never stored).
SELECT t.id AS track_id, j.id AS job_id, j.object_path
FROM ingest_jobs j JOIN tracks t ON t.id = j.track_id
WHERE j.status = 'done' AND j.kind = 'audio' AND t.id > :after AND t.audio_features IS NULL
ORDER BY t.id
LIMIT :batch

-- name: set_controls
-- The one row of live controls, created on first use; a NULL argument leaves its column.
INSERT INTO ingest_pipeline (id, paused_at, paused_by, batch_size, rate_per_minute,
                             step_concurrency, updated_at)
VALUES (1, NULL, NULL, NULL, NULL, '{}'::jsonb, now())
ON CONFLICT (id) DO NOTHING

-- name: controls
SELECT paused_at, paused_by, batch_size, rate_per_minute, step_concurrency, updated_at
FROM ingest_pipeline WHERE id = 1

-- name: retry_failed
-- Failed jobs back to the queue with a fresh budget of attempts; the steps they finished
-- keep their output and are not run again.
UPDATE ingest_jobs
SET status = 'queued', attempts = 0, run_after = now(), enqueued_at = NULL,
    finished_at = NULL, celery_task_id = NULL, worker_host = NULL, claimed_at = NULL
WHERE status = 'failed' AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY (CAST(:ids AS bigint[])))
RETURNING id

-- name: clear_failed
DELETE FROM ingest_jobs
WHERE status = 'failed' AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY (CAST(:ids AS bigint[])))
RETURNING id

-- name: state_counts
SELECT status, count(*) AS n FROM ingest_jobs GROUP BY status

-- name: last_hour
SELECT count(*) FILTER (WHERE status = 'done' AND finished_at > :since) AS done,
       count(*) FILTER (WHERE status = 'failed' AND finished_at > :since) AS failed,
       count(*) FILTER (WHERE status = 'queued' AND created_at > :since) AS queued,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at))
           FILTER (WHERE status = 'done' AND finished_at > :since) AS median_seconds
FROM ingest_jobs
WHERE finished_at > :since OR (status = 'queued' AND created_at > :since)

-- name: per_hour
-- The last ``hours`` hours, oldest first, with empty hours kept.
SELECT h.hour,
       count(j.id) FILTER (WHERE j.status = 'done') AS done,
       count(j.id) FILTER (WHERE j.status = 'failed') AS failed,
       avg(extract(epoch FROM j.finished_at - j.started_at))
           FILTER (WHERE j.status = 'done') AS mean_seconds
FROM generate_series(date_trunc('hour', CAST(:now AS timestamptz)) - make_interval(hours => :hours - 1),
                     date_trunc('hour', CAST(:now AS timestamptz)), interval '1 hour') AS h (hour)
LEFT JOIN ingest_jobs j
  ON j.finished_at >= h.hour AND j.finished_at < h.hour + interval '1 hour'
GROUP BY h.hour
ORDER BY h.hour

-- name: oldest_queued
SELECT id, created_at, object_path FROM ingest_jobs
WHERE status = 'queued' ORDER BY created_at, id LIMIT 1

-- name: queued_before
SELECT count(*) FROM ingest_jobs WHERE status = 'queued' AND created_at < :before
