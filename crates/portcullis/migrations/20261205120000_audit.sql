-- The audit trail (docs/audit.md). SQL valid on SQLite and PostgreSQL alike.
-- seq: 1, 2, 3… given by the appender while it holds the log's lock (SQLite:
-- BEGIN IMMEDIATE; PostgreSQL: an advisory transaction lock), so a gap is a
-- deleted row. at_ms: milliseconds since the Unix epoch. detail: a JSON
-- object, as text, hashed byte for byte (never a secret). outcome: ok,
-- refused or failed. key_id: names the audit key that made hash. prev_hash:
-- the previous row's hash (64 zeros for the first row). hash: lowercase hex
-- HMAC-SHA256 under the audit key of prev_hash and the row's fields (seq
-- aside): see docs/audit.md.
CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_action ON audit (action, seq);
CREATE INDEX audit_actor ON audit (actor, seq);
