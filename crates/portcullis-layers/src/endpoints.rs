//! The gateway's own endpoints: requests under `/.portcullis/` (OIDC login,
//! callback and logout, the identity JWKS) are answered by the gateway and
//! never routed upstream.
//!
//! They still pass the outer layers (request id, events, response headers,
//! CORS, head limits). A path under the prefix that no endpoint serves is
//! `route.none`, exactly as an unrouted path, so a probe learns nothing.
//!
//! Earlier in the stack, [`OwnEndpointsRouteLayer`] gives these requests a
//! route of their own, so the rate-limit layer after it applies
//! `[server] endpoint_limits` before any endpoint runs.

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
    type Future = crate::GatewayFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.uri().path().starts_with(PREFIX) {
            return match &self.endpoints {
                Some(endpoints) => endpoints.handle(req),
                None => Box::pin(async { Ok(deny(Reason::RouteNone)) }),
            };
        }
        crate::call_boxed(&mut self.inner, req)
    }
}

/// Gives requests to the gateway's own endpoints (`/.portcullis/*`: login,
/// callback, CSP reports) a route of their own, so the rate-limit layer
/// after it applies that route's limits (`[server] endpoint_limits`) before
/// any of them runs.
#[derive(Debug, Clone)]
pub struct OwnEndpointsRouteLayer {
    route: Option<Arc<RouteInfo>>,
}

impl OwnEndpointsRouteLayer {
    /// Marks own-endpoint requests with `route` (none: no limits).
    #[must_use]
    pub const fn new(route: Option<Arc<RouteInfo>>) -> Self {
        Self { route }
    }
}

impl<S> Layer<S> for OwnEndpointsRouteLayer {
    type Service = OwnEndpointsRoute<S>;
    fn layer(&self, inner: S) -> Self::Service {
        OwnEndpointsRoute { inner, route: self.route.clone() }
    }
}

/// See [`OwnEndpointsRouteLayer`].
#[derive(Debug, Clone)]
pub struct OwnEndpointsRoute<S> {
    inner: S,
    route: Option<Arc<RouteInfo>>,
}

impl<S> Service<Request<Body>> for OwnEndpointsRoute<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        if let Some(route) = &self.route
            && req.uri().path().starts_with(PREFIX)
        {
            req.extensions_mut().insert(route.clone());
        }
        self.inner.call(req)
    }
}
