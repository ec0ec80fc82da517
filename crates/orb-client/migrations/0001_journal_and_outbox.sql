-- The agent's durable state, in `agent.db` in its data folder (WAL, synchronous=FULL).
--
-- journal: one row per held command (key: its job id; one command per device per job) the agent
-- started, committed before the handler runs; the outcome is written when it finishes. A command
-- delivered again is answered from here, never run twice.
CREATE TABLE journal (
    job           TEXT    PRIMARY KEY,
    cmd           TEXT    NOT NULL,
    started_at    BIGINT  NOT NULL,
    finished_at   BIGINT,
    -- 1: `result` is the handler's JSON result; 0: error_code / error_message say why it failed.
    ok            INTEGER,
    result        TEXT,
    error_code    TEXT,
    error_message TEXT
);
CREATE INDEX journal_started ON journal (started_at);

-- outbox: messages the agent sent to the server, kept until the server acknowledged them
-- (committed on its side), flushed in `seq` order. `msg` is the id the server deduplicates by.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    msg        TEXT    NOT NULL UNIQUE,
    cmd        TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    bytes      BIGINT  NOT NULL
);
