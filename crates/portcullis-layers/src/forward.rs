//! The last step before the proxy: make the request safe to forward.
//!
//! Rewrites the forwarding headers (`X-Forwarded-*`, `Forwarded`,
//! `X-Real-IP`) from the resolved client (rules in
//! `portcullis_policy::forwarded`) and sets `X-Request-Id`. Hop-by-hop headers
//! were already removed at ingress by the reject layer.

use http::header::HOST;
use http::{HeaderValue, Request};
use portcullis_policy::forwarded::{self, Hop};
use portcullis_policy::request_id::X_REQUEST_ID;

use crate::{Body, ConnInfo, RequestContext};

/// See the module docs. It never refuses, so it is a plain request map
/// (`ServiceBuilder::map_request`), not a guard.
#[must_use]
pub fn forward(mut req: Request<Body>) -> Request<Body> {
    // `X_Forwarded_For` reaches CGI-style upstreams as X-Forwarded-For.
    crate::strip_underscore_aliases(
        req.headers_mut(),
        &["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded", "x-request-id"],
    );
    let (scheme, peer_value) =
        req.extensions().get::<ConnInfo>().map_or(("http", None), |c| (c.scheme, Some(c.peer_ip.clone())));
    // HTTP/2 and absolute-form requests carry the host in the URI.
    let authority = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let host = authority.or_else(|| req.headers().get(HOST).cloned());
    if let Some(ctx) = req.extensions().get::<RequestContext>() {
        let client = ctx.client;
        let id = ctx.request_id.clone();
        let hop = Hop { client, scheme, host: host.as_ref(), peer_value: peer_value.as_ref() };
        forwarded::apply(req.headers_mut(), &hop);
        req.headers_mut().insert(X_REQUEST_ID, id);
    } else {
        // Without a resolved client nothing the client claimed may pass.
        for name in [
            forwarded::X_FORWARDED_FOR,
            forwarded::X_FORWARDED_PROTO,
            forwarded::X_FORWARDED_HOST,
            forwarded::X_REAL_IP,
        ] {
            req.headers_mut().remove(name);
        }
        req.headers_mut().remove(http::header::FORWARDED);
        req.headers_mut().remove(X_REQUEST_ID);
    }
    req
}
