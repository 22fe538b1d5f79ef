//! The identity token the gateway signs for upstreams (`identity = "jwt"`).
//!
//! Instead of trusting plain `X-Portcullis-*` headers — which anyone who can
//! reach the upstream directly could forge — the upstream verifies a
//! short-lived EdDSA JWT with the gateway's public key, published as a JWKS
//! at `/.portcullis/jwks.json`. The token names the upstream as audience so
//! it cannot be replayed against another service, and lives 60 s by default.

use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::principal::Principal;

/// Why the signing key is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identity signing key: {0}")]
pub struct SignerError(String);

/// Signs identity tokens.
pub struct IdentitySigner {
    key: EncodingKey,
    kid: String,
    public: Vec<u8>,
    issuer: String,
    ttl: Duration,
}

impl std::fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySigner").field("kid", &self.kid).field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: u64,
    exp: u64,
    amr: [&'a str; 1],
    roles: &'a [String],
    /// OAuth style: space-separated.
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    idp: Option<&'a str>,
}

impl IdentitySigner {
    /// A new random Ed25519 key as PKCS#8 DER, to be stored by the caller.
    ///
    /// # Errors
    /// When the system random generator fails.
    pub fn generate_pkcs8() -> Result<Vec<u8>, SignerError> {
        Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| SignerError("could not generate a key".into()))
    }

    /// A signer from a PKCS#8 Ed25519 key.
    ///
    /// # Errors
    /// When the DER is not an Ed25519 PKCS#8 key.
    pub fn from_pkcs8(der: &[u8], issuer: impl Into<String>, ttl: Duration) -> Result<Self, SignerError> {
        let pair =
            Ed25519KeyPair::from_pkcs8(der).map_err(|e| SignerError(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = crate::principal::fingerprint(&public);
        Ok(Self { key: EncodingKey::from_ed_der(der), kid, public, issuer: issuer.into(), ttl })
    }

    /// The key id in tokens and the JWKS.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWKS document upstreams verify with.
    #[must_use]
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(&self.public),
        }]})
    }

    /// Signs the identity of `principal` for the upstream `audience`.
    ///
    /// # Errors
    /// When signing fails (a broken key; never for a key that loaded).
    pub fn sign(&self, principal: &Principal, audience: &str, now: SystemTime) -> Result<String, SignerError> {
        let iat = crate::clock::unix_secs(now);
        let claims = Claims {
            iss: &self.issuer,
            aud: audience,
            sub: &principal.subject,
            iat,
            exp: iat + self.ttl.as_secs(),
            amr: [principal.method.as_str()],
            roles: &principal.roles,
            scope: principal.scopes.join(" "),
            idp: principal.issuer.as_deref(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| SignerError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{JwtPolicy, KeySet, verify};
    use crate::principal::AuthMethod;

    #[test]
    fn tokens_verify_with_the_published_jwks_only_for_their_audience() {
        let der = IdentitySigner::generate_pkcs8().unwrap();
        let signer = IdentitySigner::from_pkcs8(&der, "portcullis", Duration::from_secs(60)).unwrap();
        let mut p = Principal::new("alice", AuthMethod::Session, b"c");
        p.roles = vec!["editor".into()];
        p.scopes = vec!["orders:read".into(), "orders:write".into()];
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let token = signer.sign(&p, "orders", now).unwrap();

        let jwks = serde_json::to_vec(&signer.jwks()).unwrap();
        let (keys, skipped) = KeySet::from_jwks(&jwks, &[Algorithm::EdDSA]).unwrap();
        assert!(skipped.is_empty());
        let mut policy = JwtPolicy::new("portcullis");
        policy.audiences = vec!["orders".into()];
        let verified = verify(&token, &policy, &keys, now).unwrap();
        assert_eq!(verified.principal.subject, "alice");
        assert_eq!(verified.principal.roles, ["editor"]);
        assert_eq!(verified.principal.scopes, ["orders:read", "orders:write"], "read back by the default mapping");
        assert_eq!(verified.claims["amr"], serde_json::json!(["session"]));

        policy.audiences = vec!["billing".into()];
        assert!(verify(&token, &policy, &keys, now).is_err());
        let other = IdentitySigner::from_pkcs8(
            &IdentitySigner::generate_pkcs8().unwrap(),
            "portcullis",
            Duration::from_secs(60),
        )
        .unwrap();
        assert_ne!(other.kid(), signer.kid());
        assert!(
            verify(
                &token,
                &policy,
                &KeySet::from_jwks(&serde_json::to_vec(&other.jwks()).unwrap(), &[Algorithm::EdDSA]).unwrap().0,
                now
            )
            .is_err()
        );
        assert!(verify(&token, &JwtPolicy::new("portcullis"), &keys, now + Duration::from_secs(120)).is_err());
    }
}
