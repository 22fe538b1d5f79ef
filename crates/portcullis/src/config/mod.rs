//! Configuration: the TOML file parsed once into typed, validated structs.
//!
//! Parse, don't validate: [`raw`] mirrors the file and refuses unknown keys;
//! [`load`] builds a [`Config`] from it, collecting every error with its
//! file, line, column, expectation and fix. Nothing else in the gateway reads
//! the raw structs. Defaults are secure, and `docs/defaults.md` says why each
//! one is what it is.

pub mod accounts;
pub mod admin;
pub mod alerts;
pub mod api_keys;
pub mod auth;
mod authz;
mod bans;
mod build;
pub mod csrf;
pub mod error;
pub mod events;
mod limits;
pub mod login;
pub mod oidc;
pub mod openapi;
pub mod raw;
pub mod secret;
pub mod sources;
pub mod state;
mod values;
pub mod waf;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use http::uri::{Authority, Scheme};
use portcullis_layers::RouteInfo;
use portcullis_layers::pace::Pace;
use portcullis_policy::forwarded::TrustedProxies;
use portcullis_policy::headers::HeaderPolicy;
use portcullis_policy::limits::RequestLimits;
use portcullis_policy::route::{HostPattern, PathPattern};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use error::{ConfigError, ConfigErrors};
pub use events::{Events, FileSink, Schema, Sink, SyslogSink, SyslogTransport, WebhookSink};

/// A compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Connection handling.
    pub server: Server,
    /// Listeners, in file order.
    pub listeners: Vec<Listener>,
    /// Upstreams, in file order; routes refer to them by index.
    pub upstreams: Vec<Upstream>,
    /// Routes, in file order.
    pub routes: Vec<Route>,
    /// Logging.
    pub log: Log,
    /// Security events.
    pub events: Events,
    /// The global response-header policy.
    pub headers: HeaderPolicy,
    /// The CORS policy, if configured.
    pub cors: Option<portcullis_policy::cors::CorsPolicy>,
    /// Where the gateway takes CSP violation reports (`[headers] csp_report`).
    pub csp_report_path: Option<String>,
    /// `[paths]`: normalization and comparison of request paths.
    pub paths: portcullis_policy::normalize::PathPolicy,
    /// `[roles]`, compiled.
    pub roles: portcullis_policy::rbac::Roles,
    /// `[access]`: global IP lists.
    pub access: Option<portcullis_policy::ip_rules::IpRules>,
    /// `[state]`.
    pub state: state::State,
    /// `[auth]`.
    pub auth: auth::Auth,
    /// `[[ban]]` rules.
    pub bans: Vec<portcullis_policy::ban::BanRule>,
    /// `[admin]`, if configured.
    pub admin: Option<admin::Admin>,
    /// Limits on `/.portcullis/*` (`[server] endpoint_limits`).
    pub endpoint_limits: Vec<std::sync::Arc<portcullis_layers::rate_limit::Limit>>,
    /// `[login.NAME]`, by name.
    pub logins: std::collections::BTreeMap<String, std::sync::Arc<portcullis_layers::login::LoginSettings>>,
    /// `[waf]`, if configured.
    pub waf: Option<waf::Waf>,
    /// `[csrf]`, when a route is protected.
    pub csrf: Option<csrf::Csrf>,
    /// `[openapi.NAME]`, by name.
    pub openapi: std::collections::BTreeMap<String, openapi::OpenApiDoc>,
    /// `[alerts]`, if configured.
    pub alerts: Option<alerts::Alerts>,
}

impl Config {
    /// The routes as the gateway matches them, each entry's value its index
    /// in [`Config::routes`] (for `check` and `policy`, which evaluate
    /// without running the gateway).
    #[must_use]
    pub fn route_index(&self) -> portcullis_policy::route::RouteTable<usize> {
        let entries = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| portcullis_policy::route::RouteEntry {
                host: r.host.clone(),
                path: r.path.clone(),
                methods: r.methods.clone(),
                value: i,
            })
            .collect();
        portcullis_policy::route::RouteTable::new(entries)
    }
}

