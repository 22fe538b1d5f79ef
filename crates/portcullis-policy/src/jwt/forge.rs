//! Token forging for tests and benchmarks (feature `testing`): real keys,
//! real signatures, and deliberately broken tokens for the attack suite.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

use super::keys::{KeySet, VerificationKey};

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
