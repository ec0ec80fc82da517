-- A late answer (one that arrived after the job's deadline) is kept beside the target's outcome,
-- never over it: the status, error and summary stay what the requester was told. The late_*
-- columns hold the first late answer to a target whose status is timeout; NULL otherwise.
-- Rows written before this migration with late set had their timeout replaced by the late
-- answer; they are read as stored (see rows.rs). Keep in step with
-- ../sqlite/0005_late_answers.sql.

ALTER TABLE job_targets ADD COLUMN late_status TEXT;
ALTER TABLE job_targets ADD COLUMN late_result TEXT;
ALTER TABLE job_targets ADD COLUMN late_error_code TEXT;
ALTER TABLE job_targets ADD COLUMN late_error_message TEXT;
ALTER TABLE job_targets ADD COLUMN late_at BIGINT;
