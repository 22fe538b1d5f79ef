//! The JWT attack suite at the policy level: every token here must be refused
//! with the right reason, and only the honest ones accepted.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use super::forge::{TestKey, attacks};
use super::*;

const ISS: &str = "https://idp.example.test/";
const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

struct Keys {
    rsa: TestKey,
    ec: TestKey,
    ed: TestKey,
    attacker: TestKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: TestKey::generate(Algorithm::RS256, "rsa-1"),
        ec: TestKey::generate(Algorithm::ES256, "ec-1"),
        ed: TestKey::generate(Algorithm::EdDSA, "ed-1"),
        attacker: TestKey::generate(Algorithm::RS256, "rsa-1"),
    })
}

fn key_set() -> KeySet {
    let k = keys();
    TestKey::key_set(&[&k.rsa, &k.ec, &k.ed])
}

fn policy() -> JwtPolicy {
    let mut policy = JwtPolicy::new(ISS);
    policy.audiences = vec!["api".into()];
    policy.mapping.roles = vec!["roles".into(), "realm_access.roles".into()];
    policy
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": "api", "sub": "alice", "exp": NOW + 300, "iat": NOW - 10, "roles": ["editor"], "scope": "orders:read orders:write"})
}

fn check(token: &str) -> Result<Verified, JwtError> {
    verify(token, &policy(), &key_set(), now())
}

#[test]
fn honest_tokens_of_every_key_type_verify() {
    let k = keys();
    for key in [&k.rsa, &k.ec, &k.ed] {
        let verified = check(&key.token(&claims())).unwrap_or_else(|e| panic!("{:?}: {e}", key.alg));
        assert_eq!(verified.principal.subject, "alice");
        assert_eq!(verified.principal.roles, ["editor"]);
        assert_eq!(verified.principal.scopes, ["orders:read", "orders:write"]);
        assert_eq!(verified.principal.issuer.as_deref(), Some(ISS));
        assert_eq!(verified.principal.expires_at, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW + 300)));
    }
}

#[test]
fn every_rsa_and_ec_algorithm_verifies_with_a_key_allowing_it() {
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
    ] {
        let key = TestKey::generate(alg, "k");
        let set = TestKey::key_set(&[&key]);
        let verified = verify(&key.token(&claims()), &policy(), &set, now());
        assert!(verified.is_ok(), "{alg:?}: {verified:?}");
    }
}

#[test]
fn every_attack_is_refused_with_its_reason() {
    let mut failures = Vec::new();
    let k = keys();
    for (name, token, expected) in attacks(&k.rsa, &k.ec, &k.attacker, &claims(), NOW, policy().max_token_bytes) {
        match check(&token) {
            Ok(_) => failures.push(format!("{name}: ACCEPTED")),
            Err(e) if e.reason() != expected => {
                failures.push(format!("{name}: {} ({e}), expected {expected}", e.reason()))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn leeway_tolerates_small_skew_only() {
    let k = keys();
    let mut c = claims();
    c["exp"] = json!(NOW - 20);
    c["nbf"] = json!(NOW + 20);
    assert!(check(&k.ed.token(&c)).is_ok());
    c["exp"] = json!(NOW - 31);
    assert_eq!(check(&k.ed.token(&c)).unwrap_err(), JwtError::Expired(31));
}

#[test]
fn audience_lists_and_claim_mapping() {
    let k = keys();
    let mut c = claims();
    c["aud"] = json!(["other", "api"]);
    c["realm_access"] = json!({"roles": ["idp-admins", "editor", "viewer,admin", "x y", ""]});
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["a", "b"]);
    let mut p = policy();
    p.mapping.rename = vec![("idp-admins".into(), "admin".into())];
    let verified = verify(&k.ec.token(&c), &p, &key_set(), now()).unwrap();
    assert_eq!(verified.principal.roles, ["editor", "admin"]);
    assert_eq!(verified.principal.scopes, ["a", "b"]);
}

#[test]
fn errors_and_denials_never_carry_token_contents() {
    let k = keys();
    let mut c = claims();
    c["sub"] = json!("secret-subject-xyz");
    c["exp"] = json!(NOW - 3600);
    let token = k.rsa.token(&c);
    let err = check(&token).unwrap_err();
    let denied = err.denied(&crate::principal::fingerprint(token.as_bytes()));
    let detail = denied.detail.as_deref().unwrap_or_default().to_owned();
    assert!(!detail.contains("secret-subject") && !detail.contains(&token[..20]), "{detail}");
    assert_eq!(denied.status(), http::StatusCode::UNAUTHORIZED);
    assert!(
        denied
            .headers
            .iter()
            .any(|(n, v)| n == http::header::WWW_AUTHENTICATE && v.to_str().unwrap().contains("invalid_token"))
    );
}

#[test]
fn short_hmac_secrets_and_mismatched_configured_algorithms_are_refused() {
    assert_eq!(VerificationKey::hmac(&[7u8; 31], None, Algorithm::HS256).unwrap_err(), KeyError::ShortSecret(31));
    assert!(VerificationKey::hmac(&[7u8; 32], None, Algorithm::HS256).is_ok());
    assert!(matches!(VerificationKey::hmac(&[7u8; 32], None, Algorithm::RS256), Err(KeyError::NoAlgorithm { .. })));
    let k = keys();
    // An RSA PEM key when only ES256 is configured.
    let pem = k.rsa.public_pem.as_deref().unwrap().as_bytes();
    assert!(matches!(
        VerificationKey::from_pem(pem, None, None, &[Algorithm::ES256]),
        Err(KeyError::NoAlgorithm { .. })
    ));
    let key = VerificationKey::from_pem(pem, None, None, &[Algorithm::RS256, Algorithm::ES256]).unwrap();
    assert_eq!(key.algorithms(), [Algorithm::RS256]);
    // A short oct key in a JWKS is skipped, not used.
    let jwks = json!({"keys": [{"kty": "oct", "k": "c2hvcnQ", "kid": "s"}, k.ec.jwk, {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"}, {"kty": "RSA", "use": "enc", "n": k.rsa.jwk["n"], "e": "AQAB", "kid": "enc"}]});
    let (set, skipped) =
        KeySet::from_jwks(jwks.to_string().as_bytes(), &[Algorithm::ES256, Algorithm::HS256, Algorithm::RS256])
            .unwrap();
    assert_eq!(set.len(), 1, "{skipped:?}");
    assert_eq!(skipped.len(), 3);
}

#[test]
fn a_key_without_kid_verifies_tokens_naming_any_kid() {
    let k = keys();
    let pem = k.ed.public_pem.as_deref().unwrap().as_bytes();
    let set = KeySet::new(vec![VerificationKey::from_pem(pem, None, None, &[Algorithm::EdDSA]).unwrap()]);
    assert!(verify(&k.ed.token(&claims()), &policy(), &set, now()).is_ok());
    let header = json!({"alg": "EdDSA"});
    assert!(verify(&k.ed.sign(&header, &claims()), &policy(), &set, now()).is_ok());
}

#[test]
fn peeking_the_issuer_does_not_verify_anything() {
    let k = keys();
    assert_eq!(peek_issuer(&k.rsa.token(&claims())).as_deref(), Some(ISS));
    assert_eq!(peek_issuer("garbage"), None);
}
