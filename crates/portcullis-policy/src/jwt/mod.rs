//! JWT bearer validation (RFC 7519 over compact JWS, RFC 7515).
//!
//! Defends against forged, replayed-after-expiry and confused tokens. The
//! decision rules, in the order they run:
//! 1. Size: a token over the configured maximum is refused unparsed.
//! 2. Shape: exactly three base64url parts; the header is a JSON object with
//!    a string `alg`. Duplicate header members are refused.
//! 3. `crit`: any critical extension is refused — none is implemented, and
//!    RFC 7515 §4.1.11 says a recipient that does not understand one must
//!    reject the token.
//! 4. Key selection from the *configured* keys only: `jku`, `x5u`, `x5c` and
//!    embedded `jwk` headers are ignored, so a token can never bring its own
//!    key. A `kid` selects keys with that id; an unknown `kid` is its own
//!    error so the caller can refresh the issuer's JWKS once and retry.
//! 5. Algorithm: the header's `alg` must be one the selected key allows
//!    (see [`keys`]); `none` never is.
//! 6. Signature, by `jsonwebtoken` on aws-lc-rs (which also refuses
//!    degenerate ECDSA signatures such as r = s = 0).
//! 7. Claims: `iss` equals the issuer, `aud` contains an accepted audience,
//!    `exp`/`nbf`/`iat` against the injected clock with the leeway, the
//!    required claims present, a subject (`sub`, else `azp`/`client_id`).
//!
//! Deployment caveat: the leeway absorbs clock skew between the issuer and
//! this host; keep both on NTP and the leeway small (the default is 30 s).

pub mod cache;
#[cfg(any(test, feature = "testing"))]
pub mod forge;
pub mod identity;
pub mod keys;

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

pub use keys::{KeyError, KeySet, VerificationKey};

use crate::deny::{Denied, Reason};
use crate::principal::{AuthMethod, Principal};

/// Why a token was refused. Messages never contain token contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a well-formed compact JWS with JSON header and claims.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Larger than the maximum.
    #[error("token is {0} bytes, above the maximum")]
    TooLarge(usize),
    /// The header lists critical extensions.
    #[error("token header lists critical extensions")]
    Crit,
    /// The header's algorithm is not allowed for the selected key(s).
    #[error("algorithm {0:?} is not allowed for the issuer's keys")]
    AlgNotAllowed(String),
    /// No key has the token's `kid`.
    #[error("no key with the token's kid")]
    UnknownKid,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// Expired.
    #[error("expired {0}s ago")]
    Expired(u64),
    /// Not valid yet.
    #[error("not valid for another {0}s")]
    NotYetValid(u64),
    /// Wrong issuer.
    #[error("issuer is not the configured one")]
    WrongIssuer,
    /// Wrong audience.
    #[error("audience does not include an accepted one")]
    WrongAudience,
    /// A required claim is missing or mistyped.
    #[error("claim {0:?} is missing or has the wrong type")]
    MissingClaim(String),
}

impl JwtError {
    /// The reason code.
    #[must_use]
    pub const fn reason(&self) -> Reason {
        match self {
            Self::Malformed(_) => Reason::JwtMalformed,
            Self::TooLarge(_) => Reason::JwtTooLarge,
            Self::Crit => Reason::JwtCrit,
            Self::AlgNotAllowed(_) => Reason::JwtAlgNotAllowed,
            Self::UnknownKid => Reason::JwtUnknownKid,
            Self::BadSignature => Reason::JwtBadSignature,
            Self::Expired(_) => Reason::JwtExpired,
            Self::NotYetValid(_) => Reason::JwtNotYetValid,
            Self::WrongIssuer => Reason::JwtWrongIssuer,
            Self::WrongAudience => Reason::JwtWrongAudience,
            Self::MissingClaim(_) => Reason::JwtMissingClaim,
        }
    }

    /// The denial for the client: 401 with an RFC 6750 challenge naming the
    /// error class, and this error (no token contents) as event detail.
    #[must_use]
    pub fn denied(&self, fingerprint: &str) -> Denied {
        Denied::new(self.reason())
            .with_detail(format!("{self} (token {fingerprint})"))
            .with_header(http::header::WWW_AUTHENTICATE, challenge(Some("invalid_token")))
    }
}

/// The `WWW-Authenticate` challenge for bearer routes.
#[must_use]
pub fn challenge(error: Option<&'static str>) -> http::HeaderValue {
    http::HeaderValue::from_static(match error {
        Some(_) => "Bearer realm=\"portcullis\", error=\"invalid_token\"",
        None => "Bearer realm=\"portcullis\"",
    })
}

