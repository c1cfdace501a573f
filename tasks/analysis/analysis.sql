-- Per-track analysis (tasks/analysis/).

-- name: genre_evidence
-- The genres the track's artist is listed with, and the supplied genres of the artist's
-- other tracks (inferred ones are left out, so a guess never feeds the next guess).
WITH track AS (SELECT id, artist_id FROM tracks WHERE id = :track_id),
listed AS (
    SELECT DISTINCT g.genre
    FROM track JOIN artists a ON a.id = track.artist_id, unnest(a.genres) AS g (genre)
),
catalogue AS (
    SELECT t.genre, count(*) AS tracks
    FROM track JOIN tracks t ON t.artist_id = track.artist_id AND t.id <> track.id
    WHERE t.genre IS NOT NULL AND t.genre_source IS NULL
    GROUP BY t.genre
)
SELECT coalesce(l.genre, c.genre) AS genre,
       l.genre IS NOT NULL AS listed,
       coalesce(c.tracks, 0) AS catalogue_tracks
FROM listed l FULL JOIN catalogue c ON c.genre = l.genre

-- name: genre_audio_profiles
-- Average audio features of the tracks whose genre was supplied, per genre.
SELECT genre,
       avg(energy_level) AS energy,
       avg(tempo) AS tempo,
       avg(CAST(audio_features ->> 'brightness_hz' AS double precision)) AS brightness,
       count(*) AS tracks
FROM tracks
WHERE genre IS NOT NULL AND genre_source IS NULL AND energy_level IS NOT NULL
  AND tempo IS NOT NULL AND audio_features ? 'brightness_hz'
  AND (CAST(:genres AS text[]) IS NULL OR genre = ANY(CAST(:genres AS text[])))
GROUP BY genre
HAVING count(*) >= :min_tracks
