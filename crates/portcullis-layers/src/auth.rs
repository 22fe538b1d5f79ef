//! Authentication: establishes who the caller is before anything else looks
//! at the request's content.
//!
//! Decision rules:
//! - A public route needs nothing. Every other route names the methods it
//!   accepts; a credential for a method the route does not accept is ignored.
//! - Credentials are looked for in a fixed order: API key (the configured
//!   header, or an `Authorization: Bearer` value with the API key prefix),
//!   the gateway's own access token (a bearer JWT naming one of its keys),
//!   bearer JWT, OIDC session cookie, account session cookie, client
//!   certificate. The first credential
//!   present decides: a bad credential is refused even if another would pass,
//!   so a stolen-but-revoked key cannot hide behind a valid cookie.
//! - No credential: browsers (a `GET` asking for HTML) on a route accepting
//!   sessions (OIDC first, then accounts) are redirected to that login;
//!   everyone else gets 401 with `WWW-Authenticate`.
//! - The verified [`Principal`] goes into the request's extensions for
//!   authorization, rate limiting and the upstream identity.
//! - API keys are the gateway's secrets and never reach an upstream: they
//!   are removed from every forwarded request, public routes included (where
//!   they are not verified), so upstream logs never collect them from clients
//!   that send their key with every request.
//!
//! The verifiers are the traits of `crate::verify`, so this crate stays free
//! of the store, the JWKS fetcher and the OIDC client, which live in the
//! binary crate.

use futures_util::future::Either;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Response};
use portcullis_policy::{AuthMethod, Denied, Methods, Principal, Reason};

use crate::caller::Caller;
use crate::refusal::{Redirected, deny};
use crate::verify::{VerifyAccessToken, VerifyApiKey, VerifyBearer, VerifySession};
use crate::{AuthMode, Body, ConnInfo, RouteInfo};

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
    /// Built-in accounts' browser sessions.
    pub account: Option<Arc<dyn VerifySession>>,
    /// Built-in accounts' access tokens.
    pub account_token: Option<Arc<dyn VerifyAccessToken>>,
}

/// How a verified client certificate becomes a principal.
#[derive(Debug, Clone, Default)]
pub struct MtlsIdentity {
    /// Roles by certificate subject (the CN, or the full subject DN).
    pub roles: std::collections::HashMap<String, Vec<String>>,
}

/// The request headers that carry identity to the upstream. Any a client
/// sends is removed before anything else looks at the request.
pub const IDENTITY_HEADER_PREFIX: &str = "x-portcullis-";

/// Removes every `X-Portcullis-*` header (client-supplied identity),
/// underscore spellings (`X_Portcullis_Subject`) included.
pub fn strip_identity_headers(headers: &mut http::HeaderMap) {
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| crate::header_alias_prefix(name.as_str(), IDENTITY_HEADER_PREFIX))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticators>,
}

impl AuthLayer {
    /// Authenticates with `auth`.
    #[must_use]
    pub const fn new(auth: Arc<Authenticators>) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate { inner, auth: self.auth.clone() }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Arc<Authenticators>,
}

/// Which credential a request presents, in the order of the module docs.
#[derive(Debug, PartialEq, Eq)]
enum Credential {
    ApiKey(String),
    AccountToken(String),
    Bearer(String),
    Session(String),
    Account(String),
    Certificate,
}

