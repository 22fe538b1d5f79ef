//! `[auth.oidc]` and `[auth.session]`: browser login against an external
//! OpenID provider and the session cookie it results in.
//!
//! Decision rules:
//! - `issuer`, `public_url` and `post_logout_redirect` must be `https://`;
//!   plain `http://` is accepted only for loopback hosts (`127.0.0.1`, `::1`,
//!   `localhost`), for local providers and tests.
//! - `public_url` is an origin (no path): the session cookie is `__Host-`
//!   prefixed, so it is always `Path=/`, and the callback is
//!   `<public_url>/.portcullis/callback`.
//! - Secrets (`client_secret`, `cookie_secret`) come through
//!   [`super::secret::resolve`] and are never printed; `cookie_secret` must
//!   have at least 32 bytes.
//! - `scopes` default to `openid profile email`; `openid` is added when
//!   missing. `offline_access` is not requested by default: it asks for
//!   tokens that outlive the provider's login session, which a gateway
//!   session does not need. Providers that only issue refresh tokens with it
//!   need it listed.
//! - `roles_claim` defaults to `roles`; `lifetime` to 8 hours.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::Collector;
use super::raw::RawConfig;
use super::secret::{Secret, resolve};
use super::sources::Sources;

/// The callback path under `public_url`.
pub const CALLBACK_PATH: &str = "/.portcullis/callback";

/// Default scopes.
pub const DEFAULT_SCOPES: [&str; 3] = ["openid", "profile", "email"];

/// Default absolute session lifetime.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// `[auth.oidc]` with `[auth.session]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oidc {
    /// The provider's issuer URL (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// The registered client id.
    pub client_id: String,
    /// The client secret (`client_secret_basic`); public clients have none.
    pub client_secret: Option<Secret>,
    /// The gateway's external origin, without a trailing slash.
    pub public_url: String,
    /// `<public_url>/.portcullis/callback`, registered with the provider.
    pub redirect_url: String,
    /// Scopes requested at login (`openid` first).
    pub scopes: Vec<String>,
    /// CA bundle for the provider; the system roots when absent.
    pub ca: Option<PathBuf>,
    /// Claim paths holding roles (`roles`, `realm_access.roles`), tried in order.
    pub roles_claim: Vec<String>,
    /// Provider role → gateway role; roles not listed pass through unchanged.
    pub role_map: BTreeMap<String, String>,
    /// Where the provider sends the browser after RP-initiated logout.
    pub post_logout_redirect: Option<String>,
    /// `[auth.session] cookie_secret`; when absent a key is generated into
    /// the data directory.
    pub cookie_secret: Option<Secret>,
    /// `[auth.session] lifetime`: the session ends then, refreshes or not.
    pub lifetime: Duration,
}

const URL_EXPECTED: &str =
    "an https URL such as \"https://id.example.com\" (http only for 127.0.0.1, ::1 or localhost)";

pub(super) fn build_oidc(c: &mut Collector<'_>, raw: &RawConfig, base: &Path, env: &Sources<'_>) -> Option<Oidc> {
    let Some(oidc) = raw.auth.oidc.as_ref() else {
        if let Some(session) = &raw.auth.session {
            c.error(session.span(), "[auth.session] without [auth.oidc]")
                .help("sessions are established by OIDC login: add [auth.oidc], or remove [auth.session]");
        }
        return None;
    };
    let o = oidc.get_ref();
    let issuer = url(c, &o.issuer, "issuer", false);
    let public_url = url(c, &o.public_url, "public_url", true);
    let post_logout_redirect = o.post_logout_redirect.as_ref().and_then(|p| url(c, p, "post_logout_redirect", false));
    if o.client_id.get_ref().trim().is_empty() {
        c.error(o.client_id.span(), "client_id is empty").help("set the client id registered with the provider");
    }
    let client_secret = o.client_secret.as_ref().and_then(|s| secret(c, s, base, env, "client_secret"));

    let mut scopes: Vec<String> = Vec::new();
    for scope in o.scopes.clone().unwrap_or_else(|| DEFAULT_SCOPES.map(str::to_owned).to_vec()) {
        if scope.is_empty() || !scope.chars().all(|ch| ch.is_ascii_graphic() && ch != '"' && ch != '\\') {
            c.error(oidc.span(), format!("invalid scope {scope:?}"))
                .expected("scope names such as \"openid\", \"email\", \"offline_access\"");
        } else if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".to_owned());
    }

    let ca = o.ca.as_ref().map(|ca| {
        let path = base.join(ca.get_ref());
        if let Err(e) = env.read(&path) {
            c.error(ca.span(), format!("CA bundle {} cannot be read: {e}", path.display()))
                .help("give the path of a PEM file with the provider's CA certificates, relative to the config file");
        }
        path
    });

    let roles_claim = o.roles_claim.as_ref().map_or_else(|| vec!["roles".to_owned()], |r| r.get_ref().to_vec());
    if let Some(r) = &o.roles_claim
        && (roles_claim.is_empty() || roles_claim.iter().any(|p| p.is_empty() || p.split('.').any(str::is_empty)))
    {
        c.error(r.span(), "invalid roles_claim").expected("claim names or dotted paths such as \"realm_access.roles\"");
    }

    let session = raw.auth.session.as_ref().map(Spanned::get_ref);
    let cookie_secret = session.and_then(|s| s.cookie_secret.as_ref()).and_then(|raw| cookie_secret(c, raw, base, env));
    let lifetime = lifetime(c, session.and_then(|s| s.lifetime.as_ref()));

    let public_url = public_url?;
    Some(Oidc {
        issuer: issuer?,
        client_id: o.client_id.get_ref().trim().to_owned(),
        client_secret,
        redirect_url: format!("{public_url}{CALLBACK_PATH}"),
        public_url,
        scopes,
        ca,
        roles_claim,
        role_map: o.role_map.clone().unwrap_or_default(),
        post_logout_redirect,
        cookie_secret,
        lifetime,
    })
}

