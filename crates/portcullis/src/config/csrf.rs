//! `[csrf]` and the routes' `csrf` key: cross-site request forgery
//! protection for cookie-authenticated routes (rules in
//! `portcullis_policy::csrf`; reference in `docs/csrf.md`).
//!
//! Decision rules:
//! - On by default: without a `[csrf]` section, `mode = "origin+token"`
//!   applies to every route whose `auth` accepts `session` (the only ambient
//!   credential the gateway accepts from browsers). `csrf = false` opts a
//!   route out, `csrf = true` opts any route in (public ones too).
//! - `mode = "off"` turns the defence off; a route asking for `csrf = true`
//!   is then refused, so the two cannot silently disagree.
//! - The signing key comes from `secret` (`${ENV}`/`file:`, at least 32
//!   bytes), else from `[auth.session] cookie_secret` (an independent key is
//!   derived from it), else it is generated once per process: tokens then
//!   break at restart and across instances, which `portcullis check` flags.
//! - `exempt` defaults to `["jwt", "api_key"]`. Client certificates are not
//!   exempt by default: a browser holding one presents it to any site's
//!   requests, exactly as it does cookies. `session` cannot be exempt.

use std::sync::{Arc, OnceLock};

use http::HeaderName;
use portcullis_layers::AuthMode;
use portcullis_policy::csrf::{CsrfKey, CsrfPolicy, DEFAULT_HEADER, MIN_SECRET_LEN, MissingOrigin, Mode};
use portcullis_policy::{AuthMethod, Methods};
use toml::Spanned;

use super::Route;
use super::error::Collector;
use super::raw::{RawConfig, RawCsrf};
use super::sources::Sources;

/// Where the token signing key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `[csrf] secret`.
    Secret,
    /// Derived from `[auth.session] cookie_secret`.
    SessionSecret,
    /// Generated for this process.
    Generated,
}

/// The compiled `[csrf]`, present when a route is protected.
#[derive(Debug, Clone)]
pub struct Csrf {
    /// The policy the layer enforces.
    pub policy: Arc<CsrfPolicy>,
    /// Where its key came from.
    pub key_source: KeySource,
}

const MODES: &[(&str, Mode)] = &[("origin+token", Mode::OriginToken), ("origin", Mode::Origin), ("off", Mode::Off)];

/// The route's `csrf` as asked for: its own value, else whether its `auth`
/// accepts `session`. [`build_csrf`] settles it against `[csrf] mode`.
pub(super) fn route_csrf(raw: Option<&Spanned<bool>>, auth: AuthMode) -> bool {
    raw.map_or_else(
        || matches!(auth, AuthMode::Required(methods) if methods.contains(AuthMethod::Session) || methods.contains(AuthMethod::Account)),
        |v| *v.get_ref(),
    )
}

/// The random secret of a configuration without one, kept for the life of
/// the process so a reload does not invalidate every token.
fn process_secret() -> Option<&'static [u8; MIN_SECRET_LEN]> {
    static SECRET: OnceLock<Option<[u8; MIN_SECRET_LEN]>> = OnceLock::new();
    SECRET
        .get_or_init(|| {
            let mut bytes = [0_u8; MIN_SECRET_LEN];
            aws_lc_rs::rand::fill(&mut bytes).ok().map(|()| bytes)
        })
        .as_ref()
}

