-- Wakes the workers' dispatcher at commit when background_tasks rows arrive without a
-- published message (enqueued_at NULL: inserted by the track triggers, or by another
-- service writing the ledger directly), so it publishes them now rather than at its next
-- poll.
CREATE FUNCTION notify_background_dispatch() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM new_rows WHERE enqueued_at IS NULL) THEN
            PERFORM pg_notify('background_tasks', '');
        END IF;
        RETURN NULL;
    END $$;

CREATE TRIGGER background_tasks_notify AFTER INSERT ON background_tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_background_dispatch();
