//! `[state]` and `[auth.api_key]`: where durable and shared state lives, and
//! how API keys are accepted.
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
//!   its password. `rediss://` (TLS) is not supported yet and is refused.
//! - The key header must be a valid header name that is not hop-by-hop
//!   (proxies would drop it), not `Authorization` (already read for
//!   `Bearer` keys), not `Cookie`/`Host`/`Proxy-Authorization`, and not an
//!   `X-Portcullis-*` header (stripped at ingress).
//! - `cache_ttl` bounds how long a revoked key keeps working on a running
//!   gateway, so it is capped at [`MAX_CACHE_TTL`].

use std::path::Path;
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::error::Collector;
use super::raw::RawConfig;
use super::secret::{Secret, SecretSource, resolve};

/// The default `cache_ttl`.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);
/// The largest `cache_ttl`: revocation must take effect within minutes.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(600);

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The durable store's URL (`sqlite://…` or `postgres://…`): API keys,
    /// accounts, the audit log. A SQLite path here is already resolved.
    pub store: String,
    /// Where state shared by instances lives.
    pub shared: Shared,
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

/// `[auth.api_key]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeys {
    /// A dedicated header carrying keys, besides `Authorization: Bearer`.
    pub header: Option<HeaderName>,
    /// How long a verified key is trusted without asking the store again.
    pub cache_ttl: Duration,
}

const STORE_EXPECTED: &str = "\"sqlite://portcullis.db\" (in data_dir), \"sqlite:///var/lib/portcullis/keys.db\" \
                              or \"postgres://portcullis@db.internal:5432/portcullis\"";

pub(super) fn build_state(
    c: &mut Collector<'_>,
    raw: &RawConfig,
    data_dir: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> State {
    let shared = raw.state.shared.as_ref().map_or(Shared::Memory, |value| build_shared(c, value, base, env));
    let store = build_store(c, raw, data_dir);
    State { store, shared }
}

const SHARED_EXPECTED: &str = "\"memory\", \"redis://redis.internal:6379/0\" or \"${REDIS_URL}\"";

fn build_shared(
    c: &mut Collector<'_>,
    value: &Spanned<String>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Shared {
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

pub(super) fn build_api_keys(c: &mut Collector<'_>, raw: &RawConfig) -> Option<ApiKeys> {
    let api_key = raw.auth.api_key.as_ref()?.get_ref();
    let header = api_key.header.as_ref().and_then(|h| key_header(c, h));
    let cache_ttl = api_key.cache_ttl.as_ref().map_or(DEFAULT_CACHE_TTL, |ttl| cache_ttl(c, ttl));
    Some(ApiKeys { header, cache_ttl })
}

fn key_header(c: &mut Collector<'_>, value: &Spanned<String>) -> Option<HeaderName> {
    let expected = "a header name such as \"x-api-key\"";
    let Ok(name) = HeaderName::from_bytes(value.get_ref().trim().as_bytes()) else {
        c.error(value.span(), format!("invalid header name {:?}", value.get_ref())).expected(expected);
        return None;
    };
    const REFUSED: [&str; 13] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];
    let refused = REFUSED.contains(&name.as_str()) || name.as_str().starts_with("x-portcullis-");
    if refused {
        c.error(value.span(), format!("header {:?} cannot carry API keys", name.as_str())).expected(expected).help(
            "Authorization: Bearer is always accepted; pick a dedicated end-to-end header, not a hop-by-hop, \
                 cookie, host or X-Portcullis-* one",
        );
        return None;
    }
    Some(name)
}

fn cache_ttl(c: &mut Collector<'_>, value: &Spanned<String>) -> Duration {
    match humantime::parse_duration(value.get_ref()) {
        Ok(ttl) if ttl <= MAX_CACHE_TTL => ttl,
        Ok(_) => {
            c.error(value.span(), format!("cache_ttl {:?} is too long", value.get_ref()))
                .expected("at most \"10m\"")
                .help("a revoked key keeps working for up to cache_ttl; \"0s\" asks the store on every request");
            DEFAULT_CACHE_TTL
        }
        Err(e) => {
            c.error(value.span(), format!("invalid cache_ttl {:?}: {e}", value.get_ref()))
                .expected("a duration such as \"10s\", \"1m\", or \"0s\" for no cache");
            DEFAULT_CACHE_TTL
        }
    }
}

/// `[admin]`: the admin API (metrics, bans) on its own listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Where it listens (loopback unless deliberately exposed).
    pub bind: std::net::SocketAddr,
    /// The bearer token every request must carry.
    pub token: Secret,
}

/// Shortest admin token accepted: 128 bits as hex.
pub const MIN_ADMIN_TOKEN: usize = 32;

pub(super) fn build_admin(
    c: &mut Collector<'_>,
    raw: &super::raw::RawConfig,
    base: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Option<Admin> {
    let admin = raw.admin.as_ref()?.get_ref();
    let bind = match admin.bind.get_ref().parse() {
        Ok(addr) => addr,
        Err(_) => {
            c.error(admin.bind.span(), format!("invalid admin bind address {:?}", admin.bind.get_ref()))
                .expected("an address and port such as \"127.0.0.1:9901\"");
            return None;
        }
    };
    let token = match resolve(admin.token.get_ref(), base, env) {
        Ok(token) => token,
        Err(e) => {
            c.error(admin.token.span(), format!("admin token: {e}"))
                .help("use token = \"${PORTCULLIS_ADMIN_TOKEN}\" or token = \"file:/run/secrets/admin-token\"");
            return None;
        }
    };
    if token.expose().len() < MIN_ADMIN_TOKEN {
        c.error(admin.token.span(), format!("the admin token is shorter than {MIN_ADMIN_TOKEN} characters"))
            .help("generate one with: openssl rand -hex 32");
        return None;
    }
    Some(Admin { bind, token })
}
