//! Sessions of built-in accounts: one per login, each with a family of
//! refresh tokens that rotate on use.
//!
//! Defends against: a stolen refresh token staying usable (each use replaces
//! it; presenting a replaced one revokes the whole family, the thief's and
//! the owner's copies alike, so the owner's next refresh fails and they log
//! in again), two concurrent refreshes of one token both getting a new one,
//! and a leaked store giving away tokens (only SHA-256 hashes are kept).
//!
//! Decision rules:
//! - A refresh token reads `pcr_` and 256 random bits in unpadded base64url.
//!   The store keeps the current token's hash on the session row and every
//!   replaced token's hash in `rotated_refresh_tokens`.
//! - Rotation is one conditional UPDATE: it replaces the hash only where it
//!   still equals the presented token's, on a session neither revoked nor
//!   expired. Of two refreshes racing with one token exactly one matches
//!   (PostgreSQL re-checks the condition after the first commits; SQLite
//!   runs writers one at a time); the old hash is recorded in the same
//!   transaction.
//! - A presented token that is a replaced one is reuse: the family is revoked
//!   (reason `reuse`), unless it was replaced less than `grace` ago, which is
//!   then only [`Rotation::Superseded`]: refused, family kept, for clients
//!   that send two requests at once. A grace of zero makes every late copy
//!   reuse.
//! - Sessions expire at a fixed time set when they start; rotation does not
//!   extend it.

use std::time::{Duration, SystemTime};

use super::accounts::{AccountError, Token, new_id, new_token};
use super::{Store, StoreError, from_unix, sha256_hex, unix, with_pool};

/// Every refresh token starts with this.
pub const REFRESH_PREFIX: &str = "pcr_";

/// A session: one login and its refresh-token family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Random public id (the family id).
    pub id: String,
    /// Whose it is.
    pub account_id: String,
    /// How many times its refresh token was rotated.
    pub generation: i64,
    /// When the login happened.
    pub created_at: SystemTime,
    /// When its current refresh token was issued.
    pub rotated_at: SystemTime,
    /// When it ends, however often it is refreshed.
    pub expires_at: SystemTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<SystemTime>,
    /// Why ([`RevokeReason::as_str`]), if it was.
    pub revoked_reason: Option<String>,
}

/// Why sessions are revoked: stored, and the reason code of their events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// The user logged out of this session.
    Logout,
    /// The user logged out everywhere.
    LogoutEverywhere,
    /// The password changed (the other sessions end).
    PasswordChange,
    /// A rotated refresh token was presented again.
    Reuse,
    /// The account was disabled.
    Disabled,
    /// An administrator ended it.
    Admin,
    /// The account logged in once more than its live sessions may number:
    /// the oldest ends.
    TooMany,
}

impl RevokeReason {
    /// The stored form.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutEverywhere => "logout_everywhere",
            Self::PasswordChange => "password_change",
            Self::Reuse => "reuse",
            Self::Disabled => "disabled",
            Self::Admin => "admin",
            Self::TooMany => "too_many",
        }
    }
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was current: here is its successor, the only valid one now.
    Rotated {
        /// The session after the rotation.
        session: Session,
        /// The new refresh token.
        token: Token,
    },
    /// It was replaced less than `grace` ago (a concurrent refresh won):
    /// refused, the family kept.
    Superseded {
        /// The session.
        session: Session,
    },
    /// It was replaced earlier: reuse. The family is revoked (`revoked_now`:
    /// by this call; otherwise it already was).
    Reused {
        /// The session, revoked.
        session: Session,
        /// Whether this call revoked it.
        revoked_now: bool,
    },
    /// It is the current token of a revoked session.
    Revoked {
        /// The session.
        session: Session,
    },
    /// It is the current token of an expired session.
    Expired {
        /// The session.
        session: Session,
    },
    /// No session has or had it.
    Unknown,
}

/// `(id, account_id, generation, created_at, rotated_at, expires_at, revoked_at, revoked_reason)`.
type SessionRow = (String, String, i64, i64, i64, i64, Option<i64>, Option<String>);

