//! Prometheus metrics: the process-wide recorder, and the event sink that
//! counts every security event.
//!
//! Metrics (labels are bounded by the configuration and the reason table,
//! never by client input). Counters:
//! - `portcullis_events_total{defence, reason, action, rule}`: one per
//!   security event, so every refusal, ban and noted decision is countable
//!   by its stable reason code and the rule (route, limit, ban rule) that
//!   decided; for WAF events the route, not the matched CRS rule ids (the
//!   request picks those, and labels must stay bounded).
//! - `portcullis_ratelimit_checks_total{limit, result}`: every check of a
//!   named limit, `result` = `allowed` or `limited`.
//! - `portcullis_events_dropped_total{sink, cause}`: security events a sink
//!   lost, `cause` = `queue_full` (the writer fell behind) or `write_error`
//!   (a full disk, a closed pipe).
//!
//! Gauges, so leaks show (each returns to its idle value when traffic stops):
//! - `portcullis_connections_open{listener}`: client connections, TLS
//!   handshakes included.
//! - `portcullis_requests_in_flight{listener}`: requests whose response has
//!   not ended.
//! - `portcullis_upstream_connections_open{upstream}`: connections to
//!   upstream targets, pooled idle ones included.
//! - `portcullis_websocket_tunnels_open{upstream}`: upgraded connections
//!   being relayed.
//!
//! They are served as Prometheus text at `GET /metrics` on the admin
//! listener (`[admin]`).

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use portcullis_layers::EventSink;
use portcullis_policy::SecurityEvent;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its
/// handle; `None` when another recorder was installed first (an embedding
/// application's), whose exporter then has the metrics.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!(
        "portcullis_events_total",
        "Security events by defence, reason code, action and deciding rule."
    );
    metrics::describe_counter!(
        "portcullis_ratelimit_checks_total",
        "Checks of each named rate limit, by result (allowed or limited)."
    );
    metrics::describe_counter!(EVENTS_DROPPED, "Security events a sink lost, by cause (queue_full or write_error).");
    metrics::describe_gauge!(CONNECTIONS_OPEN, "Open client connections, by listener.");
    metrics::describe_gauge!(REQUESTS_IN_FLIGHT, "Requests whose response has not ended, by listener.");
    metrics::describe_gauge!(UPSTREAM_CONNECTIONS_OPEN, "Open connections to upstream targets, by upstream.");
    metrics::describe_gauge!(WEBSOCKET_TUNNELS_OPEN, "Upgraded connections being relayed, by upstream.");
}

/// Counter: events lost by a sink.
pub const EVENTS_DROPPED: &str = "portcullis_events_dropped_total";
/// Gauge: open client connections.
pub const CONNECTIONS_OPEN: &str = "portcullis_connections_open";
/// Gauge: requests in flight.
pub const REQUESTS_IN_FLIGHT: &str = "portcullis_requests_in_flight";
/// Gauge: open upstream connections.
pub const UPSTREAM_CONNECTIONS_OPEN: &str = "portcullis_upstream_connections_open";
/// Gauge: WebSocket (upgraded) tunnels.
pub const WEBSOCKET_TUNNELS_OPEN: &str = "portcullis_websocket_tunnels_open";

/// One unit of a gauge, held while something is open: incremented when
/// made, decremented when dropped, however the holder ends.
#[derive(Debug)]
pub struct Held(metrics::Gauge);

impl Held {
    /// Counts one more on `gauge` with `label` = `value`.
    #[must_use]
    pub fn new(gauge: &'static str, label: &'static str, value: &str) -> Self {
        Self::on(&metrics::gauge!(gauge, label => value.to_owned()))
    }

    /// Counts one more on a gauge already looked up: what is counted per
    /// request looks its gauge up once per connection (a registry lookup
    /// costs more than the count).
    #[must_use]
    pub fn on(gauge: &metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Makes a gauge appear on /metrics (at its current value) before anything
/// is counted on it, so a scrape can tell "none" from "not exported".
pub fn register_gauge(gauge: &'static str, label: &'static str, value: &str) {
    metrics::gauge!(gauge, label => value.to_owned()).increment(0.0);
}

/// The `rule` label of an event: the configured rule that decided. A WAF
/// event's `rule` lists the CRS rule ids that matched, which the request
/// chooses (every combination of matching rules would be a series of its
/// own, without bound), so WAF events are counted under their route.
fn rule_label(event: &SecurityEvent) -> String {
    if event.defence == "waf" { event.route.clone() } else { event.rule.clone() }.unwrap_or_default()
}

/// Counts each event, then passes it on.
#[derive(Debug)]
pub struct Metered(pub Arc<dyn EventSink>);

impl EventSink for Metered {
    fn emit(&self, event: SecurityEvent) {
        let action = match event.action {
            portcullis_policy::Action::Deny => "deny",
            portcullis_policy::Action::Log => "log",
            portcullis_policy::Action::Allow => "allow",
            portcullis_policy::Action::Ban => "ban",
        };
        metrics::counter!(
            "portcullis_events_total",
            "defence" => event.defence,
            "reason" => event.reason,
            "action" => action,
            "rule" => rule_label(&event),
        )
        .increment(1);
        self.0.emit(event);
    }

    fn allowed_sample_ppm(&self) -> u32 {
        self.0.allowed_sample_ppm()
    }
}
