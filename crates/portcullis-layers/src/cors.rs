//! CORS at the gateway: preflights answered here, actual answers given the
//! policy's headers (rules in `portcullis_policy::cors`). Without a `[cors]`
//! section the layer passes everything through untouched.

use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode};
use portcullis_policy::cors::{CorsPolicy, is_preflight};

use crate::guard::{Exchange, Step};
use crate::{Body, empty};

/// The `[cors]` policy, if any. See the module docs.
#[derive(Debug, Clone)]
pub struct Cors(pub Option<Arc<CorsPolicy>>);

impl Exchange for Cors {
    /// The policy, and the request's `Origin`.
    type Carry = (Arc<CorsPolicy>, Option<HeaderValue>);

    fn request(&self, req: &mut Request<Body>) -> Step<Self::Carry> {
        // No [cors]: nothing to do, and nothing allocated.
        let Some(policy) = &self.0 else { return Step::Pass };
        if !is_preflight(req.method(), req.headers()) {
            return Step::Finish((policy.clone(), req.headers().get(http::header::ORIGIN).cloned()));
        }
        match policy.preflight(req.headers()) {
            Ok(headers) => {
                let mut response = Response::new(empty());
                *response.status_mut() = StatusCode::NO_CONTENT;
                *response.headers_mut() = headers;
                Step::Answer(response)
            }
            Err(denied) => Step::Refuse(denied),
        }
    }

    fn response((policy, origin): Self::Carry, response: &mut Response<Body>) {
        policy.apply(origin.as_ref(), response.headers_mut());
    }
}
