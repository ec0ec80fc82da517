-- Stored schedules (decision 0014): a job template, when it fires (`spec`, JSON of
-- orb_schedule::Spec), what to do with firings missed while the server was down, and when it
-- fires next. A firing stores its job in the same commit as the schedule's next firing time (or,
-- for its last firing, the schedule's deletion), with `due_at` set until the job is dispatched. Keep in step with
-- ../postgres/0012_schedules.sql.

CREATE TABLE schedules (
    id            TEXT    NOT NULL PRIMARY KEY,
    spec          TEXT    NOT NULL,
    missed        TEXT    NOT NULL,
    selector      TEXT    NOT NULL,
    command       TEXT    NOT NULL,
    args          TEXT,
    wait_ms       BIGINT  NOT NULL,
    ttl_ms        BIGINT,
    created_by    TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    bytes         BIGINT  NOT NULL,
    paused_at     BIGINT,
    next_fire_at  BIGINT,
    last_fired_at BIGINT,
    fired         BIGINT  NOT NULL DEFAULT 0,
    last_error    TEXT
);

CREATE INDEX schedules_next_fire ON schedules (next_fire_at);

ALTER TABLE jobs ADD COLUMN schedule_id TEXT;
ALTER TABLE jobs ADD COLUMN due_at BIGINT;
ALTER TABLE jobs ADD COLUMN ttl_ms BIGINT;

CREATE INDEX jobs_schedule ON jobs (schedule_id, created_at);
CREATE INDEX jobs_due ON jobs (due_at) WHERE due_at IS NOT NULL;
