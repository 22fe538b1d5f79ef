//! Built-in accounts in the store: the accounts themselves and the invites
//! that let people register. Sessions (refresh-token families) are in
//! [`super::sessions`], second factors in [`super::mfa`].
//!
//! Defends against: two spellings of one name becoming two accounts (names
//! are folded before they are stored or looked up), an invite used twice or
//! after its expiry (one conditional UPDATE consumes it, in the same
//! transaction that creates the account, so a refused registration does not
//! burn it), a leaked store giving away invites or tokens (only their
//! SHA-256 is kept), and SQL injection (every statement is a constant with
//! bound parameters; names and emails are data, whatever they contain).
//!
//! Decision rules:
//! - A username is folded like the login guard folds account names
//!   (caseless NFKC, trimmed: `portcullis_policy::login::fold_account_name`), then must be 1 to 64 characters with no `@`, no
//!   whitespace and no control characters: a login name containing `@` is
//!   therefore always an email.
//! - An email is trimmed and lower-cased, then must be at most 254
//!   characters, one `@` with something on both sides, and no whitespace or
//!   control characters. It is unique but optional.
//! - Roles use the API keys' alphabet (`A-Z a-z 0-9 . _ : / -`, 1 to 64).
//! - The password hash is stored as given (an argon2id PHC string from
//!   `auth::password`); this module never sees a password. Replacing it after
//!   a rehash is a compare-and-set on the old hash, so a rehash racing a
//!   password change cannot bring the old password back.
//! - Random tokens handed out (refresh tokens, invite codes, recovery codes)
//!   carry at least 100 random bits, so a fast hash (SHA-256) is the right
//!   stored form, as for API keys: there is no dictionary to try.

use std::fmt;
use std::time::SystemTime;

use aws_lc_rs::rand;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Store, StoreError, from_unix, hex, sha256_hex, unix, with_pool};

/// Invite codes start with this.
pub const INVITE_PREFIX: &str = "pci_";
/// The longest folded username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// The longest email, in characters.
pub const MAX_EMAIL_CHARS: usize = 254;
const MAX_ROLE_CHARS: usize = 64;
/// Random bytes in a row id (32 hex digits).
const ID_BYTES: usize = 16;
/// Random bytes in a token's secret (43 base64 characters).
const TOKEN_BYTES: usize = 32;

/// A secret handed out once (a refresh token, an invite or recovery code).
/// Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The secret, to give to its owner.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// An account, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Random public id (32 hex digits); the principal's subject is `account:<id>`.
    pub id: String,
    /// The folded username.
    pub username: String,
    /// The folded email, if any.
    pub email: Option<String>,
    /// Roles its sessions get.
    pub roles: Vec<String>,
    /// Whether it has a password (a passkey-only account has none).
    pub has_password: bool,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it was last changed (password, roles, email, disabled).
    pub updated_at: SystemTime,
    /// When it was disabled, if it is.
    pub disabled_at: Option<SystemTime>,
}

impl Account {
    /// The principal subject for this account: `account:<id>`.
    #[must_use]
    pub fn subject(&self) -> String {
        format!("account:{}", self.id)
    }
}

/// An account as found for a login: with its password hash, to verify.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginRecord {
    /// The account.
    pub account: Account,
    /// Its argon2id PHC string, if it has a password.
    pub password_hash: Option<String>,
}

impl fmt::Debug for LoginRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRecord").field("account", &self.account).finish_non_exhaustive()
    }
}

/// What a new account is made of. Roles are ignored when an invite gives them.
#[derive(Debug, Clone, Copy)]
pub struct NewAccount<'a> {
    /// As typed; folded before it is stored.
    pub username: &'a str,
    /// As typed; folded before it is stored.
    pub email: Option<&'a str>,
    /// An argon2id PHC string (`auth::password::PasswordHasher::hash_new`).
    pub password_hash: Option<&'a str>,
    /// Roles.
    pub roles: &'a [String],
}

/// An invite, minus its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// Random public id.
    pub id: String,
    /// Roles the account registered with it gets.
    pub roles: Vec<String>,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it stops working.
    pub expires_at: SystemTime,
}

