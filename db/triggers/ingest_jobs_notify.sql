-- Media ingest (tasks/ingest/): wakes the ingest workers' dispatcher at commit when a job
-- waits for a message (a row inserted by any service, or one put back in the queue by a
-- rescue or a resume), or when a job leaves processing, which makes room in the batch of
-- jobs in flight for the next one. Identical notifications in one transaction collapse
-- into one, so a bulk insert wakes the dispatcher once.
CREATE FUNCTION notify_ingest_dispatch() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('ingest_jobs', '');
        RETURN NULL;
    END $$;

CREATE TRIGGER ingest_jobs_notify_queued AFTER INSERT OR UPDATE OF status, enqueued_at
    ON ingest_jobs FOR EACH ROW
    WHEN (NEW.status = 'queued' AND NEW.enqueued_at IS NULL)
    EXECUTE FUNCTION notify_ingest_dispatch();

CREATE TRIGGER ingest_jobs_notify_finished AFTER UPDATE OF status ON ingest_jobs
    FOR EACH ROW WHEN (OLD.status = 'processing' AND NEW.status IN ('done', 'failed'))
    EXECUTE FUNCTION notify_ingest_dispatch();

-- Status changes fire event workflows, as on every job table (tasks/workflows/sources.py).
CREATE TRIGGER ingest_jobs_status_inserted AFTER INSERT ON ingest_jobs
    FOR EACH ROW EXECUTE FUNCTION record_job_status_change();
CREATE TRIGGER ingest_jobs_status_changed AFTER UPDATE OF status ON ingest_jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION record_job_status_change();
