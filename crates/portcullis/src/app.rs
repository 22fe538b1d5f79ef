//! The `run` and `check` commands.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::config;
use crate::events::JsonLines;
use crate::server::Server;

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
    let config = match config::load(path) {
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
    runtime.block_on(serve(path, config))
}

async fn serve(path: &Path, config: config::Config) -> ExitCode {
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
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                // Certificates reload even when the new file has errors.
                server.reload_certificates();
                match config::load(path) {
                    Ok(new) => match server.reload(new).await {
                        Ok(reloaded) if reloaded.not_applied.is_empty() => {
                            tracing::info!(config = %path.display(), "configuration reloaded");
                        }
                        Ok(reloaded) => tracing::warn!(
                            config = %path.display(),
                            not_applied = %reloaded.not_applied.join(", "),
                            "configuration reloaded, except settings read only at start: restart Portcullis to apply them"
                        ),
                        Err(e) => tracing::error!(error = %e, "reload refused; the previous configuration keeps serving"),
                    },
                    Err(errors) => {
                        server.reload_refused();
                        tracing::error!(errors = %errors, "reload refused; the previous configuration keeps serving");
                    }
                }
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
