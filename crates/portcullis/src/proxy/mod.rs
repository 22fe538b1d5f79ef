//! The proxy: the innermost service, sending a vetted request to its route's
//! upstream and streaming the answer back.
//!
//! Bodies stream both ways; nothing is buffered. Failures become typed
//! denials: a target that cannot be reached within the connect timeout is
//! `upstream.connect` (502), no response head within the response timeout is
//! `upstream.timeout` (504), a broken answer is `upstream.protocol` (502), and
//! a client body that crossed the size limit mid-stream is `limit.body` (413).
//! A request without a body is retried on the next target when a connection
//! cannot be opened (nothing was sent, so this is always safe).
//!
//! WebSocket upgrades the upgrade guard admitted are passed through: once
//! the upstream answers a `101` that completes the client's handshake
//! (`portcullis_policy::upgrade::check_switch`), the two connections are
//! joined byte for byte. A `101` that does not, or one to a request that
//! asked for no upgrade, is `upstream.protocol` (502) and nothing is joined.

pub mod pool;
pub mod upstream;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::header::{CONTENT_LENGTH, COOKIE, HOST};
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper_util::rt::TokioIo;
use pool::SendError;
use portcullis_layers::body::{LimitTripped, is_body_too_large};
use portcullis_layers::pace::{BodyTimedOut, is_body_timeout};
use portcullis_layers::{Body, RouteInfo, ServedBy, deny};
use portcullis_policy::upgrade::{WebSocketUpgrade, check_switch};
use portcullis_policy::{Denied, Reason, hop};
use tokio_util::task::TaskTracker;
use upstream::{TargetState, UpstreamState};

use crate::config::{HostHeader, Target};
use crate::demo;

