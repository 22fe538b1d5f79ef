//! The durable store: API keys, built-in accounts and the audit trail.
//!
//! One database reached through sqlx: an SQLite file by default (one gateway
//! instance), PostgreSQL when several instances must share keys. The schema
//! lives in `crates/portcullis/migrations/` (SQL valid on both) and is
//! migrated on [`Store::open`]. Every statement is a constant string with
//! bound parameters (`$1`, `$2`, … work on both databases): no SQL is ever
//! built from values.
//!
//! Deployment caveats:
//! - The SQLite file holds hashes of keys, passwords, refresh tokens and
//!   codes, never the secrets (TOTP secrets only as their caller sealed
//!   them), but is still created `0600` (with its WAL files, which SQLite
//!   gives the same mode); an existing file keeps the mode it has.
//! - sqlx is built without TLS, so a PostgreSQL connection is plaintext: keep
//!   the server on loopback, a Unix socket (`postgres://user@/db?host=/run/postgresql`)
//!   or a private network. Put the password in `PGPASSWORD` or `~/.pgpass`
//!   rather than in the configuration file; errors never repeat it.

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod mfa;
pub mod sessions;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use api_keys::{ApiKeyError, ApiKeyInfo, ApiKeyVerifier, Clock, PlaintextKey, Revoked, SystemClock};

/// The schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a caller waits for a pooled connection before the store counts as
/// unavailable (a request then gets 503 instead of hanging).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often opening a SQLite store retries migrations another process
/// was applying at the same time.
const SQLITE_MIGRATE_ATTEMPTS: u32 = 5;

/// How long SQLite waits for another writer's lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A store failure. Never contains a password from the URL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one the store understands.
    #[error("invalid store URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The SQLite file or its directory could not be created.
    #[error("cannot create the SQLite store {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be reached.
    #[error("cannot connect to the store {url}: {reason}")]
    Connect {
        /// The URL with any password replaced by `***`.
        url: String,
        /// The driver's message, with any password removed.
        reason: String,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the store {url}: {source}")]
    Migrate {
        /// The URL with any password replaced by `***`.
        url: String,
        /// Why.
        source: MigrateError,
    },
    /// A statement failed.
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A row holds something the code cannot have written.
    #[error("corrupt store row: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The durable store: a cheap-to-clone handle on a connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
}

/// Runs `$body` with `$pool` bound to the concrete pool, whichever it is. The
/// statements are the same text on both databases; only the types differ.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

impl Store {
    /// Opens the store at `url` (`sqlite:///path/file.db` or
    /// `postgres://user@host:port/db`) and brings its schema up to date.
    ///
    /// A missing SQLite file is created (mode `0600`, its directory too) and
    /// put in WAL mode, so the gateway's readers never wait for the CLI's
    /// writes.
    ///
    /// # Errors
    /// An unsupported or malformed URL, an unreachable database, a file that
    /// cannot be created, or a failed migration.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = if let Some(path) = url.strip_prefix("sqlite://") {
            Pool::Sqlite(open_sqlite(url, Path::new(path)).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pool::Postgres(open_postgres(url).await?)
        } else {
            return Err(StoreError::InvalidUrl {
                url: redact(url),
                reason: "expected sqlite://PATH, postgres://… or postgresql://…".into(),
            });
        };
        let store = Self { pool };
        let mut attempt = 0;
        loop {
            let migrated = with_pool!(store, |pool| MIGRATOR.run(pool).await);
            match migrated {
                Ok(()) => return Ok(store),
                // PostgreSQL migrations hold an advisory lock; SQLite's hold
                // none, so two processes opening a new file at once (the
                // gateway recording its start, a command) can both apply one.
                // Each migration is a transaction: the loser's rolled back,
                // and the next run finds it applied.
                Err(_) if matches!(store.pool, Pool::Sqlite(_)) && attempt < SQLITE_MIGRATE_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                Err(source) => return Err(StoreError::Migrate { url: redact(url), source }),
            }
        }
    }

    /// Which database this is: `sqlite` or `postgres` (for logs).
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Whether the database answers a trivial query now (the admin API's
    /// readiness).
    ///
    /// # Errors
    /// [`StoreError::Query`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.map(drop).map_err(StoreError::Query))
    }

    /// Closes every pooled connection (waits for those in use).
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await);
    }
}

