//! Body wrappers: a streaming size limit and a completion hook.
//!
//! Bodies are streamed, never buffered: the limit counts bytes as frames pass
//! and fails the stream the moment the limit is crossed, so a client cannot
//! make the gateway hold more than one frame of its body.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

use crate::{Body, BoxError};

/// The error a [`Limited`] body fails with; the proxy finds it in an upstream
/// error's source chain and answers 413.
#[derive(Debug, Clone, Copy)]
pub struct BodyTooLarge {
    /// The limit that was crossed.
    pub limit: u64,
}

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body exceeds {} bytes", self.limit)
    }
}

impl std::error::Error for BodyTooLarge {}

/// Set when a [`Limited`] body crossed its limit. The body layer puts it in
/// the request's extensions: an upstream connection that fails because the
/// body stream was cut does not always report why, and the proxy must still
/// answer 413, not 502.
#[derive(Debug, Clone, Default)]
pub struct LimitTripped(pub Arc<AtomicBool>);

impl LimitTripped {
    /// Whether the limit was crossed.
    #[must_use]
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pin_project! {
    /// A body that fails with [`BodyTooLarge`] once more than `limit` bytes
    /// have passed.
    #[derive(Debug)]
    pub struct Limited<B> {
        #[pin]
        inner: B,
        remaining: u64,
        limit: u64,
        tripped: LimitTripped,
    }
}

impl<B> Limited<B> {
    /// Wraps `inner` with a limit; `tripped` is set when it is crossed.
    pub const fn new(inner: B, limit: u64, tripped: LimitTripped) -> Self {
        Self { inner, remaining: limit, limit, tripped }
    }
}

impl<B> HttpBody for Limited<B>
where
    B: HttpBody<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        *this.remaining = 0;
                        this.tripped.0.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit: *this.limit }))));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A body that counts the bytes it yields and calls `on_done` once, when
    /// it ends, fails or is dropped (the client went away).
    pub struct Observed<B, F: FnOnce(u64, bool)> {
        #[pin]
        inner: B,
        bytes: u64,
        on_done: Option<F>,
    }

    impl<B, F: FnOnce(u64, bool)> PinnedDrop for Observed<B, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(done) = this.on_done.take() {
                done(*this.bytes, false);
            }
        }
    }
}

impl<B, F: FnOnce(u64, bool)> std::fmt::Debug for Observed<B, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

impl<B, F: FnOnce(u64, bool)> Observed<B, F> {
    /// Wraps `inner`; `on_done(bytes, completed)` runs exactly once.
    pub const fn new(inner: B, on_done: F) -> Self {
        Self { inner, bytes: 0, on_done: Some(on_done) }
    }
}

