//! The webhook sink: events POSTed as JSON arrays to a collector.
//!
//! Defends the data path against a slow, failing or unreachable collector.
//! Decision rules:
//! - `emit` only pushes the event's line onto a bounded queue
//!   (`queue.rs`: the oldest is dropped when full, counted with
//!   `cause = "queue_full"`). Delivery runs on the sink's own thread with its
//!   own single-threaded runtime: no request ever waits for it.
//! - A batch is sent when `batch_size` events are queued or `flush_interval`
//!   after its first event, whichever comes first: one POST, the body a JSON
//!   array of events (`Content-Type: application/json`).
//! - A 2xx answer delivers the batch. A connection error, a timeout, a 5xx,
//!   408 or 429 is retried after `backoff_min`, doubled each attempt up to
//!   `backoff_max`, with equal jitter (half the delay fixed, half random) so
//!   gateways restarted together do not retry in step. After `max_attempts`
//!   the batch is dropped (`cause = "retries_exhausted"`). Any other 4xx
//!   means the collector refuses the batch as it is: dropped at once
//!   (`cause = "rejected"`). While a batch is retried, new events queue up.
//! - Delivery is at least once: a batch whose answer was lost is sent again.
//! - The URL may carry a token and the auth header does: neither is logged;
//!   logs name the sink (`webhook:https://host:port` or its `name`).
//!
//! Deployment caveat: events still queued when the process is killed are
//! lost; on a clean shutdown the queue is closed and what is left gets one
//! delivery attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::EVENTS_DROPPED;
use super::queue::Queue;
use crate::config::WebhookSink;
use crate::http_client::{HttpClient, HttpClientError, HttpClientLimits};

/// The handle `emit` pushes to; closing it (drop) ends the thread.
#[derive(Debug)]
pub struct Webhook {
    queue: Arc<Queue<String>>,
}

impl Webhook {
    /// Starts the delivery thread.
    ///
    /// # Errors
    /// The TLS roots cannot be loaded, or the thread cannot be started.
    pub fn start(config: &WebhookSink) -> std::io::Result<Self> {
        let limits = HttpClientLimits {
            connect_timeout: config.timeout.min(Duration::from_secs(5)),
            timeout: config.timeout,
            max_body: 64 * 1024,
        };
        let client = HttpClient::new(None, limits).map_err(std::io::Error::other)?;
        let queue = Arc::new(Queue::new(config.queue, &config.name));
        for cause in ["retries_exhausted", "rejected"] {
            metrics::counter!(EVENTS_DROPPED, "sink" => config.name.clone(), "cause" => cause).increment(0);
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let sender = Sender { config: config.clone(), client, queue: queue.clone(), last_error_log: None };
        std::thread::Builder::new().name("portcullis-webhook".into()).spawn(move || sender.run(&runtime))?;
        Ok(Self { queue })
    }

    /// Queues one event line. Never waits.
    pub fn push(&self, line: String) {
        self.queue.push(line);
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.queue.close();
    }
}

struct Sender {
    config: WebhookSink,
    client: HttpClient,
    queue: Arc<Queue<String>>,
    last_error_log: Option<Instant>,
}

/// What one attempt's answer means for the batch.
enum Outcome {
    Delivered,
    Retry(String),
    Rejected(StatusCode),
}

impl Sender {
    fn run(mut self, runtime: &tokio::runtime::Runtime) {
        loop {
            let batch = self.queue.take(self.config.batch_size, self.config.flush_interval);
            if batch.is_empty() {
                return;
            }
            runtime.block_on(self.deliver(&batch));
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some((name, secret)) = &self.config.auth
            && let Ok(mut value) = HeaderValue::from_str(secret.expose())
        {
            value.set_sensitive(true);
            headers.insert(name.clone(), value);
        }
        headers
    }

    async fn attempt(&self, headers: &HeaderMap, body: Bytes) -> Outcome {
        match self.client.post_json(self.config.url.expose(), headers, body).await {
            Ok((status, _, _)) if status.is_success() => Outcome::Delivered,
            Ok((status, _, _))
                if status.is_server_error()
                    || status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS =>
            {
                Outcome::Retry(format!("answered {status}"))
            }
            Ok((status, _, _)) => Outcome::Rejected(status),
            Err(e) => Outcome::Retry(describe(&e)),
        }
    }

    async fn deliver(&mut self, batch: &[String]) {
        let mut body = String::with_capacity(batch.iter().map(|l| l.len() + 1).sum::<usize>() + 2);
        body.push('[');
        for (i, line) in batch.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(line);
        }
        body.push(']');
        let body = Bytes::from(body);
        let headers = self.headers();
        let lost = batch.len() as u64;
        for attempt in 1..=self.config.max_attempts {
            match self.attempt(&headers, body.clone()).await {
                Outcome::Delivered => return,
                Outcome::Rejected(status) => {
                    self.count(lost, "rejected");
                    self.log_error(&format!("answered {status}; the batch is dropped, not retried"), lost);
                    return;
                }
                Outcome::Retry(why) if attempt == self.config.max_attempts || self.queue.is_closed() => {
                    self.count(lost, "retries_exhausted");
                    self.log_error(&format!("{why}; gave up after {attempt} attempts"), lost);
                    return;
                }
                Outcome::Retry(why) => {
                    let delay = backoff(self.config.backoff_min, self.config.backoff_max, attempt);
                    tracing::debug!(sink = %self.config.name, attempt, reason = %why, delay_ms = delay.as_millis(), "webhook delivery failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn count(&self, lost: u64, cause: &'static str) {
        metrics::counter!(EVENTS_DROPPED, "sink" => self.config.name.clone(), "cause" => cause).increment(lost);
    }

    /// An error at most every 10 s: a dead collector must show, not flood.
    fn log_error(&mut self, why: &str, lost: u64) {
        if self.last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            self.last_error_log = Some(Instant::now());
            tracing::error!(sink = %self.config.name, reason = %why, lost, "cannot deliver security events to the webhook; they are dropped");
        }
    }
}

/// The error without its URL (whose path may be a token).
fn describe(error: &HttpClientError) -> String {
    match error {
        HttpClientError::Url { reason, .. } => (*reason).to_owned(),
        HttpClientError::Tls(e) => format!("TLS setup: {e}"),
        HttpClientError::Request { reason, .. } => reason.clone(),
        HttpClientError::Timeout(_) => "timed out".to_owned(),
        HttpClientError::TooLarge { max, .. } => format!("answer larger than {max} bytes"),
    }
}

/// The delay before retry number `attempt` (1-based): `min` doubled per
/// attempt up to `max`, then half of it fixed and half random.
fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let doubled = min.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
    let delay = doubled.min(max);
    let half = delay / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_within_bounds() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for (attempt, full) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)] {
            let full = Duration::from_secs(full);
            for _ in 0..50 {
                let d = backoff(min, max, attempt);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
    }
}
