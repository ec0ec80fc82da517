-- Jobs in (created_at, id) order: listing newest first and pruning (find the keep-th newest,
-- delete up to it in chunks) walk this index. It covers what jobs_created_at served.
-- Keep in step with ../sqlite/0002_jobs_order_index.sql.

CREATE INDEX jobs_created_at_id ON jobs (created_at, id);
DROP INDEX jobs_created_at;

-- Prefix lookups by id compare in byte order (COLLATE "C"), whatever the database collation;
-- the primary key index follows the database collation, so this one serves them.
CREATE INDEX jobs_id_bytes ON jobs (id COLLATE "C");
