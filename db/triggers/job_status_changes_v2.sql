-- Event workflows (tasks/workflows/): the status trigger of job_status_changes.sql, with
-- the question "does some active workflow want this change?" answered by one index
-- lookup, however many workflows the table holds.
--
-- The first version asked it with an EXISTS over the active workflows of the source,
-- testing each one's on_statuses: the index on (source, active) narrows nothing when most
-- workflows watch the same table (and TG_TABLE_NAME, a name, is not compared with the
-- text column through it anyway), so the question was a sequential scan of the workflows,
-- stopped at the first that wants the change: all of them when none does. With 1,000
-- workflows, 700 active on upload_jobs (bench/workflows.py), a single-row status UPDATE
-- nobody watched took 2.3x its time without the trigger, and a 10,000-row one 17x.
--
-- Now each active workflow is indexed (GIN) under the keys source || ':' || status for
-- each status it watches, or source || ':*' when its conditions can hold for any status,
-- and the trigger looks up the change's two keys: the same rows answer as before (active,
-- same source, on_statuses NULL or holding the new status). A change nobody wants costs
-- one index lookup; one that many workflows want costs reading their postings (about 18
-- microseconds for 400). The job's row is turned into JSON once, not twice.
CREATE FUNCTION workflow_watch_keys(source text, statuses text[]) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE WHEN statuses IS NULL THEN ARRAY[source || ':*']
                    ELSE ARRAY(SELECT source || ':' || s FROM unnest(statuses) AS s) END
    $$;

CREATE INDEX ix_automation_workflows_watch ON automation_workflows
    USING gin (workflow_watch_keys(source, on_statuses)) WHERE active;

CREATE OR REPLACE FUNCTION record_job_status_change() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        before text;
        job jsonb;
        -- A text[] variable, not the expression itself: TG_TABLE_NAME is a name, whose
        -- collation ("C") would make the lookup's differ from the index's, which then goes
        -- unused.
        wanted text[] := ARRAY[TG_TABLE_NAME || ':' || NEW.status, TG_TABLE_NAME || ':*'];
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            before := OLD.status;
        END IF;
        IF NOT EXISTS (
            SELECT 1 FROM automation_workflows w
            WHERE w.active AND workflow_watch_keys(w.source, w.on_statuses) && wanted
        ) THEN
            RETURN NULL;
        END IF;
        job := to_jsonb(NEW);
        INSERT INTO job_status_changes (source, job_id, user_id, old_status, new_status, job, origin)
        VALUES (
            TG_TABLE_NAME, NEW.id, (job ->> 'user_id')::bigint, before, NEW.status, job,
            nullif(current_setting('automation.origin', true), '')::jsonb
        );
        PERFORM pg_notify('job_status_changes', '');
        RETURN NULL;
    END $$;
