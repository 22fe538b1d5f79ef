//! `portcullis apikey create|list|revoke`: key management against the store
//! named by the configuration's `[state] store`.
//!
//! `create` prints the key on stdout and nothing else there, so it can be
//! piped into a secret manager; everything for the operator goes to stderr.
//! Exit codes: 0 done, 1 failed (store, unknown id, invalid input), 2 bad
//! usage or configuration (as for `run` and `check`).

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use crate::app::{EXIT_CONFIG, EXIT_RUNTIME};
use crate::config;
use crate::store::{ApiKeyInfo, Revoked, Store};

/// `apikey create`: creates a key and prints it once.
#[must_use]
pub fn create(config: &Path, name: &str, roles: &[String], expires_in: Option<Duration>) -> ExitCode {
    with_store(config, |store, config| async move {
        if config.auth.api_keys.is_none() {
            eprintln!("note: [auth.api_key] is not configured: the gateway accepts no API key until it is");
        }
        let expires_at = expires_in.map(|d| SystemTime::now() + d);
        let (info, key) = store.create_api_key(name, roles, expires_at).await.map_err(|e| e.to_string())?;
        println!("{}", key.expose());
        let time = |at: Option<SystemTime>| at.map(|at| humantime::format_rfc3339_seconds(at).to_string());
        let detail = serde_json::json!({
            "name": info.name,
            "roles": info.roles,
            "expires_at": time(info.expires_at),
        });
        audit(&store, &config, "apikey.create", &info.id, detail).await;
        eprintln!(
            "created API key {} ({:?}, roles: {}, expires: {}); copy it now: it will not be shown again",
            info.id,
            info.name,
            roles_text(&info.roles),
            time_text(info.expires_at, "never"),
        );
        Ok(())
    })
}

/// `apikey list`: every key as a table (or JSON), never a secret.
#[must_use]
pub fn list(config: &Path, json: bool) -> ExitCode {
    with_store(config, |store, _| async move {
        let keys = store.list_api_keys().await.map_err(|e| e.to_string())?;
        if json {
            let values: Vec<serde_json::Value> = keys.iter().map(json_value).collect();
            println!("{}", serde_json::Value::Array(values));
        } else {
            print!("{}", table(&keys));
        }
        Ok(())
    })
}

/// `apikey revoke`: revokes a key by id; revoking twice is not an error.
#[must_use]
pub fn revoke(config: &Path, id: &str) -> ExitCode {
    with_store(config, |store, config| async move {
        match store.revoke_api_key(id).await.map_err(|e| e.to_string())? {
            Revoked::Now => {
                audit(&store, &config, "apikey.revoke", id, serde_json::json!({})).await;
                eprintln!("revoked API key {id}");
            }
            Revoked::Already(at) => eprintln!("API key {id} was already revoked at {}", time_text(Some(at), "")),
        }
        if let Some(api_keys) = &config.auth.api_keys {
            eprintln!(
                "running gateways may accept it for up to {} more (cache_ttl)",
                humantime::format_duration(api_keys.cache_ttl)
            );
        }
        Ok(())
    })
}

/// Loads the configuration, opens its store on a small runtime and runs `op`
/// (the `user` and `invite` commands use it too; hashing runs on the
/// runtime's blocking threads).
pub(crate) fn with_store<F, Fut>(path: &Path, op: F) -> ExitCode
where
    F: FnOnce(Store, config::Config) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let outcome = runtime.block_on(async {
        let store = Store::open(&config.state.store).await.map_err(|e| e.to_string())?;
        let result = op(store.clone(), config).await;
        store.close().await;
        result
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Records a command's action in the audit trail (`cli:<os user>`, outcome
/// `ok`); a failure to record is printed and emitted, never fatal.
pub(crate) async fn audit(
    store: &Store,
    config: &config::Config,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) {
    let entry = crate::store::audit::Entry::new(crate::audit::cli_actor(), action, target, detail);
    crate::audit::record_cli(config, Some(store), entry).await;
}

pub(crate) fn time_text(at: Option<SystemTime>, none: &str) -> String {
    at.map_or_else(|| none.to_owned(), |at| humantime::format_rfc3339_seconds(at).to_string())
}

pub(crate) fn roles_text(roles: &[String]) -> String {
    if roles.is_empty() { "-".to_owned() } else { roles.join(",") }
}

pub(crate) fn json_value(key: &ApiKeyInfo) -> serde_json::Value {
    let time = |at: Option<SystemTime>| at.map(|at| humantime::format_rfc3339_seconds(at).to_string());
    serde_json::json!({
        "id": key.id,
        "name": key.name,
        "roles": key.roles,
        "created_at": time(Some(key.created_at)),
        "expires_at": time(key.expires_at),
        "revoked_at": time(key.revoked_at),
        "last_used_at": time(key.last_used_at),
    })
}

/// An aligned text table with a header row.
fn table(keys: &[ApiKeyInfo]) -> String {
    let header = ["ID", "NAME", "ROLES", "CREATED", "EXPIRES", "REVOKED", "LAST USED"];
    let rows: Vec<[String; 7]> = keys
        .iter()
        .map(|k| {
            [
                k.id.clone(),
                k.name.clone(),
                roles_text(&k.roles),
                time_text(Some(k.created_at), "-"),
                time_text(k.expires_at, "never"),
                time_text(k.revoked_at, "-"),
                time_text(k.last_used_at, "-"),
            ]
        })
        .collect();
    aligned(&header, &rows)
}

/// `rows` under `header`, each column as wide as its widest cell, two spaces
/// apart, trailing spaces trimmed.
pub(crate) fn aligned<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
