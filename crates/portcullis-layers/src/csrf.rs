//! CSRF on live requests: unsafe requests on protected routes must be
//! same-origin and carry the double-submit token; safe requests get a token
//! cookie when they have no valid one (rules in `portcullis_policy::csrf`).
//!
//! Decision rules:
//! - Only routes with `RouteInfo::csrf` are looked at: by default those
//!   accepting `session`, or any route with `csrf = true`.
//! - Runs after authentication and authorization: a request authenticated by
//!   an exempt method (by default a bearer JWT or an API key, credentials a
//!   browser never attaches on its own) passes; a session request's token is
//!   bound to its session id.
//! - An unsafe request is checked by `CsrfPolicy::verify` and refused with
//!   `csrf.*` (403) before it reaches the upstream.
//! - A `GET` or `HEAD` without a token cookie valid for its session gets one
//!   (`Set-Cookie` on the answer), so a page served through the gateway has
//!   a token before its first form post.
//! - The token cookie and header are removed from requests on protected
//!   routes before they go upstream: the token is the gateway's business.
//! - [`token_endpoint`] answers `GET /.portcullis/csrf` with
//!   `{"token": "…"}` and the cookie, for single-page applications.
//!
//! Deployment caveat: the request's own origin is its `Host` with the
//! listener's scheme, or `X-Forwarded-Proto` when a trusted proxy sends it;
//! a proxy rewriting `Host` needs the public origin in `trusted_origins`.

use std::sync::Arc;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response};
use portcullis_policy::csrf::{CsrfPolicy, CsrfRequest, Mode, is_safe};
use portcullis_policy::{Denied, Reason};

use crate::caller::Caller;
use crate::guard::{Exchange, Step};
use crate::refusal::deny;
use crate::verify::VerifySession;
use crate::{Body, ConnInfo, RequestContext, RouteInfo, full};

/// The path of the token endpoint.
pub const TOKEN_PATH: &str = "/.portcullis/csrf";

/// The `[csrf]` policy (nothing is checked without one). See the module
/// docs.
#[derive(Debug, Clone)]
pub struct Csrf(pub Option<Arc<CsrfPolicy>>);

/// `https` on a TLS listener, or when a trusted proxy says
/// `X-Forwarded-Proto: https`; else `http`.
#[must_use]
pub fn effective_scheme(extensions: &http::Extensions, headers: &http::HeaderMap) -> &'static str {
    let tls = extensions.get::<ConnInfo>().is_some_and(|c| c.scheme == "https");
    let proxied_tls = extensions.get::<RequestContext>().is_some_and(|ctx| ctx.client.peer_trusted)
        && headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    if tls || proxied_tls { "https" } else { "http" }
}

