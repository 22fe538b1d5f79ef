//! The audit trail: administrators' actions, each row chained to the one
//! before it by a keyed hash, so that an edited, deleted or inserted row is
//! found and named.
//!
//! Defends against: a change to the gateway's controls (a ban lifted, an API
//! key created, an account given a role, a configuration reloaded) that
//! nobody can trace afterwards, and a record of it that is quietly rewritten
//! by whoever can write the database.
//!
//! Decision rules:
//! - A row holds `seq` (1, 2, 3, …), `at` (milliseconds), `actor`
//!   (`cli:<os user>`, `admin-api:<peer ip>`, `dashboard:<peer ip>`,
//!   `gateway`), `action` (a stable code such as `ban.add`), `target`,
//!   `detail` (a JSON object, never a secret: ids and fingerprints only),
//!   `outcome` (`ok`, `refused`, `failed`), `key_id`, `prev_hash` and `hash`.
//! - `hash` is HMAC-SHA256 under the audit key over [`chain_input`]: a
//!   format tag and `prev_hash`, `key_id`, `at`, `actor`, `action`, `target`,
//!   `detail` (the stored text, byte for byte) and `outcome`, each preceded by
//!   its length as a big-endian `u64`, so no two different rows encode alike.
//!   `seq` is the row's position, not hashed: the chain itself orders rows
//!   (`prev_hash` names the predecessor), and `seq` names them and shows gaps.
//! - Appends are serialized across processes and instances: one transaction
//!   reads the head and inserts the next row while holding the log's lock
//!   (SQLite `BEGIN IMMEDIATE`, PostgreSQL `pg_advisory_xact_lock`), and
//!   `seq` is the primary key, so two appenders can never fork the chain.
//! - [`AuditLog::verify`] walks the rows in order and names each problem:
//!   a row whose contents do not match its hash (edited, or written without
//!   the key), a row the chain goes around (inserted: the next row follows
//!   the one before it), a gap in `seq` (deleted), a row that does not follow
//!   its predecessor (deleted and renumbered, or moved), a row made with
//!   another key. Given a head recorded elsewhere, it also finds rows cut off
//!   the end.
//!
//! Deployment caveat: the key is what makes the chain tamper-evident. Whoever
//! can write the database but not read the key (a database administrator, a
//! restored backup, another service sharing the server) cannot forge a row;
//! whoever holds both can rewrite the whole log, and removing the newest rows
//! is found only against a head hash recorded elsewhere (`portcullis audit
//! verify` prints it, and every append emits an `audit.appended` event
//! carrying its row's hash to the event sinks). Keep the key out of the
//! database's host and its backups.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use serde::{Serialize, Serializer};

use super::{Pool, Store, StoreError, hex};

/// The `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The key file generated in `[server] data_dir` when `[state] audit_key`
/// is not set.
pub const KEY_FILE: &str = "audit.key";

/// The shortest audit key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// The reason codes of the events appends emit (defence `audit`).
pub const EVENT_CODES: &[&str] = &["audit.appended", "audit.failed"];

/// The most rows one [`AuditLog::list`] call returns.
pub const MAX_PAGE: u32 = 1000;

/// The first field of every hashed encoding: changes if the encoding does.
const FORMAT: &[u8] = b"portcullis-audit-v1";

/// The PostgreSQL advisory lock serializing appends (`"pclaudit"`).
const PG_LOCK_ID: i64 = 0x7063_6c61_7564_6974;

/// Rows read per query while verifying.
const VERIFY_BATCH: i64 = 1000;

const SELECT_HEAD: &str = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1";
const PG_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
const INSERT: &str = "INSERT INTO audit (seq, at_ms, actor, action, target, detail, outcome, key_id, prev_hash, hash) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
const SELECT_AFTER: &str = "SELECT seq, at_ms, actor, action, target, detail, outcome, key_id, prev_hash, hash \
                            FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2";
