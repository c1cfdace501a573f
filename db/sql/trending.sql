-- Trending tracks (tasks/trending.py). One statement computes every figure over the
-- 7-day window (played_at index: the cost follows the window, not the history).

-- name: try_lock
SELECT pg_try_advisory_xact_lock(hashtext('trending.calculate'))

-- name: clear
DELETE FROM trending_tracks

-- name: calculate
-- trend_score = sum over listeners u and days d of
--                 decayed(u, d) * min(plays(u, d), cap) / plays(u, d)
-- where decayed(u, d) = sum of 0.5 ^ (age / half_life) over u's plays of the track on
-- day d (d = whole days before now). Recent plays weigh more (momentum); each listener
-- counts for at most `cap` plays a day (one user's replays cannot buy a place); the sum
-- over listeners rewards breadth. Windows are half-open: (now - 24 h, now], (now - 7 d, now].
INSERT INTO trending_tracks (
    track_id, trend_score, play_count_24h, play_count_7d, unique_listeners_24h,
    unique_listeners_7d, calculated_at, rank
)
WITH listener_days AS (
    SELECT track_id, user_id,
           floor(extract(epoch FROM :now - played_at) / 86400)::int AS days_ago,
           count(*) AS plays,
           sum(power(0.5, extract(epoch FROM :now - played_at)::float8 / :half_life)) AS decayed
    FROM play_history
    WHERE played_at > :week_start AND played_at <= :now
    GROUP BY 1, 2, 3
), per_track AS (
    SELECT track_id,
           sum(decayed * least(plays, :cap) / plays) AS trend_score,
           coalesce(sum(plays) FILTER (WHERE days_ago = 0), 0) AS play_count_24h,
           sum(plays) AS play_count_7d,
           count(DISTINCT user_id) FILTER (WHERE days_ago = 0) AS unique_listeners_24h,
           count(DISTINCT user_id) AS unique_listeners_7d
    FROM listener_days GROUP BY track_id
), ranked AS (
    SELECT p.*, row_number() OVER (ORDER BY trend_score DESC, play_count_7d DESC,
                                   p.track_id) AS rank
    FROM per_track p JOIN tracks t ON t.id = p.track_id
)
SELECT track_id, trend_score, play_count_24h, play_count_7d, unique_listeners_24h,
       unique_listeners_7d, :now, rank
FROM ranked WHERE rank <= :top_n