/// A failed account operation. Messages name ids and the folded names the
/// caller gave, never a password, hash, token or code.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The username breaks the rules.
    #[error("invalid username: {0}")]
    InvalidUsername(&'static str),
    /// The email breaks the rules.
    #[error("invalid email: {0}")]
    InvalidEmail(&'static str),
    /// A role has characters outside `A-Z a-z 0-9 . _ : / -` or is too long.
    #[error("invalid role {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ : / -")]
    InvalidRole(String),
    /// A passkey's name is empty, too long or has control characters.
    #[error("invalid passkey: {0}")]
    InvalidPasskey(&'static str),
    /// The expiry is not in the future.
    #[error("the expiry must be in the future")]
    InvalidExpiry,
    /// Another account has this username.
    #[error("the username is taken")]
    UsernameTaken,
    /// Another account has this email.
    #[error("the email is taken")]
    EmailTaken,
    /// Another account (or this one) has a passkey with this credential id.
    #[error("the passkey is already registered")]
    PasskeyTaken,
    /// No account has this id.
    #[error("no account with id {0:?}")]
    Unknown(String),
    /// The invite code is unknown, used or expired (one answer for all three).
    #[error("the invite is invalid, used or expired")]
    InviteRefused,
    /// The system's random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AccountError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

/// The INSERT of an [`AccountRow`], for whichever database `with_pool!` picked.
macro_rules! insert_account {
    ($row:expr) => {
        sqlx::query(INSERT_ACCOUNT).bind(&$row.0).bind(&$row.1).bind(&$row.2).bind(&$row.3).bind(&$row.4).bind($row.5)
    };
}

/// `(id, username, email, password_hash, roles, created_at, updated_at, disabled_at)`.
type AccountRow = (String, String, Option<String>, Option<String>, String, i64, i64, Option<i64>);

const INSERT_ACCOUNT: &str = "INSERT INTO accounts (id, username, email, password_hash, roles, created_at, updated_at) \
                              VALUES ($1, $2, $3, $4, $5, $6, $6)";
const SELECT_ACCOUNT: &str = "SELECT id, username, email, password_hash, roles, created_at, updated_at, disabled_at \
                              FROM accounts WHERE id = $1";
const SELECT_BY_USERNAME: &str = "SELECT id, username, email, password_hash, roles, created_at, updated_at, \
                                  disabled_at FROM accounts WHERE username = $1";
const SELECT_BY_EMAIL: &str = "SELECT id, username, email, password_hash, roles, created_at, updated_at, disabled_at \
                               FROM accounts WHERE email = $1";
const SELECT_ALL: &str = "SELECT id, username, email, password_hash, roles, created_at, updated_at, disabled_at \
                          FROM accounts ORDER BY created_at, username";
const SET_PASSWORD: &str = "UPDATE accounts SET password_hash = $1, updated_at = $2 WHERE id = $3";
const REHASH_PASSWORD: &str = "UPDATE accounts SET password_hash = $1 WHERE id = $2 AND password_hash = $3";
const SET_ROLES: &str = "UPDATE accounts SET roles = $1, updated_at = $2 WHERE id = $3";
const DISABLE: &str = "UPDATE accounts SET disabled_at = COALESCE(disabled_at, $1), updated_at = $1 WHERE id = $2";
const ENABLE: &str = "UPDATE accounts SET disabled_at = NULL, updated_at = $1 WHERE id = $2";
const DELETE_ACCOUNT: &str = "DELETE FROM accounts WHERE id = $1";
const INSERT_INVITE: &str =
    "INSERT INTO invites (id, code_hash, roles, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)";
/// Consumes an invite: the compare-and-set that makes it single use.
const USE_INVITE: &str = "UPDATE invites SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1 \
                          RETURNING id, roles";
const INVITE_USED_BY: &str = "UPDATE invites SET used_by = $1 WHERE id = $2";

impl Store {
    /// Creates an account with `new`'s roles.
    ///
    /// # Errors
    /// An invalid username, email or role, a username or email another
    /// account has, or a store failure.
    pub async fn create_account(&self, new: &NewAccount<'_>, now: SystemTime) -> Result<Account, AccountError> {
        let row = account_row(new, &validate_roles(new.roles)?, now)?;
        let inserted = with_pool!(self, |pool| insert_account!(row).execute(pool).await.map(drop));
        inserted.map_err(taken)?;
        Ok(account(row)?)
    }

    /// Creates an account with the roles of the invite `code`, consuming the
    /// invite, in one transaction: if the account cannot be created (a taken
    /// username), the invite stays usable.
    ///
    /// # Errors
    /// [`AccountError::InviteRefused`] for an unknown, used or expired code,
    /// the errors of [`Store::create_account`], or a store failure.
    pub async fn register_with_invite(
        &self,
        code: &str,
        new: &NewAccount<'_>,
        now: SystemTime,
    ) -> Result<Account, AccountError> {
        // Checked before the invite is touched: a bad name must not cost a code.
        let mut row = account_row(new, &[], now)?;
        let code_hash = sha256_hex(code.trim());
        let registered = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let invite: Option<(String, String)> =
                sqlx::query_as(USE_INVITE).bind(unix(now)).bind(&code_hash).fetch_optional(&mut *tx).await?;
            let Some((invite_id, roles)) = invite else { return Ok(None) };
            row.4 = roles;
            insert_account!(row).execute(&mut *tx).await?;
            sqlx::query(INVITE_USED_BY).bind(&row.0).bind(&invite_id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(()))
        }
        .await);
        match registered.map_err(taken)? {
            Some(()) => Ok(account(row)?),
            None => Err(AccountError::InviteRefused),
        }
    }

    /// The account `id`, if there is one.
    ///
    /// # Errors
    /// A store failure.
    pub async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.account_row(SELECT_ACCOUNT, id).await?.map(account).transpose()
    }

    /// The account a login name names, with its password hash: an email if
    /// the name has an `@`, a username otherwise, folded either way.
    ///
    /// # Errors
    /// A store failure.
    pub async fn account_for_login(&self, login: &str) -> Result<Option<LoginRecord>, StoreError> {
        // No stored name has a NUL (they are refused), and PostgreSQL would
        // refuse the query rather than find nothing.
        if login.contains('\0') {
            return Ok(None);
        }
        let row = if login.contains('@') {
            self.account_row(SELECT_BY_EMAIL, &fold_email(login)).await?
        } else {
            self.account_row(SELECT_BY_USERNAME, &fold_username(login)).await?
        };
        row.map(|row| {
            let password_hash = row.3.clone();
            Ok(LoginRecord { account: account(row)?, password_hash })
        })
        .transpose()
    }

    /// Every account, oldest first.
    ///
    /// # Errors
    /// A store failure.
    pub async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows: Vec<AccountRow> = with_pool!(self, |pool| sqlx::query_as(SELECT_ALL).fetch_all(pool).await)?;
        rows.into_iter().map(account).collect()
    }

    /// Sets the account's password hash (a password change or reset). The
    /// caller revokes its other sessions.
    ///
    /// # Errors
    /// [`AccountError::Unknown`], or a store failure.
    pub async fn set_password_hash(&self, id: &str, hash: &str, now: SystemTime) -> Result<(), AccountError> {
        let changed = with_pool!(self, |pool| {
            sqlx::query(SET_PASSWORD).bind(hash).bind(unix(now)).bind(id).execute(pool).await.map(|r| r.rows_affected())
        })?;
        known(changed, id)
    }

    /// Replaces `old` by `new` (the same password hashed with the current
    /// parameters) unless the hash changed since it was read. Whether it did.
    ///
    /// # Errors
    /// A store failure.
    pub async fn rehash_password(&self, id: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        let changed = with_pool!(self, |pool| {
            sqlx::query(REHASH_PASSWORD).bind(new).bind(id).bind(old).execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(changed == 1)
    }

    /// Replaces the account's roles (deduplicated, in order).
    ///
    /// # Errors
    /// An invalid role, [`AccountError::Unknown`], or a store failure.
    pub async fn set_account_roles(&self, id: &str, roles: &[String], now: SystemTime) -> Result<(), AccountError> {
        let roles = roles_json(&validate_roles(roles)?)?;
        let changed = with_pool!(self, |pool| {
            sqlx::query(SET_ROLES).bind(roles).bind(unix(now)).bind(id).execute(pool).await.map(|r| r.rows_affected())
        })?;
        known(changed, id)
    }

    /// Disables or enables the account. Disabling keeps the first time it
    /// was disabled; the caller revokes its sessions.
    ///
    /// # Errors
    /// [`AccountError::Unknown`], or a store failure.
    pub async fn set_account_disabled(&self, id: &str, disabled: bool, now: SystemTime) -> Result<(), AccountError> {
        let statement = if disabled { DISABLE } else { ENABLE };
        let changed = with_pool!(self, |pool| sqlx::query(statement)
            .bind(unix(now))
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        known(changed, id)
    }

    /// Deletes the account and everything it owns (sessions, second
    /// factors); invites it used keep their record without it.
    ///
    /// # Errors
    /// [`AccountError::Unknown`], or a store failure.
    pub async fn delete_account(&self, id: &str) -> Result<(), AccountError> {
        let changed = with_pool!(self, |pool| sqlx::query(DELETE_ACCOUNT)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        known(changed, id)
    }

    /// Creates a single-use invite giving `roles`, valid until `expires_at`,
    /// and returns its code in clear (`pci_` and 43 base64url characters):
    /// the only time it exists outside the caller's hands.
    ///
    /// # Errors
    /// An invalid role or expiry, a random generator failure, or a store failure.
    pub async fn create_invite(
        &self,
        roles: &[String],
        expires_at: SystemTime,
        now: SystemTime,
    ) -> Result<(Invite, Token), AccountError> {
        let roles = validate_roles(roles)?;
        if expires_at <= now {
            return Err(AccountError::InvalidExpiry);
        }
        let (id, code, roles_text) = (new_id()?, new_token(INVITE_PREFIX)?, roles_json(&roles)?);
        with_pool!(self, |pool| {
            sqlx::query(INSERT_INVITE)
                .bind(&id)
                .bind(sha256_hex(code.expose()))
                .bind(&roles_text)
                .bind(unix(now))
                .bind(unix(expires_at))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        let invite = Invite { id, roles, created_at: from_unix(unix(now)), expires_at: from_unix(unix(expires_at)) };
        Ok((invite, code))
    }

    async fn account_row(&self, statement: &'static str, key: &str) -> Result<Option<AccountRow>, StoreError> {
        Ok(with_pool!(self, |pool| sqlx::query_as(statement).bind(key).fetch_optional(pool).await)?)
    }
}

/// The row a new account will be, every value checked and folded.
fn account_row(new: &NewAccount<'_>, roles: &[String], now: SystemTime) -> Result<AccountRow, AccountError> {
    let username = validate_username(new.username)?;
    let email = new.email.map(validate_email).transpose()?;
    let at = unix(now);
    Ok((new_id()?, username, email, new.password_hash.map(str::to_owned), roles_json(roles)?, at, at, None))
}

/// Which unique constraint an insert broke, if that is why it failed.
fn taken(e: sqlx::Error) -> AccountError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        // SQLite names the column in its message, PostgreSQL the constraint.
        let what = format!("{} {}", db.message(), db.constraint().unwrap_or_default());
        if what.contains("email") {
            return AccountError::EmailTaken;
        }
        if what.contains("username") {
            return AccountError::UsernameTaken;
        }
        if what.contains("credential_id") || what.contains("passkeys") {
            return AccountError::PasskeyTaken;
        }
    }
    AccountError::from(e)
}

fn known(rows: u64, id: &str) -> Result<(), AccountError> {
    if rows == 0 { Err(AccountError::Unknown(id.to_owned())) } else { Ok(()) }
}

fn account(row: AccountRow) -> Result<Account, StoreError> {
    let (id, username, email, password_hash, roles, created, updated, disabled) = row;
    let roles = serde_json::from_str(&roles).map_err(|e| StoreError::Corrupt(format!("roles of account {id}: {e}")))?;
    Ok(Account {
        id,
        username,
        email,
        roles,
        has_password: password_hash.is_some(),
        created_at: from_unix(created),
        updated_at: from_unix(updated),
        disabled_at: disabled.map(from_unix),
    })
}

/// A username as stored and looked up: folded as the login guard folds
/// account names (caseless NFKC, trimmed), so its lockout counts per account.
#[must_use]
pub fn fold_username(name: &str) -> String {
    portcullis_policy::login::fold_account_name(name)
}

/// An email as stored and looked up: trimmed, lower-case.
#[must_use]
pub fn fold_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn validate_username(name: &str) -> Result<String, AccountError> {
    let folded = fold_username(name);
    if folded.is_empty() {
        return Err(AccountError::InvalidUsername("it is empty"));
    }
    if folded.chars().count() > MAX_USERNAME_CHARS {
        return Err(AccountError::InvalidUsername("it is longer than 64 characters"));
    }
    if folded.contains('@') {
        return Err(AccountError::InvalidUsername("it contains @ (an email is given separately)"));
    }
    if folded.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AccountError::InvalidUsername("it contains spaces or control characters"));
    }
    Ok(folded)
}

fn validate_email(email: &str) -> Result<String, AccountError> {
    let folded = fold_email(email);
    if folded.chars().count() > MAX_EMAIL_CHARS {
        return Err(AccountError::InvalidEmail("it is longer than 254 characters"));
    }
    if folded.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AccountError::InvalidEmail("it contains spaces or control characters"));
    }
    match folded.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => Ok(folded),
        _ => Err(AccountError::InvalidEmail("it is not one name, an @ and a domain")),
    }
}

