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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderValue, Request, Response};
use portcullis_policy::{Denied, Reason};

use crate::guard::{Exchange, Step};
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

/// Takes the request's slots and holds them until its response head
/// arrives. See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Concurrency;

fn full(reason: Reason, what: &str, limit: &InFlight) -> Denied {
    Denied::new(reason)
        .with_rule(what.to_owned())
        .with_detail(format!("{} requests in flight (limit {})", limit.current(), limit.max()))
        .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// A slot of the route's limit and one of its upstream's (each only if
/// configured), or the refusal naming the limit that is full.
fn slots(route: &RouteInfo) -> Result<(Option<Slot>, Option<Slot>), Denied> {
    let take = |limit: &Option<Arc<InFlight>>, reason: Reason, what: &str| match limit {
        None => Ok(None),
        Some(limit) => limit.try_acquire().map(Some).ok_or_else(|| full(reason, what, limit)),
    };
    let route_slot = take(&route.in_flight, Reason::ConcurrencyRoute, &route.name)?;
    let upstream_slot = take(&route.upstream_in_flight, Reason::ConcurrencyUpstream, &route.upstream_name)?;
    Ok((route_slot, upstream_slot))
}

impl Exchange for Concurrency {
    type Carry = (Option<Slot>, Option<Slot>);

    fn request(&self, req: &mut Request<Body>) -> Step<Self::Carry> {
        let Some(route) = req.extensions().get::<Arc<RouteInfo>>() else { return Step::Pass };
        if route.in_flight.is_none() && route.upstream_in_flight.is_none() {
            return Step::Pass;
        }
        match slots(route) {
            Ok(slots) => Step::Finish(slots),
            Err(denied) => Step::Refuse(denied),
        }
    }

    /// The slots go back as the response head arrives (they drop here).
    fn response(_slots: Self::Carry, _: &mut Response<Body>) {}
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
