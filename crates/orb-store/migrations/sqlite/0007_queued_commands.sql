-- Commands held for devices that were not connected when their job (sent with a TTL) was
-- submitted: one row per (job, device), committed before the job is acknowledged, delivered
-- oldest first (row id order) when the device connects, deleted when its outcome is settled or
-- when the TTL passes first. Keep in step with ../postgres/0007_queued_commands.sql.

CREATE TABLE queued_commands (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT    NOT NULL,
    device       TEXT    NOT NULL,
    command      TEXT    NOT NULL,
    args         TEXT,
    sender       TEXT    NOT NULL,
    wait_ms      BIGINT  NOT NULL,
    queued_at    BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    bytes        BIGINT  NOT NULL,
    attempts     BIGINT  NOT NULL DEFAULT 0,
    delivered_at BIGINT
);

CREATE INDEX queued_commands_device ON queued_commands (device, id);
CREATE INDEX queued_commands_expires ON queued_commands (expires_at);
CREATE UNIQUE INDEX queued_commands_job_device ON queued_commands (job_id, device);
