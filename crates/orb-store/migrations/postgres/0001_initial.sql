-- orb store schema, PostgreSQL dialect. Keep in step with ../sqlite/0001_initial.sql.
-- Times are unix milliseconds; tags and commands are JSON text (TEXT, not JSONB: both backends
-- read and write the same strings).

CREATE TABLE devices (
    id               TEXT    NOT NULL PRIMARY KEY,
    secret_hash      BYTEA,
    revoked          BOOLEAN NOT NULL DEFAULT FALSE,
    reported_tags    TEXT    NOT NULL DEFAULT '{}',
    operator_tags    TEXT    NOT NULL DEFAULT '{}',
    agent_version    TEXT,
    commands         TEXT    NOT NULL DEFAULT '[]',
    registered_at    BIGINT  NOT NULL,
    first_seen       BIGINT,
    last_seen        BIGINT,
    last_disconnect  BIGINT,
    last_remote_addr TEXT,
    user_agent       TEXT,
    transport        TEXT,
    connections      BIGINT  NOT NULL DEFAULT 0,
    flaps            BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE jobs (
    id           TEXT   NOT NULL PRIMARY KEY,
    requester    TEXT   NOT NULL,
    selector     TEXT   NOT NULL,
    command      TEXT   NOT NULL,
    args         TEXT,
    created_at   BIGINT NOT NULL,
    deadline_at  BIGINT NOT NULL,
    finished_at  BIGINT,
    state        TEXT   NOT NULL,
    target_count BIGINT NOT NULL
);

CREATE INDEX jobs_created_at ON jobs (created_at);
CREATE INDEX jobs_state ON jobs (state);

-- No foreign key to devices: a removed device's results stay in the history.
CREATE TABLE job_targets (
    job_id        TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    device_id     TEXT    NOT NULL,
    status        TEXT,
    result        TEXT,
    error_code    TEXT,
    error_message TEXT,
    elapsed_ms    BIGINT,
    answered_at   BIGINT,
    late          BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (job_id, device_id)
);