const INSERT: &str = "INSERT INTO sessions (id, account_id, token_hash, generation, created_at, rotated_at, expires_at) \
                      VALUES ($1, $2, $3, 0, $4, $4, $5)";
/// The compare-and-set at the heart of rotation.
const ROTATE: &str = "UPDATE sessions SET token_hash = $1, generation = generation + 1, rotated_at = $2 \
                      WHERE token_hash = $3 AND revoked_at IS NULL AND expires_at > $2 \
                      RETURNING id, account_id, generation, created_at, rotated_at, expires_at, revoked_at, \
                      revoked_reason";
const RECORD_ROTATED: &str =
    "INSERT INTO rotated_refresh_tokens (token_hash, session_id, generation, rotated_at) VALUES ($1, $2, $3, $4)";
const SELECT_ROTATED: &str = "SELECT session_id, rotated_at FROM rotated_refresh_tokens WHERE token_hash = $1";
const SELECT_BY_ID: &str = "SELECT id, account_id, generation, created_at, rotated_at, expires_at, revoked_at, \
                            revoked_reason FROM sessions WHERE id = $1";
const SELECT_BY_TOKEN: &str = "SELECT id, account_id, generation, created_at, rotated_at, expires_at, revoked_at, \
                               revoked_reason FROM sessions WHERE token_hash = $1";
const SELECT_BY_ACCOUNT: &str = "SELECT id, account_id, generation, created_at, rotated_at, expires_at, revoked_at, \
                                 revoked_reason FROM sessions WHERE account_id = $1 ORDER BY created_at, id";
const REVOKE: &str = "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL";
/// Sessions that ended before $1, by expiry or revocation (their rotated
/// tokens go with them).
const PURGE: &str = "DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1";
const REVOKE_ACCOUNT: &str = "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
                              WHERE account_id = $3 AND revoked_at IS NULL AND id <> $4";

