//! Second factors of built-in accounts in the store: TOTP secrets, recovery
//! codes and passkeys.
//!
//! Defends against: a TOTP code used twice (RFC 6238 §5.2: the store keeps
//! the last accepted time step, and accepting a step is a compare-and-set
//! that refuses it and every earlier one, so two logins racing with one code
//! cannot both pass), a recovery code used twice (consumed by one
//! conditional UPDATE), and a leaked store giving away recovery codes (only
//! SHA-256 hashes are kept; each code carries 100 random bits).
//!
//! Decision rules:
//! - The TOTP secret is stored as the caller sealed it; this module never
//!   sees it in clear. Enrolling again replaces it and forgets the last
//!   step; the first accepted step confirms the enrolment.
//! - Recovery codes are 20 characters of the RFC 4648 base32 alphabet in
//!   four groups of five (`ABCDE-FGHIJ-KLMNO-PQRST`); case, dashes and spaces
//!   do not matter when one is presented. Making new codes voids the old ones.
//! - A passkey is stored as the caller serialized it (webauthn-rs's
//!   `Passkey` as JSON), keyed by its credential id (base64url); one
//!   credential belongs to one account.

use std::fmt;
use std::time::SystemTime;

use super::accounts::{AccountError, Token, random, token};
use super::{Store, StoreError, from_unix, sha256_hex, unix, with_pool};

/// Recovery codes made at a time.
pub const RECOVERY_CODES: usize = 10;
const RECOVERY_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const RECOVERY_GROUPS: usize = 4;
const RECOVERY_GROUP_CHARS: usize = 5;
const MAX_PASSKEY_NAME_CHARS: usize = 64;
/// WebAuthn credential ids are at most 1023 bytes: 1364 base64url characters.
const MAX_CREDENTIAL_ID_CHARS: usize = 1364;

/// An account's TOTP enrolment.
#[derive(Clone, PartialEq, Eq)]
pub struct Totp {
    /// The secret as the caller sealed it.
    pub sealed_secret: String,
    /// When it was enrolled.
    pub created_at: SystemTime,
    /// When its first code was accepted; `None` while enrolment is pending.
    pub confirmed_at: Option<SystemTime>,
    /// The last time step accepted.
    pub last_step: Option<u64>,
}

impl fmt::Debug for Totp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Totp")
            .field("created_at", &self.created_at)
            .field("confirmed_at", &self.confirmed_at)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// A registered passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passkey {
    /// The credential id, base64url.
    pub credential_id: String,
    /// Whose it is.
    pub account_id: String,
    /// The owner's label for it.
    pub name: String,
    /// The serialized webauthn-rs passkey (public key, counter).
    pub passkey: String,
    /// When it was registered.
    pub created_at: SystemTime,
    /// When it last signed a login.
    pub last_used_at: Option<SystemTime>,
}

/// `(sealed_secret, created_at, confirmed_at, last_step)`.
type TotpRow = (String, i64, Option<i64>, Option<i64>);
/// `(credential_id, account_id, name, passkey, created_at, last_used_at)`.
type PasskeyRow = (String, String, String, String, i64, Option<i64>);

const UPSERT_TOTP: &str = "INSERT INTO totp_secrets (account_id, sealed_secret, created_at) VALUES ($1, $2, $3) \
                           ON CONFLICT (account_id) DO UPDATE SET sealed_secret = excluded.sealed_secret, \
                           created_at = excluded.created_at, confirmed_at = NULL, last_step = NULL";
const SELECT_TOTP: &str =
    "SELECT sealed_secret, created_at, confirmed_at, last_step FROM totp_secrets WHERE account_id = $1";
/// The compare-and-set that refuses a replayed step.
const ACCEPT_STEP: &str = "UPDATE totp_secrets SET last_step = $1, confirmed_at = COALESCE(confirmed_at, $2) \
                           WHERE account_id = $3 AND (last_step IS NULL OR last_step < $1)";
