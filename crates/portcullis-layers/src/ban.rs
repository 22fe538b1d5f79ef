//! Automatic and manual bans on live traffic (rules in
//! `portcullis_policy::ban`): the ban list every accept and request consults,
//! the [`Banner`] that turns counted refusals into bans, and the
//! [`BansLayer`] that does both per request, just inside the reject layer.
//!
//! Decision rules:
//! - The listener refuses a banned client's connections at accept, before
//!   TLS; a banned client behind a trusted proxy (or one whose keep-alive
//!   connection predates the ban) is refused per request with 403
//!   `ban.active`, `Retry-After` and `Connection: close`.
//! - Looking a client up never waits on IO: each instance consults its own
//!   copy of the list (a shared store keeps the copies in step in the
//!   background).
//! - A banned client floods no one's logs: at most one `ban.active` event per
//!   address every [`EVENT_INTERVAL_MS`] (the access log still has every
//!   request).
//! - Every client-caused refusal of a request (error, redirect to login, or
//!   note) counts toward the rules that name its reason; the first ban issued
//!   ends the counting for that request, and its answer gets
//!   `Connection: close` so the client's next request meets the listener.
//! - Counting a refusal toward a rule uses the rate-limit store (shared by
//!   the fleet with Redis); while that store is unavailable each instance
//!   counts in its own memory instead, so an outage neither stops bans nor
//!   stops the gateway.
//!
//! Deployment caveat: trusted proxies are never banned — their clients are.

use futures_util::future::Either;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use portcullis_policy::ban::BanRule;
use portcullis_policy::clock::{Clock, SystemClock};
use portcullis_policy::forwarded::{TrustedProxies, client_group};
use portcullis_policy::{Attribution, Denied, Reason};
use tower::{Layer, Service};

use crate::refusal::{IssuedBan, MoreNoted, Noted, Quiet, Redirected, deny};
use crate::store::{LimitStore, MemoryStore, StoreUnavailable, ip_key, unix_nanos};
use crate::{Body, RequestContext, call_boxed};

/// At most one `ban.active` event per banned address per this many
/// milliseconds.
pub const EVENT_INTERVAL_MS: u64 = 10_000;

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The banned address group (IPv4 address or IPv6 /64).
    pub target: IpAddr,
    /// The rule that banned it (`manual` for `portcullis ban add`).
    pub rule: String,
    /// When it started, Unix milliseconds.
    pub since_ms: u64,
    /// When it ends, Unix milliseconds.
    pub until_ms: u64,
}

impl Ban {
    /// A ban of `ip`'s group by `rule`, from `now_ms` for `duration`.
    #[must_use]
    pub fn new(ip: IpAddr, rule: impl Into<String>, now_ms: u64, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self { target: client_group(ip), rule: rule.into(), since_ms: now_ms, until_ms: now_ms.saturating_add(millis) }
    }

    /// The target as written in lists and store keys (`10.0.0.1`,
    /// `2001:db8:1:2::/64`).
    #[must_use]
    pub fn target_text(&self) -> String {
        ip_key(self.target)
    }
}

/// A lookup that found a ban in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanHit {
    /// When the ban ends, Unix milliseconds.
    pub until_ms: u64,
    /// Whether this refusal should be an event (rate-limited per address).
    pub log: bool,
}

/// The ban list: a local view for lookups, plus changes that reach every
/// instance sharing the store.
pub trait BanStore: Send + Sync + fmt::Debug {
    /// The ban in force on `ip`'s group at `now_ms`, from this instance's
    /// view. Never does IO: it runs at every accept and request.
    fn banned(&self, ip: IpAddr, now_ms: u64) -> Option<BanHit>;
    /// Adds (or extends) a ban.
    fn add(&self, ban: Ban) -> BoxFuture<'_, Result<(), StoreUnavailable>>;
    /// Lifts the ban on `ip`'s group; `Ok(false)` when there was none.
    fn lift(&self, ip: IpAddr) -> BoxFuture<'_, Result<bool, StoreUnavailable>>;
    /// The bans in force, soonest-ending last.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Ban>, StoreUnavailable>>;
}

/// Unix milliseconds now, from the system clock (`portcullis_policy::clock`).
#[must_use]
pub fn unix_millis() -> u64 {
    SystemClock.unix_millis()
}

