-- Deleted or edited plays (including a track's plays, deleted by cascade) mark their users
-- in listening_stats_dirty, so the next aggregation rebuilds those users from scratch.
-- Statement-level with transition tables: one insert per statement, however many rows it
-- touched.
CREATE FUNCTION mark_listening_stats_dirty() RETURNS trigger
LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO listening_stats_dirty (user_id)
            SELECT DISTINCT user_id FROM old_plays
            ON CONFLICT DO NOTHING;
            RETURN NULL;
        END $$;

CREATE TRIGGER play_history_deleted AFTER DELETE ON play_history
    REFERENCING OLD TABLE AS old_plays
    FOR EACH STATEMENT EXECUTE FUNCTION mark_listening_stats_dirty();

CREATE TRIGGER play_history_updated AFTER UPDATE ON play_history
    REFERENCING OLD TABLE AS old_plays
    FOR EACH STATEMENT EXECUTE FUNCTION mark_listening_stats_dirty();
