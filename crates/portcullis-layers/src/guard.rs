//! One service for every defence that only decides: a [`Guard`] looks at the
//! request (and may annotate it for inner layers), then either lets it pass
//! or refuses it with a [`Denied`] that the reject layer renders.
//!
//! Modelled on tower-http's `ValidateRequest`: a defence that never touches
//! the response needs no `Layer`/`Service` pair of its own, only a `check`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{Request, Response};
use portcullis_policy::Denied;
use tower::{Layer, Service};

use crate::Body;
use crate::refusal::deny;

/// A decision on a request before it goes further in.
pub trait Guard: Clone + Send + Sync + 'static {
    /// Lets the request pass (possibly adding extensions for inner layers)
    /// or refuses it.
    ///
    /// # Errors
    /// The refusal, rendered by the reject layer with its event.
    fn check(&self, req: &mut Request<Body>) -> Result<(), Denied>;
}

/// Applies a [`Guard`].
#[derive(Debug, Clone)]
pub struct GuardLayer<G> {
    guard: G,
}

impl<G> GuardLayer<G> {
    /// A layer running `guard` on every request.
    pub const fn new(guard: G) -> Self {
        Self { guard }
    }
}

impl<S, G: Clone> Layer<S> for GuardLayer<G> {
    type Service = Guarded<S, G>;
    fn layer(&self, inner: S) -> Self::Service {
        Guarded { inner, guard: self.guard.clone() }
    }
}

/// The service of a [`GuardLayer`].
#[derive(Debug, Clone)]
pub struct Guarded<S, G> {
    inner: S,
    guard: G,
}

impl<S, G> Service<Request<Body>> for Guarded<S, G>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    G: Guard,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        match self.guard.check(&mut req) {
            Ok(()) => Either::Left(self.inner.call(req)),
            Err(denied) => Either::Right(ready(Ok(deny(denied)))),
        }
    }
}
