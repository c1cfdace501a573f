-- The live schedule (worker/schedules/): the leader's lease, fenced fires, the views.
-- Every time that decides who leads is the database's clock (clock_timestamp()), never a
-- beat host's: hosts' clocks may disagree, the one database does not.

-- name: hold_lease
-- Renew our own term (same holder and token: the token stays), or take a vacant or
-- expired lease (a new term: the token goes up by one). No row back: another holds it.
INSERT INTO beat_leader AS l (id, holder, token, acquired_at, expires_at)
VALUES (1, :holder, 1, clock_timestamp(), clock_timestamp() + make_interval(secs => :lease))
ON CONFLICT (id) DO UPDATE SET
    holder = excluded.holder,
    token = CASE WHEN l.holder = excluded.holder AND l.token = :token
                 THEN l.token ELSE l.token + 1 END,
    acquired_at = CASE WHEN l.holder = excluded.holder AND l.token = :token
                       THEN l.acquired_at ELSE excluded.acquired_at END,
    expires_at = excluded.expires_at
WHERE (l.holder = excluded.holder AND l.token = :token) OR l.expires_at <= clock_timestamp()
RETURNING l.token

-- name: release_lease
-- A beat that stops hands over at once instead of after its lease.
UPDATE beat_leader SET expires_at = clock_timestamp() WHERE holder = :holder AND token = :token

-- name: leader
SELECT holder, token, acquired_at, expires_at, expires_at > clock_timestamp() AS live
FROM beat_leader WHERE id = 1

-- name: fire
-- The fence: rows go in only while the lease is ours (holder and token) and unexpired, and
-- FOR SHARE makes a takeover wait for this statement, or this statement see the new
-- token. (entry, slot) is the key: a slot already fired is left as it is. A paused or
-- deleted entry fires nothing, whatever the beat last read.
INSERT INTO schedule_fires (entry, slot, task, args, kwargs, task_id, token)
SELECT f.entry, f.slot, f.task, f.args, f.kwargs, f.task_id, l.token
FROM beat_leader l
CROSS JOIN jsonb_to_recordset(CAST(:fires AS jsonb))
    AS f(entry text, slot timestamptz, task text, args jsonb, kwargs jsonb, task_id text)
JOIN schedule_entries e ON e.name = f.entry AND NOT e.paused
WHERE l.id = 1 AND l.holder = :holder AND l.token = :token
  AND l.expires_at > clock_timestamp()
FOR SHARE OF l
ON CONFLICT (entry, slot) DO NOTHING
RETURNING entry, slot, task, args, kwargs, task_id

-- name: claim_publication
-- Fired rows this leader may publish: still unpublished, and the lease still ours. A
-- leader that stalled between its fire and its publish finds the lease gone and
-- publishes nothing; the next leader publishes the row (claim_unpublished).
UPDATE schedule_fires f SET published_at = clock_timestamp()
FROM beat_leader l
WHERE f.task_id = ANY(:task_ids) AND f.published_at IS NULL
  AND l.id = 1 AND l.holder = :holder AND l.token = :token
  AND l.expires_at > clock_timestamp()
RETURNING f.task_id

-- name: unclaim_publication
-- The broker refused the message: the row waits for the next pass.
UPDATE schedule_fires SET published_at = NULL WHERE task_id = ANY(:task_ids)

-- name: claim_unpublished
-- Fires recorded but never published (their leader died in between), for the leader.
UPDATE schedule_fires f SET published_at = clock_timestamp()
FROM beat_leader l
WHERE f.published_at IS NULL AND NOT f.manual
  AND f.fired_at < clock_timestamp() - make_interval(secs => :older_than)
  AND l.id = 1 AND l.holder = :holder AND l.token = :token
  AND l.expires_at > clock_timestamp()
RETURNING f.entry, f.slot, f.task, f.args, f.kwargs, f.task_id

-- name: live_entries
-- What beat fires from: every entry, with the newest slot it fired (manual runs aside).
SELECT e.name, e.task, e.args, e.kwargs, e.cron, e.every_seconds, e.timezone, e.missed,
       e.paused, e.not_before,
       (SELECT max(f.slot) FROM schedule_fires f
        WHERE f.entry = e.name AND NOT f.manual) AS last_slot
FROM schedule_entries e
ORDER BY e.name

-- name: last_runs
-- Each entry's newest fire and what its task's run became (a fan-out's fan-in runs under
-- the same task id, so the newest run of that id is the outcome).
SELECT DISTINCT ON (f.entry) f.entry, f.slot, f.fired_at, f.manual, f.task_id,
       r.status, r.started_at, r.runtime_seconds, r.error
FROM schedule_fires f
LEFT JOIN LATERAL (
    SELECT status, started_at, runtime_seconds, error FROM task_runs
    WHERE task_id = f.task_id ORDER BY started_at DESC LIMIT 1
) r ON true
ORDER BY f.entry, f.fired_at DESC

-- name: entry_runs
-- The last :n runs of one entry, newest first, with status, duration and error.
SELECT f.slot, f.fired_at, f.manual, f.task_id, f.published_at,
       r.status, r.started_at, r.finished_at, r.runtime_seconds, r.error, r.worker_host
FROM schedule_fires f
LEFT JOIN LATERAL (
    SELECT status, started_at, finished_at, runtime_seconds, error, worker_host
    FROM task_runs WHERE task_id = f.task_id ORDER BY started_at DESC LIMIT 1
) r ON true
WHERE f.entry = :entry
ORDER BY f.fired_at DESC
LIMIT :n

-- name: delete_old_fires
DELETE FROM schedule_fires
WHERE ctid = ANY(ARRAY(SELECT ctid FROM schedule_fires WHERE fired_at < :before LIMIT :batch))

-- name: lock_reconcile
-- Beats starting together reconcile one after the other.
SELECT pg_advisory_xact_lock(hashtext('schedule.reconcile'))

-- name: fires_lost_with_the_broker
-- Redis lost its data (worker/recovery/broker_reset.py): the newest fire of each entry
-- whose policy is run_once, published before the loss was noticed and within :since, whose
-- task never started (no run of its id: the message was still queued when it went). A run
-- whose record was still in Redis's journal looks the same and is done again: every task is
-- idempotent. Paused entries are left alone; a fan-out that started is the fan-out rule's.
SELECT DISTINCT ON (f.entry) f.entry, f.slot, f.task, f.args, f.kwargs, f.task_id
FROM schedule_fires f
JOIN schedule_entries e ON e.name = f.entry AND NOT e.paused AND e.missed = 'run_once'
WHERE f.published_at < :noticed_at AND f.published_at >= :since
  AND NOT EXISTS (SELECT 1 FROM task_runs r WHERE r.task_id = f.task_id)
ORDER BY f.entry, f.slot DESC