/// Roles travel upstream in a header and into events, so they are kept to a
/// plain alphabet with no separators (the API keys' rule).
pub(crate) fn validate_roles(roles: &[String]) -> Result<Vec<String>, AccountError> {
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        if role.len() > MAX_ROLE_CHARS || !portcullis_policy::principal::is_valid_name(role) {
            return Err(AccountError::InvalidRole(role.clone()));
        }
        if !out.contains(role) {
            out.push(role.clone());
        }
    }
    Ok(out)
}

fn roles_json(roles: &[String]) -> Result<String, AccountError> {
    serde_json::to_string(roles).map_err(|e| AccountError::Store(StoreError::Corrupt(e.to_string())))
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N], AccountError> {
    let mut bytes = [0; N];
    rand::fill(&mut bytes).map_err(|_| AccountError::Random)?;
    Ok(bytes)
}

/// A random row id: 32 lowercase hex digits.
pub(crate) fn new_id() -> Result<String, AccountError> {
    Ok(hex(&random::<ID_BYTES>()?))
}

/// `prefix` and 256 random bits in unpadded base64url.
pub(crate) fn new_token(prefix: &str) -> Result<Token, AccountError> {
    Ok(Token(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random::<TOKEN_BYTES>()?))))
}

/// Wraps a freshly made secret.
pub(crate) const fn token(secret: String) -> Token {
    Token(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_fold_then_validate() {
        for (given, want) in [("Alice", "alice"), ("  ＡＬＩＣＥ ", "alice"), ("o'brien;--", "o'brien;--")] {
            assert_eq!(validate_username(given).ok().as_deref(), Some(want), "{given:?}");
        }
        for bad in ["", "   ", "a b", "a\tb", "a\u{0}b", "bob@example.com", &"x".repeat(65)] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
        assert!(validate_username(&"é".repeat(64)).is_ok());
    }

    #[test]
    fn emails_fold_then_validate() {
        assert_eq!(validate_email(" Bob@Example.COM ").ok().as_deref(), Some("bob@example.com"));
        for bad in ["bob", "@example.com", "bob@", "a@b@c", "bob @example.com", &format!("{}@x", "a".repeat(253))] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_do_not_debug_print() {
        let token = new_token(INVITE_PREFIX).unwrap();
        assert_eq!(format!("{token:?}"), "Token(***)");
        assert_eq!(token.expose().len(), INVITE_PREFIX.len() + 43);
        assert_ne!(token, new_token(INVITE_PREFIX).unwrap());
    }
}
