//! Prometheus metrics: the process-wide recorder, the per-route handles the
//! server records answered requests with, and the event sink that counts
//! every security event.
//!
//! Labels are bounded by the configuration and the reason table, never by
//! client input: no client addresses, no paths. Route labels are configured
//! route names; a request that matched no route is counted under
//! `route="(unmatched)"`. The full table, with PromQL for the usual
//! questions, is docs/monitoring.md.
//!
//! Traffic (recorded when the response head is ready, handles looked up
//! once per route and configuration, see [`RouteHandles`]):
//! - `portcullis_requests_total{route, listener, status_class}`: requests
//!   answered, `status_class` = `1xx` … `5xx`, refusals included.
//! - `portcullis_request_duration_seconds{route}` (histogram): from the
//!   request head's arrival to the response head being ready.
//! - `portcullis_upstream_duration_seconds{route}` (histogram): the part of
//!   that spent waiting for the upstream (connect, send, response head,
//!   retries included); proxied requests only.
//! - `portcullis_gateway_duration_seconds{route}` (histogram): the time the
//!   gateway added, total minus upstream (for a refusal, all of it).
//!
//! Defences:
//! - `portcullis_events_total{defence, reason, action, rule}`: one per
//!   security event, so every refusal, ban and noted decision is countable
//!   by its stable reason code and the rule (route, limit, ban rule) that
//!   decided; for WAF events the route, not the matched CRS rule ids (the
//!   request picks those, and labels must stay bounded).
//! - `portcullis_auth_failures_total{method, reason}`: failed
//!   authentications by method (`jwt`, `api_key`, `session`, `oidc`,
//!   `mtls`, `account`, `login`, `admin`, or `none` when no credential
//!   came), derived from the events ([`auth_method`]).
//! - `portcullis_ratelimit_checks_total{limit, result}`: every check of a
//!   named limit, `result` = `allowed` or `limited`.
//! - `portcullis_waf_inspections_total{route, phase}`,
//!   `portcullis_waf_detections_total{route, phase, action}`,
//!   `portcullis_waf_inspection_duration_seconds{route, phase}`: see
//!   `portcullis_layers::waf`.
//! - `portcullis_bans_active` (gauge): bans in force, read from the ban
//!   store when `/metrics` is scraped.
//! - `portcullis_events_dropped_total{sink, cause}`: security events a sink
//!   lost, `cause` = `queue_full` (the writer fell behind) or `write_error`
//!   (a full disk, a closed pipe).
//!
//! Upstreams, TLS and configuration:
//! - `portcullis_upstream_errors_total{upstream, kind}`: failed upstream
//!   attempts, `kind` = `connect`, `timeout` or `protocol`.
//! - `portcullis_upstream_retries_total{upstream}`: requests sent to
//!   another target after a target could not be reached.
//! - `portcullis_tls_handshakes_total{listener, result}`: TLS handshakes,
//!   `result` = `ok`, `error` or `timeout`.
//! - `portcullis_config_reloads_total{result}`: reloads, `result` = `ok` or
//!   `refused`; `portcullis_config_last_reload_success_timestamp_seconds`
//!   (gauge): when the serving configuration was loaded (start or reload).
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
//! listener (`[admin]`). Histogram samples are folded into their buckets
//! every few seconds by a thread of their own, so memory stays flat when
//! nobody scrapes. [`totals`] is a cheaper process-wide view (two relaxed
//! atomic loads) for the dashboard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use portcullis_layers::EventSink;
use portcullis_policy::SecurityEvent;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets (seconds) of the request, upstream and gateway
/// histograms: fine below a millisecond, where the gateway's own time
/// lives, then up to the default response timeout.
const LATENCY_BUCKETS: [f64; 18] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder (once per process) and returns its
/// handle; `None` when another recorder was installed first (an embedding
/// application's), whose exporter then has the metrics.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = match builder() {
                Ok(builder) => builder.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "histogram buckets refused; histograms render as summaries");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    upkeep(handle.clone());
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

fn builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    let mut builder = PrometheusBuilder::new();
    for name in [REQUEST_DURATION, UPSTREAM_DURATION, GATEWAY_DURATION, portcullis_layers::waf::INSPECTION_DURATION] {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), &LATENCY_BUCKETS)?;
    }
    Ok(builder)
}

