//! Request size limits, enforced before anything is read from the body.
//!
//! [`HeadLimits`] (a [`Guard`], before routing) refuses over-long request targets (414)
//! and too many or too large headers (431). `BodyLimitLayer` (after routing,
//! so a route may raise or lower the limit for uploads) refuses a declared
//! `Content-Length` over the limit (413) and wraps the body so that a streamed
//! body crossing the limit fails mid-stream; the proxy answers that with 413.
//!
//! hyper enforces a hard ceiling below these (its read buffer); the configured
//! limits here are what clients see, with an event for each refusal.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use portcullis_policy::Denied;
use portcullis_policy::limits::{RequestLimits, content_length};
use tower::{Layer, Service};

use crate::body::{LimitTripped, Limited};
use crate::guard::Guard;
use crate::refusal::deny;
use crate::{Body, RouteInfo};

/// The URI and header limits, before routing. See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits(pub RequestLimits);

impl Guard for HeadLimits {
    fn check(&self, req: &mut Request<Body>) -> Result<(), Denied> {
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        // The body check happens after routing; u64::MAX skips it here.
        self.0.check_head(uri_len, req.headers(), u64::MAX)
    }
}

/// See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimitLayer {
    default_limit: u64,
}

impl BodyLimitLayer {
    /// Enforces `default_limit` unless the route sets its own.
    #[must_use]
    pub const fn new(default_limit: u64) -> Self {
        Self { default_limit }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit { inner, default_limit: self.default_limit }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    inner: S,
    default_limit: u64,
}

impl<S> Service<Request<Body>> for BodyLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let limit = req
            .extensions()
            .get::<std::sync::Arc<RouteInfo>>()
            .and_then(|r| r.max_body_bytes)
            .unwrap_or(self.default_limit);
        match check(&req, limit) {
            Err(denied) => Either::Right(ready(Ok(deny(denied)))),
            Ok(()) if req.body().is_end_stream() => Either::Left(self.inner.call(req)),
            Ok(()) => {
                let tripped = LimitTripped::default();
                let mut req = req.map(|b| Limited::new(b, limit, tripped.clone()).boxed_unsync());
                req.extensions_mut().insert(tripped);
                Either::Left(self.inner.call(req))
            }
        }
    }
}

fn check(req: &Request<Body>, limit: u64) -> Result<(), Denied> {
    match content_length(req.headers())? {
        Some(len) if len > limit => Err(Denied::new(portcullis_policy::Reason::LimitBody)
            .with_detail(format!("content-length {len} > limit {limit}"))),
        _ => Ok(()),
    }
}