/// What the client connection holds while it is open (its place in its
/// worker's count, its share of `max_connections_per_ip`), opaque here.
/// The server puts one in every request's extensions; a WebSocket tunnel
/// keeps a clone until it closes: an upgraded connection outlives hyper's
/// connection task, and must still count.
#[derive(Clone)]
pub(crate) struct ConnHold(#[allow(dead_code)] Arc<dyn std::any::Any + Send + Sync>);

impl ConnHold {
    /// Holds `held` until the last clone is dropped.
    pub(crate) fn new(held: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        Self(held)
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Proxy {
    upstreams: Arc<Vec<UpstreamState>>,
    tasks: TaskTracker,
}

impl Proxy {
    /// A proxy over `upstreams`; WebSocket tunnels are spawned on `tasks` so
    /// graceful shutdown can wait for them.
    #[must_use]
    pub fn new(upstreams: Arc<Vec<UpstreamState>>, tasks: TaskTracker) -> Self {
        Self { upstreams, tasks }
    }
}

impl tower::Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The future boxed as it is: wrapping it in another `async` block
        // would move (copy) its whole state once more per request.
        Box::pin(forward(self.upstreams.clone(), self.tasks.clone(), req))
    }
}

async fn forward(
    upstreams: Arc<Vec<UpstreamState>>,
    tasks: TaskTracker,
    mut req: Request<Body>,
) -> Result<Response<Body>, Infallible> {
    let Some(route) = req.extensions().get::<Arc<RouteInfo>>().cloned() else {
        return Ok(deny(Denied::new(Reason::GatewayInternal).with_detail("proxy reached without a route")));
    };
    let Some(upstream) = upstreams.get(route.upstream) else {
        return Ok(deny(Denied::new(Reason::GatewayInternal).with_detail("route names a missing upstream")));
    };
    let websocket = req.extensions().get::<WebSocketUpgrade>().cloned();
    let upgrade = websocket.is_some().then(|| hyper::upgrade::on(&mut req));
    // A tunnel keeps its client connection counted (gauge, per-IP limit).
    let hold = req.extensions().get::<ConnHold>().cloned();

    // Retrying is safe only when no body bytes can have been consumed.
    let attempts = if req.body().is_end_stream() { upstream.targets.len().max(1) } else { 1 };
    let mut last = Denied::new(Reason::UpstreamConnect);
    let started = std::time::Instant::now();
    // A refusal after trying the upstream carries the time it took (a
    // response carries it in `ServedBy`).
    let waited = move |mut response: Response<Body>| {
        response.extensions_mut().insert(crate::metrics::UpstreamTime(started.elapsed()));
        Ok(response)
    };
    for attempt in 0..attempts {
        let Some(target) = upstream.pick() else { break };
        if attempt > 0 {
            upstream.metrics.retries.increment(1);
        }
        let request = if attempt + 1 < attempts {
            clone_head(&req)
        } else {
            std::mem::replace(&mut req, Request::new(portcullis_layers::empty()))
        };
        match send(upstream, target, request, websocket.as_ref()).await {
            Ok(mut response) => {
                UpstreamState::mark_ok(target);
                if response.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(client_upgrade) = upgrade
                {
                    tunnel(&tasks, client_upgrade, &mut response, &upstream.config.name, hold);
                }
                response.extensions_mut().insert(ServedBy(target.label.clone(), started.elapsed()));
                return Ok(response);
            }
            Err(Failure::Connect(denied)) => {
                upstream.metrics.connect.increment(1);
                upstream.mark_failed(target);
                tracing::warn!(upstream = %upstream.config.name, upstream_target = %target.label, "upstream target unreachable; cooling down");
                last = denied;
            }
            Err(Failure::Other(denied)) => {
                match denied.reason {
                    Reason::UpstreamTimeout => upstream.metrics.timeout.increment(1),
                    Reason::UpstreamProtocol => upstream.metrics.protocol.increment(1),
                    _ => {}
                }
                return waited(deny(denied));
            }
        }
    }
    waited(deny(last))
}

/// A copy of a body-less request, for a retry.
fn clone_head(req: &Request<Body>) -> Request<Body> {
    let mut out = Request::new(portcullis_layers::empty());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    out
}

enum Failure {
    /// Nothing reached the target: try another.
    Connect(Denied),
    /// The request was (maybe) sent: answer now.
    Other(Denied),
}

async fn send(
    upstream: &UpstreamState,
    target: &TargetState,
    mut req: Request<Body>,
    websocket: Option<&WebSocketUpgrade>,
) -> Result<Response<Body>, Failure> {
    let authority = match &target.target {
        // Boxed, so proxied requests' futures do not carry its state.
        Target::Demo => return Ok(Box::pin(demo::handle(req)).await),
        Target::Http { authority, .. } => authority,
    };
    // Upstream requests use origin form (`GET /path?query HTTP/1.1`).
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    // The client's authority (HTTP/2 `:authority` or absolute-form) becomes Host.
    let client_host = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    *req.uri_mut() = Uri::from(path);
    *req.version_mut() = Version::HTTP_11;
    // One Content-Length in plain digits: the client's parser accepted `05`
    // or the same number twice, which an upstream may read differently.
    if let Ok(Some(length)) = portcullis_policy::limits::content_length(req.headers()) {
        req.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    // HTTP/2 clients send each cookie as its own field; HTTP/1.1 has one
    // `Cookie` line (RFC 9113 §8.2.3), and a backend may read only one.
    let cookies: Vec<&[u8]> = req.headers().get_all(COOKIE).iter().map(HeaderValue::as_bytes).collect();
    if cookies.len() > 1
        && let Ok(joined) = HeaderValue::from_bytes(&cookies.join(&b"; "[..]))
    {
        req.headers_mut().insert(COOKIE, joined);
    }
    let target_host = || HeaderValue::from_str(authority.as_str()).ok();
    match upstream.config.host_header {
        HostHeader::Preserve => {
            if let Some(host) = client_host {
                req.headers_mut().insert(HOST, host);
            }
        }
        HostHeader::Target => {
            if let Some(host) = target_host() {
                req.headers_mut().insert(HOST, host);
            }
        }
    }
    // HTTP/1.1 requires Host; an HTTP/1.0 client may have sent none.
    if !req.headers().contains_key(HOST)
        && let Some(host) = target_host()
    {
        req.headers_mut().insert(HOST, host);
    }

    let tripped = req.extensions().get::<LimitTripped>().cloned();
    let slow_body = req.extensions().get::<BodyTimedOut>().cloned();
    let slow_client = || slow_body.as_ref().is_some_and(BodyTimedOut::is_set);
    let Some(pool) = target.pool.as_ref() else {
        return Err(Failure::Other(Denied::new(Reason::GatewayInternal).with_detail("target without a pool")));
    };
    let result = tokio::time::timeout(upstream.config.response_timeout, pool.send(req)).await;
    let response = match result {
        // The client's slow body, not the upstream, used up the time.
        Err(_elapsed) if slow_client() => {
            return Err(Failure::Other(
                Denied::new(Reason::RequestBodyTimeout)
                    .with_detail("request body too slow (cut at the response timeout)"),
            ));
        }
        Err(_elapsed) => {
            return Err(Failure::Other(Denied::new(Reason::UpstreamTimeout).with_detail(format!(
                "{} sent no response head within {:?}",
                target.label, upstream.config.response_timeout
            ))));
        }
        Ok(Err(SendError::Connect(e))) => {
            return Err(Failure::Connect(
                Denied::new(Reason::UpstreamConnect).with_detail(format!("{}: {e}", target.label)),
            ));
        }
        Ok(Err(SendError::Http(e))) => {
            if is_body_too_large(&e) || tripped.is_some_and(|t| t.is_set()) {
                return Err(Failure::Other(
                    Denied::new(Reason::LimitBody).with_detail("streamed body crossed the limit"),
                ));
            }
            if is_body_timeout(&e) || slow_client() {
                return Err(Failure::Other(Denied::new(Reason::RequestBodyTimeout).with_detail(error_chain(&e))));
            }
            if is_client_body_error(&e) {
                return Err(Failure::Other(Denied::new(Reason::RequestBody).with_detail(error_chain(&e))));
            }
            return Err(Failure::Other(Denied::new(Reason::UpstreamProtocol).with_detail(format!(
                "{}: {}",
                target.label,
                error_chain(&e)
            ))));
        }
        Ok(Ok(response)) => response,
    };
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        // The upstream connection is dropped with the response: a 101 is
        // never pooled.
        check_switch(websocket, response.headers()).map_err(|denied| {
            let detail = format!("{}: {}", target.label, denied.detail.as_deref().unwrap_or_default());
            Failure::Other(denied.with_detail(detail))
        })?;
    }
    let mut response = response;
    hop::strip(response.headers_mut(), switching);
    Ok(response)
}

/// Whether the failure came from reading the client's body (the client went
/// away or sent a broken chunk) rather than from the upstream.
fn is_client_body_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_user() || h.is_body_write_aborted())
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// A short, secret-free description of an error and its causes.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut current = error.source();
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// Joins the client's and the upstream's upgraded connections.
fn tunnel(
    tasks: &TaskTracker,
    client: hyper::upgrade::OnUpgrade,
    response: &mut Response<Body>,
    name: &str,
    connection: Option<ConnHold>,
) {
    let upstream = hyper::upgrade::on(&mut *response);
    let held = crate::metrics::Held::new(crate::metrics::WEBSOCKET_TUNNELS_OPEN, "upstream", name);
    tasks.spawn(async move {
        let _held = (held, connection);
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
}
