-- Trending tracks (tasks/trending/). One statement computes every figure over the
-- 7-day window (played_at index: the cost follows the window, not the history).

-- name: try_lock
SELECT pg_try_advisory_xact_lock(hashtext('trending.calculate'))

-- name: work_mem
-- Enough for the window's hash aggregations to stay in memory (this transaction only).
SET LOCAL work_mem = '64MB'

-- name: clear
DELETE FROM trending_tracks

-- name: calculate
-- trend_score = sum over listeners u of  decayed(u) * min(plays(u), cap) / plays(u)
-- where decayed(u) = sum over u's plays of the track of 0.5 ^ (age / half_life).
-- Recent plays weigh more (momentum); a listener counts for at most `cap` plays in the
-- window, however often they replay (breadth: more listeners beat more repeats).
-- Windows are half-open: (now - 24 h, now] and (now - 7 d, now].
INSERT INTO trending_tracks (
    track_id, trend_score, play_count_24h, play_count_7d, unique_listeners_24h,
    unique_listeners_7d, calculated_at, rank
)
-- Two hash aggregations and no DISTINCT: after grouping by (track, listener) each row is
-- one distinct listener, so listeners are counted with count(*).
WITH listeners AS (
    SELECT track_id, user_id,
           count(*)::int AS plays,
           (count(*) FILTER (WHERE played_at > :day_start))::int AS plays_24h,
           sum(exp(date_part('epoch', :now - played_at) * :decay_per_second)) AS decayed
    FROM play_history
    WHERE played_at > :week_start AND played_at <= :now
    GROUP BY track_id, user_id
), per_track AS (
    SELECT track_id,
           sum(decayed * least(plays, :cap) / plays) AS trend_score,
           sum(plays_24h) AS play_count_24h,
           sum(plays) AS play_count_7d,
           count(*) FILTER (WHERE plays_24h > 0) AS unique_listeners_24h,
           count(*) AS unique_listeners_7d
    FROM listeners GROUP BY track_id
), ranked AS (
    SELECT p.*, row_number() OVER (ORDER BY trend_score DESC, play_count_7d DESC,
                                   p.track_id) AS rank
    FROM per_track p JOIN tracks t ON t.id = p.track_id
)
SELECT track_id, trend_score, play_count_24h, play_count_7d, unique_listeners_24h,
       unique_listeners_7d, :now, rank
FROM ranked WHERE rank <= :top_n
