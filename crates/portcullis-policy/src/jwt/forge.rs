//! Token forging for tests and benchmarks (feature `testing`): real keys,
//! real signatures, and deliberately broken tokens for the attack suite.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::keys::{KeySet, VerificationKey};
use crate::deny::Reason;

/// A signing key with its public half.
#[derive(Debug, Clone)]
pub struct TestKey {
    /// The algorithm it signs with.
    pub alg: Algorithm,
    /// The key id it is published under.
    pub kid: String,
    /// The public JWK (with `kid` and `alg`).
    pub jwk: Value,
    /// The public key as PEM (SPKI), for asymmetric keys.
    pub public_pem: Option<String>,
    /// The private key as PEM (PKCS#8), or the HMAC secret.
    pub private: Vec<u8>,
}

impl TestKey {
    /// A fresh key for `alg` (RS*/PS* use 2048-bit RSA).
    ///
    /// # Panics
    /// When key generation fails (test-only code).
    #[must_use]
    #[allow(clippy::expect_used, clippy::panic)]
    pub fn generate(alg: Algorithm, kid: &str) -> Self {
        use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256};
        let (pair, encoding) = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let mut secret = vec![0u8; 48];
                aws_lc_rs::rand::fill(&mut secret).expect("random");
                let jwk = serde_json::json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(&secret), "kid": kid, "alg": format!("{alg:?}")});
                return Self { alg, kid: kid.into(), jwk, public_pem: None, private: secret };
            }
            Algorithm::ES256 => (KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256), 0),
            Algorithm::ES384 => (KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384), 0),
            Algorithm::EdDSA => (KeyPair::generate_for(&PKCS_ED25519), 1),
            _ => (KeyPair::generate_for(&PKCS_RSA_SHA256), 2),
        };
        let pair = pair.expect("key generation");
        let private = pair.serialize_pem().into_bytes();
        let key = match encoding {
            0 => EncodingKey::from_ec_pem(&private),
            1 => EncodingKey::from_ed_pem(&private),
            _ => EncodingKey::from_rsa_pem(&private),
        }
        .expect("encoding key");
        let mut jwk = if encoding == 1 {
            // jsonwebtoken cannot derive an Ed25519 JWK; the raw public key is the `x`.
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw())})
        } else {
            serde_json::to_value(Jwk::from_encoding_key(&key, alg).expect("jwk")).expect("json")
        };
        jwk["kid"] = Value::String(kid.into());
        jwk["alg"] = Value::String(format!("{alg:?}"));
        Self { alg, kid: kid.into(), jwk, public_pem: Some(pair.public_key_pem()), private }
    }

    /// The jsonwebtoken signing key.
    ///
    /// # Panics
    /// When the stored key does not parse (test-only code).
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn encoding_key(&self) -> EncodingKey {
        match self.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(&self.private),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&self.private).expect("ec"),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&self.private).expect("ed"),
            _ => EncodingKey::from_rsa_pem(&self.private).expect("rsa"),
        }
    }

    /// The default header: `alg` and `kid`.
    #[must_use]
    pub fn header(&self) -> Value {
        serde_json::json!({"alg": format!("{:?}", self.alg), "typ": "JWT", "kid": self.kid})
    }

    /// Signs `claims` under `header` with this key.
    #[must_use]
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        sign_with(&self.encoding_key(), self.alg, header, claims)
    }

    /// Signs `claims` with the default header.
    #[must_use]
    pub fn token(&self, claims: &Value) -> String {
        self.sign(&self.header(), claims)
    }

    /// A JWKS document publishing this key.
    #[must_use]
    pub fn jwks(keys: &[&Self]) -> Value {
        serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
    }

    /// A key set holding this key's public half.
    ///
    /// # Panics
    /// When the JWK does not load (test-only code).
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn key_set(keys: &[&Self]) -> KeySet {
        let algs: Vec<Algorithm> = keys.iter().map(|k| k.alg).collect();
        KeySet::new(
            keys.iter()
                .map(|k| {
                    let jwk: Jwk = serde_json::from_value(k.jwk.clone()).expect("jwk");
                    VerificationKey::from_jwk(&jwk, &algs).expect("key")
                })
                .collect(),
        )
    }
}

