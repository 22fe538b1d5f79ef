//! The identity token the gateway signs for upstreams (`identity = "jwt"`).
//!
//! Instead of trusting plain `X-Portcullis-*` headers — which anyone who can
//! reach the upstream directly could forge — the upstream verifies a
//! short-lived EdDSA JWT with the gateway's public key, published as a JWKS
//! at `/.portcullis/jwks.json`. The token names the upstream as audience so
//! it cannot be replayed against another service, and lives 60 s by default.
//!
//! Key rotation: a replaced key's public half stays in the JWKS (a
//! [`RetiredKey`]) until every token it signed has expired, so upstreams that
//! cache the JWKS and tokens in flight keep verifying; the gateway decides
//! when to rotate and keeps the retired keys (`auth::GatewaySigner`).

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
    retired: Vec<RetiredKey>,
}

/// The public half of a replaced signing key, published until its last
/// tokens have expired.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetiredKey {
    /// Its key id.
    pub kid: String,
    /// The Ed25519 public key, base64url (the JWK's `x`).
    pub x: String,
    /// Unix seconds after which no token it signed is valid any more.
    pub publish_until: u64,
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
        Ok(Self { key: EncodingKey::from_ed_der(der), kid, public, issuer: issuer.into(), ttl, retired: Vec::new() })
    }

    /// This signer, also publishing `retired` keys while they are due.
    #[must_use]
    pub fn with_retired(mut self, retired: Vec<RetiredKey>) -> Self {
        self.retired = retired;
        self
    }

    /// This key as a retired one, published until the tokens it signs up to
    /// `now` (plus `margin` for clock skew) have expired.
    #[must_use]
    pub fn retire(&self, now: SystemTime, margin: Duration) -> RetiredKey {
        RetiredKey {
            kid: self.kid.clone(),
            x: URL_SAFE_NO_PAD.encode(&self.public),
            publish_until: crate::clock::unix_secs(now) + self.ttl.as_secs() + margin.as_secs(),
        }
    }

    /// The key id in tokens and the JWKS.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWKS document upstreams verify with at `now`: the current
    /// key first, then the retired keys still due.
    #[must_use]
    pub fn jwks(&self, now: SystemTime) -> serde_json::Value {
        let jwk = |kid: &str, x: &str| serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid, "x": x });
        let now = crate::clock::unix_secs(now);
        let current = jwk(&self.kid, &URL_SAFE_NO_PAD.encode(&self.public));
        let retired = self.retired.iter().filter(|r| r.publish_until > now).map(|r| jwk(&r.kid, &r.x));
        serde_json::json!({ "keys": std::iter::once(current).chain(retired).collect::<Vec<_>>() })
    }

    /// The `iss` of the tokens it signs.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs `claims` as they are, with `typ` in the header (`at+jwt` for
    /// the accounts' access tokens, RFC 9068): the caller sets `iss`, `aud`
    /// and the times.
    ///
    /// # Errors
    /// When signing fails (a broken key; never for a key that loaded).
    pub fn sign_claims<T: Serialize>(&self, claims: &T, typ: &str) -> Result<String, SignerError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| SignerError(e.to_string()))
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

        let jwks = serde_json::to_vec(&signer.jwks(now)).unwrap();
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
                &KeySet::from_jwks(&serde_json::to_vec(&other.jwks(now)).unwrap(), &[Algorithm::EdDSA]).unwrap().0,
                now
            )
            .is_err()
        );
        assert!(verify(&token, &JwtPolicy::new("portcullis"), &keys, now + Duration::from_secs(120)).is_err());
    }

    #[test]
    fn a_retired_key_verifies_its_tokens_until_they_expire() {
        let ttl = Duration::from_secs(60);
        let margin = Duration::from_secs(30);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let old = IdentitySigner::from_pkcs8(&IdentitySigner::generate_pkcs8().unwrap(), "portcullis", ttl).unwrap();
        let p = Principal::new("alice", AuthMethod::Session, b"c");
        let token = old.sign(&p, "orders", now).unwrap();

        let new = IdentitySigner::from_pkcs8(&IdentitySigner::generate_pkcs8().unwrap(), "portcullis", ttl)
            .unwrap()
            .with_retired(vec![old.retire(now, margin)]);
        let mut policy = JwtPolicy::new("portcullis");
        policy.audiences = vec!["orders".into()];
        let keys_at = |at: SystemTime| {
            let jwks = new.jwks(at);
            let kids: Vec<String> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].to_string()).collect();
            (KeySet::from_jwks(&serde_json::to_vec(&jwks).unwrap(), &[Algorithm::EdDSA]).unwrap().0, kids)
        };
        let (keys, kids) = keys_at(now);
        assert_eq!(kids, [format!("{:?}", new.kid()), format!("{:?}", old.kid())], "current key first");
        assert!(verify(&token, &policy, &keys, now).is_ok(), "the old key's token still verifies");
        let fresh = new.sign(&p, "orders", now).unwrap();
        assert!(verify(&fresh, &policy, &keys, now).is_ok());

        // Published through the token's life and the margin, then gone.
        let (keys, kids) = keys_at(now + ttl + margin - Duration::from_secs(1));
        assert_eq!(kids.len(), 2);
        assert!(verify(&token, &policy, &keys, now + ttl - Duration::from_secs(1)).is_ok());
        let (keys, kids) = keys_at(now + ttl + margin);
        assert_eq!(kids.len(), 1);
        assert!(verify(&token, &policy, &keys, now).is_err(), "its key is no longer published");
    }
}
