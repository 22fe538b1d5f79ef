//! JWT header and claim parsing (`portcullis_policy::jwt`).
//!
//! Input lines: a header JSON, a claims JSON, a raw token, a JWKS document.
//! The header and claims are signed with the configured HS256 key (kid
//! `k1`), so every claim check is reached.
//!
//! Properties:
//! - parsing a raw token never panics, and its parts rebuild the token;
//! - a token that verifies has `alg: HS256` as every JSON reader sees it
//!   (the last of duplicate members too), no `crit`, no other `kid`; an
//!   `iss` equal to the issuer; an `aud` that includes the audience; an
//!   `exp` not past and an `nbf`/`iat` not ahead (beyond the leeway); its
//!   subject is the first non-empty of `sub`, `azp`, `client_id`, and its
//!   roles and scopes are valid names;
//! - `peek_issuer` and JWKS parsing never panic.

#![no_main]

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use portcullis_policy::jwt::{self, JwtPolicy, KeySet, VerificationKey};
use portcullis_policy::principal::is_valid_name;
use serde_json::Value;

const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret!";
const ISSUER: &str = "https://idp.example/";
const NOW: u64 = 1_800_000_000;

fn policy() -> JwtPolicy {
    let mut policy = JwtPolicy::new(ISSUER);
    policy.audiences = vec!["api".into()];
    policy.mapping.roles = vec!["roles".into(), "realm_access.roles".into()];
    policy
}

fn seconds(value: Option<&Value>) -> Option<f64> {
    value.and_then(Value::as_f64)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let header = lines.next().unwrap_or_default();
    let claims = lines.next().unwrap_or_default();
    let raw = lines.next().unwrap_or_default();
    let jwks = lines.next().unwrap_or_default();

    let policy = policy();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    let keys = KeySet::new(vec![VerificationKey::hmac(SECRET, Some("k1".into()), Algorithm::HS256).unwrap()]);

    if let Ok(parts) = jwt::parse(raw, policy.max_token_bytes) {
        assert_eq!(format!("{}.{}", parts.signing_input, parts.signature), raw);
    }
    let _ = jwt::peek_issuer(raw);
    let _ = jwt::verify(raw, &policy, &keys, now);
    let _ = KeySet::from_jwks(jwks.as_bytes(), &[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]);

    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    let Ok(signature) = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256) else { return };
    let token = format!("{signing_input}.{signature}");
    let Ok(verified) = jwt::verify(&token, &policy, &keys, now) else { return };

    // A header serde_json cannot hold as a value (a number out of range in an
    // ignored member) is still judged by the rest.
    if let Ok(header) = serde_json::from_str::<Value>(header) {
        assert_eq!(header.get("alg").and_then(Value::as_str), Some("HS256"), "alg as a JSON reader sees it: {header}");
        assert!(header.get("crit").is_none());
        assert!(header.get("kid").is_none_or(|k| k.as_str() == Some("k1")), "kid {header}");
    }

    let claims: Value = serde_json::from_str(claims).unwrap();
    assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER));
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == "api",
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some("api")),
        _ => false,
    };
    assert!(aud_ok, "audience {claims}");
    let leeway = policy.leeway.as_secs_f64();
    let now = NOW as f64;
    let exp = seconds(claims.get("exp")).unwrap_or_else(|| panic!("exp required: {claims}"));
    assert!(exp + leeway >= now, "expired {claims}");
    for name in ["nbf", "iat"] {
        if let Some(at) = claims.get(name) {
            let at = at.as_f64().unwrap_or_else(|| panic!("{name} not a number: {claims}"));
            assert!(at <= now + leeway + 1.0, "{name} ahead: {claims}");
        }
    }
    let subject = ["sub", "azp", "client_id"]
        .iter()
        .find_map(|n| claims.get(*n).and_then(Value::as_str).filter(|s| !s.is_empty()));
    assert_eq!(Some(verified.principal.subject.as_str()), subject);
    for name in verified.principal.roles.iter().chain(&verified.principal.scopes) {
        assert!(is_valid_name(name), "{name:?}");
    }
});
