-- An error may carry data (docs/protocol.md section 3: any one JSON value within the body limits,
-- e.g. the result of a failed `exec`), kept as JSON text beside its code and message, for a
-- target's outcome and for its late answer. NULL: no data (every row written before this).
-- Keep in step with ../sqlite/0019_error_data.sql.

ALTER TABLE job_targets ADD COLUMN error_data TEXT;
ALTER TABLE job_targets ADD COLUMN late_error_data TEXT;
