//! The JWT attack suite at the policy level: every token here must be refused
//! with the right reason, and only the honest ones accepted.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::forge::{TestKey, part, sign_with};
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

/// The attack table: (name, token, expected error class).
fn attacks() -> Vec<(&'static str, String, Reason)> {
    let k = keys();
    let good = k.rsa.token(&claims());
    let (signing_input, signature) = good.rsplit_once('.').unwrap();
    let (header_b64, _) = signing_input.split_once('.').unwrap();
    let mut tampered_claims = claims();
    tampered_claims["roles"] = json!(["admin"]);
    let mut tampered_sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    tampered_sig[10] ^= 1;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        k.rsa.token(&c)
    };
    // HS256 signed with the RSA public key's PEM bytes as the secret.
    let confused = sign_with(
        &EncodingKey::from_secret(k.rsa.public_pem.as_deref().unwrap().as_bytes()),
        Algorithm::HS256,
        &json!({"alg": "HS256", "kid": "rsa-1"}),
        &claims(),
    );
    // Same, with the JWK's modulus bytes.
    let confused_n = sign_with(
        &EncodingKey::from_secret(k.rsa.jwk["n"].as_str().unwrap().as_bytes()),
        Algorithm::HS256,
        &json!({"alg": "HS256"}),
        &claims(),
    );
    // ECDSA "psychic signature": r = s = 0.
    let ec_header = k.ec.header();
    let zero_sig = URL_SAFE_NO_PAD.encode([0u8; 64]);
    let psychic = format!("{}.{}.{zero_sig}", part(&ec_header), part(&claims()));
    let attacker_jwk = k.attacker.jwk.clone();
    vec![
        ("alg none", format!("{}.{}.", part(&json!({"alg": "none"})), part(&claims())), Reason::JwtMalformed),
        (
            "alg none with signature",
            format!("{}.{}.c2ln", part(&json!({"alg": "none", "kid": "rsa-1"})), part(&claims())),
            Reason::JwtAlgNotAllowed,
        ),
        ("alg None", format!("{}.{}.c2ln", part(&json!({"alg": "None"})), part(&claims())), Reason::JwtAlgNotAllowed),
        ("HS256 with the RSA public key (PEM)", confused, Reason::JwtAlgNotAllowed),
        ("HS256 with the RSA modulus, no kid", confused_n, Reason::JwtAlgNotAllowed),
        ("unknown kid", k.rsa.sign(&json!({"alg": "RS256", "kid": "nope"}), &claims()), Reason::JwtUnknownKid),
        (
            "kid path traversal",
            k.rsa.sign(&json!({"alg": "RS256", "kid": "../../../../dev/null"}), &claims()),
            Reason::JwtUnknownKid,
        ),
        (
            "kid SQL",
            k.rsa.sign(&json!({"alg": "RS256", "kid": "x' UNION SELECT 'secret' --"}), &claims()),
            Reason::JwtUnknownKid,
        ),
        ("expired", with(&|c| c["exp"] = json!(NOW - 3600)), Reason::JwtExpired),
        ("not yet valid", with(&|c| c["nbf"] = json!(NOW + 3600)), Reason::JwtNotYetValid),
        ("issued in the future", with(&|c| c["iat"] = json!(NOW + 3600)), Reason::JwtNotYetValid),
        ("wrong iss", with(&|c| c["iss"] = json!("https://evil.example/")), Reason::JwtWrongIssuer),
        ("wrong aud", with(&|c| c["aud"] = json!("other")), Reason::JwtWrongAudience),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            Reason::JwtMissingClaim,
        ),
        ("exp as string", with(&|c| c["exp"] = json!("tomorrow")), Reason::JwtMissingClaim),
        (
            "no aud",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            Reason::JwtMissingClaim,
        ),
        (
            "no sub",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            Reason::JwtMissingClaim,
        ),
        ("tampered payload", format!("{header_b64}.{}.{signature}", part(&tampered_claims)), Reason::JwtBadSignature),
        (
            "tampered signature",
            format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&tampered_sig)),
            Reason::JwtBadSignature,
        ),
        ("signature from another key with the same kid", k.attacker.token(&claims()), Reason::JwtBadSignature),
        ("ECDSA r=s=0", psychic, Reason::JwtBadSignature),
        (
            "jku to attacker",
            k.attacker
                .sign(&json!({"alg": "RS256", "kid": "evil", "jku": "https://evil.example/jwks.json"}), &claims()),
            Reason::JwtUnknownKid,
        ),
        (
            "x5u to attacker",
            k.attacker.sign(&json!({"alg": "RS256", "kid": "evil", "x5u": "https://evil.example/cert.pem"}), &claims()),
            Reason::JwtUnknownKid,
        ),
        (
            "embedded jwk, attacker kid",
            k.attacker.sign(&json!({"alg": "RS256", "kid": "evil", "jwk": attacker_jwk}), &claims()),
            Reason::JwtUnknownKid,
        ),
        (
            "embedded jwk, victim kid",
            k.attacker.sign(&json!({"alg": "RS256", "kid": "rsa-1", "jwk": k.attacker.jwk}), &claims()),
            Reason::JwtBadSignature,
        ),
        (
            "crit header",
            k.rsa.sign(&json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1}), &claims()),
            Reason::JwtCrit,
        ),
        ("empty crit", k.rsa.sign(&json!({"alg": "RS256", "kid": "rsa-1", "crit": []}), &claims()), Reason::JwtCrit),
        ("oversized", with(&|c| c["pad"] = json!("x".repeat(10_000))), Reason::JwtTooLarge),
        ("two parts", format!("{}.{}", part(&k.rsa.header()), part(&claims())), Reason::JwtMalformed),
        ("four parts", format!("{good}.x"), Reason::JwtMalformed),
        (
            "header not JSON",
            format!("{}.{}.{signature}", URL_SAFE_NO_PAD.encode("alg=RS256"), part(&claims())),
            Reason::JwtMalformed,
        ),
        (
            "duplicate alg",
            format!("{}.{}.{signature}", URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","alg":"none"}"#), part(&claims())),
            Reason::JwtMalformed,
        ),
        ("padded base64", format!("{header_b64}=.{}.{signature}", part(&claims())), Reason::JwtMalformed),
        ("claims not an object", k.rsa.sign(&k.rsa.header(), &json!(["sub", "alice"])), Reason::JwtMalformed),
        ("empty", String::new(), Reason::JwtMalformed),
    ]
}

#[test]
fn every_attack_is_refused_with_its_reason() {
    let mut failures = Vec::new();
    for (name, token, expected) in attacks() {
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
    c["realm_access"] = json!({"roles": ["idp-admins", "editor"]});
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
