//! Recording administrators' actions in the audit trail ([`crate::store::audit`]):
//! who records what, with which key, and what happens when the store fails.
//!
//! Defends against an action on the gateway's controls leaving no trace,
//! and against a missing trace going unnoticed.
//!
//! Decision rules:
//! - Each action is recorded once, by whoever carries it out: a CLI command
//!   working on the store or Redis records itself (actor `cli:<os user>`); a
//!   command that goes through the admin API (`ban add` with
//!   `shared = "memory"`) is recorded by the API (actor `admin-api:<peer>`);
//!   configuration reloads and the start are the `gateway`'s.
//! - Recording never changes what the action does: the action is done (or
//!   refused) first, then recorded. A row that cannot be written (store
//!   unreachable, key unreadable) is an error log and an `audit.failed` event
//!   naming the action, never silence; a row written is an `audit.appended`
//!   event carrying its hash, so the event sinks hold an anchor of the chain.
//! - In the gateway, rows are appended in order by one task fed through a
//!   bounded queue: an admin request never waits for the store.
//! - The key is `[state] audit_key`, else `audit.key` in `[server] data_dir`
//!   (generated, mode 0600, on first use).
//!
//! Deployment caveat: every process appending to one store must use the same
//! key (one `audit_key` for a PostgreSQL store shared by several instances,
//! or the same key file); rows made with another key fail `audit verify`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis_layers::EventSink;
use portcullis_policy::Attribution;
use portcullis_policy::SecurityEvent;
use portcullis_policy::event::RequestSummary;
use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::config::Config;
use crate::config::secret::Secret;
use crate::store::Store;
use crate::store::audit::{AuditError, AuditKey, AuditLog, Entry, KEY_FILE, Row};

/// Entries waiting for the gateway's appender; beyond this an entry is
/// reported as not recorded rather than making its caller wait.
const QUEUE: usize = 1024;

/// The audit key of `config`: `[state] audit_key`, else the key file in
/// `[server] data_dir` (generated when absent).
///
/// # Errors
/// [`AuditError::Key`] when the key file cannot be read or written.
pub fn key(config: &Config) -> Result<AuditKey, AuditError> {
    key_from(config.state.audit_key.as_ref(), &config.server.data_dir, true)
}

/// The audit key of `config`, without generating a key file: for checking
/// the log.
///
/// # Errors
/// [`AuditError::Key`] when the key file does not exist or cannot be read.
pub fn existing_key(config: &Config) -> Result<AuditKey, AuditError> {
    key_from(config.state.audit_key.as_ref(), &config.server.data_dir, false)
}

fn key_from(secret: Option<&Secret>, data_dir: &std::path::Path, generate: bool) -> Result<AuditKey, AuditError> {
    match secret {
        Some(secret) => AuditKey::new(secret.expose().as_bytes(), "[state] audit_key"),
        None if generate => AuditKey::from_file_or_generate(&data_dir.join(KEY_FILE)),
        None => AuditKey::from_file(&data_dir.join(KEY_FILE)),
    }
}

/// `cli:<the operating system user running the command>`.
#[must_use]
pub fn cli_actor() -> String {
    format!("cli:{}", whoami::fallible::username().unwrap_or_else(|_| "unknown".to_owned()))
}

/// `admin-api:<peer address>` (an IPv4-mapped IPv6 peer as IPv4).
#[must_use]
pub fn admin_actor(peer: Option<IpAddr>) -> String {
    peer.map_or_else(
        || "admin-api:unknown".to_owned(),
        |ip| format!("admin-api:{}", portcullis_policy::forwarded::canonical(ip)),
    )
}

/// The lowercase hex SHA-256 of `bytes` (a configuration file's).
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::store::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

fn appended_detail(row: &Row) -> String {
    format!("row {} {} by {} on {} ({}); hash {}", row.seq, row.action, row.actor, row.target, row.outcome, row.hash)
}

fn failed_detail(entry: &Entry, error: &dyn std::fmt::Display) -> String {
    format!(
        "{} by {} on {} ({}) not recorded: {error}",
        entry.action,
        entry.actor,
        entry.target,
        entry.outcome.as_str()
    )
}

