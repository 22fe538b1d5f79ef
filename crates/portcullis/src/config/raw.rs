//! The configuration file as written: serde structs that refuse unknown keys.
//!
//! A mistyped security key (`requre = …`) must fail loudly, never be ignored,
//! so every table here is `deny_unknown_fields`. Values that need checking
//! beyond their type are kept `Spanned` so the build step can point at them.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Spanned<RawListener>>,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<Spanned<RawUpstream>>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub events: RawEvents,
    #[serde(default)]
    pub headers: RawHeaders,
    pub cors: Option<Spanned<RawCors>>,
}

/// `[cors]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub origins: Spanned<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<Vec<String>>,
    pub expose: Option<Vec<String>>,
    pub credentials: Option<bool>,
    pub max_age: Option<String>,
}

/// `[headers]`: security response headers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    pub preset: Option<Spanned<String>>,
    pub csp: Option<Spanned<String>>,
    pub csp_report_only: Option<bool>,
    pub csp_report: Option<bool>,
    pub hsts: Option<Spanned<RawHsts>>,
    pub set: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    #[serde(rename = "override")]
    pub overrides: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    pub remove: Option<Spanned<Vec<String>>>,
}

/// Header changes, globally or per route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderChanges {
    pub set: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    #[serde(rename = "override")]
    pub overrides: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    pub remove: Option<Spanned<Vec<String>>>,
}

/// `hsts = false` or `hsts = { max_age, include_subdomains, preload }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawHsts {
    Enabled(bool),
    Settings(RawHstsSettings),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHstsSettings {
    pub max_age: Option<String>,
    pub include_subdomains: Option<bool>,
    pub preload: Option<bool>,
}

/// `[server]`: connection handling shared by all listeners.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub data_dir: Option<Spanned<String>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub header_read_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    pub max_header_count: Option<Spanned<i64>>,
    pub max_header_bytes: Option<Spanned<Size>>,
    pub max_uri_bytes: Option<Spanned<Size>>,
    pub max_body_bytes: Option<Spanned<Size>>,
    pub h2c: Option<bool>,
    pub workers: Option<Spanned<i64>>,
}

/// A size: a number of bytes or a string with a unit (`"16KiB"`, `"10MB"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(i64),
    Text(String),
}

/// `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub bind: Spanned<String>,
    pub tls: Option<Spanned<RawTls>>,
    pub redirect_http: Option<Spanned<String>>,
}

/// `tls = "self-signed"` or `tls = { cert, key, profile }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTls {
    Mode(String),
    Files(RawTlsFiles),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsFiles {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub profile: Option<String>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
    pub sni: Option<Vec<RawCertPair>>,
}

/// One more certificate, chosen by SNI.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertPair {
    pub cert: String,
    pub key: String,
}

/// `[[upstream]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Spanned<String>,
    pub targets: Spanned<Vec<Spanned<String>>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub response_timeout: Option<Spanned<String>>,
    pub failure_cooldown: Option<Spanned<String>>,
    pub pool_idle_timeout: Option<Spanned<String>>,
    pub pool_max_idle: Option<Spanned<i64>>,
    pub host_header: Option<Spanned<String>>,
    pub tls: Option<Spanned<RawUpstreamTls>>,
}

/// `[[upstream]] tls = { ca, client_cert, client_key, server_name }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub server_name: Option<String>,
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Spanned<RawMatch>,
    pub upstream: Spanned<String>,
    pub auth: Option<Spanned<OneOrMany>>,
    pub max_body_bytes: Option<Spanned<Size>>,
    pub headers: Option<RawHeaderChanges>,
}

/// `match = { host, path, methods }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<Spanned<String>>,
    pub path: Spanned<String>,
    pub methods: Option<Spanned<Vec<String>>>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one.clone()],
            Self::Many(many) => many.clone(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<Spanned<String>>,
    pub level: Option<Spanned<String>>,
    pub access: Option<bool>,
}

/// `[events]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    pub sinks: Option<Spanned<Vec<Spanned<String>>>>,
}
