-- Queues a new track's analyses in background_tasks. Any service may insert tracks, by
-- plain SQL too: the database itself queues their analysis, in the inserting transaction,
-- so nothing depends on the inserter knowing us. A track without an audio file gets no
-- audio analyses (there is nothing to read); a track without a genre gets a genre
-- classification. Duplicates of active rows collapse: the ON CONFLICT predicate is that of
-- the unique index uq_background_tasks_active, which it must repeat to be inferred.
CREATE FUNCTION queue_track_analysis() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO background_tasks (task_type, track_id)
        SELECT wanted.task_type, t.id
        FROM new_tracks t
        CROSS JOIN LATERAL (VALUES
            ('mood_detection', t.audio_path IS NOT NULL),
            ('energy_analysis', t.audio_path IS NOT NULL),
            ('genre_classification', t.genre IS NULL)
        ) AS wanted (task_type, needed)
        WHERE wanted.needed
        ON CONFLICT (task_type, track_id) WHERE status IN ('pending', 'processing') DO NOTHING;
        RETURN NULL;
    END $$;

CREATE TRIGGER tracks_queue_analysis AFTER INSERT ON tracks
    REFERENCING NEW TABLE AS new_tracks
    FOR EACH STATEMENT EXECUTE FUNCTION queue_track_analysis();
