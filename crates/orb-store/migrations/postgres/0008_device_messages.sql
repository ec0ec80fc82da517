-- Messages devices sent from their durable outbox (a cmd with `msg`): stored once per
-- (device, msg) before the server acknowledges them; a resend of one still here is answered as a
-- duplicate. Each device keeps its newest `limits.max_messages_per_device`; older ones are
-- deleted as new ones arrive. Keep in step with ../sqlite/0008_device_messages.sql.

CREATE TABLE device_messages (
    id          BIGSERIAL PRIMARY KEY,
    device      TEXT    NOT NULL,
    msg         TEXT    NOT NULL,
    command     TEXT    NOT NULL,
    body        TEXT,
    sent_at     BIGINT  NOT NULL,
    received_at BIGINT  NOT NULL
);

CREATE UNIQUE INDEX device_messages_device_msg ON device_messages (device, msg);
CREATE INDEX device_messages_device_id ON device_messages (device, id);
