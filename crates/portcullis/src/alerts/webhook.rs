//! The alert message and its delivery to the webhook.
//!
//! Decision rules:
//! - One JSON object per alert (see docs/alerts.md), with a `text` field
//!   holding the human summary, so Slack and Mattermost incoming webhooks
//!   show it as is and other receivers read the structured fields.
//! - Deliveries run one after the other on their own task, off the data path.
//!   A failed attempt (no answer, or a status other than 2xx) is retried
//!   after 1, 2 and 4 s; after the fourth failure the alert is given up with
//!   an error log and `portcullis_alerts_delivery_failures_total`. At most
//!   [`QUEUE`] alerts wait; beyond that new ones are dropped and counted.
//! - The webhook URL and header values are secrets: logs name the URL's
//!   scheme and host only.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::alerts::Alerts;
use crate::http_client::{HttpClient, HttpClientError, HttpClientLimits};

/// Alerts waiting for delivery.
pub const QUEUE: usize = 256;
/// Waits between attempts: four attempts in all.
pub const RETRY_DELAYS: [Duration; 3] = [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)];

/// Whether an alert opens or closes an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The threshold was reached.
    Firing,
    /// The count stayed below the threshold for a window, after the cool-down.
    Resolved,
}

impl Status {
    /// The metric label.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Firing => "fired",
            Self::Resolved => "resolved",
        }
    }
}

/// A count of one client or route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientCount {
    /// The client address.
    pub client_ip: String,
    /// Its matching events in the window.
    pub count: u64,
}

/// A count of one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteCount {
    /// The route name.
    pub route: String,
    /// Its matching events in the window.
    pub count: u64,
}

/// The JSON body posted to the webhook.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// The rule's name.
    pub alert: String,
    /// `firing` or `resolved`.
    pub status: Status,
    /// One line for people.
    pub summary: String,
    /// The same line, for Slack and Mattermost incoming webhooks.
    pub text: String,
    /// `count` or `distinct_defences`.
    pub kind: &'static str,
    /// `none`, `client` or `route`.
    pub group_by: &'static str,
    /// The client address or route this incident is about (`group_by`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The group's count now (events, or defences for `distinct_defences`).
    pub count: u64,
    /// The rule's threshold.
    pub threshold: u64,
    /// The rule's window.
    pub window_seconds: f64,
    /// Firing: the start of the window counted. Resolved: when it fired.
    #[serde(serialize_with = "rfc3339")]
    pub since: SystemTime,
    /// Now.
    #[serde(serialize_with = "rfc3339")]
    pub until: SystemTime,
    /// All matching events of the rule in the window.
    pub total: u64,
    /// The clients with the most matching events, most first.
    pub top_clients: Vec<ClientCount>,
    /// The routes with the most matching events, most first.
    pub top_routes: Vec<RouteCount>,
    /// Matching events per reason code.
    pub reasons: serde_json::Map<String, serde_json::Value>,
    /// The gateway that sent it (`[alerts] instance`).
    pub instance: String,
    /// Whether the counts are this instance's alone (Redis unreachable).
    pub local_only: bool,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*time))
}

/// The delivery side: a queue and its task.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Alert>,
}