/// Newest first; each filter is off when NULL, exact, or a prefix (`$2`
/// characters equal to `$3`); `$7` pages (rows before that `seq`).
const SELECT_PAGE: &str = "SELECT seq, at_ms, actor, action, target, detail, outcome, key_id, prev_hash, hash \
                           FROM audit \
                           WHERE (CAST($1 AS TEXT) IS NULL OR action = $1 OR substr(action, 1, CAST($2 AS INTEGER)) = $3) \
                           AND (CAST($4 AS TEXT) IS NULL OR actor = $4 OR substr(actor, 1, CAST($5 AS INTEGER)) = $6) \
                           AND (CAST($7 AS BIGINT) IS NULL OR seq < $7) \
                           ORDER BY seq DESC LIMIT $8";

/// A stored row, as the columns come back.
type StoredRow = (i64, i64, String, String, String, String, String, String, String, String);

/// An audit failure. Never contains the key.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The key could not be read, generated, or is too short.
    #[error("audit key {from}: {reason}")]
    Key {
        /// Where it comes from (`[state] audit_key` or the file's path).
        from: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The entry's detail is not a JSON object.
    #[error("audit detail must be a JSON object")]
    Detail,
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

/// The HMAC key of the chain, and its public id (the first 16 hex digits of
/// an HMAC of a fixed label: names the key without revealing it).
#[derive(Clone)]
pub struct AuditKey {
    key: hmac::Key,
    id: String,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKey({})", self.id)
    }
}

impl AuditKey {
    /// A key from secret bytes (at least [`MIN_KEY_LEN`]).
    ///
    /// # Errors
    /// [`AuditError::Key`] when it is too short.
    pub fn new(secret: &[u8], from: &str) -> Result<Self, AuditError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(AuditError::Key { from: from.to_owned(), reason: format!("shorter than {MIN_KEY_LEN} bytes") });
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let id = hex(hmac::sign(&key, b"portcullis audit key id").as_ref())[..16].to_owned();
        Ok(Self { key, id })
    }

    /// The key in the file at `path` (which must exist: checking a log
    /// never makes a new key).
    ///
    /// # Errors
    /// [`AuditError::Key`] when the file cannot be read or is too short.
    pub fn from_file(path: &Path) -> Result<Self, AuditError> {
        let from = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| AuditError::Key { from: from.clone(), reason: e.to_string() })?;
        Self::new(text.trim().as_bytes(), &from)
    }

    /// The key in the file at `path`, generated (48 random bytes, base64url,
    /// mode 0600) when the file does not exist. Two processes generating at
    /// once end up with the same key: the file appears whole or not at all.
    ///
    /// # Errors
    /// [`AuditError::Key`] when the file cannot be read or written.
    pub fn from_file_or_generate(path: &Path) -> Result<Self, AuditError> {
        let from = path.display().to_string();
        let fail = |reason: String| AuditError::Key { from: from.clone(), reason };
        match std::fs::read_to_string(path) {
            Ok(text) => return Self::new(text.trim().as_bytes(), &from),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e.to_string())),
            Err(_) => {}
        }
        let secret = portcullis_policy::session::random_token(48).map_err(|e| fail(format!("cannot generate: {e}")))?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        // Written aside, then linked into place: a reader never sees half a key.
        let tmp = dir.join(format!(".{KEY_FILE}.{}", uuid::Uuid::new_v4().simple()));
        write_private(&tmp, secret.as_bytes()).map_err(|e| fail(e.to_string()))?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), "generated the audit key (copy it to every instance sharing the store, or set [state] audit_key)");
                Self::new(secret.as_bytes(), &from)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
                Self::new(text.trim().as_bytes(), &from)
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// The key's public id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self, input: &[u8]) -> String {
        hex(hmac::sign(&self.key, input).as_ref())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused (a configuration reload with errors).
    Refused,
    /// Attempted, and failed (a store or Redis unreachable).
    Failed,
}

