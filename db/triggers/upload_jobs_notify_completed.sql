-- However an upload becomes completed (our code, another service's plain SQL), the
-- enrichment workers' dispatcher hears of it at commit and publishes enrich_upload for it.
CREATE FUNCTION notify_upload_completed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('upload_jobs_completed', NEW.id::text);
        RETURN NULL;
    END $$;

CREATE TRIGGER upload_jobs_notify_completed AFTER INSERT OR UPDATE OF status
    ON upload_jobs FOR EACH ROW
    WHEN (NEW.status = 'completed' AND NEW.enrichment_queued_at IS NULL)
    EXECUTE FUNCTION notify_upload_completed();
