-- The new-track analyses of tracks_queue_analysis.sql, except for a track inserted already
-- analysed (audio_features set): the media ingest pipeline (tasks/ingest/) analyses the
-- upload, infers the genre from its tags and the artist's evidence, and inserts the track
-- with the results in one transaction, so the ledger has nothing left to do for it (and
-- its workers would look for the file under AUDIO_ROOT rather than in the ingest bucket).
CREATE OR REPLACE FUNCTION queue_track_analysis() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO background_tasks (task_type, track_id)
        SELECT wanted.task_type, t.id
        FROM new_tracks t
        CROSS JOIN LATERAL (VALUES
            ('mood_detection', t.audio_path IS NOT NULL),
            ('energy_analysis', t.audio_path IS NOT NULL),
            ('genre_classification', t.genre IS NULL)
        ) AS wanted (task_type, needed)
        WHERE wanted.needed AND t.audio_features IS NULL
        ON CONFLICT (task_type, track_id) WHERE status IN ('pending', 'processing') DO NOTHING;
        RETURN NULL;
    END $$;
