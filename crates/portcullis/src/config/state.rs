//! `[state]`: where durable and shared state lives.
//!
//! Decision rules:
//! - `store` is `sqlite://PATH` or `postgres://…`/`postgresql://…`; nothing
//!   else. A relative SQLite path is inside `[server] data_dir` (itself
//!   relative to the configuration file), so `sqlite://keys.db` and the
//!   default `portcullis.db` sit next to the generated TLS files.
//! - `shared` is `memory` (the default: one instance) or `redis://host[:port][/db]`
//!   (every instance shares rate limits and session revocations). It may be
//!   given as `${ENV_VAR}` or `file:/path`; a URL written in the file must not
//!   carry a password (use the secret forms), and no form is ever printed with
//!   its password. `rediss://` (TLS) is refused: the Redis client is built without TLS.
//! - `audit_key` (the audit trail's HMAC key, see `store::audit`) is
//!   `${ENV_VAR}` or `file:/path`, at least 32 bytes; never written in the
//!   file, which travels to backups and diffs where the key must not. Without
//!   it, the key is `audit.key` in `[server] data_dir`, generated on first use.

use std::path::Path;

use toml::Spanned;

use super::error::Collector;
use super::raw::RawConfig;
use super::secret::{Secret, SecretSource, resolve};
use super::sources::Sources;

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The durable store's URL (`sqlite://…` or `postgres://…`): API keys,
    /// accounts, the audit log. A SQLite path here is already resolved.
    pub store: String,
    /// Where state shared by instances lives.
    pub shared: Shared,
    /// `[state] audit_key`: the audit trail's HMAC key; `None` means the
    /// key file generated in `[server] data_dir` (`audit.key`).
    pub audit_key: Option<Secret>,
}

/// `[state] shared`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Shared {
    /// This process's memory: limits and revocations are per instance.
    #[default]
    Memory,
    /// A Redis server (`redis://…`, possibly with a password, so a secret).
    Redis(Secret),
}

const STORE_EXPECTED: &str = "\"sqlite://portcullis.db\" (in data_dir), \"sqlite:///var/lib/portcullis/keys.db\" \
                              or \"postgres://portcullis@db.internal:5432/portcullis\"";

pub(super) fn build_state(
    c: &mut Collector<'_>,
    raw: &RawConfig,
    data_dir: &Path,
    base: &Path,
    env: &Sources<'_>,
) -> State {
    let shared = raw.state.shared.as_ref().map_or(Shared::Memory, |value| build_shared(c, value, base, env));
    let store = build_store(c, raw, data_dir);
    let audit_key = raw.state.audit_key.as_ref().and_then(|value| build_audit_key(c, value, base, env));
    State { store, shared, audit_key }
}

const AUDIT_KEY_EXPECTED: &str = "\"${PORTCULLIS_AUDIT_KEY}\" or \"file:/run/secrets/audit-key\"";

fn build_audit_key(c: &mut Collector<'_>, value: &Spanned<String>, base: &Path, env: &Sources<'_>) -> Option<Secret> {
    match resolve(value.get_ref().trim(), base, env) {
        Ok(secret) if secret.expose().len() < crate::store::audit::MIN_KEY_LEN => {
            c.error(value.span(), format!("audit key: shorter than {} bytes", crate::store::audit::MIN_KEY_LEN))
                .expected(AUDIT_KEY_EXPECTED)
                .help("generate one with: openssl rand -base64 48");
            None
        }
        Ok(secret) if *secret.source() == SecretSource::Literal => {
            // Written in the file, it travels with every copy of the configuration.
            c.error(value.span(), "audit key written in the configuration file")
                .expected(AUDIT_KEY_EXPECTED)
                .help("put the key in an environment variable or a file readable by the gateway only");
            None
        }
        Ok(secret) => Some(secret),
        Err(e) => {
            c.error(value.span(), format!("audit key: {e}"))
                .expected(AUDIT_KEY_EXPECTED)
                .help("set the variable or create the file; the key itself is never printed");
            None
        }
    }
}

const SHARED_EXPECTED: &str = "\"memory\", \"redis://redis.internal:6379/0\" or \"${REDIS_URL}\"";

fn build_shared(c: &mut Collector<'_>, value: &Spanned<String>, base: &Path, env: &Sources<'_>) -> Shared {
    if value.get_ref().trim() == "memory" {
        return Shared::Memory;
    }
    let secret = match resolve(value.get_ref().trim(), base, env) {
        Ok(secret) => secret,
        Err(e) => {
            c.error(value.span(), format!("shared state: {e}"))
                .expected(SHARED_EXPECTED)
                .help("set the variable or create the file; the URL itself is never printed");
            return Shared::Memory;
        }
    };
    let url = secret.expose().trim();
    // A URL from the environment or a file is named by its reference: its
    // contents might be anything, a bare password included.
    let shown = match secret.source() {
        SecretSource::Literal => crate::store::redact(url),
        SecretSource::Env(name) => format!("${{{name}}}"),
        SecretSource::File(path) => format!("file:{path}"),
    };
    if url.starts_with("rediss://") {
        c.error(value.span(), format!("shared state {shown:?}: Redis over TLS is not supported yet"))
            .expected(SHARED_EXPECTED)
            .help("reach Redis over a private network or a local TLS tunnel with redis://");
        return Shared::Memory;
    }
    if !url.starts_with("redis://") || ::redis::Client::open(url).is_err() {
        c.error(value.span(), format!("invalid shared state {shown:?}"))
            .expected(SHARED_EXPECTED)
            .help("\"memory\" keeps limits and revocations per instance; a redis:// URL shares them");
        return Shared::Memory;
    }
    if *secret.source() == SecretSource::Literal && crate::store::password(url).is_some() {
        // A password written in the configuration file ends up in backups and diffs.
        c.error(value.span(), format!("shared state {shown:?} has a password written in the file"))
            .expected(SHARED_EXPECTED)
            .help("put the whole URL in an environment variable or a file: shared = \"${REDIS_URL}\"");
        return Shared::Memory;
    }
    Shared::Redis(secret)
}

fn build_store(c: &mut Collector<'_>, raw: &RawConfig, data_dir: &Path) -> String {
    let default = || format!("sqlite://{}", data_dir.join("portcullis.db").display());
    let Some(value) = raw.state.store.as_ref() else { return default() };
    let url = value.get_ref().trim();
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() || path.contains('?') || path == ":memory:" {
            c.error(value.span(), format!("invalid SQLite store {:?}: it must name a file", value.get_ref()))
                .expected(STORE_EXPECTED)
                .help("a SQLite store is a file path without parameters; an in-memory store would lose every key");
            default()
        } else {
            format!("sqlite://{}", data_dir.join(path).display())
        }
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        url.to_owned()
    } else {
        c.error(value.span(), format!("unsupported store {:?}", crate::store::redact(url)))
            .expected(STORE_EXPECTED)
            .help("use sqlite:// for one gateway instance, postgres:// when several share keys");
        default()
    }
}
