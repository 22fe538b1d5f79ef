//! One service for every defence that decides on the request without waiting
//! for anything (no store, no body, no verifier).
//!
//! A [`Guard`] looks at the request (and may rewrite or annotate it for inner
//! layers), then either lets it pass or refuses it with a [`Denied`] that the
//! reject layer renders. An [`Exchange`] decides the same way and may also
//! finish the response of a request it let through (a header, a cookie, the
//! route for the access log) or answer the request itself (a CORS
//! preflight). Every `Guard` is an `Exchange` that leaves responses alone,
//! so [`GuardLayer`] serves both.
//!
//! Modelled on tower-http's `ValidateRequest`: such a defence needs no
//! `Layer`/`Service` pair of its own, only its decision. No step allocates:
//! the inner service's future is held in place, and finishing a response is
//! a function called when it is ready.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::ready;
use http::{Request, Response};
use pin_project_lite::pin_project;
use portcullis_policy::Denied;
use tower::{Layer, Service};

use crate::refusal::deny;
use crate::{Body, GatewayFuture};

/// A decision on a request before it goes further in.
pub trait Guard: Clone + Send + Sync + 'static {
    /// Lets the request pass (possibly rewriting it or adding extensions
    /// for inner layers) or refuses it.
    ///
    /// # Errors
    /// The refusal, rendered by the reject layer with its event.
    fn check(&self, req: &mut Request<Body>) -> Result<(), Denied>;
}

/// What an [`Exchange`] does with a request.
#[derive(Debug)]
pub enum Step<C> {
    /// Passes it on; its response is left alone.
    Pass,
    /// Passes it on, then finishes its response with this.
    Finish(C),
    /// Refuses it.
    Refuse(Denied),
    /// Answers it here; it goes no further in.
    Answer(Response<Body>),
}

/// A decision on a request, and the finishing of its response.
pub trait Exchange: Clone + Send + Sync + 'static {
    /// What a passed request leaves for its response.
    type Carry: Send + 'static;

    /// Decides on `req` (possibly rewriting it).
    fn request(&self, req: &mut Request<Body>) -> Step<Self::Carry>;

    /// Finishes the response of a request that passed with
    /// [`Step::Finish`]; runs when the inner layers have answered.
    fn response(carry: Self::Carry, response: &mut Response<Body>);
}

impl<G: Guard> Exchange for G {
    type Carry = Infallible;

    fn request(&self, req: &mut Request<Body>) -> Step<Infallible> {
        match self.check(req) {
            Ok(()) => Step::Pass,
            Err(denied) => Step::Refuse(denied),
        }
    }

    fn response(carry: Infallible, _: &mut Response<Body>) {
        match carry {}
    }
}

/// Applies a [`Guard`] or an [`Exchange`].
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
    G: Exchange,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = GuardedFuture<S::Future, G::Carry>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        match self.guard.request(&mut req) {
            Step::Pass => GuardedFuture::Inner { inner: self.inner.call(req), finish: None },
            Step::Finish(carry) => {
                GuardedFuture::Inner { inner: self.inner.call(req), finish: Some((carry, G::response)) }
            }
            Step::Refuse(denied) => GuardedFuture::Answered { answer: Box::pin(ready(Ok(deny(denied)))) },
            Step::Answer(response) => GuardedFuture::Answered { answer: Box::pin(ready(Ok(response))) },
        }
    }
}

/// How a passed request's response is finished: the carry and the
/// exchange's [`Exchange::response`].
type Finish<C> = (C, fn(C, &mut Response<Body>));

pin_project! {
    /// The future of a [`Guarded`] service: the inner service's, or the
    /// answer given here.
    #[project = GuardedProj]
    pub enum GuardedFuture<F, C> {
        /// Passed on; finished with `finish` when the inner answer is ready.
        Inner { #[pin] inner: F, finish: Option<Finish<C>> },
        /// Refused or answered here; boxed, so the futures of the requests
        /// that pass (nested once per layer, moved at each) stay small.
        Answered { answer: GatewayFuture },
    }
}

impl<F, C> Future for GuardedFuture<F, C>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardedProj::Inner { inner, finish } => {
                let Ok(mut response) = std::task::ready!(inner.poll(cx));
                if let Some((carry, finish)) = finish.take() {
                    finish(carry, &mut response);
                }
                Poll::Ready(Ok(response))
            }
            GuardedProj::Answered { answer } => answer.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::StatusCode;
    use portcullis_policy::Reason;
    use tower::ServiceExt;

    use super::*;

    /// Decides by the request's path; marks the responses it finishes.
    #[derive(Debug, Clone)]
    struct ByPath;

    impl Exchange for ByPath {
        type Carry = &'static str;

        fn request(&self, req: &mut Request<Body>) -> Step<&'static str> {
            match req.uri().path() {
                "/finish" => Step::Finish("finished"),
                "/refuse" => Step::Refuse(Denied::new(Reason::RouteNone)),
                "/answer" => {
                    let mut response = Response::new(crate::empty());
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    Step::Answer(response)
                }
                _ => Step::Pass,
            }
        }

        fn response(carry: &'static str, response: &mut Response<Body>) {
            response.headers_mut().insert("x-mark", http::HeaderValue::from_static(carry));
        }
    }

    #[tokio::test]
    async fn each_step_passes_finishes_refuses_or_answers() {
        // (path, inner service called, status, denial code, mark)
        let cases = [
            ("/pass", true, 200, "", None),
            ("/finish", true, 200, "", Some("finished")),
            ("/refuse", false, 404, "route.none", None),
            ("/answer", false, 204, "", None),
        ];
        for (path, reaches_inner, status, code, mark) in cases {
            let calls = Arc::new(AtomicUsize::new(0));
            let counted = calls.clone();
            let inner = tower::service_fn(move |_req: Request<Body>| {
                counted.fetch_add(1, Ordering::Relaxed);
                async { Ok::<_, Infallible>(Response::new(crate::empty())) }
            });
            let req = Request::get(path).body(crate::empty()).unwrap();
            let response = GuardLayer::new(ByPath).layer(inner).oneshot(req).await.unwrap();
            assert_eq!(calls.load(Ordering::Relaxed) == 1, reaches_inner, "{path}");
            assert_eq!(response.status().as_u16(), status, "{path}");
            assert_eq!(crate::denial_of(&response).map_or("", |d| d.reason.code()), code, "{path}");
            assert_eq!(response.headers().get("x-mark").map(|v| v.to_str().unwrap()), mark, "{path}");
        }
    }
}