/// Builds `[csrf]` and settles each route's `csrf` flag.
pub(super) fn build_csrf(
    c: &mut Collector<'_>,
    raw: &RawConfig,
    base: &std::path::Path,
    env: &Sources<'_>,
    auth: &super::auth::Auth,
    routes: &mut [Route],
) -> Option<Csrf> {
    let section = raw.csrf.as_ref().map(Spanned::get_ref);
    let r = section.unwrap_or(&DEFAULTS);
    let mode = super::values::choice(c, r.mode.as_ref(), Mode::OriginToken, "[csrf] mode", MODES);
    let trusted_origins = trusted_origins(c, r.trusted_origins.as_ref());
    let missing_origin = super::values::choice(
        c,
        r.missing_origin.as_ref(),
        MissingOrigin::Refuse,
        "[csrf] missing_origin",
        &[("refuse", MissingOrigin::Refuse), ("referer", MissingOrigin::Referer)],
    );
    let cookie = r.cookie.as_ref().and_then(|name| cookie_name(c, name));
    let header = header_name(c, r.header.as_ref());
    let exempt = exempt(c, r.exempt.as_ref());
    let secret = r.secret.as_ref().and_then(|s| secret(c, s, base, env));

    if mode == Mode::Off {
        for route in raw.routes.iter().filter_map(|r| r.get_ref().csrf.as_ref()).filter(|v| *v.get_ref()) {
            c.error(route.span(), "route asks for csrf = true but [csrf] mode is \"off\"")
                .help("remove csrf = true from the route, or set [csrf] mode = \"origin+token\"");
        }
        for route in routes.iter_mut() {
            route.policy.csrf = false;
        }
        return None;
    }
    if !routes.iter().any(|r| r.policy.csrf) {
        return None;
    }
    let session_secret = auth.oidc.as_ref().and_then(|o| o.cookie_secret.as_ref());
    let (key, key_source) = match (&secret, session_secret) {
        (Some(secret), _) => (CsrfKey::new(secret.expose().as_bytes()).ok()?, KeySource::Secret),
        (None, Some(session)) => (CsrfKey::new(session.expose().as_bytes()).ok()?, KeySource::SessionSecret),
        (None, None) => match process_secret().and_then(|s| CsrfKey::new(s).ok()) {
            Some(key) => (key, KeySource::Generated),
            None => {
                c.file_error("[csrf]: the random source failed generating a token key")
                    .help("set [csrf] secret = \"${CSRF_SECRET}\" (32+ random bytes)");
                return None;
            }
        },
    };
    let policy = CsrfPolicy {
        mode,
        trusted_origins,
        allow_same_site: r.allow_same_site.unwrap_or(false),
        missing_origin,
        cookie,
        header,
        exempt,
        key,
    };
    Some(Csrf { policy: Arc::new(policy), key_source })
}

static DEFAULTS: RawCsrf = RawCsrf {
    mode: None,
    secret: None,
    cookie: None,
    header: None,
    trusted_origins: None,
    allow_same_site: None,
    missing_origin: None,
    exempt: None,
};

fn trusted_origins(c: &mut Collector<'_>, list: Option<&Vec<Spanned<String>>>) -> Vec<String> {
    let mut out = Vec::new();
    for entry in list.into_iter().flatten() {
        match portcullis_policy::csrf::normalize_origin(entry.get_ref().trim()) {
            Some(origin) => out.push(origin),
            None => {
                c.error(entry.span(), format!("[csrf] trusted_origins: {:?} is not an origin", entry.get_ref()))
                    .expected("\"https://app.example.com\" or \"http://localhost:3000\": scheme, host and port only")
                    .help("an origin has no path, query or wildcard; list each trusted site");
            }
        }
    }
    out
}

fn cookie_name(c: &mut Collector<'_>, name: &Spanned<String>) -> Option<String> {
    let text = name.get_ref();
    // An RFC 6265 cookie-name: a token, no separators.
    let token = !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if !token {
        c.error(name.span(), format!("[csrf] cookie: invalid cookie name {text:?}"))
            .expected("letters, digits and - _ . such as \"__Host-portcullis-csrf\" or \"XSRF-TOKEN\"");
        return None;
    }
    if text == portcullis_policy::session::SESSION_COOKIE || text == portcullis_policy::session::LOGIN_COOKIE {
        c.error(name.span(), format!("[csrf] cookie: {text:?} is the session's own cookie"))
            .help("the token needs a cookie of its own; omit `cookie` for the default");
        return None;
    }
    Some(text.clone())
}

fn header_name(c: &mut Collector<'_>, value: Option<&Spanned<String>>) -> HeaderName {
    let default = HeaderName::from_static(DEFAULT_HEADER);
    let Some(value) = value else { return default };
    match HeaderName::from_bytes(value.get_ref().trim().as_bytes()) {
        Ok(name) if name != http::header::COOKIE && name != http::header::AUTHORIZATION => name,
        _ => {
            c.error(value.span(), format!("[csrf] header: invalid header name {:?}", value.get_ref()))
                .expected("a header of its own such as \"X-CSRF-Token\" or \"X-XSRF-TOKEN\"");
            default
        }
    }
}

fn exempt(c: &mut Collector<'_>, value: Option<&Spanned<Vec<String>>>) -> Methods {
    let Some(value) = value else {
        return [AuthMethod::Jwt, AuthMethod::ApiKey, AuthMethod::AccountToken].into_iter().collect();
    };
    let mut methods = Methods::NONE;
    for name in value.get_ref() {
        match AuthMethod::parse(name) {
            Some(method @ (AuthMethod::Session | AuthMethod::Account)) => {
                c.error(value.span(), format!("[csrf] exempt cannot list {:?}", method.as_str()))
                    .help("browser sessions are what CSRF rides on; set csrf = false on a route instead");
            }
            Some(method) => methods = methods.with(method),
            None => {
                c.error(value.span(), format!("[csrf] exempt: unknown authentication method {name:?}")).expected(
                    "a list of \"jwt\", \"api_key\", \"account_token\", \"mtls\" (or [] to check every request)",
                );
            }
        }
    }
    methods
}