/// Records a CLI command's action, on `store` when the command has it open
/// (else the configuration's store is opened for it). Prints and emits (to
/// the configuration's `[events]` sinks) the failure when it cannot.
pub async fn record_cli(config: &Config, store: Option<&Store>, entry: Entry) {
    let appended = async {
        let key = key(config)?;
        match store {
            Some(store) => AuditLog::new(store.clone(), key).append(&entry, SystemTime::now()).await,
            None => {
                let store = Store::open(&config.state.store).await?;
                let row = AuditLog::new(store.clone(), key).append(&entry, SystemTime::now()).await;
                store.close().await;
                row
            }
        }
    }
    .await;
    let id = uuid::Uuid::new_v4().to_string();
    let now = SystemTime::now();
    let event = match &appended {
        Ok(row) => SecurityEvent::command(&id, &entry.action, "audit", "audit.appended", appended_detail(row), now),
        Err(e) => {
            eprintln!("error: the action is done, but its audit row could not be written: {e}");
            let mut event =
                SecurityEvent::command(&id, &entry.action, "audit", "audit.failed", failed_detail(&entry, e), now);
            event.attribution = Attribution::Gateway;
            event
        }
    };
    if let Err(e) = crate::events::write_now(&config.events, &event) {
        eprintln!("error: the audit event could not be written: {e}");
    }
}

enum Job {
    Append(Entry, SystemTime),
    Flush(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Shared {
    url: String,
    key: Option<Secret>,
    data_dir: std::path::PathBuf,
    log: OnceCell<AuditLog>,
    events: Arc<dyn EventSink>,
}

impl Shared {
    async fn log(&self) -> Result<&AuditLog, AuditError> {
        self.log
            .get_or_try_init(|| async {
                let key = key_from(self.key.as_ref(), &self.data_dir, true)?;
                Ok::<_, AuditError>(AuditLog::new(Store::open(&self.url).await?, key))
            })
            .await
    }

    fn emit(&self, reason: &'static str, detail: String) {
        let request_id = uuid::Uuid::new_v4().to_string();
        let summary = RequestSummary {
            request_id: &request_id,
            client_ip: IpAddr::from([0, 0, 0, 0]),
            listener: "audit",
            method: "-",
            path: "-",
            route: None,
        };
        let mut event = SecurityEvent::logged(&summary, "audit", reason, 0, detail, SystemTime::now());
        if reason == "audit.failed" {
            event.attribution = Attribution::Gateway;
        }
        self.events.emit(event);
    }

    fn failed(&self, entry: &Entry, error: &dyn std::fmt::Display) {
        tracing::error!(
            action = %entry.action,
            actor = %entry.actor,
            target = %entry.target,
            error = %error,
            "audit row not written"
        );
        self.emit("audit.failed", failed_detail(entry, error));
    }
}

/// The gateway's audit recorder: a cheap-to-clone handle whose entries one
/// task appends in order. The store is opened on the first entry (or
/// listing), so a gateway that records nothing never touches it.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Append(entry, _) => write!(f, "Append({})", entry.action),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Recorder {
    /// Starts the appender on the current runtime, for `config`'s store and
    /// key; events go to `events`.
    #[must_use]
    pub fn start(config: &Config, events: Arc<dyn EventSink>) -> Self {
        let shared = Arc::new(Shared {
            url: config.state.store.clone(),
            key: config.state.audit_key.clone(),
            data_dir: config.server.data_dir.clone(),
            log: OnceCell::new(),
            events,
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(append_loop(shared.clone(), rx));
        Self { tx, shared }
    }

    /// Queues `entry` (time: now). Never waits; a full queue or a stopped
    /// appender is reported as a row not written.
    pub fn record(&self, entry: Entry) {
        if let Err(e) = self.tx.try_send(Job::Append(entry, SystemTime::now())) {
            let (mpsc::error::TrySendError::Full(Job::Append(entry, _))
            | mpsc::error::TrySendError::Closed(Job::Append(entry, _))) = e
            else {
                return;
            };
            self.shared.failed(&entry, &"the audit queue is full or stopped");
        }
    }

    /// Waits up to `timeout` for every entry queued so far to be written
    /// (or reported as not written). Returns whether they all were handled.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (done, finished) = oneshot::channel();
        if self.tx.send_timeout(Job::Flush(done), timeout).await.is_err() {
            return false;
        }
        tokio::time::timeout(timeout, finished).await.is_ok_and(|r| r.is_ok())
    }

    /// The log, for listing and verifying (opened on first use).
    ///
    /// # Errors
    /// The store cannot be opened or the key read.
    pub async fn log(&self) -> Result<&AuditLog, AuditError> {
        self.shared.log().await
    }
}

async fn append_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        match job {
            Job::Append(entry, at) => {
                let appended = match shared.log().await {
                    Ok(log) => log.append(&entry, at).await,
                    Err(e) => Err(e),
                };
                match appended {
                    Ok(row) => shared.emit("audit.appended", appended_detail(&row)),
                    Err(e) => shared.failed(&entry, &e),
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}
