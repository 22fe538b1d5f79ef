//! The admin listener's memory of recent security events: the last
//! [`CAPACITY`] events for `GET /events` (paged, filtered), a live feed for
//! the dashboard's event stream (server-sent events), and per-minute counts
//! over the last hour for its charts (requests, denials by defence, the
//! clients denied most), closed every [`TICK`] even without events.
//!
//! Defends the data path from its observers: `emit` takes one short lock and
//! never waits on a reader; a slow or stalled stream reader misses events
//! (it is told how many) instead of holding anything. Memory is bounded: the
//! ring holds [`CAPACITY`] events, each minute counts at most
//! [`CLIENTS_PER_MINUTE`] distinct clients (the rest are summed as `other`),
//! and minutes older than an hour are dropped.
//!
//! Deployment caveat: this is per process and starts empty; the event sinks
//! (`[events]`) are the record, this is the operator's live view.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_layers::EventSink;
use portcullis_policy::{Action, SecurityEvent};
use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for `GET /events`.
pub const CAPACITY: usize = 10_000;
/// Distinct clients counted per minute for "top clients".
pub const CLIENTS_PER_MINUTE: usize = 1_000;
/// Minutes kept for the charts.
pub const MINUTES: u64 = 60;
/// How often the per-minute counts are rolled forward without events.
pub const TICK: Duration = Duration::from_secs(10);
/// Largest page of `GET /events`.
pub const MAX_PAGE: usize = 500;

/// One remembered event with its sequence number (the SSE id and the paging cursor).
#[derive(Debug, Clone)]
pub struct Numbered {
    /// Increases by one per event, from 1.
    pub id: u64,
    /// The event.
    pub event: Arc<SecurityEvent>,
}

#[derive(Debug, Default)]
struct Minute {
    /// Unix minute.
    at: u64,
    /// Events with action `deny` or `ban`, by defence.
    denials: HashMap<&'static str, u64>,
    /// Denials by client, at most [`CLIENTS_PER_MINUTE`] clients.
    clients: HashMap<IpAddr, u64>,
    /// Denials of clients beyond the cap.
    other_clients: u64,
    /// Requests answered, from the process's request counter.
    requests: u64,
}

#[derive(Debug, Default)]
struct Inner {
    ring: VecDeque<Numbered>,
    next: u64,
    minutes: VecDeque<Minute>,
    /// The request counter at the start of the current minute.
    requests_mark: Option<u64>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Recent {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Numbered>,
    /// Reads the process's count of answered requests.
    requests: fn() -> u64,
}

/// What `GET /events` selects.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Reason code, exact (`waf.sqli`) or a defence prefix (`waf`).
    pub reason: Option<String>,
    /// The client address.
    pub client: Option<String>,
    /// The route name.
    pub route: Option<String>,
    /// Only events with a smaller id (the next page).
    pub before: Option<u64>,
    /// Page size (default 100, at most [`MAX_PAGE`]).
    pub limit: Option<usize>,
}

impl Filter {
    /// Whether `event` is selected (paging aside).
    #[must_use]
    pub fn matches(&self, event: &SecurityEvent) -> bool {
        let reason = self.reason.as_deref().is_none_or(|r| {
            r.is_empty()
                || event.reason == r
                || (event.defence == r)
                || event.reason.strip_prefix(r).is_some_and(|rest| rest.starts_with('.'))
        });
        let client = self
            .client
            .as_deref()
            .is_none_or(|c| c.is_empty() || c.parse::<IpAddr>().is_ok_and(|ip| ip == event.client_ip));
        let route = self.route.as_deref().is_none_or(|r| r.is_empty() || event.route.as_deref() == Some(r));
        reason && client && route
    }
}

/// One minute of the charts.
#[derive(Debug, Serialize)]
pub struct MinuteStats {
    /// Start of the minute (Unix seconds).
    pub at: u64,
    /// Requests answered in it.
    pub requests: u64,
    /// Denials by defence.
    pub denials: HashMap<&'static str, u64>,
}

/// A client and its denials over the last hour.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TopClient {
    /// The address.
    pub client_ip: String,
    /// Denials in the last hour.
    pub denials: u64,
}

/// The charts' data.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// The last hour, oldest first, one entry per minute with activity.
    pub minutes: Vec<MinuteStats>,
    /// The clients denied most in the last hour, most first (at most 10).
    pub top_clients: Vec<TopClient>,
    /// Denials of clients not counted one by one (beyond the per-minute cap).
    pub other_clients: u64,
}

fn unix_minute(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() / 60
}

impl Recent {
    /// An empty memory; `requests` reads the process's count of answered
    /// requests (sampled once per minute for the charts).
    #[must_use]
    pub fn new(requests: fn() -> u64) -> Arc<Self> {
        let (live, _) = broadcast::channel(1024);
        Arc::new(Self { inner: Mutex::new(Inner::default()), live, requests })
    }

