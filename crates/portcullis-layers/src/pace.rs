//! Slow peers: a budget of waiting time that only progress refills.
//!
//! Defends against slow-body (slow POST, R-U-Dead-Yet) and slow-read attacks,
//! and against stalled upstream bodies: a peer that makes the gateway wait
//! holds a connection, a task, often an upstream connection and an in-flight
//! slot, for as long as it likes unless something counts the waiting.
//!
//! Decision rule (Apache's `mod_reqtimeout` `MinRate`, capped): a [`Pacer`]
//! starts with `timeout` of waiting time. Time spent waiting on the peer (a
//! body poll or a socket write that is pending) is taken from the budget;
//! every byte that moves adds `1 / min_rate` seconds, never above `timeout`.
//! The budget running out is the failure. So:
//! - a peer that sends or reads nothing is cut after `timeout`;
//! - a peer moving at least `min_rate` bytes per second is never cut;
//! - a peer moving at a fraction `f` of `min_rate` is cut after about
//!   `timeout / (1 - f)`;
//! - credit never banks beyond `timeout`, so a fast start buys no long stall.
//!
//! With `min_rate = 0` any progress refills the whole budget: a plain gap
//! timeout (nginx's `client_body_timeout`, `send_timeout`).
//!
//! Only waiting on the peer counts: a request body is not polled while the
//! upstream is not reading it, and a socket write is not pending while the
//! gateway waits for the upstream, so a slow backend never makes a client
//! look slow.
//!
//! Deployment caveat: a peer moving exactly `min_rate` holds its connection
//! until its body or response ends (at most `max_body_bytes / min_body_rate`
//! for a body); `max_connections_per_ip` bounds how many it holds.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::BoxError;

/// How long a peer may keep the gateway waiting, and the rate that earns
/// more time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// The most waiting time held in the budget (and its starting value).
    pub timeout: Duration,
    /// Bytes per second that keep the budget full; 0: any progress refills it.
    pub min_rate: u64,
}

impl Pace {
    /// Waiting time earned by moving `bytes`.
    fn credit(self, bytes: u64) -> Duration {
        if self.min_rate == 0 {
            return self.timeout;
        }
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(self.min_rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(self.timeout)
    }
}

impl std::fmt::Display for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min_rate == 0 {
            write!(f, "nothing for {:?}", self.timeout)
        } else {
            write!(f, "below {} B/s for {:?}", self.min_rate, self.timeout)
        }
    }
}

/// The waiting budget of one peer (see the module docs).
pub struct Pacer {
    pace: Pace,
    budget: Duration,
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer").field("pace", &self.pace).field("budget", &self.budget).finish_non_exhaustive()
    }
}

impl Pacer {
    /// A full budget for `pace`.
    #[must_use]
    pub const fn new(pace: Pace) -> Self {
        Self { pace, budget: pace.timeout, waiting_since: None, timer: None }
    }

    /// The pace it enforces.
    #[must_use]
    pub const fn pace(&self) -> Pace {
        self.pace
    }

    /// `bytes` moved: ends the current wait and earns credit.
    pub fn progress(&mut self, bytes: u64) {
        if let Some(since) = self.waiting_since.take() {
            self.budget = self.budget.saturating_sub(since.elapsed());
        }
        self.budget = self.budget.saturating_add(self.pace.credit(bytes)).min(self.pace.timeout);
    }

    /// The peer keeps the gateway waiting: `Ready` once the budget is spent
    /// (the caller fails), else `Pending` with a wake-up at that moment.
    pub fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let deadline = since + self.budget;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }
}

/// The error a [`Paced`] request body fails with; the proxy and the layers
/// that read bodies find it in an error's source chain and answer 408.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout {
    /// Body bytes received before the cut.
    pub received: u64,
    /// The pace that was not kept.
    pub pace: Pace,
}

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body too slow ({}; {} bytes received)", self.pace, self.received)
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether `error` or any error in its source chain is a [`BodyTimeout`].
#[must_use]
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(<dyn std::error::Error>::is::<BodyTimeout>)
}

/// Set when a [`Paced`] body was cut. The server puts it in the request's
/// extensions: an upstream connection that fails because the body stream
/// was cut does not always report why, and the answer must still be 408.
#[derive(Debug, Clone, Default)]
pub struct BodyTimedOut(pub Arc<AtomicBool>);

