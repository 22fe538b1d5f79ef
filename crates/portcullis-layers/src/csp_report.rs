//! The CSP report endpoint's handler: browsers POST Content-Security-Policy
//! violation reports to `/.portcullis/csp-report` (the `report-uri` the
//! gateway adds to its CSP), and each becomes a `csp.violation` security
//! event (action `log`). The gateway answers 204 itself; reports never reach
//! the upstream. The binary's endpoints router serves it, with the other
//! endpoints under `/.portcullis/`.
//!
//! Reports are untrusted input: the body is capped at 64 KiB, and the event
//! keeps only the directive and the URLs without query or fragment.

use std::sync::Arc;
use std::time::SystemTime;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use portcullis_policy::event::RequestSummary;
use portcullis_policy::headers::summarize_csp_report;
use portcullis_policy::{Denied, Reason, SecurityEvent};

use crate::body::{LimitTripped, Limited};
use crate::events::EventSink;
use crate::refusal::deny;
use crate::{Body, ConnInfo, RequestContext, empty};

/// Largest report accepted.
const MAX_REPORT: u64 = 64 * 1024;

/// Reads one report and records it: 204, or the refusal for a body that is
/// too large or not a report.
pub async fn receive(req: Request<Body>, events: Arc<dyn EventSink>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut body = Limited::new(body, MAX_REPORT, LimitTripped::default()).boxed_unsync();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Err(e) => return deny(crate::body::body_denial(&*e)),
        }
    }
    let Some(summary) = summarize_csp_report(&bytes) else {
        return deny(Denied::new(Reason::RequestMalformed).with_detail("not a CSP violation report"));
    };
    let context = parts.extensions.get::<RequestContext>();
    let listener = parts.extensions.get::<ConnInfo>().map(|c| c.listener.clone());
    if let Some(context) = context {
        let request = RequestSummary {
            request_id: context.request_id(),
            client_ip: context.client.ip,
            listener: listener.as_deref().unwrap_or("-"),
            method: parts.method.as_str(),
            path: parts.uri.path(),
            route: None,
        };
        events.emit(SecurityEvent::logged(&request, "csp", "csp.violation", 204, summary, SystemTime::now()));
    }
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}
