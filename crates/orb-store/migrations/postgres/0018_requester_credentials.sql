-- What a held command and a schedule keep of their requester's credential (security, issue 15):
-- `admin`, `operator`, `viewer` (a role given without a named token), `token:NAME` or
-- `device:ID`, so the access rules are applied again when the command is delivered or the
-- schedule fires: a token revoked or a rule changed since then takes effect there. NULL for rows
-- stored before this migration: those keep the rights they were stored with. And when an
-- operator token expires (NULL: never).
-- Keep in step with ../sqlite/0018_requester_credentials.sql.

ALTER TABLE queued_commands ADD COLUMN credential TEXT;
ALTER TABLE schedules ADD COLUMN credential TEXT;
ALTER TABLE operator_tokens ADD COLUMN expires_at BIGINT;
