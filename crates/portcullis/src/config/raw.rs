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
    #[serde(default)]
    pub paths: RawPaths,
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, Spanned<RawRole>>,
    pub access: Option<Spanned<RawAccess>>,
    #[serde(default)]
    pub limits: std::collections::BTreeMap<String, Spanned<RawLimit>>,
    #[serde(default)]
    pub login: std::collections::BTreeMap<String, Spanned<RawLogin>>,
    #[serde(default)]
    pub openapi: std::collections::BTreeMap<String, Spanned<RawOpenApi>>,
    #[serde(default)]
    pub state: RawState,
    #[serde(default, rename = "ban")]
    pub bans: Vec<Spanned<RawBan>>,
    pub admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    pub auth: RawAuth,
    pub csrf: Option<Spanned<RawCsrf>>,
    pub waf: Option<Spanned<RawWaf>>,
    /// `[alerts]` (its raw structs are in `config/alerts.rs`).
    pub alerts: Option<Spanned<super::alerts::RawAlerts>>,
}

/// `[csrf]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCsrf {
    /// `origin+token` (default), `origin` or `off`.
    pub mode: Option<Spanned<String>>,
    /// The token signing secret: `${ENV}` or `file:/path`, 32+ bytes.
    pub secret: Option<Spanned<String>>,
    /// The token cookie's name (default by scheme).
    pub cookie: Option<Spanned<String>>,
    /// The token header's name.
    pub header: Option<Spanned<String>>,
    /// Origins allowed besides the request's own.
    pub trusted_origins: Option<Vec<Spanned<String>>>,
    /// Whether `Sec-Fetch-Site: same-site` passes.
    pub allow_same_site: Option<bool>,
    /// `refuse` (default) or `referer`.
    pub missing_origin: Option<Spanned<String>>,
    /// Authentication methods not checked.
    pub exempt: Option<Spanned<Vec<String>>>,
}

/// `[waf]`: the web application firewall.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWaf {
    /// `block` (default), `detect` or `off`: the routes' default.
    pub mode: Option<Spanned<String>>,
    /// `portcullis` (default), `zentinel` or `libmodsecurity`.
    pub engine: Option<Spanned<String>>,
    /// The OWASP CRS v4 directory.
    pub rules: Option<Spanned<String>>,
    pub paranoia: Option<Spanned<i64>>,
    pub inbound_threshold: Option<Spanned<i64>>,
    pub body_limit: Option<Spanned<Size>>,
    /// `refuse` (default) or `pass` for bodies over `body_limit`.
    pub over_limit: Option<Spanned<String>>,
    pub workers: Option<Spanned<i64>>,
    pub queue: Option<Spanned<i64>>,
    /// Requests up to this size are inspected on the connection's thread.
    pub inline_limit: Option<Spanned<Size>>,
    /// `closed` (default) or `open` when every worker is busy.
    pub on_overload: Option<Spanned<String>>,
    /// Verdicts of identical requests remembered per rule set (0: off).
    pub cache: Option<Spanned<i64>>,
    /// Rule ids (or ranges) the engine may load only partly.
    pub allow_load_errors: Option<Vec<Spanned<String>>>,
    /// `off` (default), `detect` or `block`: the routes' response inspection.
    pub responses: Option<Spanned<String>>,
    pub outbound_threshold: Option<Spanned<i64>>,
    pub response_body_limit: Option<Spanned<Size>>,
    /// Media types whose bodies are inspected.
    pub response_types: Option<Vec<Spanned<String>>>,
    #[serde(default, rename = "exclusion")]
    pub exclusions: Vec<Spanned<RawWafExclusion>>,
}

/// `[[waf.exclusion]]`: rules removed, or targets they stop inspecting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWafExclusion {
    pub rules: Vec<Spanned<String>>,
    pub targets: Option<Vec<Spanned<String>>>,
    /// Route names it applies to (default: every route).
    pub routes: Option<Vec<Spanned<String>>>,
}

/// A route's `waf`: a mode word or a table.
#[derive(Debug)]
pub enum RawRouteWaf {
    Mode(String),
    Table(RawRouteWafTable),
}

