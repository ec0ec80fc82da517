-- Jobs in (created_at, id) order: listing newest first and pruning (find the keep-th newest,
-- delete up to it in chunks) walk this index. It covers what jobs_created_at served.
-- Prefix lookups by id use the primary key index (BINARY: byte order).
-- Keep in step with ../postgres/0002_jobs_order_index.sql.

CREATE INDEX jobs_created_at_id ON jobs (created_at, id);
DROP INDEX jobs_created_at;
