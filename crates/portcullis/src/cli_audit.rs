//! `portcullis audit verify|list`: the audit trail in the configuration's
//! `[state] store` (`docs/audit.md`).
//!
//! `verify` walks the whole log with the configuration's audit key and names
//! every row that was edited, inserted or deleted; it prints the head (the
//! newest row's hash) on stdout so it can be recorded elsewhere, and with
//! `--head` checks that a head recorded earlier is still in the log (rows
//! cut off the end are found only that way). It never generates a key.
//!
//! Exit codes: 0 intact (or listed), 1 a problem found or the store or key
//! unusable, 2 bad usage or configuration.

use std::path::Path;
use std::process::ExitCode;

use crate::app::{EXIT_CONFIG, EXIT_RUNTIME};
use crate::cli_apikey::aligned;
use crate::config;
use crate::store::Store;
use crate::store::audit::{AuditKey, AuditLog, Filter, Page, Row};

/// Problems printed before the rest are only counted.
const SHOWN_PROBLEMS: usize = 100;

/// `audit verify`: 0 when the chain is intact, 1 naming the rows otherwise.
#[must_use]
pub fn verify(config: &Path, recorded_head: Option<&str>, json: bool) -> ExitCode {
    run(config, |config| async move {
        let key = crate::audit::existing_key(&config).map_err(|e| e.to_string())?;
        let store = Store::open(&config.state.store).await.map_err(|e| e.to_string())?;
        let verified = AuditLog::new(store.clone(), key).verify(recorded_head).await;
        store.close().await;
        let verification = verified.map_err(|e| e.to_string())?;
        if json {
            println!("{}", serde_json::to_string(&verification).unwrap_or_default());
        } else {
            match &verification.head {
                Some(head) => println!("head {} {}", head.seq, head.hash),
                None => println!("head 0 {}", crate::store::audit::GENESIS),
            }
            for problem in verification.problems.iter().take(SHOWN_PROBLEMS) {
                eprintln!("error: {problem}");
            }
            if verification.problems.len() > SHOWN_PROBLEMS {
                eprintln!("… and {} more problems", verification.problems.len() - SHOWN_PROBLEMS);
            }
        }
        if verification.intact() {
            eprintln!("audit trail intact: {} row(s), key {}", verification.rows, verification.key_id);
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!(
                "audit trail NOT intact: {} problem(s) in {} row(s), key {}",
                verification.problems.len(),
                verification.rows,
                verification.key_id
            );
            Ok(ExitCode::from(EXIT_RUNTIME))
        }
    })
}

/// `audit list`: rows newest first, as a table or JSON.
#[must_use]
pub fn list(config: &Path, filter: Filter, page: Page, json: bool) -> ExitCode {
    run(config, |config| async move {
        // Listing checks no hash: without a key file yet, any key will do.
        let key = match crate::audit::existing_key(&config) {
            Ok(key) => key,
            Err(_) => {
                let random = portcullis_policy::session::random_token(32).map_err(|e| e.to_string())?;
                AuditKey::new(random.as_bytes(), "a throwaway key").map_err(|e| e.to_string())?
            }
        };
        let store = Store::open(&config.state.store).await.map_err(|e| e.to_string())?;
        let listed = AuditLog::new(store.clone(), key).list(&filter, page).await;
        store.close().await;
        let listing = listed.map_err(|e| e.to_string())?;
        if json {
            println!("{}", serde_json::to_string(&listing.entries).unwrap_or_default());
        } else {
            print!("{}", table(&listing.entries));
            if let Some(before) = listing.next_before {
                eprintln!("more with --before {before}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn run<F, Fut>(path: &Path, op: F) -> ExitCode
where
    F: FnOnce(config::Config) -> Fut,
    Fut: Future<Output = Result<ExitCode, String>>,
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
    match runtime.block_on(op(config)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// An aligned text table with a header row.
fn table(rows: &[Row]) -> String {
    let header = ["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAIL"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.seq.to_string(),
                humantime::format_rfc3339_seconds(r.at).to_string(),
                r.actor.clone(),
                r.action.clone(),
                r.target.clone(),
                r.outcome.clone(),
                r.detail.to_string(),
            ]
        })
        .collect();
    aligned(&header, &cells)
}