impl<'de> Deserialize<'de> for RawRouteWaf {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const EXPECTING: &str =
            "\"block\", \"detect\", \"off\" or a table { mode, responses, paranoia, inbound_threshold }";
        match scalar_or_table(deserializer, EXPECTING)? {
            ScalarOr::Word(word) => Ok(Self::Mode(word)),
            ScalarOr::Table(table) => Ok(Self::Table(table)),
            ScalarOr::Flag(flag) => Err(wrong_scalar(serde::de::Unexpected::Bool(flag), EXPECTING)),
        }
    }
}

/// `waf = { mode, responses, paranoia, inbound_threshold }` on a route. Plain
/// values, not spanned: errors about them point at the route's `waf`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteWafTable {
    pub mode: Option<String>,
    pub responses: Option<String>,
    pub paranoia: Option<i64>,
    pub inbound_threshold: Option<i64>,
}

/// `[roles] name = { permissions, inherits }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub inherits: Vec<String>,
}

/// `[limits.NAME]`: a named rate limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// `ip`, `subject`, `api_key`, `route` or `header:NAME`.
    pub key: Spanned<String>,
    /// `"50/s"`, `"2000/hour"`, `"100/10s"`.
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<i64>>,
    pub exempt_ips: Option<Vec<Spanned<String>>>,
    pub exempt_roles: Option<Vec<String>>,
    /// `open` or `closed` when the shared store is unreachable.
    pub on_store_failure: Option<Spanned<String>>,
}

/// `[[ban]]`: ban clients whose refusals reach a count within a time.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBan {
    /// Defaults to `ban-N` (N = position, from 1).
    pub name: Option<Spanned<String>>,
    /// Reason codes, `defence.*` or groups (`auth.failed`, `forbidden`, …).
    pub on: Spanned<Vec<String>>,
    pub count: Spanned<i64>,
    pub within: Spanned<String>,
    pub duration: Spanned<String>,
    pub exempt_ips: Option<Vec<Spanned<String>>>,
}

/// `[admin]`: the admin API's own listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Spanned<String>,
    /// Bearer token: `${ENV}` or `file:/path`.
    pub token: Spanned<String>,
    /// `"self-signed"` or `{ cert, key, … }`, as a listener's; required off loopback.
    pub tls: Option<Spanned<RawTls>>,
}

/// `[login.NAME]`: login brute-force protection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    /// `json:<field or dotted.path>`, `form:<field>` or `header:<Name>`.
    pub account: Spanned<String>,
    pub account_failures: Option<Spanned<i64>>,
    pub ip_failures: Option<Spanned<i64>>,
    pub window: Option<Spanned<String>>,
    pub backoff: Option<Spanned<String>>,
    pub max_backoff: Option<Spanned<String>>,
    pub failure_status: Option<Spanned<Vec<i64>>>,
    /// `closed` (default) or `open` when the shared store is unreachable.
    pub on_store_failure: Option<Spanned<String>>,
    pub max_body: Option<Spanned<Size>>,
}

/// `[openapi.NAME]`: an OpenAPI document routes validate requests against.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpenApi {
    /// A JSON file (relative to the configuration file) or an http(s) URL.
    pub source: Spanned<String>,
    pub deny_unknown: Option<bool>,
    /// Any of `path`, `query`, `headers`, `body` (default: all).
    pub validate: Option<Spanned<Vec<String>>>,
    pub max_body: Option<Spanned<Size>>,
    pub max_depth: Option<Spanned<i64>>,
    pub max_keys: Option<Spanned<i64>>,
    pub max_string: Option<Spanned<Size>>,
    /// The prefix of the document's paths (default: its first `servers` URL's path).
    pub base_path: Option<Spanned<String>>,
}

/// `[access]`: global IP lists.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    pub allow_ips: Option<Vec<Spanned<String>>>,
    pub deny_ips: Option<Vec<Spanned<String>>>,
}

/// `[[route]] require = { roles, permissions, scopes, subjects, owner }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequire {
    pub roles: Option<Vec<String>>,
    pub permissions: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub subjects: Option<Vec<String>>,
    pub owner: Option<Spanned<String>>,
}

