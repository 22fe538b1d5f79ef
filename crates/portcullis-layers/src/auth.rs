//! Authentication: establishes who the caller is before anything else looks
//! at the request's content.
//!
//! Decision rules:
//! - A public route needs nothing. Every other route names the methods it
//!   accepts; a credential for a method the route does not accept is ignored.
//! - Credentials are looked for in a fixed order: API key (the configured
//!   header, or an `Authorization: Bearer` value with the API key prefix),
//!   bearer JWT, session cookie, client certificate. The first credential
//!   present decides: a bad credential is refused even if another would pass,
//!   so a stolen-but-revoked key cannot hide behind a valid cookie.
//! - No credential: browsers (a `GET` asking for HTML) on a route accepting
//!   sessions are redirected to login; everyone else gets 401 with
//!   `WWW-Authenticate`.
//! - The verified [`Principal`] goes into the request's extensions for
//!   authorization, rate limiting and the upstream identity.
//!
//! The verifiers are traits so this crate stays free of the store, the JWKS
//! fetcher and the OIDC client, which live in the binary crate.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Response};
use portcullis_policy::{Denied, Principal};

use crate::Body;

/// A verification's outcome.
pub type AuthFuture = BoxFuture<'static, Result<Principal, Denied>>;

/// Verifies bearer JWTs.
pub trait VerifyBearer: Send + Sync + fmt::Debug {
    /// Verifies `token` (the value after `Bearer `).
    fn verify(&self, token: &str) -> AuthFuture;
}

/// Verifies API keys.
pub trait VerifyApiKey: Send + Sync + fmt::Debug {
    /// Whether a bearer value looks like an API key (has the key prefix), so
    /// it is checked as one instead of as a JWT.
    fn recognises(&self, credential: &str) -> bool;
    /// Verifies a presented key.
    fn verify(&self, key: &str) -> AuthFuture;
}

/// A session checked, possibly refreshed.
#[derive(Debug)]
pub struct SessionOutcome {
    /// The session's caller.
    pub principal: Principal,
    /// A replacement cookie (`Set-Cookie` value) when the session was
    /// refreshed; added to the response.
    pub set_cookie: Option<HeaderValue>,
}

/// Verifies browser sessions.
pub trait VerifySession: Send + Sync + fmt::Debug {
    /// The session cookie's name.
    fn cookie_name(&self) -> &str;
    /// Opens and checks a session cookie's value; refreshes it with the
    /// provider when its tokens are due.
    fn verify(&self, cookie: &str) -> BoxFuture<'static, Result<SessionOutcome, Denied>>;
    /// The answer sending an unauthenticated browser to login, returning it
    /// to `return_to` (the original path and query) afterwards.
    fn login_redirect(&self, return_to: &str) -> Response<Body>;
}

/// Everything the authentication layer can verify; absent verifiers mean the
/// method is not configured (configuration refuses routes naming it).
#[derive(Debug, Clone, Default)]
pub struct Authenticators {
    /// Bearer JWTs.
    pub bearer: Option<Arc<dyn VerifyBearer>>,
    /// API keys.
    pub api_key: Option<Arc<dyn VerifyApiKey>>,
    /// A dedicated header carrying API keys (in addition to `Authorization`).
    pub api_key_header: Option<HeaderName>,
    /// Browser sessions.
    pub session: Option<Arc<dyn VerifySession>>,
    /// Client certificates.
    pub mtls: Option<Arc<MtlsIdentity>>,
}

/// How a verified client certificate becomes a principal.
#[derive(Debug, Clone, Default)]
pub struct MtlsIdentity {
    /// Roles by certificate subject (the CN, or the full subject DN).
    pub roles: std::collections::HashMap<String, Vec<String>>,
}
