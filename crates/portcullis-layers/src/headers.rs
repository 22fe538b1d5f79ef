//! Security response headers on every answer, proxied or refused.
//!
//! Applies the route's header policy (the global `[headers]` policy with the
//! route's changes merged at load) or, for answers that matched no route, the
//! global one. Rules in `portcullis_policy::headers`. HSTS goes only on
//! answers to HTTPS: a TLS listener, or a trusted proxy's
//! `X-Forwarded-Proto: https`.

use std::sync::Arc;

use http::{Request, Response};
use portcullis_policy::headers::HeaderPolicy;

use crate::guard::{Exchange, Step};
use crate::{Body, ConnInfo, RequestContext, RouteInfo};

/// The global policy, used where no route policy applies. See the module
/// docs.
#[derive(Debug, Clone)]
pub struct ResponseHeaders(pub Arc<HeaderPolicy>);

impl Exchange for ResponseHeaders {
    /// The global policy, and whether the answer goes over HTTPS.
    type Carry = (Arc<HeaderPolicy>, bool);

    fn request(&self, req: &mut Request<Body>) -> Step<Self::Carry> {
        // HTTPS at the gateway, or at a trusted proxy in front of it (a load
        // balancer terminating TLS says so in X-Forwarded-Proto).
        let https = req.extensions().get::<ConnInfo>().is_some_and(|c| c.scheme == "https")
            || (req.extensions().get::<RequestContext>().is_some_and(|ctx| ctx.client.peer_trusted)
                && req.headers().get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")));
        Step::Finish((self.0.clone(), https))
    }

    fn response((global, https): Self::Carry, response: &mut Response<Body>) {
        let route_policy = response.extensions().get::<Arc<RouteInfo>>().and_then(|r| r.headers.clone());
        let policy = route_policy.as_deref().unwrap_or(&global);
        policy.apply(response.headers_mut(), https);
    }
}
