-- Built-in accounts (issue 16). SQL valid on SQLite and PostgreSQL alike, as
-- in the API-key migration: times are whole seconds since the Unix epoch,
-- roles a JSON array of strings, ids random lowercase hex, every *_hash the
-- lowercase hex SHA-256 of a random token or code (never the token itself).
-- Passwords are argon2id PHC strings. Deleting an account deletes all it owns.

-- username: folded (NFKC, trimmed, lower-case), never contains '@', so a
-- login name with '@' is an email. email: trimmed, lower-case, optional.
-- password_hash NULL: no password (a passkey-only account).
CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT UNIQUE,
    password_hash TEXT,
    roles         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    disabled_at   BIGINT
);

-- One row per refresh-token family (a login). token_hash is the current
-- token's; a rotation replaces it and bumps generation in one conditional
-- UPDATE, and the replaced hash goes to rotated_refresh_tokens, so a rotated
-- token presented again is recognised as reuse and revokes the family.
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token_hash     TEXT NOT NULL UNIQUE,
    generation     BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    rotated_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT
);
CREATE INDEX sessions_account ON sessions (account_id);

CREATE TABLE rotated_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation BIGINT NOT NULL,
    rotated_at BIGINT NOT NULL
);
CREATE INDEX rotated_refresh_tokens_session ON rotated_refresh_tokens (session_id);

-- sealed_secret: the TOTP key as the caller sealed it (the store never sees
-- it in clear). confirmed_at NULL: enrolment not finished. last_step: the
-- highest RFC 6238 time step accepted; a code for it or an earlier step is
-- a replay.
CREATE TABLE totp_secrets (
    account_id    TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    sealed_secret TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    confirmed_at  BIGINT,
    last_step     BIGINT
);

CREATE TABLE recovery_codes (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (account_id, code_hash)
);

-- credential_id: base64url of the WebAuthn credential id; passkey: the
-- serialized webauthn-rs Passkey (JSON), updated after each use.
CREATE TABLE passkeys (
    credential_id TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    passkey       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);
CREATE INDEX passkeys_account ON passkeys (account_id);

-- Single-use registration invites. used_by keeps who registered with it.
CREATE TABLE invites (
    id         TEXT PRIMARY KEY,
    code_hash  TEXT NOT NULL UNIQUE,
    roles      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    used_by    TEXT REFERENCES accounts (id) ON DELETE SET NULL
);