impl Store {
    /// Starts a session for `account_id`, ending at `expires_at`, and
    /// returns its first refresh token.
    ///
    /// # Errors
    /// [`AccountError::Unknown`] for an account that does not exist, an
    /// expiry not after `now`, a random generator failure, or a store failure.
    pub async fn create_session(
        &self,
        account_id: &str,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> Result<(Session, Token), AccountError> {
        if expires_at <= now {
            return Err(AccountError::InvalidExpiry);
        }
        let (id, token) = (new_id()?, new_token(REFRESH_PREFIX)?);
        let inserted = with_pool!(self, |pool| {
            sqlx::query(INSERT)
                .bind(&id)
                .bind(account_id)
                .bind(sha256_hex(token.expose()))
                .bind(unix(now))
                .bind(unix(expires_at))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        });
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                return Err(AccountError::Unknown(account_id.to_owned()));
            }
            Err(e) => return Err(e.into()),
        }
        let session = Session {
            id,
            account_id: account_id.to_owned(),
            generation: 0,
            created_at: from_unix(unix(now)),
            rotated_at: from_unix(unix(now)),
            expires_at: from_unix(unix(expires_at)),
            revoked_at: None,
            revoked_reason: None,
        };
        Ok((session, token))
    }

    /// Presents a refresh token: rotates it if it is current, revokes its
    /// family if it was already rotated more than `grace` ago (see the
    /// module's rules).
    ///
    /// # Errors
    /// A random generator failure or a store failure (nothing changed then).
    pub async fn rotate_refresh_token(
        &self,
        token: &str,
        grace: Duration,
        now: SystemTime,
    ) -> Result<Rotation, AccountError> {
        let old_hash = sha256_hex(token);
        let next = new_token(REFRESH_PREFIX)?;
        let next_hash = sha256_hex(next.expose());
        let at = unix(now);
        let rotated: Option<SessionRow> = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let row: Option<SessionRow> =
                sqlx::query_as(ROTATE).bind(&next_hash).bind(at).bind(&old_hash).fetch_optional(&mut *tx).await?;
            if let Some(row) = &row {
                let replaced = row.2 - 1;
                sqlx::query(RECORD_ROTATED)
                    .bind(&old_hash)
                    .bind(&row.0)
                    .bind(replaced)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok::<_, sqlx::Error>(row)
        }
        .await)?;
        if let Some(row) = rotated {
            return Ok(Rotation::Rotated { session: session(row), token: next });
        }

        let replaced: Option<(String, i64)> =
            with_pool!(self, |pool| sqlx::query_as(SELECT_ROTATED).bind(&old_hash).fetch_optional(pool).await)?;
        if let Some((session_id, rotated_at)) = replaced {
            let Some(current) = self.session(&session_id).await? else { return Ok(Rotation::Unknown) };
            if current.revoked_at.is_some() {
                return Ok(Rotation::Reused { session: current, revoked_now: false });
            }
            let grace_secs = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
            if at.saturating_sub(rotated_at) < grace_secs {
                return Ok(Rotation::Superseded { session: current });
            }
            let revoked_now = self.revoke_session(&session_id, RevokeReason::Reuse, now).await?;
            let session = self.session(&session_id).await?.unwrap_or(current);
            return Ok(Rotation::Reused { session, revoked_now });
        }

        let row: Option<SessionRow> =
            with_pool!(self, |pool| sqlx::query_as(SELECT_BY_TOKEN).bind(&old_hash).fetch_optional(pool).await)?;
        Ok(match row.map(session) {
            None => Rotation::Unknown,
            Some(session) if session.revoked_at.is_some() => Rotation::Revoked { session },
            Some(session) => Rotation::Expired { session },
        })
    }

    /// The session `id`, if there is one.
    ///
    /// # Errors
    /// A store failure.
    pub async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let row: Option<SessionRow> =
            with_pool!(self, |pool| sqlx::query_as(SELECT_BY_ID).bind(id).fetch_optional(pool).await)?;
        Ok(row.map(session))
    }

    /// The account's sessions, oldest first, revoked and expired ones too.
    ///
    /// # Errors
    /// A store failure.
    pub async fn account_sessions(&self, account_id: &str) -> Result<Vec<Session>, StoreError> {
        let rows: Vec<SessionRow> =
            with_pool!(self, |pool| sqlx::query_as(SELECT_BY_ACCOUNT).bind(account_id).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(session).collect())
    }

    /// Revokes one session. Whether this call revoked it (false: unknown or
    /// already revoked, which keeps its first reason).
    ///
    /// # Errors
    /// A store failure.
    pub async fn revoke_session(&self, id: &str, reason: RevokeReason, now: SystemTime) -> Result<bool, StoreError> {
        let changed = with_pool!(self, |pool| {
            sqlx::query(REVOKE)
                .bind(unix(now))
                .bind(reason.as_str())
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(changed == 1)
    }

    /// Revokes every live session of the account except `keep` (the one a
    /// password change was made from). How many it revoked.
    ///
    /// # Errors
    /// A store failure.
    pub async fn revoke_account_sessions(
        &self,
        account_id: &str,
        keep: Option<&str>,
        reason: RevokeReason,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let changed = with_pool!(self, |pool| {
            sqlx::query(REVOKE_ACCOUNT)
                .bind(unix(now))
                .bind(reason.as_str())
                .bind(account_id)
                // No session id is empty, so "" keeps none.
                .bind(keep.unwrap_or_default())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(changed)
    }

    /// Deletes sessions that ended (expired or were revoked) before
    /// `ended_before`, with their rotated-token history, which otherwise
    /// grows by one row per refresh. How many it deleted. A token of a
    /// purged session is then [`Rotation::Unknown`], no longer reuse: keep
    /// `ended_before` well behind the refresh tokens' lifetime.
    ///
    /// # Errors
    /// A store failure.
    pub async fn purge_sessions(&self, ended_before: SystemTime) -> Result<u64, StoreError> {
        let at = unix(ended_before);
        Ok(with_pool!(self, |pool| sqlx::query(PURGE).bind(at).execute(pool).await.map(|r| r.rows_affected()))?)
    }
}

fn session(row: SessionRow) -> Session {
    let (id, account_id, generation, created, rotated, expires, revoked, reason) = row;
    Session {
        id,
        account_id,
        generation,
        created_at: from_unix(created),
        rotated_at: from_unix(rotated),
        expires_at: from_unix(expires),
        revoked_at: revoked.map(from_unix),
        revoked_reason: reason,
    }
}
