-- Smart playlists (tasks/playlists/). Each chunk of users is worked in temp tables of its
-- own users only; every candidate query returns at most a few dozen ranked tracks a user,
-- as one row a user and part: (user_id, part, track ids, their artist ids), best first.
-- playlist_random(user, track, seed) is the reproducible randomness (db/triggers/playlist_random.sql).

-- name: create_chunk_users
CREATE TEMP TABLE chunk_users (user_id bigint PRIMARY KEY) ON COMMIT DROP

-- name: stage_active_users
-- Active: joined or played within the activity window.
INSERT INTO chunk_users
SELECT u.id FROM users u LEFT JOIN user_listening_stats s ON s.user_id = u.id
WHERE u.id >= :lo AND u.id < :hi
  AND (u.created_at > :active_since OR s.last_played_at > :active_since)

-- name: stage_one_user
INSERT INTO chunk_users SELECT id FROM users WHERE id = :user_id

-- name: active_user_id_range
SELECT min(u.id), max(u.id) FROM users u LEFT JOIN user_listening_stats s ON s.user_id = u.id
WHERE u.created_at > :active_since OR s.last_played_at > :active_since

-- name: create_chunk_history
CREATE TEMP TABLE chunk_history (
    user_id bigint, track_id bigint, artist_id bigint, genre text, plays int,
    last_at timestamptz, PRIMARY KEY (user_id, track_id)
) ON COMMIT DROP

-- name: stage_chunk_history
-- All-time plays of the chunk's users by track: the rollup (folded up to the aggregation
-- watermark) plus the plays committed since, so "never played" is exact even before
-- tonight's aggregation has run. The chunk's id range (:lo, :hi) bounds the index scans:
-- joined to the temp table alone, the planner reads the whole rollup (2.3M rows for 20k).
INSERT INTO chunk_history
SELECT h.user_id, h.track_id, t.artist_id, t.genre, sum(h.plays), max(h.last_at) FROM (
    SELECT r.user_id, r.track_id, r.play_count AS plays, r.last_played_at AS last_at
    FROM chunk_users c JOIN user_track_plays r ON r.user_id = c.user_id
    WHERE r.user_id >= :lo AND r.user_id < :hi
    UNION ALL
    SELECT p.user_id, p.track_id, count(*), max(p.played_at)
    FROM play_history p JOIN chunk_users c ON c.user_id = p.user_id
    WHERE p.ingest_xid >= :watermark AND p.user_id >= :lo AND p.user_id < :hi
    GROUP BY 1, 2
) AS h
JOIN tracks t ON t.id = h.track_id
GROUP BY h.user_id, h.track_id, t.artist_id, t.genre

-- name: create_chunk_recent
CREATE TEMP TABLE chunk_recent (
    user_id bigint, track_id bigint, plays int, PRIMARY KEY (user_id, track_id)
) ON COMMIT DROP

-- name: stage_chunk_recent
-- The id range lets the (user_id, played_at) index serve the chunk's users only, rather
-- than every user's plays of the month.
INSERT INTO chunk_recent
SELECT p.user_id, p.track_id, count(*)
FROM chunk_users c JOIN play_history p ON p.user_id = c.user_id
WHERE p.user_id >= :lo AND p.user_id < :hi
  AND p.played_at > :month_start AND p.played_at <= :now
GROUP BY 1, 2

-- name: create_chunk_taste
CREATE TEMP TABLE chunk_taste (
    user_id bigint, artist_id bigint, genre text, rank int
) ON COMMIT DROP

-- name: stage_chunk_taste
-- Favourite artists and genres, by all-time plays (ties: lower id, then name).
INSERT INTO chunk_taste
SELECT user_id, artist_id, NULL, rank FROM (
    SELECT user_id, artist_id,
           row_number() OVER (PARTITION BY user_id ORDER BY sum(plays) DESC, artist_id)
               AS rank
    FROM chunk_history GROUP BY user_id, artist_id
) AS artists WHERE rank <= :top_artists
UNION ALL
SELECT user_id, NULL, genre, rank FROM (
    SELECT user_id, genre,
           row_number() OVER (PARTITION BY user_id ORDER BY sum(plays) DESC, genre) AS rank
    FROM chunk_history WHERE genre IS NOT NULL GROUP BY user_id, genre
) AS genres WHERE rank <= :top_genres

