//! Request size limits, enforced before anything is read from the body.
//!
//! [`HeadLimits`] (a [`Guard`], before routing) refuses over-long request targets (414)
//! and too many or too large headers (431). [`BodyLimit`] (a `Guard` after routing,
//! so a route may raise or lower the limit for uploads) refuses a declared
//! `Content-Length` over the limit (413) and wraps the body so that a streamed
//! body crossing the limit fails mid-stream; the proxy answers that with 413.
//!
//! hyper enforces a hard ceiling below these (its read buffer); the configured
//! limits here are what clients see, with an event for each refusal.

use std::sync::Arc;

use http::Request;
use http_body::Body as _;
use http_body_util::BodyExt;
use portcullis_policy::Denied;
use portcullis_policy::limits::{RequestLimits, content_length};

use crate::body::{LimitTripped, Limited};
use crate::guard::Guard;
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

/// The body limit after routing (the argument: where the route sets none).
/// See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub u64);

impl Guard for BodyLimit {
    fn check(&self, req: &mut Request<Body>) -> Result<(), Denied> {
        let limit = req.extensions().get::<Arc<RouteInfo>>().and_then(|r| r.max_body_bytes).unwrap_or(self.0);
        check(req, limit)?;
        if !req.body().is_end_stream() {
            let tripped = LimitTripped::default();
            let body = std::mem::replace(req.body_mut(), crate::empty());
            *req.body_mut() = Limited::new(body, limit, tripped.clone()).boxed_unsync();
            req.extensions_mut().insert(tripped);
        }
        Ok(())
    }
}

fn check(req: &Request<Body>, limit: u64) -> Result<(), Denied> {
    match content_length(req.headers())? {
        Some(len) if len > limit => Err(Denied::new(portcullis_policy::Reason::LimitBody)
            .with_detail(format!("content-length {len} > limit {limit}"))),
        _ => Ok(()),
    }
}