impl Outcome {
    /// The stored form.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// What happened, to be appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Who: `cli:<os user>`, `admin-api:<peer ip>`, `dashboard:<peer ip>`, `gateway`.
    pub actor: String,
    /// What: a stable code (`ban.add`, `apikey.revoke`, `config.reload`, …).
    pub action: String,
    /// On what: an address, a key or account id, a configuration path.
    pub target: String,
    /// More, as a JSON object: ids and fingerprints, never a secret.
    pub detail: serde_json::Value,
    /// How it ended.
    pub outcome: Outcome,
}

impl Entry {
    /// An entry with outcome `ok`.
    #[must_use]
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        detail: serde_json::Value,
    ) -> Self {
        Self { actor: actor.into(), action: action.into(), target: target.into(), detail, outcome: Outcome::Ok }
    }

    /// The same entry with another outcome.
    #[must_use]
    pub fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
}

/// A stored row, as `portcullis audit list --json` and `GET /audit` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Its position: 1, 2, 3, …
    pub seq: i64,
    /// When (RFC 3339, milliseconds, UTC).
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// More (the stored JSON; a string if it is not JSON).
    pub detail: serde_json::Value,
    /// `ok`, `refused` or `failed`.
    pub outcome: String,
    /// The id of the key that made `hash`.
    pub key_id: String,
    /// The previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

fn row(stored: StoredRow) -> Row {
    let (seq, at_ms, actor, action, target, detail, outcome, key_id, prev_hash, hash) = stored;
    let detail = serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail));
    let at = UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(at_ms).unwrap_or(0));
    Row { seq, at, actor, action, target, detail, outcome, key_id, prev_hash, hash }
}

/// The bytes a row's hash is computed over: each field preceded by its
/// length as a big-endian `u64`, in this order: the format tag
/// `portcullis-audit-v1`, `prev_hash`, `key_id`, `at_ms` (8 bytes, big-endian
/// `i64`), `actor`, `action`, `target`, `detail`, `outcome`.
#[must_use]
#[allow(clippy::too_many_arguments)]
pub fn chain_input(
    prev_hash: &str,
    key_id: &str,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    outcome: &str,
) -> Vec<u8> {
    let at = at_ms.to_be_bytes();
    let fields: [&[u8]; 9] = [
        FORMAT,
        prev_hash.as_bytes(),
        key_id.as_bytes(),
        &at,
        actor.as_bytes(),
        action.as_bytes(),
        target.as_bytes(),
        detail.as_bytes(),
        outcome.as_bytes(),
    ];
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 8).sum());
    for field in fields {
        out.extend_from_slice(&u64::try_from(field.len()).unwrap_or(u64::MAX).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

fn stored_mac(key: &AuditKey, r: &StoredRow) -> String {
    key.mac(&chain_input(&r.8, &r.7, r.1, &r.2, &r.3, &r.4, &r.5, &r.6))
}

/// Which rows [`AuditLog::list`] returns. A value ending in `*` is a prefix
/// (`ban.*`, `cli:*`); any other value must match exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The action, or an action prefix.
    pub action: Option<String>,
    /// The actor, or an actor prefix.
    pub actor: Option<String>,
}

/// One page of [`AuditLog::list`], newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only rows before this `seq` (the previous page's `next_before`).
    pub before: Option<i64>,
    /// At most this many rows (capped at [`MAX_PAGE`]).
    pub limit: u32,
}

impl Default for Page {
    fn default() -> Self {
        Self { before: None, limit: 100 }
    }
}

/// A page of rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing {
    /// Newest first.
    pub entries: Vec<Row>,
    /// The `before` of the next page, when there may be one.
    pub next_before: Option<i64>,
}

/// The newest row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    /// Its position.
    pub seq: i64,
    /// Its hash: record it elsewhere to find rows later cut off the end.
    pub hash: String,
}

