//! Sealed cookies: the browser session (and the short-lived login state)
//! kept by the client, encrypted and authenticated with a key only the
//! gateway holds.
//!
//! Defends against forged, tampered, replayed-after-expiry and cross-cookie
//! (a value moved from one cookie name to another) session values, and
//! against reading the refresh token out of a stolen cookie jar dump.
//!
//! Decision rules:
//! - A value is `base64url(version ‖ nonce ‖ AES-256-GCM(json) ‖ tag)`, the
//!   nonce 96 random bits from aws-lc-rs, the associated data the version and
//!   the cookie's name: a login cookie does not open as a session cookie.
//! - The AEAD key is derived with HKDF-SHA256 from the configured secret
//!   (at least 32 bytes), so any secret of sufficient length gives a full key.
//! - The expiry is inside the sealed data; an expired value is refused even
//!   if the browser kept sending it.
//! - A sealed value longer than [`MAX_SEALED_LEN`] is refused at sealing, so
//!   the cookie never silently exceeds the browsers' 4 KB limit.
//! - Any failure to open (bad base64, unknown version, truncation, wrong key,
//!   wrong cookie name, tampering) is one error, [`SessionError::Invalid`]:
//!   a client learns nothing about which check failed.
//!
//! Deployment caveat: every instance behind a load balancer needs the same
//! secret; rotating it logs everyone out. Random 96-bit nonces keep AES-GCM
//! safe for far more cookies (2^32 per key) than a gateway seals between
//! rotations.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The session cookie's name. `__Host-` makes browsers require `Secure`,
/// `Path=/` and no `Domain`, so no subdomain can plant or read it.
pub const SESSION_COOKIE: &str = "__Host-portcullis";

/// The login-in-progress cookie (state, nonce, PKCE verifier, return path).
pub const LOGIN_COOKIE: &str = "__Host-portcullis-login";

/// Longest sealed value accepted: the cookie's name and attributes must fit
/// beside it in the 4096 bytes browsers keep per cookie.
pub const MAX_SEALED_LEN: usize = 3800;

/// Least secret length, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const HKDF_SALT: &[u8] = b"portcullis session cookie";
const HKDF_INFO: &[u8] = b"portcullis cookie aead v1";

/// Why a cookie could not be sealed or opened. Never contains the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("the cookie secret must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
    /// The value does not open with this key for this cookie name.
    #[error("the cookie does not open with the gateway's key")]
    Invalid,
    /// The value opened but is past its expiry.
    #[error("the cookie has expired")]
    Expired,
    /// The sealed value would exceed [`MAX_SEALED_LEN`].
    #[error("the sealed cookie would be {0} bytes, more than browsers keep")]
    TooLarge(usize),
    /// The data could not be encoded or encrypted (a bug, not the client's fault).
    #[error("the cookie could not be sealed")]
    Seal,
}

/// One browser session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    /// Random session id (revocation list key).
    #[serde(rename = "id")]
    pub id: String,
    /// The provider's `sub`.
    #[serde(rename = "sub")]
    pub subject: String,
    /// Roles after the configured mapping.
    #[serde(rename = "ro", default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Granted scopes.
    #[serde(rename = "sc", default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The provider that authenticated the user.
    #[serde(rename = "iss")]
    pub issuer: String,
    /// When the session was established (Unix seconds).
    #[serde(rename = "iat")]
    pub issued_at: u64,
    /// When the session ends, whatever refreshes happen (Unix seconds).
    #[serde(rename = "exp")]
    pub expires_at: u64,
    /// When the provider's access token expires (Unix seconds): the session is
    /// refreshed with the provider after this.
    #[serde(rename = "aexp", default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<u64>,
    /// The provider's refresh token. Only ever inside the sealed cookie.
    #[serde(rename = "rt", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionData")
            .field("id", &self.id)
            .field("subject", &self.subject)
            .field("roles", &self.roles)
            .field("scopes", &self.scopes)
            .field("issuer", &self.issuer)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl SessionData {
    /// The session's end as a time.
    #[must_use]
    pub fn expires(&self) -> SystemTime {
        from_unix(self.expires_at)
    }

    /// Whether the provider's access token has expired at `now` or will
    /// within `margin`.
    #[must_use]
    pub fn access_due(&self, now: SystemTime, margin: Duration) -> bool {
        self.access_expires_at.is_some_and(|at| from_unix(at) <= now + margin)
    }
}

/// A fresh random session id: 128 bits from aws-lc-rs, base64url.
///
/// # Errors
/// [`SessionError::Seal`] if the system's random source fails.
pub fn new_session_id() -> Result<String, SessionError> {
    random_token(16)
}

