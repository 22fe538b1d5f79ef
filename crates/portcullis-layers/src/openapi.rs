//! Request validation against the upstream's OpenAPI document on live
//! requests: routes with `openapi = NAME` are checked by
//! `portcullis_policy::openapi` (rules there) before they reach the upstream.
//!
//! Decision rules of this layer:
//! - Routes without a document pass untouched.
//! - Path and method are matched first, so an unknown endpoint is refused
//!   (with `deny_unknown`) before any body is read.
//! - The body is read only when it will be validated (a JSON body of an
//!   operation with a schema), and only up to the document's `max_body`: a
//!   declared `Content-Length` above it, or a stream crossing it, is 413
//!   `openapi.body_too_large`. A body stream that fails is 400
//!   `request.body` (or 413 `limit.body` when the route's body limit cut it).
//!   A compressed body or one in a charset the validator cannot read as the
//!   upstream does is 415 `request.encoding` (`portcullis_policy::encoding`).
//! - A validated body is replayed to the upstream frame by frame, trailers
//!   included: it receives exactly the bytes the client sent.
//!
//! Deployment caveat: validation sees what the gateway forwards (normalized
//! path, raw query); an upstream that reads the query differently from the
//! document's `style` (Express's `qs` nests `a[b]=1`) can still disagree on
//! undeclared parameters, which pass.

use futures_util::future::Either;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body as HttpBody;
use portcullis_policy::openapi::{OpenApi, RequestParts};
use portcullis_policy::{Denied, Reason};
use tower::{Layer, Service};

use crate::body::Prefix;
use crate::refusal::deny;
use crate::{Body, BoxError, RouteInfo};

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenApiLayer;

impl<S> Layer<S> for OpenApiLayer {
    type Service = OpenApiValidate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        OpenApiValidate { inner }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct OpenApiValidate<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for OpenApiValidate<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, crate::GatewayFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(api) = req.extensions().get::<Arc<RouteInfo>>().and_then(|r| r.openapi.clone()) else {
            return Either::Left(self.inner.call(req));
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            match validate(&api, req).await {
                Ok(req) => crate::call_boxed(&mut inner, req).await,
                Err(denied) => Ok(deny(*denied)),
            }
        }))
    }
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

/// Validates `req` against `api`, returning it with its body intact.
async fn validate(api: &OpenApi, req: Request<Body>) -> Result<Request<Body>, Box<Denied>> {
    let (parts, body) = req.into_parts();
    let declared = declared_length(&parts.headers);
    let request = RequestParts {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        has_body: !body.is_end_stream() && declared != Some(0),
    };
    let Some(matched) = api.find(request.method, request.path)? else {
        return Ok(Request::from_parts(parts, body));
    };
    if !matched.needs_body(&request) {
        matched.check(&request, None)?;
        return Ok(Request::from_parts(parts, body));
    }
    portcullis_policy::encoding::inspectable(&parts.headers).map_err(Box::new)?;
    let max = api.options().max_body;
    let too_large = || {
        Box::new(
            Denied::new(Reason::OpenapiBodyTooLarge)
                .with_rule(api.name().to_owned())
                .with_detail(format!("body over max_body {max}"))
                .with_client("body", &format!("larger than {max} bytes")),
        )
    };
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let read = read_all(body, max).await.map_err(|e| match e {
        ReadError::TooLarge => too_large(),
        ReadError::Body(e) => Box::new(crate::body::body_denial(&*e)),
    })?;
    matched.check(&request, Some(&read.bytes))?;
    drop(matched);
    Ok(Request::from_parts(parts, read.into_body()))
}

enum ReadError {
    TooLarge,
    Body(BoxError),
}

/// Reads the whole body (at most `max` bytes) ahead, to replay it after.
async fn read_all(body: Body, max: u64) -> Result<Prefix, ReadError> {
    let mut read = Prefix::read(body, max).await;
    if let Some(e) = read.error.take() {
        return Err(ReadError::Body(e));
    }
    if u64::try_from(read.bytes.len()).unwrap_or(u64::MAX) > max {
        return Err(ReadError::TooLarge);
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn bodies_are_read_whole_replayed_exactly_and_capped() {
        let body = || {
            let mut frames: Vec<Result<Frame<Bytes>, BoxError>> =
                (0..4u8).map(|i| Ok(Frame::data(Bytes::from(vec![b'a' + i; 100])))).collect();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-sum", http::HeaderValue::from_static("1"));
            frames.push(Ok(Frame::trailers(trailers)));
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
        };
        let read = read_all(body(), 400).await.ok().unwrap();
        assert_eq!(read.bytes.len(), 400);
        assert_eq!(read.frames.len(), 5, "four data frames and the trailers");
        assert!(matches!(read_all(body(), 399).await, Err(ReadError::TooLarge)));
    }
}