#[derive(Debug)]
struct Entry {
    rule: String,
    since_ms: u64,
    until_ms: u64,
    last_event_ms: AtomicU64,
}

/// Bans in this process's memory: the whole list with `[state] shared =
/// "memory"`, and each instance's view of the shared list with Redis.
#[derive(Debug, Default)]
pub struct LocalBans {
    entries: RwLock<HashMap<IpAddr, Entry>>,
    /// Entries in the map, read without the lock: the usual case, nobody
    /// banned, costs one atomic load.
    len: AtomicUsize,
    /// Size after the last prune of expired entries; the next prune waits
    /// until the map has doubled, so inserts stay amortised O(1).
    pruned_at: AtomicUsize,
}

impl LocalBans {
    /// Adds `ban`, keeping the later end if the group is already banned.
    pub fn insert(&self, ban: &Ban, now_ms: u64) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= 2 * self.pruned_at.load(Ordering::Relaxed).max(512) {
            entries.retain(|_, e| e.until_ms > now_ms);
            self.pruned_at.store(entries.len(), Ordering::Relaxed);
        }
        let entry = entries.entry(ban.target).or_insert_with(|| Entry {
            rule: ban.rule.clone(),
            since_ms: ban.since_ms,
            until_ms: 0,
            last_event_ms: AtomicU64::new(0),
        });
        if ban.until_ms > entry.until_ms {
            entry.until_ms = ban.until_ms;
            entry.rule.clone_from(&ban.rule);
            entry.since_ms = ban.since_ms;
        }
        self.len.store(entries.len(), Ordering::Relaxed);
    }

    /// Removes the ban on `ip`'s group.
    pub fn remove(&self, ip: IpAddr) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let removed = entries.remove(&client_group(ip)).is_some();
        self.len.store(entries.len(), Ordering::Relaxed);
        removed
    }

    /// Replaces the whole view with `bans` (a shared store's current list),
    /// keeping each surviving entry's event throttle.
    pub fn replace(&self, bans: &[Ban]) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::with_capacity(bans.len());
        for ban in bans {
            let last = entries.get(&ban.target).map_or(0, |e| e.last_event_ms.load(Ordering::Relaxed));
            next.insert(
                ban.target,
                Entry {
                    rule: ban.rule.clone(),
                    since_ms: ban.since_ms,
                    until_ms: ban.until_ms,
                    last_event_ms: AtomicU64::new(last),
                },
            );
        }
        *entries = next;
        self.len.store(entries.len(), Ordering::Relaxed);
        self.pruned_at.store(entries.len(), Ordering::Relaxed);
    }

    /// The bans in force at `now_ms`, soonest-ending last.
    #[must_use]
    pub fn snapshot(&self, now_ms: u64) -> Vec<Ban> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Ban> = entries
            .iter()
            .filter(|(_, e)| e.until_ms > now_ms)
            .map(|(ip, e)| Ban { target: *ip, rule: e.rule.clone(), since_ms: e.since_ms, until_ms: e.until_ms })
            .collect();
        out.sort_by(|a, b| b.until_ms.cmp(&a.until_ms).then(a.target.cmp(&b.target)));
        out
    }

    /// The lookup behind [`BanStore::banned`].
    #[must_use]
    pub fn lookup(&self, ip: IpAddr, now_ms: u64) -> Option<BanHit> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(&client_group(ip)).filter(|e| e.until_ms > now_ms)?;
        let last = entry.last_event_ms.load(Ordering::Relaxed);
        let log = now_ms.saturating_sub(last) >= EVENT_INTERVAL_MS
            && entry.last_event_ms.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok();
        Some(BanHit { until_ms: entry.until_ms, log })
    }
}

impl BanStore for LocalBans {
    fn banned(&self, ip: IpAddr, now_ms: u64) -> Option<BanHit> {
        self.lookup(ip, now_ms)
    }

