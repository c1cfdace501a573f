-- Spotify enrichment (tasks/enrichment/). Listens point at a cache entry
-- (spotify_matches) by their normalized key; a run registers new listens, claims
-- unanswered keys, asks Spotify, records the answers and copies them onto every listen of
-- a live connection that points at them. Claims are leases (claimed_until), so two runs
-- never ask about the same key and a dead run's keys come back by themselves.

-- name: users_to_verify
-- Live connections whose access token has expired, of users with listens still to enrich
-- (of the upload's user only, when a run is for one upload).
SELECT c.user_id
FROM spotify_tokens AS c
WHERE c.revoked_at IS NULL
  AND (c.access_token_expires_at IS NULL OR c.access_token_expires_at <= :due)
  AND (CAST(:upload_id AS bigint) IS NULL
       OR c.user_id = (SELECT u.user_id FROM upload_jobs AS u WHERE u.id = :upload_id))
  AND EXISTS (
      SELECT 1 FROM listens AS l
      WHERE l.user_id = c.user_id AND l.enrichment_status = 'pending'
  )
ORDER BY c.user_id

-- name: unregistered_listens
-- Driven from the live connections, so a revoked user's backlog is never even scanned.
SELECT l.id, l.artist_name, l.track_name, l.spotify_track_id
FROM spotify_tokens AS c
CROSS JOIN LATERAL (
    SELECT id, artist_name, track_name, spotify_track_id
    FROM listens
    WHERE user_id = c.user_id AND enrichment_status = 'pending' AND match_id IS NULL
    ORDER BY id
    LIMIT :limit
) AS l
WHERE c.revoked_at IS NULL
LIMIT :limit

-- name: unregistered_upload_listens
SELECT l.id, l.artist_name, l.track_name, l.spotify_track_id
FROM listens AS l
JOIN spotify_tokens AS c ON c.user_id = l.user_id AND c.revoked_at IS NULL
WHERE l.upload_id = :upload_id AND l.enrichment_status = 'pending' AND l.match_id IS NULL
ORDER BY l.id
LIMIT :limit

-- name: insert_keys
INSERT INTO spotify_matches (key, query, spotify_track_id)
SELECT k.key, k.query, k.spotify_track_id
FROM unnest(CAST(:keys AS text[]), CAST(:queries AS text[]), CAST(:track_ids AS text[]))
    AS k (key, query, spotify_track_id)
ON CONFLICT (key) DO NOTHING

-- name: key_ids
-- Locked (shared, in id order) until the registering transaction commits: a run writing
-- an answer locks its keys in the same order first, so either it waits and then its
-- apply_answers sees these listens, or this waits and then reads the answer.
SELECT key, id, status FROM spotify_matches
WHERE key = ANY(CAST(:keys AS text[]))
ORDER BY id
FOR SHARE

-- name: lock_keys
SELECT id FROM spotify_matches WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR UPDATE

-- name: assign_keys
UPDATE listens AS l
SET match_id = a.match_id
FROM unnest(CAST(:listen_ids AS bigint[]), CAST(:match_ids AS bigint[]))
    AS a (listen_id, match_id)
WHERE l.id = a.listen_id AND l.match_id IS NULL

-- name: fail_unsearchable
UPDATE listens
SET enrichment_status = 'failed', enrichment_error = :error, enriched_at = :now
WHERE id = ANY(CAST(:ids AS bigint[])) AND enrichment_status = 'pending'

-- name: claim_keys
-- Unanswered keys, and answers whose retry time has come, that a listen of a live
-- connection (of the upload, when one is named) still waits for. ``lookups`` picks the
-- keys with a known track id (fetched by id, in batches) or the ones to search.
UPDATE spotify_matches AS m
SET claimed_until = :now + make_interval(secs => :lease_seconds)
WHERE m.id IN (
    SELECT k.id
    FROM spotify_matches AS k
    WHERE (k.status = 'pending' OR (k.status IN ('not_found', 'failed') AND k.retry_at <= :now))
      AND (k.claimed_until IS NULL OR k.claimed_until < :now)
      AND (k.query IS NULL) = :lookups
      AND EXISTS (
          SELECT 1
          FROM listens AS l
          JOIN spotify_tokens AS c ON c.user_id = l.user_id AND c.revoked_at IS NULL
          WHERE l.match_id = k.id
            AND (CAST(:upload_id AS bigint) IS NULL OR l.upload_id = :upload_id)
      )
    ORDER BY k.id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
RETURNING m.id, m.key, m.query, m.spotify_track_id, m.attempts

-- name: release_keys
UPDATE spotify_matches SET claimed_until = NULL WHERE id = ANY(CAST(:ids AS bigint[]))

-- name: record_tracks
INSERT INTO spotify_tracks (
    id, name, artist_ids, album_id, duration_ms, popularity, isrc, release_date,
    release_date_precision, fetched_at
)
SELECT t.id, t.name, t.artist_ids, t.album_id, t.duration_ms, t.popularity, t.isrc,
       t.release_date, t.release_date_precision, :now
FROM jsonb_to_recordset(CAST(:tracks AS jsonb)) AS t (
    id text, name text, artist_ids text[], album_id text, duration_ms integer,
    popularity smallint, isrc text, release_date date, release_date_precision text
)
ON CONFLICT (id) DO UPDATE
SET name = excluded.name, artist_ids = excluded.artist_ids, album_id = excluded.album_id,
    duration_ms = excluded.duration_ms, popularity = excluded.popularity,
    isrc = excluded.isrc, release_date = excluded.release_date,
    release_date_precision = excluded.release_date_precision, fetched_at = excluded.fetched_at

-- name: record_artist_names
-- Artists named by a track; their genres are fetched later, in batches.
INSERT INTO spotify_artists (id, name)
SELECT a.id, a.name FROM jsonb_to_recordset(CAST(:artists AS jsonb)) AS a (id text, name text)
ON CONFLICT (id) DO NOTHING

-- name: resolve_keys
UPDATE spotify_matches AS m
SET status = r.status, spotify_track_id = r.spotify_track_id, score = r.score,
    attempts = r.attempts, last_error = r.last_error, retry_at = r.retry_at,
    resolved_at = :now, claimed_until = NULL
FROM jsonb_to_recordset(CAST(:answers AS jsonb)) AS r (
    id bigint, status text, spotify_track_id text, score double precision, attempts smallint,
    last_error text, retry_at timestamptz
)
WHERE m.id = r.id

-- name: apply_answers
-- Copy the keys' answers onto their listens (of live connections only). A listen that
-- already says the same is left alone, so a re-run writes nothing. ``pending_only``: just
-- the listens that were waiting (after registering), not every listen of a popular key.
UPDATE listens AS l
SET enrichment_status = m.status,
    spotify_track_id = CASE WHEN m.status = 'matched' THEN t.id ELSE l.spotify_track_id END,
    spotify_artist_ids = t.artist_ids,
    spotify_album_id = t.album_id,
    duration_ms = t.duration_ms,
    popularity = t.popularity,
    isrc = t.isrc,
    release_date = t.release_date,
    enrichment_attempts = m.attempts,
    enrichment_error = m.last_error,
    enriched_at = :now
FROM spotify_matches AS m
LEFT JOIN spotify_tracks AS t ON t.id = m.spotify_track_id AND m.status = 'matched'
WHERE l.match_id = m.id
  AND m.id = ANY(CAST(:match_ids AS bigint[]))
  AND m.status <> 'pending'
  AND (l.enrichment_status = 'pending' OR NOT :pending_only)
  AND (l.enrichment_status, l.spotify_track_id, l.enrichment_attempts, l.enrichment_error,
       l.spotify_album_id, l.popularity)
      IS DISTINCT FROM
      (m.status, CASE WHEN m.status = 'matched' THEN t.id ELSE l.spotify_track_id END,
       m.attempts, m.last_error, t.album_id, t.popularity)
  AND EXISTS (
      SELECT 1 FROM spotify_tokens AS c WHERE c.user_id = l.user_id AND c.revoked_at IS NULL
  )

-- name: claim_artists
UPDATE spotify_artists
SET claimed_until = :now + make_interval(secs => :lease_seconds)
WHERE id IN (
    SELECT id FROM spotify_artists
    WHERE fetched_at IS NULL AND (claimed_until IS NULL OR claimed_until < :now)
    ORDER BY id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
RETURNING id

-- name: count_unfetched_artists
SELECT count(*) FROM spotify_artists
WHERE fetched_at IS NULL AND (claimed_until IS NULL OR claimed_until < :now)

-- name: record_artists
UPDATE spotify_artists AS a
SET name = coalesce(r.name, a.name), genres = coalesce(r.genres, '{}'),
    popularity = r.popularity, fetched_at = :now, claimed_until = NULL
FROM jsonb_to_recordset(CAST(:artists AS jsonb)) AS r (
    id text, name text, genres text[], popularity smallint
)
WHERE a.id = r.id

-- name: release_artists
UPDATE spotify_artists SET claimed_until = NULL WHERE id = ANY(CAST(:ids AS text[]))

-- name: feed_genres
-- Spotify's artist genres fill catalogue artists (matched by name, case-insensitively)
-- that have none, and their tracks without a supplied genre are classified again
-- (the ledger's NOTIFY trigger gets the rows published).
WITH fetched AS (
    SELECT DISTINCT ON (lower(name)) lower(name) AS name_key, genres
    FROM spotify_artists
    WHERE id = ANY(CAST(:ids AS text[])) AND genres <> '{}'
    ORDER BY lower(name), popularity DESC NULLS LAST, id
),
filled AS (
    UPDATE artists AS a
    SET genres = f.genres
    FROM fetched AS f
    WHERE lower(a.name) = f.name_key AND a.genres = '{}'
    RETURNING a.id
)
INSERT INTO background_tasks (task_type, track_id)
SELECT 'genre_classification', t.id
FROM tracks AS t
JOIN filled AS f ON f.id = t.artist_id
WHERE t.genre IS NULL OR t.genre_source IS NOT NULL
ON CONFLICT (task_type, track_id) WHERE status IN ('pending', 'processing') DO NOTHING

-- name: take_completed_uploads
-- Completed uploads still owed an enrich_upload message (the dispatcher's source).
UPDATE upload_jobs
SET enrichment_queued_at = now()
WHERE id IN (
    SELECT id FROM upload_jobs
    WHERE status = 'completed' AND enrichment_queued_at IS NULL
    ORDER BY id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
RETURNING id

-- name: progress_by_status
SELECT enrichment_status AS status, count(*) AS listens
FROM listens
GROUP BY enrichment_status

-- name: user_progress_by_status
SELECT enrichment_status AS status, count(*) AS listens
FROM listens
WHERE user_id = :user_id
GROUP BY enrichment_status

-- name: largest_backlogs
SELECT l.user_id, count(*) AS pending, c.revoked_at IS NULL AND c.user_id IS NOT NULL AS live
FROM listens AS l
LEFT JOIN spotify_tokens AS c ON c.user_id = l.user_id
WHERE l.enrichment_status = 'pending'
GROUP BY l.user_id, c.user_id, c.revoked_at
ORDER BY pending DESC, l.user_id
LIMIT :limit

-- name: connections
SELECT count(*) FILTER (WHERE revoked_at IS NULL) AS live,
       count(*) FILTER (WHERE revoked_at IS NOT NULL) AS revoked
FROM spotify_tokens

-- name: stall
-- The backlog that could be worked on, and when work last moved: the newest enriched
-- listen, or (nothing ever enriched) the earliest connection still waiting.
SELECT
    (SELECT count(*) FROM listens AS l
     JOIN spotify_tokens AS c ON c.user_id = l.user_id AND c.revoked_at IS NULL
     WHERE l.enrichment_status = 'pending') AS backlog,
    coalesce(
        (SELECT max(enriched_at) FROM listens),
        (SELECT min(c.authorized_at) FROM spotify_tokens AS c
         WHERE c.revoked_at IS NULL
           AND EXISTS (SELECT 1 FROM listens AS l
                       WHERE l.user_id = c.user_id AND l.enrichment_status = 'pending'))
    ) AS last_progress
