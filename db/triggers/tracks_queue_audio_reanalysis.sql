-- Queues a track's audio analyses again when its audio file is added or replaced.
-- Transition tables cannot be combined with a column list, so this one is per row; audio
-- changes are rare. The ON CONFLICT predicate repeats uq_background_tasks_active's, as in
-- tracks_queue_analysis.sql.
CREATE FUNCTION queue_audio_reanalysis() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO background_tasks (task_type, track_id)
        VALUES ('mood_detection', NEW.id), ('energy_analysis', NEW.id)
        ON CONFLICT (task_type, track_id) WHERE status IN ('pending', 'processing') DO NOTHING;
        RETURN NULL;
    END $$;

CREATE TRIGGER tracks_queue_audio_reanalysis AFTER UPDATE OF audio_path ON tracks
    FOR EACH ROW
    WHEN (NEW.audio_path IS NOT NULL AND NEW.audio_path IS DISTINCT FROM OLD.audio_path)
    EXECUTE FUNCTION queue_audio_reanalysis();