    fn add(&self, ban: Ban) -> BoxFuture<'_, Result<(), StoreUnavailable>> {
        self.insert(&ban, unix_millis());
        Box::pin(async { Ok(()) })
    }

    fn lift(&self, ip: IpAddr) -> BoxFuture<'_, Result<bool, StoreUnavailable>> {
        let removed = self.remove(ip);
        Box::pin(async move { Ok(removed) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Ban>, StoreUnavailable>> {
        let bans = self.snapshot(unix_millis());
        Box::pin(async move { Ok(bans) })
    }
}

/// Turns refusals into bans under the configured rules. See the module docs.
#[derive(Debug)]
pub struct Banner {
    rules: Vec<BanRule>,
    limits: Arc<dyn LimitStore>,
    /// Counts while `limits` is unavailable.
    fallback: MemoryStore,
    bans: Arc<dyn BanStore>,
    trusted: TrustedProxies,
}

impl Banner {
    /// A banner applying `rules`, counting in `limits`, banning into `bans`.
    #[must_use]
    pub fn new(
        rules: Vec<BanRule>,
        limits: Arc<dyn LimitStore>,
        bans: Arc<dyn BanStore>,
        trusted: TrustedProxies,
    ) -> Self {
        Self { rules, limits, fallback: MemoryStore::new(10_000), bans, trusted }
    }

    /// Whether any rule counts `reason` (a cheap test before [`Self::observe`]).
    #[must_use]
    pub fn counts(&self, reason: Reason) -> bool {
        self.rules.iter().any(|r| r.counts(reason))
    }

    /// Counts a refusal for `reason` against `client`; returns the ban it
    /// triggered, with its rule.
    pub async fn observe(&self, client: IpAddr, reason: Reason) -> Option<(Ban, &BanRule)> {
        if self.trusted.contains(client) {
            return None;
        }
        for rule in self.rules.iter().filter(|r| r.counts(reason) && !r.exempts(client)) {
            let reached = match rule.quota {
                None => true,
                Some(quota) => {
                    let key = format!("ban:{}:{}", rule.name, ip_key(client));
                    let now = unix_nanos();
                    let outcome = match self.limits.check(&key, quota, now).await {
                        Ok(outcome) => outcome,
                        Err(e) => {
                            tracing::warn!(rule = %rule.name, error = %e, "counting refusals in this instance only");
                            self.fallback.check_now(&key, quota, now)
                        }
                    };
                    !outcome.allowed()
                }
            };
            if reached {
                let ban = Ban::new(client, rule.name.clone(), unix_millis(), rule.duration);
                if let Err(e) = self.bans.add(ban.clone()).await {
                    // The local view has it already; other instances will not.
                    tracing::warn!(rule = %rule.name, error = %e, "ban not shared");
                }
                return Some((ban, rule));
            }
        }
        None
    }
}

/// See the module docs: refuses banned clients, and counts the refusals of
/// every other request toward the ban rules.
#[derive(Debug, Clone, Default)]
pub struct BansLayer {
    bans: Option<Arc<dyn BanStore>>,
    banner: Option<Arc<Banner>>,
}

impl BansLayer {
    /// Refuses clients on the ban list `bans`, and counts refusals toward
    /// the rules of `banner` (either absent: that half does nothing).
    #[must_use]
    pub fn new(bans: Option<Arc<dyn BanStore>>, banner: Option<Arc<Banner>>) -> Self {
        Self { bans, banner }
    }
}

impl<S> Layer<S> for BansLayer {
    type Service = Bans<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Bans { inner, bans: self.bans.clone(), banner: self.banner.clone() }
    }
}

/// The service of a [`BansLayer`].
#[derive(Debug, Clone)]
pub struct Bans<S> {
    inner: S,
    bans: Option<Arc<dyn BanStore>>,
    banner: Option<Arc<Banner>>,
}

impl<S> Service<Request<Body>> for Bans<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, crate::GatewayFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // Set by the reject layer, always present in the stack.
        let Some(client) = req.extensions().get::<RequestContext>().map(|c| c.client.ip) else {
            return Either::Left(self.inner.call(req));
        };
        // A banned client that came through a trusted proxy (or on a
        // connection opened before its ban) is refused here.
        if let Some(hit) = self.bans.as_ref().and_then(|b| b.banned(client, unix_millis())) {
            return Either::Right(Box::pin(std::future::ready(Ok(refuse_banned(hit)))));
        }
        let Some(banner) = self.banner.clone() else { return Either::Left(self.inner.call(req)) };
        let future = call_boxed(&mut self.inner, req);
        Either::Right(Box::pin(async move {
            let Ok(mut response) = future.await;
            if let Some(issued) = count_refusals(&banner, client, refusals(&response)).await {
                response.extensions_mut().insert(IssuedBan(issued));
                // Its next request will be refused anyway; make it reconnect.
                response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        }))
    }
}

