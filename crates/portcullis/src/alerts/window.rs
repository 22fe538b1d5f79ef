//! Sliding-window counts of one rule's events, and the incident state that
//! turns counts into "fired" and "resolved" — both pure: time is a
//! millisecond argument, so the tests drive a fake clock.
//!
//! Decision rules:
//! - A window is [`BUCKETS`] buckets of `window / 30` each (at least 1 ms);
//!   the count covers the current bucket and the 29 before it, so the window
//!   slides in steps of a thirtieth and is exact to within one step.
//! - Per bucket and summed over the window: the events, and per client,
//!   route, reason and (for `distinct_defences`) client × defence. Each map
//!   holds at most [`MAX_KEYS`] keys; beyond that, events still count in the
//!   total but not per key (a flood from a million addresses cannot grow
//!   memory without bound).
//! - An incident (per rule and group) fires when its count reaches the
//!   threshold and no incident of that group is open. It stays open while
//!   the count is at or above the threshold, and resolves once the count has
//!   stayed below it for a whole window and the cool-down since the firing
//!   has passed: at most one firing and one resolved message per group per
//!   cool-down, however the attack flaps. At most [`MAX_OPEN`] incidents per
//!   rule are open at once (a per-client rule under a distributed attack
//!   sends ten alerts, not ten thousand).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::alerts::{AlertRule, GroupBy, RuleKind};

/// Buckets per window.
pub const BUCKETS: u64 = 30;
/// Keys per map (clients, routes, reasons, client × defence).
pub const MAX_KEYS: usize = 100_000;
/// Incidents open at once per rule.
pub const MAX_OPEN: usize = 10;
/// Entries in the alert's top lists.
pub const TOP: usize = 10;

/// The compact copy of a matching event the evaluator receives.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which rules it matched (bit i: rule i).
    pub rules: u64,
    /// The client address.
    pub client: IpAddr,
    /// The route, if one matched.
    pub route: Option<Arc<str>>,
    /// The defence that decided.
    pub defence: &'static str,
    /// The reason code.
    pub reason: &'static str,
}

/// The width of one bucket of `window`, in milliseconds.
#[must_use]
pub fn bucket_ms(window: Duration) -> u64 {
    (u64::try_from(window.as_millis()).unwrap_or(u64::MAX) / BUCKETS).max(1)
}

/// Counts of some events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Every event.
    pub total: u64,
    /// Per client address.
    pub clients: HashMap<IpAddr, u64>,
    /// Per route.
    pub routes: HashMap<Arc<str>, u64>,
    /// Per reason code.
    pub reasons: HashMap<&'static str, u64>,
    /// Per client × defence (`distinct_defences` rules only).
    pub pairs: HashMap<(IpAddr, &'static str), u64>,
}

fn bump<K: Hash + Eq>(map: &mut HashMap<K, u64>, key: K, n: u64) {
    if let Some(count) = map.get_mut(&key) {
        *count += n;
    } else if map.len() < MAX_KEYS {
        map.insert(key, n);
    }
}

fn lower<K: Hash + Eq + Clone>(map: &mut HashMap<K, u64>, other: &HashMap<K, u64>) {
    for (key, n) in other {
        if let Some(count) = map.get_mut(key) {
            *count = count.saturating_sub(*n);
            if *count == 0 {
                map.remove(key);
            }
        }
    }
}

impl Tally {
    /// Counts one event (`pairs`: also per client × defence).
    pub fn add(&mut self, seen: &Seen, pairs: bool) {
        self.total += 1;
        bump(&mut self.clients, seen.client, 1);
        if let Some(route) = &seen.route {
            bump(&mut self.routes, route.clone(), 1);
        }
        bump(&mut self.reasons, seen.reason, 1);
        if pairs {
            bump(&mut self.pairs, (seen.client, seen.defence), 1);
        }
    }