fn secret(
    c: &mut Collector<'_>,
    value: &Spanned<String>,
    base: &std::path::Path,
    env: &Sources<'_>,
) -> Option<super::secret::Secret> {
    match super::secret::resolve(value.get_ref(), base, env) {
        Ok(secret) if secret.expose().len() >= MIN_SECRET_LEN => Some(secret),
        Ok(_) => {
            c.error(value.span(), "[csrf] secret is too short")
                .expected("at least 32 bytes")
                .help("generate one with `openssl rand -base64 48` and pass it as ${ENV_VAR} or file:/path");
            None
        }
        Err(e) => {
            c.error(value.span(), format!("[csrf] secret: {e}"))
                .expected("\"${ENV_VAR}\" or \"file:/path/to/secret\"")
                .help("set the variable or create the file; the value itself is never printed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = r#"
[[listener]]
bind = "127.0.0.1:8080"

[[upstream]]
name = "api"
targets = ["http://127.0.0.1:3000"]

[auth.oidc]
issuer = "https://id.example.com/"
client_id = "portcullis"
public_url = "https://app.example.com"

[[route]]
name = "browser"
match = { path = "/app/**" }
upstream = "api"
auth = ["session", "jwt"]

[[route]]
name = "api"
match = { path = "/api/**" }
upstream = "api"
auth = "jwt"

[[route]]
name = "public"
match = { path = "/**" }
upstream = "api"
auth = "public"

[auth.jwt]
issuer = "https://id.example.com/"
audience = "api"
jwks_url = "https://id.example.com/jwks"
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "LONG" => Some("x".repeat(40)),
            "SHORT" => Some("short".into()),
            _ => None,
        }
    }

    fn parse(extra: &str) -> Result<super::super::Config, super::super::ConfigErrors> {
        super::super::parse(Path::new("/etc/portcullis/test.toml"), &format!("{BASE}\n{extra}"), env)
    }

    fn protected(config: &super::super::Config) -> Vec<(&str, bool)> {
        config.routes.iter().map(|r| (r.name(), r.policy.csrf)).collect()
    }

    /// The messages of a refused configuration, with line numbers.
    fn messages(extra: &str) -> Vec<String> {
        let errors = parse(extra).expect_err("should be refused").0;
        errors.iter().map(|e| format!("{}: {}", e.line, e.message)).collect()
    }

    #[test]
    fn session_routes_are_protected_by_default_with_secure_settings() {
        let config = parse("").unwrap();
        assert_eq!(protected(&config), [("browser", true), ("api", false), ("public", false)]);
        let csrf = config.csrf.unwrap();
        let p = &csrf.policy;
        assert_eq!(p.mode, Mode::OriginToken);
        assert_eq!(p.header, "x-csrf-token");
        assert_eq!(p.cookie_name("https"), "__Host-portcullis-csrf");
        assert_eq!(p.missing_origin, MissingOrigin::Refuse);
        assert!(!p.allow_same_site && p.trusted_origins.is_empty());
        assert!(p.exempts(AuthMethod::Jwt) && p.exempts(AuthMethod::ApiKey));
        assert!(!p.exempts(AuthMethod::Mtls) && !p.exempts(AuthMethod::Session));
        assert_eq!(csrf.key_source, KeySource::Generated);
    }

    #[test]
    fn routes_opt_in_and_out() {
        let config = parse(
            "[[route]]\nname = \"form\"\nmatch = { path = \"/contact\" }\nupstream = \"api\"\nauth = \"public\"\ncsrf = true\n",
        )
        .unwrap();
        assert!(config.routes.iter().any(|r| r.name() == "form" && r.policy.csrf));
        let toml = BASE.replace("auth = [\"session\", \"jwt\"]", "auth = [\"session\", \"jwt\"]\ncsrf = false");
        let config = super::super::parse(Path::new("/t.toml"), &toml, env).unwrap();
        assert!(config.routes.iter().all(|r| !r.policy.csrf));
        assert!(config.csrf.is_none(), "nothing protected, nothing built");
    }

    #[test]
    fn full_section() {
        let config = parse(
            r#"
[csrf]
mode = "origin"
secret = "${LONG}"
cookie = "XSRF-TOKEN"
header = "X-XSRF-TOKEN"
trusted_origins = ["https://Admin.example.com/", "http://localhost:3000"]
allow_same_site = true
missing_origin = "referer"
exempt = []
"#,
        )
        .unwrap();
        let csrf = config.csrf.unwrap();
        let p = &csrf.policy;
        assert_eq!(csrf.key_source, KeySource::Secret);
        assert_eq!(p.mode, Mode::Origin);
        assert_eq!(p.cookie_name("http"), "XSRF-TOKEN");
        assert_eq!(p.header, "x-xsrf-token");
        assert_eq!(p.trusted_origins, ["https://admin.example.com", "http://localhost:3000"]);
        assert!(p.allow_same_site);
        assert_eq!(p.missing_origin, MissingOrigin::Referer);
        assert!(p.exempt.is_empty());
    }

    #[test]
    fn the_session_secret_is_reused_when_csrf_has_none() {
        let toml = BASE.replace("[auth.oidc]", "[auth.session]\ncookie_secret = \"${LONG}\"\n\n[auth.oidc]");
        let config = super::super::parse(Path::new("/t.toml"), &toml, env).unwrap();
        assert_eq!(config.csrf.unwrap().key_source, KeySource::SessionSecret);
    }

    #[test]
    fn mode_off_turns_everything_off_and_refuses_routes_asking_for_it() {
        let config = parse("[csrf]\nmode = \"off\"\n").unwrap();
        assert!(config.csrf.is_none() && config.routes.iter().all(|r| !r.policy.csrf));
        let errors = messages(
            "[csrf]\nmode = \"off\"\n\n[[route]]\nmatch = { path = \"/x\" }\nupstream = \"api\"\nauth = \"public\"\ncsrf = true\n",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("csrf = true but [csrf] mode is \"off\""), "{errors:?}");
    }

    #[test]
    fn check_flags_generated_keys_and_session_routes_without_csrf() {
        let codes = |config: &super::super::Config| -> Vec<&'static str> {
            crate::check::findings(config).iter().map(|f| f.code).filter(|c| c.starts_with("csrf.")).collect()
        };
        assert_eq!(codes(&parse("").unwrap()), ["csrf.key_generated"]);
        assert!(codes(&parse("[csrf]\nsecret = \"${LONG}\"\n").unwrap()).is_empty());
        assert_eq!(codes(&parse("[csrf]\nmode = \"off\"\n").unwrap()), ["csrf.off"]);
        let toml = BASE.replace("auth = [\"session\", \"jwt\"]", "auth = [\"session\", \"jwt\"]\ncsrf = false");
        let config = super::super::parse(Path::new("/t.toml"), &toml, env).unwrap();
        let findings = crate::check::findings(&config);
        let off = findings.iter().find(|f| f.code == "csrf.off").unwrap();
        assert!(off.message.contains("browser"), "{off}");
    }

    #[test]
    fn bad_values_are_refused_naming_the_key_and_line() {
        let errors = messages(
            r#"
[csrf]
mode = "strict"
secret = "${SHORT}"
cookie = "bad name;"
header = "Cookie"
trusted_origins = ["https://*.example.com", "https://ok.example.com/path"]
missing_origin = "allow"
exempt = ["session", "magic"]
"#,
        );
        let expect = [
            "[csrf] mode \"strict\"",
            "[csrf] missing_origin \"allow\"",
            "[csrf] trusted_origins: \"https://*.example.com\"",
            "[csrf] trusted_origins: \"https://ok.example.com/path\"",
            "[csrf] cookie: invalid cookie name",
            "[csrf] header: invalid header name",
            "[csrf] exempt cannot list \"session\"",
            "[csrf] exempt: unknown authentication method \"magic\"",
            "[csrf] secret is too short",
        ];
        for needle in expect {
            assert!(errors.iter().any(|e| e.contains(needle)), "no error containing {needle:?} in {errors:#?}");
        }
        assert_eq!(errors.len(), expect.len(), "{errors:#?}");
        // Each points at its own line of the section (after BASE).
        let first = BASE.lines().count() + 3;
        assert!(errors.iter().all(|e| e.split(':').next().unwrap().parse::<usize>().unwrap() >= first), "{errors:?}");

        let errors = messages("[csrf]\nsecret = \"${UNSET}\"\n");
        assert!(errors[0].contains("[csrf] secret: environment variable UNSET is not set"), "{errors:?}");
        let errors = messages("[csrf]\nmod = \"origin\"\n");
        assert!(errors[0].contains("unknown field `mod`"), "{errors:?}");
        let errors =
            messages("[[route]]\nmatch = { path = \"/y\" }\nupstream = \"api\"\nauth = \"public\"\ncsrf = \"yes\"\n");
        assert!(errors[0].contains("invalid type"), "{errors:?}");
    }
}
