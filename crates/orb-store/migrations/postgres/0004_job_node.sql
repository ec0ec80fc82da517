-- The node (server) that runs a job. Several servers may share one PostgreSQL database: at start,
-- a server ends only the jobs its own node left running. NULL for jobs created before this
-- migration (any server ends those). Keep in step with ../sqlite/0004_job_node.sql.

ALTER TABLE jobs ADD COLUMN node TEXT;