/// The answer to a banned client: 403 `ban.active` with `Retry-After`,
/// closing the connection; an event at most every [`EVENT_INTERVAL_MS`] per
/// address.
fn refuse_banned(hit: BanHit) -> Response<Body> {
    let retry_after = hit.until_ms.saturating_sub(unix_millis()).div_ceil(1000).max(1);
    let until = UNIX_EPOCH + Duration::from_millis(hit.until_ms);
    let denied = Denied::new(Reason::BanActive)
        .with_detail(format!("banned until {}", humantime::format_rfc3339_seconds(until)))
        .with_header(http::header::RETRY_AFTER, HeaderValue::from(retry_after))
        .with_header(http::header::CONNECTION, HeaderValue::from_static("close"));
    let mut response = deny(denied);
    if !hit.log {
        response.extensions_mut().insert(Quiet);
    }
    response
}

/// The refusals `response` carries, in the order the reject layer emits
/// them.
fn refusals(response: &Response<Body>) -> Vec<Reason> {
    let extensions = response.extensions();
    let redirected = extensions.get::<Redirected>().map(|r| r.0.reason);
    let noted = extensions.get::<Noted>().map(|n| n.0.reason);
    let more = extensions.get::<MoreNoted>().into_iter().flat_map(|m| m.0.iter().map(|d| d.reason));
    let denied = extensions.get::<Denied>().map(|d| d.reason);
    redirected.into_iter().chain(noted).chain(more).chain(denied).collect()
}

/// Counts each client-caused refusal of `reasons` toward the ban rules;
/// returns the event of the first ban issued.
async fn count_refusals(banner: &Banner, client: IpAddr, reasons: Vec<Reason>) -> Option<Denied> {
    for reason in reasons {
        if reason.attribution() != Attribution::Client || !banner.counts(reason) {
            continue;
        }
        let Some((ban, rule)) = banner.observe(client, reason).await else { continue };
        let detail = format!(
            "{} banned for {} after {} refusals within {}",
            ban.target_text(),
            humantime::format_duration(rule.duration),
            rule.count,
            humantime::format_duration(rule.within)
        );
        return Some(Denied::new(Reason::BanIssued).with_rule(rule.name.clone()).with_detail(detail));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_bans_cover_the_group_expire_and_throttle_events() {
        let bans = LocalBans::default();
        let now = 1_000_000;
        assert_eq!(bans.lookup("10.0.0.1".parse().unwrap(), now), None);
        bans.insert(&Ban::new("2001:db8:1:2::7".parse().unwrap(), "r", now, Duration::from_secs(60)), now);
        let hit = bans.lookup("2001:db8:1:2:ffff::1".parse().unwrap(), now + 1).unwrap();
        assert_eq!(hit, BanHit { until_ms: now + 60_000, log: true });
        assert!(!bans.lookup("2001:db8:1:2::1".parse().unwrap(), now + 2).unwrap().log, "throttled");
        assert!(bans.lookup("2001:db8:1:2::1".parse().unwrap(), now + 2 + EVENT_INTERVAL_MS).unwrap().log);
        assert_eq!(bans.lookup("2001:db8:1:3::1".parse().unwrap(), now), None, "another /64");
        assert_eq!(bans.lookup("2001:db8:1:2::1".parse().unwrap(), now + 60_000), None, "expired");
        // A shorter ban does not cut a longer one short.
        bans.insert(&Ban::new("2001:db8:1:2::7".parse().unwrap(), "r2", now, Duration::from_secs(1)), now);
        assert_eq!(bans.snapshot(now)[0].until_ms, now + 60_000);
        assert!(bans.remove("2001:db8:1:2::99".parse().unwrap()));
        assert!(bans.snapshot(now).is_empty());
    }

    #[test]
    fn expired_entries_are_pruned_as_the_list_grows() {
        let bans = LocalBans::default();
        for i in 0..5_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            bans.insert(&Ban::new(ip, "r", u64::from(i), Duration::from_millis(1)), u64::from(i) + 10);
        }
        assert!(bans.len.load(Ordering::Relaxed) < 1_100, "{}", bans.len.load(Ordering::Relaxed));
    }
}