/// Folds histogram samples into buckets in the background: without a
/// scrape they would otherwise pile up.
fn upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("portcullis-metrics".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are folded at scrapes only");
    }
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
    metrics::describe_counter!(REQUESTS, "Requests answered, by route, listener and status class.");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time from a request's head to its response head, by route."
    );
    metrics::describe_histogram!(
        UPSTREAM_DURATION,
        metrics::Unit::Seconds,
        "Time spent waiting for the upstream's response head (retries included), by route."
    );
    metrics::describe_histogram!(
        GATEWAY_DURATION,
        metrics::Unit::Seconds,
        "Time the gateway added (total minus upstream), by route."
    );
    metrics::describe_counter!(AUTH_FAILURES, "Failed authentications, by method and reason code.");
    metrics::describe_counter!(UPSTREAM_ERRORS, "Failed upstream attempts, by upstream and kind.");
    metrics::describe_counter!(UPSTREAM_RETRIES, "Requests retried on another target, by upstream.");
    metrics::describe_gauge!(BANS_ACTIVE, "Bans in force (read from the ban store at each scrape).");
    metrics::describe_counter!(TLS_HANDSHAKES, "TLS handshakes, by listener and result (ok, error, timeout).");
    metrics::describe_counter!(CONFIG_RELOADS, "Configuration reloads, by result (ok or refused).");
    metrics::describe_gauge!(
        CONFIG_LAST_RELOAD_SUCCESS,
        metrics::Unit::Seconds,
        "Unix time the serving configuration was loaded (start or reload)."
    );
    metrics::describe_counter!(portcullis_layers::waf::INSPECTIONS, "WAF verdicts reached, by route and phase.");
    metrics::describe_counter!(
        portcullis_layers::waf::DETECTIONS,
        "WAF verdicts that intervened, by route, phase and action (block or log)."
    );
    metrics::describe_histogram!(
        portcullis_layers::waf::INSPECTION_DURATION,
        metrics::Unit::Seconds,
        "Time of a WAF engine inspection (queue wait included), by route and phase."
    );
}

/// Counter: requests answered.
pub const REQUESTS: &str = "portcullis_requests_total";
/// Histogram: request head to response head.
pub const REQUEST_DURATION: &str = "portcullis_request_duration_seconds";
/// Histogram: waiting for the upstream.
pub const UPSTREAM_DURATION: &str = "portcullis_upstream_duration_seconds";
/// Histogram: time added by the gateway.
pub const GATEWAY_DURATION: &str = "portcullis_gateway_duration_seconds";
/// Counter: failed authentications.
pub const AUTH_FAILURES: &str = "portcullis_auth_failures_total";
/// Counter: failed upstream attempts.
pub const UPSTREAM_ERRORS: &str = "portcullis_upstream_errors_total";
/// Counter: retries on another target.
pub const UPSTREAM_RETRIES: &str = "portcullis_upstream_retries_total";
/// Gauge: bans in force.
pub const BANS_ACTIVE: &str = "portcullis_bans_active";
/// Counter: TLS handshakes.
pub const TLS_HANDSHAKES: &str = "portcullis_tls_handshakes_total";
/// Counter: configuration reloads.
pub const CONFIG_RELOADS: &str = "portcullis_config_reloads_total";
/// Gauge: when the serving configuration was loaded.
pub const CONFIG_LAST_RELOAD_SUCCESS: &str = "portcullis_config_last_reload_success_timestamp_seconds";
/// The `route` label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "(unmatched)";

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

/// The status classes counted, by the status's first digit.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One route's request counters (by listener, then status class) and
/// latency histograms, looked up once when a configuration is built: an
/// answered request costs atomic adds and three histogram samples, no
/// registry lookup.
#[derive(Debug)]
pub struct RouteHandles {
    requests: Vec<[metrics::Counter; 5]>,
    total: metrics::Histogram,
    upstream: metrics::Histogram,
    gateway: metrics::Histogram,
}

