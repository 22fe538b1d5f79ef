//! Published JWS examples (RFC 7515 appendix A, RFC 7520 §4, RFC 8037 A.4)
//! verified with their published keys, with the clock fixed to their time.
//! The fixture and how it was checked independently: tests/fixtures/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::Jwk;
use portcullis_policy::jwt::{self, JwtError, JwtPolicy, KeySet, VerificationKey};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    source: String,
    alg: String,
    jwk: Jwk,
    token: String,
    payload_is_json: bool,
    exp: Option<u64>,
    supported: bool,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("fixtures/rfc-jws-vectors.json");
    serde_json::from_str::<Fixture>(text).unwrap().vectors
}

fn key_set(v: &Vector) -> KeySet {
    let alg: Algorithm = v.alg.parse().unwrap();
    KeySet::new(vec![VerificationKey::from_jwk(&v.jwk, &[alg]).unwrap_or_else(|e| panic!("{}: {e}", v.source))])
}

#[test]
fn every_supported_vector_verifies_and_breaks_when_altered() {
    let supported: Vec<Vector> = vectors().into_iter().filter(|v| v.supported).collect();
    assert_eq!(supported.len(), 7, "7515 A.1-A.3, 7520 4.1/4.2/4.4, 8037 A.4");
    for v in &supported {
        let keys = key_set(v);
        let parts = jwt::parse(&v.token, 16 * 1024).unwrap_or_else(|e| panic!("{}: {e}", v.source));
        assert_eq!(jwt::verify_signature(&parts, &keys).map(|a| format!("{a:?}")), Ok(v.alg.clone()), "{}", v.source);

        // One flipped character in the signature or payload must fail.
        let (input, signature) = v.token.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let bad = format!("{input}.{flipped}{}", &signature[1..]);
        let parts = jwt::parse(&bad, 16 * 1024).unwrap();
        assert_eq!(jwt::verify_signature(&parts, &keys), Err(JwtError::BadSignature), "{}", v.source);
    }
}

#[test]
fn unsupported_es512_vectors_are_refused_not_misverified() {
    for v in vectors().into_iter().filter(|v| !v.supported) {
        assert_eq!(v.alg, "ES512", "{}", v.source);
        // P-521 keys are skipped when loading; the token's alg is unknown to us.
        assert!(VerificationKey::from_jwk(&v.jwk, &[Algorithm::ES256, Algorithm::ES384]).is_err());
        let parts = jwt::parse(&v.token, 16 * 1024).unwrap();
        assert!(matches!(jwt::verify_signature(&parts, &KeySet::default()), Err(JwtError::AlgNotAllowed(_))));
    }
}

#[test]
fn rfc7515_claims_hold_at_their_issue_time_and_expire_after() {
    for v in vectors().into_iter().filter(|v| v.supported && v.payload_is_json) {
        let exp = v.exp.expect("exp");
        let keys = key_set(&v);
        let mut policy = JwtPolicy::new("joe");
        policy.leeway = Duration::ZERO;
        let at = |t: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(t);
        // At issue time signature, iss and exp pass; the examples carry no
        // subject, which the gateway requires to name the caller.
        assert_eq!(
            jwt::verify(&v.token, &policy, &keys, at(exp - 60)).unwrap_err(),
            JwtError::MissingClaim("sub".into()),
            "{}",
            v.source
        );
        assert_eq!(
            jwt::verify(&v.token, &policy, &keys, at(exp + 3600)).unwrap_err(),
            JwtError::Expired(3600),
            "{}",
            v.source
        );
        policy.issuer = "someone-else".into();
        assert_eq!(
            jwt::verify(&v.token, &policy, &keys, at(exp - 60)).unwrap_err(),
            JwtError::WrongIssuer,
            "{}",
            v.source
        );
    }
}