/// Checks an https (or loopback http) URL; `origin_only` refuses any path.
/// Returns an origin without its trailing slash.
pub(super) fn url(c: &mut Collector<'_>, value: &Spanned<String>, what: &str, origin_only: bool) -> Option<String> {
    let text = value.get_ref().trim();
    let Ok(uri) = text.parse::<http::Uri>() else {
        c.error(value.span(), format!("{what} is not a valid URL")).expected(URL_EXPECTED);
        return None;
    };
    let Some(host) = uri.host() else {
        c.error(value.span(), format!("{what} has no host")).expected(URL_EXPECTED);
        return None;
    };
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if super::is_loopback_host(host) => {}
        Some("http") => {
            c.error(value.span(), format!("{what} must use https"))
                .expected(URL_EXPECTED)
                .help("plain http is accepted only for loopback hosts, for local testing");
            return None;
        }
        _ => {
            c.error(value.span(), format!("{what} must be an absolute https URL")).expected(URL_EXPECTED);
            return None;
        }
    }
    if text.contains('#') || (origin_only && uri.query().is_some()) {
        c.error(value.span(), format!("{what} must not have a fragment{}", if origin_only { " or query" } else { "" }))
            .expected(URL_EXPECTED);
        return None;
    }
    if origin_only && !matches!(uri.path(), "" | "/") {
        c.error(value.span(), format!("{what} must be an origin, without a path"))
            .expected("\"https://app.example.com\"")
            .help("the session cookie is __Host- prefixed (Path=/), so Portcullis must serve the site's root");
        return None;
    }
    // An issuer is compared byte for byte with the provider's discovery
    // document, so it keeps its trailing slash; origins lose theirs.
    Some(if origin_only { text.trim_end_matches('/').to_owned() } else { text.to_owned() })
}

/// A `cookie_secret` (OIDC sessions, accounts): a secret of at least
/// [`portcullis_policy::session::MIN_SECRET_LEN`] bytes.
pub(super) fn cookie_secret(
    c: &mut Collector<'_>,
    value: &Spanned<String>,
    base: &Path,
    env: &Sources<'_>,
) -> Option<Secret> {
    let secret = secret(c, value, base, env, "cookie_secret")?;
    if secret.expose().len() < portcullis_policy::session::MIN_SECRET_LEN {
        c.error(value.span(), "cookie_secret is too short")
            .expected("at least 32 bytes")
            .help("generate one with `openssl rand -base64 48` and pass it as ${ENV_VAR} or file:/path");
        return None;
    }
    Some(secret)
}

pub(super) fn secret(
    c: &mut Collector<'_>,
    value: &Spanned<String>,
    base: &Path,
    env: &Sources<'_>,
    what: &str,
) -> Option<Secret> {
    match resolve(value.get_ref(), base, env) {
        Ok(secret) => Some(secret),
        Err(e) => {
            c.error(value.span(), format!("{what}: {e}"))
                .expected("\"${ENV_VAR}\" or \"file:/path/to/secret\"")
                .help("set the variable or create the file; the value itself is never printed");
            None
        }
    }
}

fn lifetime(c: &mut Collector<'_>, value: Option<&Spanned<String>>) -> Duration {
    let Some(value) = value else { return DEFAULT_LIFETIME };
    match humantime::parse_duration(value.get_ref()) {
        Ok(d) if d >= Duration::from_secs(60) => d,
        Ok(_) => {
            c.error(value.span(), "session lifetime must be at least one minute").expected("a duration such as \"8h\"");
            DEFAULT_LIFETIME
        }
        Err(e) => {
            c.error(value.span(), format!("invalid session lifetime {:?}: {e}", value.get_ref()))
                .expected("a duration such as \"8h\", \"30m\"");
            DEFAULT_LIFETIME
        }
    }
}