const DELETE_TOTP: &str = "DELETE FROM totp_secrets WHERE account_id = $1";
const DELETE_CODES: &str = "DELETE FROM recovery_codes WHERE account_id = $1";
const INSERT_CODE: &str = "INSERT INTO recovery_codes (account_id, code_hash, created_at) VALUES ($1, $2, $3)";
const USE_CODE: &str =
    "UPDATE recovery_codes SET used_at = $1 WHERE account_id = $2 AND code_hash = $3 AND used_at IS NULL";
const COUNT_CODES: &str = "SELECT COUNT(*) FROM recovery_codes WHERE account_id = $1 AND used_at IS NULL";
const INSERT_PASSKEY: &str = "INSERT INTO passkeys (credential_id, account_id, name, passkey, created_at) \
                              VALUES ($1, $2, $3, $4, $5)";
const SELECT_PASSKEYS: &str = "SELECT credential_id, account_id, name, passkey, created_at, last_used_at \
                               FROM passkeys WHERE account_id = $1 ORDER BY created_at, credential_id";
const SELECT_PASSKEY: &str = "SELECT credential_id, account_id, name, passkey, created_at, last_used_at \
                              FROM passkeys WHERE credential_id = $1";
const UPDATE_PASSKEY: &str = "UPDATE passkeys SET passkey = $1, last_used_at = $2 WHERE credential_id = $3";
const DELETE_PASSKEY: &str = "DELETE FROM passkeys WHERE account_id = $1 AND credential_id = $2";
const DELETE_PASSKEYS: &str = "DELETE FROM passkeys WHERE account_id = $1";

impl Store {
    /// Starts (or restarts) TOTP enrolment with `sealed_secret`.
    ///
    /// # Errors
    /// [`AccountError::Unknown`] for an account that does not exist, or a
    /// store failure.
    pub async fn set_totp_secret(
        &self,
        account_id: &str,
        sealed_secret: &str,
        now: SystemTime,
    ) -> Result<(), AccountError> {
        let inserted = with_pool!(self, |pool| {
            sqlx::query(UPSERT_TOTP)
                .bind(account_id)
                .bind(sealed_secret)
                .bind(unix(now))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        });
        inserted.map(drop).map_err(|e| unknown_account(e, account_id))
    }

    /// The account's TOTP enrolment, if any.
    ///
    /// # Errors
    /// A store failure, or a stored step that cannot be one.
    pub async fn totp(&self, account_id: &str) -> Result<Option<Totp>, StoreError> {
        let row: Option<TotpRow> =
            with_pool!(self, |pool| sqlx::query_as(SELECT_TOTP).bind(account_id).fetch_optional(pool).await)?;
        row.map(|(sealed_secret, created, confirmed, step)| {
            let last_step = step
                .map(u64::try_from)
                .transpose()
                .map_err(|_| StoreError::Corrupt(format!("negative TOTP step for account {account_id}")))?;
            Ok(Totp {
                sealed_secret,
                created_at: from_unix(created),
                confirmed_at: confirmed.map(from_unix),
                last_step,
            })
        })
        .transpose()
    }