impl<B, F> HttpBody for Observed<B, F>
where
    B: HttpBody<Data = Bytes>,
    F: FnOnce(u64, bool),
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
                // hyper stops polling once a body reports its end, so the
                // end is seen here rather than as `Ready(None)`.
                if this.inner.is_end_stream()
                    && let Some(done) = this.on_done.take()
                {
                    done(*this.bytes, true);
                }
            }
            Poll::Ready(None) => {
                if let Some(done) = this.on_done.take() {
                    done(*this.bytes, true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(done) = this.on_done.take() {
                    done(*this.bytes, false);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` or any error in its source chain is a [`BodyTooLarge`].
#[must_use]
pub fn is_body_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTooLarge>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// The refusal for a request body that failed while being read: over the
/// limit (413 `limit.body`), too slow (408 `request.body_timeout`), or
/// broken (400 `request.body`).
#[must_use]
pub fn body_denial(error: &(dyn std::error::Error + 'static)) -> portcullis_policy::Denied {
    use portcullis_policy::{Denied, Reason};
    let mut chain = std::iter::successors(Some(error), |e| e.source());
    if is_body_too_large(error) {
        Denied::new(Reason::LimitBody).with_detail("streamed body crossed the limit")
    } else if let Some(slow) = chain.find_map(|e| e.downcast_ref::<crate::pace::BodyTimeout>()) {
        Denied::new(Reason::RequestBodyTimeout).with_detail(slow.to_string())
    } else {
        Denied::new(Reason::RequestBody).with_detail(format!("body stream failed: {error}"))
    }
}

/// The first bytes of a body, read ahead, and what is left of it.
pub struct Prefix {
    /// The data read, in one piece.
    pub bytes: Bytes,
    /// The frames read, to replay as they came.
    pub(crate) frames: VecDeque<Frame<Bytes>>,
    /// The error that ended the read, replayed after the frames.
    pub(crate) error: Option<BoxError>,
    /// The unread rest (`None` once the body ended).
    rest: Option<Body>,
}

impl std::fmt::Debug for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefix").field("bytes", &self.bytes.len()).field("complete", &self.complete()).finish()
    }
}

impl Prefix {
    /// Reads `body` until more than `max` bytes arrived (the frame crossing
    /// `max` is kept whole), it ends, or it fails.
    pub async fn read(mut body: Body, max: u64) -> Self {
        let mut data = BytesMut::new();
        let mut frames = VecDeque::new();
        let mut error = None;
        let mut ended = false;
        while u64::try_from(data.len()).unwrap_or(u64::MAX) <= max {
            match body.frame().await {
                None => {
                    ended = true;
                    break;
                }
                Some(Ok(frame)) => {
                    if let Some(chunk) = frame.data_ref() {
                        data.extend_from_slice(chunk);
                    }
                    frames.push_back(frame);
                }
                Some(Err(e)) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let rest = (!ended && error.is_none()).then_some(body);
        Self { bytes: data.freeze(), frames, error, rest }
    }

    /// Whether the whole body was read (within the limit, without error).
    #[must_use]
    pub fn complete(&self) -> bool {
        self.rest.is_none() && self.error.is_none()
    }

    /// Whether the body went on past the limit (the rest is unread).
    #[must_use]
    pub fn truncated(&self) -> bool {
        self.rest.is_some()
    }

    /// The refusal for a read that failed because the client was too slow
    /// (408): such a request can never complete, so it is answered at once
    /// rather than sent upstream with a body that will break.
    #[must_use]
    pub fn timed_out(&self) -> Option<portcullis_policy::Denied> {
        self.error.as_deref().filter(|e| crate::pace::is_body_timeout(*e)).map(|e| body_denial(e))
    }

    /// The whole body again: the frames read, then the unread rest.
    #[must_use]
    pub fn into_body(self) -> Body {
        Replay { frames: self.frames, error: self.error, rest: self.rest }.boxed_unsync()
    }
}

/// Replays frames read ahead, then the rest of the body.
struct Replay {
    frames: VecDeque<Frame<Bytes>>,
    error: Option<BoxError>,
    rest: Option<Body>,
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = self.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.error.is_none() && self.rest.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 =
            self.frames.iter().filter_map(Frame::data_ref).map(|d| u64::try_from(d.len()).unwrap_or(u64::MAX)).sum();
        let rest = self.rest.as_ref().map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(buffered));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(buffered));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn chunks(parts: &[&'static str]) -> crate::Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))).collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    #[tokio::test]
    async fn limit_passes_bodies_up_to_the_limit() {
        let body = Limited::new(chunks(&["abc", "de"]), 5, LimitTripped::default());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abcde");
    }

    #[tokio::test]
    async fn limit_fails_the_stream_past_the_limit() {
        let tripped = LimitTripped::default();
        let body = Limited::new(chunks(&["abc", "def"]), 5, tripped.clone());
        let err = body.collect().await.unwrap_err();
        assert!(is_body_too_large(err.as_ref()));
        assert!(tripped.is_set());
    }

    #[tokio::test]
    async fn observed_reports_bytes_once() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let body = Observed::new(chunks(&["ab", "cde"]), move |n, done| s.lock().unwrap().push((n, done)));
        let _ = body.collect().await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![(5, true)]);

        let s = seen.clone();
        let body = Observed::new(chunks(&["ab"]), move |n, done| s.lock().unwrap().push((n, done)));
        drop(body);
        assert_eq!(seen.lock().unwrap()[1], (0, false));
    }

    #[tokio::test]
    async fn replayed_bodies_are_byte_identical_and_bounded_reads_stop_early() {
        let expected: Vec<u8> = (0..10u8).flat_map(|i| vec![b'a' + i; 1000]).collect();
        let body = || {
            let frames = (0..10u8).map(|i| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'a' + i; 1000]))));
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
        };
        let prefix = Prefix::read(body(), 2500).await;
        assert!(!prefix.complete());
        assert_eq!(prefix.bytes.len(), 3000, "stops after the frame crossing the limit");
        let replayed = prefix.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(replayed.as_ref(), expected.as_slice());
        let whole = Prefix::read(body(), 100_000).await;
        assert!(whole.complete());
        assert_eq!(whole.bytes.as_ref(), expected.as_slice());
        assert_eq!(whole.into_body().collect().await.unwrap().to_bytes().as_ref(), expected.as_slice());
    }
}
