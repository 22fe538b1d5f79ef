//! The CSP report endpoint: browsers POST Content-Security-Policy violation
//! reports here (the `report-uri` the gateway adds to its CSP), and each
//! becomes a `csp.violation` security event (action `log`). The gateway
//! answers 204 itself; reports never reach the upstream.
//!
//! Reports are untrusted input: the body is capped at 64 KiB, and the event
//! keeps only the directive and the URLs without query or fragment.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures_util::future::{BoxFuture, Either};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use portcullis_policy::event::RequestSummary;
use portcullis_policy::headers::summarize_csp_report;
use portcullis_policy::{Denied, Reason, SecurityEvent};
use tower::{Layer, Service};

use crate::body::{LimitTripped, Limited};
use crate::events::EventSink;
use crate::refusal::deny;
use crate::{Body, ConnInfo, RequestContext, empty};

/// Largest report accepted.
const MAX_REPORT: u64 = 64 * 1024;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct CspReportLayer {
    path: Option<Arc<str>>,
    events: Arc<dyn EventSink>,
}

impl CspReportLayer {
    /// Serves reports on `path`, if any.
    #[must_use]
    pub const fn new(path: Option<Arc<str>>, events: Arc<dyn EventSink>) -> Self {
        Self { path, events }
    }
}

impl<S> Layer<S> for CspReportLayer {
    type Service = CspReport<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CspReport { inner, path: self.path.clone(), events: self.events.clone() }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct CspReport<S> {
    inner: S,
    path: Option<Arc<str>>,
    events: Arc<dyn EventSink>,
}

impl<S> Service<Request<Body>> for CspReport<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let is_report = self.path.as_deref().is_some_and(|p| p == req.uri().path()) && req.method() == Method::POST;
        if !is_report {
            return Either::Left(self.inner.call(req));
        }
        Either::Right(Box::pin(handle(req, self.events.clone())))
    }
}

/// Reads one report and records it.
async fn handle(req: Request<Body>, events: Arc<dyn EventSink>) -> Result<Response<Body>, Infallible> {
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
            Err(e) => return Ok(deny(crate::body::body_denial(&*e))),
        }
    }
    let Some(summary) = summarize_csp_report(&bytes) else {
        return Ok(deny(Denied::new(Reason::RequestMalformed).with_detail("not a CSP violation report")));
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
    Ok(response)
}
