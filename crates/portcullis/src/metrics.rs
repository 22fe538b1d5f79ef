//! Prometheus metrics: the process-wide recorder, and the event sink that
//! counts every security event.
//!
//! Metrics (all counters; labels are bounded by the configuration and the
//! reason table, never by client input):
//! - `portcullis_events_total{defence, reason, action, rule}`: one per
//!   security event, so every refusal, ban and noted decision is countable
//!   by its stable reason code and the rule (route, limit, ban rule) that
//!   decided; for WAF events the route, not the matched CRS rule ids (the
//!   request picks those, and labels must stay bounded).
//! - `portcullis_ratelimit_checks_total{limit, result}`: every check of a
//!   named limit, `result` = `allowed` or `limited`.
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
}
