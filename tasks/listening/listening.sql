-- Incremental aggregation of play_history into user_listening_stats (tasks/listening/).
-- One transaction, REPEATABLE READ: every statement sees the same snapshot, and the plays
-- folded in are exactly those with since <= ingest_xid < until, where until is the
-- snapshot's xmin (every transaction below it has finished).

-- name: try_lock
SELECT pg_try_advisory_xact_lock(hashtext('listening.aggregate'))

-- name: lock
SELECT pg_advisory_xact_lock(hashtext('listening.aggregate'))

-- name: snapshot_xmin
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint

-- name: read_watermark
SELECT last_xid FROM aggregation_watermarks WHERE name = 'listening.aggregate'

-- name: write_watermark
INSERT INTO aggregation_watermarks (name, last_xid, updated_at)
VALUES ('listening.aggregate', :until, :now)
ON CONFLICT (name) DO UPDATE SET last_xid = excluded.last_xid, updated_at = excluded.updated_at

-- name: create_rebuild_users
CREATE TEMP TABLE rebuild_users (user_id bigint PRIMARY KEY) ON COMMIT DROP

-- name: claim_dirty_users
WITH claimed AS (DELETE FROM listening_stats_dirty RETURNING user_id)
INSERT INTO rebuild_users SELECT user_id FROM claimed ON CONFLICT DO NOTHING

-- name: add_rebuild_user
INSERT INTO rebuild_users VALUES (:user_id) ON CONFLICT DO NOTHING

-- name: forget_rebuilt_track_plays
DELETE FROM user_track_plays WHERE user_id IN (SELECT user_id FROM rebuild_users)

-- name: forget_rebuilt_artist_plays
DELETE FROM user_artist_plays WHERE user_id IN (SELECT user_id FROM rebuild_users)

-- name: forget_rebuilt_totals
UPDATE user_listening_stats
SET total_plays = 0, total_ms_played = 0, unique_tracks = 0, unique_artists = 0,
    first_played_at = NULL, last_played_at = NULL, hourly_plays = array_fill(0, ARRAY[24])
WHERE user_id IN (SELECT user_id FROM rebuild_users)

-- name: create_fold_groups
CREATE TEMP TABLE fold_groups (
    user_id bigint, track_id bigint, hour int, plays int, ms bigint,
    first_at timestamptz, last_at timestamptz
) ON COMMIT DROP

-- name: stage_fold_groups
-- What this run folds in: plays committed since the watermark, plus every earlier play of
-- the users being rebuilt (their rollups were just forgotten). Grouped once, here.
INSERT INTO fold_groups
SELECT user_id, track_id, date_part('hour', played_at AT TIME ZONE 'UTC')::int,
       count(*), sum(coalesce(ms_played, 0)), min(played_at), max(played_at)
FROM (
    SELECT user_id, track_id, played_at, ms_played FROM play_history
    WHERE ingest_xid >= :since AND ingest_xid < :until
    UNION ALL
    SELECT p.user_id, p.track_id, p.played_at, p.ms_played
    FROM rebuild_users r JOIN play_history p ON p.user_id = r.user_id
    WHERE p.ingest_xid < :since
) AS new_plays
GROUP BY 1, 2, 3

-- name: create_fold_pairs
CREATE TEMP TABLE fold_pairs (
    user_id bigint, track_id bigint, artist_id bigint, plays int, ms bigint,
    first_at timestamptz, last_at timestamptz, PRIMARY KEY (user_id, track_id)
) ON COMMIT DROP

-- name: stage_fold_pairs
INSERT INTO fold_pairs
SELECT g.user_id, g.track_id, t.artist_id, sum(g.plays), sum(g.ms), min(g.first_at),
       max(g.last_at)
FROM fold_groups g JOIN tracks t ON t.id = g.track_id
GROUP BY g.user_id, g.track_id, t.artist_id

-- name: rollup_rows
SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'user_track_plays'::regclass

-- name: staged_pairs
SELECT count(*) FROM fold_pairs

-- name: analyze_rollups
-- After a fold that rewrote much of the rollups (the first run, a backfill), statistics
-- from before it would mislead every query that reads them (playlists read them by user).
ANALYZE user_track_plays, user_artist_plays, user_listening_stats