/// `len` random bytes from aws-lc-rs, base64url (state, nonce, PKCE verifier).
///
/// # Errors
/// [`SessionError::Seal`] if the system's random source fails.
pub fn random_token(len: usize) -> Result<String, SessionError> {
    let mut bytes = vec![0_u8; len];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| SessionError::Seal)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Seconds since the Unix epoch (0 before it): [`crate::clock::unix_secs`].
#[must_use]
pub fn unix(time: SystemTime) -> u64 {
    crate::clock::unix_secs(time)
}

/// A time from Unix seconds (clamped to the year 9999, so no value overflows).
#[must_use]
pub fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.min(253_402_300_799))
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    exp: u64,
    v: T,
}

/// The key sealing cookies.
pub struct SessionKey {
    key: LessSafeKey,
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey([redacted])")
    }
}

impl SessionKey {
    /// A key derived from `secret`.
    ///
    /// # Errors
    /// [`SessionError::ShortSecret`] below [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: &[u8]) -> Result<Self, SessionError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(SessionError::ShortSecret);
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret);
        let okm = prk.expand(&[HKDF_INFO], &AES_256_GCM).map_err(|_| SessionError::Seal)?;
        let key = UnboundKey::from(okm);
        Ok(Self { key: LessSafeKey::new(key) })
    }

    /// Seals a session as the [`SESSION_COOKIE`] value.
    ///
    /// # Errors
    /// [`SessionError::Expired`] if the session already ended at `now`,
    /// [`SessionError::TooLarge`] if it does not fit a cookie.
    pub fn seal(&self, data: &SessionData, now: SystemTime) -> Result<String, SessionError> {
        if data.expires() <= now {
            return Err(SessionError::Expired);
        }
        self.seal_value(SESSION_COOKIE, data, data.expires())
    }

    /// Opens a [`SESSION_COOKIE`] value.
    ///
    /// # Errors
    /// [`SessionError::Invalid`] or [`SessionError::Expired`].
    pub fn open(&self, sealed: &str, now: SystemTime) -> Result<SessionData, SessionError> {
        let data: SessionData = self.open_value(SESSION_COOKIE, sealed, now)?;
        if data.expires() <= now {
            return Err(SessionError::Expired);
        }
        Ok(data)
    }

    /// Seals any value for the cookie `name`, valid until `expires`.
    ///
    /// # Errors
    /// [`SessionError::TooLarge`], or [`SessionError::Seal`] if encoding or
    /// the random source fails.
    pub fn seal_value<T: Serialize>(&self, name: &str, value: &T, expires: SystemTime) -> Result<String, SessionError> {
        let envelope = Envelope { exp: unix(expires), v: value };
        let mut in_out = serde_json::to_vec(&envelope).map_err(|_| SessionError::Seal)?;
        let mut nonce = [0_u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SessionError::Seal)?;
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad(name), &mut in_out)
            .map_err(|_| SessionError::Seal)?;
        let mut raw = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        raw.push(VERSION);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&in_out);
        let sealed = URL_SAFE_NO_PAD.encode(raw);
        if sealed.len() > MAX_SEALED_LEN {
            return Err(SessionError::TooLarge(sealed.len()));
        }
        Ok(sealed)
    }

    /// Opens a value sealed for the cookie `name`.
    ///
    /// # Errors
    /// [`SessionError::Invalid`] if it does not open (or does not decode as
    /// `T`), [`SessionError::Expired`] past its expiry.
    pub fn open_value<T: DeserializeOwned>(
        &self,
        name: &str,
        sealed: &str,
        now: SystemTime,
    ) -> Result<T, SessionError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(SessionError::Invalid);
        }
        let raw = URL_SAFE_NO_PAD.decode(sealed.as_bytes()).map_err(|_| SessionError::Invalid)?;
        let Some((&version, rest)) = raw.split_first() else { return Err(SessionError::Invalid) };
        if version != VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return Err(SessionError::Invalid);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SessionError::Invalid)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self.key.open_in_place(nonce, aad(name), &mut in_out).map_err(|_| SessionError::Invalid)?;
        let envelope: Envelope<T> = serde_json::from_slice(plain).map_err(|_| SessionError::Invalid)?;
        if from_unix(envelope.exp) <= now {
            return Err(SessionError::Expired);
        }
        Ok(envelope.v)
    }
}

