//! Concurrency limits: in-flight requests per route and per upstream, so one
//! slow endpoint cannot hold every connection and worker of the gateway.
//!
//! Decision rules: a request takes a slot of its route's limit and of its
//! upstream's (each only if configured) before it is forwarded, and gives
//! them back when the upstream's response head arrives (or the attempt
//! fails). No slot: 503 `concurrency.route` / `concurrency.upstream` with
//! `Retry-After: 1` — nothing queues, so a stalled backend cannot pile up
//! waiting requests. Counters are shared by every worker.
//!
//! Deployment caveat: a streamed response body no longer holds its slot;
//! long downloads are bounded by connection limits, not these.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use portcullis_policy::{Denied, Reason};
use tower::{Layer, Service};

use crate::refusal::deny;
use crate::{Body, RouteInfo};

/// A counter of in-flight requests with a ceiling.
#[derive(Debug)]
pub struct InFlight {
    count: AtomicUsize,
    max: usize,
}

/// A taken slot; released on drop.
#[derive(Debug)]
pub struct Slot(Arc<InFlight>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// A limit of `max` concurrent requests.
    #[must_use]
    pub const fn new(max: usize) -> Self {
        Self { count: AtomicUsize::new(0), max }
    }

    /// Takes a slot if one is free.
    #[must_use]
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut current = self.count.load(Ordering::Acquire);
        loop {
            if current >= self.max {
                return None;
            }
            match self.count.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Slot(self.clone())),
                Err(now) => current = now,
            }
        }
    }

    /// Requests in flight now.
    #[must_use]
    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// The ceiling.
    #[must_use]
    pub const fn max(&self) -> usize {
        self.max
    }
}

/// See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct ConcurrencyLayer;

impl<S> Layer<S> for ConcurrencyLayer {
    type Service = Concurrency<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Concurrency { inner }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Concurrency<S> {
    inner: S,
}

fn full(reason: Reason, what: &str, limit: &InFlight) -> Denied {
    Denied::new(reason)
        .with_rule(what.to_owned())
        .with_detail(format!("{} requests in flight (limit {})", limit.current(), limit.max()))
        .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))
}

impl<S> Service<Request<Body>> for Concurrency<S>
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
        let Some(route) = req.extensions().get::<Arc<RouteInfo>>().cloned() else {
            return crate::call_boxed(&mut self.inner, req);
        };
        let route_slot = match &route.in_flight {
            None => None,
            Some(limit) => match limit.try_acquire() {
                Some(slot) => Some(slot),
                None => {
                    let denied = full(Reason::ConcurrencyRoute, &route.name, limit);
                    return Box::pin(async move { Ok(deny(denied)) });
                }
            },
        };
        let upstream_slot = match &route.upstream_in_flight {
            None => None,
            Some(limit) => match limit.try_acquire() {
                Some(slot) => Some(slot),
                None => {
                    let denied = full(Reason::ConcurrencyUpstream, &route.upstream_name, limit);
                    return Box::pin(async move { Ok(deny(denied)) });
                }
            },
        };
        let future = crate::call_boxed(&mut self.inner, req);
        Box::pin(async move {
            let response = future.await;
            drop((route_slot, upstream_slot));
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_released_on_drop() {
        let limit = Arc::new(InFlight::new(2));
        let a = limit.try_acquire().unwrap();
        let b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());
        drop(a);
        let c = limit.try_acquire().unwrap();
        assert_eq!(limit.current(), 2);
        drop((b, c));
        assert_eq!(limit.current(), 0);
    }
}
