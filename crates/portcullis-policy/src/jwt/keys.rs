//! Verification keys and the algorithms each may be used with.
//!
//! The algorithm a token is checked with is decided by the key, never by the
//! token: every key carries the set of algorithms it is allowed for (its
//! JWK `alg`, or the configured algorithms of its family), and a token whose
//! header names anything else is refused before any cryptography runs. This
//! is what defeats `alg: none` and the RS256→HS256 key-confusion attack: an
//! RSA public key is never in the HMAC family, so it can never be used as an
//! HMAC secret.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size;
/// 32 bytes for HS256, and we ask the same of HS384/HS512 as a floor).
pub const MIN_HMAC_SECRET: usize = 32;

/// Why a key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key material does not parse.
    #[error("key does not parse: {0}")]
    Invalid(String),
    /// The key's type or curve is not supported (P-521, RSA encryption keys).
    #[error("unsupported key: {0}")]
    Unsupported(String),
    /// None of the configured algorithms fits the key.
    #[error("no configured algorithm fits this {family} key (configured: {configured})")]
    NoAlgorithm {
        /// The key's family.
        family: &'static str,
        /// The configured algorithms.
        configured: String,
    },
    /// An HMAC secret shorter than [`MIN_HMAC_SECRET`].
    #[error("HMAC secret is {0} bytes; at least 32 are required")]
    ShortSecret(usize),
}

/// A key a token may be verified with.
#[derive(Clone)]
pub struct VerificationKey {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material (HMAC secrets are keys too).
        f.debug_struct("VerificationKey").field("kid", &self.kid).field("algorithms", &self.algorithms).finish()
    }
}

/// The algorithms of a family.
fn family_algorithms(family: Family) -> &'static [Algorithm] {
    match family {
        Family::Rsa => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        Family::P256 => &[Algorithm::ES256],
        Family::P384 => &[Algorithm::ES384],
        Family::Ec => &[Algorithm::ES256, Algorithm::ES384],
        Family::Ed25519 => &[Algorithm::EdDSA],
        Family::Hmac => &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
    }
}

#[derive(Debug, Clone, Copy)]
enum Family {
    Rsa,
    P256,
    P384,
    /// An EC key whose curve was not stated (a PEM file).
    Ec,
    Ed25519,
    Hmac,
}

impl Family {
    const fn name(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::Ec => "EC",
            Self::Ed25519 => "Ed25519",
            Self::Hmac => "HMAC",
        }
    }
}

/// Parses an algorithm name as it appears in configuration and headers.
/// `none` and anything unknown are `None`.
#[must_use]
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "none" => None,
        other => other.parse().ok(),
    }
}

fn pick(family: Family, stated: Option<Algorithm>, allowed: &[Algorithm]) -> Result<Vec<Algorithm>, KeyError> {
    let fits = family_algorithms(family);
    let chosen: Vec<Algorithm> = match stated {
        Some(alg) if fits.contains(&alg) && allowed.contains(&alg) => vec![alg],
        Some(_) => Vec::new(),
        None => fits.iter().copied().filter(|a| allowed.contains(a)).collect(),
    };
    if chosen.is_empty() {
        let configured = allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
        return Err(KeyError::NoAlgorithm { family: family.name(), configured });
    }
    Ok(chosen)
}

