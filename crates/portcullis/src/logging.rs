//! Process logs through `tracing`: JSON or pretty, to stderr (stdout carries
//! security events by default), written by a background thread so a slow
//! terminal or disk never slows requests. The access log is the `access`
//! target and can be switched off in `[log]`.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

/// Installs the global subscriber. Keep the guard alive until exit so buffered
/// lines are flushed.
///
/// # Errors
/// An invalid filter (already checked by the configuration build, but
/// `RUST_LOG` is not), or a subscriber already installed.
pub fn init(config: &Log) -> Result<WorkerGuard, InitError> {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(64 * 1024)
        .finish(std::io::stderr());
    let mut directives = std::env::var("RUST_LOG").unwrap_or_else(|_| config.level.clone());
    if !config.access {
        directives.push_str(",access=off");
    }
    // The WAF engine warns per request about rule features it ignores; the
    // gateway checks those once, at load (waf::zentinel), so only its errors
    // are worth a line.
    if !directives.contains("zentinel_modsec") {
        directives.push_str(",zentinel_modsec=error");
    }
    // webauthn-rs logs whole passkey ceremonies (challenges, credentials)
    // at debug and trace: never below info, whatever the level asked for.
    directives.push_str(",webauthn_rs=info,webauthn_rs_core=info");
    let filter = EnvFilter::builder().parse(&directives)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let result = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    result.map_err(InitError::Installed)?;
    Ok(guard)
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The level or `RUST_LOG` is not a valid filter.
    #[error("invalid log filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber was installed already.
    #[error("cannot install the log subscriber: {0}")]
    Installed(Box<dyn std::error::Error + Send + Sync>),
}