/// Whether `host` (as in a URL, IPv6 in brackets or not) is a loopback name
/// or address: `localhost`, `127.0.0.0/8`, `::1`. Plain `http://` URLs (JWKS,
/// OIDC, the HTTP client) are allowed to these hosts only.
#[must_use]
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The path of the gateway's CSP report endpoint.
pub const CSP_REPORT_PATH: &str = "/.portcullis/csp-report";

/// `[server]`.
#[derive(Debug, Clone)]
pub struct Server {
    /// Where Portcullis keeps its files: `tls/` for the generated self-signed
    /// certificate, and the SQLite store when `[state] store` names a
    /// relative `sqlite://` path.
    pub data_dir: PathBuf,
    /// Peers whose forwarding headers and request ids are believed.
    pub trusted_proxies: TrustedProxies,
    /// Time a client has to send a complete request head (slowloris).
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub idle_timeout: Duration,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// Request size limits.
    pub limits: RequestLimits,
    /// Accept HTTP/2 over cleartext (prior knowledge).
    pub h2c: bool,
    /// Worker threads, each with its own runtime (default: one per core).
    pub workers: usize,
    /// Open connections allowed from one client address (IPv6: one /64);
    /// trusted proxies are exempt. 0 means no limit.
    pub max_connections_per_ip: usize,
    /// How long a request body may keep the gateway waiting, and the rate
    /// that earns more time (`body_timeout`, `min_body_rate`): slow POST.
    pub body_pace: Pace,
    /// How long a client not reading its response may keep the gateway
    /// waiting, and the rate that earns more time (`send_timeout`,
    /// `min_send_rate`): slow read.
    pub send_pace: Pace,
}

/// `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Name used in logs and events.
    pub name: String,
    /// Address to bind.
    pub bind: SocketAddr,
    /// TLS termination, if any.
    pub tls: Option<Tls>,
    /// A plain-HTTP address that only redirects to this listener (308).
    pub redirect_http: Option<SocketAddr>,
}

/// Where a listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Generated for localhost and kept in the data directory.
    SelfSigned,
    /// PEM files: the chain (leaf first) and its private key.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
}

/// Which protocol versions and cipher suites a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProfile {
    /// Mozilla "intermediate": TLS 1.3 and 1.2 with forward-secret AEAD suites.
    Intermediate,
    /// Mozilla "modern": TLS 1.3 only.
    Modern,
}

/// A listener's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// The certificate.
    pub source: CertSource,
    /// Versions and suites.
    pub profile: TlsProfile,
    /// Client certificates (mTLS), if asked for.
    pub client_auth: Option<ClientAuth>,
    /// More certificates (chain, key), each served to clients asking for one
    /// of the DNS names in its subject alternative names.
    pub sni: Vec<(PathBuf, PathBuf)>,
}

/// Client-certificate authentication on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// PEM bundle of the CAs whose client certificates are accepted.
    pub ca: PathBuf,
    /// Whether a connection without a certificate is refused.
    pub required: bool,
}

/// Where an upstream's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An HTTP server.
    Http {
        /// `http` or `https`.
        scheme: Scheme,
        /// `host:port`.
        authority: Authority,
    },
    /// The built-in demo upstream (`builtin:demo`).
    Demo,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http { scheme, authority } => write!(f, "{scheme}://{authority}"),
            Self::Demo => f.write_str("builtin:demo"),
        }
    }
}

/// Which `Host` the upstream sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostHeader {
    /// The client's `Host` (default; the upstream builds correct links).
    Preserve,
    /// The target's `host:port`.
    Target,
}