/// `[paths]`: how request paths are normalized and compared.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    pub case: Option<Spanned<String>>,
    pub trailing_slash: Option<Spanned<String>>,
    pub encoded_slash: Option<Spanned<String>>,
    pub encoded_percent: Option<Spanned<String>>,
    pub backslash: Option<Spanned<String>>,
    pub semicolon: Option<Spanned<String>>,
}

/// `[state]`: where durable and shared state lives.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// `sqlite://file` (default, in the data directory) or `postgres://…`.
    pub store: Option<Spanned<String>>,
    /// `memory` (default) or `redis://…` (limits, bans, session revocations).
    pub shared: Option<Spanned<String>>,
    /// The audit trail's HMAC key: `${ENV}` or `file:/path`, 32+ bytes
    /// (default: `audit.key` generated in the data directory).
    pub audit_key: Option<Spanned<String>>,
}

/// `[auth]`: how callers prove who they are.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `[auth.jwt]` (one issuer) or `[[auth.jwt]]` (several).
    pub jwt: Option<Spanned<OneOrManyTables<RawJwt>>>,
    pub oidc: Option<Spanned<RawOidc>>,
    pub session: Option<Spanned<RawSession>>,
    pub api_key: Option<Spanned<RawApiKeys>>,
    pub accounts: Option<Spanned<RawAccounts>>,
    pub mtls: Option<Spanned<RawMtls>>,
    pub identity: Option<Spanned<RawIdentity>>,
}

/// `[auth.jwt]`: bearer tokens from one issuer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub issuer: Spanned<String>,
    pub audience: Option<Spanned<OneOrMany>>,
    pub jwks_url: Option<Spanned<String>>,
    /// CA bundle for the JWKS URL (default: the system roots).
    pub jwks_ca: Option<Spanned<String>>,
    /// Least time between two JWKS fetches caused by unknown `kid`s.
    pub jwks_min_refresh: Option<Spanned<String>>,
    /// How long fetched keys are used when the response has no Cache-Control.
    pub jwks_max_age: Option<Spanned<String>>,
    pub keys: Option<Vec<Spanned<RawJwtKey>>>,
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    pub leeway: Option<Spanned<String>>,
    pub required_claims: Option<Vec<String>>,
    pub max_token_bytes: Option<Spanned<Size>>,
    pub roles_claim: Option<Spanned<OneOrMany>>,
    pub scope_claim: Option<Spanned<String>>,
    pub role_map: Option<std::collections::BTreeMap<String, String>>,
}

/// A configured verification key: a PEM file, inline PEM, or an HMAC secret.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtKey {
    pub kid: Option<String>,
    pub pem_file: Option<String>,
    pub pem: Option<String>,
    /// HMAC secret (`${ENV}` or `file:/path`), at least 32 bytes.
    pub secret: Option<Spanned<String>>,
    pub algorithm: Option<Spanned<String>>,
}

/// `[auth.oidc]`: browser login against an external provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: Spanned<String>,
    pub client_id: Spanned<String>,
    pub client_secret: Option<Spanned<String>>,
    /// The gateway's external base URL (`https://app.example.com`); the
    /// callback is `<base>/.portcullis/callback`.
    pub public_url: Spanned<String>,
    pub scopes: Option<Vec<String>>,
    /// CA bundle for the provider (default: the system roots).
    pub ca: Option<Spanned<String>>,
    pub roles_claim: Option<Spanned<OneOrMany>>,
    pub role_map: Option<std::collections::BTreeMap<String, String>>,
    /// Where to send the browser after logout (must be registered with the
    /// provider for RP-initiated logout).
    pub post_logout_redirect: Option<Spanned<String>>,
}

/// `[auth.session]`: the browser session cookie.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    /// 32+ byte key sealing cookies (`${ENV}` or `file:`); default: generated
    /// into the data directory (one instance only).
    pub cookie_secret: Option<Spanned<String>>,
    /// Absolute session lifetime.
    pub lifetime: Option<Spanned<String>>,
}

/// `[auth.api_key]`: API keys from the store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeys {
    /// A header carrying keys, besides `Authorization: Bearer`.
    pub header: Option<Spanned<String>>,
    /// How long a verified key is trusted without asking the store again.
    pub cache_ttl: Option<Spanned<String>>,
}

