-- Retained publications (pub/sub, issue 13): the last message kept per topic, delivered first
-- to each new subscription whose pattern matches. Bounded by the server in count and bytes.
-- Keep in step with ../postgres/0015_retained.sql.

CREATE TABLE retained (
    topic TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    sender TEXT NOT NULL,
    at BIGINT NOT NULL
);