    /// Removes `other`'s counts (a bucket leaving the window).
    fn subtract(&mut self, other: &Self) {
        self.total = self.total.saturating_sub(other.total);
        lower(&mut self.clients, &other.clients);
        lower(&mut self.routes, &other.routes);
        lower(&mut self.reasons, &other.reasons);
        lower(&mut self.pairs, &other.pairs);
    }

    /// The different defences per client.
    #[must_use]
    pub fn distinct_defences(&self) -> HashMap<IpAddr, u64> {
        let mut out = HashMap::new();
        for (client, _) in self.pairs.keys() {
            *out.entry(*client).or_insert(0) += 1;
        }
        out
    }

    /// The window's counts as the evaluator reads them, for `rule`.
    #[must_use]
    pub fn counts(&self, rule: &AlertRule) -> Counts {
        let groups = match (rule.kind, rule.group_by) {
            (RuleKind::DistinctDefences, _) => at_least(&self.distinct_defences(), rule.threshold),
            (RuleKind::Count, GroupBy::None) => {
                if self.total >= rule.threshold {
                    vec![(String::new(), self.total)]
                } else {
                    Vec::new()
                }
            }
            (RuleKind::Count, GroupBy::Client) => at_least(&self.clients, rule.threshold),
            (RuleKind::Count, GroupBy::Route) => at_least(&self.routes, rule.threshold),
        };
        Counts {
            total: self.total,
            groups,
            top_clients: top(&self.clients, TOP),
            top_routes: top(&self.routes, TOP),
            reasons: top(&self.reasons, usize::MAX),
        }
    }
}

/// The keys whose count is at least `threshold`, largest first.
fn at_least<K: ToString>(map: &HashMap<K, u64>, threshold: u64) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> =
        map.iter().filter(|(_, n)| **n >= threshold).map(|(k, n)| (k.to_string(), *n)).collect();
    sort(&mut out);
    out
}

/// The `k` largest, largest first (ties by key, so the order is stable).
fn top<K: ToString>(map: &HashMap<K, u64>, k: usize) -> Vec<(String, u64)> {
    let mut all: Vec<(&K, u64)> = map.iter().map(|(key, n)| (key, *n)).collect();
    if all.len() > k {
        all.select_nth_unstable_by(k, |a, b| b.1.cmp(&a.1));
        all.truncate(k);
    }
    let mut out: Vec<(String, u64)> = all.into_iter().map(|(key, n)| (key.to_string(), n)).collect();
    sort(&mut out);
    out
}

fn sort(list: &mut [(String, u64)]) {
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
}

/// What one evaluation sees of a rule's window (in memory or from Redis).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Matching events in the window.
    pub total: u64,
    /// The groups at or above the threshold, with their counts, largest first.
    pub groups: Vec<(String, u64)>,
    /// The clients with the most matching events.
    pub top_clients: Vec<(String, u64)>,
    /// The routes with the most matching events.
    pub top_routes: Vec<(String, u64)>,
    /// Matching events per reason code.
    pub reasons: Vec<(String, u64)>,
}

/// One rule's window in memory.
#[derive(Debug)]
pub struct Window {
    bucket_ms: u64,
    pairs: bool,
    buckets: VecDeque<(u64, Tally)>,
    sum: Tally,
}

impl Window {
    /// An empty window for `rule`.
    #[must_use]
    pub fn new(rule: &AlertRule) -> Self {
        Self {
            bucket_ms: bucket_ms(rule.window),
            pairs: rule.kind == RuleKind::DistinctDefences,
            buckets: VecDeque::new(),
            sum: Tally::default(),
        }
    }

    /// The bucket index of `now_ms`.
    #[must_use]
    pub const fn index(&self, now_ms: u64) -> u64 {
        now_ms / self.bucket_ms
    }