/// A problem [`AuditLog::verify`] found, naming the row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// Rows `first..=last` are not there: deleted.
    Missing {
        /// The first missing position.
        first: i64,
        /// The last missing position.
        last: i64,
    },
    /// The row's contents do not match its hash: edited, or written by
    /// someone without the key.
    Edited {
        /// The row.
        seq: i64,
    },
    /// The chain goes around the row (the next row follows the one before
    /// it), and its hash is wrong: inserted.
    Inserted {
        /// The row.
        seq: i64,
    },
    /// The row is intact but does not follow the row before it: a row
    /// between them was deleted and the rest renumbered, or rows were moved.
    Unlinked {
        /// The row.
        seq: i64,
        /// The row before it, if any.
        after: Option<i64>,
    },
    /// The row was hashed with another key than this configuration's.
    OtherKey {
        /// The row.
        seq: i64,
        /// The id of the key it names.
        key_id: String,
    },
    /// A head recorded earlier is not in the log: rows were cut off the end,
    /// or the log was replaced.
    HeadNotFound {
        /// The recorded hash.
        hash: String,
    },
}

impl Problem {
    /// The row it names, if it names one.
    #[must_use]
    pub const fn seq(&self) -> Option<i64> {
        match self {
            Self::Missing { first, .. } => Some(*first),
            Self::Edited { seq } | Self::Inserted { seq } | Self::Unlinked { seq, .. } | Self::OtherKey { seq, .. } => {
                Some(*seq)
            }
            Self::HeadNotFound { .. } => None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { first, last } if first == last => write!(f, "row {first}: missing (deleted)"),
            Self::Missing { first, last } => write!(f, "rows {first} to {last}: missing (deleted)"),
            Self::Edited { seq } => write!(
                f,
                "row {seq}: its contents do not match its hash (edited, or written by someone without the audit key)"
            ),
            Self::Inserted { seq } => {
                write!(f, "row {seq}: not part of the chain, the next row follows the one before it (inserted)")
            }
            Self::Unlinked { seq, after: Some(after) } => write!(
                f,
                "row {seq}: does not follow row {after} (a row between them was deleted and the rest renumbered, or rows were moved)"
            ),
            Self::Unlinked { seq, after: None } => {
                write!(f, "row {seq}: the first row does not start the chain (rows before it were deleted)")
            }
            Self::OtherKey { seq, key_id } => {
                write!(f, "row {seq}: hashed with another audit key (id {key_id}), cannot be checked with this one")
            }
            Self::HeadNotFound { hash } => write!(
                f,
                "the recorded head {hash} is not in the log (rows were cut off the end, or the log was replaced)"
            ),
        }
    }
}

/// What [`AuditLog::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Rows read.
    pub rows: u64,
    /// The newest row, if any.
    pub head: Option<Head>,
    /// The id of the key checked with.
    pub key_id: String,
    /// Every problem, in row order.
    pub problems: Vec<Problem>,
}

impl Verification {
    /// Whether the log is intact.
    #[must_use]
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Walks rows in `seq` order with one row of lookahead.
struct Walk<'k> {
    key: &'k AuditKey,
    /// The `seq` the next row should have.
    next_seq: i64,
    /// The hash the next row's `prev_hash` should name, and that row's `seq`.
    link: (String, Option<i64>),
    rows: u64,
    problems: Vec<Problem>,
    head: Option<Head>,
    wanted_head: Option<String>,
    found_head: bool,
}

impl<'k> Walk<'k> {
    fn new(key: &'k AuditKey, wanted_head: Option<&str>) -> Self {
        Self {
            key,
            next_seq: 1,
            link: (GENESIS.to_owned(), None),
            rows: 0,
            problems: Vec::new(),
            head: None,
            wanted_head: wanted_head.map(str::to_owned),
            found_head: false,
        }
    }