-- name: analyze_fold_tables
ANALYZE fold_groups, fold_pairs

-- name: fold
-- One statement: the rollups take in this run's pairs, and the all-time figures grow by
-- what the run adds. A pair (user, track) or (user, artist) is new exactly when its rollup
-- count after the upsert equals this run's count for it, so distinct counts grow without
-- looking anything up in the rollups, whose size follows the history. The upserts probe
-- the rollups' unique indexes one pair at a time, whatever the history's size.
WITH track_upsert AS (
    INSERT INTO user_track_plays AS u
        (user_id, track_id, play_count, ms_played, first_played_at, last_played_at)
    SELECT user_id, track_id, plays, ms, first_at, last_at FROM fold_pairs
    ON CONFLICT (user_id, track_id) DO UPDATE SET
        play_count = u.play_count + excluded.play_count,
        ms_played = u.ms_played + excluded.ms_played,
        first_played_at = least(u.first_played_at, excluded.first_played_at),
        last_played_at = greatest(u.last_played_at, excluded.last_played_at)
    RETURNING user_id, track_id, play_count
), new_tracks AS (
    SELECT f.user_id, count(*) AS n
    FROM track_upsert u JOIN fold_pairs f USING (user_id, track_id)
    WHERE u.play_count = f.plays
    GROUP BY f.user_id
), artist_delta AS (
    SELECT user_id, artist_id, sum(plays) AS plays, max(last_at) AS last_at
    FROM fold_pairs GROUP BY 1, 2
), artist_upsert AS (
    INSERT INTO user_artist_plays AS u (user_id, artist_id, play_count, last_played_at)
    SELECT user_id, artist_id, plays, last_at FROM artist_delta
    ON CONFLICT (user_id, artist_id) DO UPDATE SET
        play_count = u.play_count + excluded.play_count,
        last_played_at = greatest(u.last_played_at, excluded.last_played_at)
    RETURNING user_id, artist_id, play_count
), new_artists AS (
    SELECT d.user_id, count(*) AS n
    FROM artist_upsert u JOIN artist_delta d USING (user_id, artist_id)
    WHERE u.play_count = d.plays
    GROUP BY d.user_id
), per_user AS (
    SELECT user_id, sum(plays) AS plays, sum(ms) AS ms, min(first_at) AS first_at,
           max(last_at) AS last_at
    FROM fold_pairs GROUP BY user_id
), hours AS (
    SELECT u.user_id, array_agg(coalesce(h.plays, 0) ORDER BY hr.hour) AS by_hour
    FROM per_user u
    CROSS JOIN generate_series(0, 23) AS hr(hour)
    LEFT JOIN (SELECT user_id, hour, sum(plays) AS plays FROM fold_groups GROUP BY 1, 2) h
           ON h.user_id = u.user_id AND h.hour = hr.hour
    GROUP BY u.user_id
)
INSERT INTO user_listening_stats AS s (
    user_id, total_plays, total_ms_played, unique_tracks, unique_artists, first_played_at,
    last_played_at, hourly_plays, updated_at
)
SELECT p.user_id, p.plays, p.ms, coalesce(t.n, 0), coalesce(a.n, 0), p.first_at, p.last_at,
       h.by_hour, :now
FROM per_user p
JOIN hours h USING (user_id)
LEFT JOIN new_tracks t USING (user_id)
LEFT JOIN new_artists a USING (user_id)
ON CONFLICT (user_id) DO UPDATE SET
    total_plays = s.total_plays + excluded.total_plays,
    total_ms_played = s.total_ms_played + excluded.total_ms_played,
    unique_tracks = s.unique_tracks + excluded.unique_tracks,
    unique_artists = s.unique_artists + excluded.unique_artists,
    first_played_at = least(s.first_played_at, excluded.first_played_at),
    last_played_at = greatest(s.last_played_at, excluded.last_played_at),
    hourly_plays = ARRAY(SELECT a + b FROM unnest(s.hourly_plays, excluded.hourly_plays)
                         AS both_(a, b)),
    updated_at = excluded.updated_at

-- name: user_id_range
SELECT min(user_id), max(user_id) FROM user_listening_stats