impl Outbox {
    /// Starts the delivery task for `alerts` on the current runtime.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no system roots).
    pub fn start(alerts: &Alerts) -> Result<Self, HttpClientError> {
        let client = HttpClient::new(None, HttpClientLimits::default())?;
        let mut headers = HeaderMap::new();
        for (name, value) in &alerts.headers {
            if let Ok(mut value) = HeaderValue::from_str(value.expose()) {
                value.set_sensitive(true);
                headers.insert(name.clone(), value);
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let target = Target { client, url: alerts.webhook.clone(), shown: alerts.webhook_shown.clone(), headers };
        tokio::spawn(target.run(rx));
        Ok(Self { tx })
    }

    /// Queues `alert`; a full queue drops it (counted).
    pub fn send(&self, alert: Alert) {
        if let Err(mpsc::error::TrySendError::Full(alert)) = self.tx.try_send(alert) {
            tracing::error!(alert = %alert.alert, status = ?alert.status, "alert queue full; alert dropped");
            metrics::counter!(super::DELIVERY_FAILURES, "rule" => alert.alert, "cause" => "queue_full").increment(1);
        }
    }
}

/// What went wrong, without the URL (its path may be the webhook's token).
fn problem(error: &HttpClientError) -> String {
    match error {
        HttpClientError::Url { reason, .. } => (*reason).to_owned(),
        HttpClientError::Tls(reason) | HttpClientError::Request { reason, .. } => reason.clone(),
        HttpClientError::Timeout(_) => "no answer in time".to_owned(),
        HttpClientError::TooLarge { max, .. } => format!("answer larger than {max} bytes"),
    }
}

struct Target {
    client: HttpClient,
    url: crate::config::secret::Secret,
    shown: String,
    headers: HeaderMap,
}

impl Target {
    async fn run(self, mut rx: mpsc::Receiver<Alert>) {
        while let Some(alert) = rx.recv().await {
            self.deliver(&alert).await;
        }
    }

    async fn deliver(&self, alert: &Alert) {
        let body = match serde_json::to_vec(alert) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(alert = %alert.alert, error = %e, "cannot encode the alert");
                return;
            }
        };
        let mut last = String::new();
        for attempt in 0..=RETRY_DELAYS.len() {
            if let Some(delay) = attempt.checked_sub(1).and_then(|i| RETRY_DELAYS.get(i)) {
                tokio::time::sleep(*delay).await;
            }
            match self.client.post_json(self.url.expose(), &self.headers, body.clone()).await {
                Ok((status, _, _)) if status.is_success() => return,
                Ok((status, _, _)) => last = format!("answered {status}"),
                Err(e) => last = problem(&e),
            }
            tracing::warn!(alert = %alert.alert, webhook = %self.shown, attempt = attempt + 1, problem = %last, "alert delivery failed");
        }
        tracing::error!(
            alert = %alert.alert,
            status = ?alert.status,
            webhook = %self.shown,
            problem = %last,
            "alert not delivered after {} attempts",
            RETRY_DELAYS.len() + 1
        );
        metrics::counter!(super::DELIVERY_FAILURES, "rule" => alert.alert.clone(), "cause" => "webhook").increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failure_is_described_without_the_url() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let client = HttpClient::new(None, HttpClientLimits::default()).unwrap();
        for url in [format!("http://{closed}/services/T0/s3cret"), "http://hooks.example.com/s3cret".to_owned()] {
            let err = client.post_json(&url, &HeaderMap::new(), Bytes::from_static(b"{}")).await.unwrap_err();
            let text = problem(&err);
            assert!(!text.contains("s3cret") && !text.is_empty(), "{text}");
        }
    }

    #[test]
    fn the_message_has_the_documented_fields() {
        let alert = Alert {
            alert: "r".into(),
            status: Status::Firing,
            summary: "s".into(),
            text: "s".into(),
            kind: "count",
            group_by: "none",
            group: None,
            count: 3,
            threshold: 2,
            window_seconds: 60.0,
            since: SystemTime::UNIX_EPOCH,
            until: SystemTime::UNIX_EPOCH + Duration::from_secs(60),
            total: 3,
            top_clients: vec![ClientCount { client_ip: "192.0.2.1".into(), count: 3 }],
            top_routes: vec![RouteCount { route: "login".into(), count: 3 }],
            reasons: serde_json::Map::new(),
            instance: "gw".into(),
            local_only: false,
        };
        let value = serde_json::to_value(&alert).unwrap();
        assert_eq!(value["status"], "firing");
        assert_eq!(value["since"], "1970-01-01T00:00:00Z");
        assert_eq!(value["until"], "1970-01-01T00:01:00Z");
        assert!(value.get("group").is_none());
        assert_eq!(value["top_clients"][0]["client_ip"], "192.0.2.1");
    }
}