    /// A live feed of events from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Numbered> {
        self.live.subscribe()
    }

    /// The remembered events with an id above `after`, oldest first (a
    /// reconnecting stream's `Last-Event-ID`).
    #[must_use]
    pub fn since(&self, after: u64, filter: &Filter) -> Vec<Numbered> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.ring.iter().filter(|n| n.id > after && filter.matches(&n.event)).cloned().collect()
    }

    /// A page of events, newest first, and the cursor of the next page.
    #[must_use]
    pub fn page(&self, filter: &Filter) -> (Vec<Numbered>, Option<u64>) {
        let limit = filter.limit.unwrap_or(100).clamp(1, MAX_PAGE);
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut page = Vec::with_capacity(limit.min(inner.ring.len()));
        let mut more = false;
        for n in inner.ring.iter().rev() {
            if filter.before.is_some_and(|b| n.id >= b) || !filter.matches(&n.event) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(n.clone());
        }
        let next = if more { page.last().map(|n| n.id) } else { None };
        (page, next)
    }

    /// Rolls the per-minute counts forward to `now`'s minute.
    fn roll(&self, inner: &mut Inner, minute: u64) {
        if inner.minutes.back().is_some_and(|m| m.at >= minute) {
            return;
        }
        let count = (self.requests)();
        let mark = inner.requests_mark.replace(count).unwrap_or(count);
        if let Some(last) = inner.minutes.back_mut() {
            last.requests = count.saturating_sub(mark);
        }
        inner.minutes.push_back(Minute { at: minute, ..Minute::default() });
        while inner.minutes.front().is_some_and(|m| m.at + MINUTES <= minute) {
            inner.minutes.pop_front();
        }
    }

    /// Closes the minutes before `now`'s: called every [`TICK`] so a quiet
    /// minute's requests are not counted into the next busy one.
    pub fn tick(&self, now: SystemTime) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        self.roll(&mut inner, unix_minute(now));
    }

    /// The charts' data for the hour before `now`.
    #[must_use]
    pub fn stats(&self, now: SystemTime) -> Stats {
        let minute = unix_minute(now);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        self.roll(&mut inner, minute);
        let current = (self.requests)().saturating_sub(inner.requests_mark.unwrap_or(0));
        let mut clients: HashMap<IpAddr, u64> = HashMap::new();
        let mut other_clients = 0;
        let minutes = inner
            .minutes
            .iter()
            .filter(|m| m.at + MINUTES > minute)
            .map(|m| {
                for (ip, n) in &m.clients {
                    *clients.entry(*ip).or_default() += n;
                }
                other_clients += m.other_clients;
                MinuteStats {
                    at: m.at * 60,
                    requests: if m.at == minute { current } else { m.requests },
                    denials: m.denials.clone(),
                }
            })
            .collect();
        let mut top: Vec<(IpAddr, u64)> = clients.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(10);
        Stats {
            minutes,
            top_clients: top
                .into_iter()
                .map(|(ip, denials)| TopClient { client_ip: ip.to_string(), denials })
                .collect(),
            other_clients,
        }
    }
}

impl EventSink for Recent {
    fn emit(&self, event: SecurityEvent) {
        let event = Arc::new(event);
        let numbered = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let minute = unix_minute(event.time);
            self.roll(&mut inner, minute);
            if matches!(event.action, Action::Deny | Action::Ban)
                && let Some(current) = inner.minutes.back_mut()
            {
                *current.denials.entry(event.defence).or_default() += 1;
                if let Some(n) = current.clients.get_mut(&event.client_ip) {
                    *n += 1;
                } else if current.clients.len() < CLIENTS_PER_MINUTE {
                    current.clients.insert(event.client_ip, 1);
                } else {
                    current.other_clients += 1;
                }
            }
            inner.next += 1;
            let numbered = Numbered { id: inner.next, event };
            if inner.ring.len() == CAPACITY {
                inner.ring.pop_front();
            }
            inner.ring.push_back(numbered.clone());
            numbered
        };
        // No receiver is fine: nobody is watching.
        let _ = self.live.send(numbered);
    }
}

/// Passes every event to the sinks, then remembers it.
#[derive(Debug)]
pub struct Remembered {
    /// The configured sinks.
    pub inner: Arc<dyn EventSink>,
    /// The memory.
    pub recent: Arc<Recent>,
}

impl EventSink for Remembered {
    fn emit(&self, event: SecurityEvent) {
        self.recent.emit(event.clone());
        self.inner.emit(event);
    }
}

/// The JSON of a remembered event: the event's own fields and its `id`.
#[must_use]
pub fn event_json(numbered: &Numbered) -> serde_json::Value {
    let mut value = serde_json::to_value(&*numbered.event).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("id".into(), numbered.id.into());
    }
    value
}

#[cfg(test)]
mod tests {
    use portcullis_policy::event::RequestSummary;
    use portcullis_policy::{Denied, Reason};

