//! `[auth]`: the authentication methods routes may name, and how the caller's
//! identity reaches upstreams.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use portcullis_policy::jwt::keys::parse_algorithm;
use portcullis_policy::jwt::{ClaimMapping, JwtPolicy, VerificationKey};
use portcullis_policy::{AuthMethod, Methods};
use toml::Spanned;

use super::api_keys::ApiKeys;
use super::error::Collector;
use super::oidc::Oidc;
use super::raw::{RawConfig, RawJwt, RawJwtKey};
use super::sources::Sources;

/// Every configured authentication method.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// `[auth.jwt]`: bearer token issuers.
    pub jwt: Vec<JwtIssuer>,
    /// `[auth.oidc]`: browser sessions.
    pub oidc: Option<Oidc>,
    /// `[auth.api_key]`.
    pub api_keys: Option<ApiKeys>,
    /// `[auth.accounts]`: the built-in accounts. Routes do not accept them
    /// as an `auth` method; the store and the `user` commands use this.
    pub accounts: Option<super::accounts::Accounts>,
    /// `[auth.mtls]`.
    pub mtls: Option<Mtls>,
    /// `[auth.identity]`: the gateway-signed identity token.
    pub identity: IdentityToken,
}

impl Auth {
    /// The methods this configuration can verify.
    #[must_use]
    pub fn configured(&self) -> Methods {
        let mut methods = Methods::NONE;
        if !self.jwt.is_empty() {
            methods = methods.with(AuthMethod::Jwt);
        }
        if self.oidc.is_some() {
            methods = methods.with(AuthMethod::Session);
        }
        if self.api_keys.is_some() {
            methods = methods.with(AuthMethod::ApiKey);
        }
        if self.mtls.is_some() {
            methods = methods.with(AuthMethod::Mtls);
        }
        if self.accounts.is_some() {
            methods = methods.with(AuthMethod::Account).with(AuthMethod::AccountToken);
        }
        methods
    }
}

/// One bearer-token issuer.
#[derive(Debug, Clone)]
pub struct JwtIssuer {
    /// What tokens must satisfy.
    pub policy: JwtPolicy,
    /// Algorithms accepted from this issuer.
    pub algorithms: Vec<Algorithm>,
    /// Keys from the configuration file.
    pub keys: Vec<VerificationKey>,
    /// The issuer's published keys, if any.
    pub jwks: Option<Jwks>,
}

/// Where an issuer publishes its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwks {
    /// The JWKS URL (https, or http on loopback).
    pub url: String,
    /// CA bundle to verify it with (system roots when absent).
    pub ca: Option<PathBuf>,
    /// Least time between fetches caused by unknown `kid`s.
    pub min_refresh: Duration,
    /// How long keys are used without a refetch when the response has no
    /// `Cache-Control: max-age`.
    pub max_age: Duration,
}

/// `[auth.mtls]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mtls {
    /// Roles by certificate subject CN or DN.
    pub roles: HashMap<String, Vec<String>>,
}

/// `[auth.identity]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityToken {
    /// The `iss` of identity tokens.
    pub issuer: String,
    /// Their lifetime.
    pub ttl: Duration,
    /// The signing key's age at which a start or reload replaces it.
    pub rotate_after: Duration,
}

/// The least `rotate_after`: a shorter one would replace the key at nearly
/// every reload and grow the published key list for nothing.
const MIN_ROTATE_AFTER: Duration = Duration::from_secs(3600);

impl Default for IdentityToken {
    fn default() -> Self {
        Self {
            issuer: "portcullis".into(),
            ttl: Duration::from_secs(60),
            rotate_after: Duration::from_secs(90 * 86_400),
        }
    }
}

/// Asymmetric algorithms accepted when `algorithms` is not set. HMAC is
/// never a default: it needs an explicitly configured secret.
const DEFAULT_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

const fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Whether a URL is https, or http to a loopback host.
pub(crate) fn secure_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else { return false };
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => true,
        (Some("http"), Some(host)) => super::is_loopback_host(host),
        _ => false,
    }
}

