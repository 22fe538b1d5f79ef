-- API keys (see docs/api-keys.md). SQL valid on SQLite and PostgreSQL alike:
-- times are whole seconds since the Unix epoch, roles a JSON array of strings,
-- hash the lowercase hex SHA-256 of the whole key. The key itself is never stored.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL,
    roles        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
