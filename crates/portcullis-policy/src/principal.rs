//! Who the caller is: the one identity every authentication method produces
//! and that authorization, rate limiting and the upstream consume.
//!
//! A [`Principal`] is built only by a successful verification (a JWT checked
//! against a configured key, an API key found in the store, a sealed session
//! cookie, a client certificate verified in the TLS handshake). Nothing a
//! client sends as plain headers ever becomes one: the layers strip any
//! `X-Portcullis-*` header at ingress.

use std::time::SystemTime;

use aws_lc_rs::digest;

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// A bearer JWT from a configured issuer.
    Jwt,
    /// A browser session established by OIDC login.
    Session,
    /// An API key from the store.
    ApiKey,
    /// A client certificate verified during the TLS handshake.
    Mtls,
    /// A built-in account's browser session (the sealed
    /// `__Host-portcullis-account` cookie).
    Account,
    /// A built-in account's access token: a JWT the gateway signed, sent as
    /// `Authorization: Bearer`. Routes naming `account` accept both.
    AccountToken,
}

impl AuthMethod {
    /// The name used in configuration, events and upstream headers.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Session => "session",
            Self::ApiKey => "api_key",
            Self::Mtls => "mtls",
            Self::Account => "account",
            Self::AccountToken => "account_token",
        }
    }

    /// Parses a configuration name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "jwt" => Some(Self::Jwt),
            "session" => Some(Self::Session),
            "api_key" => Some(Self::ApiKey),
            "mtls" => Some(Self::Mtls),
            "account" => Some(Self::Account),
            "account_token" => Some(Self::AccountToken),
            _ => None,
        }
    }

    /// Every method, in the order credentials are looked for.
    pub const ALL: [Self; 6] = [Self::ApiKey, Self::AccountToken, Self::Jwt, Self::Session, Self::Account, Self::Mtls];
}

/// A set of authentication methods (a route's accepted methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Methods(u8);

impl Methods {
    /// No method.
    pub const NONE: Self = Self(0);

    const fn bit(method: AuthMethod) -> u8 {
        match method {
            AuthMethod::Jwt => 1,
            AuthMethod::Session => 2,
            AuthMethod::ApiKey => 4,
            AuthMethod::Mtls => 8,
            AuthMethod::Account => 16,
            AuthMethod::AccountToken => 32,
        }
    }

    /// The set with `method` added.
    #[must_use]
    pub const fn with(self, method: AuthMethod) -> Self {
        Self(self.0 | Self::bit(method))
    }

    /// Whether `method` is in the set.
    #[must_use]
    pub const fn contains(self, method: AuthMethod) -> bool {
        self.0 & Self::bit(method) != 0
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The methods in the set, in [`AuthMethod::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = AuthMethod> {
        AuthMethod::ALL.into_iter().filter(move |m| self.contains(*m))
    }
}

impl FromIterator<AuthMethod> for Methods {
    fn from_iter<I: IntoIterator<Item = AuthMethod>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The stable subject: the JWT/ID token `sub`, the API key's id, the
    /// certificate's subject.
    pub subject: String,
    /// How it was established.
    pub method: AuthMethod,
    /// Who vouched for it: the token issuer, `portcullis` for API keys and
    /// sessions established here, the client CA for certificates.
    pub issuer: Option<String>,
    /// Roles after the configured claim mapping (deduplicated, in order).
    pub roles: Vec<String>,
    /// OAuth scopes, if the credential carries any.
    pub scopes: Vec<String>,
    /// When the credential stops being valid, if it expires.
    pub expires_at: Option<SystemTime>,
    /// A fingerprint of the credential, for events: never the credential.
    pub credential: String,
    /// The session id, for session principals (revocation).
    pub session_id: Option<String>,
}

impl Principal {
    /// A principal with no roles or scopes.
    #[must_use]
    pub fn new(subject: impl Into<String>, method: AuthMethod, credential: &[u8]) -> Self {
        Self {
            subject: subject.into(),
            method,
            issuer: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            expires_at: None,
            credential: fingerprint(credential),
            session_id: None,
        }
    }

    /// Whether the principal has `role`.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Longest role or scope name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// Whether `name` may be a role or scope: 1–128 characters of
/// `A–Z a–z 0–9 . _ : / -`. Roles and scopes travel to upstreams in
/// comma- and space-separated headers and into events; a claim value such as
/// `"viewer,admin"` must never become two roles there.
#[must_use]
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'))
}

/// A fingerprint of a secret for events and logs: the first 12 hex digits of
/// its SHA-256. Enough to correlate events about one credential, useless for
/// recovering it.
#[must_use]
pub fn fingerprint(secret: &[u8]) -> String {
    let digest = digest::digest(&digest::SHA256, secret);
    digest.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_sets() {
        let set: Methods = [AuthMethod::Jwt, AuthMethod::ApiKey].into_iter().collect();
        assert!(set.contains(AuthMethod::Jwt) && set.contains(AuthMethod::ApiKey));
        assert!(!set.contains(AuthMethod::Session) && !set.contains(AuthMethod::Mtls));
        assert_eq!(set.iter().collect::<Vec<_>>(), [AuthMethod::ApiKey, AuthMethod::Jwt]);
        assert!(Methods::NONE.is_empty());
        for m in AuthMethod::ALL {
            assert_eq!(AuthMethod::parse(m.as_str()), Some(m));
        }
    }

    #[test]
    fn fingerprints_are_short_and_stable() {
        let a = fingerprint(b"secret-token");
        assert_eq!(a.len(), 12);
        assert_eq!(a, fingerprint(b"secret-token"));
        assert_ne!(a, fingerprint(b"secret-tokem"));
        assert!(!a.contains("secret"));
    }
}