/// Encodes a JSON value as a base64url part.
#[must_use]
pub fn part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Signs header and claims as given (the header is not checked against the
/// key: that is the point of forging).
///
/// # Panics
/// When signing fails (test-only code).
#[must_use]
#[allow(clippy::expect_used)]
pub fn sign_with(key: &EncodingKey, alg: Algorithm, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", part(header), part(claims));
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("sign");
    format!("{input}.{signature}")
}

/// The attack suite: tokens that must each be refused with the reason
/// given, built against a victim's RSA and EC keys (published with kids
/// `rsa-1` and `ec-1`) and an attacker's RSA key that reuses the kid `rsa-1`.
/// `claims` are honest claims the victim's policy accepts at `now` (Unix
/// seconds); `max_token_bytes` is the policy's size limit.
///
/// # Panics
/// On malformed inputs (test-only code).
#[must_use]
#[allow(clippy::unwrap_used, clippy::too_many_lines)]
pub fn attacks(
    rsa: &TestKey,
    ec: &TestKey,
    attacker: &TestKey,
    claims: &Value,
    now: u64,
    max_token_bytes: usize,
) -> Vec<(&'static str, String, Reason)> {
    let claims = || claims.clone();
    let good = rsa.token(&claims());
    let (signing_input, signature) = good.rsplit_once('.').unwrap();
    let (header_b64, _) = signing_input.split_once('.').unwrap();
    let mut tampered_claims = claims();
    tampered_claims["roles"] = json!(["admin"]);
    let mut tampered_sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    tampered_sig[10] ^= 1;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        rsa.token(&c)
    };
    // HS256 signed with the RSA public key's PEM bytes as the secret.
    let confused = sign_with(
        &EncodingKey::from_secret(rsa.public_pem.as_deref().unwrap().as_bytes()),
        Algorithm::HS256,
        &json!({"alg": "HS256", "kid": "rsa-1"}),
        &claims(),
    );
    // Same, with the JWK's modulus bytes.
    let confused_n = sign_with(
        &EncodingKey::from_secret(rsa.jwk["n"].as_str().unwrap().as_bytes()),
        Algorithm::HS256,
        &json!({"alg": "HS256"}),
        &claims(),
    );
    // ECDSA "psychic signature": r = s = 0.
    let ec_header = ec.header();
    let zero_sig = URL_SAFE_NO_PAD.encode([0u8; 64]);
    let psychic = format!("{}.{}.{zero_sig}", part(&ec_header), part(&claims()));
    let attacker_jwk = attacker.jwk.clone();
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
        ("unknown kid", rsa.sign(&json!({"alg": "RS256", "kid": "nope"}), &claims()), Reason::JwtUnknownKid),
        (
            "kid path traversal",
            rsa.sign(&json!({"alg": "RS256", "kid": "../../../../dev/null"}), &claims()),
            Reason::JwtUnknownKid,
        ),
        (
            "kid SQL",
            rsa.sign(&json!({"alg": "RS256", "kid": "x' UNION SELECT 'secret' --"}), &claims()),
            Reason::JwtUnknownKid,
        ),
        ("expired", with(&|c| c["exp"] = json!(now - 3600)), Reason::JwtExpired),
        ("not yet valid", with(&|c| c["nbf"] = json!(now + 3600)), Reason::JwtNotYetValid),
        ("issued in the future", with(&|c| c["iat"] = json!(now + 3600)), Reason::JwtNotYetValid),
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
        ("signature from another key with the same kid", attacker.token(&claims()), Reason::JwtBadSignature),
        ("ECDSA r=s=0", psychic, Reason::JwtBadSignature),
        (
            "jku to attacker",
            attacker.sign(&json!({"alg": "RS256", "kid": "evil", "jku": "https://evil.example/jwks.json"}), &claims()),
            Reason::JwtUnknownKid,
        ),
        (
            "x5u to attacker",
            attacker.sign(&json!({"alg": "RS256", "kid": "evil", "x5u": "https://evil.example/cert.pem"}), &claims()),
            Reason::JwtUnknownKid,
        ),
        (
            "embedded jwk, attacker kid",
            attacker.sign(&json!({"alg": "RS256", "kid": "evil", "jwk": attacker_jwk}), &claims()),
            Reason::JwtUnknownKid,
        ),
        (
            "embedded jwk, victim kid",
            attacker.sign(&json!({"alg": "RS256", "kid": "rsa-1", "jwk": attacker.jwk}), &claims()),
            Reason::JwtBadSignature,
        ),
        (
            "crit header",
            rsa.sign(&json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1}), &claims()),
            Reason::JwtCrit,
        ),
        ("empty crit", rsa.sign(&json!({"alg": "RS256", "kid": "rsa-1", "crit": []}), &claims()), Reason::JwtCrit),
        ("oversized", with(&|c| c["pad"] = json!("x".repeat(max_token_bytes))), Reason::JwtTooLarge),
        ("two parts", format!("{}.{}", part(&rsa.header()), part(&claims())), Reason::JwtMalformed),
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
        ("claims not an object", rsa.sign(&rsa.header(), &json!(["sub", "alice"])), Reason::JwtMalformed),
        ("empty", String::new(), Reason::JwtMalformed),
    ]
}