/// What the layer does with a request.
enum Decision {
    /// Authenticated (with a replacement session cookie, if refreshed).
    Allow(Principal, Option<HeaderValue>),
    /// Refused.
    Deny(Denied),
    /// A browser sent to login.
    Login(Response<Body>),
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn cookie<'a>(headers: &'a http::HeaderMap, name: &'a str) -> Option<&'a str> {
    portcullis_policy::cookies::get(headers, name)
}

impl Authenticators {
    /// The credential `req` presents for `methods`, if any.
    fn credential(&self, methods: Methods, req: &http::request::Parts) -> Option<Credential> {
        if methods.contains(AuthMethod::ApiKey)
            && let Some(verifier) = &self.api_key
        {
            if let Some(value) = self.api_key_header.as_ref().and_then(|h| req.headers.get(h))
                && let Ok(key) = value.to_str()
            {
                return Some(Credential::ApiKey(key.trim().to_owned()));
            }
            if let Some(token) = bearer(&req.headers).filter(|t| verifier.recognises(t)) {
                return Some(Credential::ApiKey(token.to_owned()));
            }
        }
        if methods.contains(AuthMethod::AccountToken)
            && let Some(verifier) = &self.account_token
            && let Some(token) = bearer(&req.headers).filter(|t| verifier.recognises(t))
        {
            return Some(Credential::AccountToken(token.to_owned()));
        }
        if methods.contains(AuthMethod::Jwt)
            && self.bearer.is_some()
            && let Some(token) = bearer(&req.headers)
        {
            return Some(Credential::Bearer(token.to_owned()));
        }
        if methods.contains(AuthMethod::Session)
            && let Some(session) = &self.session
            && let Some(value) = cookie(&req.headers, session.cookie_name())
        {
            return Some(Credential::Session(value.to_owned()));
        }
        if methods.contains(AuthMethod::Account)
            && let Some(account) = &self.account
            && let Some(value) = cookie(&req.headers, account.cookie_name())
        {
            return Some(Credential::Account(value.to_owned()));
        }
        if methods.contains(AuthMethod::Mtls)
            && self.mtls.is_some()
            && req.extensions.get::<ConnInfo>().is_some_and(|c| c.client_cert.is_some())
        {
            return Some(Credential::Certificate);
        }
        None
    }

    fn certificate_principal(&self, req: &http::request::Parts) -> Result<Principal, Denied> {
        let cert = req
            .extensions
            .get::<ConnInfo>()
            .and_then(|c| c.client_cert.clone())
            .ok_or_else(|| Denied::new(Reason::MtlsMissing))?;
        // The subject is the CN (the full DN without exactly one CN). Roles
        // are keyed by CN or by full DN: a key with `=` is a DN, so a CN
        // spelled like a DN (`CN=batch, O=Prod`) cannot take its roles.
        let subject = cert.common_name.clone().unwrap_or_else(|| cert.subject.clone());
        let mut principal = Principal::new(subject, AuthMethod::Mtls, cert.fingerprint.as_bytes());
        principal.credential.clone_from(&cert.fingerprint);
        principal.issuer = Some("client-certificate".into());
        if let Some(mtls) = &self.mtls {
            let by_cn = cert.common_name.as_ref().filter(|cn| !cn.contains('=')).and_then(|cn| mtls.roles.get(cn));
            principal.roles = by_cn.or_else(|| mtls.roles.get(&cert.subject)).cloned().unwrap_or_default();
        }
        Ok(principal)
    }

    /// The answer for a request without any accepted credential.
    fn missing(&self, methods: Methods, req: &http::request::Parts) -> Decision {
        if is_navigation(req)
            && let Some(session) = self.browser_login(methods)
        {
            let return_to = req.uri.path_and_query().map_or("/", http::uri::PathAndQuery::as_str);
            return Decision::Login(session.login_redirect(return_to));
        }
        let mut denied = Denied::new(Reason::AuthMissing);
        if methods.contains(AuthMethod::Jwt)
            || methods.contains(AuthMethod::ApiKey)
            || methods.contains(AuthMethod::AccountToken)
        {
            denied = denied.with_header(http::header::WWW_AUTHENTICATE, portcullis_policy::jwt::challenge(None));
        }
        // A 401 must name a way to authenticate (RFC 9110 §11.6.1), also on
        // routes whose only way is a browser session.
        for (method, session) in [(AuthMethod::Session, &self.session), (AuthMethod::Account, &self.account)] {
            if methods.contains(method)
                && let Some(session) = session
            {
                denied = denied.with_header(http::header::WWW_AUTHENTICATE, session.challenge());
            }
        }
        let accepted = methods.iter().map(AuthMethod::as_str).collect::<Vec<_>>().join(", ");
        Decision::Deny(denied.with_detail(format!("route accepts: {accepted}")))
    }

    /// The login a browser without a session is sent to on a route of
    /// `methods`: the OIDC provider's, else the built-in accounts'.
    fn browser_login(&self, methods: Methods) -> Option<&Arc<dyn VerifySession>> {
        let oidc = self.session.as_ref().filter(|_| methods.contains(AuthMethod::Session));
        oidc.or_else(|| self.account.as_ref().filter(|_| methods.contains(AuthMethod::Account)))
    }

