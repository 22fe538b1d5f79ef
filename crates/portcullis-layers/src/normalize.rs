//! Path normalization before routing: the request's path is rewritten to its
//! one normal spelling (rules in `portcullis_policy::normalize`), so routes
//! and later rules see the path the upstream will receive, and a path that
//! cannot be normalized safely is refused with 400 (`path.*`).
//!
//! The query string is kept as sent. Events and the access log record the
//! path as the client sent it, which is the evidence of a bypass attempt.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use portcullis_policy::normalize::{self, PathPolicy};
use portcullis_policy::{Denied, Reason};
use tower::{Layer, Service};

use crate::Body;
use crate::received::OriginalUri;
use crate::refusal::deny;

/// See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct NormalizeLayer {
    policy: PathPolicy,
}

impl NormalizeLayer {
    /// Normalizes with `policy`.
    #[must_use]
    pub const fn new(policy: PathPolicy) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for NormalizeLayer {
    type Service = Normalize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Normalize { inner, policy: self.policy }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Normalize<S> {
    inner: S,
    policy: PathPolicy,
}

/// `uri` with its path replaced by `path` (query kept).
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

impl<S> Service<Request<Body>> for Normalize<S>
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

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // CONNECT and `OPTIONS *` have no origin-form path to normalize.
        if req.uri().path_and_query().is_none() || req.uri().path() == "*" {
            return crate::call_boxed(&mut self.inner, req);
        }
        let rewritten = match normalize::normalize(req.uri().path(), &self.policy) {
            Ok(std::borrow::Cow::Borrowed(_)) => None,
            Ok(std::borrow::Cow::Owned(path)) => Some(path),
            Err(error) => {
                let denied = Denied::new(error.reason()).with_detail(error.to_string());
                return Box::pin(async move { Ok(deny(denied)) });
            }
        };
        if let Some(path) = rewritten {
            match with_path(req.uri(), &path) {
                Some(uri) => {
                    let original = std::mem::replace(req.uri_mut(), uri);
                    req.extensions_mut().insert(OriginalUri(original));
                }
                None => {
                    let denied = Denied::new(Reason::PathEncoding).with_detail("normalized path is not a valid URI");
                    return Box::pin(async move { Ok(deny(denied)) });
                }
            }
        }
        crate::call_boxed(&mut self.inner, req)
    }
}