impl RouteHandles {
    /// The handles of `route` on each of `listeners` (in configuration order).
    #[must_use]
    pub fn new<'a>(route: &str, listeners: impl Iterator<Item = &'a str>) -> Self {
        let requests = listeners
            .map(|listener| {
                STATUS_CLASSES.map(|class| {
                    metrics::counter!(REQUESTS, "route" => route.to_owned(), "listener" => listener.to_owned(), "status_class" => class)
                })
            })
            .collect();
        Self {
            requests,
            total: metrics::histogram!(REQUEST_DURATION, "route" => route.to_owned()),
            upstream: metrics::histogram!(UPSTREAM_DURATION, "route" => route.to_owned()),
            gateway: metrics::histogram!(GATEWAY_DURATION, "route" => route.to_owned()),
        }
    }
}

impl portcullis_layers::RouteMetrics for RouteHandles {
    fn answered(&self, listener: usize, status: http::StatusCode, total: Duration, upstream: Option<Duration>) {
        let class = usize::from(status.as_u16() / 100).saturating_sub(1).min(STATUS_CLASSES.len() - 1);
        if let Some(counters) = self.requests.get(listener)
            && let Some(counter) = counters.get(class)
        {
            counter.increment(1);
        }
        TOTALS.requests.fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() {
            TOTALS.responses_5xx.fetch_add(1, Ordering::Relaxed);
        } else if status.is_client_error() {
            TOTALS.responses_4xx.fetch_add(1, Ordering::Relaxed);
        }
        self.total.record(total);
        match upstream {
            Some(upstream) => {
                self.upstream.record(upstream);
                self.gateway.record(total.saturating_sub(upstream));
            }
            None => self.gateway.record(total),
        }
    }
}

/// How long a request the proxy refused waited for its upstream (a
/// timeout, a broken answer, no target reachable); put into the refusal's
/// extensions by the proxy, read when the request is counted. An answered
/// request carries the time in `ServedBy`.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTime(pub Duration);

struct TotalCounters {
    requests: AtomicU64,
    responses_4xx: AtomicU64,
    responses_5xx: AtomicU64,
}

static TOTALS: TotalCounters =
    TotalCounters { requests: AtomicU64::new(0), responses_4xx: AtomicU64::new(0), responses_5xx: AtomicU64::new(0) };

/// Requests answered by this process since it started, whatever the
/// recorder: the counts behind `portcullis_requests_total`, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Totals {
    /// Every answered request (refusals included).
    pub requests: u64,
    /// Answers with a 4xx status.
    pub responses_4xx: u64,
    /// Answers with a 5xx status.
    pub responses_5xx: u64,
}

/// A snapshot of [`Totals`] (relaxed loads: each count is exact, the three
/// may be a request apart).
#[must_use]
pub fn totals() -> Totals {
    Totals {
        requests: TOTALS.requests.load(Ordering::Relaxed),
        responses_4xx: TOTALS.responses_4xx.load(Ordering::Relaxed),
        responses_5xx: TOTALS.responses_5xx.load(Ordering::Relaxed),
    }
}

/// One upstream's error and retry counters, looked up once per configuration.
#[derive(Debug)]
pub struct UpstreamHandles {
    /// `kind="connect"`.
    pub connect: metrics::Counter,
    /// `kind="timeout"`.
    pub timeout: metrics::Counter,
    /// `kind="protocol"`.
    pub protocol: metrics::Counter,
    /// Retries on another target.
    pub retries: metrics::Counter,
}

impl UpstreamHandles {
    /// The handles of upstream `name`.
    #[must_use]
    pub fn new(name: &str) -> Self {
        let errors =
            |kind: &'static str| metrics::counter!(UPSTREAM_ERRORS, "upstream" => name.to_owned(), "kind" => kind);
        Self {
            connect: errors("connect"),
            timeout: errors("timeout"),
            protocol: errors("protocol"),
            retries: metrics::counter!(UPSTREAM_RETRIES, "upstream" => name.to_owned()),
        }
    }
}

/// Counts a TLS handshake on `listener`: `ok`, `error` or `timeout`.
pub fn tls_handshake(listener: &str, result: &'static str) {
    metrics::counter!(TLS_HANDSHAKES, "listener" => listener.to_owned(), "result" => result).increment(1);
}

/// Makes a TLS listener's handshake series visible at 0.
pub fn register_tls_listener(listener: &str) {
    for result in ["ok", "error", "timeout"] {
        metrics::counter!(TLS_HANDSHAKES, "listener" => listener.to_owned(), "result" => result).increment(0);
    }
}