/// The associated data: the format version and the cookie's name.
fn aad(name: &str) -> Aad<Vec<u8>> {
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(VERSION);
    bytes.extend_from_slice(name.as_bytes());
    Aad::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> SystemTime {
        from_unix(1_700_000_000)
    }

    fn session() -> SessionData {
        SessionData {
            id: new_session_id().unwrap(),
            subject: "alice".into(),
            roles: vec!["editor".into()],
            scopes: vec!["openid".into(), "email".into()],
            issuer: "https://id.example.com".into(),
            issued_at: unix(now()),
            expires_at: unix(now()) + 8 * 3600,
            access_expires_at: Some(unix(now()) + 300),
            refresh_token: Some("refresh-token-value".into()),
        }
    }

    fn flip(sealed: &str, index: usize) -> String {
        let mut raw = URL_SAFE_NO_PAD.decode(sealed).unwrap();
        raw[index] ^= 1;
        URL_SAFE_NO_PAD.encode(raw)
    }

    #[test]
    fn round_trip() {
        let key = SessionKey::new(SECRET).unwrap();
        let data = session();
        let sealed = key.seal(&data, now()).unwrap();
        assert_eq!(key.open(&sealed, now()).unwrap(), data);
        // Random nonces: the same session never seals to the same value.
        assert_ne!(sealed, key.seal(&data, now()).unwrap());
        assert!(!sealed.contains("alice") && !sealed.contains("refresh"));
    }

    #[test]
    fn refusals() {
        let key = SessionKey::new(SECRET).unwrap();
        let other = SessionKey::new(b"another secret of thirty-two bytes!!").unwrap();
        let sealed = key.seal(&session(), now()).unwrap();
        let raw_len = URL_SAFE_NO_PAD.decode(&sealed).unwrap().len();
        let login = key.seal_value(LOGIN_COOKIE, &session(), session().expires()).unwrap();
        let mut bad_version = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        bad_version[0] = 2;

        let cases: Vec<(&str, String, &SessionKey, SystemTime, SessionError)> = vec![
            ("empty", String::new(), &key, now(), SessionError::Invalid),
            ("not base64", "!!!".into(), &key, now(), SessionError::Invalid),
            ("version only", URL_SAFE_NO_PAD.encode([VERSION]), &key, now(), SessionError::Invalid),
            ("truncated", sealed[..sealed.len() - 4].to_owned(), &key, now(), SessionError::Invalid),
            ("tag flipped", flip(&sealed, raw_len - 1), &key, now(), SessionError::Invalid),
            ("nonce flipped", flip(&sealed, 1), &key, now(), SessionError::Invalid),
            ("ciphertext flipped", flip(&sealed, 1 + NONCE_LEN + 3), &key, now(), SessionError::Invalid),
            ("unknown version", URL_SAFE_NO_PAD.encode(bad_version), &key, now(), SessionError::Invalid),
            ("wrong key", sealed.clone(), &other, now(), SessionError::Invalid),
            ("other cookie's value", login, &key, now(), SessionError::Invalid),
            ("too long", "A".repeat(MAX_SEALED_LEN + 1), &key, now(), SessionError::Invalid),
            ("expired", sealed.clone(), &key, session().expires(), SessionError::Expired),
        ];
        for (name, value, key, at, expected) in cases {
            assert_eq!(key.open(&value, at), Err(expected), "{name}");
        }
    }

    #[test]
    fn short_secret_refused() {
        assert_eq!(SessionKey::new(&SECRET[..31]).map(|_| ()), Err(SessionError::ShortSecret));
    }

    #[test]
    fn expired_session_is_not_sealed() {
        let key = SessionKey::new(SECRET).unwrap();
        let data = session();
        assert_eq!(key.seal(&data, data.expires()), Err(SessionError::Expired));
    }

    #[test]
    fn fits_a_cookie_with_a_large_refresh_token() {
        let key = SessionKey::new(SECRET).unwrap();
        let mut data = session();
        // A JWT refresh token (Keycloak's are ~800 bytes) and many roles.
        data.refresh_token = Some("x".repeat(1200));
        data.roles = (0..30).map(|i| format!("role-number-{i}")).collect();
        let sealed = key.seal(&data, now()).unwrap();
        let cookie = format!("{SESSION_COOKIE}={sealed}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=28800");
        assert!(cookie.len() < 4096, "{}", cookie.len());

        data.refresh_token = Some("x".repeat(4000));
        assert!(matches!(key.seal(&data, now()), Err(SessionError::TooLarge(_))));
    }

    #[test]
    fn refresh_due() {
        let data = session();
        assert!(!data.access_due(now(), Duration::from_secs(30)));
        assert!(data.access_due(now(), Duration::from_secs(300)));
        assert!(data.access_due(from_unix(unix(now()) + 301), Duration::ZERO));
        assert!(!SessionData { access_expires_at: None, ..data }.access_due(now(), Duration::from_secs(999)));
    }

    #[test]
    fn debug_hides_the_refresh_token() {
        let text = format!("{:?}", session());
        assert!(!text.contains("refresh-token-value") && text.contains("[redacted]"));
    }
}
