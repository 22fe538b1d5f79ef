//! Routing: every request must match a configured route.
//!
//! Finds the most specific route for the request's host, path and method
//! (rules in `portcullis_policy::route`). No match is `route.none` (404); a
//! path that matches only with other methods is `route.method` (405, with
//! `Allow`); an unusable `Host` is `request.malformed` (400); a WebSocket
//! handshake on a route without `websocket = true` is `upgrade.not_allowed`
//! (400). CONNECT is never routed (405 naming the methods the path serves):
//! the gateway opens no tunnels, and an upstream must not be asked to. The
//! matched route travels inward in the request's extensions and outward in
//! the response's, so later layers, events and the access log can name it.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{ALLOW, HOST};
use http::{HeaderValue, Method, Request, Response, Version};
use portcullis_policy::normalize::{Case, PathPolicy};
use portcullis_policy::route::{Match, RouteTable, host_without_port};
use portcullis_policy::upgrade::WebSocketUpgrade;
use portcullis_policy::{Denied, Reason};

use crate::guard::{Exchange, Step};
use crate::refusal::deny;
use crate::{Body, RouteInfo};

/// The route table, and how its paths compare. See the module docs.
#[derive(Debug, Clone)]
pub struct Route {
    routes: Arc<RouteTable<Arc<RouteInfo>>>,
    case: Case,
}

impl Route {
    /// Routes with `routes`, comparing paths per `case` (the table's
    /// patterns must be folded to match when it is [`Case::Insensitive`]).
    #[must_use]
    pub const fn new(routes: Arc<RouteTable<Arc<RouteInfo>>>, case: Case) -> Self {
        Self { routes, case }
    }
}

/// The host a request is for: the URI authority (HTTP/2, absolute-form) or
/// the `Host` header, lowercase without port. `Err` when present but unusable,
/// or when an HTTP/2 request's `host` names another host than its
/// `:authority` (RFC 9113 §8.3.1: malformed). An HTTP/1 absolute-form target
/// wins over `Host` (RFC 9112 §3.2.2), and the proxy sends it as `Host`.
fn request_host(req: &Request<Body>) -> Result<Option<Cow<'_, str>>, Denied> {
    if req.version() == Version::HTTP_2
        && let (Some(authority), Some(host)) = (req.uri().authority(), req.headers().get(HOST))
        && host.to_str().ok().and_then(host_without_port) != host_without_port(authority.as_str())
    {
        return Err(Denied::new(Reason::RequestMalformed).with_detail("host differs from :authority"));
    }
    let raw = match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => match req.headers().get(HOST) {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| Denied::new(Reason::RequestMalformed).with_detail("non-ASCII Host header"))?,
            ),
            None => None,
        },
    };
    match raw {
        None => Ok(None),
        Some(raw) => host_without_port(raw)
            .map(Some)
            .ok_or_else(|| Denied::new(Reason::RequestMalformed).with_detail("invalid Host header")),
    }
}

/// The refusal of a CONNECT: 405 with the methods the path does serve, or
/// 404 when no route serves it at all.
fn connect_refused(routes: &RouteTable<Arc<RouteInfo>>, host: Option<&str>, path: &str) -> Denied {
    let allowed: Vec<&str> =
        [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS]
            .iter()
            .filter(|m| matches!(routes.find(host, path, m), Match::Found(_)))
            .map(Method::as_str)
            .collect();
    if allowed.is_empty() {
        return Denied::new(Reason::RouteNone);
    }
    let mut denied = Denied::new(Reason::RouteMethod).with_detail("CONNECT: the gateway opens no tunnels");
    if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
        denied = denied.with_header(ALLOW, value);
    }
    denied
}

impl Exchange for Route {
    /// The matched route, for the response's extensions.
    type Carry = Arc<RouteInfo>;

    fn request(&self, req: &mut Request<Body>) -> Step<Self::Carry> {
        let host = match request_host(req) {
            Ok(host) => host,
            Err(denied) => return Step::Refuse(denied),
        };
        let path = match self.case {
            Case::Sensitive => Cow::Borrowed(req.uri().path()),
            Case::Insensitive => PathPolicy { case: self.case, ..PathPolicy::default() }.match_key(req.uri().path()),
        };
        // CONNECT asks for a tunnel; a route serves HTTP requests only.
        if req.method() == Method::CONNECT {
            return Step::Refuse(connect_refused(&self.routes, host.as_deref(), &path));
        }
        let found = match self.routes.find(host.as_deref(), &path, req.method()) {
            Match::Found(route) => route.clone(),
            Match::MethodNotAllowed(allowed) => {
                let list = allowed.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", ");
                let mut denied = Denied::new(Reason::RouteMethod);
                if let Ok(value) = HeaderValue::from_str(&list) {
                    denied = denied.with_header(ALLOW, value);
                }
                return Step::Refuse(denied);
            }
            Match::None => return Step::Refuse(Denied::new(Reason::RouteNone)),
        };
        if !found.websocket && req.extensions().get::<WebSocketUpgrade>().is_some() {
            let mut response = deny(Denied::new(Reason::UpgradeNotAllowed).with_rule(found.name.to_string()));
            response.extensions_mut().insert(found);
            return Step::Answer(response);
        }
        req.extensions_mut().insert(found.clone());
        Step::Finish(found)
    }

    fn response(found: Self::Carry, response: &mut Response<Body>) {
        response.extensions_mut().insert(found);
    }
}
