-- Event workflows (tasks/workflows/): a job's status change, however it was made (our
-- code, another service, plain SQL), is written to the job_status_changes outbox in the
-- changing transaction, and the workers' dispatcher is woken at commit to match it
-- against the workflows. Nothing leaves the database inside the writer's transaction.
--
-- Only changes some active workflow may want are recorded: a table nobody watches (the
-- ledger's background_tasks changes status twice per task) pays one index probe a row.
-- A workflow's action that changes a job marks its transaction with the setting
-- automation.origin; the change carries it, so a loop of workflows can be refused.
CREATE FUNCTION record_job_status_change() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        before text;
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            before := OLD.status;
        END IF;
        IF NOT EXISTS (
            SELECT 1 FROM automation_workflows w
            WHERE w.source = TG_TABLE_NAME AND w.active
              AND (w.on_statuses IS NULL OR NEW.status = ANY (w.on_statuses))
        ) THEN
            RETURN NULL;
        END IF;
        INSERT INTO job_status_changes (source, job_id, user_id, old_status, new_status, job, origin)
        VALUES (
            TG_TABLE_NAME, NEW.id, (to_jsonb(NEW) ->> 'user_id')::bigint, before, NEW.status,
            to_jsonb(NEW), nullif(current_setting('automation.origin', true), '')::jsonb
        );
        PERFORM pg_notify('job_status_changes', '');
        RETURN NULL;
    END $$;

CREATE TRIGGER upload_jobs_status_inserted AFTER INSERT ON upload_jobs
    FOR EACH ROW EXECUTE FUNCTION record_job_status_change();
CREATE TRIGGER upload_jobs_status_changed AFTER UPDATE OF status ON upload_jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION record_job_status_change();

CREATE TRIGGER background_tasks_status_inserted AFTER INSERT ON background_tasks
    FOR EACH ROW EXECUTE FUNCTION record_job_status_change();
CREATE TRIGGER background_tasks_status_changed AFTER UPDATE OF status ON background_tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION record_job_status_change();
