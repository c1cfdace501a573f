-- The console's reads that join across families; each named block is one query.

-- name: trending
SELECT t.rank, t.track_id, t.trend_score, t.play_count_24h, t.play_count_7d,
       t.unique_listeners_24h, t.unique_listeners_7d, t.calculated_at,
       tr.title, tr.genre, a.id AS artist_id, a.name AS artist_name,
       al.id AS album_id, al.title AS album_title
FROM trending_tracks t
JOIN tracks tr ON tr.id = t.track_id
JOIN artists a ON a.id = tr.artist_id
LEFT JOIN albums al ON al.id = tr.album_id
ORDER BY t.rank
LIMIT :limit

-- name: user_playlists
-- The user's unexpired playlists, each track in play order (a LEFT JOIN keeps an empty
-- playlist, which the caller shows with no tracks).
SELECT p.id AS playlist_id, p.playlist_type, p.generated_at, p.expires_at, p.cold_start,
       item.position, tr.id AS track_id, tr.title, a.name AS artist_name
FROM smart_playlists p
LEFT JOIN LATERAL unnest(p.track_ids) WITH ORDINALITY AS item(track_id, position) ON true
LEFT JOIN tracks tr ON tr.id = item.track_id
LEFT JOIN artists a ON a.id = tr.artist_id
WHERE p.user_id = :user_id
  AND p.expires_at > :now
  AND (CAST(:type AS text) IS NULL OR p.playlist_type = :type)
ORDER BY p.playlist_type, p.id, item.position

-- name: user_exists
SELECT EXISTS (SELECT 1 FROM users WHERE id = :user_id)