    /// Counts `seen` at `now_ms`.
    pub fn add(&mut self, seen: &Seen, now_ms: u64) {
        self.advance(now_ms);
        // A wall clock stepping back counts into the newest bucket.
        let index = self.index(now_ms).max(self.buckets.back().map_or(0, |(i, _)| *i));
        if self.buckets.back().is_none_or(|(i, _)| *i != index) {
            self.buckets.push_back((index, Tally::default()));
        }
        if let Some((_, bucket)) = self.buckets.back_mut() {
            bucket.add(seen, self.pairs);
        }
        self.sum.add(seen, self.pairs);
    }

    /// Drops the buckets that have left the window at `now_ms`.
    pub fn advance(&mut self, now_ms: u64) {
        let oldest = self.index(now_ms).saturating_sub(BUCKETS - 1);
        while let Some((index, bucket)) = self.buckets.front() {
            if *index >= oldest {
                break;
            }
            self.sum.subtract(bucket);
            self.buckets.pop_front();
        }
        if self.buckets.is_empty() {
            self.sum = Tally::default();
        }
    }

    /// The counts of the window.
    #[must_use]
    pub const fn sum(&self) -> &Tally {
        &self.sum
    }
}

/// One open incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incident {
    /// When it fired.
    pub fired_ms: u64,
    /// The last evaluation that saw the group at or above the threshold.
    pub last_above_ms: u64,
}

/// The open incidents of one rule. See the module docs.
#[derive(Debug, Default)]
pub struct Incidents {
    open: HashMap<String, Incident>,
}