pub(super) fn build_auth(c: &mut Collector<'_>, raw: &RawConfig, base: &Path, env: &Sources<'_>) -> Auth {
    let jwt = raw
        .auth
        .jwt
        .as_ref()
        .map(|tables| {
            let issuers: Vec<JwtIssuer> = tables
                .get_ref()
                .as_slice()
                .iter()
                .filter_map(|t| build_issuer(c, t, tables.span(), base, env))
                .collect();
            let mut seen = std::collections::HashSet::new();
            for issuer in &issuers {
                if !seen.insert(issuer.policy.issuer.clone()) {
                    c.error(tables.span(), format!("issuer {:?} is configured twice", issuer.policy.issuer))
                        .help("each [[auth.jwt]] table is one issuer; merge their keys and audiences");
                }
            }
            issuers
        })
        .unwrap_or_default();
    let mtls = raw
        .auth
        .mtls
        .as_ref()
        .map(|m| Mtls { roles: m.get_ref().roles.clone().unwrap_or_default().into_iter().collect() });
    let identity = raw.auth.identity.as_ref().map_or_else(IdentityToken::default, |i| {
        let i = i.get_ref();
        let defaults = IdentityToken::default();
        let ttl = super::values::duration(c, i.ttl.as_ref(), defaults.ttl, "identity ttl");
        if let Some(ttl_raw) = &i.ttl
            && ttl > Duration::from_secs(3600)
        {
            c.error(ttl_raw.span(), "identity ttl is longer than an hour")
                .help("identity tokens are sent with every request; keep them short-lived (default 60s)");
        }
        let rotate_after = super::values::duration(c, i.rotate_after.as_ref(), defaults.rotate_after, "rotate_after");
        if let Some(raw) = &i.rotate_after
            && rotate_after < MIN_ROTATE_AFTER
        {
            c.error(raw.span(), "rotate_after is shorter than an hour")
                .help("the key is replaced at the first start or reload past this age; 90d is the default");
        }
        IdentityToken { issuer: i.issuer.as_ref().map_or(defaults.issuer, |s| s.get_ref().clone()), ttl, rotate_after }
    });
    Auth {
        jwt,
        oidc: super::oidc::build_oidc(c, raw, base, env),
        api_keys: super::api_keys::build_api_keys(c, raw),
        accounts: super::accounts::build_accounts(c, raw, base, env),
        mtls,
        identity,
    }
}

fn build_issuer(
    c: &mut Collector<'_>,
    raw: &RawJwt,
    span: std::ops::Range<usize>,
    base: &Path,
    env: &Sources<'_>,
) -> Option<JwtIssuer> {
    let issuer = raw.issuer.get_ref().trim().to_owned();
    if issuer.is_empty() {
        c.error(raw.issuer.span(), "issuer is empty").expected("the exact `iss` value of the tokens");
    }
    let mut policy = JwtPolicy::new(issuer);
    policy.audiences = raw.audience.as_ref().map(|a| a.get_ref().to_vec()).unwrap_or_default();
    policy.leeway = super::values::duration_or_zero(c, raw.leeway.as_ref(), policy.leeway, "leeway");
    if policy.leeway > Duration::from_secs(300)
        && let Some(leeway) = &raw.leeway
    {
        c.error(leeway.span(), "leeway is longer than 5 minutes")
            .help("the leeway only absorbs clock skew; a long one keeps expired tokens alive");
    }
    if let Some(required) = &raw.required_claims {
        // `exp` stays required whatever the list says: a token without an
        // expiry would be valid forever once leaked.
        policy.required_claims.clone_from(required);
        if !policy.required_claims.iter().any(|c| c == "exp") {
            policy.required_claims.push("exp".into());
        }
    }
    policy.max_token_bytes = usize::try_from(super::values::size(
        c,
        raw.max_token_bytes.as_ref(),
        policy.max_token_bytes as u64,
        256,
        64 * 1024,
        "max_token_bytes",
    ))
    .unwrap_or(policy.max_token_bytes);
    policy.mapping = ClaimMapping {
        roles: raw.roles_claim.as_ref().map_or_else(|| vec!["roles".into()], |r| r.get_ref().to_vec()),
        scope: raw.scope_claim.as_ref().map_or_else(|| "scope".into(), |s| s.get_ref().clone()),
        rename: raw.role_map.clone().unwrap_or_default().into_iter().collect(),
    };

    let algorithms: Vec<Algorithm> = match &raw.algorithms {
        None => DEFAULT_ALGORITHMS.to_vec(),
        Some(list) => {
            let mut out = Vec::new();
            for name in list.get_ref() {
                match parse_algorithm(name.get_ref()) {
                    Some(alg) => out.push(alg),
                    None => {
                        c.error(name.span(), format!("unknown or forbidden algorithm {:?}", name.get_ref())).expected(
                            "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512",
                        );
                    }
                }
            }
            if out.is_empty() && list.get_ref().is_empty() {
                c.error(list.span(), "algorithms is empty").help("omit it to accept the asymmetric algorithms");
            }
            out
        }
    };

    let mut keys = Vec::new();
    for key in raw.keys.iter().flatten() {
        if let Some(k) = build_key(c, key, &algorithms, base, env) {
            keys.push(k);
        }
    }
    let has_hmac_key = keys.iter().any(|k| k.algorithms().iter().copied().any(is_hmac));
    if algorithms.iter().copied().any(is_hmac) && !has_hmac_key {
        let at = raw.algorithms.as_ref().map_or(span.clone(), Spanned::span);
        c.error(at, "HMAC algorithms are listed but no HMAC secret is configured")
            .help("HS256/384/512 need keys = [{ secret = \"${JWT_SECRET}\", algorithm = \"HS256\" }] (32+ bytes); they are never taken from a JWKS");
    }

    let jwks = raw.jwks_url.as_ref().map(|url| {
        if !secure_url(url.get_ref()) {
            c.error(url.span(), format!("jwks_url {:?} is not https", url.get_ref()))
                .expected("https://… (http:// only for localhost/loopback)")
                .help("keys fetched over plain HTTP can be replaced by anyone on the path");
        }
        Jwks {
            url: url.get_ref().clone(),
            ca: raw.jwks_ca.as_ref().map(|ca| base.join(ca.get_ref())),
            min_refresh: super::values::duration(
                c,
                raw.jwks_min_refresh.as_ref(),
                Duration::from_secs(30),
                "jwks_min_refresh",
            ),
            max_age: super::values::duration(c, raw.jwks_max_age.as_ref(), Duration::from_secs(3600), "jwks_max_age"),
        }
    });
    if jwks.is_none() && keys.is_empty() {
        c.error(span, format!("issuer {:?} has no keys", policy.issuer))
            .expected("jwks_url = \"https://…/jwks.json\" or keys = [{ pem_file = \"issuer.pem\" }]");
    }
    Some(JwtIssuer { policy, algorithms, keys, jwks })
}