/// The host a request is for, with its port: the URI authority (HTTP/2,
/// absolute-form) or the `Host` header.
fn request_host<'a>(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> Option<&'a str> {
    uri.authority()
        .map(http::uri::Authority::as_str)
        .or_else(|| headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
}

/// What the layer does with a request.
enum Decision {
    /// Not a protected route: untouched.
    Unprotected,
    Pass,
    /// Pass, and set this token cookie on the answer.
    Issue(HeaderValue),
    Deny(Denied),
}

fn decide(policy: &CsrfPolicy, req: &Request<Body>) -> Decision {
    let Some(route) = req.extensions().get::<Arc<RouteInfo>>().filter(|r| r.csrf) else {
        return Decision::Unprotected;
    };
    if policy.mode == Mode::Off {
        return Decision::Unprotected;
    }
    let caller = req.extensions().get::<Caller>().map(|c| &c.0);
    if caller.is_some_and(|p| policy.exempts(p.method)) {
        return Decision::Pass;
    }
    let session = caller.and_then(|p| p.session_id.as_deref());
    let scheme = effective_scheme(req.extensions(), req.headers());
    if is_safe(req.method()) {
        let navigable = *req.method() == Method::GET || *req.method() == Method::HEAD;
        if policy.mode != Mode::OriginToken || !navigable || policy.has_valid_cookie(req.headers(), scheme, session) {
            return Decision::Pass;
        }
        return match policy.key.issue(session).ok().and_then(|token| policy.set_cookie(&token, scheme)) {
            Some(cookie) => Decision::Issue(cookie),
            None => {
                tracing::warn!("could not issue a CSRF token; the answer goes without one");
                Decision::Pass
            }
        };
    }
    let facts = CsrfRequest {
        method: req.method(),
        headers: req.headers(),
        scheme,
        host: request_host(req.uri(), req.headers()),
        session,
    };
    match policy.verify(&facts) {
        Ok(()) => Decision::Pass,
        Err(denied) => Decision::Deny(denied.with_rule(route.name.to_string())),
    }
}

impl Exchange for Csrf {
    /// The token cookie to set on the answer.
    type Carry = HeaderValue;

    fn request(&self, req: &mut Request<Body>) -> Step<Self::Carry> {
        let Some(policy) = &self.0 else { return Step::Pass };
        let decision = decide(policy, req);
        if !matches!(decision, Decision::Unprotected) {
            // The token is the gateway's business, like the session cookie.
            let scheme = effective_scheme(req.extensions(), req.headers());
            let headers = req.headers_mut();
            headers.remove(&policy.header);
            let name = policy.cookie_name(scheme);
            portcullis_policy::cookies::remove(headers, name);
        }
        match decision {
            Decision::Unprotected | Decision::Pass => Step::Pass,
            Decision::Deny(denied) => Step::Refuse(denied),
            Decision::Issue(cookie) => Step::Finish(cookie),
        }
    }

    fn response(cookie: Self::Carry, response: &mut Response<Body>) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
}

/// Answers `GET /.portcullis/csrf`: a new token in `{"token": "…"}` and in
/// the token cookie, bound to the caller's session when the request carries
/// a valid one (`sessions` verifies it, refreshing it if due). The gateway's
/// own endpoints run before authentication, hence the verification here.
pub async fn token_endpoint(
    policy: Arc<CsrfPolicy>,
    sessions: Vec<Arc<dyn VerifySession>>,
    parts: http::request::Parts,
) -> Response<Body> {
    let scheme = effective_scheme(&parts.extensions, &parts.headers);
    let mut refreshed = None;
    let mut session_id = None;
    // The first session (OIDC, then a built-in account's) that verifies.
    for sessions in &sessions {
        if let Some(value) = portcullis_policy::csrf::cookie_values(&parts.headers, sessions.cookie_name()).next()
            && let Ok(outcome) = sessions.verify(value).await
        {
            session_id = outcome.principal.session_id;
            refreshed = outcome.set_cookie;
            break;
        }
    }
    let Ok(token) = policy.key.issue(session_id.as_deref()) else {
        return deny(Denied::new(Reason::GatewayInternal).with_detail("random source failed issuing a CSRF token"));
    };
    let Some(cookie) = policy.set_cookie(&token, scheme) else {
        return deny(Denied::new(Reason::GatewayInternal).with_detail("CSRF cookie not encodable"));
    };
    let mut response = Response::new(full(token_json(&token)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.append(SET_COOKIE, cookie);
    if let Some(session_cookie) = refreshed {
        headers.append(SET_COOKIE, session_cookie);
    }
    response
}

/// `{"token":"…"}`: the token is base64url, nothing to escape.
fn token_json(token: &str) -> String {
    format!("{{\"token\":\"{token}\"}}")
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::guard::GuardLayer;
    use portcullis_policy::csrf::{COOKIE_HTTP, CsrfKey, DEFAULT_HEADER, MissingOrigin};
    use portcullis_policy::{AuthMethod, Principal};
    use tower::{Layer, ServiceExt};

    fn policy() -> Arc<CsrfPolicy> {
        Arc::new(CsrfPolicy {
            mode: Mode::OriginToken,
            trusted_origins: Vec::new(),
            allow_same_site: false,
            missing_origin: MissingOrigin::Refuse,
            cookie: None,
            header: http::HeaderName::from_static(DEFAULT_HEADER),
            exempt: [AuthMethod::Jwt, AuthMethod::ApiKey].into_iter().collect(),
            key: CsrfKey::new(&[9; 32]).unwrap(),
        })
    }

    fn route(csrf: bool) -> Arc<RouteInfo> {
        Arc::new(RouteInfo {
            name: Arc::from("r"),
            upstream: 0,
            upstream_name: Arc::from("app"),
            auth: crate::AuthMode::Public,
            csrf,
            ..RouteInfo::default()
        })
    }

    fn caller(method: AuthMethod, session: Option<&str>) -> Caller {
        let mut principal = Principal::new("alice", method, b"credential");
        principal.session_id = session.map(str::to_owned);
        Caller(Arc::new(principal))
    }

    /// Runs a request through the layer over an inner service that answers
    /// 200; returns the answer's denial code ("" if none) and its cookies.
    async fn run(req: Request<Body>) -> (&'static str, Vec<String>) {
        run_seen(req).await.0
    }

    /// [`run`], and the headers the inner service saw, if it was called.
    async fn run_seen(req: Request<Body>) -> ((&'static str, Vec<String>), Option<http::HeaderMap>) {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let record = seen.clone();
        let inner = tower::service_fn(move |req: Request<Body>| {
            *record.lock().unwrap() = Some(req.headers().clone());
            async { Ok::<_, Infallible>(Response::new(crate::empty())) }
        });
        let response = GuardLayer::new(Csrf(Some(policy()))).layer(inner).oneshot(req).await.unwrap();
        let seen = seen.lock().unwrap().take();
        (code_and_cookies(&response), seen)
    }

    fn code_and_cookies(response: &Response<Body>) -> (&'static str, Vec<String>) {
        let code = crate::denial_of(response).map_or("", |d| d.reason.code());
        let cookies = response.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        (code, cookies)
    }

    fn request(
        method: Method,
        route: Arc<RouteInfo>,
        caller: Option<Caller>,
        headers: &[(&str, &str)],
    ) -> Request<Body> {
        let mut builder = Request::builder().method(method).uri("/orders").header("host", "app.test");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut req = builder.body(crate::empty()).unwrap();
        req.extensions_mut().insert(route);
        if let Some(caller) = caller {
            req.extensions_mut().insert(caller);
        }
        req
    }

    #[tokio::test]
    async fn unsafe_requests_on_protected_routes_are_checked_exempt_ones_are_not() {
        let session = || Some(caller(AuthMethod::Session, Some("s1")));
        let cross = [("origin", "https://evil.example")];
        let cases: Vec<(Request<Body>, &str)> = vec![
            (request(Method::POST, route(true), session(), &cross), "csrf.origin"),
            (request(Method::POST, route(true), session(), &[("origin", "http://app.test")]), "csrf.token_missing"),
            (request(Method::POST, route(false), session(), &cross), ""),
            (request(Method::POST, route(true), Some(caller(AuthMethod::Jwt, None)), &cross), ""),
            (request(Method::POST, route(true), Some(caller(AuthMethod::ApiKey, None)), &cross), ""),
            (request(Method::POST, route(true), Some(caller(AuthMethod::Mtls, None)), &cross), "csrf.origin"),
            (request(Method::POST, route(true), None, &cross), "csrf.origin"),
        ];
        for (req, expected) in cases {
            let what = format!("{} {:?}", req.method(), req.headers().get("origin"));
            assert_eq!(run(req).await.0, expected, "{what}");
        }
        let token = policy().key.issue(Some("s1")).unwrap();
        let cookie = format!("{COOKIE_HTTP}={token}");
        let cookie = format!("theme=dark; {cookie}");
        let good = [("origin", "http://app.test"), ("cookie", cookie.as_str()), (DEFAULT_HEADER, token.as_str())];
        let ((code, _), seen) = run_seen(request(Method::POST, route(true), session(), &good)).await;
        assert_eq!(code, "");
        let seen = seen.expect("passed to the inner service");
        assert!(!seen.contains_key(DEFAULT_HEADER), "the token stays at the gateway");
        assert_eq!(seen["cookie"], "theme=dark", "only the token cookie is removed");
        // Unprotected routes are left alone.
        let ((_, _), seen) = run_seen(request(Method::POST, route(false), session(), &good)).await;
        assert!(seen.unwrap().contains_key(DEFAULT_HEADER));
    }

    #[tokio::test]
    async fn safe_requests_get_a_cookie_unless_they_hold_a_valid_one() {
        let session = || Some(caller(AuthMethod::Session, Some("s1")));
        let (code, cookies) = run(request(Method::GET, route(true), session(), &[])).await;
        assert_eq!(code, "");
        assert_eq!(cookies.len(), 1);
        let issued = cookies[0].split(';').next().unwrap().to_owned();
        assert!(issued.starts_with("portcullis-csrf="), "{issued}");

        let (_, cookies) = run(request(Method::GET, route(true), session(), &[("cookie", &issued)])).await;
        assert!(cookies.is_empty(), "a valid cookie is kept");
        // A new session makes the old cookie worthless: replaced.
        let other = Some(caller(AuthMethod::Session, Some("s2")));
        let (_, cookies) = run(request(Method::GET, route(true), other, &[("cookie", &issued)])).await;
        assert_eq!(cookies.len(), 1);
        // Unprotected routes, exempt callers and OPTIONS get nothing.
        assert!(run(request(Method::GET, route(false), session(), &[])).await.1.is_empty());
        assert!(run(request(Method::GET, route(true), Some(caller(AuthMethod::Jwt, None)), &[])).await.1.is_empty());
        assert!(run(request(Method::OPTIONS, route(true), session(), &[])).await.1.is_empty());
    }
}