    use super::*;

    fn event(ip: &str, reason: Reason, route: Option<&str>, at: u64) -> SecurityEvent {
        let summary = RequestSummary {
            request_id: "r",
            client_ip: ip.parse().unwrap(),
            listener: "public",
            method: "GET",
            path: "/x",
            route,
        };
        SecurityEvent::denied(&summary, &Denied::new(reason), UNIX_EPOCH + Duration::from_secs(at))
    }

    fn no_requests() -> u64 {
        0
    }

    #[test]
    fn pages_run_newest_first_and_filters_select() {
        let recent = Recent::new(no_requests);
        for i in 0..250u64 {
            let reason = if i % 2 == 0 { Reason::WafSqli } else { Reason::RouteNone };
            recent.emit(event(&format!("203.0.113.{}", i % 5), reason, Some("api"), 1_000 + i));
        }
        let (first, next) = recent.page(&Filter { limit: Some(100), ..Filter::default() });
        assert_eq!(first.len(), 100);
        assert_eq!(first[0].id, 250);
        assert_eq!(next, Some(151));
        let (second, _) = recent.page(&Filter { limit: Some(100), before: next, ..Filter::default() });
        assert_eq!(second[0].id, 150);
        let waf = Filter { reason: Some("waf".into()), limit: Some(500), ..Filter::default() };
        let (only_waf, none_left) = recent.page(&waf);
        assert_eq!(only_waf.len(), 125);
        assert!(only_waf.iter().all(|n| n.event.defence == "waf"));
        assert_eq!(none_left, None);
        let one = Filter { client: Some("203.0.113.3".into()), reason: Some("route.none".into()), ..Filter::default() };
        assert!(recent.page(&one).0.iter().all(|n| n.event.client_ip.to_string() == "203.0.113.3"));
        assert!(recent.page(&Filter { route: Some("other".into()), ..Filter::default() }).0.is_empty());
        // Prefixes stop at a dot: `wa` is not `waf`.
        assert!(recent.page(&Filter { reason: Some("wa".into()), ..Filter::default() }).0.is_empty());
    }

    #[test]
    fn the_ring_is_bounded_and_ids_keep_counting() {
        let recent = Recent::new(no_requests);
        for i in 0..(CAPACITY as u64 + 10) {
            recent.emit(event("192.0.2.1", Reason::RouteNone, None, i));
        }
        let all = recent.since(0, &Filter::default());
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].id, 11);
        assert_eq!(recent.since(CAPACITY as u64 + 5, &Filter::default()).len(), 5);
    }

    #[test]
    fn stats_count_denials_by_defence_and_client_over_the_last_hour() {
        let recent = Recent::new(no_requests);
        let hour_ago = 100_000 * 60;
        recent.emit(event("192.0.2.9", Reason::WafSqli, None, hour_ago));
        let now = hour_ago + 3_600 + 30;
        for _ in 0..3 {
            recent.emit(event("192.0.2.1", Reason::WafSqli, None, now - 120));
        }
        recent.emit(event("192.0.2.2", Reason::RouteNone, None, now));
        let stats = recent.stats(UNIX_EPOCH + Duration::from_secs(now));
        let total: u64 = stats.minutes.iter().flat_map(|m| m.denials.values()).sum();
        assert_eq!(total, 4, "the event an hour old is gone: {stats:?}");
        assert_eq!(
            stats.top_clients,
            vec![
                TopClient { client_ip: "192.0.2.1".into(), denials: 3 },
                TopClient { client_ip: "192.0.2.2".into(), denials: 1 }
            ]
        );
    }

    static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    fn counted() -> u64 {
        REQUESTS.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn requests_are_counted_in_the_minute_they_were_answered() {
        use std::sync::atomic::Ordering::Relaxed;
        let recent = Recent::new(counted);
        let at = |minute: u64, second: u64| UNIX_EPOCH + Duration::from_secs(minute * 60 + second);
        recent.tick(at(500, 0));
        REQUESTS.fetch_add(7, Relaxed);
        recent.tick(at(501, 5));
        REQUESTS.fetch_add(3, Relaxed);
        recent.tick(at(502, 5));
        let stats = recent.stats(at(502, 30));
        let by_minute: Vec<(u64, u64)> = stats.minutes.iter().map(|m| (m.at / 60, m.requests)).collect();
        assert_eq!(by_minute, vec![(500, 7), (501, 3), (502, 0)]);
    }

    #[test]
    fn clients_beyond_the_cap_are_summed() {
        let recent = Recent::new(no_requests);
        for i in 0..(CLIENTS_PER_MINUTE as u32 + 50) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            recent.emit(event(&ip.to_string(), Reason::RouteNone, None, 6_000));
        }
        let stats = recent.stats(UNIX_EPOCH + Duration::from_secs(6_010));
        assert_eq!(stats.other_clients, 50);
        assert_eq!(stats.top_clients.len(), 10);
    }
}
