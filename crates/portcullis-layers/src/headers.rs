//! Security response headers on every answer, proxied or refused.
//!
//! Applies the route's header policy (the global `[headers]` policy with the
//! route's changes merged at load) or, for answers that matched no route, the
//! global one. Rules in `portcullis_policy::headers`. HSTS goes only on
//! answers to HTTPS: a TLS listener, or a trusted proxy's
//! `X-Forwarded-Proto: https`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use portcullis_policy::headers::HeaderPolicy;
use tower::{Layer, Service};

use crate::call_boxed;
use crate::{Body, ConnInfo, RequestContext, RouteInfo};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ResponseHeadersLayer {
    global: Arc<HeaderPolicy>,
}

impl ResponseHeadersLayer {
    /// Uses `global` where no route policy applies.
    #[must_use]
    pub const fn new(global: Arc<HeaderPolicy>) -> Self {
        Self { global }
    }
}

impl<S> Layer<S> for ResponseHeadersLayer {
    type Service = ResponseHeaders<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ResponseHeaders { inner, global: self.global.clone() }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ResponseHeaders<S> {
    inner: S,
    global: Arc<HeaderPolicy>,
}

impl<S> Service<Request<Body>> for ResponseHeaders<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // HTTPS at the gateway, or at a trusted proxy in front of it (a load
        // balancer terminating TLS says so in X-Forwarded-Proto).
        let https = req.extensions().get::<ConnInfo>().is_some_and(|c| c.scheme == "https")
            || (req.extensions().get::<RequestContext>().is_some_and(|ctx| ctx.client.peer_trusted)
                && req.headers().get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")));
        let global = self.global.clone();
        let future = call_boxed(&mut self.inner, req);
        Box::pin(async move {
            let Ok(mut response) = future.await;
            let route_policy = response.extensions().get::<Arc<RouteInfo>>().and_then(|r| r.headers.clone());
            let policy = route_policy.as_deref().unwrap_or(&global);
            policy.apply(response.headers_mut(), https);
            Ok(response)
        })
    }
}