impl BodyTimedOut {
    /// Whether the body was cut.
    #[must_use]
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pin_project! {
    /// A request body that fails with [`BodyTimeout`] when the client keeps
    /// the gateway waiting beyond its [`Pace`]. Once failed it keeps failing:
    /// ending quietly would pass a truncated chunked body off as complete.
    pub struct Paced<B> {
        #[pin]
        inner: B,
        pacer: Pacer,
        received: u64,
        failed: bool,
        tripped: BodyTimedOut,
    }
}

impl<B> Paced<B> {
    /// Wraps `inner`; `tripped` is set when it is cut.
    pub const fn new(inner: B, pace: Pace, tripped: BodyTimedOut) -> Self {
        Self { inner, pacer: Pacer::new(pace), received: 0, failed: false, tripped }
    }
}

impl<B> std::fmt::Debug for Paced<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paced").field("pacer", &self.pacer).field("received", &self.received).finish_non_exhaustive()
    }
}

impl<B> HttpBody for Paced<B>
where
    B: HttpBody<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let timeout = |received, pacer: &Pacer| -> BoxError { Box::new(BodyTimeout { received, pace: pacer.pace() }) };
        if *this.failed {
            return Poll::Ready(Some(Err(timeout(*this.received, this.pacer))));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                *this.received += n;
                this.pacer.progress(n);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => match this.pacer.poll_wait(cx) {
                Poll::Ready(()) => {
                    *this.failed = true;
                    this.tripped.0.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(timeout(*this.received, this.pacer))))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.failed && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// A body whose frames arrive on a schedule: (delay before, bytes).
    fn scheduled(plan: Vec<(u64, usize)>) -> crate::Body {
        let stream = futures_util::stream::unfold(plan.into_iter(), |mut plan| async move {
            let (delay_ms, len) = plan.next()?;
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Some((Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; len]))), plan))
        });
        http_body_util::StreamBody::new(stream).boxed_unsync()
    }

    const PACE: Pace = Pace { timeout: Duration::from_secs(10), min_rate: 1000 };

    async fn outcome(plan: Vec<(u64, usize)>) -> (Result<usize, u64>, Duration) {
        let started = Instant::now();
        let tripped = BodyTimedOut::default();
        let result = Paced::new(scheduled(plan), PACE, tripped.clone()).collect().await;
        let result = match result {
            Ok(body) => Ok(body.to_bytes().len()),
            Err(e) => {
                assert!(is_body_timeout(e.as_ref()), "{e}");
                assert!(tripped.is_set());
                Err(e.downcast_ref::<BodyTimeout>().map_or(0, |t| t.received))
            }
        };
        (result, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_at_or_above_the_rate_pass_whatever_their_length() {
        // 1000 B/s for 100 s, and 100 kB at once.
        assert_eq!(outcome(vec![(1000, 1000); 100]).await.0, Ok(100_000));
        assert_eq!(outcome(vec![(0, 100_000)]).await.0, Ok(100_000));
        // Pauses shorter than the timeout, with enough bytes in between.
        assert_eq!(outcome(vec![(9_000, 10_000), (9_000, 10_000), (9_000, 10)]).await.0, Ok(20_010));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_cut_at_the_timeout() {
        let (result, took) = outcome(vec![(0, 10), (60_000, 10)]).await;
        assert_eq!(result, Err(10));
        assert!(took >= Duration::from_secs(10) && took < Duration::from_secs(11), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_rate_is_cut_and_credit_never_banks_past_the_timeout() {
        // One byte a second (slowhttptest's slow body): cut after about 10 s.
        let (result, took) = outcome(vec![(1000, 1); 1000]).await;
        assert!(matches!(result, Err(n) if n < 12), "{result:?}");
        assert!(took < Duration::from_secs(12), "{took:?}");
        // A megabyte at once, then the same trickle: still about 10 s.
        let mut plan = vec![(0, 1_000_000)];
        plan.extend(vec![(1000, 1); 1000]);
        let (result, took) = outcome(plan).await;
        assert!(result.is_err(), "{result:?}");
        assert!(took < Duration::from_secs(12), "{took:?}");
        // Half the rate: cut after about twice the timeout.
        let (result, took) = outcome(vec![(1000, 500); 1000]).await;
        assert!(result.is_err());
        assert!(took >= Duration::from_secs(18) && took < Duration::from_secs(22), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_timeout_when_no_rate_is_set() {
        let pace = Pace { timeout: Duration::from_secs(10), min_rate: 0 };
        let body = Paced::new(scheduled(vec![(9_000, 1); 5]), pace, BodyTimedOut::default());
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 5, "one byte every 9 s keeps a gap timeout");
        let body = Paced::new(scheduled(vec![(9_000, 1), (11_000, 1)]), pace, BodyTimedOut::default());
        assert!(body.collect().await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn time_not_spent_waiting_on_the_client_is_free() {
        // The consumer takes a minute between polls (an upstream not reading):
        // the client is never waited on, so it is never cut.
        let mut body = Paced::new(scheduled(vec![(0, 10); 5]), PACE, BodyTimedOut::default());
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            total += frame.unwrap().into_data().unwrap().len();
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        assert_eq!(total, 50);
    }
}