impl VerificationKey {
    /// A key from a JWK (a JWKS entry or configuration). Encryption keys
    /// (`use: enc`) and unsupported curves are refused.
    ///
    /// # Errors
    /// [`KeyError`] when the key is unusable with the `allowed` algorithms.
    pub fn from_jwk(jwk: &Jwk, allowed: &[Algorithm]) -> Result<Self, KeyError> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return Err(KeyError::Unsupported("an encryption key (use: enc)".into()));
        }
        let stated = match jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::UNKNOWN_ALGORITHM | KeyAlgorithm::RSA1_5 | KeyAlgorithm::RSA_OAEP) => {
                return Err(KeyError::Unsupported("not a signature algorithm".into()));
            }
            Some(KeyAlgorithm::RSA_OAEP_256) => return Err(KeyError::Unsupported("not a signature algorithm".into())),
            Some(alg) => parse_algorithm(&alg.to_string()),
        };
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Family::P256,
                EllipticCurve::P384 => Family::P384,
                EllipticCurve::P521 | EllipticCurve::Ed25519 => {
                    return Err(KeyError::Unsupported(format!("EC curve {:?}", ec.curve)));
                }
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => Family::Ed25519,
                _ => return Err(KeyError::Unsupported(format!("OKP curve {:?}", okp.curve))),
            },
            AlgorithmParameters::OctetKey(_) => Family::Hmac,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| KeyError::Invalid(e.to_string()))?;
        if let Family::Hmac = family {
            let len = key.try_get_hmac_secret().map(<[u8]>::len).unwrap_or(0);
            if len < MIN_HMAC_SECRET {
                return Err(KeyError::ShortSecret(len));
            }
        }
        Ok(Self { kid: jwk.common.key_id.clone(), algorithms: pick(family, stated, allowed)?, key })
    }

    /// A public key from PEM (`PUBLIC KEY`, `RSA PUBLIC KEY`, or a
    /// certificate), with an optional stated algorithm.
    ///
    /// # Errors
    /// [`KeyError`] when the PEM holds no usable public key.
    pub fn from_pem(
        pem: &[u8],
        kid: Option<String>,
        stated: Option<Algorithm>,
        allowed: &[Algorithm],
    ) -> Result<Self, KeyError> {
        let (family, key) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (Family::Rsa, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (Family::Ec, key)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (Family::Ed25519, key)
        } else {
            return Err(KeyError::Invalid("no RSA, EC or Ed25519 public key in the PEM".into()));
        };
        Ok(Self { kid, algorithms: pick(family, stated, allowed)?, key })
    }

    /// An HMAC secret, usable only with the one algorithm stated for it.
    ///
    /// # Errors
    /// [`KeyError::ShortSecret`] below 32 bytes, [`KeyError::NoAlgorithm`]
    /// when `algorithm` is not an HMAC algorithm.
    pub fn hmac(secret: &[u8], kid: Option<String>, algorithm: Algorithm) -> Result<Self, KeyError> {
        if secret.len() < MIN_HMAC_SECRET {
            return Err(KeyError::ShortSecret(secret.len()));
        }
        let algorithms = pick(Family::Hmac, Some(algorithm), &[algorithm])?;
        Ok(Self { kid, algorithms, key: DecodingKey::from_secret(secret) })
    }

    /// The key id, if it has one.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithms this key may verify.
    #[must_use]
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    pub(crate) const fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

/// The keys of one issuer.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
}

impl KeySet {
    /// A set of keys.
    #[must_use]
    pub const fn new(keys: Vec<VerificationKey>) -> Self {
        Self { keys }
    }

    /// Parses a JWKS document, keeping the usable keys and reporting the
    /// others (an issuer may publish encryption keys or curves we do not use
    /// alongside its signing keys).
    ///
    /// # Errors
    /// A message when the document is not a JWKS at all.
    pub fn from_jwks(json: &[u8], allowed: &[Algorithm]) -> Result<(Self, Vec<String>), String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for value in document.keys {
            let kid = value.get("kid").and_then(|k| k.as_str()).unwrap_or("(no kid)").to_owned();
            match serde_json::from_value::<Jwk>(value) {
                Ok(jwk) => match VerificationKey::from_jwk(&jwk, allowed) {
                    Ok(key) => keys.push(key),
                    Err(e) => skipped.push(format!("{kid}: {e}")),
                },
                Err(e) => skipped.push(format!("{kid}: {e}")),
            }
        }
        Ok((Self { keys }, skipped))
    }

    /// Adds keys.
    pub fn extend(&mut self, other: impl IntoIterator<Item = VerificationKey>) {
        self.keys.extend(other);
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether some key has this id.
    #[must_use]
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The keys a token with this header may be verified with: those with
    /// its `kid` and those without any id (a configured key without `kid`
    /// verifies every token of its issuer); every key when the token names
    /// none.
    pub(crate) fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a VerificationKey> + 'a {
        self.keys.iter().filter(move |k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
    }

    /// The keys.
    pub fn iter(&self) -> impl Iterator<Item = &VerificationKey> {
        self.keys.iter()
    }
}
