//! Identity to the upstream: after authentication, tell the upstream who
//! the caller is, in a form it can trust.
//!
//! Client-supplied `X-Portcullis-*` headers were already removed by the
//! authentication layer on every route, public ones included. Then, per
//! upstream:
//! - `headers`: `X-Portcullis-Subject`, `-Auth` (method), `-Issuer`, `-Roles`
//!   (comma-separated) and `-Scopes` (space-separated). Only safe when the
//!   upstream is reachable through the gateway alone (see the deployment
//!   caveat).
//! - `jwt`: `X-Portcullis-Identity`, a short-lived EdDSA token for that
//!   upstream (audience = the upstream's name), verifiable with the
//!   gateway's JWKS at `/.portcullis/jwks.json`.
//! - `none`: nothing.
//!
//! Deployment caveat: with `headers`, anyone who can reach the upstream
//! without passing through Portcullis can claim any identity. Bind the
//! upstream to loopback or a private network, or use `jwt` (or mTLS to the
//! upstream).

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Request};
use portcullis_policy::jwt::identity::SignerError;
use portcullis_policy::{Denied, Principal, Reason};

use crate::caller::Caller;
use crate::guard::Guard;
use crate::{Body, RouteInfo};

/// `X-Portcullis-Subject`.
pub const SUBJECT: HeaderName = HeaderName::from_static("x-portcullis-subject");
/// `X-Portcullis-Auth`.
pub const METHOD: HeaderName = HeaderName::from_static("x-portcullis-auth");
/// `X-Portcullis-Issuer`.
pub const ISSUER: HeaderName = HeaderName::from_static("x-portcullis-issuer");
/// `X-Portcullis-Roles`.
pub const ROLES: HeaderName = HeaderName::from_static("x-portcullis-roles");
/// `X-Portcullis-Scopes`.
pub const SCOPES: HeaderName = HeaderName::from_static("x-portcullis-scopes");
/// `X-Portcullis-Identity`.
pub const IDENTITY: HeaderName = HeaderName::from_static("x-portcullis-identity");

/// Signs identity tokens for upstreams.
pub trait SignIdentity: Send + Sync + fmt::Debug {
    /// A token for `principal`, for the upstream named `audience`.
    ///
    /// # Errors
    /// Signing failed (logged by the caller; the request gets a 500).
    fn sign(&self, principal: &Principal, audience: &str) -> Result<String, SignerError>;
}

/// How an upstream learns the caller's identity.
#[derive(Debug, Clone, Default)]
pub enum UpstreamIdentity {
    /// Plain headers.
    #[default]
    Headers,
    /// A signed token.
    Jwt(Arc<dyn SignIdentity>),
    /// Nothing.
    None,
}

/// See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Identity;

impl Guard for Identity {
    fn check(&self, req: &mut Request<Body>) -> Result<(), Denied> {
        let caller = req.extensions().get::<Caller>().cloned();
        let route = req.extensions().get::<Arc<RouteInfo>>().cloned();
        match (caller, route) {
            (Some(Caller(principal)), Some(route)) => {
                apply(req.headers_mut(), &principal, &route.identity, &route.upstream_name)
            }
            _ => Ok(()),
        }
    }
}

fn value(text: &str) -> Result<HeaderValue, Denied> {
    // Only control characters are unrepresentable; refuse rather than drop,
    // so the upstream never sees a partial identity.
    HeaderValue::from_bytes(text.as_bytes())
        .map_err(|_| Denied::new(Reason::RequestMalformed).with_detail("identity contains control characters"))
}

/// Adds the identity headers for `principal` to `headers`.
///
/// # Errors
/// When a value cannot be a header, or signing fails.
pub fn apply(
    headers: &mut http::HeaderMap,
    principal: &Principal,
    mode: &UpstreamIdentity,
    upstream: &str,
) -> Result<(), Denied> {
    match mode {
        UpstreamIdentity::None => {}
        UpstreamIdentity::Headers => {
            headers.insert(SUBJECT, value(&principal.subject)?);
            headers.insert(METHOD, HeaderValue::from_static(principal.method.as_str()));
            if let Some(issuer) = &principal.issuer {
                headers.insert(ISSUER, value(issuer)?);
            }
            headers.insert(ROLES, value(&principal.roles.join(","))?);
            if !principal.scopes.is_empty() {
                headers.insert(SCOPES, value(&principal.scopes.join(" "))?);
            }
        }
        UpstreamIdentity::Jwt(signer) => {
            let token = signer.sign(principal, upstream).map_err(|e| {
                tracing::error!(error = %e, "signing the upstream identity token failed");
                Denied::new(Reason::GatewayInternal)
            })?;
            headers.insert(IDENTITY, value(&token)?);
        }
    }
    Ok(())
}