    /// Checks `r`, knowing the row after it (`next`), if any.
    fn check(&mut self, r: &StoredRow, next: Option<&StoredRow>) {
        let (seq, hash, prev_hash, key_id) = (r.0, &r.9, &r.8, &r.7);
        self.rows += 1;
        self.head = Some(Head { seq, hash: hash.clone() });
        if self.wanted_head.as_deref() == Some(hash.as_str()) {
            self.found_head = true;
        }
        let gap = seq != self.next_seq;
        if gap {
            self.problems.push(Problem::Missing { first: self.next_seq, last: seq - 1 });
        }
        self.next_seq = seq + 1;
        if key_id != self.key.id() {
            self.problems.push(Problem::OtherKey { seq, key_id: key_id.clone() });
        } else if !constant_time_eq(&stored_mac(self.key, r), hash) {
            // The chain going around it says inserted; otherwise edited.
            if !gap && next.is_some_and(|n| n.8 == self.link.0) {
                self.problems.push(Problem::Inserted { seq });
                return; // the next row links to the row before this one
            }
            self.problems.push(Problem::Edited { seq });
        } else if !gap && *prev_hash != self.link.0 {
            self.problems.push(Problem::Unlinked { seq, after: self.link.1 });
        }
        self.link = (hash.clone(), Some(seq));
    }

    fn finish(mut self) -> Verification {
        if let Some(hash) = self.wanted_head.take()
            && !self.found_head
        {
            self.problems.push(Problem::HeadNotFound { hash });
        }
        Verification { rows: self.rows, head: self.head, key_id: self.key.id().to_owned(), problems: self.problems }
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// Appends the row in `$tx` (a transaction holding the log's lock) and
/// commits; the same statements on both databases.
macro_rules! append_in {
    ($tx:ident, $key:expr, $entry:expr, $detail:expr, $at_ms:expr) => {{
        let head: Option<(i64, String)> = sqlx::query_as(SELECT_HEAD).fetch_optional(&mut *$tx).await?;
        let (seq, prev_hash) = head.map_or_else(|| (1, GENESIS.to_owned()), |(seq, hash)| (seq + 1, hash));
        let outcome = $entry.outcome.as_str();
        let hash = $key.mac(&chain_input(
            &prev_hash,
            $key.id(),
            $at_ms,
            &$entry.actor,
            &$entry.action,
            &$entry.target,
            &$detail,
            outcome,
        ));
        sqlx::query(INSERT)
            .bind(seq)
            .bind($at_ms)
            .bind(&$entry.actor)
            .bind(&$entry.action)
            .bind(&$entry.target)
            .bind(&$detail)
            .bind(outcome)
            .bind($key.id())
            .bind(&prev_hash)
            .bind(&hash)
            .execute(&mut *$tx)
            .await?;
        $tx.commit().await?;
        (seq, prev_hash, hash)
    }};
}

/// The audit log of a store, with the key that chains it.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
    key: AuditKey,
}

impl AuditLog {
    /// The log in `store`, chained with `key`.
    #[must_use]
    pub const fn new(store: Store, key: AuditKey) -> Self {
        Self { store, key }
    }

    /// The key's public id.
    #[must_use]
    pub fn key_id(&self) -> &str {
        self.key.id()
    }

    /// Appends `entry` at `at` after the current head, under the log's lock.
    ///
    /// # Errors
    /// [`AuditError::Detail`] for a detail that is not an object, or a store
    /// failure (nothing is appended then).
    pub async fn append(&self, entry: &Entry, at: SystemTime) -> Result<Row, AuditError> {
        if !entry.detail.is_object() {
            return Err(AuditError::Detail);
        }
        let detail = entry.detail.to_string();
        let at_ms =
            i64::try_from(at.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)).unwrap_or(i64::MAX);
        let key = &self.key;
        let (seq, prev_hash, hash) = match &self.store.pool {
            Pool::Sqlite(pool) => {
                // IMMEDIATE takes the write lock before the head is read.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                append_in!(tx, key, entry, detail, at_ms)
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(PG_LOCK).bind(PG_LOCK_ID).execute(&mut *tx).await?;
                append_in!(tx, key, entry, detail, at_ms)
            }
        };
        Ok(row((
            seq,
            at_ms,
            entry.actor.clone(),
            entry.action.clone(),
            entry.target.clone(),
            detail,
            entry.outcome.as_str().to_owned(),
            key.id().to_owned(),
            prev_hash,
            hash,
        )))
    }

