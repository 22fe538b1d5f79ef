//! What authentication verifies credentials with: the interfaces the binary
//! crate implements (API-key store, JWKS-backed JWT verifier, OIDC sessions),
//! so this crate stays free of stores, fetchers and HTTP clients.
//!
//! Rules:
//! - A verifier answers with the caller's [`Principal`] or a typed
//!   [`Denied`] naming why (expired, revoked, store unavailable, …); it never
//!   renders a response, except the login redirect a session route asks for.
//! - Verifiers are shared by the layers that need them: authentication
//!   verifies every credential, CSRF re-checks the session its token is
//!   bound to.

use std::fmt;

use futures_util::future::BoxFuture;
use http::{HeaderValue, Response};
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

/// Verifies the gateway's own access tokens (built-in accounts' JWTs).
pub trait VerifyAccessToken: Send + Sync + fmt::Debug {
    /// Whether a bearer value is one of the gateway's access tokens (its
    /// header names one of the gateway's keys), so it is checked as one
    /// instead of as a token of a configured issuer.
    fn recognises(&self, token: &str) -> bool;
    /// Verifies a presented token.
    fn verify(&self, token: &str) -> AuthFuture;
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
    /// The `WWW-Authenticate` challenge of a 401 on a session route (a
    /// client that is not a browser navigation): where to log in.
    fn challenge(&self) -> HeaderValue;
}
