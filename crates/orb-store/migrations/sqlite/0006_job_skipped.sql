-- Devices a job's selector matched that were not targeted because they were not connected (a
-- job submitted with `select: online`). 0 for every other job, and for jobs stored before this
-- migration. Keep in step with ../postgres/0006_job_skipped.sql.

ALTER TABLE jobs ADD COLUMN skipped BIGINT NOT NULL DEFAULT 0;