-- name: daily_mix
-- Part "recent": the user's tracks of the last 30 days, most played first. Part
-- "similar": tracks by favourite artists, or among the most popular of favourite genres,
-- that the user has not played in the last 30 days; popularity plus randomness.
WITH recent AS (
    SELECT user_id, track_id, 'recent' AS part,
           row_number() OVER (PARTITION BY user_id
                              ORDER BY plays DESC, playlist_random(user_id, track_id, :seed))
               AS pos
    FROM chunk_recent
), genre_pool AS (
    SELECT g.genre, t.id, t.artist_id, t.popularity
    FROM (SELECT DISTINCT genre FROM chunk_taste WHERE genre IS NOT NULL) g
    CROSS JOIN LATERAL (
        SELECT id, artist_id, popularity FROM tracks WHERE genre = g.genre
        ORDER BY popularity DESC NULLS LAST LIMIT :pool
    ) t
), alike AS (
    -- Candidates carry what ranking and arranging need: no second trip to tracks.
    SELECT c.user_id, t.id AS track_id, t.artist_id, t.popularity
    -- Each track once a user without a UNION's dedup of every candidate: a track has one
    -- artist and one genre, so only a favourite artist's track in a pool could repeat.
    FROM chunk_taste c JOIN tracks t ON t.artist_id = c.artist_id
    UNION ALL
    SELECT c.user_id, p.id, p.artist_id, p.popularity
    FROM chunk_taste c JOIN genre_pool p ON p.genre = c.genre
    WHERE NOT EXISTS (SELECT 1 FROM chunk_taste a
                      WHERE a.user_id = c.user_id AND a.artist_id = p.artist_id)
), similar_ranked AS (
    -- float8 arithmetic (the same values as numeric's, which is slower per candidate).
    SELECT s.user_id, s.track_id, s.artist_id, 'similar' AS part,
           row_number() OVER (
               PARTITION BY s.user_id
               ORDER BY coalesce(s.popularity, 0)::float8 / 100
                        + playlist_random(s.user_id, s.track_id, :seed) DESC, s.track_id
           ) AS pos
    FROM alike s
    WHERE NOT EXISTS (SELECT 1 FROM chunk_recent r
                      WHERE r.user_id = s.user_id AND r.track_id = s.track_id)
)
SELECT user_id, part, array_agg(track_id ORDER BY pos), array_agg(artist_id ORDER BY pos)
FROM (
    SELECT r.user_id, r.track_id, t.artist_id, r.part, r.pos
    FROM recent r JOIN tracks t ON t.id = r.track_id
    WHERE r.pos <= :per_part
    UNION ALL
    SELECT user_id, track_id, artist_id, part, pos FROM similar_ranked WHERE pos <= :per_part
) AS candidates
GROUP BY user_id, part

-- name: cold_start
-- Users with no history at all: trending and popular tracks, shuffled per user. The
-- shuffle weighs a quarter of the standing, so it varies the pick, not its quality.
WITH cold AS (
    SELECT c.user_id FROM chunk_users c
    WHERE NOT EXISTS (SELECT 1 FROM chunk_history h WHERE h.user_id = c.user_id)
), pool AS (
    SELECT track_id, 1.0 - rank::float8 / (:cold_pool + 1) AS base
    FROM trending_tracks WHERE rank <= :cold_pool
    UNION ALL
    SELECT id, coalesce(popularity, 0) / 100.0
    -- Ties broken by id: many tracks share a popularity at the cut, and a parallel scan
    -- returns them in any order, so a re-run could draw another mix.
    FROM (SELECT id, popularity FROM tracks
          ORDER BY popularity DESC NULLS LAST, id LIMIT :cold_pool) p
), best AS (
    SELECT track_id, max(base) AS base FROM pool GROUP BY track_id
), ranked AS (
    SELECT c.user_id, b.track_id,
           row_number() OVER (
               PARTITION BY c.user_id
               ORDER BY b.base + 0.25 * playlist_random(c.user_id, b.track_id, :seed) DESC,
                        b.track_id
           ) AS pos
    FROM cold c CROSS JOIN best b
)
SELECT r.user_id, 'cold_start', array_agg(r.track_id ORDER BY r.pos),
       array_agg(t.artist_id ORDER BY r.pos)
FROM ranked r JOIN tracks t ON t.id = r.track_id
WHERE r.pos <= :per_part
GROUP BY r.user_id

-- name: discovery_weekly
-- Never played, in the user's top genres, released within the window; popularity plus
-- randomness. The pool carries the artist: no second trip to tracks per candidate.
WITH pool AS (
    SELECT g.genre, t.id, t.artist_id, t.popularity
    FROM (SELECT DISTINCT genre FROM chunk_taste WHERE genre IS NOT NULL) g
    CROSS JOIN LATERAL (
        -- The genre's releases of the window (index on genre, release_date), best first.
        SELECT id, artist_id, popularity FROM tracks
        WHERE genre = g.genre AND release_date > :released_after AND release_date <= :today
        ORDER BY popularity DESC NULLS LAST LIMIT :pool
    ) t
), ranked AS (
    SELECT c.user_id, p.id AS track_id, p.artist_id,
           row_number() OVER (
               PARTITION BY c.user_id
               ORDER BY coalesce(p.popularity, 0)::float8 / 100
                        + playlist_random(c.user_id, p.id, :seed) DESC, p.id
           ) AS pos
    FROM chunk_taste c JOIN pool p ON p.genre = c.genre
    WHERE NOT EXISTS (SELECT 1 FROM chunk_history h
                      WHERE h.user_id = c.user_id AND h.track_id = p.id)
)
SELECT user_id, 'discovery', array_agg(track_id ORDER BY pos), array_agg(artist_id ORDER BY pos)
FROM ranked WHERE pos <= :per_part
GROUP BY user_id

-- name: new_for_you
-- Released within the window by one of the user's favourite artists; newest first.
WITH ranked AS (
    SELECT c.user_id, t.id AS track_id, t.artist_id,
           row_number() OVER (
               PARTITION BY c.user_id
               ORDER BY t.release_date DESC, coalesce(t.popularity, 0) DESC,
                        playlist_random(c.user_id, t.id, :seed)
           ) AS pos
    FROM chunk_taste c
    JOIN tracks t ON t.artist_id = c.artist_id
                 AND t.release_date > :released_after AND t.release_date <= :today
)
SELECT user_id, 'new', array_agg(track_id ORDER BY pos), array_agg(artist_id ORDER BY pos)
FROM ranked WHERE pos <= :per_part
GROUP BY user_id

-- name: forgotten_favorites
-- Played at least :min_plays times, and not once since :forgotten_before.
WITH ranked AS (
    SELECT h.user_id, h.track_id, h.artist_id,
           row_number() OVER (
               PARTITION BY h.user_id
               ORDER BY h.plays DESC, playlist_random(h.user_id, h.track_id, :seed)
           ) AS pos
    FROM chunk_history h
    WHERE h.plays >= :min_plays AND h.last_at < :forgotten_before
)
SELECT user_id, 'forgotten', array_agg(track_id ORDER BY pos), array_agg(artist_id ORDER BY pos)
FROM ranked WHERE pos <= :per_part
GROUP BY user_id

-- name: replace_playlists
-- The chunk's playlists of one type, replaced in the run's transaction: readers see the
-- old ones until it commits. A user whose rules yield nothing keeps no playlist.
WITH written AS (
    SELECT (e ->> 'user_id')::bigint AS user_id,
           ARRAY(SELECT x::bigint
                 FROM jsonb_array_elements_text(e -> 'track_ids') WITH ORDINALITY AS a(x, n)
                 ORDER BY n) AS track_ids,
           (e ->> 'cold_start')::boolean AS cold_start
    FROM jsonb_array_elements(CAST(:payload AS jsonb)) AS e
), dropped AS (
    DELETE FROM smart_playlists s
    USING chunk_users c
    WHERE s.user_id = c.user_id AND s.playlist_type = :playlist_type
      AND s.user_id NOT IN (SELECT user_id FROM written)
)
INSERT INTO smart_playlists AS s
    (user_id, playlist_type, track_ids, generated_at, expires_at, cold_start, period_start)
SELECT user_id, :playlist_type, track_ids, :now, :expires_at, cold_start, :period_start
FROM written
ON CONFLICT (user_id, playlist_type) DO UPDATE SET
    track_ids = excluded.track_ids,
    generated_at = excluded.generated_at,
    expires_at = excluded.expires_at,
    cold_start = excluded.cold_start,
    period_start = excluded.period_start

-- name: delete_expired
-- A batch at a time, so no statement holds many row locks for long.
DELETE FROM smart_playlists
WHERE id IN (SELECT id FROM smart_playlists WHERE expires_at <= :now LIMIT :batch)

-- name: aggregation_pending
-- Whether the day's aggregation has yet to finish: plays wait to be folded in and no
-- listening.aggregate has finished since the day began (its watermark row is written by
-- the run's own transaction, stamped with the run's start).
WITH mark AS (
    SELECT last_xid, updated_at FROM aggregation_watermarks WHERE name = 'listening.aggregate'
)
SELECT NOT EXISTS (SELECT 1 FROM mark WHERE updated_at >= :day_start)
   AND EXISTS (
       SELECT 1 FROM play_history
       WHERE ingest_xid >= coalesce((SELECT last_xid FROM mark), 0)
   )
