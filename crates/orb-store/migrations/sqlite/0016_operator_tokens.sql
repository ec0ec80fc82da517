-- Operator tokens (security, issue 15): named credentials with a role (admin, operator, viewer),
-- kept as the SHA-256 of the token, shown once at creation. A revoked token stays listed.
-- Keep in step with ../postgres/0016_operator_tokens.sql.

CREATE TABLE operator_tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash BLOB NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