    /// A page of rows matching `filter`, newest first.
    ///
    /// # Errors
    /// A store failure.
    pub async fn list(&self, filter: &Filter, page: Page) -> Result<Listing, AuditError> {
        let limit = page.limit.clamp(1, MAX_PAGE);
        let split = |value: &Option<String>| match value.as_deref() {
            None => (None, None, None),
            Some(v) => match v.strip_suffix('*') {
                Some(prefix) => (
                    Some(prefix.to_owned()),
                    Some(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX)),
                    Some(prefix.to_owned()),
                ),
                None => (Some(v.to_owned()), None, None),
            },
        };
        let (action, action_len, action_prefix) = split(&filter.action);
        let (actor, actor_len, actor_prefix) = split(&filter.actor);
        let rows: Vec<StoredRow> = super::with_pool!(self.store, |pool| {
            sqlx::query_as(SELECT_PAGE)
                .bind(&action)
                .bind(action_len)
                .bind(&action_prefix)
                .bind(&actor)
                .bind(actor_len)
                .bind(&actor_prefix)
                .bind(page.before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        let full = rows.len() == limit as usize;
        let entries: Vec<Row> = rows.into_iter().map(row).collect();
        let next_before = if full { entries.last().map(|r| r.seq) } else { None };
        Ok(Listing { entries, next_before })
    }

    /// Walks the whole log in order and reports every problem. With
    /// `recorded_head` (a hash printed by an earlier verify or carried by an
    /// `audit.appended` event), also checks that it is still in the log.
    ///
    /// # Errors
    /// A store failure.
    pub async fn verify(&self, recorded_head: Option<&str>) -> Result<Verification, AuditError> {
        let mut walk = Walk::new(&self.key, recorded_head);
        let mut pending: Option<StoredRow> = None;
        let mut after = 0_i64;
        loop {
            let batch: Vec<StoredRow> = super::with_pool!(self.store, |pool| {
                sqlx::query_as(SELECT_AFTER).bind(after).bind(VERIFY_BATCH).fetch_all(pool).await
            })?;
            let Some(last) = batch.last() else { break };
            after = last.0;
            for next in batch {
                if let Some(r) = pending.take() {
                    walk.check(&r, Some(&next));
                }
                pending = Some(next);
            }
        }
        if let Some(r) = pending {
            walk.check(&r, None);
        }
        Ok(walk.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::new(&[7; 32], "test").unwrap()
    }

    #[test]
    fn the_encoding_is_length_prefixed_and_unambiguous() {
        let input = chain_input(GENESIS, "k", 1, "a", "b", "c", "{}", "ok");
        // The tag comes first, with its length.
        assert_eq!(&input[..8], &(FORMAT.len() as u64).to_be_bytes());
        assert_eq!(&input[8..8 + FORMAT.len()], FORMAT);
        // Moving a byte from one field to the next changes the encoding.
        let pairs = [(("ab", "c"), ("a", "bc")), (("", "x"), ("x", "")), (("cli:a", "ban.add"), ("cli:aban.", "add"))];
        for ((a1, b1), (a2, b2)) in pairs {
            assert_ne!(
                chain_input(GENESIS, "k", 1, a1, b1, "t", "{}", "ok"),
                chain_input(GENESIS, "k", 1, a2, b2, "t", "{}", "ok"),
                "{a1:?}+{b1:?} vs {a2:?}+{b2:?}"
            );
        }
        // Every field counts.
        let base = chain_input(GENESIS, "k", 1, "a", "b", "c", "{}", "ok");
        for other in [
            chain_input(&"1".repeat(64), "k", 1, "a", "b", "c", "{}", "ok"),
            chain_input(GENESIS, "j", 1, "a", "b", "c", "{}", "ok"),
            chain_input(GENESIS, "k", 2, "a", "b", "c", "{}", "ok"),
            chain_input(GENESIS, "k", 1, "a", "b", "c", "{\"x\":1}", "ok"),
            chain_input(GENESIS, "k", 1, "a", "b", "c", "{}", "failed"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn the_hash_is_keyed() {
        let input = chain_input(GENESIS, "k", 1, "a", "b", "c", "{}", "ok");
        let other = AuditKey::new(&[8; 32], "test").unwrap();
        assert_ne!(key().mac(&input), other.mac(&input));
        assert_ne!(key().id(), other.id());
        assert_eq!(key().mac(&input).len(), 64);
        assert!(AuditKey::new(&[1; 31], "short").is_err());
        assert!(!format!("{:?}", key()).contains("0707"));
    }

    /// A valid chain of `n` rows.
    fn chain(key: &AuditKey, n: i64) -> Vec<StoredRow> {
        let mut out: Vec<StoredRow> = Vec::new();
        let mut prev = GENESIS.to_owned();
        for seq in 1..=n {
            let (actor, action, target, detail) = ("cli:root", "ban.add", format!("192.0.2.{seq}"), "{}");
            let hash = key.mac(&chain_input(&prev, key.id(), seq * 1000, actor, action, &target, detail, "ok"));
            out.push((
                seq,
                seq * 1000,
                actor.into(),
                action.into(),
                target,
                detail.into(),
                "ok".into(),
                key.id().into(),
                prev.clone(),
                hash.clone(),
            ));
            prev = hash;
        }
        out
    }

    fn walk(key: &AuditKey, rows: &[StoredRow], head: Option<&str>) -> Verification {
        let mut w = Walk::new(key, head);
        for (i, r) in rows.iter().enumerate() {
            w.check(r, rows.get(i + 1));
        }
        w.finish()
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let k = key();
        let good = chain(&k, 5);
        let v = walk(&k, &good, Some(&good[2].9));
        assert!(v.intact(), "{:?}", v.problems);
        assert_eq!(v.rows, 5);
        assert_eq!(v.head.as_ref().map(|h| h.seq), Some(5));

        let mut edited = good.clone();
        edited[2].4 = "198.51.100.1".into();
        assert_eq!(walk(&k, &edited, None).problems, vec![Problem::Edited { seq: 3 }]);

        let mut deleted = good.clone();
        deleted.remove(2);
        assert_eq!(walk(&k, &deleted, None).problems, vec![Problem::Missing { first: 3, last: 3 }]);

        let mut renumbered = deleted.clone();
        for r in &mut renumbered[2..] {
            r.0 -= 1;
        }
        assert_eq!(walk(&k, &renumbered, None).problems, vec![Problem::Unlinked { seq: 3, after: Some(2) }]);

        let mut inserted = good.clone();
        let mut forged = good[2].clone();
        forged.8 = good[1].9.clone();
        forged.9 = "f".repeat(64);
        inserted.insert(2, forged);
        for (i, r) in inserted.iter_mut().enumerate() {
            r.0 = i64::try_from(i).unwrap() + 1;
        }
        assert_eq!(walk(&k, &inserted, None).problems, vec![Problem::Inserted { seq: 3 }]);

        let truncated = &good[..3];
        assert_eq!(
            walk(&k, truncated, Some(&good[4].9)).problems,
            vec![Problem::HeadNotFound { hash: good[4].9.clone() }]
        );

        let other = AuditKey::new(&[9; 32], "other").unwrap();
        let v = walk(&other, &good, None);
        assert_eq!(v.problems.len(), 5);
        assert!(matches!(&v.problems[0], Problem::OtherKey { seq: 1, .. }));

        let first_gone = &good[1..];
        assert_eq!(walk(&k, first_gone, None).problems, vec![Problem::Missing { first: 1, last: 1 }]);
    }

    #[test]
    fn a_generated_key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(KEY_FILE);
        assert!(AuditKey::from_file(&path).is_err(), "reading never generates");
        let first = AuditKey::from_file_or_generate(&path).unwrap();
        let second = AuditKey::from_file_or_generate(&path).unwrap();
        assert_eq!(AuditKey::from_file(&path).unwrap().id(), first.id());
        assert_eq!(first.id(), second.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
    }
}