    async fn decide(self: Arc<Self>, methods: Methods, req: &mut http::request::Parts) -> Decision {
        let credential = self.credential(methods, req);
        let result = match &credential {
            None => return self.missing(methods, req),
            Some(Credential::ApiKey(key)) => match &self.api_key {
                Some(v) => v.verify(key).await.map(|p| (p, None)),
                None => return self.missing(methods, req),
            },
            Some(Credential::AccountToken(token)) => match &self.account_token {
                Some(v) => v.verify(token).await.map(|p| (p, None)),
                None => return self.missing(methods, req),
            },
            Some(Credential::Bearer(token)) => match &self.bearer {
                Some(v) => v.verify(token).await.map(|p| (p, None)),
                None => return self.missing(methods, req),
            },
            Some(Credential::Session(value)) => match &self.session {
                Some(v) => v.verify(value).await.map(|o| (o.principal, o.set_cookie)),
                None => return self.missing(methods, req),
            },
            Some(Credential::Account(value)) => match &self.account {
                Some(v) => v.verify(value).await.map(|o| (o.principal, o.set_cookie)),
                None => return self.missing(methods, req),
            },
            Some(Credential::Certificate) => self.certificate_principal(req).map(|p| (p, None)),
        };
        match result {
            Ok((principal, cookie)) => {
                self.scrub(&mut req.headers);
                // A bearer token the gateway did not verify must not travel
                // next to the identity it did verify: the upstream could
                // trust the wrong one.
                if principal.method != AuthMethod::Jwt && bearer(&req.headers).is_some() {
                    req.headers.remove(http::header::AUTHORIZATION);
                }
                Decision::Allow(principal, cookie)
            }
            Err(denied) => match (&credential, &self.session, &self.account) {
                // A browser whose session ended is sent to log in again (with
                // the dead cookie cleared) instead of a JSON error page.
                (Some(Credential::Session(_)), Some(session), _) | (Some(Credential::Account(_)), _, Some(session))
                    if matches!(
                        denied.reason,
                        Reason::SessionInvalid | Reason::SessionExpired | Reason::SessionRevoked
                    ) && is_navigation(req) =>
                {
                    let return_to = req.uri.path_and_query().map_or("/", http::uri::PathAndQuery::as_str);
                    let mut response = session.login_redirect(return_to);
                    for (name, value) in &denied.headers {
                        if name == http::header::SET_COOKIE {
                            response.headers_mut().append(name.clone(), value.clone());
                        }
                    }
                    response.extensions_mut().insert(Redirected(denied));
                    Decision::Login(response)
                }
                _ => Decision::Deny(denied),
            },
        }
    }

    /// Removes the gateway's own credentials from a request it forwards,
    /// whatever decided it (and on public routes too): API keys and the
    /// session cookie are secrets between the client and the gateway. A
    /// bearer JWT that authenticated the request is left in place (upstreams
    /// may verify it again or call other services with it); one that did not
    /// is removed by the caller.
    fn scrub(&self, headers: &mut http::HeaderMap) {
        self.scrub_api_keys(headers);
        for session in [&self.session, &self.account].into_iter().flatten() {
            portcullis_policy::cookies::remove(headers, session.cookie_name());
        }
    }

    /// Removes API keys: the configured header, and an `Authorization:
    /// Bearer` value with the key prefix.
    fn scrub_api_keys(&self, headers: &mut http::HeaderMap) {
        let Some(verifier) = &self.api_key else { return };
        if let Some(header) = &self.api_key_header {
            headers.remove(header);
        }
        if bearer(headers).is_some_and(|t| verifier.recognises(t)) {
            headers.remove(http::header::AUTHORIZATION);
        }
    }
}

/// A browser navigation: `GET`/`HEAD` asking for HTML.
fn is_navigation(req: &http::request::Parts) -> bool {
    (req.method == http::Method::GET || req.method == http::Method::HEAD) && wants_html(&req.headers)
}

/// A top-level browser navigation asks for HTML first; API clients and
/// `fetch()` calls do not.
fn wants_html(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|t| t.trim().starts_with("text/html")))
}

