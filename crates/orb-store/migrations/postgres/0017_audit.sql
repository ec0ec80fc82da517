-- The audit log (security, issue 15): one row per operator action that changes something (a job
-- sent, a schedule created or changed, a job cancelled, a device or token changed, a signal, a
-- configuration reload), and per such action refused as `forbidden`. Append only: rows are
-- never updated, only deleted by retention (`store.audit_retention`, `store.audit_retention_count`).
-- Text columns are bounded by the store when written. Keep in step with ../sqlite/0017_audit.sql.

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT  NOT NULL,
    actor   TEXT    NOT NULL,
    role    TEXT    NOT NULL,
    source  TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    outcome TEXT    NOT NULL,
    detail  TEXT
);

CREATE INDEX audit_log_at ON audit_log (at);