/// `[auth.accounts]`: the built-in accounts (kept in the `[state] store`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccounts {
    /// `closed` (default), `open` or `invite`.
    pub registration: Option<Spanned<String>>,
    /// argon2id memory per hash (`"19MiB"` or bytes).
    pub hash_memory: Option<Spanned<Size>>,
    /// argon2id passes.
    pub hash_iterations: Option<Spanned<i64>>,
    /// argon2id lanes.
    pub hash_parallelism: Option<Spanned<i64>>,
    /// Hashes running at once (default: half the cores).
    pub hash_concurrency: Option<Spanned<i64>>,
    /// Longest wait for a hashing slot.
    pub hash_queue_timeout: Option<Spanned<String>>,
    /// Lifetime of an access token.
    pub access_token_ttl: Option<Spanned<String>>,
    /// Lifetime of a session's refresh tokens (from login, not extended).
    pub refresh_token_ttl: Option<Spanned<String>>,
    /// How long after a rotation the replaced token is refused without
    /// revoking its family.
    pub refresh_reuse_grace: Option<Spanned<String>>,
    /// Roles whose accounts must have a second factor.
    pub mfa_required_roles: Option<Spanned<Vec<Spanned<String>>>>,
    /// The origin users reach the gateway at (passkeys, origin checks).
    pub public_url: Option<Spanned<String>>,
    /// 32+ byte key sealing the account cookies and TOTP secrets.
    pub cookie_secret: Option<Spanned<String>>,
    /// `off` (default), `second_factor` or `passwordless`.
    pub passkeys: Option<Spanned<String>>,
}

/// `[auth.mtls]`: client certificates as identities.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMtls {
    /// Roles by certificate subject CN (or full subject DN).
    pub roles: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

/// `[auth.identity]`: the gateway-signed identity token for upstreams.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub issuer: Option<Spanned<String>>,
    pub ttl: Option<Spanned<String>>,
    pub rotate_after: Option<Spanned<String>>,
}

/// A table or an array of tables (`[auth.jwt]` or `[[auth.jwt]]`), keeping
/// the inner type's own error messages (an untagged enum would hide them).
#[derive(Debug)]
pub enum OneOrManyTables<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrManyTables<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrManyTables<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = OneOrManyTables<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table or an array of tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(OneOrManyTables::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(OneOrManyTables::Many)
            }
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
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
#[derive(Debug)]
pub enum RawHsts {
    Enabled(bool),
    Settings(RawHstsSettings),
}

impl<'de> Deserialize<'de> for RawHsts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const EXPECTING: &str = "true, false or a table { max_age, include_subdomains, preload }";
        match scalar_or_table(deserializer, EXPECTING)? {
            ScalarOr::Flag(flag) => Ok(Self::Enabled(flag)),
            ScalarOr::Table(table) => Ok(Self::Settings(table)),
            ScalarOr::Word(word) => Err(wrong_scalar(serde::de::Unexpected::Str(&word), EXPECTING)),
        }
    }
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
    pub max_connections_per_ip: Option<Spanned<i64>>,
    pub body_timeout: Option<Spanned<String>>,
    pub min_body_rate: Option<Spanned<Size>>,
    pub send_timeout: Option<Spanned<String>>,
    pub min_send_rate: Option<Spanned<Size>>,
    /// Limits for `/.portcullis/*` (default: a built-in per-IP limit).
    pub endpoint_limits: Option<Spanned<Vec<String>>>,
}