/// How claims become roles and scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// Dotted paths of claims holding roles (`roles`, `groups`,
    /// `realm_access.roles`); arrays of strings or space-separated strings.
    pub roles: Vec<String>,
    /// The claim holding scopes (`scope`, space-separated, or `scp`, an array).
    pub scope: String,
    /// Renames (`"idp-admins" = "admin"`); unmapped values are kept.
    pub rename: Vec<(String, String)>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self { roles: vec!["roles".into()], scope: "scope".into(), rename: Vec::new() }
    }
}

impl ClaimMapping {
    /// The roles the claims grant: every configured path in order, renamed,
    /// deduplicated; values that are not valid names
    /// ([`crate::principal::is_valid_name`]) are dropped.
    #[must_use]
    pub fn roles(&self, claims: &Map<String, Value>) -> Vec<String> {
        let mut roles: Vec<String> = Vec::new();
        for path in &self.roles {
            for value in strings_at(claims, path) {
                let role = self.rename.iter().find(|(from, _)| *from == value).map_or(value, |(_, to)| to.clone());
                if crate::principal::is_valid_name(&role) && !roles.contains(&role) {
                    roles.push(role);
                }
            }
        }
        roles
    }

    /// The scopes the claims carry (valid names only).
    #[must_use]
    pub fn scopes(&self, claims: &Map<String, Value>) -> Vec<String> {
        let mut scopes = strings_at(claims, &self.scope);
        if scopes.is_empty() && self.scope == "scope" {
            scopes = strings_at(claims, "scp");
        }
        scopes.retain(|s| crate::principal::is_valid_name(s));
        scopes
    }
}

/// The value at a claim path: the whole path as one key first (claims named
/// like `https://example.com/roles`), then dotted steps into objects.
fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut steps = path.split('.');
    let mut current = claims.get(steps.next()?)?;
    for step in steps {
        current = current.as_object()?.get(step)?;
    }
    Some(current)
}

/// The strings at a claim path: an array's strings, or one string split on
/// whitespace and commas. Anything else yields nothing.
fn strings_at(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    match lookup(claims, path) {
        Some(Value::String(s)) => {
            s.split(|c: char| c.is_whitespace() || c == ',').filter(|v| !v.is_empty()).map(str::to_owned).collect()
        }
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// What a token must satisfy for one issuer.
#[derive(Debug, Clone)]
pub struct JwtPolicy {
    /// The exact `iss` value.
    pub issuer: String,
    /// Accepted audiences; empty means `aud` is not checked.
    pub audiences: Vec<String>,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Claims that must be present (`exp` by default).
    pub required_claims: Vec<String>,
    /// The largest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Roles and scopes.
    pub mapping: ClaimMapping,
}

impl JwtPolicy {
    /// A policy for `issuer` with the defaults: 30 s leeway, `exp` required,
    /// 8 KiB tokens, roles from `roles`, scopes from `scope`.
    #[must_use]
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: Vec::new(),
            leeway: Duration::from_secs(30),
            required_claims: vec!["exp".into()],
            max_token_bytes: 8 * 1024,
            mapping: ClaimMapping::default(),
        }
    }
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The caller.
    pub principal: Principal,
    /// The claims, for callers that need more than the principal.
    pub claims: Map<String, Value>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

/// The three parts of a compact JWS, split and decoded.
#[derive(Debug)]
pub struct Parts<'a> {
    /// `base64url(header) . base64url(payload)`, the signed bytes.
    pub signing_input: &'a str,
    /// The signature part, still base64url.
    pub signature: &'a str,
    /// The header's `alg`.
    pub alg: String,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// The decoded payload.
    pub payload: Vec<u8>,
}

/// Splits and decodes a compact JWS and checks its header (rules 1–3).
///
/// # Errors
/// [`JwtError::TooLarge`], [`JwtError::Malformed`] or [`JwtError::Crit`].
pub fn parse(token: &str, max_bytes: usize) -> Result<Parts<'_>, JwtError> {
    if token.len() > max_bytes {
        return Err(JwtError::TooLarge(token.len()));
    }
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return Err(JwtError::Malformed("not three dot-separated parts"));
    };
    let Some((header, payload)) = signing_input.split_once('.').filter(|(_, p)| !p.contains('.')) else {
        return Err(JwtError::Malformed("not three dot-separated parts"));
    };
    if header.is_empty() || signature.is_empty() {
        return Err(JwtError::Malformed("empty header or signature"));
    }
    let header_json = URL_SAFE_NO_PAD.decode(header).map_err(|_| JwtError::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_json)
        .map_err(|_| JwtError::Malformed("header is not a JSON object with alg"))?;
    if header.crit.is_some() {
        return Err(JwtError::Crit);
    }
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| JwtError::Malformed("payload is not base64url"))?;
    Ok(Parts { signing_input, signature, alg: header.alg, kid: header.kid, payload })
}