/// `[[upstream]]`.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Name routes refer to.
    pub name: String,
    /// One or more targets, used round robin.
    pub targets: Vec<Target>,
    /// Time to open a TCP connection to a target.
    pub connect_timeout: Duration,
    /// Time from the start of an attempt (connecting, sending the request and
    /// its body) until the response head arrives.
    pub response_timeout: Duration,
    /// Longest wait for the next piece of a response body; a stalled body
    /// is cut there (the client sees it truncated).
    pub read_timeout: Duration,
    /// A target that failed to connect is skipped this long.
    pub failure_cooldown: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// Most idle pooled connections per target.
    pub pool_max_idle: usize,
    /// Which `Host` to send.
    pub host_header: HostHeader,
    /// TLS settings for https:// targets.
    pub tls: Option<UpstreamTls>,
    /// How the caller's identity reaches this upstream.
    pub identity: IdentityMode,
    /// Most requests in flight to this upstream, all routes together.
    pub max_in_flight: Option<usize>,
}

/// `[[upstream]] identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentityMode {
    /// `X-Portcullis-*` headers.
    #[default]
    Headers,
    /// A short-lived token signed by the gateway (`X-Portcullis-Identity`).
    Jwt,
    /// Nothing.
    None,
}

/// How the gateway verifies (and proves itself to) an https upstream. The
/// files `tls` names are read and parsed when the configuration is built;
/// the gateway builds the TLS client from them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// The CA certificates to verify the upstream with (`ca`); the system
    /// roots when absent.
    pub ca: Option<Vec<CertificateDer<'static>>>,
    /// The certificate and key the gateway proves itself with (mTLS).
    pub client_cert: Option<ClientCert>,
    /// The name to send as SNI and verify, instead of the target's host.
    pub server_name: Option<String>,
}

/// A client certificate chain, leaf first, and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The chain (`client_cert`).
    pub chain: Vec<CertificateDer<'static>>,
    /// The key (`client_key`); its `Debug` shows no key material.
    pub key: std::sync::Arc<PrivateKeyDer<'static>>,
}

/// `[[route]]`: how a request is matched, and the policy the layers enforce
/// on it.
#[derive(Debug, Clone)]
pub struct Route {
    /// Host pattern, if any.
    pub host: Option<HostPattern>,
    /// Path pattern.
    pub path: PathPattern,
    /// Methods, if restricted.
    pub methods: Option<Vec<Method>>,
    /// What the layers enforce on the route, as far as the file decides it:
    /// name, upstream, authentication, requirement, IP lists, limits, login,
    /// body size, headers, CSRF and WebSocket. Each section's builder fills
    /// its part; the gateway adds what needs the running process (upstream
    /// identity, in-flight counters, the WAF engine, the compiled OpenAPI
    /// document) and nothing else.
    pub policy: RouteInfo,
    /// Most requests in flight on this route.
    pub max_in_flight: Option<usize>,
    /// The `[openapi.NAME]` requests are validated against, by name.
    pub openapi: Option<String>,
    /// The route's WAF, if any.
    pub waf: Option<waf::RouteWaf>,
}

impl Route {
    /// Name in events and logs.
    pub fn name(&self) -> &str {
        &self.policy.name
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// Format.
    pub format: LogFormat,
    /// `tracing` filter directive (`info`, `portcullis=debug`, …).
    pub level: String,
    /// Whether to log one line per request.
    pub access: bool,
}

/// Reads and builds a configuration file.
///
/// # Errors
/// Every problem found, each with its position.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read configuration: {e}"),
            expected: None,
            help: Some("pass an existing TOML file with --config".into()),
        }])
    })?;
    parse(path, &source, |name| std::env::var(name).ok())
}

/// Builds a configuration from `source` (as if read from `path`); `env`
/// resolves `${VAR}` secret references, files it names are read from the
/// file system.
///
/// # Errors
/// Every problem found, each with its position.
pub fn parse(path: &Path, source: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    build::build(path, source, &sources::Sources::new(&env, &sources::file_system))
}

/// Builds a configuration from `source` (as if read from `path`), reading
/// variables and files only through `sources`.
///
/// # Errors
/// Every problem found, each with its position.
pub fn parse_with(path: &Path, source: &str, sources: &sources::Sources<'_>) -> Result<Config, ConfigErrors> {
    build::build(path, source, sources)
}