fn build_key(
    c: &mut Collector<'_>,
    raw: &Spanned<RawJwtKey>,
    algorithms: &[Algorithm],
    base: &Path,
    env: &Sources<'_>,
) -> Option<VerificationKey> {
    let key = raw.get_ref();
    let stated = match &key.algorithm {
        None => None,
        Some(name) => match parse_algorithm(name.get_ref()) {
            Some(alg) if algorithms.contains(&alg) => Some(alg),
            Some(_) => {
                c.error(name.span(), format!("algorithm {:?} is not in this issuer's algorithms", name.get_ref()));
                return None;
            }
            None => {
                c.error(name.span(), format!("unknown or forbidden algorithm {:?}", name.get_ref()));
                return None;
            }
        },
    };
    let sources =
        usize::from(key.pem_file.is_some()) + usize::from(key.pem.is_some()) + usize::from(key.secret.is_some());
    if sources != 1 {
        c.error(raw.span(), "a key needs exactly one of pem_file, pem or secret");
        return None;
    }
    let result = if let Some(secret) = &key.secret {
        let Some(alg) = stated.filter(|a| is_hmac(*a)) else {
            c.error(raw.span(), "an HMAC secret needs algorithm = \"HS256\" (or HS384/HS512)")
                .help("the algorithm is pinned to the key so a token cannot choose it");
            return None;
        };
        match super::secret::resolve(secret.get_ref(), base, env) {
            Ok(secret) => VerificationKey::hmac(secret.expose().as_bytes(), key.kid.clone(), alg),
            Err(e) => {
                c.error(secret.span(), format!("secret: {e}"));
                return None;
            }
        }
    } else {
        let pem = match (&key.pem_file, &key.pem) {
            (Some(file), _) => match env.read(&base.join(file)) {
                Ok(bytes) => bytes,
                Err(e) => {
                    c.error(raw.span(), format!("cannot read {file:?}: {e}"));
                    return None;
                }
            },
            (None, Some(pem)) => pem.clone().into_bytes(),
            (None, None) => return None,
        };
        VerificationKey::from_pem(&pem, key.kid.clone(), stated, algorithms)
    };
    match result {
        Ok(key) => Some(key),
        Err(e) => {
            c.error(raw.span(), format!("unusable key: {e}"));
            None
        }
    }
}

/// Parses a route's `auth` against the configured methods.
pub(super) fn route_methods(
    c: &mut Collector<'_>,
    auth: &Auth,
    names: &[String],
    span: std::ops::Range<usize>,
) -> Option<Methods> {
    let configured = auth.configured();
    let mut methods = Methods::NONE;
    for name in names {
        match AuthMethod::parse(name) {
            // `account` is both of an account's credentials: the browser
            // session and the access token.
            Some(AuthMethod::Account) if configured.contains(AuthMethod::Account) => {
                methods = methods.with(AuthMethod::Account).with(AuthMethod::AccountToken);
            }
            Some(method) if configured.contains(method) => methods = methods.with(method),
            Some(method) => {
                let section = match method {
                    AuthMethod::Jwt => "[auth.jwt]",
                    AuthMethod::Session => "[auth.oidc]",
                    AuthMethod::ApiKey => "[auth.api_key]",
                    AuthMethod::Mtls => "[auth.mtls] (and a listener with client_ca)",
                    AuthMethod::Account | AuthMethod::AccountToken => "[auth.accounts]",
                };
                c.error(span.clone(), format!("authentication method {name:?} is not configured"))
                    .help(format!("add {section}, or remove {name:?} from this route"));
            }
            None => {
                c.error(span.clone(), format!("unknown authentication method {name:?}"))
                    .expected("\"public\", or a list of \"jwt\", \"session\", \"api_key\", \"mtls\", \"account\", \"account_token\"");
            }
        }
    }
    (!methods.is_empty()).then_some(methods)
}