/// Checks the signature of parsed parts against a key set (rules 4–6) and
/// returns the algorithm used.
///
/// # Errors
/// [`JwtError::UnknownKid`], [`JwtError::AlgNotAllowed`] or
/// [`JwtError::BadSignature`].
pub fn verify_signature(parts: &Parts<'_>, keys: &KeySet) -> Result<Algorithm, JwtError> {
    let Some(alg) = keys::parse_algorithm(&parts.alg) else {
        return Err(JwtError::AlgNotAllowed(truncate(&parts.alg)));
    };
    let mut any_candidate = false;
    let mut any_allowed = false;
    for key in keys.candidates(parts.kid.as_deref()) {
        any_candidate = true;
        if !key.algorithms().contains(&alg) {
            continue;
        }
        any_allowed = true;
        if let Ok(true) =
            jsonwebtoken::crypto::verify(parts.signature, parts.signing_input.as_bytes(), key.decoding_key(), alg)
        {
            return Ok(alg);
        }
    }
    Err(if !any_candidate {
        JwtError::UnknownKid
    } else if !any_allowed {
        JwtError::AlgNotAllowed(truncate(&parts.alg))
    } else {
        JwtError::BadSignature
    })
}

fn truncate(value: &str) -> String {
    value.chars().take(16).filter(|c| c.is_ascii_graphic()).collect()
}

/// The `iss` claim of a token, unverified: only for choosing which issuer's
/// policy and keys to verify it with.
#[must_use]
pub fn peek_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// Verifies a token completely (rules 1–7) at time `now`.
///
/// # Errors
/// The first rule the token breaks, as a [`JwtError`].
pub fn verify(token: &str, policy: &JwtPolicy, keys: &KeySet, now: SystemTime) -> Result<Verified, JwtError> {
    let parts = parse(token, policy.max_token_bytes)?;
    verify_signature(&parts, keys)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&parts.payload).map_err(|_| JwtError::Malformed("claims are not a JSON object"))?;
    let expires_at = check_claims(&claims, policy, now)?;
    let subject = ["sub", "azp", "client_id"]
        .iter()
        .find_map(|name| claims.get(*name).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .ok_or_else(|| JwtError::MissingClaim("sub".into()))?;
    let mut principal = Principal::new(subject, AuthMethod::Jwt, token.as_bytes());
    principal.issuer = Some(policy.issuer.clone());
    principal.roles = policy.mapping.roles(&claims);
    principal.scopes = policy.mapping.scopes(&claims);
    principal.expires_at = expires_at;
    Ok(Verified { principal, claims })
}

fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<SystemTime>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => {
            let seconds = value
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| JwtError::MissingClaim(name.into()))?;
            Ok(SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs_f64(seconds.min(1e12))))
        }
    }
}

fn check_claims(
    claims: &Map<String, Value>,
    policy: &JwtPolicy,
    now: SystemTime,
) -> Result<Option<SystemTime>, JwtError> {
    for name in &policy.required_claims {
        if !claims.contains_key(name) {
            return Err(JwtError::MissingClaim(name.clone()));
        }
    }
    let exp = numeric_date(claims, "exp")?;
    if let Some(exp) = exp
        && let Ok(past) = now.duration_since(exp)
        && past > policy.leeway
    {
        return Err(JwtError::Expired(past.as_secs()));
    }
    for name in ["nbf", "iat"] {
        if let Some(at) = numeric_date(claims, name)?
            && let Ok(ahead) = at.duration_since(now)
            && ahead > policy.leeway
        {
            return Err(JwtError::NotYetValid(ahead.as_secs()));
        }
    }
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == policy.issuer => {}
        Some(Value::String(_)) => return Err(JwtError::WrongIssuer),
        _ => return Err(JwtError::MissingClaim("iss".into())),
    }
    if !policy.audiences.is_empty() {
        let accepted = |aud: &str| policy.audiences.iter().any(|a| a == aud);
        let ok = match claims.get("aud") {
            Some(Value::String(aud)) => accepted(aud),
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
            None => return Err(JwtError::MissingClaim("aud".into())),
            Some(_) => false,
        };
        if !ok {
            return Err(JwtError::WrongAudience);
        }
    }
    Ok(exp)
}

#[cfg(test)]
mod tests;
