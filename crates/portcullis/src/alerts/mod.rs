//! Alerts: rules over security-event counts in a sliding window
//! (`[[alerts.rule]]`) that post a webhook when abuse is under way — many
//! failed logins, a spike of WAF blocks, one address triggering many
//! defences, an upstream failing — and again when it is over.
//!
//! Defends against abuse going unnoticed until somebody reads the logs.
//!
//! Decision rules:
//! - [`Alerting`] wraps the event sink: `emit` forwards every event to the
//!   inner sink and, when the event matches a rule, `try_send`s a compact
//!   copy to a bounded queue ([`QUEUE`]). It never blocks: a full queue drops
//!   the copy and counts it (`portcullis_alerts_events_dropped_total`).
//! - One task evaluates the rules every bucket width (between 50 ms and
//!   1 s): counts ([`window`]), incidents (fire at the threshold, one alert
//!   per incident, resolved after the cool-down and a whole window below
//!   the threshold), and the alert message ([`webhook`]).
//! - With `[state] shared = "redis://…"` the counts and the incidents'
//!   ownership live in Redis ([`redis`]): the instances together cross the
//!   threshold and exactly one sends. When Redis fails the task warns once,
//!   counts only this instance's events and decides alone (the alert says
//!   `"local_only": true`) until Redis answers again; requests are never
//!   delayed by it.
//! - Each firing and resolved alert is logged (target `portcullis::alerts`)
//!   and counted in `portcullis_alerts_total{rule, status}`.
//!
//! Deployment caveat: rules are read at start; a reload that changes
//! `[alerts]` is reported as needing a restart. While Redis is unreachable,
//! instances count apart: an attack spread over them may stay under every
//! threshold, and an incident may be sent by more than one instance.

pub mod redis;
pub mod webhook;
pub mod window;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_layers::EventSink;
use portcullis_policy::SecurityEvent;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::config::alerts::{AlertRule, Alerts, GroupBy, RuleKind};
use crate::config::state::Shared;
use redis::RedisCounts;
use webhook::{Alert, ClientCount, Outbox, RouteCount, Status};
use window::{Counts, Incidents, Seen, Tally, Window};

/// Counter: alerts by rule and status (`fired`, `resolved`).
pub const ALERTS_TOTAL: &str = "portcullis_alerts_total";
/// Counter: alerts not delivered, by rule and cause (`webhook`, `queue_full`).
pub const DELIVERY_FAILURES: &str = "portcullis_alerts_delivery_failures_total";
/// Counter: matching events the evaluator never saw (its queue was full).
pub const EVENTS_DROPPED: &str = "portcullis_alerts_events_dropped_total";
/// Counter: failed exchanges with Redis (the evaluation then used local counts).
pub const STORE_ERRORS: &str = "portcullis_alerts_store_errors_total";

/// After a failed exchange, Redis is left alone this long (milliseconds).
const RETRY_MS: u64 = 1_000;

/// Matching events waiting for the evaluator.
pub const QUEUE: usize = 16_384;

fn describe() {
    metrics::describe_counter!(ALERTS_TOTAL, "Alerts sent, by rule and status (fired or resolved).");
    metrics::describe_counter!(DELIVERY_FAILURES, "Alerts not delivered, by rule and cause (webhook or queue_full).");
    metrics::describe_counter!(EVENTS_DROPPED, "Matching security events the alert evaluator dropped (queue full).");
    metrics::describe_counter!(STORE_ERRORS, "Failed alert exchanges with Redis (local counts used instead).");
}

