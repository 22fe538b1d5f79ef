//! The one place a denial becomes a response and a security event; also the
//! request context (request id, client address) and the access log.
//!
//! Outermost layer of the stack. On the way in it removes hop-by-hop headers
//! (and any header the client names in `Connection`, so none can sway a
//! decision), resolves the client address
//! through the trusted proxies, assigns the request id (keeping an incoming
//! one only from a trusted proxy) and puts both into the request's extensions.
//! On the way out, a response that carries a [`Denied`] in its extensions is
//! rendered as `{"error": "<reason>", "request_id": "…"}` with the reason's
//! status, and one [`SecurityEvent`] is emitted (none when it is marked
//! [`Quiet`]); a redirect refusal, notes and an issued ban are events too
//! (see `crate::refusal`). A request let through (no refusal, no ban) gets
//! a `request.allowed` event (action `allow`) only when sampled: with the
//! chance configured (`[events] sample_allowed`, in
//! [`crate::StackConfig::sample_allowed_ppm`]), no random number drawn when
//! it is 0. Every response
//! gets `X-Request-Id`. When the
//! response body finishes (or the client goes away), one access-log line is
//! written.
//!
//! It decides nothing itself: bans, like every defence, are enforced by a
//! layer inside it (`BansLayer` in `ban.rs`).
//!
//! Deployment caveat: the client address in events is only as good as the
//! trusted-proxy list (see `portcullis_policy::forwarded`).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use portcullis_policy::event::RequestSummary;
use portcullis_policy::forwarded::{TrustedProxies, resolve_client};
use portcullis_policy::request_id::{X_REQUEST_ID, is_acceptable};
use portcullis_policy::{Action, Denied, SecurityEvent, hop};
use tower::{Layer, Service};

use crate::body::Observed;
use crate::events::EventSink;
use crate::received::RepeatedHopHeader;
use crate::refusal::{IssuedBan, MoreNoted, Noted, Quiet, Recorded, Redirected};
use crate::{Body, ConnInfo, RequestContext, RouteInfo, ServedBy, empty, full};

/// `sample_allowed_ppm` meaning every allowed request.
const SAMPLE_ALL: u32 = 1_000_000;

/// Whether this allowed request is recorded: never at 0 (without drawing a
/// random number), always at a million, else with that chance.
fn sampled(ppm: u32) -> bool {
    ppm != 0 && (ppm >= SAMPLE_ALL || fastrand::u32(0..SAMPLE_ALL) < ppm)
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RejectLayer {
    shared: Arc<Shared>,
}

#[derive(Debug, Clone)]
struct Shared {
    trusted: TrustedProxies,
    events: Arc<dyn EventSink>,
    access_log: bool,
    /// Allowed requests recorded per million (`[events] sample_allowed`).
    sample_allowed_ppm: u32,
}

impl RejectLayer {
    /// A layer resolving clients through `trusted` and sending events to
    /// `events`, recording `sample_allowed_ppm` in a million allowed requests.
    #[must_use]
    pub fn new(trusted: TrustedProxies, events: Arc<dyn EventSink>, access_log: bool, sample_allowed_ppm: u32) -> Self {
        let sample_allowed_ppm = sample_allowed_ppm.min(SAMPLE_ALL);
        Self { shared: Arc::new(Shared { trusted, events, access_log, sample_allowed_ppm }) }
    }
}

impl<S> Layer<S> for RejectLayer {
    type Service = Reject<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Reject { inner, shared: self.shared.clone() }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Reject<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// What the access log and events need from the request, taken before the
/// request moves inward.
struct Summary {
    start: Instant,
    method: Method,
    /// The URI shares hyper's buffer: cloning it does not copy the path.
    uri: Uri,
    request_id: HeaderValue,
    client_ip: IpAddr,
    listener: Arc<str>,
}

impl<S> Service<Request<Body>> for Reject<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let start = Instant::now();
        let (peer, listener) = req.extensions().get::<ConnInfo>().map_or_else(
            || (SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), Arc::from("unknown")),
            |c| (c.peer, c.listener.clone()),
        );
        // Connection-level headers go first: a header a client names in
        // `Connection` must not influence any decision (RFC 9110 §7.6.1).
        // A repeated `Proxy-Authorization` is refused by the duplicates
        // guard, which runs after it is gone.
        if req.headers().get_all(http::header::PROXY_AUTHORIZATION).iter().nth(1).is_some() {
            req.extensions_mut().insert(RepeatedHopHeader("proxy-authorization"));
        }
        hop::strip(req.headers_mut(), true);
        // `Transfer_Encoding` reaches CGI-style upstreams as Transfer-Encoding.
        crate::strip_underscore_aliases(req.headers_mut(), hop::ALIASED);
        let client = resolve_client(peer.ip(), req.headers(), &self.shared.trusted);
        let incoming = req.headers().get(X_REQUEST_ID).filter(|v| client.peer_trusted && is_acceptable(v.as_bytes()));
        let request_id = match incoming {
            Some(id) => id.clone(),
            None => {
                let id = uuid::Uuid::new_v4();
                let mut buffer = uuid::Uuid::encode_buffer();
                let text = id.hyphenated().encode_lower(&mut buffer);
                HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
            }
        };
        let summary = Summary {
            start,
            method: req.method().clone(),
            uri: req.uri().clone(),
            request_id: request_id.clone(),
            client_ip: client.ip,
            listener,
        };
        let header_value = request_id.clone();
        req.extensions_mut().insert(RequestContext { request_id, client });

        // Called here, not in the future below: the service driven to
        // readiness is this one, and no clone of the stack is needed.
        let shared = self.shared.clone();
        Box::pin(self.inner.call(req).map(move |Ok(response)| Ok(answer(&shared, summary, header_value, response))))
    }
}