async fn open_sqlite(url: &str, path: &Path) -> Result<SqlitePool, StoreError> {
    let invalid = |reason: &str| StoreError::InvalidUrl { url: redact(url), reason: reason.into() };
    if path.as_os_str().is_empty() {
        return Err(invalid("no file path after sqlite://"));
    }
    if url.contains('?') || path == Path::new(":memory:") {
        return Err(invalid("a SQLite store is a file path, without parameters"));
    }
    create_private_file(path).map_err(|source| StoreError::Create { path: path.to_path_buf(), source })?;
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable in WAL mode except for the last commits on power loss.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Connect { url: redact(url), reason: e.to_string() })
}

/// Creates `path` (and its directory) readable by the owner only, unless it
/// exists: SQLite would otherwise create it with the umask's mode.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

async fn open_postgres(url: &str) -> Result<PgPool, StoreError> {
    let password = password(url);
    let scrub = |message: String| match &password {
        Some(p) if !p.is_empty() => message.replace(p.as_str(), "***"),
        _ => message,
    };
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::InvalidUrl { url: redact(url), reason: scrub(e.to_string()) })?;
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Connect { url: redact(url), reason: scrub(e.to_string()) })
}

/// The authority part of a URL (`user:password@host:port`), if any.
fn authority(url: &str) -> Option<(usize, &str)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((start, &rest[..end]))
}

/// The URL's password, as written (percent-encoded or not).
pub(crate) fn password(url: &str) -> Option<String> {
    let (_, authority) = authority(url)?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, password)| password.to_owned())
}

/// Whole seconds since the epoch, as stored (times before it count as the epoch).
pub(crate) fn unix(at: SystemTime) -> i64 {
    i64::try_from(portcullis_policy::clock::unix_secs(at)).unwrap_or(i64::MAX)
}

/// A stored time back as a `SystemTime`.
pub(crate) fn from_unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]).map(char::from).collect()
}

/// The stored form of a random token or code: its SHA-256 in lowercase hex.
pub(crate) fn sha256_hex(secret: &str) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes()).as_ref())
}

/// `url` with its password, if any, replaced by `***`: safe for errors and logs.
#[must_use]
pub fn redact(url: &str) -> String {
    let Some((start, authority)) = authority(url) else { return url.to_owned() };
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    let Some((user, _)) = userinfo.split_once(':') else { return url.to_owned() };
    format!("{}{user}:***@{host}{}", &url[..start], &url[start + authority.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_only_the_password() {
        for (url, want) in [
            ("postgres://u:hunter2@db:5432/keys", "postgres://u:***@db:5432/keys"),
            ("postgresql://u:p%40ss@db/keys?sslmode=disable", "postgresql://u:***@db/keys?sslmode=disable"),
            ("postgres://u:a@b@db/keys", "postgres://u:***@db/keys"),
            ("postgres://u@db/keys", "postgres://u@db/keys"),
            ("postgres://db/keys", "postgres://db/keys"),
            ("sqlite:///var/lib/portcullis/portcullis.db", "sqlite:///var/lib/portcullis/portcullis.db"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact(url), want, "{url}");
        }
        assert_eq!(password("postgres://u:a@b@db/keys").as_deref(), Some("a@b"));
        assert_eq!(password("postgres://u@db/keys"), None);
    }

    #[tokio::test]
    async fn unsupported_and_malformed_urls_are_refused_without_the_password() {
        for url in ["mysql://u:hunter2@db/keys", "sqlite://", "sqlite://x.db?mode=ro", "sqlite://:memory:"] {
            let err = Store::open(url).await.expect_err(url).to_string();
            assert!(err.contains("invalid store URL"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err = Store::open("postgres://u:hunter2@127.0.0.1:notaport/keys").await.expect_err("bad port").to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