impl Incidents {
    /// The groups above the threshold with no open incident: candidates to
    /// fire, at most as many as [`MAX_OPEN`] leaves room for.
    #[must_use]
    pub fn candidates(&mut self, counts: &Counts, now_ms: u64) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (group, count) in &counts.groups {
            if let Some(incident) = self.open.get_mut(group) {
                incident.last_above_ms = now_ms;
            } else if self.open.len() + out.len() < MAX_OPEN {
                out.push((group.clone(), *count));
            }
        }
        out
    }

    /// Records that `group` fired at `now_ms`.
    pub fn fired(&mut self, group: &str, now_ms: u64) {
        self.open.insert(group.to_owned(), Incident { fired_ms: now_ms, last_above_ms: now_ms });
    }

    /// Closes and returns the incidents that resolve at `now_ms` (call after
    /// [`Incidents::candidates`] with the same counts).
    pub fn resolved(&mut self, rule: &AlertRule, now_ms: u64) -> Vec<(String, Incident)> {
        let window = u64::try_from(rule.window.as_millis()).unwrap_or(u64::MAX);
        let cooldown = u64::try_from(rule.cooldown.as_millis()).unwrap_or(u64::MAX);
        let done: Vec<String> = self
            .open
            .iter()
            .filter(|(_, i)| {
                now_ms >= i.fired_ms.saturating_add(cooldown) && now_ms >= i.last_above_ms.saturating_add(window)
            })
            .map(|(g, _)| g.clone())
            .collect();
        done.into_iter().filter_map(|g| self.open.remove(&g).map(|i| (g, i))).collect()
    }

    /// The groups with an open incident.
    pub fn open(&self) -> impl Iterator<Item = (&String, &Incident)> {
        self.open.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::alerts::EventMatch;

    fn rule(kind: RuleKind, group_by: GroupBy, threshold: u64) -> AlertRule {
        AlertRule {
            name: "r".into(),
            kind,
            matcher: EventMatch::default(),
            threshold,
            window: Duration::from_secs(3),
            cooldown: Duration::from_secs(10),
            group_by,
        }
    }

    fn seen(client: &str, defence: &'static str) -> Seen {
        Seen {
            rules: 1,
            client: client.parse().unwrap(),
            route: Some(Arc::from("login")),
            defence,
            reason: if defence == "login" { "login.failed" } else { "waf.sqli" },
        }
    }

    #[test]
    fn the_window_slides_by_thirtieths() {
        let r = rule(RuleKind::Count, GroupBy::None, 5);
        let mut w = Window::new(&r);
        assert_eq!(bucket_ms(r.window), 100);
        for t in [0, 10, 950, 1_000, 2_999] {
            w.add(&seen("192.0.2.1", "login"), t);
        }
        assert_eq!(w.sum().total, 5);
        assert_eq!(w.sum().counts(&r).groups, vec![(String::new(), 5)]);
        // At 3 000 ms the bucket [0, 100) has left: the events at 0 and 10 ms.
        w.advance(3_000);
        assert_eq!(w.sum().total, 3);
        assert!(w.sum().counts(&r).groups.is_empty());
        w.advance(3_099);
        assert_eq!(w.sum().total, 3);
        w.advance(4_000);
        assert_eq!((w.sum().total, w.sum().clients.len()), (1, 1));
        w.advance(60_000);
        assert_eq!(w.sum(), &Tally::default());
    }

    #[test]
    fn groups_top_lists_and_distinct_defences() {
        let per_client = rule(RuleKind::Count, GroupBy::Client, 3);
        let mut w = Window::new(&per_client);
        for (client, n) in [("192.0.2.1", 4), ("192.0.2.2", 3), ("192.0.2.3", 1)] {
            for _ in 0..n {
                w.add(&seen(client, "login"), 500);
            }
        }
        let counts = w.sum().counts(&per_client);
        assert_eq!(counts.groups, vec![("192.0.2.1".into(), 4), ("192.0.2.2".into(), 3)]);
        assert_eq!(counts.top_clients[0], ("192.0.2.1".into(), 4));
        assert_eq!(counts.top_routes, vec![("login".into(), 8)]);
        assert_eq!(counts.reasons, vec![("login.failed".into(), 8)]);

        let prober = rule(RuleKind::DistinctDefences, GroupBy::Client, 3);
        let mut w = Window::new(&prober);
        for defence in ["login", "waf", "jwt", "waf", "waf"] {
            w.add(&seen("192.0.2.9", defence), 0);
        }
        for _ in 0..10 {
            w.add(&seen("192.0.2.8", "waf"), 0);
        }
        assert_eq!(w.sum().counts(&prober).groups, vec![("192.0.2.9".into(), 3)]);
    }

    #[test]
    fn one_incident_one_alert_then_resolved_after_cooldown_and_a_quiet_window() {
        let r = rule(RuleKind::Count, GroupBy::None, 2);
        let above = Counts { total: 5, groups: vec![(String::new(), 5)], ..Counts::default() };
        let below = Counts::default();
        let mut inc = Incidents::default();
        assert_eq!(inc.candidates(&above, 0), vec![(String::new(), 5)]);
        inc.fired("", 0);
        // Still above, and flapping within the cool-down: nothing new.
        for (t, counts) in [(1_000, &above), (2_000, &below), (6_000, &below), (7_000, &above), (8_000, &below)] {
            assert!(inc.candidates(counts, t).is_empty(), "{t}");
            assert!(inc.resolved(&r, t).is_empty(), "{t}");
        }
        // Cool-down over (10 s) but above 3 s ago was 7 s: resolves at 10 s.
        assert!(inc.candidates(&below, 9_999).is_empty());
        assert!(inc.resolved(&r, 9_999).is_empty());
        let done = inc.resolved(&r, 10_000);
        assert_eq!(done, vec![(String::new(), Incident { fired_ms: 0, last_above_ms: 7_000 })]);
        // A new burst fires again.
        assert_eq!(inc.candidates(&above, 10_050).len(), 1);
    }

    #[test]
    fn open_incidents_are_capped_per_rule() {
        let groups: Vec<(String, u64)> = (0..50).map(|i| (format!("192.0.2.{i}"), 9)).collect();
        let counts = Counts { groups, ..Counts::default() };
        let mut inc = Incidents::default();
        let first = inc.candidates(&counts, 0);
        assert_eq!(first.len(), MAX_OPEN);
        for (g, _) in &first {
            inc.fired(g, 0);
        }
        assert!(inc.candidates(&counts, 1).is_empty());
    }
}