/// Why alerts could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// The webhook client could not be built.
    #[error("alerts webhook: {0}")]
    Client(#[from] crate::http_client::HttpClientError),
    /// The Redis URL is unusable.
    #[error("alerts: {0}")]
    Store(#[from] redis::StoreError),
}

/// The event sink that feeds the alert rules. See the module docs.
#[derive(Debug)]
pub struct Alerting {
    inner: Arc<dyn EventSink>,
    rules: Arc<[AlertRule]>,
    tx: mpsc::Sender<Seen>,
}

impl Alerting {
    /// `inner`, wrapped so that `config`'s alert rules see its events (or
    /// `inner` itself when there are none). Starts the evaluator and the
    /// webhook tasks on the current runtime; they end when the returned sink
    /// and its clones are dropped.
    ///
    /// # Errors
    /// [`AlertsError`] when the webhook client or the Redis connection
    /// cannot be prepared.
    pub fn wrap(config: &Config, inner: Arc<dyn EventSink>) -> Result<Arc<dyn EventSink>, AlertsError> {
        let Some(alerts) = config.alerts.as_ref().filter(|a| !a.rules.is_empty()) else { return Ok(inner) };
        describe();
        let store = match &config.state.shared {
            Shared::Redis(url) => Some(RedisCounts::open(url.expose())?),
            Shared::Memory => None,
        };
        let outbox = Outbox::start(alerts)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tracing::info!(
            rules = alerts.rules.len(),
            webhook = %alerts.webhook_shown,
            shared = store.as_ref().map_or("no", |s| s.shown()),
            "alerts enabled"
        );
        tokio::spawn(Engine::new(alerts, store, outbox).run(rx));
        Ok(Arc::new(Self { inner, rules: alerts.rules.clone().into(), tx }))
    }
}

impl EventSink for Alerting {
    fn emit(&self, event: SecurityEvent) {
        let mut mask = 0u64;
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matcher.matches(&event) {
                mask |= 1 << i;
            }
        }
        if mask != 0 {
            let seen = Seen {
                rules: mask,
                client: event.client_ip,
                route: event.route.as_deref().map(Arc::from),
                defence: event.defence,
                reason: event.reason,
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(seen) {
                metrics::counter!(EVENTS_DROPPED).increment(1);
            }
        }
        self.inner.emit(event);
    }
}

/// Wall-clock milliseconds (bucket indexes are shared between instances).
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// One rule's moving parts.
#[derive(Debug)]
struct RuleRun {
    rule: AlertRule,
    /// This instance's events (all of them: the fallback when Redis fails).
    window: Window,
    /// Events not yet written to Redis, by bucket index.
    pending: BTreeMap<u64, Tally>,
    incidents: Incidents,
}

/// The evaluator task's state.
#[derive(Debug)]
struct Engine {
    instance: String,
    rules: Vec<RuleRun>,
    store: Option<RedisCounts>,
    /// Whether the last exchange with Redis succeeded (for one warning per outage).
    shared_ok: bool,
    /// After a failure, Redis is tried again from this time on (local counts
    /// meanwhile), so an unresponsive Redis costs one deadline per second,
    /// not one per rule and evaluation.
    retry_ms: u64,
    outbox: Outbox,
}

impl Engine {
    fn new(alerts: &Alerts, store: Option<RedisCounts>, outbox: Outbox) -> Self {
        let rules = alerts
            .rules
            .iter()
            .map(|rule| RuleRun {
                rule: rule.clone(),
                window: Window::new(rule),
                pending: BTreeMap::new(),
                incidents: Incidents::default(),
            })
            .collect();
        Self { instance: alerts.instance.clone(), rules, store, shared_ok: true, retry_ms: 0, outbox }
    }

    /// The evaluation period: the narrowest bucket, within 50 ms–1 s.
    fn period(&self) -> Duration {
        let narrowest = self.rules.iter().map(|r| window::bucket_ms(r.rule.window)).min().unwrap_or(1_000);
        Duration::from_millis(narrowest.clamp(50, 1_000))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Seen>) {
        let mut tick = tokio::time::interval(self.period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                seen = rx.recv() => match seen {
                    Some(seen) => self.add(&seen, now_ms()),
                    None => return,
                },
                _ = tick.tick() => self.evaluate(now_ms()).await,
            }
        }
    }

    fn add(&mut self, seen: &Seen, now_ms: u64) {
        let shared = self.store.is_some();
        for (i, run) in self.rules.iter_mut().enumerate() {
            if seen.rules & (1 << i) == 0 {
                continue;
            }
            run.window.add(seen, now_ms);
            if shared {
                let index = run.window.index(now_ms);
                run.pending.entry(index).or_default().add(seen, run.rule.kind == RuleKind::DistinctDefences);
            }
        }
    }

    async fn evaluate(&mut self, now_ms: u64) {
        for i in 0..self.rules.len() {
            self.evaluate_rule(i, now_ms).await;
        }
    }

    async fn evaluate_rule(&mut self, i: usize, now_ms: u64) {
        let Self { rules, store, shared_ok, retry_ms, outbox, instance } = self;
        let Some(run) = rules.get_mut(i) else { return };
        run.window.advance(now_ms);
        let keep = run.rule.cooldown + run.rule.window + Duration::from_secs(30);
        let mut shared = None;
        let has_store = store.is_some();
        if let Some(store) = store.as_ref() {
            let owned: Vec<String> = run.incidents.open().map(|(g, _)| g.clone()).collect();
            let exchanged = if now_ms < *retry_ms {
                Err(None)
            } else {
                store.exchange(&run.rule, &run.pending, now_ms, &owned, keep).await.map_err(Some)
            };
            match exchanged {
                Ok(counts) => {
                    run.pending.clear();
                    if !*shared_ok {
                        tracing::info!(redis = %store.shown(), "alerts: Redis answers again; counting across instances");
                        *shared_ok = true;
                    }
                    shared = Some((store, counts));
                }
                Err(error) => {
                    if let Some(e) = error {
                        metrics::counter!(STORE_ERRORS).increment(1);
                        *retry_ms = now_ms.saturating_add(RETRY_MS);
                        if *shared_ok {
                            tracing::warn!(error = %e, "alerts: Redis unavailable; counting this instance's events only until it answers");
                            *shared_ok = false;
                        }
                    }
                    // Keep what is still inside the window, to be written later.
                    let oldest = run.window.index(now_ms).saturating_sub(window::BUCKETS - 1);
                    run.pending.retain(|index, _| *index >= oldest);
                }
            }
        }
        let local_only = has_store && shared.is_none();
        let (store, counts) = match shared {
            Some((store, counts)) => (Some(store), counts),
            None => (None, run.window.sum().counts(&run.rule)),
        };
        for (group, count) in run.incidents.candidates(&counts, now_ms) {
            let mine = match store {
                Some(store) => store.claim(&run.rule, &group, keep).await.unwrap_or_else(|e| {
                    metrics::counter!(STORE_ERRORS).increment(1);
                    tracing::warn!(error = %e, rule = %run.rule.name, "alerts: cannot claim the incident in Redis; sending it from here");
                    true
                }),
                None => true,
            };
            if mine {
                run.incidents.fired(&group, now_ms);
                let since = now_ms.saturating_sub(u64::try_from(run.rule.window.as_millis()).unwrap_or(0));
                let mut alert = message(&run.rule, instance, Status::Firing, &group, count, &counts, (since, now_ms));
                alert.local_only = local_only;
                send(outbox, alert);
            }
        }
        for (group, incident) in run.incidents.resolved(&run.rule, now_ms) {
            if let Some(store) = store
                && let Err(e) = store.release(&run.rule, &group).await
            {
                metrics::counter!(STORE_ERRORS).increment(1);
                tracing::warn!(error = %e, rule = %run.rule.name, "alerts: cannot release the incident in Redis; it expires by itself");
            }
            let count = current(&run.rule, &group, &counts);
            let mut alert =
                message(&run.rule, instance, Status::Resolved, &group, count, &counts, (incident.fired_ms, now_ms));
            alert.local_only = local_only;
            send(outbox, alert);
        }
    }
}

