//! The `run` and `check` commands.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::config;
use crate::events::JsonLines;
use crate::server::Server;
use crate::store::audit::{Entry, Outcome};

/// Exit code for bad usage or bad configuration.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for a runtime failure.
pub const EXIT_RUNTIME: u8 = 1;

/// `portcullis check`: validates the configuration and prints a summary.
#[must_use]
pub fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            // Certificates and keys must load too, or `run` would fail later.
            let mut unusable = false;
            for listener in &config.listeners {
                let Some(tls) = &listener.tls else { continue };
                if tls.source == crate::config::CertSource::SelfSigned && tls.sni.is_empty() {
                    continue; // generated at start
                }
                let loaded = crate::tls::CertStore::load_with_sni(&tls.source, &tls.sni, &config.server.data_dir)
                    .and_then(|store| crate::tls::server_config(tls, store, config.server.h2c));
                if let Err(e) = loaded {
                    eprintln!("error: listener {:?}: {e}", listener.name);
                    unusable = true;
                }
            }
            // WAF rule sets must load and pass their canary too.
            if let Some(waf) = &config.waf
                && config.routes.iter().any(|r| r.waf.is_some())
            {
                for profile in &waf.profiles {
                    if let Err(e) = portcullis_policy::waf::load(waf.engine, &waf.rules, profile) {
                        eprintln!("error: waf: {e}");
                        unusable = true;
                    }
                }
            }
            if unusable {
                return ExitCode::from(EXIT_CONFIG);
            }
            let findings = crate::check::findings(&config);
            for finding in &findings {
                println!("{finding}");
            }
            println!(
                "{}: ok ({} listener(s), {} upstream(s), {} route(s), {} finding(s))",
                path.display(),
                config.listeners.len(),
                config.upstreams.len(),
                config.routes.len(),
                findings.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// `portcullis run`: serves until SIGTERM or SIGINT; reloads on SIGHUP.
#[must_use]
pub fn run(path: &Path) -> ExitCode {
    let (loaded, hash) = load_hashed(path);
    let config = match loaded {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _log_guard = match crate::logging::init(&config.log) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: cannot start logging: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(serve(path, config, hash))
}

/// The configuration at `path`, and the SHA-256 of the bytes it was built
/// from (for the audit trail), if the file could be read.
fn load_hashed(path: &Path) -> (Result<config::Config, config::ConfigErrors>, Option<String>) {
    let Ok(bytes) = std::fs::read(path) else { return (config::load(path), None) };
    let hash = crate::audit::sha256_hex(&bytes);
    let loaded = match String::from_utf8(bytes) {
        Ok(source) => config::parse(path, &source, |name| std::env::var(name).ok()),
        // Reported as `load` reports it.
        Err(_) => config::load(path),
    };
    (loaded, Some(hash))
}

async fn serve(path: &Path, config: config::Config, hash: Option<String>) -> ExitCode {
    let events = match JsonLines::start(&config.events) {
        Ok(events) => events,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the security event sinks");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let (mut hangup, mut terminate, mut interrupt) =
        match (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(h), Ok(t), Ok(i)) => (h, t, i),
            _ => {
                tracing::error!("cannot install signal handlers");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
    let server = match Server::start(config, events.clone() as Arc<dyn portcullis_layers::EventSink>).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    for finding in crate::check::findings(&server.config()) {
        tracing::warn!(code = finding.code, help = %finding.help, "{}", finding.message);
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %path.display(), "portcullis started");
    let detail = serde_json::json!({ "config_sha256": hash, "version": env!("CARGO_PKG_VERSION") });
    server.audit().record(Entry::new("gateway", "gateway.start", path.display().to_string(), detail));
    let mut admin_reloads = server.reload_requests();
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                // Certificates reload even when the new file has errors.
                server.reload_certificates();
                let _ = reload_from(&server, path, "signal:SIGHUP").await;
            }
            Some(request) = next_request(&mut admin_reloads) => {
                server.reload_certificates();
                let outcome = reload_from(&server, path, &request.actor).await;
                let _ = request.reply.send(outcome);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    let drained = server.shutdown().await;
    if events.dropped() > 0 {
        tracing::warn!(dropped = events.dropped(), "security events were dropped under load");
    }
    if drained { ExitCode::SUCCESS } else { ExitCode::from(EXIT_RUNTIME) }
}

/// The next reload asked for through the admin API (never, without one).
async fn next_request(
    requests: &mut Option<tokio::sync::mpsc::Receiver<crate::admin::ReloadRequest>>,
) -> Option<crate::admin::ReloadRequest> {
    match requests {
        Some(requests) => requests.recv().await,
        None => std::future::pending().await,
    }
}

/// Reloads the configuration from `path` (SIGHUP, or the admin API's
/// `POST /reload` named by `actor`), and records the attempt in the audit
/// trail with the file's SHA-256. Returns the settings read only at start
/// that changed, or why the reload was refused (the previous configuration
/// keeps serving).
async fn reload_from(server: &Server, path: &Path, actor: &str) -> Result<Vec<String>, String> {
    let (loaded, hash) = load_hashed(path);
    let (outcome, detail, result) = match loaded {
        Ok(new) => match server.reload(new).await {
            Ok(reloaded) if reloaded.not_applied.is_empty() => {
                tracing::info!(%actor, config = %path.display(), "configuration reloaded");
                (Outcome::Ok, serde_json::json!({ "config_sha256": hash }), Ok(Vec::new()))
            }
            Ok(reloaded) => {
                tracing::warn!(
                    %actor,
                    config = %path.display(),
                    not_applied = %reloaded.not_applied.join(", "),
                    "configuration reloaded, except settings read only at start: restart Portcullis to apply them"
                );
                let detail = serde_json::json!({ "config_sha256": hash, "not_applied": reloaded.not_applied });
                (Outcome::Ok, detail, Ok(reloaded.not_applied.iter().map(ToString::to_string).collect()))
            }
            Err(e) => {
                tracing::error!(%actor, error = %e, "reload refused; the previous configuration keeps serving");
                (Outcome::Refused, serde_json::json!({ "config_sha256": hash }), Err(e.to_string()))
            }
        },
        Err(errors) => {
            server.reload_refused();
            tracing::error!(%actor, errors = %errors, "reload refused; the previous configuration keeps serving");
            let detail = serde_json::json!({ "config_sha256": hash, "errors": errors.0.len() });
            (Outcome::Refused, detail, Err(errors.to_string()))
        }
    };
    let detail = match detail {
        serde_json::Value::Object(mut fields) => {
            fields.insert("requested_by".into(), actor.into());
            serde_json::Value::Object(fields)
        }
        other => other,
    };
    let entry = Entry::new("gateway", "config.reload", path.display().to_string(), detail);
    server.audit().record(entry.with_outcome(outcome));
    result
}