/// The response on its way out: refusals rendered, notes and bans emitted as
/// events, `X-Request-Id` set, the access log attached.
fn answer(shared: &Shared, summary: Summary, request_id: HeaderValue, mut response: Response<Body>) -> Response<Body> {
    let status = response.status().as_u16();
    // A browser sent elsewhere (to login) instead of an error page: a
    // refusal, with the status really sent.
    let redirected = response.extensions_mut().remove::<Redirected>();
    let mut refused = redirected.is_some();
    if let Some(Redirected(denied)) = &redirected {
        emit(shared, &summary, &response, denied, status, Action::Deny);
    }
    // Noticed but let through (a limit store failing open, a failed
    // login at the upstream).
    if let Some(Noted(noted)) = response.extensions_mut().remove::<Noted>() {
        emit(shared, &summary, &response, &noted, status, Action::Log);
    }
    if let Some(MoreNoted(notes)) = response.extensions_mut().remove::<MoreNoted>() {
        for noted in &notes {
            emit(shared, &summary, &response, noted, status, Action::Log);
        }
    }
    // Granted, and worth recording (an account's login).
    if let Some(Recorded(recorded)) = response.extensions_mut().remove::<Recorded>() {
        for event in &recorded {
            emit(shared, &summary, &response, event, status, Action::Allow);
        }
    }
    if let Some(denied) = response.extensions_mut().remove::<Denied>() {
        refused = true;
        if response.extensions_mut().remove::<Quiet>().is_none() {
            emit(shared, &summary, &response, &denied, denied.status().as_u16(), Action::Deny);
        }
        response = render(&denied, &summary, response);
    }
    // Last, as it follows from the refusals above.
    if let Some(IssuedBan(issued)) = response.extensions_mut().remove::<IssuedBan>() {
        refused = true;
        emit(shared, &summary, &response, &issued, response.status().as_u16(), Action::Ban);
    }
    // Let through: recorded only when sampled (`[events] sample_allowed`).
    if !refused && sampled(shared.sample_allowed_ppm) {
        let allowed = Denied::new(portcullis_policy::Reason::RequestAllowed);
        emit(shared, &summary, &response, &allowed, response.status().as_u16(), Action::Allow);
    }
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    if shared.access_log { with_access_log(response, summary) } else { response }
}

/// Emits the security event for `denied` about the request of `summary`.
fn emit(shared: &Shared, summary: &Summary, response: &Response<Body>, denied: &Denied, status: u16, action: Action) {
    let route = response.extensions().get::<Arc<RouteInfo>>().map(|r| r.name.clone());
    let request = RequestSummary {
        request_id: summary.request_id.to_str().unwrap_or("-"),
        client_ip: summary.client_ip,
        listener: &summary.listener,
        method: summary.method.as_str(),
        path: summary.uri.path(),
        route: route.as_deref(),
    };
    let mut event = SecurityEvent::denied(&request, denied, SystemTime::now());
    event.status = status;
    event.action = action;
    shared.events.emit(event);
}

/// Replaces a denial's placeholder response with the JSON error answer,
/// keeping the extensions (route, upstream) for the access log.
fn render(denied: &Denied, summary: &Summary, response: Response<Body>) -> Response<Body> {
    let (parts, _) = response.into_parts();
    let body = denied.body(summary.request_id.to_str().unwrap_or("-"));
    let len = body.len();
    let mut out = Response::new(if summary.method == Method::HEAD { empty() } else { full(body) });
    *out.status_mut() = denied.status();
    *out.extensions_mut() = parts.extensions;
    // Keep what inner layers set (security headers); add the error's own.
    *out.headers_mut() = parts.headers;
    let headers = out.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in &denied.headers {
        headers.append(name.clone(), value.clone());
    }
    out
}

fn with_access_log(response: Response<Body>, summary: Summary) -> Response<Body> {
    let status = response.status().as_u16();
    // HEAD answers and 204/304 have no body for hyper to read to its end.
    let bodyless = summary.method == Method::HEAD || status == 204 || status == 304;
    let route = response.extensions().get::<Arc<RouteInfo>>().map(|r| r.name.clone());
    let upstream = response.extensions().get::<ServedBy>().map(|s| s.0.clone());
    response.map(move |body| {
        Observed::new(body, move |bytes, completed| {
            tracing::info!(
                target: "access",
                request_id = summary.request_id.to_str().unwrap_or("-"),
                client_ip = %summary.client_ip,
                listener = %summary.listener,
                method = %summary.method,
                path = summary.uri.path(),
                status,
                bytes,
                completed = completed || bodyless,
                duration_ms = summary.start.elapsed().as_secs_f64() * 1000.0,
                route = route.as_deref().unwrap_or("-"),
                upstream = upstream.as_deref().unwrap_or("-"),
            );
        })
        .boxed_unsync()
    })
}
