-- Agent-local schedules (decision 0016): the schedules the server synced to this device, as it
-- sent them (`definition`: JSON of orb_proto::schedule::AgentSchedule), and when each fires next
-- (milliseconds since the Unix epoch; NULL: it fires no more). The next firing is committed
-- before a firing's handler runs, so a crash never repeats one.
CREATE TABLE local_schedules (
    id           TEXT    PRIMARY KEY,
    definition   TEXT    NOT NULL,
    next_fire_at BIGINT
);