/// The group's count now, as far as `counts` tells (0 once it has left the
/// top lists).
fn current(rule: &AlertRule, group: &str, counts: &Counts) -> u64 {
    let find = |list: &[(String, u64)]| list.iter().find(|(g, _)| g == group).map_or(0, |(_, n)| *n);
    match (rule.kind, rule.group_by) {
        (RuleKind::Count, GroupBy::None) => counts.total,
        (RuleKind::DistinctDefences, _) => find(&counts.groups),
        (RuleKind::Count, GroupBy::Client) => find(&counts.groups).max(find(&counts.top_clients)),
        (RuleKind::Count, GroupBy::Route) => find(&counts.groups).max(find(&counts.top_routes)),
    }
}

/// The alert for `group` of `rule`.
fn message(
    rule: &AlertRule,
    instance: &str,
    status: Status,
    group: &str,
    count: u64,
    counts: &Counts,
    (since, until): (u64, u64),
) -> Alert {
    let what = match rule.kind {
        RuleKind::Count => "matching events",
        RuleKind::DistinctDefences => "different defences",
    };
    let window = humantime::format_duration(rule.window);
    let about = match rule.group_by {
        GroupBy::None => String::new(),
        GroupBy::Client => format!(" from client {group}"),
        GroupBy::Route => format!(" on route {group}"),
    };
    let top = counts.top_clients.iter().take(3).map(|(c, n)| format!("{c} ({n})")).collect::<Vec<_>>().join(", ");
    let summary = match status {
        Status::Firing => {
            let mut text = format!(
                "[{instance}] alert {name} firing: {count} {what}{about} in the last {window} (threshold {threshold})",
                name = rule.name,
                threshold = rule.threshold
            );
            if !top.is_empty() {
                text.push_str(&format!("; top clients: {top}"));
            }
            text
        }
        Status::Resolved => format!(
            "[{instance}] alert {name} resolved: {what}{about} below {threshold} per {window} since {}",
            humantime::format_rfc3339_seconds(at(
                until.saturating_sub(u64::try_from(rule.window.as_millis()).unwrap_or(0))
            )),
            name = rule.name,
            threshold = rule.threshold,
        ),
    };
    Alert {
        alert: rule.name.clone(),
        status,
        text: summary.clone(),
        summary,
        kind: match rule.kind {
            RuleKind::Count => "count",
            RuleKind::DistinctDefences => "distinct_defences",
        },
        group_by: rule.group_by.as_str(),
        group: (rule.group_by != GroupBy::None || rule.kind == RuleKind::DistinctDefences).then(|| group.to_owned()),
        count,
        threshold: rule.threshold,
        window_seconds: rule.window.as_secs_f64(),
        since: at(since),
        until: at(until),
        total: counts.total,
        top_clients: counts.top_clients.iter().map(|(c, n)| ClientCount { client_ip: c.clone(), count: *n }).collect(),
        top_routes: counts.top_routes.iter().map(|(r, n)| RouteCount { route: r.clone(), count: *n }).collect(),
        reasons: counts.reasons.iter().map(|(r, n)| (r.clone(), serde_json::Value::from(*n))).collect(),
        instance: instance.to_owned(),
        local_only: false,
    }
}

/// Logs, counts and queues `alert`.
fn send(outbox: &Outbox, alert: Alert) {
    match alert.status {
        Status::Firing => {
            tracing::warn!(target: "portcullis::alerts", alert = %alert.alert, status = "firing", count = alert.count, threshold = alert.threshold, "{}", alert.summary)
        }
        Status::Resolved => {
            tracing::info!(target: "portcullis::alerts", alert = %alert.alert, status = "resolved", "{}", alert.summary)
        }
    }
    metrics::counter!(ALERTS_TOTAL, "rule" => alert.alert.clone(), "status" => alert.status.label()).increment(1);
    outbox.send(alert);
}