impl<S> tower::Service<http::Request<Body>> for Authenticate<S>
where
    S: tower::Service<http::Request<Body>, Response = Response<Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Either<S::Future, crate::GatewayFuture>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        strip_identity_headers(req.headers_mut());
        let methods = match req.extensions().get::<Arc<RouteInfo>>().map(|r| r.auth) {
            // Not authenticated, so a key is not verified (a stale key must
            // not break a public page), but it is still kept from the upstream.
            Some(AuthMode::Public) => {
                self.auth.scrub(req.headers_mut());
                return Either::Left(self.inner.call(req));
            }
            Some(AuthMode::Required(methods)) => methods,
            // A request that reached here unrouted is a wiring bug: refuse.
            None => return Either::Right(Box::pin(async { Ok(deny(Reason::GatewayInternal)) })),
        };
        // The ready service handles this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Either::Right(Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            match auth.decide(methods, &mut parts).await {
                Decision::Deny(denied) => Ok(deny(denied)),
                Decision::Login(response) => Ok(response),
                Decision::Allow(principal, set_cookie) => {
                    let caller = Caller(Arc::new(principal));
                    parts.extensions.insert(caller.clone());
                    let Ok(mut response) = crate::call_boxed(&mut inner, http::Request::from_parts(parts, body)).await;
                    if let Some(cookie) = set_cookie {
                        response.headers_mut().append(http::header::SET_COOKIE, cookie);
                    }
                    response.extensions_mut().insert(caller);
                    Ok(response)
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::future::BoxFuture;

    use super::*;
    use crate::verify::{AuthFuture, SessionOutcome};

    #[derive(Debug)]
    struct Sessions;

    impl VerifySession for Sessions {
        fn cookie_name(&self) -> &str {
            "__Host-portcullis"
        }
        fn verify(&self, _: &str) -> BoxFuture<'static, Result<SessionOutcome, Denied>> {
            Box::pin(async { Err(Denied::new(Reason::SessionInvalid)) })
        }
        fn login_redirect(&self, _: &str) -> Response<Body> {
            Response::new(crate::empty())
        }
        fn challenge(&self) -> HeaderValue {
            HeaderValue::from_static("Cookie")
        }
    }

    #[derive(Debug)]
    struct Keys;

    impl VerifyApiKey for Keys {
        fn recognises(&self, credential: &str) -> bool {
            credential.starts_with("pcl_")
        }
        fn verify(&self, _: &str) -> AuthFuture {
            Box::pin(async { Err(Denied::new(Reason::ApiKeyUnknown)) })
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn gateway_credentials_never_reach_the_upstream_other_credentials_do() {
        let auth = Authenticators {
            api_key: Some(Arc::new(Keys)),
            api_key_header: Some(HeaderName::from_static("x-api-key")),
            session: Some(Arc::new(Sessions)),
            ..Authenticators::default()
        };
        let mut h = headers(&[
            ("cookie", "theme=dark; __Host-portcullis=sealed"),
            ("cookie", "lang=en"),
            ("x-api-key", "pcl_a_b"),
            ("authorization", "Bearer pcl_a_b"),
        ]);
        auth.scrub(&mut h);
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["theme=dark; lang=en"]);
        assert!(!h.contains_key("x-api-key") && !h.contains_key("authorization"));

        let mut h = headers(&[("authorization", "Bearer eyJhbGciOi.x.y"), ("cookie", "a=1")]);
        auth.scrub(&mut h);
        assert_eq!(h["authorization"], "Bearer eyJhbGciOi.x.y", "a JWT is the client's to forward");
        assert_eq!(h["cookie"], "a=1", "untouched when our cookie is absent");

        let mut h = headers(&[("cookie", "__Host-portcullis=sealed")]);
        auth.scrub(&mut h);
        assert!(!h.contains_key("cookie"));
    }

    #[test]
    fn forged_identity_headers_are_stripped_in_any_case() {
        let mut h = headers(&[
            ("X-Portcullis-Subject", "admin"),
            ("x-portcullis-roles", "admin"),
            ("X_Portcullis_Subject", "admin"),
            ("x-portcullis_auth", "jwt"),
            ("x-portcullisx", "kept"),
            ("x-other", "1"),
        ]);
        strip_identity_headers(&mut h);
        let mut kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["x-other", "x-portcullisx"]);
    }
}