/// Records the configuration loaded at start: the reload series appear at
/// 0 and the last-success time is now.
pub fn config_started() {
    for label in ["ok", "refused"] {
        metrics::counter!(CONFIG_RELOADS, "result" => label).increment(0);
    }
    loaded_now();
}

/// Counts a reload, `ok` or refused (the old configuration kept serving).
pub fn config_reloaded(ok: bool) {
    metrics::counter!(CONFIG_RELOADS, "result" => if ok { "ok" } else { "refused" }).increment(1);
    if ok {
        loaded_now();
    }
}

fn loaded_now() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    metrics::gauge!(CONFIG_LAST_RELOAD_SUCCESS).set(now.as_secs_f64());
}

/// Sets `portcullis_bans_active` from the ban store (at each scrape).
pub async fn refresh_bans(bans: &dyn portcullis_layers::ban::BanStore) {
    match bans.list().await {
        #[allow(clippy::cast_precision_loss)] // a ban list never nears 2^52 entries
        Ok(list) => metrics::gauge!(BANS_ACTIVE).set(list.len() as f64),
        Err(e) => tracing::debug!(error = %e, "cannot read the ban list for portcullis_bans_active"),
    }
}

/// The authentication method a failure event belongs to, if it is one: the
/// defences that check credentials, and the account and login events that
/// record a failed attempt. `None` for everything else (including
/// successes such as `account.login`).
#[must_use]
pub fn auth_method(event: &SecurityEvent) -> Option<&'static str> {
    // A store or key set that could not answer is the gateway's failure,
    // not a failed authentication.
    if matches!(event.action, portcullis_policy::Action::Allow)
        || event.attribution != portcullis_policy::Attribution::Client
    {
        return None;
    }
    let method = match event.defence {
        "jwt" => "jwt",
        "apikey" => "api_key",
        "session" => "session",
        "oidc" => "oidc",
        "mtls" => "mtls",
        "auth" => "none",
        "admin" => "admin",
        "login" if event.reason == "login.failed" => "login",
        "account"
            if matches!(
                event.reason,
                "account.unauthenticated"
                    | "account.mfa_failed"
                    | "account.totp_replay"
                    | "account.passkey_failed"
                    | "account.refresh_invalid"
                    | "account.refresh_reuse"
                    | "account.token_invalid"
                    | "account.token_expired"
            ) =>
        {
            "account"
        }
        _ => return None,
    };
    Some(method)
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
        if let Some(method) = auth_method(&event) {
            metrics::counter!(AUTH_FAILURES, "method" => method, "reason" => event.reason).increment(1);
        }
        self.0.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy::event::RequestSummary;
    use portcullis_policy::{Denied, Reason};

    fn event(reason: Reason) -> SecurityEvent {
        let summary = RequestSummary {
            request_id: "r",
            client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            listener: "l",
            method: "GET",
            path: "/",
            route: None,
        };
        SecurityEvent::denied(&summary, &Denied::new(reason), std::time::SystemTime::now())
    }

    #[test]
    fn auth_failures_are_told_by_method_and_the_gateways_own_failures_are_not() {
        for (reason, method) in [
            (Reason::JwtExpired, Some("jwt")),
            (Reason::JwtBadSignature, Some("jwt")),
            (Reason::ApiKeyUnknown, Some("api_key")),
            (Reason::SessionExpired, Some("session")),
            (Reason::OidcState, Some("oidc")),
            (Reason::MtlsMissing, Some("mtls")),
            (Reason::AuthMissing, Some("none")),
            (Reason::AdminUnauthorized, Some("admin")),
            (Reason::LoginFailed, Some("login")),
            (Reason::AccountInvalid, None),
            (Reason::AccountMfaFailed, Some("account")),
            // The key set or the store could not answer: not the client's failure.
            (Reason::JwtKeysUnavailable, None),
            (Reason::ApiKeyStoreUnavailable, None),
            (Reason::LoginBackoff, None),
            (Reason::RateLimitExceeded, None),
            (Reason::WafSqli, None),
            (Reason::AccountTaken, None),
        ] {
            assert_eq!(auth_method(&event(reason)), method, "{reason}");
        }
    }
}