    /// Records that a code for time step `step` was verified: true if the
    /// step is later than every step accepted before (the code may be
    /// accepted), false if it is a replay (or there is no enrolment).
    ///
    /// # Errors
    /// A store failure.
    pub async fn accept_totp_step(&self, account_id: &str, step: u64, now: SystemTime) -> Result<bool, StoreError> {
        let Ok(step) = i64::try_from(step) else { return Ok(false) };
        let changed = with_pool!(self, |pool| {
            sqlx::query(ACCEPT_STEP)
                .bind(step)
                .bind(unix(now))
                .bind(account_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(changed == 1)
    }

    /// Makes [`RECOVERY_CODES`] new recovery codes, voiding the old ones, and
    /// returns them in clear: the only time they exist outside the caller's hands.
    ///
    /// # Errors
    /// [`AccountError::Unknown`] for an account that does not exist, a
    /// random generator failure, or a store failure.
    pub async fn replace_recovery_codes(&self, account_id: &str, now: SystemTime) -> Result<Vec<Token>, AccountError> {
        let codes = (0..RECOVERY_CODES).map(|_| recovery_code()).collect::<Result<Vec<_>, _>>()?;
        let replaced = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            sqlx::query(DELETE_CODES).bind(account_id).execute(&mut *tx).await?;
            for code in &codes {
                sqlx::query(INSERT_CODE)
                    .bind(account_id)
                    .bind(recovery_hash(code.expose()))
                    .bind(unix(now))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .await);
        replaced.map_err(|e| unknown_account(e, account_id))?;
        Ok(codes)
    }

    /// Consumes a recovery code: true once, false ever after (and for a code
    /// the account never had).
    ///
    /// # Errors
    /// A store failure.
    pub async fn use_recovery_code(&self, account_id: &str, code: &str, now: SystemTime) -> Result<bool, StoreError> {
        let changed = with_pool!(self, |pool| {
            sqlx::query(USE_CODE)
                .bind(unix(now))
                .bind(account_id)
                .bind(recovery_hash(code))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(changed == 1)
    }

    /// How many of the account's recovery codes are still unused.
    ///
    /// # Errors
    /// A store failure.
    pub async fn unused_recovery_codes(&self, account_id: &str) -> Result<u64, StoreError> {
        let (count,): (i64,) =
            with_pool!(self, |pool| sqlx::query_as(COUNT_CODES).bind(account_id).fetch_one(pool).await)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Registers a passkey for the account.
    ///
    /// # Errors
    /// An invalid name or credential id, [`AccountError::PasskeyTaken`] for a
    /// credential already registered, [`AccountError::Unknown`] for an
    /// account that does not exist, or a store failure.
    pub async fn add_passkey(
        &self,
        account_id: &str,
        credential_id: &str,
        name: &str,
        passkey: &str,
        now: SystemTime,
    ) -> Result<(), AccountError> {
        validate_passkey(credential_id, name, passkey)?;
        let inserted = with_pool!(self, |pool| {
            sqlx::query(INSERT_PASSKEY)
                .bind(credential_id)
                .bind(account_id)
                .bind(name)
                .bind(passkey)
                .bind(unix(now))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        });
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(AccountError::PasskeyTaken),
            Err(e) => Err(unknown_account(e, account_id)),
        }
    }

    /// The account's passkeys, oldest first.
    ///
    /// # Errors
    /// A store failure.
    pub async fn passkeys(&self, account_id: &str) -> Result<Vec<Passkey>, StoreError> {
        let rows: Vec<PasskeyRow> =
            with_pool!(self, |pool| sqlx::query_as(SELECT_PASSKEYS).bind(account_id).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(passkey).collect())
    }

    /// The passkey with this credential id (a passwordless login starts here).
    ///
    /// # Errors
    /// A store failure.
    pub async fn passkey(&self, credential_id: &str) -> Result<Option<Passkey>, StoreError> {
        let row: Option<PasskeyRow> =
            with_pool!(self, |pool| sqlx::query_as(SELECT_PASSKEY).bind(credential_id).fetch_optional(pool).await)?;
        Ok(row.map(passkey))
    }

    /// Stores the passkey's state after a login (its signature counter).
    /// Whether it still exists.
    ///
    /// # Errors
    /// A store failure.
    pub async fn update_passkey(
        &self,
        credential_id: &str,
        passkey: &str,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let changed = with_pool!(self, |pool| {
            sqlx::query(UPDATE_PASSKEY)
                .bind(passkey)
                .bind(unix(now))
                .bind(credential_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(changed == 1)
    }

    /// Removes one of the account's passkeys. Whether it had it.
    ///
    /// # Errors
    /// A store failure.
    pub async fn delete_passkey(&self, account_id: &str, credential_id: &str) -> Result<bool, StoreError> {
        let changed = with_pool!(self, |pool| {
            sqlx::query(DELETE_PASSKEY)
                .bind(account_id)
                .bind(credential_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(changed == 1)
    }

    /// Removes every second factor of the account (TOTP, recovery codes,
    /// passkeys) at once: `portcullis user reset-mfa`.
    ///
    /// # Errors
    /// A store failure (nothing is removed then).
    pub async fn reset_mfa(&self, account_id: &str) -> Result<(), StoreError> {
        with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            for statement in [DELETE_TOTP, DELETE_CODES, DELETE_PASSKEYS] {
                sqlx::query(statement).bind(account_id).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)?;
        Ok(())
    }
}

/// A foreign-key failure means the account does not exist.
fn unknown_account(e: sqlx::Error, account_id: &str) -> AccountError {
    match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => AccountError::Unknown(account_id.to_owned()),
        _ => e.into(),
    }
}

fn recovery_code() -> Result<Token, AccountError> {
    let bytes = random::<{ RECOVERY_GROUPS * RECOVERY_GROUP_CHARS }>()?;
    let mut code = String::with_capacity(RECOVERY_GROUPS * (RECOVERY_GROUP_CHARS + 1));
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 && i % RECOVERY_GROUP_CHARS == 0 {
            code.push('-');
        }
        // 256 is a multiple of 32: five bits per byte, unbiased.
        code.push(char::from(RECOVERY_ALPHABET[usize::from(byte & 31)]));
    }
    Ok(token(code))
}

/// The stored form of a recovery code: SHA-256 of it in upper case without
/// dashes or spaces.
fn recovery_hash(code: &str) -> String {
    let canonical: String =
        code.chars().filter(|c| *c != '-' && !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    sha256_hex(&canonical)
}

fn validate_passkey(credential_id: &str, name: &str, passkey: &str) -> Result<(), AccountError> {
    let id_ok = !credential_id.is_empty()
        && credential_id.len() <= MAX_CREDENTIAL_ID_CHARS
        && credential_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok {
        return Err(AccountError::InvalidPasskey("the credential id is not 1 to 1364 base64url characters"));
    }
    if name.trim().is_empty() || name.chars().count() > MAX_PASSKEY_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AccountError::InvalidPasskey("the name must be 1 to 64 characters without control characters"));
    }
    if passkey.is_empty() {
        return Err(AccountError::InvalidPasskey("the serialized passkey is empty"));
    }
    Ok(())
}

fn passkey(row: PasskeyRow) -> Passkey {
    let (credential_id, account_id, name, passkey, created, used) = row;
    Passkey {
        credential_id,
        account_id,
        name,
        passkey,
        created_at: from_unix(created),
        last_used_at: used.map(from_unix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_have_100_bits_in_four_groups_and_hash_loosely() {
        let code = recovery_code().unwrap();
        let text = code.expose();
        assert_eq!(text.len(), 23, "{text}");
        assert!(text.split('-').all(|g| g.len() == 5 && g.bytes().all(|b| RECOVERY_ALPHABET.contains(&b))), "{text}");
        let loose = format!(" {} ", text.to_lowercase().replace('-', " "));
        assert_eq!(recovery_hash(&loose), recovery_hash(text));
        assert_ne!(recovery_hash(text), recovery_hash(recovery_code().unwrap().expose()));
    }

    #[test]
    fn passkey_fields_are_checked() {
        assert!(validate_passkey("AAEC-_", "laptop", "{}").is_ok());
        for (id, name, json) in [
            ("", "laptop", "{}"),
            ("a+b/", "laptop", "{}"),
            (&"A".repeat(1365), "laptop", "{}"),
            ("AAEC", "", "{}"),
            ("AAEC", "lap\ntop", "{}"),
            ("AAEC", &"n".repeat(65), "{}"),
            ("AAEC", "laptop", ""),
        ] {
            assert!(validate_passkey(id, name, json).is_err(), "{id:?} {name:?} {json:?}");
        }
    }
}
