//! CORS at the gateway: preflights answered here, actual answers given the
//! policy's headers (rules in `portcullis_policy::cors`). Without a `[cors]`
//! section the layer passes everything through untouched.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Either};
use http::{Request, Response, StatusCode};
use portcullis_policy::cors::{CorsPolicy, is_preflight};
use tower::{Layer, Service};

use crate::call_boxed;
use crate::refusal::deny;
use crate::{Body, empty};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct CorsLayer {
    policy: Option<Arc<CorsPolicy>>,
}

impl CorsLayer {
    /// Enforces `policy`, if any.
    #[must_use]
    pub const fn new(policy: Option<Arc<CorsPolicy>>) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Cors { inner, policy: self.policy.clone() }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Cors<S> {
    inner: S,
    policy: Option<Arc<CorsPolicy>>,
}

impl<S> Service<Request<Body>> for Cors<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(policy) = self.policy.clone() else {
            // No [cors]: nothing to do, and nothing allocated.
            return Either::Left(self.inner.call(req));
        };
        if is_preflight(req.method(), req.headers()) {
            let response = match policy.preflight(req.headers()) {
                Ok(headers) => {
                    let mut response = Response::new(empty());
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    *response.headers_mut() = headers;
                    response
                }
                Err(denied) => deny(denied),
            };
            return Either::Right(Box::pin(async move { Ok(response) }));
        }
        let origin = req.headers().get(http::header::ORIGIN).cloned();
        let future = call_boxed(&mut self.inner, req);
        Either::Right(Box::pin(async move {
            let Ok(mut response) = future.await;
            policy.apply(origin.as_ref(), response.headers_mut());
            Ok(response)
        }))
    }
}