/// A size: a number of bytes or a string with a unit (`"16KiB"`, `"10MB"`).
#[derive(Debug, Clone)]
pub enum Size {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for Size {
    /// By hand, so a value of another type says what a size is (an untagged
    /// enum would say "data did not match any variant").
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of bytes or a size with a unit such as \"16KiB\" or \"10MB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Size, E> {
                Ok(Size::Bytes(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Size, E> {
                i64::try_from(n)
                    .map(Size::Bytes)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Size, E> {
                Ok(Size::Text(text.to_owned()))
            }
        }
        deserializer.deserialize_any(Visit)
    }
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
#[derive(Debug)]
pub enum RawTls {
    Mode(String),
    Files(RawTlsFiles),
}

impl<'de> Deserialize<'de> for RawTls {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const EXPECTING: &str = "\"self-signed\" or a table { cert, key, profile, client_ca, client_auth, sni }";
        match scalar_or_table(deserializer, EXPECTING)? {
            ScalarOr::Word(word) => Ok(Self::Mode(word)),
            ScalarOr::Table(table) => Ok(Self::Files(table)),
            ScalarOr::Flag(flag) => Err(wrong_scalar(serde::de::Unexpected::Bool(flag), EXPECTING)),
        }
    }
}

/// A key that takes a word, a flag or a table (`tls`, `hsts`, a route's
/// `waf`), as read.
enum ScalarOr<T> {
    Word(String),
    Flag(bool),
    Table(T),
}

/// Reads a word, a flag or a table of type `T`. By hand rather than as an
/// untagged enum, which answers a misspelt key inside the table with "data
/// did not match any variant of untagged enum …": here the table's own
/// error stands ("unknown field `keyy`, expected one of `cert`, `key`, …"),
/// and a value of the wrong type says what the key takes (`expecting`).
fn scalar_or_table<'de, D, T>(deserializer: D, expecting: &'static str) -> Result<ScalarOr<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Visit<T>(&'static str, std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
        type Value = ScalarOr<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<Self::Value, E> {
            Ok(ScalarOr::Word(word.to_owned()))
        }
        fn visit_bool<E: serde::de::Error>(self, flag: bool) -> Result<Self::Value, E> {
            Ok(ScalarOr::Flag(flag))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ScalarOr::Table)
        }
    }
    deserializer.deserialize_any(Visit(expecting, std::marker::PhantomData))
}

/// A word where a flag or table belongs, or the other way round.
fn wrong_scalar<E: serde::de::Error>(found: serde::de::Unexpected<'_>, expecting: &'static str) -> E {
    E::invalid_type(found, &expecting)
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
    pub read_timeout: Option<Spanned<String>>,
    pub failure_cooldown: Option<Spanned<String>>,
    pub pool_idle_timeout: Option<Spanned<String>>,
    pub pool_max_idle: Option<Spanned<i64>>,
    pub host_header: Option<Spanned<String>>,
    pub tls: Option<Spanned<RawUpstreamTls>>,
    pub max_in_flight: Option<Spanned<i64>>,
    /// How the caller's identity reaches the upstream: `headers` (default),
    /// `jwt` (a token signed by the gateway) or `none`.
    pub identity: Option<Spanned<String>>,
}

/// `[[upstream]] tls = { ca, client_cert, client_key, server_name }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
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
    pub require: Option<Spanned<RawRequire>>,
    pub limits: Option<Spanned<Vec<String>>>,
    /// A `[login.NAME]`: this route is a login endpoint.
    pub login: Option<Spanned<String>>,
    /// An `[openapi.NAME]`: requests are validated against that document.
    pub openapi: Option<Spanned<String>>,
    pub max_in_flight: Option<Spanned<i64>>,
    pub allow_ips: Option<Vec<Spanned<String>>>,
    pub deny_ips: Option<Vec<Spanned<String>>>,
    /// `"block"`, `"detect"`, `"off"` or `{ mode, paranoia, inbound_threshold }`.
    pub waf: Option<Spanned<RawRouteWaf>>,
    /// CSRF checks: default on when `auth` accepts `session`.
    pub csrf: Option<Spanned<bool>>,
    /// WebSocket upgrades pass (default: refused).
    pub websocket: Option<bool>,
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
#[derive(Debug, Clone)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    /// By hand, so a value of another type, or a list holding one, says what
    /// the key takes (an untagged enum would say "data did not match any
    /// variant").
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, one: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(one.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<OneOrMany, A::Error> {
                Vec::<String>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(OneOrMany::Many)
            }
        }
        deserializer.deserialize_any(Visit)
    }
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

/// `[events]` (in `events.rs` with its build step).
pub use super::events::{RawEvents, RawSink};
