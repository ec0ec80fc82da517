-- A job's target list, stored once: a JSON array of device ids in id order. job_targets rows
-- are written only when a target gets a status; a listed target without a row is pending.
-- NULL for jobs created before this migration (their pending targets have rows with a NULL
-- status). Keep in step with ../postgres/0003_job_target_list.sql.

ALTER TABLE jobs ADD COLUMN targets TEXT;
