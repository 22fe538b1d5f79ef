//! The gateway's own endpoints: requests under `/.portcullis/` are handed to
//! the endpoints service (the binary's `gateway/endpoints.rs` lists them all:
//! OIDC login, callback and logout, the identity JWKS, the CSRF token, CSP
//! reports) and never routed upstream.
//!
//! They still pass the outer layers (request id, events, response headers,
//! CORS, head limits). A path under the prefix that no endpoint serves is
//! `route.none`, exactly as an unrouted path, so a probe learns nothing.
//!
//! Earlier in the stack, [`own_endpoints_route`] gives these requests a
//! route of their own, so the rate-limit layer after it applies
//! `[server] endpoint_limits` before any endpoint runs.

use futures_util::future::Either;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use portcullis_policy::Reason;
use tower::{Layer, Service};

use crate::refusal::deny;
use crate::{Body, GatewayService, RouteInfo};

/// The path prefix the gateway reserves.
pub const PREFIX: &str = "/.portcullis/";

/// See the module docs.
#[derive(Debug, Clone)]
pub struct EndpointsLayer {
    endpoints: Option<GatewayService>,
}

impl EndpointsLayer {
    /// Serves `endpoints` under [`PREFIX`].
    #[must_use]
    pub const fn new(endpoints: Option<GatewayService>) -> Self {
        Self { endpoints }
    }
}

impl<S> Layer<S> for EndpointsLayer {
    type Service = Endpoints<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Endpoints { inner, endpoints: self.endpoints.clone() }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Endpoints<S> {
    inner: S,
    endpoints: Option<GatewayService>,
}

impl<S> Service<Request<Body>> for Endpoints<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, crate::GatewayFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.uri().path().starts_with(PREFIX) {
            return match &self.endpoints {
                Some(endpoints) => Either::Right(endpoints.handle(req)),
                None => Either::Right(Box::pin(async { Ok(deny(Reason::RouteNone)) })),
            };
        }
        Either::Left(self.inner.call(req))
    }
}

/// Gives requests to the gateway's own endpoints (`/.portcullis/*`: login,
/// callback, CSP reports) `route`, so the rate-limit layer after it applies
/// that route's limits (`[server] endpoint_limits`) before any of them runs
/// (none: they pass untouched). It never refuses, so it is a plain request
/// map (`ServiceBuilder::map_request`), not a guard.
pub fn own_endpoints_route(
    route: Option<Arc<RouteInfo>>,
) -> impl FnMut(Request<Body>) -> Request<Body> + Clone + Send + Sync + 'static {
    move |mut req| {
        if let Some(route) = &route
            && req.uri().path().starts_with(PREFIX)
        {
            req.extensions_mut().insert(route.clone());
        }
        req
    }
}