-- name: create_window_plays
CREATE TEMP TABLE window_plays (
    user_id bigint, track_id bigint, artist_id bigint, genre text, played_at timestamptz
) ON COMMIT DROP

-- name: stage_window_plays
-- The last 30 days of plays, read once. They sit together at the end of the played_at
-- index and of the heap, so this costs the window's size whatever the history's.
INSERT INTO window_plays
SELECT p.user_id, p.track_id, t.artist_id, t.genre, p.played_at
FROM play_history p JOIN tracks t ON t.id = p.track_id
WHERE p.played_at > :month_start AND p.played_at <= :now AND p.ingest_xid < :until

-- name: stage_user_window_plays
INSERT INTO window_plays
SELECT p.user_id, p.track_id, t.artist_id, t.genre, p.played_at
FROM play_history p JOIN tracks t ON t.id = p.track_id
WHERE p.user_id = :user_id AND p.played_at > :month_start AND p.played_at <= :now
  AND p.ingest_xid < :until

-- name: index_window_plays
CREATE INDEX ON window_plays (user_id)

-- name: analyze_window_plays
ANALYZE window_plays

-- name: refresh_windows
-- The last-7/30-day figures of users lo <= user_id < hi who have played in the window, or
-- whose figures were non-zero and may have gone stale as time passed.
WITH targets AS (
    SELECT user_id FROM user_listening_stats
    WHERE user_id >= :lo AND user_id < :hi
      AND (plays_last_30d > 0 OR last_played_at > :month_start)
), win AS (
    SELECT w.* FROM targets u JOIN window_plays w ON w.user_id = u.user_id
), counts AS (
    SELECT user_id, count(*) FILTER (WHERE played_at > :week_start) AS plays_7d,
           count(*) AS plays_30d
    FROM win GROUP BY user_id
), tracks_ranked AS (
    SELECT user_id, track_id, count(*) AS plays,
           row_number() OVER (PARTITION BY user_id ORDER BY count(*) DESC, track_id) AS rn
    FROM win GROUP BY user_id, track_id
), top_tracks AS (
    SELECT r.user_id,
           jsonb_agg(jsonb_build_object('track_id', r.track_id, 'title', t.title,
                                        'plays', r.plays) ORDER BY r.rn) AS items
    FROM tracks_ranked r JOIN tracks t ON t.id = r.track_id
    WHERE r.rn <= :top GROUP BY r.user_id
), artists_ranked AS (
    SELECT user_id, artist_id, count(*) AS plays,
           row_number() OVER (PARTITION BY user_id ORDER BY count(*) DESC, artist_id) AS rn
    FROM win GROUP BY user_id, artist_id
), top_artists AS (
    SELECT r.user_id,
           jsonb_agg(jsonb_build_object('artist_id', r.artist_id, 'name', a.name,
                                        'plays', r.plays) ORDER BY r.rn) AS items
    FROM artists_ranked r JOIN artists a ON a.id = r.artist_id
    WHERE r.rn <= :top GROUP BY r.user_id
), genres_ranked AS (
    SELECT user_id, genre, count(*) AS plays,
           row_number() OVER (PARTITION BY user_id ORDER BY count(*) DESC, genre) AS rn
    FROM win WHERE genre IS NOT NULL GROUP BY user_id, genre
), top_genres AS (
    SELECT user_id,
           jsonb_agg(jsonb_build_object('genre', genre, 'plays', plays) ORDER BY rn) AS items
    FROM genres_ranked WHERE rn <= :top GROUP BY user_id
)
UPDATE user_listening_stats s
SET plays_last_7d = coalesce(c.plays_7d, 0),
    plays_last_30d = coalesce(c.plays_30d, 0),
    top_tracks = coalesce(tt.items, '[]'),
    top_artists = coalesce(ta.items, '[]'),
    top_genres = coalesce(tg.items, '[]'),
    window_end = :now,
    updated_at = :now
FROM targets t
LEFT JOIN counts c USING (user_id)
LEFT JOIN top_tracks tt USING (user_id)
LEFT JOIN top_artists ta USING (user_id)
LEFT JOIN top_genres tg USING (user_id)
WHERE s.user_id = t.user_id
